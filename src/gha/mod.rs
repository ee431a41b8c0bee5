//! `kobuild action`: kobuild as a GitHub Actions step. Inputs come from `INPUT_*` (see
//! [`inputs`]), become the same [`BuildArgs`](crate::cli::BuildArgs) as the command line, and
//! go through the same plan and pipeline; results go to the step's outputs and summary,
//! failures become `::error` annotations.

pub mod auth;
pub mod commands;
pub mod files;
pub mod inputs;
pub mod metadata;
pub mod summary;

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use commands::{Commands, Location};
use files::Files;
use inputs::{ActionInputs, Inputs, SECRET_INPUTS};

use crate::error::Error;
use crate::pipeline;
use crate::plan::{Env, Field, Flag, Plan, PlanError};
use crate::report::{self, Artifact, ImageReport};

pub use crate::error::GhaError;

/// Annotations the runner shows per step; more would only be dropped.
const MAX_ANNOTATIONS: usize = 10;

/// Runs the step: `step_dir` is where the runner started it, `out` takes the workflow
/// commands (stdout, where the runner reads them). Failures are annotated there and returned.
pub async fn run<W: Write>(
    env: &Env,
    step_dir: PathBuf,
    out: W,
) -> Result<Vec<ImageReport>, Error> {
    let mut commands = Commands::new(out);
    let mut source_dirs = vec![step_dir.clone()];
    let result = step(env, &step_dir, &mut commands, &mut source_dirs).await;
    if let Err(e) = &result {
        let workspace = env
            .get("GITHUB_WORKSPACE")
            .filter(|w| !w.is_empty())
            .map_or(step_dir, PathBuf::from);
        // Already failing: a stdout that cannot take the annotation changes nothing.
        let _ = annotate(&mut commands, &e.to_string(), &source_dirs, &workspace);
    }
    result
}

