//! `kobuild resolve`: ko's resolve. Every distinct `ko://` reference in the manifests is built
//! once (all in parallel), then the manifests are rendered with the results, losslessly.

use std::io::Read;
use std::path::PathBuf;

use crate::cli::{BuildArgs, ResolveArgs};
use crate::error::Error;
use crate::plan::{Env, Plan};
use crate::registry::{Reference, ReferenceError};
use crate::render::{self, ImageMap};

/// The rendered manifests, after every image they name was built and published.
pub async fn run(
    args: &ResolveArgs,
    env: &Env,
    cwd: PathBuf,
    stdin: &mut dyn Read,
) -> Result<String, Error> {
    let files: Vec<PathBuf> = args
        .files
        .iter()
        .map(|f| {
            if f.as_os_str() == "-" {
                f.clone()
            } else {
                cwd.join(f)
            }
        })
        .collect();
    let inputs = render::read_inputs(&files, args.recursive, stdin)?;
    let mut refs: Vec<String> = Vec::new();
    for (file, text) in &inputs {
        let found = render::find_ko_references(text).map_err(|e| e.in_file(file))?;
        refs.extend(
            found
                .into_iter()
                .filter(|r| !refs.contains(r))
                .collect::<Vec<_>>(),
        );
    }
    let mut images = ImageMap::new();
    if !refs.is_empty() {
        let build = BuildArgs {
            targets: refs,
            build_concurrency: Some(0),
            opts: args.opts.clone(),
            ..BuildArgs::default()
        };
        let plan = Plan::new(&build, env, cwd)?;
        let reports = crate::pipeline::build(&plan).await?;
        for (report, artifact) in reports.iter().zip(&plan.artifacts) {
            let reference = resolved_reference(&report.reference, &artifact.tags)
                .map_err(|e| Error::Internal(format!("built reference: {e}")))?;
            images
                .insert(&report.image_name, &reference)
                .map_err(|e| Error::Internal(format!("built reference: {e}")))?;
        }
    }
    let rendered = inputs
        .iter()
        .map(|(file, text)| render::render_text(file, text, &images, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(render::join(&rendered))
}

/// What `ko resolve` writes for a pushed `repo:tag@digest`: the tag only when it is the one
/// tag and not `latest`; else `repo@digest`. Layout and archive outputs (`oci-layout:PATH@d`)
/// have no tag to drop and stay as written.
fn resolved_reference(pushed: &str, tags: &[String]) -> Result<String, ReferenceError> {
    let local = ["oci-layout:", "oci-archive:"];
    match tags {
        _ if local.iter().any(|p| pushed.starts_with(p)) => Ok(pushed.to_string()),
        [one] if one != "latest" => Ok(pushed.to_string()),
        _ => Ok(Reference::parse(pushed)?.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_stays_only_when_it_is_one_and_not_latest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let pushed = |t: &str| format!("localhost:5000/app:{t}@{d}");
        let bare = format!("localhost:5000/app@{d}");
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolved_reference(&pushed("latest"), &tags(&["latest"])).unwrap(),
            bare
        );
        assert_eq!(
            resolved_reference(&pushed("v1"), &tags(&["v1", "v2"])).unwrap(),
            bare
        );
        assert_eq!(
            resolved_reference(&pushed("v1"), &tags(&["v1"])).unwrap(),
            pushed("v1")
        );
        let layout = format!("oci-layout:/tmp/out@{d}");
        assert_eq!(
            resolved_reference(&layout, &tags(&["latest"])).unwrap(),
            layout
        );
    }
}
