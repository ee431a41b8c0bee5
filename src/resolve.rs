//! `kobuild resolve`: ko's resolve. Every distinct `ko://` reference in the manifests is built
//! once (all in parallel), then the manifests are rendered with the results, losslessly.

use std::io::Read;
use std::path::PathBuf;

use crate::cli::{BuildArgs, ResolveArgs};
use crate::error::Error;
use crate::plan::{Env, Plan};
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
        for report in crate::pipeline::build(&plan).await? {
            images
                .insert(&report.image_name, &report.reference)
                .map_err(|e| Error::Internal(format!("built reference: {e}")))?;
        }
    }
    let rendered = inputs
        .iter()
        .map(|(file, text)| render::render_text(file, text, &images, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(render::join(&rendered))
}
