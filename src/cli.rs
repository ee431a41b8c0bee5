//! Command-line arguments. Parsing only: turning them into a plan is `plan`'s job.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kobuild",
    version,
    about = "Build Go apps into reproducible, ko-compatible OCI images"
)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Colour in the log: auto (on a terminal or in GitHub Actions, unless NO_COLOR is set),
    /// always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Stop the whole run after this many seconds (exit 1), as on SIGTERM: children ended,
    /// temporary files removed, no tag on an incomplete image.
    #[arg(long, global = true, value_name = "SECONDS", allow_hyphen_values = true, value_parser = seconds)]
    pub timeout: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// `--compression`; its default is the `Default` every caller (the action too) gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionAlgorithm {
    #[default]
    Gzip,
    Zstd,
}

impl std::fmt::Display for CompressionAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompressionAlgorithm::Gzip => "gzip",
            CompressionAlgorithm::Zstd => "zstd",
        })
    }
}

/// `--sbom`; its default is the `Default` every caller (the action too) gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormat {
    #[default]
    Spdx,
    None,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per run")]
pub enum Command {
    /// Build images and push them (or write an OCI layout or archive); prints one ref per image.
    Build(BuildArgs),
    /// Put built images into Kubernetes manifests (ko:// and image fields); nothing else changes.
    Render(RenderArgs),
    /// Build every ko:// image the manifests name (each once, in parallel), then print the
    /// manifests with the built references, as `ko resolve`.
    Resolve(ResolveArgs),
    /// Print the dependency files of skaffold.yaml's ko artifacts (what a change to rebuilds).
    Deps(DepsArgs),
    /// Write a skaffold.yaml with a ko artifact for every Go main package found here.
    Init(InitArgs),
    /// Run as a GitHub Action step: read INPUT_* and write step outputs.
    Action,
    /// Print the build as a GitHub Actions matrix (--matrix): one job per image and platform,
    /// from the same targets or skaffold.yaml and platforms as `build`.
    Plan(PlanArgs),
    /// Merge per-platform images from matrix builds (their artifacts.json files) into one
    /// index per image; push it by digest, then tag it. Prints one ref per image.
    Merge(MergeArgs),
}

#[derive(Clone, Debug, Default, Args)]
pub struct BuildArgs {
    /// What to build: a directory with a Go main package, ko://import/path, or ./... (default: .)
    pub targets: Vec<String>,

    #[command(flatten)]
    pub skaffold: SkaffoldArgs,

    /// Keep image paths under the default repo instead of flattening them (Skaffold's rule).
    #[arg(long)]
    pub multi_level_repo: bool,

    /// Go template over the results for --file-output and, with --quiet, stdout
    /// (default `{{json .}}`), as `skaffold build -o`.
    #[arg(short = 'o', long, value_name = "TEMPLATE")]
    pub output: Option<String>,

    /// Print the --output template instead of one ref per image.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// skaffold.yaml only: compute and print the tagged image names; build and push nothing
    /// (Skaffold's --dry-run).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: Option<bool>,

    /// skaffold.yaml only: build just the artifacts whose image name contains this
    /// (repeatable, comma-separated), as Skaffold's -b.
    #[arg(
        short = 'b',
        long = "build-image",
        value_name = "TEXT",
        value_delimiter = ','
    )]
    pub build_images: Vec<String>,

    /// --cache-artifacts=false: rebuild every image instead of reusing one whose inputs are
    /// unchanged (as Skaffold's flag; finished layers are still reused).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub cache_artifacts: Option<bool>,

    /// Artifacts built at once (env SKAFFOLD_BUILD_CONCURRENCY; default: skaffold.yaml's
    /// build.local.concurrency, else 1; 0 means all).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = whole_number("0 or more (0: all at once)"))]
    pub build_concurrency: Option<usize>,

    #[command(flatten)]
    pub opts: ImageArgs,
}

