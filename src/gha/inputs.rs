//! Action inputs as the runner passes them, and their mapping onto [`BuildArgs`], so that the
//! action and the command line share one path through [`crate::plan::Plan::new`].
//!
//! The runner sets `INPUT_<NAME>` with the name upper-cased and spaces turned into `_`; hyphens
//! stay (`INPUT_DEFAULT-REPO`). A declared input without a value arrives as an empty string,
//! so empty means unset.

use std::path::{Component, Path, PathBuf};

use super::GhaError;
use crate::cli::{BuildArgs, ImageArgs, RegistryArgs};
use crate::plan::Env;
use crate::registry::Repository;

/// The inputs that hold secrets: masked before anything else is printed.
pub const SECRET_INPUTS: [&str; 2] = ["password", "github-token"];

/// The environment variable the runner uses for an input.
pub fn env_name(input: &str) -> String {
    format!("INPUT_{}", input.replace(' ', "_").to_uppercase())
}

/// Raw access to the inputs, with the runner toolkit's trimming and parsing rules.
pub struct Inputs<'e> {
    env: &'e Env,
}

impl<'e> Inputs<'e> {
    pub fn new(env: &'e Env) -> Self {
        Inputs { env }
    }

    /// The trimmed value; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = self.env.get(&env_name(name))?;
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_string())
    }

    /// YAML 1.2 core booleans, as the toolkit's `getBooleanInput` accepts them.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, GhaError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some("true" | "True" | "TRUE") => Ok(true),
            Some("false" | "False" | "FALSE") => Ok(false),
            Some(other) => Err(GhaError::input(
                name,
                format!("{other:?} is not a boolean (true or false)"),
            )),
        }
    }

    /// One item per line: for values that may hold commas or spaces (flags, KEY=VALUE, paths).
    pub fn lines(&self, name: &str) -> Vec<String> {
        split(self.get(name), &['\n', '\r'])
    }

    /// Items separated by newlines and/or commas: for values that cannot hold a comma.
    pub fn items(&self, name: &str) -> Vec<String> {
        split(self.get(name), &['\n', '\r', ','])
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }
}

