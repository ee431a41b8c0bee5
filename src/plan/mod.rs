//! The plan: every input (command line, environment) resolved into plain values. This is the
//! only place that reads environment variables; every later stage receives what it needs.

mod env;

pub use env::Env;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::base::BaseSpec;
use crate::cli::BuildArgs;
use crate::platform::{Platform, Platforms};
use crate::registry::{RegistryCredential, Repository};

pub const DEFAULT_BASE: &str = "cgr.dev/chainguard/static:latest";

#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl ToString) -> PlanError {
    PlanError {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// Where the images go.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub repo: Option<Repository>,
    pub oci_layout: Option<PathBuf>,
    pub oci_archive: Option<PathBuf>,
    /// True when no destination was configured and the layout is kobuild's default one.
    pub default_layout: bool,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub cwd: PathBuf,
    pub go: String,
    pub targets: Vec<String>,
    pub image_name: Option<String>,
    pub platforms: Platforms,
    pub jobs: usize,
    pub base: BaseSpec,
    pub outputs: Outputs,
    pub tags: Vec<String>,
    pub file_output: Option<PathBuf>,
    /// ko's `CGO_ENABLED=0`, unless the environment sets CGO_ENABLED itself.
    pub cgo_disabled_by_default: bool,
    /// `--env` values, applied last over the inherited environment for `go build`.
    pub go_env: Vec<(String, String)>,
    pub flags: Vec<String>,
    pub ldflags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub source_date_epoch: Option<i64>,
    pub kodata_date_epoch: Option<i64>,
    pub cache_dir: PathBuf,
    /// Reuse finished layers by DiffID (off with --no-cache).
    pub layer_cache: bool,
    pub docker_config_dir: Option<PathBuf>,
    /// Explicit logins (action inputs); they win over the docker config.
    pub credentials: Vec<RegistryCredential>,
    pub insecure_registries: Vec<String>,
    pub registry_ca: Vec<PathBuf>,
}