/// What to build into images and where to put them: shared by `build` and `resolve`.
#[derive(Clone, Debug, Default, Args)]
pub struct ImageArgs {
    /// Repository to push to; the image name is appended (env KOBUILD_DEFAULT_REPO,
    /// SKAFFOLD_DEFAULT_REPO or KO_DOCKER_REPO).
    #[arg(
        short = 'd',
        long = "default-repo",
        visible_alias = "repo",
        value_name = "REPO"
    )]
    pub default_repo: Option<String>,

    /// Image name under the repository (default: last element of the import path).
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,

    /// Tag to push (repeatable; default latest).
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Base image: a registry reference, scratch, or oci-layout:PATH[:TAG|@DIGEST].
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,

    /// Platforms to build, os/arch[/variant], comma-separated or repeated, or `all` for every
    /// platform of the base (default linux/amd64, or $GOOS/$GOARCH when both are set).
    #[arg(long = "platform", value_name = "PLATFORMS")]
    pub platforms: Vec<String>,

    /// How many `go build`s run at once (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N", allow_hyphen_values = true, value_parser = whole_number("1 or more"))]
    pub jobs: Option<usize>,

    /// Push to the registry (--push=false to only write a layout or archive).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub push: Option<bool>,

    /// Push without any tag and print `REPO@sha256:...`: for matrix jobs whose images
    /// `kobuild merge` tags as one index, leaving no per-job tags behind.
    #[arg(long)]
    pub push_by_digest: bool,

    /// Also write the image into this OCI layout directory.
    #[arg(long, value_name = "DIR")]
    pub oci_layout_path: Option<PathBuf>,

    /// Also write the image as an OCI archive (a tar of a layout) to this file.
    #[arg(long, value_name = "FILE")]
    pub oci_archive: Option<PathBuf>,

    /// Write Skaffold's artifacts.json here after everything is published.
    #[arg(long, value_name = "FILE")]
    pub file_output: Option<PathBuf>,

    /// Extra `go build` flag (repeatable).
    #[arg(long = "flags", value_name = "FLAG", allow_hyphen_values = true)]
    pub flags: Vec<String>,

    /// Linker flag, joined into one -ldflags (repeatable).
    #[arg(long = "ldflags", value_name = "FLAG", allow_hyphen_values = true)]
    pub ldflags: Vec<String>,

    /// Environment for `go build`, KEY=VALUE (repeatable; wins over the inherited one).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Image config label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Manifest annotation, KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Layer compression: gzip (ko's, the default) or zstd (smaller and faster; needs
    /// containerd 1.5+ or Docker 23+ to pull).
    #[arg(long, value_name = "ALGORITHM", value_enum, default_value_t)]
    pub compression: CompressionAlgorithm,

    /// Compression level (gzip 1-9, default 2: no bigger than ko's level 1; zstd 1-19,
    /// default 3).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = compression_level)]
    pub compression_level: Option<i32>,

    /// Debug build, as Skaffold's debug: `-gcflags all=-N -l` and no `-trimpath`.
    #[arg(long)]
    pub debug: bool,

    /// With --debug: a local Delve binary to add as /ko-app/dlv, started as the entrypoint (as
    /// ko's --debug); images of other architectures than the binary's get none. Nothing is
    /// downloaded.
    #[arg(long, value_name = "PATH", requires = "debug")]
    pub dlv: Option<PathBuf>,

    /// Coverage build (`go build -cover`); the image sets GOCOVERDIR=/tmp, where the binary
    /// writes its coverage files on exit.
    #[arg(long)]
    pub cover: bool,

    /// SBOM to attach to each image: spdx (SPDX 2.3 JSON as an OCI 1.1 referrer) or none.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t)]
    pub sbom: SbomFormat,

    /// Also write each SBOM into this directory (ko's file names).
    #[arg(long, value_name = "DIR")]
    pub sbom_dir: Option<PathBuf>,

    /// Do not reuse layers built by earlier runs (Go's own build cache still applies).
    #[arg(long)]
    pub no_cache: bool,

    /// Cache directory for binaries and layers (env KOBUILD_CACHE_DIR; default ~/.cache/kobuild).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Go's build cache (GOCACHE) for every go command kobuild runs (default: GOCACHE from the
    /// environment, else Go's own default; never a fresh directory).
    #[arg(long, value_name = "DIR")]
    pub gocache: Option<PathBuf>,
}

#[derive(Debug, Default, Args)]
pub struct RenderArgs {
    /// Manifest file, directory (its .yaml, .yml and .json files), - for stdin, or a
    /// skaffold.yaml, for the manifests its manifests section names (repeatable; default:
    /// ./skaffold.yaml).
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub profile: ProfileArgs,

    /// Skaffold's artifacts.json, as `build --file-output` writes it, or - for stdin.
    #[arg(short = 'a', long = "build-artifacts", value_name = "FILE")]
    pub build_artifacts: Option<PathBuf>,

    /// Built image, NAME=REF or a tagged reference (repeatable; artifacts.json entries win).
    #[arg(
        short = 'i',
        long = "images",
        value_name = "NAME=REF",
        value_delimiter = ','
    )]
    pub images: Vec<String>,

    /// Write the result to this file (atomically) instead of stdout; - is stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also walk the subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,

    /// Leave ko:// placeholders without a built image as they are, instead of failing.
    #[arg(long)]
    pub allow_unresolved: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Print `{"include":[{"name","targets","skaffold-file","build-image","platforms"}]}`,
    /// for `strategy.matrix: ${{ fromJSON(...) }}`; the keys are the action's inputs.
    #[arg(long, required = true)]
    pub matrix: bool,

    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Default, Args)]
pub struct MergeArgs {
    /// artifacts.json of a build job, as `build --file-output` writes it (repeatable).
    #[arg(long = "artifacts", value_name = "FILE", required = true)]
    pub artifacts: Vec<PathBuf>,