fn split(value: Option<String>, separators: &[char]) -> Vec<String> {
    value
        .iter()
        .flat_map(|v| v.split(separators))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every input, parsed and checked, with the GitHub context's defaults applied.
#[derive(Debug)]
pub struct ActionInputs {
    /// What `kobuild build` would get on its command line.
    pub build: BuildArgs,
    /// `working-directory`, resolved against the step's directory.
    pub cwd: PathBuf,
    /// `default-repo` was not given and was derived from the repository (ghcr.io), so later
    /// steps should see it too.
    pub derived_repo: Option<String>,
    pub login: Option<Login>,
    pub github_token: Option<String>,
    /// How many of `build.opts.labels`, from the start, are the GitHub context's defaults
    /// (the user's follow, and win).
    pub context_labels: usize,
    /// Whether to ask the GitHub API for the repository's labels ([`super::metadata`]).
    pub repository_labels: bool,
    /// Inputs that work but defeat what kobuild is for; shown as `::warning`s.
    pub warnings: Vec<String>,
}

/// A build time in a label makes every run's digest differ.
const CREATED_LABEL: &str = "org.opencontainers.image.created";
const CREATED_LABEL_PREFIX: &str = "org.opencontainers.image.created=";

/// Explicit registry credentials from the `registry`, `username` and `password` inputs.
pub struct Login {
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl ActionInputs {
    /// Reads every input from `env`; `step_dir` is where the step runs (the workspace).
    pub fn from_env(env: &Env, step_dir: &Path) -> Result<ActionInputs, GhaError> {
        let inputs = Inputs::new(env);
        // `.` components would show up in every path the plan derives from this one.
        let cwd: PathBuf = match inputs.path("working-directory") {
            Some(dir) => step_dir.join(dir),
            None => step_dir.to_path_buf(),
        }
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
        if !cwd.is_dir() {
            return Err(GhaError::input(
                "working-directory",
                format!("{} is not a directory", cwd.display()),
            ));
        }
        let push = inputs.bool("push", true)?;

        let mut default_repo = inputs.get("default-repo");
        let mut derived_repo = None;
        // Full references in `tags` (docker/metadata-action's) name the repository themselves.
        let tags_name_repo = inputs.items("tags").iter().any(|t| t.contains('/'));
        if default_repo.is_none()
            && env.get("KOBUILD_DEFAULT_REPO").is_none()
            && push
            && !tags_name_repo
        {
            derived_repo = ghcr_repo(env);
            default_repo.clone_from(&derived_repo);
        }

        let mut labels = Vec::new();
        let default_labels = inputs.bool("default-labels", true)?;
        if default_labels {
            labels.extend(context_labels(env));
        }
        let context_labels = labels.len();
        // Outside Actions only when asked for: nothing calls the network uninvited.
        let in_actions = env.get("GITHUB_ACTIONS").as_deref() == Some("true");
        let repository_labels = inputs.bool("repository-labels", in_actions)? && default_labels;
        // Later entries win in the plan, so the user's labels override the defaults.
        labels.extend(inputs.lines("labels"));
        let drop = inputs.items("drop-labels");
        labels.retain(|kv| {
            !drop
                .iter()
                .any(|k| kv.split('=').next() == Some(k.as_str()))
        });
        let mut warnings = Vec::new();
        if labels.iter().any(|kv| kv.starts_with(CREATED_LABEL_PREFIX)) {
            warnings.push(format!(
                "labels: \"{CREATED_LABEL}\" (docker/metadata-action sets it to the time of the \
                 run) changes the image digest on every run; add `drop-labels: {CREATED_LABEL}` \
                 to keep the digest reproducible"
            ));
        }

        let jobs = match inputs.get("jobs") {
            None => None,
            Some(j) => Some(j.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                GhaError::input("jobs", format!("{j:?} is not a whole number above 0"))
            })?),
        };

        let file_output = inputs.path("file-output").or_else(|| {
            env.get("RUNNER_TEMP")
                .filter(|t| !t.is_empty())
                .map(|t| Path::new(&t).join("kobuild-artifacts.json"))
        });

        // `auto` (the default) leaves the choice to the plan, as a bare `kobuild build` does:
        // skaffold.yaml when there is one, else `.`.
        let targets = match inputs.items("targets") {
            t if t == ["auto"] => Vec::new(),
            t => t,
        };
        if !targets.is_empty() && inputs.get("skaffold-file").is_some() {
            return Err(GhaError::input(
                "targets",
                "give targets or skaffold-file, not both: remove targets (or set it to auto)",
            ));
        }
        let mut build = BuildArgs {
            targets,
            opts: ImageArgs {
                default_repo: default_repo.clone(),
                image: inputs.get("image-name"),
                tags: inputs.items("tags"),
                base: inputs.get("from-image"),
                platforms: inputs.items("platforms"),
                jobs,
                push: Some(push),
                push_by_digest: inputs.bool("push-by-digest", false)?,
                oci_layout_path: inputs.path("oci-layout-path"),
                oci_archive: inputs.path("oci-archive"),
                file_output,
                flags: inputs.lines("flags"),
                ldflags: inputs.lines("ldflags"),
                env: inputs.lines("env"),
                labels,
                annotations: inputs.lines("annotations"),
                registry: RegistryArgs {
                    insecure_registries: inputs.items("insecure-registries"),
                    registry_ca: inputs
                        .lines("registry-ca")
                        .into_iter()
                        .map(PathBuf::from)
                        .collect(),
                    registry_timeout: inputs.get("registry-timeout"),
                },
                cache_dir: inputs.path("cache-dir"),
                gocache: inputs.path("gocache"),
                ..ImageArgs::default()
            },
            // Options without an input keep their command-line defaults.
            ..BuildArgs::default()
        };

        if let Some(v) = inputs.get("sbom") {
            build.opts.sbom = clap::ValueEnum::from_str(&v, false).map_err(|_| {
                GhaError::input(
                    "sbom",
                    format!("{v:?} is not a known format (spdx or none)"),
                )
            })?;
        }
        let skaffold_file = match inputs.path("skaffold-file") {
            Some(p) if !cwd.join(&p).is_file() => {
                return Err(GhaError::input(
                    "skaffold-file",
                    format!("{} does not exist", cwd.join(&p).display()),
                ));
            }
            p => p,
        };
        build.skaffold.filename = skaffold_file;
        build.build_images = inputs.items("build-image");

        let login_repo = default_repo.or_else(|| env.get("KOBUILD_DEFAULT_REPO"));
        Ok(ActionInputs {
            login: login(&inputs, login_repo.as_deref())?,
            github_token: inputs
                .get("github-token")
                .or_else(|| env.get("GITHUB_TOKEN").filter(|t| !t.is_empty())),
            build,
            cwd,
            derived_repo,
            context_labels,
            repository_labels,
            warnings,
        })
    }
}

