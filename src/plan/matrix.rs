//! `kobuild plan --matrix`: the build split into one job per image and platform, as the JSON
//! that a workflow's `strategy.matrix: ${{ fromJSON(...) }}` takes. Each entry's keys are the
//! action's input names, so a job passes them straight back (`targets: ${{ matrix.targets }}`);
//! keys that do not apply are empty, which the action reads as unset.

use serde::Serialize;

use super::{Flag, Plan, PlanError, err};
use crate::platform::Platforms;

#[derive(Debug, PartialEq, Serialize)]
pub struct Entry {
    /// `<image>-<os>-<arch>[-<variant>]`: a name for the job's uploaded artifacts.json.
    pub name: String,
    pub targets: String,
    #[serde(rename = "skaffold-file")]
    pub skaffold_file: String,
    #[serde(rename = "build-image")]
    pub build_image: String,
    pub platforms: String,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Matrix {
    pub include: Vec<Entry>,
}

/// One entry per artifact and platform of `plan`, in the plan's order.
pub fn matrix(plan: &Plan) -> Result<Matrix, PlanError> {
    let mut include = Vec::new();
    for a in &plan.artifacts {
        let Platforms::List(platforms) = &a.platforms else {
            return Err(err(
                Flag::Platform,
                "\"all\" depends on the base image's platforms, which a plan does not fetch: list the platforms",
            ));
        };
        let (targets, skaffold_file, build_image, image) = match &plan.skaffold_file {
            Some(file) => {
                let image = a.image_name.clone().unwrap_or_default();
                let shown = file.strip_prefix(&plan.cwd).unwrap_or(file);
                (
                    String::new(),
                    shown.display().to_string(),
                    image.clone(),
                    image,
                )
            }
            None => {
                let image = match &a.image_name {
                    Some(name) => name.clone(),
                    None => last_element(&a.target),
                };
                (a.target.clone(), String::new(), String::new(), image)
            }
        };
        for p in platforms {
            let platform = p.to_string();
            let slug = format!(
                "{}-{}",
                last_element(&image),
                platform.replace(['/', ':'], "-")
            );
            include.push(Entry {
                name: slug,
                targets: targets.clone(),
                skaffold_file: skaffold_file.clone(),
                build_image: build_image.clone(),
                platforms: platform,
            });
        }
    }
    Ok(Matrix { include })
}

/// The last path element of a target or image, without `ko://`, `...` or a tag.
fn last_element(name: &str) -> String {
    let name = name.trim_start_matches("ko://").trim_end_matches("...");
    let last = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let last = last.split(':').next().unwrap_or_default();
    match last {
        "" | "." => "app".into(),
        l => l.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_element() {
        assert_eq!(last_element("./cmd/app"), "app");
        assert_eq!(last_element("ko://example.com/x/Server"), "server");
        assert_eq!(last_element("./cmd/..."), "cmd");
        assert_eq!(last_element("."), "app");
        assert_eq!(last_element("registry.example/team/web:dev"), "web");
    }
}