impl Plan {
    pub fn new(args: &BuildArgs, env: &Env, cwd: PathBuf) -> Result<Plan, PlanError> {
        let platforms = platforms(args, env)?;
        let base_input = args
            .base
            .clone()
            .unwrap_or_else(|| DEFAULT_BASE.to_string());
        let base = BaseSpec::parse(&base_input).map_err(|e| err("--base", e))?;

        let repo_input = args
            .default_repo
            .clone()
            .or_else(|| env.get("KOBUILD_DEFAULT_REPO"));
        let push = args.push.unwrap_or(true);
        let repo = match (&repo_input, push) {
            (Some(r), true) => Some(Repository::parse(r).map_err(|e| err("--default-repo", e))?),
            _ => None,
        };
        let default_layout =
            repo.is_none() && args.oci_layout_path.is_none() && args.oci_archive.is_none();
        if default_layout && !push {
            return Err(err(
                "--push=false",
                "nothing to write: add --oci-layout-path DIR or --oci-archive FILE",
            ));
        }
        let oci_layout = match &args.oci_layout_path {
            Some(p) => Some(cwd.join(p)),
            None if default_layout => Some(cwd.join(".kobuild/oci")),
            None => None,
        };

        let mut tags = Vec::new();
        for t in &args.tags {
            if !valid_tag(t) {
                return Err(err(
                    "--tag",
                    format!(
                        "{t:?} is not a valid tag: use letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')"
                    ),
                ));
            }
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        if tags.is_empty() {
            tags.push("latest".into());
        }
        if let Some(name) = &args.image {
            Repository::parse(&format!("localhost/{name}")).map_err(|e| err("--image", e))?;
        }

        let mut go_env = Vec::new();
        for kv in &args.env {
            go_env.push(key_value("--env", kv)?);
        }
        if let Platforms::List(list) = &platforms {
            for p in list {
                p.go_env().map_err(|e| err("--platform", e))?;
            }
        }

        let cache_dir = match (&args.cache_dir, env.get("KOBUILD_CACHE_DIR")) {
            (Some(d), _) => cwd.join(d),
            (None, Some(d)) => cwd.join(d),
            (None, None) => match (env.get("XDG_CACHE_HOME"), env.get("HOME")) {
                (Some(x), _) => PathBuf::from(x).join("kobuild"),
                (None, Some(h)) => PathBuf::from(h).join(".cache/kobuild"),
                (None, None) => cwd.join(".kobuild/cache"),
            },
        };
        let docker_config_dir = match (env.get("DOCKER_CONFIG"), env.get("HOME")) {
            (Some(d), _) => Some(PathBuf::from(d)),
            (None, Some(h)) => Some(PathBuf::from(h).join(".docker")),
            (None, None) => None,
        };

        Ok(Plan {
            go: env.get("KO_GO_PATH").unwrap_or_else(|| "go".to_string()),
            targets: if args.targets.is_empty() {
                vec![".".into()]
            } else {
                args.targets.clone()
            },
            image_name: args.image.clone(),
            platforms,
            jobs: match args.jobs {
                Some(0) => return Err(err("--jobs", "must be at least 1")),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            },
            cgo_disabled_by_default: env.get("CGO_ENABLED").is_none(),
            base,
            outputs: Outputs {
                repo,
                oci_layout,
                oci_archive: args.oci_archive.as_ref().map(|p| cwd.join(p)),
                default_layout,
            },
            tags,
            file_output: file_output(args, &cwd)?,
            go_env,
            flags: args.flags.clone(),
            ldflags: args.ldflags.clone(),
            labels: pairs("--label", &args.labels)?,
            annotations: pairs("--annotation", &args.annotations)?,
            source_date_epoch: epoch(env, "SOURCE_DATE_EPOCH")?,
            kodata_date_epoch: epoch(env, "KO_DATA_DATE_EPOCH")?,
            cache_dir,
            layer_cache: !args.no_cache,
            docker_config_dir,
            credentials: Vec::new(),
            insecure_registries: args.insecure_registries.clone(),
            registry_ca: args.registry_ca.iter().map(|p| cwd.join(p)).collect(),
            cwd,
        })
    }
}

/// `--platform`, else both GOOS and GOARCH from the environment (ko's rule), else linux/amd64.
fn platforms(args: &BuildArgs, env: &Env) -> Result<Platforms, PlanError> {
    let (goos, goarch, goarm) = (env.get("GOOS"), env.get("GOARCH"), env.get("GOARM"));
    if !args.platforms.is_empty() {
        if let Some(var) = [("GOOS", &goos), ("GOARCH", &goarch), ("GOARM", &goarm)]
            .iter()
            .find(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()))
            .map(|(k, _)| *k)
        {
            return Err(err(
                "--platform",
                format!(
                    "{var} is set in the environment too: unset it, or drop --platform and let GOOS/GOARCH choose"
                ),
            ));
        }
        return Platforms::parse(&args.platforms).map_err(|e| err("--platform", e));
    }
    match (
        goos.filter(|s| !s.is_empty()),
        goarch.filter(|s| !s.is_empty()),
    ) {
        (Some(os), Some(arch)) => {
            let variant = match goarm.filter(|s| !s.is_empty()) {
                Some(n) if arch.contains("arm") => format!("/v{n}"),
                _ => String::new(),
            };
            let spec = format!("{os}/{arch}{variant}");
            Platforms::parse(&[&spec]).map_err(|e| err("GOOS/GOARCH", e))
        }
        _ => Ok(Platforms::List(vec![Platform::linux_amd64()])),
    }
}

/// Checked now, so that a build is not thrown away for a path that can never be written.
fn file_output(args: &BuildArgs, cwd: &std::path::Path) -> Result<Option<PathBuf>, PlanError> {
    let Some(p) = &args.file_output else {
        return Ok(None);
    };
    let path = cwd.join(p);
    if path.is_dir() {
        return Err(err(
            "--file-output",
            format!("{} is a directory: name a file", path.display()),
        ));
    }
    Ok(Some(path))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn key_value(field: &str, kv: &str) -> Result<(String, String), PlanError> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(err(field, format!("{kv:?} is not KEY=VALUE"))),
    }
}

fn pairs(field: &str, items: &[String]) -> Result<BTreeMap<String, String>, PlanError> {
    items.iter().map(|kv| key_value(field, kv)).collect()
}