    /// Tag for each merged index (repeatable; default: the tag the inputs agree on, else latest).
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Write Skaffold's artifacts.json with the merged refs here.
    #[arg(long, value_name = "FILE")]
    pub file_output: Option<PathBuf>,

    /// SBOM to attach to each merged index: spdx (the index's SPDX 2.3 document, as a
    /// multi-platform build attaches) or none.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t)]
    pub sbom: SbomFormat,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Manifest file, directory (its .yaml, .yml and .json files), or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// Also walk the subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,

    #[command(flatten)]
    pub opts: ImageArgs,
}

#[derive(Debug, Args)]
pub struct DepsArgs {
    /// Only these images (as written in skaffold.yaml); one image prints bare paths.
    pub images: Vec<String>,

    #[command(flatten)]
    pub skaffold: SkaffoldArgs,
}

/// How to reach registries, for the commands that talk to them.
#[derive(Clone, Debug, Default, Args)]
pub struct RegistryArgs {
    /// Registry that may be reached over plain HTTP or with an unverified certificate (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// Extra CA certificate (PEM) to trust for registries (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,

    /// Seconds a registry request may go without any data moving before it fails and is
    /// retried; a slow link that keeps moving never times out (env KOBUILD_REGISTRY_TIMEOUT;
    /// default 300).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub registry_timeout: Option<String>,
}

/// The skaffold.yaml and its profiles, for the commands that read one.
#[derive(Clone, Debug, Default, Args)]
pub struct SkaffoldArgs {
    /// skaffold.yaml to read (default: ./skaffold.yaml; `build` reads it only when no
    /// targets are given).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Option<PathBuf>,

    #[command(flatten)]
    pub profile: ProfileArgs,
}

/// skaffold.yaml profiles, for every command that reads one.
#[derive(Clone, Debug, Default, Args)]
pub struct ProfileArgs {
    /// skaffold.yaml profile to apply (repeatable; `-NAME` turns off an auto-activated one).
    #[arg(
        short = 'p',
        long = "profile",
        value_name = "NAME",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub profiles: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Replace an existing skaffold.yaml.
    #[arg(long)]
    pub force: bool,
}

/// A count flag's parser, with `allow_hyphen_values` on the flag: clap alone takes `-1` for an
/// unknown flag and prints its usage, or gives Rust's parse error without the accepted range.
fn whole_number(range: &'static str) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| {
        s.parse()
            .map_err(|_| format!("not a whole number: give {range}"))
    }
}

/// A duration in whole seconds, at least 1.
fn seconds(s: &str) -> Result<u64, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "not a whole number of seconds: give 1 or more".to_string())
}

/// The range depends on --compression, which the plan checks; here only that it is a number.
fn compression_level(s: &str) -> Result<i32, String> {
    s.parse()
        .map_err(|_| "not a whole number: give 1-9 for gzip, 1-19 for zstd".to_string())
}

/// Flags of `skaffold build` that mean nothing for a ko build without a cluster, daemon or
/// remote cache: refused by name rather than left to the parser's generic message.
const SKAFFOLD_ONLY_FLAGS: &[&str] = &[
    "--assume-yes",
    "--cache-file",
    "--check-cluster-node-platforms",
    "--config",
    "--detect-minikube",
    "--disable-multi-platform-build",
    "--kube-context",
    "--kubeconfig",
    "--module",
    "--mute-logs",
    "--namespace",
    "--profile-auto-activation",
    "--propagate-profiles",
    "--remote-cache-dir",
    "--rpc-http-port",
    "--rpc-port",
    "--skip-tests",
    "--sync-remote-cache",
    "--toot",
    "--wait-for-connection",
];

/// One line for a Skaffold-only flag given to `kobuild build` (`argv` without the program
/// name), so scripts written for `skaffold build` learn what to drop.
pub fn refuse_skaffold_only_flags(argv: &[String]) -> Result<(), String> {
    let mut words = argv.iter().take_while(|a| *a != "--");
    if !words.any(|a| a == "build") {
        return Ok(());
    }
    for arg in words {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if SKAFFOLD_ONLY_FLAGS.contains(&name) {
            return Err(format!(
                "{name:?} is a skaffold build flag with no meaning for a ko build: remove it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skaffold_only_flags_are_named() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = refuse_skaffold_only_flags(&argv(&["build", "--skip-tests=true"])).unwrap_err();
        assert!(
            e.starts_with("\"--skip-tests\" is a skaffold build flag"),
            "{e}"
        );
        refuse_skaffold_only_flags(&argv(&["-v", "build", "--dry-run", "-p", "-x"])).unwrap();
        refuse_skaffold_only_flags(&argv(&["build", "--", "--toot"])).unwrap();
        refuse_skaffold_only_flags(&argv(&["render", "--toot"])).unwrap();
    }
}