async fn step<W: Write>(
    env: &Env,
    step_dir: &Path,
    commands: &mut Commands<W>,
    source_dirs: &mut Vec<PathBuf>,
) -> Result<Vec<ImageReport>, Error> {
    // Masked before anything else is printed, including errors about other inputs.
    let raw = Inputs::new(env);
    let secrets = SECRET_INPUTS
        .iter()
        .filter_map(|name| raw.get(name))
        .chain(env.get("GITHUB_TOKEN").filter(|t| !t.is_empty()));
    for secret in secrets {
        commands.add_mask(&secret)?;
        // The runner masks line by line, so a multi-line secret needs each line masked too.
        if secret.contains('\n') {
            for line in secret.lines().map(str::trim).filter(|l| !l.is_empty()) {
                commands.add_mask(line)?;
            }
        }
    }

    if raw.bool("install-only", false)? {
        tracing::info!("install-only: kobuild is installed and on PATH for later steps");
        return Ok(Vec::new());
    }

    let mut inputs = ActionInputs::from_env(env, step_dir)?;
    for warning in &inputs.warnings {
        commands.warning(&Location::default(), warning)?;
    }
    *source_dirs = source_dirs_of(&inputs);
    if inputs.repository_labels {
        repository_labels(env, &mut inputs, commands).await?;
    }
    let files = Files::from_env(env);
    if files.output.is_none() {
        tracing::warn!(
            "GITHUB_OUTPUT is not set: not running in GitHub Actions? outputs are skipped"
        );
    }

    let mut plan = Plan::new(&inputs.build, env, inputs.cwd.clone()).map_err(plan_error)?;
    plan.registry.credentials =
        auth::credentials(&inputs, env, plan.registry.docker_config_dir.as_deref()).await;
    if let Some(repo) = &inputs.derived_repo {
        tracing::info!("default-repo {repo}, from the repository's name");
    }
    // A plan job: the matrix output, and nothing built.
    if raw.bool("plan-only", false)? {
        let matrix = crate::plan::matrix::matrix(&plan).map_err(plan_error)?;
        let json = serde_json::to_string(&matrix).unwrap_or_default();
        files.set_output("matrix", &json)?;
        return Ok(Vec::new());
    }

    commands.group(&format!(
        "kobuild: build {}",
        plan.artifacts
            .iter()
            .map(|a| a.image_name.clone().unwrap_or_else(|| a.target.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let built = pipeline::build(&plan).await;
    commands.endgroup()?;
    let reports = built?;

    for r in &reports {
        tracing::info!("built {}", r.reference);
    }
    write_outputs(&files, &plan, &reports)?;
    if let Some(repo) = &inputs.derived_repo {
        // Later kobuild steps (merge, another build) then push to the same place.
        files.export_env("KOBUILD_DEFAULT_REPO", repo)?;
    }
    if let Some(room) = files.summary_room()? {
        files.append_summary(&summary::render(&reports, room))?;
    }
    Ok(reports)
}

/// Replaces the context's default labels with the repository's (title, description, url,
/// source, revision, licenses); the user's labels still follow and win. Any failure is a
/// warning and leaves the context's labels.
async fn repository_labels<W: Write>(
    env: &Env,
    inputs: &mut ActionInputs,
    commands: &mut Commands<W>,
) -> Result<(), GhaError> {
    let source = match metadata::Source::from_env(env) {
        Ok(s) => s,
        Err(why) => {
            tracing::info!("no repository labels: {why}");
            return Ok(());
        }
    };
    match metadata::repository(&source, inputs.github_token.as_deref()).await {
        Ok(repo) => {
            let labels = metadata::labels(
                &repo,
                inputs::context_source(env).as_deref(),
                inputs::context_sha(env).as_deref(),
            );
            tracing::debug!("repository labels: {labels:?}");
            inputs
                .build
                .opts
                .labels
                .splice(..inputs.context_labels, labels);
            Ok(())
        }
        Err(e) => commands.warning(
            &Location::default(),
            &format!(
                "repository labels: {e}; using the GitHub context's labels instead \
                 (repository-labels: false skips the call)"
            ),
        ),
    }
}

fn write_outputs(files: &Files, plan: &Plan, reports: &[ImageReport]) -> Result<(), GhaError> {
    let images: Vec<&str> = reports.iter().map(|r| r.reference.as_str()).collect();
    files.set_output("images", &images.join("\n"))?;
    files.set_output("digest", reports.first().map_or("", |r| r.digest.as_str()))?;
    let artifacts: Vec<Artifact> = reports.iter().map(ImageReport::artifact).collect();
    files.set_output(
        "artifacts",
        &String::from_utf8_lossy(&report::artifacts_json(&artifacts)),
    )?;
    let artifacts_file = plan
        .file_output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    files.set_output("artifacts-file", &artifacts_file)?;
    files.set_output("metadata", &metadata(reports))
}

/// `{"<image name>": {"ref", "digest", "platforms", "size"}}`, for `fromJSON` in workflows.
fn metadata(reports: &[ImageReport]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = reports
        .iter()
        .map(|r| {
            let entry = serde_json::json!({
                "ref": r.reference,
                "digest": r.digest.as_str(),
                "platforms": r.platforms,
                "size": r.size,
            });
            (r.image_name.clone(), entry)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The plan names command-line options; in a step the user wrote inputs.
fn plan_error(e: PlanError) -> Error {
    match &e.field {
        Field::Flag(flag) => match input_of(*flag) {
            Some(input) => GhaError::input(input, e.reason).into(),
            None => e.into(),
        },
        Field::Other(_) => e.into(),
    }
}

/// The action input a command-line option stands for; a new flag must be placed here.
fn input_of(flag: Flag) -> Option<&'static str> {
    Some(match flag {
        Flag::Tag => "tags",
        Flag::Platform => "platforms",
        Flag::Base => "from-image",
        Flag::DefaultRepo => "default-repo",
        Flag::Image => "image-name",
        Flag::Label => "labels",
        Flag::Annotation => "annotations",
        Flag::Env => "env",
        Flag::Flags => "flags",
        Flag::Ldflags => "ldflags",
        Flag::Jobs => "jobs",
        Flag::NoPush => "push",
        Flag::PushByDigest => "push-by-digest",
        Flag::BuildImage => "build-image",
        Flag::RegistryTimeout => "registry-timeout",
        Flag::RegistryCa => "registry-ca",
        Flag::CacheDir => "cache-dir",
        Flag::CompressionLevel | Flag::Dlv | Flag::DryRun | Flag::FileOutput => return None,
    })
}

/// Where relative file names in error messages (Go's `./main.go:6:2: ...`) may live.
fn source_dirs_of(inputs: &ActionInputs) -> Vec<PathBuf> {
    let mut dirs = vec![inputs.cwd.clone()];
    for t in &inputs.build.targets {
        if !t.starts_with("ko://") {
            dirs.push(inputs.cwd.join(t.trim_end_matches("...")));
        }
    }
    dirs
}

/// One annotation per `FILE:LINE[:COL]: message` line that names an existing file, else one
/// for the whole message.
fn annotate<W: Write>(
    commands: &mut Commands<W>,
    message: &str,
    source_dirs: &[PathBuf],
    workspace: &Path,
) -> Result<(), GhaError> {
    let headline = message
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(':');
    let located: Vec<(Location, String)> = message
        .lines()
        .filter_map(|line| {
            let (file, line, col, text) = parse_location(line)?;
            let path = find_file(file, source_dirs)?;
            let shown = path.strip_prefix(workspace).unwrap_or(&path);
            let at = Location {
                file: Some(shown.display().to_string()),
                line: Some(line),
                col,
            };
            Some((at, format!("{headline}: {text}")))
        })
        .take(MAX_ANNOTATIONS)
        .collect();
    if located.is_empty() {
        return commands.error(&Location::default(), message);
    }
    for (at, text) in located {
        commands.error(&at, &text)?;
    }
    Ok(())
}

/// `file:line: text` or `file:line:col: text`.
fn parse_location(line: &str) -> Option<(&str, u32, Option<u32>, &str)> {
    let (file, rest) = line.split_once(':')?;
    let (number, rest) = rest.split_once(':')?;
    let number = number.parse().ok()?;
    let (col, text) = match rest.split_once(':') {
        Some((c, t)) => match c.parse() {
            Ok(c) => (Some(c), t),
            Err(_) => (None, rest),
        },
        None => (None, rest),
    };
    let text = text.strip_prefix(' ')?;
    (!file.is_empty() && !file.contains(' ')).then_some((file, number, col, text))
}

fn find_file(file: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let file = Path::new(file);
    let candidates: Vec<PathBuf> = if file.is_absolute() {
        vec![file.to_path_buf()]
    } else {
        dirs.iter().map(|d| d.join(file)).collect()
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| p.components().filter(|c| *c != Component::CurDir).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_errors_name_the_input_of_their_flag() {
        let error = |field: Field| {
            plan_error(PlanError {
                field,
                reason: "bad".into(),
            })
            .to_string()
        };
        assert_eq!(error(Flag::Tag.into()), "input tags: bad");
        assert_eq!(error(Flag::NoPush.into()), "input push: bad");
        // Without an input, the flag stays: the message is still true.
        assert_eq!(error(Flag::Dlv.into()), "--dlv: bad");
        assert_eq!(error("GOFLAGS".into()), "GOFLAGS: bad");
    }

    #[test]
    fn locations_are_parsed_like_go_prints_them() {
        assert_eq!(
            parse_location("./main.go:6:2: undefined: nope"),
            Some(("./main.go", 6, Some(2), "undefined: nope"))
        );
        assert_eq!(
            parse_location("skaffold.yaml:12: unknown field"),
            Some(("skaffold.yaml", 12, None, "unknown field"))
        );
        for line in [
            "# example.com/broken",
            "--tag: \"-x\" is not a valid tag",
            "input push: \"yes\" is not a boolean",
            "cannot reach registry 127.0.0.1:1: connection refused",
        ] {
            assert_eq!(parse_location(line), None, "{line}");
        }
    }

    #[test]
    fn errors_point_at_existing_files_relative_to_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let app = ws.path().join("cmd/app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("main.go"), "package main\n").unwrap();
        let message = "go build of example.com/app for linux/amd64 failed:\n\
                       # example.com/app\n\
                       ./main.go:6:2: undefined: nope\n\
                       ./gone.go:1:1: not a file here";
        let mut buf = Vec::new();
        annotate(
            &mut Commands::new(&mut buf),
            message,
            &[ws.path().to_path_buf(), app.join(".")],
            ws.path(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "::error file=cmd/app/main.go,line=6,col=2::go build of example.com/app for linux/amd64 failed: undefined: nope\n"
        );

        let mut buf = Vec::new();
        annotate(&mut Commands::new(&mut buf), "a\nb", &[], ws.path()).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "::error::a%0Ab\n");
    }

    #[test]
    fn plan_errors_name_the_input() {
        let env = Env::from_pairs(&[("INPUT_TAGS", "-bad"), ("INPUT_FROM-IMAGE", "scratch")]);
        let inputs = ActionInputs::from_env(&env, Path::new("/")).unwrap();
        let e = plan_error(Plan::new(&inputs.build, &env, inputs.cwd).unwrap_err());
        assert!(e.to_string().starts_with("input tags: "), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn metadata_is_keyed_by_image_name() {
        let digest = crate::digest::Digest::of(b"x");
        let r = ImageReport {
            image_name: "ko://example.com/a".into(),
            reference: format!("r.example/a:v1@{digest}"),
            digest: digest.clone(),
            platforms: vec!["linux/amd64".into()],
            size: 42,
            seconds: 1.0,
            push: None,
        };
        let v: serde_json::Value = serde_json::from_str(&metadata(&[r])).unwrap();
        assert_eq!(
            v["ko://example.com/a"],
            serde_json::json!({
                "ref": format!("r.example/a:v1@{digest}"),
                "digest": digest.as_str(),
                "platforms": ["linux/amd64"],
                "size": 42,
            })
        );
    }
}