/// `registry` defaults to the registry of the repository images are pushed to.
fn login(inputs: &Inputs, repo: Option<&str>) -> Result<Option<Login>, GhaError> {
    let (username, password) = match (inputs.get("username"), inputs.get("password")) {
        (None, None) => return Ok(None),
        (Some(u), Some(p)) => (u, p),
        (Some(_), None) => return Err(GhaError::input("password", "needed with username")),
        (None, Some(_)) => return Err(GhaError::input("username", "needed with password")),
    };
    let registry = match (inputs.get("registry"), repo) {
        (Some(r), _) => r,
        // An invalid repository is reported by the plan, under its own input name.
        (None, Some(repo)) => match Repository::parse(repo) {
            Ok(r) => r.registry,
            Err(_) => return Ok(None),
        },
        (None, None) => {
            return Err(GhaError::input(
                "registry",
                "needed with username and password when there is no default-repo",
            ));
        }
    };
    Ok(Some(Login {
        registry,
        username,
        password,
    }))
}

/// The server URL that makes ghcr.io this repository's registry.
const GITHUB_COM: &str = "https://github.com";

fn on_github_com(env: &Env) -> bool {
    env.get("GITHUB_SERVER_URL")
        .is_none_or(|s| s.trim_end_matches('/') == GITHUB_COM)
}

/// `ghcr.io/<owner>/<repo>`, lowercased as registries require (what setup-ko does).
fn ghcr_repo(env: &Env) -> Option<String> {
    let repository = env.get("GITHUB_REPOSITORY").filter(|r| !r.is_empty())?;
    on_github_com(env).then(|| format!("ghcr.io/{}", repository.to_lowercase()))
}

/// OCI labels from the GitHub context: `source` also links the package to its repository on
/// ghcr.io, which a push with the workflow's token needs.
fn context_labels(env: &Env) -> Vec<String> {
    let mut labels = Vec::new();
    if let Some(source) = context_source(env) {
        labels.push(format!("org.opencontainers.image.source={source}"));
    }
    if let Some(sha) = context_sha(env) {
        labels.push(format!("org.opencontainers.image.revision={sha}"));
    }
    labels
}

/// `GITHUB_SERVER_URL/GITHUB_REPOSITORY`: the repository's page.
pub fn context_source(env: &Env) -> Option<String> {
    let server = env.get("GITHUB_SERVER_URL").filter(|s| !s.is_empty())?;
    let repo = env.get("GITHUB_REPOSITORY")?;
    Some(format!("{}/{repo}", server.trim_end_matches('/')))
}

pub fn context_sha(env: &Env) -> Option<String> {
    env.get("GITHUB_SHA").filter(|s| !s.is_empty())
}

