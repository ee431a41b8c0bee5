//! The plan: every input (command line, environment) resolved into plain values. This is the
//! only place that reads environment variables; every later stage receives what it needs.

mod field;
mod go;
pub mod matrix;
mod registries;
mod skaffold;
mod tags;

pub use crate::env::Env;
pub use field::{Field, Flag};
pub use registries::RegistryAccess;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::base::BaseSpec;
use crate::cli::{BuildArgs, CompressionAlgorithm, SbomFormat};
use crate::config::{FileCaps, KoConfig};
use crate::digest::Digest;
use crate::image::layer::Compression;
use crate::platform::{Platform, Platforms};
use crate::registry::{Reference, Repository, valid_tag};
use crate::template::KoTemplateData;

pub use crate::config::DEFAULT_BASE;

#[derive(Debug, thiserror::Error)]
pub struct PlanError {
    /// The flag, variable or input at fault; empty when `reason` names a file position.
    pub field: Field,
    pub reason: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// The `go` to run: `KO_GO_PATH`, as ko reads it, else `go` from PATH. Refused while
/// `GOFLAGS` holds `-toolexec`, which every go command would run, `go list` included.
pub fn go_command(env: &Env) -> Result<String, PlanError> {
    if let Some(flags) = env.get("GOFLAGS") {
        refuse_toolexec("GOFLAGS", &[flags])?;
    }
    Ok(env.get("KO_GO_PATH").unwrap_or_else(|| "go".to_string()))
}

fn err(field: impl Into<Field>, reason: impl ToString) -> PlanError {
    PlanError {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// An error that already names its file, line and column.
fn located(e: impl ToString) -> PlanError {
    err("", e)
}

/// `-toolexec PROGRAM` makes Go run PROGRAM around every compiler and linker call (even
/// `go list` runs it), so a repository's configuration could run anything on the CI
/// runner: refused, as ko refuses it, in any spelling and from every source of flags.
/// `field` names the source; `flags` are arguments or whitespace-separated lists of them
/// (ldflags, `GOFLAGS`), quotes allowed.
pub(crate) fn refuse_toolexec(
    field: impl Into<Field> + Copy,
    flags: &[String],
) -> Result<(), PlanError> {
    for token in flags.iter().flat_map(|f| f.split_whitespace()) {
        let flag = token.trim_matches(['\'', '"']);
        let name = flag.strip_prefix("--").or_else(|| flag.strip_prefix('-'));
        if name.is_some_and(|n| n == "toolexec" || n.starts_with("toolexec=")) {
            return Err(err(
                field,
                format!(
                    "{token:?}: -toolexec would have Go run that program around every \
                     compiler and linker call, so kobuild refuses it, as ko does: remove it"
                ),
            ));
        }
    }
    Ok(())
}

/// A `KEY=VALUE` of a build's environment; a `GOFLAGS` there may not hold `-toolexec`.
fn go_env_entry(field: impl Into<Field> + Copy, kv: &str) -> Result<(String, String), PlanError> {
    let (k, v) = key_value(field, kv)?;
    if k == "GOFLAGS" {
        refuse_toolexec(field, std::slice::from_ref(&v))?;
    }
    Ok((k, v))
}

/// Where a `.ko.yaml` `default*` key's value came from: its `KO_*` variable (which wins),
/// else the file.
fn ko_default(ko: &KoConfig, env: &Env, key: &str) -> String {
    let var = format!("KO_{}", key.to_uppercase());
    match (env.get(&var).filter(|v| !v.is_empty()), &ko.file) {
        (Some(_), _) => var,
        (None, Some(file)) => format!("{}: {key}", file.display()),
        (None, None) => key.to_string(),
    }
}

/// Where the images go, besides each artifact's registry destination.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub oci_layout: Option<PathBuf>,
    pub oci_archive: Option<PathBuf>,
    /// True when no destination was configured and the layout is kobuild's default one.
    pub default_layout: bool,
}

/// Which registry repository an artifact is pushed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Not pushed (`--push=false`, or nothing configured).
    None,
    /// `DEFAULT_REPO/NAME` (command-line targets); without a name, the last element of the
    /// import path, as `go build` names the binary. The repo may be a bare `host:port`.
    DefaultRepo { repo: String, name: Option<String> },
    /// A repository fixed by the configuration (skaffold.yaml's image after default-repo).
    Repository(Repository),
}

/// One image to build, with every template already expanded.
#[derive(Clone, Debug)]
pub struct ArtifactPlan {
    /// artifacts.json `imageName`: skaffold.yaml's `image` as written, or `--image`; `None`
    /// means `ko://<import path>`.
    pub image_name: Option<String>,
    /// A directory, `ko://import/path` or a `...` pattern, relative to `dir`.
    pub target: String,
    /// Where Go runs.
    pub dir: PathBuf,
    pub destination: Destination,
    pub base: BaseSpec,
    /// `.ko.yaml` `baseImageOverrides`, by lower-cased import path.
    pub base_overrides: BTreeMap<String, BaseSpec>,
    pub platforms: Platforms,
    /// The artifact's environment for `go build`, applied last over the inherited one.
    pub go_env: Vec<(String, String)>,
    pub flags: Vec<String>,
    pub ldflags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The first is the one printed; all are pushed.
    pub tags: Vec<String>,
    /// skaffold.yaml artifacts: `name:tag` after the default repo, what `--dry-run` prints.
    pub tagged_name: Option<String>,
    /// `.ko.yaml`'s `linux_capabilities` for the binary, as ko writes them.
    pub capabilities: Option<FileCaps>,
}

/// The Go toolchain as the artifact cache sees it: which `go` binary runs, the variables
/// that can change what it builds, and `go env -w`'s file.
#[derive(Clone, Debug, Default)]
pub struct Toolchain {
    pub go_binary: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub env_file: Option<PathBuf>,
}

impl Toolchain {
    fn from_env(env: &Env, go: &str) -> Toolchain {
        // Where things are cached or fetched from does not change a build's output.
        const IRRELEVANT: &[&str] = &[
            "GOCACHE",
            "GOMODCACHE",
            "GOTMPDIR",
            "GOPROXY",
            "GONOPROXY",
            "GONOSUMDB",
            "GOPRIVATE",
            "GOSUMDB",
            "GOINSECURE",
            "GOAUTH",
            "GOPATH",
        ];
        let relevant = |k: &str| {
            (k.starts_with("GO") || k.starts_with("CGO_") || matches!(k, "CC" | "CXX" | "AR"))
                && !IRRELEVANT.contains(&k)
        };
        let go_binary = env.find_program(go);
        let env_file = match (
            env.get("GOENV"),
            env.get("XDG_CONFIG_HOME"),
            env.get("HOME"),
        ) {
            (Some(f), _, _) => Some(PathBuf::from(f)),
            (None, Some(x), _) => Some(PathBuf::from(x).join("go/env")),
            (None, None, Some(h)) => Some(PathBuf::from(h).join(".config/go/env")),
            (None, None, None) => None,
        };
        Toolchain {
            go_binary,
            env: env
                .vars()
                .iter()
                .filter(|(k, _)| relevant(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            env_file,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub cwd: PathBuf,
    pub go: String,
    pub artifacts: Vec<ArtifactPlan>,
    pub outputs: Outputs,
    pub file_output: Option<PathBuf>,
    /// `--output`: a Go template over the results, for `--file-output` and, with `--quiet`,
    /// stdout (Skaffold's `build -q -o`).
    pub output_template: Option<String>,
    pub quiet: bool,
    /// Compute the tags only (skaffold.yaml mode); build and push nothing.
    pub dry_run: bool,
    /// Concurrent `go build`s.
    pub jobs: usize,
    /// Artifacts built at once (0: all).
    pub build_concurrency: usize,
    /// ko's `CGO_ENABLED=0`, unless the environment sets CGO_ENABLED itself.
    pub cgo_disabled_by_default: bool,
    pub source_date_epoch: Option<i64>,
    pub kodata_date_epoch: Option<i64>,
    pub cache_dir: PathBuf,
    /// `--gocache`: GOCACHE for every go command; `None` leaves the environment's (or Go's).
    pub gocache: Option<PathBuf>,
    /// Reuse finished layers by DiffID (off with --no-cache).
    pub layer_cache: bool,
    /// Reuse a whole artifact whose inputs are unchanged and whose image the registry
    /// still has (off with --no-cache, and when local outputs or SBOM files are asked for).
    pub artifact_cache: bool,
    /// What identifies the Go toolchain and its settings, for the artifact cache's key.
    pub toolchain: Toolchain,
    pub compression: Compression,
    /// Skaffold's debug build: optimisations and inlining off, no `-trimpath`.
    pub debug: bool,
    /// A local Delve binary for debug images, and the architecture it runs on.
    pub dlv: Option<(PathBuf, String)>,
    /// `go build -cover`, with `GOCOVERDIR` set in the image.
    pub cover: bool,
    /// Attach an SPDX SBOM to every pushed image (`--sbom spdx`).
    pub sbom: bool,
    /// Push without tags; results are `repo@digest` (`--push-by-digest`).
    pub push_by_digest: bool,
    pub sbom_dir: Option<PathBuf>,
    /// The skaffold.yaml the artifacts come from, if any.
    pub skaffold_file: Option<PathBuf>,
    pub registry: RegistryAccess,
    /// Things worth a warning line (skipped artifacts, ignored config keys).
    pub warnings: Vec<String>,
}

/// What every artifact shares, from the command line and the environment.
struct Common {
    push: bool,
    default_repo: Option<String>,
    tags: Vec<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    source_date_epoch: Option<i64>,
}

impl Plan {
    pub fn new(args: &BuildArgs, env: &Env, cwd: PathBuf) -> Result<Plan, PlanError> {
        let push = args.opts.push.unwrap_or(true);
        let default_repo = default_repo(args, env)?;
        let mut tags = Vec::new();
        // docker/metadata-action's `tags` output: full references, whose tag is taken and
        // whose repository must be the image's.
        let mut tag_repository: Option<(String, Repository)> = None;
        for written in &args.opts.tags {
            let t = match full_reference_tag(written)? {
                Some((tag, repo)) => {
                    match &tag_repository {
                        Some((first, r)) if *r != repo => {
                            return Err(err(
                                Flag::Tag,
                                format!(
                                    "{first:?} and {written:?} name different repositories; one image has one repository"
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => tag_repository = Some((written.clone(), repo)),
                    }
                    tag
                }
                None => written.clone(),
            };
            if !valid_tag(&t) {
                return Err(err(
                    Flag::Tag,
                    format!(
                        "{t:?} is not a valid tag: use letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')"
                    ),
                ));
            }
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        if args.opts.push_by_digest {
            if !push {
                return Err(err(
                    Flag::PushByDigest,
                    "pushes by digest, but --push=false pushes nothing: drop one",
                ));
            }
            if !tags.is_empty() {
                return Err(err(
                    Flag::Tag,
                    "--push-by-digest pushes no tag: drop --tag and give the tags to `kobuild merge`",
                ));
            }
        }
        let common = Common {
            push,
            default_repo,
            tags,
            labels: pairs(Flag::Label, &args.opts.labels)?,
            annotations: pairs(Flag::Annotation, &args.opts.annotations)?,
            env: args
                .opts
                .env
                .iter()
                .map(|kv| go_env_entry(Flag::Env, kv))
                .collect::<Result<_, _>>()?,
            source_date_epoch: epoch(env, "SOURCE_DATE_EPOCH")?,
        };
        let go = go_command(env)?;
        let skaffold_file = match &args.skaffold.filename {
            Some(f) => Some(cwd.join(f)),
            None if args.targets.is_empty() && cwd.join("skaffold.yaml").is_file() => {
                Some(cwd.join("skaffold.yaml"))
            }
            None => None,
        };
        let mut warnings = Vec::new();
        let (mut artifacts, concurrency) = match &skaffold_file {
            Some(file) => {
                if !args.targets.is_empty() {
                    return Err(err(
                        "targets",
                        "give targets or a skaffold.yaml (-f), not both",
                    ));
                }
                if args.opts.image.is_some() {
                    return Err(err(
                        Flag::Image,
                        "skaffold.yaml names its images; --image is for targets",
                    ));
                }
                skaffold::artifacts(args, env, &cwd, file, &go, &common, &mut warnings)?
            }
            None => {
                for (used, flag) in [
                    (args.dry_run == Some(true), Flag::DryRun),
                    (!args.build_images.is_empty(), Flag::BuildImage),
                ] {
                    if used {
                        return Err(err(
                            flag,
                            "works on skaffold.yaml's artifacts: give -f skaffold.yaml, or drop it",
                        ));
                    }
                }
                let (artifact, ko) = cli_artifact(args, env, &cwd, &common, &mut warnings)?;
                let mut artifacts = expand_targets(vec![artifact], args);
                if !ko.builds.is_empty() {
                    apply_ko_builds(&mut artifacts, &ko, args, env, &cwd, &common, &go)?;
                }
                (artifacts, 1)
            }
        };
        if args.opts.image.is_some() && args.targets.len() > 1 {
            return Err(err(
                Flag::Image,
                "--image names one image, but several targets were given",
            ));
        }

        if let Some((written, repo)) = &tag_repository {
            repository_from_tags(&mut artifacts, written, repo, push)?;
        }
        let pushes = artifacts.iter().any(|a| a.destination != Destination::None);
        let default_layout = !pushes
            && !artifacts.is_empty()
            && args.opts.oci_layout_path.is_none()
            && args.opts.oci_archive.is_none();
        if default_layout && !push {
            return Err(err(
                Flag::NoPush,
                "nothing to write: add --oci-layout-path DIR or --oci-archive FILE",
            ));
        }
        let oci_layout = match &args.opts.oci_layout_path {
            Some(p) => Some(cwd.join(p)),
            None if default_layout => Some(cwd.join(".kobuild/oci")),
            None => None,
        };
        let cache_dir = match (&args.opts.cache_dir, env.get("KOBUILD_CACHE_DIR")) {
            (Some(d), _) => creatable_dir(Flag::CacheDir, cwd.join(d))?,
            (None, Some(d)) => creatable_dir("KOBUILD_CACHE_DIR", cwd.join(d))?,
            (None, None) => match (env.get("XDG_CACHE_HOME"), env.get("HOME")) {
                (Some(x), _) => PathBuf::from(x).join("kobuild"),
                (None, Some(h)) => PathBuf::from(h).join(".cache/kobuild"),
                (None, None) => cwd.join(".kobuild/cache"),
            },
        };
        let build_concurrency = match (
            args.build_concurrency,
            env.get("SKAFFOLD_BUILD_CONCURRENCY"),
        ) {
            (Some(n), _) => n,
            (None, Some(v)) => v.parse().map_err(|_| {
                err(
                    "SKAFFOLD_BUILD_CONCURRENCY",
                    format!("{v:?} is not a whole number"),
                )
            })?,
            (None, None) => concurrency,
        };
        let toolchain = Toolchain::from_env(env, &go);
        Ok(Plan {
            go,
            artifacts,
            outputs: Outputs {
                oci_layout,
                oci_archive: args.opts.oci_archive.as_ref().map(|p| cwd.join(p)),
                default_layout,
            },
            file_output: file_output(args, &cwd)?,
            // Skaffold's `-o` defaults to `{{json .}}`, which `-q` prints.
            output_template: args
                .output
                .clone()
                .or_else(|| args.quiet.then(|| "{{json .}}".to_string())),
            quiet: args.quiet,
            dry_run: args.dry_run == Some(true),
            jobs: match args.opts.jobs {
                Some(0) => return Err(err(Flag::Jobs, "must be at least 1")),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            },
            build_concurrency,
            cgo_disabled_by_default: env.get("CGO_ENABLED").is_none(),
            source_date_epoch: common.source_date_epoch,
            kodata_date_epoch: epoch(env, "KO_DATA_DATE_EPOCH")?,
            cache_dir,
            gocache: args.opts.gocache.as_ref().map(|d| cwd.join(d)),
            layer_cache: !args.opts.no_cache,
            artifact_cache: !args.opts.no_cache
                && args.cache_artifacts != Some(false)
                && args.opts.sbom_dir.is_none()
                && args.opts.oci_layout_path.is_none()
                && args.opts.oci_archive.is_none()
                && pushes,
            toolchain,
            compression: compression(args.opts.compression, args.opts.compression_level)?,
            debug: args.opts.debug,
            dlv: match &args.opts.dlv {
                Some(p) => {
                    let path = cwd.join(p);
                    let arch = elf_arch(&path).map_err(|e| err(Flag::Dlv, e))?;
                    Some((path, arch))
                }
                None => None,
            },
            cover: args.opts.cover,
            sbom: args.opts.sbom != SbomFormat::None,
            push_by_digest: args.opts.push_by_digest,
            sbom_dir: args.opts.sbom_dir.as_ref().map(|d| cwd.join(d)),
            skaffold_file,
            registry: RegistryAccess::new(&args.opts.registry, env, &cwd)?,
            warnings,
            cwd,
        })
    }
}

/// The default repo and where it came from: `--default-repo`, else the first set of
/// `KOBUILD_DEFAULT_REPO`, `SKAFFOLD_DEFAULT_REPO`, `KO_DOCKER_REPO`. A bare registry
/// (`localhost:5000`) is a valid repo, as both Skaffold and ko take it: images go right
/// under it.
fn default_repo(args: &BuildArgs, env: &Env) -> Result<Option<String>, PlanError> {
    let found = match &args.opts.default_repo {
        Some(r) => Some((Field::from(Flag::DefaultRepo), r.clone())),
        None => [
            "KOBUILD_DEFAULT_REPO",
            "SKAFFOLD_DEFAULT_REPO",
            "KO_DOCKER_REPO",
        ]
        .into_iter()
        .find_map(|var| env.get(var).map(|r| (var.into(), r))),
    };
    let Some((source, repo)) = found.filter(|(_, r)| !r.is_empty()) else {
        return Ok(None);
    };
    let bare_registry = repo == "localhost"
        || repo.rsplit_once(':').is_some_and(|(host, port)| {
            !host.contains('/') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        });
    let checked = if bare_registry {
        Repository::parse(&format!("{repo}/x"))
    } else {
        Repository::parse(&repo)
    };
    checked.map(|_| Some(repo)).map_err(|e| {
        err(
            source,
            format!("{e} (give a registry such as localhost:5000, or a repository under one)"),
        )
    })
}

impl Plan {
    /// The tags pushed for `a`: none when pushing by digest.
    pub fn pushed_tags<'a>(&self, a: &'a ArtifactPlan) -> &'a [String] {
        if self.push_by_digest { &[] } else { &a.tags }
    }

    /// The reference printed for `a` pushed to `repo`: `repo:tag@digest`, or `repo@digest`
    /// when pushing by digest.
    pub fn pushed_reference(&self, a: &ArtifactPlan, repo: &Repository, digest: &Digest) -> String {
        match self.pushed_tags(a).first() {
            Some(tag) => format!("{repo}:{tag}@{digest}"),
            None => format!("{repo}@{digest}"),
        }
    }
}

/// Command-line targets share one configuration: the flags, over `.ko.yaml` defaults.
fn cli_artifact(
    args: &BuildArgs,
    env: &Env,
    cwd: &Path,
    common: &Common,
    warnings: &mut Vec<String>,
) -> Result<(ArtifactPlan, KoConfig), PlanError> {
    let ko_config_path = env.get("KO_CONFIG_PATH").map(|p| cwd.join(p));
    let ko = KoConfig::load(cwd, ko_config_path.as_deref(), env).map_err(located)?;
    warnings.extend(ko.warnings.iter().cloned());
    let platforms = platforms(
        &args.opts.platforms,
        &ko.default_platforms,
        &ko_default(&ko, env, "defaultPlatforms"),
        env,
    )?;
    let base_input = args
        .opts
        .base
        .clone()
        .or_else(|| ko.default_base_image.clone())
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    let base_field = if args.opts.base.is_some() {
        Flag::Base.into()
    } else {
        Field::from("defaultBaseImage")
    };
    let base = BaseSpec::parse(&base_input).map_err(|e| err(base_field, e))?;
    let mut base_overrides = BTreeMap::new();
    for (ip, r) in &ko.base_image_overrides {
        base_overrides.insert(
            ip.clone(),
            BaseSpec::parse(r).map_err(|e| err("baseImageOverrides", e))?,
        );
    }
    if let Some(name) = &args.opts.image {
        Repository::parse(&format!("localhost/{name}")).map_err(|e| err(Flag::Image, e))?;
    }
    let destination = match (&common.default_repo, common.push) {
        (Some(r), true) => Destination::DefaultRepo {
            repo: r.clone(),
            name: args.opts.image.clone(),
        },
        _ => Destination::None,
    };
    let mut go_env = Vec::new();
    let env_field = ko_default(&ko, env, "defaultEnv");
    for kv in &ko.default_env {
        go_env.push(go_env_entry(&env_field, kv)?);
    }
    go_env.extend(common.env.iter().cloned());
    let data = ko_data(cwd, env, &go_env, common.source_date_epoch)?;
    let expand = |field: &Field, values: &[String]| -> Result<Vec<String>, PlanError> {
        let expanded = values
            .iter()
            .map(|v| data.expand(v).map_err(|e| err(field, e)))
            .collect::<Result<Vec<_>, _>>()?;
        refuse_toolexec(field, &expanded)?;
        Ok(expanded)
    };
    let (flags, flags_field) = if args.opts.flags.is_empty() {
        (
            &ko.default_flags,
            ko_default(&ko, env, "defaultFlags").into(),
        )
    } else {
        (&args.opts.flags, Flag::Flags.into())
    };
    let (ldflags, ldflags_field) = if args.opts.ldflags.is_empty() {
        (
            &ko.default_ldflags,
            ko_default(&ko, env, "defaultLdflags").into(),
        )
    } else {
        (&args.opts.ldflags, Flag::Ldflags.into())
    };
    let plan = ArtifactPlan {
        image_name: args.opts.image.clone(),
        target: String::new(),
        dir: cwd.to_path_buf(),
        destination,
        base,
        base_overrides,
        platforms,
        go_env,
        flags: expand(&flags_field, flags)?,
        ldflags: expand(&ldflags_field, ldflags)?,
        labels: common.labels.clone(),
        annotations: common.annotations.clone(),
        tags: if common.tags.is_empty() {
            vec!["latest".into()]
        } else {
            common.tags.clone()
        },
        tagged_name: None,
        capabilities: None,
    };
    Ok((plan, ko))
}

/// ko's `builds` dispatch for command-line targets: the entry whose package is the target's
/// gives its env (replacing `defaultEnv`), flags and ldflags (unless given on the command line).
fn apply_ko_builds(
    artifacts: &mut [ArtifactPlan],
    ko: &KoConfig,
    args: &BuildArgs,
    env: &Env,
    cwd: &Path,
    common: &Common,
    go: &str,
) -> Result<(), PlanError> {
    let file = ko
        .file
        .as_ref()
        .map_or_else(|| ".ko.yaml".to_string(), |f| f.display().to_string());
    let mut entries = Vec::new();
    for b in &ko.builds {
        let at = format!("{file}:{}:{}", b.position.line, b.position.column);
        let mut dir = cwd.join(&b.dir);
        let mut main = b.main.clone();
        // A main naming a file stands for its directory, as in ko.
        if dir.join(&main).is_file() {
            dir = dir
                .join(&main)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or(dir);
            main = ".".into();
        }
        let ip = skaffold::go_list(go, &dir, &crate::config::build_pattern(&main))
            .map_err(|e| err(&at, e))?;
        entries.push((ip, b, at));
    }
    for a in artifacts.iter_mut() {
        let ip = match a.target.strip_prefix("ko://") {
            Some(ip) => ip.to_string(),
            None if a.target.ends_with("...") => continue,
            None => {
                skaffold::go_list(go, &cwd.join(&a.target), ".").map_err(|e| err(&a.target, e))?
            }
        };
        // ko keys build configs by import path: a later entry for the same path wins, as
        // for skaffold.yaml artifacts (config::precedence).
        let Some((_, b, at)) = entries.iter().rfind(|(e, _, _)| *e == ip) else {
            continue;
        };
        a.capabilities = capabilities(at, b)?;
        if !b.env.is_empty() {
            let mut go_env = Vec::new();
            for kv in &b.env {
                go_env.push(go_env_entry(&format!("{at}: env"), kv)?);
            }
            go_env.extend(common.env.iter().cloned());
            a.go_env = go_env;
        }
        let data = ko_data(cwd, env, &a.go_env, common.source_date_epoch)?;
        let expand = |field: &str, values: &[String]| -> Result<Vec<String>, PlanError> {
            let field = format!("{at}: {field}");
            let expanded = values
                .iter()
                .map(|v| data.expand(v).map_err(|e| err(&field, e)))
                .collect::<Result<Vec<_>, _>>()?;
            refuse_toolexec(&field, &expanded)?;
            Ok(expanded)
        };
        if args.opts.flags.is_empty() && !b.flags.is_empty() {
            a.flags = expand("flags", &b.flags)?;
        }
        if args.opts.ldflags.is_empty() && !b.ldflags.is_empty() {
            a.ldflags = expand("ldflags", &b.ldflags)?;
        }
    }
    Ok(())
}

/// A `builds` entry's `linux_capabilities`; `at` is the entry's `FILE:LINE:COL`.
pub(crate) fn capabilities(
    at: &str,
    b: &crate::config::KoBuild,
) -> Result<Option<FileCaps>, PlanError> {
    FileCaps::parse(&b.linux_capabilities).map_err(|e| err(format!("{at}: linux_capabilities"), e))
}

/// One artifact per command-line target (default `.`), sharing the configuration.
fn expand_targets(artifacts: Vec<ArtifactPlan>, args: &BuildArgs) -> Vec<ArtifactPlan> {
    artifacts
        .into_iter()
        .flat_map(|a| {
            if !a.target.is_empty() {
                return vec![a];
            }
            let targets = if args.targets.is_empty() {
                vec![".".to_string()]
            } else {
                args.targets.clone()
            };
            targets
                .into_iter()
                .map(|t| ArtifactPlan {
                    target: t,
                    ..a.clone()
                })
                .collect()
        })
        .collect()
}

/// ko's template data, with `go env` read only if a template needs it.
struct KoData {
    data: std::cell::RefCell<Option<KoTemplateData>>,
    dir: PathBuf,
    /// The configured go command (`KO_GO_PATH`) and the build's environment, which `go env`
    /// reports on: the values a template reads are the ones the build will use.
    go: String,
    env: BTreeMap<String, String>,
    timestamp: i64,
}

fn ko_data(
    dir: &Path,
    env: &Env,
    go_env: &[(String, String)],
    source_date_epoch: Option<i64>,
) -> Result<KoData, PlanError> {
    let mut vars = env.vars().clone();
    vars.extend(go_env.iter().cloned());
    let timestamp = source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    Ok(KoData {
        data: Default::default(),
        dir: dir.to_path_buf(),
        go: go_command(env)?,
        env: vars,
        timestamp,
    })
}

impl KoData {
    fn expand(&self, value: &str) -> Result<String, crate::template::TemplateError> {
        if !value.contains("{{") {
            return Ok(value.to_string());
        }
        let mut data = self.data.borrow_mut();
        let data = data.get_or_insert_with(|| KoTemplateData {
            env: self.env.clone(),
            go_env: go_env_json(&self.go, &self.dir, &self.env),
            git: tags::git_info(&self.dir),
            timestamp: self.timestamp,
        });
        crate::template::ko_expand(value, data)
    }
}

fn go_env_json(go: &str, dir: &Path, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    std::process::Command::new(go)
        .args(["env", "-json"])
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default()
}

/// ko's order: `--platform`, else `.ko.yaml`'s `defaultPlatforms` (or `KO_DEFAULTPLATFORMS`),
/// else both GOOS and GOARCH from the environment, else linux/amd64. Configured platforms
/// together with GOOS/GOARCH/GOARM in the environment are an error, as in ko. `source` names
/// where `configured` was written (file and key, or variable).
fn platforms(
    flag: &[String],
    configured: &[String],
    source: &str,
    env: &Env,
) -> Result<Platforms, PlanError> {
    let (goos, goarch, goarm) = (env.get("GOOS"), env.get("GOARCH"), env.get("GOARM"));
    let (given, field) = if !flag.is_empty() {
        (flag, Field::from(Flag::Platform))
    } else {
        (configured, Field::from(source))
    };
    if !given.is_empty() {
        if let Some(var) = [("GOOS", &goos), ("GOARCH", &goarch), ("GOARM", &goarm)]
            .iter()
            .find(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()))
            .map(|(k, _)| *k)
        {
            return Err(err(
                &field,
                format!(
                    "{var} is set in the environment too: unset it, or drop {field} and let GOOS/GOARCH choose"
                ),
            ));
        }
        let platforms = Platforms::parse(given).map_err(|e| err(&field, e))?;
        if let Platforms::List(list) = &platforms {
            for p in list {
                p.go_env().map_err(|e| err(&field, e))?;
            }
        }
        return Ok(platforms);
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
    let Some(p) = &args.opts.file_output else {
        return Ok(None);
    };
    let path = cwd.join(p);
    if path.is_dir() {
        return Err(err(
            Flag::FileOutput,
            format!("{} is a directory: name a file", path.display()),
        ));
    }
    Ok(Some(path))
}

/// The Go architecture an ELF executable is for, from its header's machine field.
fn elf_arch(path: &Path) -> Result<String, String> {
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if &head[..4] != b"\x7fELF" {
        return Err(format!(
            "{} is not an ELF executable: give a Delve built for linux",
            path.display()
        ));
    }
    let machine = if head[5] == 2 {
        u16::from_be_bytes([head[18], head[19]])
    } else {
        u16::from_le_bytes([head[18], head[19]])
    };
    Ok(match machine {
        62 => "amd64",
        183 => "arm64",
        40 => "arm",
        22 => "s390x",
        21 => "ppc64le",
        243 => "riscv64",
        3 => "386",
        other => return Err(format!("{}: unknown ELF machine {other}", path.display())),
    }
    .to_string())
}

fn compression(
    algorithm: CompressionAlgorithm,
    level: Option<i32>,
) -> Result<Compression, PlanError> {
    let bad = |range: &str| {
        err(
            Flag::CompressionLevel,
            format!(
                "{} is out of range for {algorithm} ({range})",
                level.unwrap_or_default()
            ),
        )
    };
    match (algorithm, level) {
        (CompressionAlgorithm::Zstd, None) => Ok(Compression::Zstd(3)),
        (CompressionAlgorithm::Zstd, Some(n)) if (1..=19).contains(&n) => Ok(Compression::Zstd(n)),
        (CompressionAlgorithm::Zstd, Some(_)) => Err(bad("1-19")),
        (CompressionAlgorithm::Gzip, None) => Ok(Compression::default()),
        (CompressionAlgorithm::Gzip, Some(n)) if (1..=9).contains(&n) => {
            Ok(Compression::Gzip(n as u32))
        }
        (CompressionAlgorithm::Gzip, Some(_)) => Err(bad("1-9")),
    }
}

/// The tag and repository of a full reference given as a tag (`ghcr.io/acme/app:v1`);
/// `None` for a plain tag, which never holds a `/`.
fn full_reference_tag(written: &str) -> Result<Option<(String, Repository)>, PlanError> {
    if !written.contains('/') {
        return Ok(None);
    }
    let bad = |why: String| err(Flag::Tag, format!("{written:?}: {why}"));
    let reference = Reference::parse(written).map_err(|e| bad(e.to_string()))?;
    let last = written.rsplit('/').next().unwrap_or_default();
    match (&reference.tag, &reference.digest) {
        (Some(tag), None) if last.contains(':') => Ok(Some((tag.clone(), reference.repository()))),
        _ => Err(bad(
            "a full reference needs a tag and no digest, as in ghcr.io/acme/app:v1".into(),
        )),
    }
}

/// Points the one image at the repository the full-reference tags name, or refuses when
/// the configuration sends it elsewhere.
fn repository_from_tags(
    artifacts: &mut [ArtifactPlan],
    written: &str,
    repo: &Repository,
    push: bool,
) -> Result<(), PlanError> {
    if artifacts.len() > 1 || artifacts.iter().any(|a| a.target.contains("...")) {
        return Err(err(
            Flag::Tag,
            format!(
                "{written:?} names one image's repository, but several images are built: give plain tags"
            ),
        ));
    }
    let Some(a) = artifacts.first_mut() else {
        return Ok(());
    };
    let mismatch = |image: String| {
        err(
            Flag::Tag,
            format!(
                "{written:?} is in repository \"{repo}\", but the image goes to {image:?}: make the repository (default-repo and image name) match the tags, or give plain tags"
            ),
        )
    };
    a.destination = match &a.destination {
        Destination::None if push => Destination::Repository(repo.clone()),
        Destination::None => Destination::None,
        // The image name would come from the import path: the tags name it instead.
        Destination::DefaultRepo {
            repo: under,
            name: None,
        } => match repo.to_string().rsplit_once('/') {
            Some((parent, _)) if under == parent => Destination::Repository(repo.clone()),
            _ => return Err(mismatch(format!("{under}/<name>"))),
        },
        Destination::DefaultRepo {
            repo: under,
            name: Some(name),
        } => {
            if format!("{under}/{name}") != repo.to_string() {
                return Err(mismatch(format!("{under}/{name}")));
            }
            Destination::Repository(repo.clone())
        }
        Destination::Repository(r) if r == repo => Destination::Repository(r.clone()),
        Destination::Repository(r) => return Err(mismatch(r.to_string())),
    };
    Ok(())
}

fn key_value(field: impl Into<Field>, kv: &str) -> Result<(String, String), PlanError> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            check_key(field, k)?;
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(err(field, format!("{kv:?} is not KEY=VALUE"))),
    }
}

/// A label, annotation or environment variable name: a control character (a newline above
/// all) would make a name no tool shows or matches as written, and `=` one that reads back
/// as a different KEY=VALUE. Values may hold anything.
pub(crate) fn check_key(field: impl Into<Field>, key: &str) -> Result<(), PlanError> {
    match key.chars().find(|c| c.is_control() || *c == '=') {
        Some(c) => Err(err(
            field,
            format!(
                "the name {key:?} holds {c:?}: remove it (names take no control characters or '=')"
            ),
        )),
        None => Ok(()),
    }
}

fn pairs(field: Flag, items: &[String]) -> Result<BTreeMap<String, String>, PlanError> {
    items.iter().map(|kv| key_value(field, kv)).collect()
}

/// `--registry-ca` files against `cwd`, each read and parsed now: a wrong path or file is a
/// configuration error, found before anything is built.
pub(crate) fn ca_files(files: &[PathBuf], cwd: &Path) -> Result<Vec<PathBuf>, PlanError> {
    let bad = |path: &Path, why: String| {
        err(
            Flag::RegistryCa,
            format!("{path:?}: {why}: give a file of PEM certificates"),
        )
    };
    let mut paths = Vec::new();
    for file in files {
        let path = cwd.join(file);
        let pem = std::fs::read(&path).map_err(|e| bad(&path, format!("cannot read it: {e}")))?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => paths.push(path),
            _ => return Err(bad(&path, "no PEM certificate in it".into())),
        }
    }
    Ok(paths)
}

/// A directory kobuild creates when missing: a file in the way, or a nearest existing
/// directory that cannot be written, is a configuration error found now rather than at the
/// first file written.
#[allow(unsafe_code, reason = "access(2) has no safe wrapper in std")]
fn creatable_dir(field: impl Into<Field> + Copy, dir: PathBuf) -> Result<PathBuf, PlanError> {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    use std::os::unix::ffi::OsStrExt;
    let bad = |why: String| err(field, format!("{dir:?}: {why}: give a directory"));
    for at in dir.ancestors() {
        match std::fs::metadata(at) {
            Err(e) if matches!(e.kind(), NotFound | NotADirectory) => continue,
            Err(e) => return Err(bad(e.to_string())),
            Ok(m) if !m.is_dir() && at == dir => return Err(bad("a file is there".into())),
            Ok(m) if !m.is_dir() => return Err(bad(format!("{at:?} is a file"))),
            Ok(_) => {
                let c = std::ffi::CString::new(at.as_os_str().as_bytes())
                    .map_err(|_| bad("a NUL byte in the name".into()))?;
                // SAFETY: access(2) on a NUL-terminated path that outlives the call.
                if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(bad(format!("cannot write in {at:?}: {e}")));
                }
                break;
            }
        }
    }
    Ok(dir)
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
    use crate::cli::ImageArgs;

    /// Command-line arguments with one build option set.
    fn opts(set: impl FnOnce(&mut ImageArgs)) -> BuildArgs {
        let mut args = BuildArgs::default();
        set(&mut args.opts);
        args
    }

    fn plan(args: BuildArgs, env: &[(&str, &str)]) -> Result<Plan, PlanError> {
        Plan::new(&args, &Env::from_pairs(env), PathBuf::from("/work"))
    }

    #[test]
    fn defaults_are_ko_defaults() {
        let p = plan(BuildArgs::default(), &[("HOME", "/home/u")]).unwrap();
        let a = &p.artifacts[0];
        assert_eq!(p.artifacts.len(), 1);
        assert_eq!(a.target, ".");
        assert_eq!(a.platforms, Platforms::List(vec![Platform::linux_amd64()]));
        assert_eq!(a.tags, vec!["latest"]);
        assert_eq!(a.destination, Destination::None);
        assert!(p.cgo_disabled_by_default);
        assert!(p.outputs.default_layout);
        assert_eq!(
            p.outputs.oci_layout,
            Some(PathBuf::from("/work/.kobuild/oci"))
        );
        assert_eq!(p.cache_dir, PathBuf::from("/home/u/.cache/kobuild"));
        assert!(matches!(a.base, BaseSpec::Registry(_)));
    }

    #[test]
    fn environment_is_read_here() {
        let p = plan(
            opts(|o| o.env = vec!["GOFLAGS=-mod=vendor".into()]),
            &[
                ("CGO_ENABLED", "1"),
                ("KOBUILD_DEFAULT_REPO", "127.0.0.1:5000/apps"),
                ("SOURCE_DATE_EPOCH", "5000"),
            ],
        )
        .unwrap();
        assert!(!p.cgo_disabled_by_default);
        let a = &p.artifacts[0];
        assert_eq!(
            a.go_env.last().unwrap(),
            &("GOFLAGS".into(), "-mod=vendor".into())
        );
        assert!(
            matches!(&a.destination, Destination::DefaultRepo { repo, name: None } if repo == "127.0.0.1:5000/apps")
        );
        assert_eq!(p.source_date_epoch, Some(5000));
    }

    #[test]
    fn a_bare_registry_is_a_default_repo_and_errors_name_its_source() {
        for var in [
            "KOBUILD_DEFAULT_REPO",
            "SKAFFOLD_DEFAULT_REPO",
            "KO_DOCKER_REPO",
        ] {
            for repo in ["localhost:5000", "127.0.0.1:5000", "localhost"] {
                let p = plan(BuildArgs::default(), &[(var, repo)]).unwrap();
                assert!(
                    matches!(&p.artifacts[0].destination, Destination::DefaultRepo { repo: r, .. } if r == repo)
                );
            }
            let e = plan(BuildArgs::default(), &[(var, "host:5000/app:v1")]).unwrap_err();
            assert_eq!(e.field, var.into(), "{e}");
        }
        let p = plan(
            opts(|o| o.default_repo = Some("127.0.0.1:5000".into())),
            &[],
        )
        .unwrap();
        assert_eq!(p.artifacts.len(), 1);
        let e = plan(opts(|o| o.default_repo = Some("app:v1".into())), &[]).unwrap_err();
        assert_eq!(e.field, Flag::DefaultRepo.into(), "{e}");
    }

    #[test]
    fn registry_timeout_from_the_flag_else_the_environment() {
        let secs = |flag: Option<&str>, env: &[(&str, &str)]| {
            let args = opts(|o| o.registry.registry_timeout = flag.map(String::from));
            plan(args, env).map(|p| p.registry.timeout.map(|d| d.as_secs()))
        };
        let var = "KOBUILD_REGISTRY_TIMEOUT";
        assert_eq!(secs(None, &[]).unwrap(), None);
        assert_eq!(secs(None, &[(var, "")]).unwrap(), None);
        assert_eq!(secs(None, &[(var, "45")]).unwrap(), Some(45));
        assert_eq!(secs(Some("7"), &[(var, "45")]).unwrap(), Some(7));
        let e = secs(None, &[(var, "1m")]).unwrap_err().to_string();
        assert!(e.starts_with("KOBUILD_REGISTRY_TIMEOUT: \"1m\""), "{e}");
        for bad in ["0", "-5", "1.5", "", "86401"] {
            let e = secs(Some(bad), &[(var, "45")]).unwrap_err().to_string();
            assert!(e.starts_with("--registry-timeout: "), "{e}");
        }
    }

    #[test]
    fn goos_and_goarch_choose_the_default_platform_like_ko() {
        let p = plan(
            BuildArgs::default(),
            &[("GOOS", "linux"), ("GOARCH", "arm"), ("GOARM", "7")],
        )
        .unwrap();
        assert_eq!(p.artifacts[0].platforms.to_string(), "linux/arm/v7");
        let p = plan(BuildArgs::default(), &[("GOARCH", "arm64")]).unwrap();
        assert_eq!(p.artifacts[0].platforms.to_string(), "linux/amd64");
    }

    #[test]
    fn toolexec_is_refused_in_every_spelling_and_nothing_else_is() {
        for bad in [
            "-toolexec",
            "--toolexec",
            "-toolexec=/bin/x",
            "--toolexec=/bin/x",
            "-v -toolexec /bin/x",
            "'-toolexec=/bin/x y'",
            "\"--toolexec\"",
        ] {
            let e = refuse_toolexec(Flag::Flags, &["-v".into(), bad.into()]).unwrap_err();
            assert_eq!(e.field, Flag::Flags.into(), "{bad}");
            assert!(e.reason.contains("toolexec"), "{e}");
        }
        for fine in [
            "-trimpath",
            "-X main.mode=-toolexec",
            "-tags=toolexec",
            "-toolexecute",
            "---toolexec",
            "toolexec",
        ] {
            refuse_toolexec(Flag::Flags, &[fine.into()]).unwrap();
        }
        let e = plan(BuildArgs::default(), &[("GOFLAGS", "-mod=mod -toolexec=x")]).unwrap_err();
        assert_eq!(e.field, "GOFLAGS".into());
        let e = plan(opts(|o| o.env = vec!["GOFLAGS=--toolexec x".into()]), &[]).unwrap_err();
        assert_eq!(e.field, Flag::Env.into());
    }

    #[test]
    fn full_reference_tags_give_their_tag_and_repository() {
        let refs = |tags: &[&str]| opts(|o| o.tags = tags.iter().map(|t| t.to_string()).collect());
        let p = plan(
            refs(&["ghcr.io/acme/app:1.2.3", "ghcr.io/acme/app:sha-1"]),
            &[],
        )
        .unwrap();
        let a = &p.artifacts[0];
        assert_eq!(a.tags, ["1.2.3", "sha-1"]);
        let want = Repository::parse("ghcr.io/acme/app").unwrap();
        assert_eq!(a.destination, Destination::Repository(want.clone()));

        let under = [("KOBUILD_DEFAULT_REPO", "ghcr.io/acme")];
        let p = plan(refs(&["ghcr.io/acme/app:v1"]), &under).unwrap();
        assert_eq!(p.artifacts[0].destination, Destination::Repository(want));

        for (tags, env, says) in [
            (
                &["ghcr.io/acme/app:v1"][..],
                &[("KOBUILD_DEFAULT_REPO", "ghcr.io/other")][..],
                "but the image goes to \"ghcr.io/other/<name>\"",
            ),
            (
                &["ghcr.io/acme/app:v1", "ghcr.io/acme/two:v1"],
                &[],
                "name different repositories",
            ),
            (&["ghcr.io/acme/app"], &[], "needs a tag and no digest"),
            (&["ghcr.io/acme/App:v1"], &[], "ghcr.io/acme/App:v1"),
        ] {
            let e = plan(refs(tags), env).unwrap_err();
            assert_eq!(e.field, Flag::Tag.into(), "{tags:?}");
            assert!(e.reason.contains(says), "{tags:?}: {e}");
        }
        let mut two = refs(&["ghcr.io/acme/app:v1"]);
        two.targets = vec!["./a".into(), "./b".into()];
        let e = plan(two, &[]).unwrap_err();
        assert!(e.reason.contains("several images are built"), "{e}");
    }

    #[test]
    fn bad_input_names_the_field() {
        type Case<'a> = (BuildArgs, &'a [(&'a str, &'a str)], &'a str);
        let cases: Vec<Case> = vec![
            (
                opts(|o| o.platforms = vec!["linux".into()]),
                &[],
                "--platform",
            ),
            (
                opts(|o| o.platforms = vec!["a/b/c/d".into()]),
                &[],
                "--platform",
            ),
            (opts(|o| o.tags = vec!["-bad".into()]), &[], "--tag"),
            (opts(|o| o.labels = vec!["novalue".into()]), &[], "--label"),
            (opts(|o| o.base = Some("UPPER:x".into())), &[], "--base"),
            (
                opts(|o| o.default_repo = Some("Bad Repo".into())),
                &[],
                "--default-repo",
            ),
            (opts(|o| o.push = Some(false)), &[], "--push=false"),
            (
                opts(|o| {
                    o.push_by_digest = true;
                    o.push = Some(false);
                }),
                &[],
                "--push-by-digest",
            ),
            (
                opts(|o| {
                    o.push_by_digest = true;
                    o.tags = vec!["v1".into()];
                }),
                &[],
                "--tag",
            ),
            (
                BuildArgs::default(),
                &[("SOURCE_DATE_EPOCH", "yesterday")],
                "SOURCE_DATE_EPOCH",
            ),
            (
                opts(|o| o.platforms = vec!["all,linux/amd64".into()]),
                &[],
                "--platform",
            ),
            (
                opts(|o| o.platforms = vec!["linux/arm64".into()]),
                &[("GOARCH", "arm64")],
                "--platform",
            ),
            (
                opts(|o| o.platforms = vec!["linux/arm/x".into()]),
                &[],
                "--platform",
            ),
            (opts(|o| o.jobs = Some(0)), &[], "--jobs"),
        ];
        for (args, env, field) in cases {
            let e = plan(args, env).unwrap_err();
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }
}