fn epoch(env: &Env, name: &str) -> Result<Option<i64>, PlanError> {
    match env.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            err(
                name,
                format!("{v:?} is not a whole number of seconds since 1970"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: BuildArgs, env: &[(&str, &str)]) -> Result<Plan, PlanError> {
        Plan::new(&args, &Env::from_pairs(env), PathBuf::from("/work"))
    }

    #[test]
    fn defaults_are_ko_defaults() {
        let p = plan(BuildArgs::default(), &[("HOME", "/home/u")]).unwrap();
        assert_eq!(p.targets, vec!["."]);
        assert_eq!(p.platforms, Platforms::List(vec![Platform::linux_amd64()]));
        assert_eq!(p.tags, vec!["latest"]);
        assert!(p.cgo_disabled_by_default);
        assert!(p.outputs.default_layout);
        assert_eq!(
            p.outputs.oci_layout,
            Some(PathBuf::from("/work/.kobuild/oci"))
        );
        assert_eq!(p.cache_dir, PathBuf::from("/home/u/.cache/kobuild"));
        assert!(matches!(p.base, BaseSpec::Registry(_)));
    }

    #[test]
    fn environment_is_read_here() {
        let p = plan(
            BuildArgs {
                env: vec!["GOFLAGS=-mod=vendor".into()],
                ..Default::default()
            },
            &[
                ("CGO_ENABLED", "1"),
                ("KOBUILD_DEFAULT_REPO", "127.0.0.1:5000/apps"),
                ("SOURCE_DATE_EPOCH", "5000"),
            ],
        )
        .unwrap();
        assert!(!p.cgo_disabled_by_default);
        assert_eq!(
            p.go_env.last().unwrap(),
            &("GOFLAGS".into(), "-mod=vendor".into())
        );
        assert_eq!(p.outputs.repo.unwrap().to_string(), "127.0.0.1:5000/apps");
        assert_eq!(p.source_date_epoch, Some(5000));
    }

    #[test]
    fn goos_and_goarch_choose_the_default_platform_like_ko() {
        let p = plan(
            BuildArgs::default(),
            &[("GOOS", "linux"), ("GOARCH", "arm"), ("GOARM", "7")],
        )
        .unwrap();
        assert_eq!(p.platforms.to_string(), "linux/arm/v7");
        let p = plan(BuildArgs::default(), &[("GOARCH", "arm64")]).unwrap();
        assert_eq!(p.platforms.to_string(), "linux/amd64");
    }

    #[test]
    fn bad_input_names_the_field() {
        type Case<'a> = (BuildArgs, &'a [(&'a str, &'a str)], &'a str);
        let cases: Vec<Case> = vec![
            (
                BuildArgs {
                    platforms: vec!["linux".into()],
                    ..Default::default()
                },
                &[],
                "--platform",
            ),
            (
                BuildArgs {
                    platforms: vec!["a/b/c/d".into()],
                    ..Default::default()
                },
                &[],
                "--platform",
            ),
            (
                BuildArgs {
                    tags: vec!["-bad".into()],
                    ..Default::default()
                },
                &[],
                "--tag",
            ),
            (
                BuildArgs {
                    labels: vec!["novalue".into()],
                    ..Default::default()
                },
                &[],
                "--label",
            ),
            (
                BuildArgs {
                    base: Some("UPPER:x".into()),
                    ..Default::default()
                },
                &[],
                "--base",
            ),
            (
                BuildArgs {
                    default_repo: Some("Bad Repo".into()),
                    ..Default::default()
                },
                &[],
                "--default-repo",
            ),
            (
                BuildArgs {
                    push: Some(false),
                    ..Default::default()
                },
                &[],
                "--push=false",
            ),
            (
                BuildArgs::default(),
                &[("SOURCE_DATE_EPOCH", "yesterday")],
                "SOURCE_DATE_EPOCH",
            ),
            (
                BuildArgs {
                    platforms: vec!["all,linux/amd64".into()],
                    ..Default::default()
                },
                &[],
                "--platform",
            ),
            (
                BuildArgs {
                    platforms: vec!["linux/arm64".into()],
                    ..Default::default()
                },
                &[("GOARCH", "arm64")],
                "--platform",
            ),
            (
                BuildArgs {
                    platforms: vec!["linux/arm/x".into()],
                    ..Default::default()
                },
                &[],
                "--platform",
            ),
            (
                BuildArgs {
                    jobs: Some(0),
                    ..Default::default()
                },
                &[],
                "--jobs",
            ),
        ];
        for (args, env, field) in cases {
            let e = plan(args, env).unwrap_err();
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }
}