/// Whether ghcr.io credentials may default to the workflow's token.
pub fn token_fits_ghcr(env: &Env) -> bool {
    on_github_com(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ActionInputs, GhaError> {
        ActionInputs::from_env(&env(pairs), Path::new("/"))
    }

    #[test]
    fn names_follow_the_runner() {
        assert_eq!(env_name("default-repo"), "INPUT_DEFAULT-REPO");
        assert_eq!(env_name("my input"), "INPUT_MY_INPUT");
        let e = env(&[("INPUT_MY_INPUT", "  x \n")]);
        assert_eq!(Inputs::new(&e).get("my input").as_deref(), Some("x"));
    }

    #[test]
    fn empty_is_unset() {
        let e = env(&[("INPUT_TAGS", " \n "), ("INPUT_PUSH", "")]);
        let i = Inputs::new(&e);
        assert_eq!(i.get("tags"), None);
        assert!(i.items("tags").is_empty());
        assert!(i.bool("push", true).unwrap());
        assert!(!i.bool("push", false).unwrap());
    }

    #[test]
    fn booleans_are_yaml_core() {
        for (v, want) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("false", false),
            ("False", false),
            ("FALSE", false),
        ] {
            let e = env(&[("INPUT_PUSH", v)]);
            assert_eq!(Inputs::new(&e).bool("push", !want).unwrap(), want, "{v}");
        }
        for v in ["yes", "1", "on", "tRUE"] {
            let e = env(&[("INPUT_PUSH", v)]);
            let err = Inputs::new(&e).bool("push", true).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("input push: {v:?} is not a boolean (true or false)")
            );
        }
    }

    #[test]
    fn lists_split_by_kind() {
        let e = env(&[
            ("INPUT_TAGS", "v1, latest\n\n  sha-1 ,\r\n"),
            ("INPUT_LDFLAGS", "-s -w\n-X main.v=1,2\n"),
            ("INPUT_LABELS", "a=x, y\nb=2"),
        ]);
        let i = Inputs::new(&e);
        assert_eq!(i.items("tags"), ["v1", "latest", "sha-1"]);
        assert_eq!(i.lines("ldflags"), ["-s -w", "-X main.v=1,2"]);
        assert_eq!(i.lines("labels"), ["a=x, y", "b=2"]);
    }

    #[test]
    fn workflow_inputs_map_and_the_created_label_warns() {
        let labels = "org.opencontainers.image.created=2026-12-04T20:00:00.000Z\n\
                      org.opencontainers.image.version=1.2.3\n";
        let a = parse(&[
            ("INPUT_PUSH-BY-DIGEST", "true"),
            ("INPUT_BUILD-IMAGE", "api\nweb"),
            ("INPUT_TAGS", "ghcr.io/acme/app:1.2.3\n"),
            ("INPUT_LABELS", labels),
            ("INPUT_DEFAULT-LABELS", "false"),
            ("GITHUB_REPOSITORY", "acme/app"),
        ])
        .unwrap();
        assert!(a.build.opts.push_by_digest);
        assert_eq!(a.build.build_images, ["api", "web"]);
        // The tags name the repository, so none is derived from GITHUB_REPOSITORY.
        assert_eq!(a.derived_repo, None);
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].contains("drop-labels"), "{:?}", a.warnings);

        let a = parse(&[
            ("INPUT_LABELS", labels),
            ("INPUT_DEFAULT-LABELS", "false"),
            ("INPUT_DROP-LABELS", "org.opencontainers.image.created"),
        ])
        .unwrap();
        assert_eq!(
            a.build.opts.labels,
            ["org.opencontainers.image.version=1.2.3"]
        );
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn maps_onto_build_args() {
        let a = parse(&[
            ("INPUT_TARGETS", "./cmd/a\n./cmd/b"),
            ("INPUT_DEFAULT-REPO", "registry.example/team"),
            ("INPUT_FROM-IMAGE", "scratch"),
            ("INPUT_PLATFORMS", "linux/amd64,linux/arm64"),
            ("INPUT_TAGS", "v1\nlatest"),
            ("INPUT_PUSH", "True"),
            ("INPUT_JOBS", "3"),
            ("INPUT_FLAGS", "-tags=netgo,osusergo\n-v"),
            ("INPUT_ENV", "GOFLAGS=-mod=mod -v"),
            ("INPUT_ANNOTATIONS", "a=1,2"),
            ("INPUT_FILE-OUTPUT", "out/artifacts.json"),
            ("INPUT_SBOM", "spdx"),
            ("INPUT_DEFAULT-LABELS", "false"),
            ("GITHUB_REPOSITORY", "Owner/Repo"),
            ("GITHUB_SHA", "abc"),
            ("RUNNER_TEMP", "/tmp/runner"),
        ])
        .unwrap();
        let b = &a.build;
        assert_eq!(b.targets, ["./cmd/a", "./cmd/b"]);
        assert_eq!(
            b.opts.default_repo.as_deref(),
            Some("registry.example/team")
        );
        assert_eq!(b.opts.base.as_deref(), Some("scratch"));
        assert_eq!(b.opts.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(b.opts.tags, ["v1", "latest"]);
        assert_eq!(b.opts.push, Some(true));
        assert_eq!(b.opts.jobs, Some(3));
        assert_eq!(b.opts.flags, ["-tags=netgo,osusergo", "-v"]);
        assert_eq!(b.opts.env, ["GOFLAGS=-mod=mod -v"]);
        assert_eq!(b.opts.annotations, ["a=1,2"]);
        assert!(b.opts.labels.is_empty(), "default-labels: false");
        assert_eq!(
            b.opts.file_output,
            Some(PathBuf::from("out/artifacts.json"))
        );
        assert_eq!(a.build.opts.sbom, crate::cli::SbomFormat::Spdx);
        assert_eq!(a.derived_repo, None);
        assert_eq!(a.cwd, PathBuf::from("/"));
        let a = parse(&[("INPUT_WORKING-DIRECTORY", "./tmp/.")]).unwrap();
        assert_eq!(a.cwd, PathBuf::from("/tmp"));
        // action.yml's default: the plan picks skaffold.yaml or `.`, as the command line does.
        let a = parse(&[("INPUT_TARGETS", "auto")]).unwrap();
        assert!(a.build.targets.is_empty());
    }

    #[test]
    fn github_context_gives_labels_repo_and_artifacts_path() {
        let a = parse(&[
            ("INPUT_LABELS", "org.opencontainers.image.revision=mine"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "Owner/Repo"),
            ("GITHUB_SHA", "abc123"),
            ("RUNNER_TEMP", "/tmp/runner"),
        ])
        .unwrap();
        assert_eq!(
            a.build.opts.labels,
            [
                "org.opencontainers.image.source=https://github.com/Owner/Repo",
                "org.opencontainers.image.revision=abc123",
                "org.opencontainers.image.revision=mine",
            ]
        );
        assert_eq!(a.derived_repo.as_deref(), Some("ghcr.io/owner/repo"));
        assert_eq!(a.build.opts.default_repo, a.derived_repo);
        assert_eq!(
            a.build.opts.file_output,
            Some(PathBuf::from("/tmp/runner/kobuild-artifacts.json"))
        );

        // Not derived when pushing is off, the repo is set elsewhere, or the server is not
        // github.com (whose registry ghcr.io is).
        for extra in [
            ("INPUT_PUSH", "false"),
            ("KOBUILD_DEFAULT_REPO", "r.example/x"),
            ("GITHUB_SERVER_URL", "https://ghe.example"),
        ] {
            let a = parse(&[("GITHUB_REPOSITORY", "o/r"), extra]).unwrap();
            assert_eq!(a.derived_repo, None, "{extra:?}");
        }
    }

    #[test]
    fn repository_labels_only_in_actions_unless_asked() {
        let asked = |pairs: &[(&str, &str)]| parse(pairs).unwrap().repository_labels;
        assert!(asked(&[("GITHUB_ACTIONS", "true")]));
        assert!(asked(&[
            ("GITHUB_ACTIONS", "true"),
            ("INPUT_REPOSITORY-LABELS", "True")
        ]));
        assert!(!asked(&[
            ("GITHUB_ACTIONS", "true"),
            ("INPUT_REPOSITORY-LABELS", "false")
        ]));
        assert!(!asked(&[
            ("GITHUB_ACTIONS", "true"),
            ("INPUT_DEFAULT-LABELS", "false")
        ]));
        assert!(!asked(&[]));
        assert!(!asked(&[("GITHUB_ACTIONS", "false")]));
        assert!(asked(&[("INPUT_REPOSITORY-LABELS", "true")]));

        let a = parse(&[
            ("INPUT_LABELS", "a=1"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_SHA", "abc"),
        ])
        .unwrap();
        assert_eq!(a.context_labels, 2);
        assert_eq!(a.build.opts.labels[2], "a=1");
        let a = parse(&[("INPUT_DEFAULT-LABELS", "false"), ("GITHUB_SHA", "abc")]).unwrap();
        assert_eq!(a.context_labels, 0);
    }

    #[test]
    fn login_takes_its_registry_from_the_repo() {
        let a = parse(&[
            ("INPUT_DEFAULT-REPO", "registry.example:5000/team"),
            ("INPUT_USERNAME", "me"),
            ("INPUT_PASSWORD", "secret"),
        ])
        .unwrap();
        let login = a.login.unwrap();
        assert_eq!(
            (login.registry.as_str(), login.username.as_str()),
            ("registry.example:5000", "me")
        );
        assert!(!format!("{login:?}").contains("secret"));

        let a = parse(&[
            ("INPUT_REGISTRY", "other.example"),
            ("INPUT_DEFAULT-REPO", "registry.example/team"),
            ("INPUT_USERNAME", "me"),
            ("INPUT_PASSWORD", "secret"),
        ])
        .unwrap();
        assert_eq!(a.login.unwrap().registry, "other.example");
    }

    #[test]
    fn bad_inputs_name_the_input() {
        let cases: [(&[(&str, &str)], &str); 9] = [
            (
                &[
                    ("INPUT_TARGETS", "."),
                    ("INPUT_SKAFFOLD-FILE", "skaffold.yaml"),
                ],
                "input targets: give targets or skaffold-file, not both",
            ),
            (&[("INPUT_PUSH", "yes")], "input push: "),
            (&[("INPUT_DEFAULT-LABELS", "no")], "input default-labels: "),
            (
                &[("INPUT_REPOSITORY-LABELS", "off")],
                "input repository-labels: ",
            ),
            (&[("INPUT_JOBS", "0")], "input jobs: "),
            (&[("INPUT_SBOM", "cyclonedx")], "input sbom: "),
            (&[("INPUT_USERNAME", "me")], "input password: "),
            (
                &[("INPUT_USERNAME", "me"), ("INPUT_PASSWORD", "p")],
                "input registry: ",
            ),
            (
                &[("INPUT_WORKING-DIRECTORY", "no/such/dir")],
                "input working-directory: ",
            ),
        ];
        for (pairs, prefix) in cases {
            let e = parse(pairs).unwrap_err();
            assert!(e.to_string().starts_with(prefix), "{pairs:?}: {e}");
            assert!(e.is_config());
        }
    }
}
