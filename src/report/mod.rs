//! Results for users and tools: one ref per line on stdout, Skaffold's artifacts.json.

use std::path::Path;

use serde::Serialize;

use crate::digest::Digest;
use crate::fsutil::write_atomic;
use crate::publish::{PublishError, PushStats};

/// One built image, as Skaffold's `graph.Artifact` names it.
#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    #[serde(rename = "imageName")]
    pub image_name: String,
    pub tag: String,
}

/// Everything known about one published image: for stdout, artifacts.json and summaries.
#[derive(Clone, Debug)]
pub struct ImageReport {
    /// The image as the user named it (artifacts.json `imageName`).
    pub image_name: String,
    /// The published reference, `repo:tag@sha256:...` (artifacts.json `tag`).
    pub reference: String,
    pub digest: Digest,
    pub platforms: Vec<String>,
    /// Compressed size of every blob and manifest of the image.
    pub size: u64,
    pub seconds: f64,
    /// What the registry push had to do; `None` when nothing was pushed.
    pub push: Option<PushStats>,
}

impl ImageReport {
    pub fn artifact(&self) -> Artifact {
        Artifact {
            image_name: self.image_name.clone(),
            tag: self.reference.clone(),
        }
    }
}

#[derive(Serialize)]
struct BuildOutput<'a> {
    builds: Option<&'a [Artifact]>,
}

/// Skaffold's `{{json .}}` form: compact, no HTML escaping, no trailing newline. No builds
/// (`-b` matching nothing) is Go's nil slice, `null`.
pub fn artifacts_json(artifacts: &[Artifact]) -> Vec<u8> {
    let builds = (!artifacts.is_empty()).then_some(artifacts);
    serde_json::to_vec(&BuildOutput { builds }).expect("plain data serializes")
}

/// Skaffold's `--output` template over the results.
pub fn render_output(
    template: &str,
    artifacts: &[Artifact],
) -> Result<String, crate::template::TemplateError> {
    let builds: Vec<(String, String)> = artifacts
        .iter()
        .map(|a| (a.image_name.clone(), a.tag.clone()))
        .collect();
    let builds = (!builds.is_empty()).then_some(builds.as_slice());
    crate::template::output_template(template, builds)
}

pub fn write_artifacts(path: &Path, artifacts: &[Artifact]) -> Result<(), PublishError> {
    Ok(write_atomic(path, &artifacts_json(artifacts))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_skaffold_shape() {
        let a = [Artifact {
            image_name: "ko://example.com/a&b".into(),
            tag: "r/a:t@sha256:00".into(),
        }];
        assert_eq!(
            String::from_utf8(artifacts_json(&a)).unwrap(),
            r#"{"builds":[{"imageName":"ko://example.com/a&b","tag":"r/a:t@sha256:00"}]}"#
        );
    }
}
