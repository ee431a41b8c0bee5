//! `skaffold.yaml` (every schema with the ko builder, `skaffold/v2beta26` to
//! `skaffold/v4beta14`), read the way Skaffold reads it: every YAML document is one
//! configuration (pipeline), fields are decoded strictly, profiles are applied per
//! configuration, and each configuration's `build` yields its artifacts. Older schemas are
//! upgraded as Skaffold upgrades them in memory; for the build section that only moves
//! `ko.platforms` (v2beta26–27) to the artifact's `platforms`.
//!
//! The build section, artifacts, the ko builder, tag policies, metadata and profiles are
//! modelled strictly (an unknown field is an error naming the path and the known fields).
//! `deploy`, `manifests`, `test`, `verify`, `portForward`, `resourceSelector`,
//! `customActions`, `requires`, other builders and non-local build types are accepted with
//! any content: kobuild does not use them, but profiles may patch them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrorKind, Fault, Pos};
use super::manifests::{self, Manifests};
use super::profiles::{self, ActivationContext, Profile, ProfileInfo};
use super::yaml::{Fields, Kind, Node, join, parse_documents};

/// The newest schema kobuild knows; every `skaffold/v4betaN` up to it is read.
pub const LATEST_V4BETA: u32 = 14;
/// The first schema whose strict decoder accepts `ko:` (before it the field is hidden).
pub const FIRST_KO_SCHEMA: &str = "skaffold/v2beta26";

/// A schema version with the ko builder, ordered as Skaffold's upgrade chain runs:
/// v2beta26…29, v3alpha1, v3, v4beta1…
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Schema(u32);

impl Schema {
    const V2BETA27: Schema = Schema(27);
    const V2BETA28: Schema = Schema(28);
    const LATEST: Schema = Schema(31 + LATEST_V4BETA);

    /// `None` for a version without the ko builder or one kobuild does not know.
    pub fn parse(version: &str) -> Option<Schema> {
        let number = |n: &str| {
            (!n.starts_with('0') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse::<u32>().ok())
                .flatten()
        };
        let rank = match version.strip_prefix("skaffold/")? {
            "v3alpha1" => 30,
            "v3" => 31,
            v => {
                if let Some(n) = v.strip_prefix("v2beta").and_then(number) {
                    n
                } else {
                    31 + v.strip_prefix("v4beta").and_then(number)?
                }
            }
        };
        let schema = Schema(rank);
        (Schema(26)..=Schema::LATEST)
            .contains(&schema)
            .then_some(schema)
    }

    /// `manifests:` (v3alpha1 on), where earlier schemas had renderers under `deploy:`.
    fn has_manifests(self) -> bool {
        self >= Schema(30)
    }

    /// `ko.platforms`, which v2beta28 moved to the artifact.
    fn ko_platforms(self) -> bool {
        self < Schema::V2BETA28
    }

    /// `build.platforms` and the artifact's `platforms`, added in v2beta27.
    fn platforms(self) -> bool {
        self >= Schema::V2BETA27
    }
}

const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "requires",
    "build",
    "test",
    "manifests",
    "deploy",
    "portForward",
    "resourceSelector",
    "verify",
    "customActions",
    "profiles",
];
const METADATA_FIELDS: &[&str] = &["name", "labels", "annotations"];
const BUILD_FIELDS: &[&str] = &[
    "artifacts",
    "insecureRegistries",
    "tagPolicy",
    "platforms",
    "local",
    "googleCloudBuild",
    "cluster",
];
const ARTIFACT_FIELDS: &[&str] = &[
    "image",
    "context",
    "sync",
    "requires",
    "hooks",
    "platforms",
    "runtimeType",
    "docker",
    "bazel",
    "ko",
    "jib",
    "kaniko",
    "buildpacks",
    "custom",
];
const BUILDERS: &[&str] = &[
    "docker",
    "bazel",
    "ko",
    "jib",
    "kaniko",
    "buildpacks",
    "custom",
];
const KO_FIELDS: &[&str] = &[
    "fromImage",
    "dependencies",
    "dir",
    "env",
    "flags",
    "labels",
    "ldflags",
    "main",
];
const KO_DEPENDENCY_FIELDS: &[&str] = &["paths", "ignore"];
const ARTIFACT_DEPENDENCY_FIELDS: &[&str] = &["image", "alias"];
const LOCAL_FIELDS: &[&str] = &[
    "push",
    "tryImportMissing",
    "useDockerCLI",
    "useBuildkit",
    "concurrency",
];
const TAGGERS: &[&str] = &[
    "gitCommit",
    "sha256",
    "envTemplate",
    "dateTime",
    "customTemplate",
    "inputDigest",
];
const COMPONENT_FIELDS: &[&str] = &[
    "name",
    "gitCommit",
    "sha256",
    "envTemplate",
    "dateTime",
    "customTemplate",
    "inputDigest",
];
const GIT_FIELDS: &[&str] = &["variant", "prefix", "ignoreChanges"];
const ENV_TEMPLATE_FIELDS: &[&str] = &["template"];
const DATE_TIME_FIELDS: &[&str] = &["format", "timezone"];
const CUSTOM_TEMPLATE_FIELDS: &[&str] = &["template", "components"];

/// The whole file after profiles: every configuration's artifacts, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkaffoldConfig {
    pub file: PathBuf,
    /// One per YAML document, in file order.
    pub pipelines: Vec<Pipeline>,
    /// The artifacts of all pipelines, in order (Skaffold keeps this order in its output).
    pub artifacts: Vec<Artifact>,
    /// Artifacts built at once: the smallest non-zero `build.local.concurrency` over the
    /// pipelines (each defaulting to 1); 0 means no limit.
    pub concurrency: u32,
    /// Every declared profile, with whether it was applied.
    pub profiles: Vec<ProfileInfo>,
    /// `FILE:LINE:COL: …` notes about what kobuild ignores.
    pub warnings: Vec<String>,
}

impl SkaffoldConfig {
    /// An artifact's platforms: its own, else its pipeline's `build.platforms`; empty means
    /// none configured.
    pub fn platforms<'a>(&'a self, artifact: &'a Artifact) -> &'a [String] {
        if artifact.platforms.is_empty() {
            self.pipelines
                .get(artifact.pipeline)
                .map_or(&[], |p| &p.platforms)
        } else {
            &artifact.platforms
        }
    }
}

/// One configuration's build settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    /// `metadata.name`, "" when unset.
    pub name: String,
    pub position: Pos,
    /// `build.platforms`.
    pub platforms: Vec<String>,
    /// `build.tagPolicy`; Skaffold's default is `gitCommit: {}`.
    pub tag_policy: TagPolicy,
    pub build_type: BuildType,
    pub insecure_registries: Vec<String>,
    /// What `render` renders for this configuration.
    pub manifests: Manifests,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildType {
    Local(LocalBuild),
    GoogleCloudBuild,
    Cluster,
}

/// `build.local`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalBuild {
    /// Unset: Skaffold pushes unless the kube-context is a local cluster (so it pushes in CI).
    pub push: Option<bool>,
    pub try_import_missing: bool,
    pub use_docker_cli: bool,
    pub use_buildkit: Option<bool>,
    /// Unset means Skaffold's default, 1; 0 means no limit.
    pub concurrency: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagPolicy {
    GitCommit {
        variant: GitVariant,
        prefix: String,
        ignore_changes: bool,
    },
    Sha256,
    EnvTemplate {
        template: String,
    },
    /// Empty `format` and `timezone` mean Skaffold's defaults
    /// (`2006-01-02_15-04-05.999_MST`, the local zone).
    DateTime {
        format: String,
        timezone: String,
    },
    CustomTemplate {
        template: String,
        components: Vec<TaggerComponent>,
    },
    InputDigest,
}

impl Default for TagPolicy {
    fn default() -> Self {
        TagPolicy::GitCommit {
            variant: GitVariant::Tags,
            prefix: String::new(),
            ignore_changes: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggerComponent {
    pub name: String,
    pub tagger: TagPolicy,
}

/// `gitCommit.variant`, matched case-insensitively as Skaffold does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitVariant {
    Tags,
    CommitSha,
    AbbrevCommitSha,
    TreeSha,
    AbbrevTreeSha,
    Branches,
}

const GIT_VARIANTS: [(&str, GitVariant); 6] = [
    ("Tags", GitVariant::Tags),
    ("CommitSha", GitVariant::CommitSha),
    ("AbbrevCommitSha", GitVariant::AbbrevCommitSha),
    ("TreeSha", GitVariant::TreeSha),
    ("AbbrevTreeSha", GitVariant::AbbrevTreeSha),
    ("Branches", GitVariant::Branches),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The `image` field as written (e.g. `ko://github.com/acme/api`); artifacts.json's
    /// `imageName` is exactly this.
    pub image: String,
    /// `context`, "." when unset.
    pub context: String,
    /// The artifact's own `platforms` (see [`SkaffoldConfig::platforms`]).
    pub platforms: Vec<String>,
    pub runtime_type: Option<String>,
    pub requires: Vec<ArtifactDependency>,
    pub builder: Builder,
    /// Index into [`SkaffoldConfig::pipelines`].
    pub pipeline: usize,
    /// Where the artifact is written (for a patched-in artifact, where the patch value is).
    pub file: PathBuf,
    pub position: Pos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactDependency {
    pub image: String,
    pub alias: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Builder {
    Ko(KoArtifact),
    /// Another builder (`docker`, also Skaffold's default when none is set, `jib`, …),
    /// which kobuild skips.
    Other(&'static str),
}

/// The `ko` builder, fields verbatim (templates not expanded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KoArtifact {
    pub from_image: String,
    pub dependencies: Option<KoDependencies>,
    pub dir: String,
    pub env: Vec<String>,
    pub flags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ldflags: Vec<String>,
    pub main: String,
}

/// `ko.dependencies`; `None` lists are unset, which differs from empty ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KoDependencies {
    pub paths: Option<Vec<String>>,
    pub ignore: Option<Vec<String>>,
}

impl KoArtifact {
    /// Skaffold's `koArtifactSpecifiesBuildConfig`: any of `dir` or `main` (other than ""
    /// or "."), `env`, `flags`, `ldflags`. When false, `.ko.yaml` `builds` may apply.
    pub fn specifies_build_config(&self) -> bool {
        !matches!(self.dir.as_str(), "" | ".")
            || !matches!(self.main.as_str(), "" | ".")
            || !self.env.is_empty()
            || !self.flags.is_empty()
            || !self.ldflags.is_empty()
    }

    /// The watched and ignored patterns: `["**/*.go"]` and none when `dependencies` is
    /// unset or sets neither list (ko/dependencies.go).
    pub fn dependency_patterns(&self) -> (Vec<String>, Vec<String>) {
        match &self.dependencies {
            Some(KoDependencies { paths: Some(_), .. })
            | Some(KoDependencies {
                ignore: Some(_), ..
            }) => {
                let d = self.dependencies.clone().unwrap_or_default();
                (d.paths.unwrap_or_default(), d.ignore.unwrap_or_default())
            }
            _ => (vec!["**/*.go".to_string()], Vec::new()),
        }
    }
}

/// Read `skaffold.yaml` at `path` and apply profiles: those named in `profiles` (a name
/// prefixed with `-` drops an auto-activated one), and, with `activation`, those whose
/// `activation` conditions hold.
pub fn load_skaffold(
    path: &Path,
    profiles: &[String],
    activation: Option<&ActivationContext>,
) -> Result<SkaffoldConfig, ConfigError> {
    let text =
        crate::fsutil::read_string_bounded(path, crate::fsutil::MAX_CONFIG_BYTES).map_err(|e| {
            ConfigError {
                file: path.to_path_buf(),
                position: None,
                kind: ConfigErrorKind::Io(e),
            }
        })?;
    parse_skaffold(path, &text, profiles, activation)
}

/// [`load_skaffold`] on text already read; `file` names it in errors and warnings.
pub fn parse_skaffold(
    file: &Path,
    text: &str,
    profiles: &[String],
    activation: Option<&ActivationContext>,
) -> Result<SkaffoldConfig, ConfigError> {
    parse(file, text, profiles, activation).map_err(|f| f.in_file(file))
}

fn warn(file: &Path, pos: Pos, message: &str) -> String {
    format!("{}:{}:{}: {message}", file.display(), pos.line, pos.column)
}

struct Document {
    node: Node,
    schema: Schema,
    name: String,
    profiles: Vec<Profile>,
}

fn parse(
    file: &Path,
    text: &str,
    named: &[String],
    activation: Option<&ActivationContext>,
) -> Result<SkaffoldConfig, Fault> {
    let mut warnings = Vec::new();
    let mut documents = Vec::new();
    for (i, node) in parse_documents(text)?.into_iter().enumerate() {
        documents.push(read_document(file, node, i, &mut warnings)?);
    }
    if documents.is_empty() {
        return Err(Fault {
            pos: None,
            kind: ConfigErrorKind::Message("the file holds no configuration".to_string()),
        });
    }

    let mut available: Vec<String> = documents
        .iter()
        .flat_map(|d| d.profiles.iter().map(|p| p.info.name.clone()))
        .collect();
    available.sort();
    available.dedup();
    for name in named {
        let name = name.strip_prefix('-').unwrap_or(name);
        if !available.iter().any(|a| a == name) {
            return Err(Fault {
                pos: None,
                kind: ConfigErrorKind::UnknownProfile {
                    name: name.to_string(),
                    available,
                },
            });
        }
    }

    let mut config = SkaffoldConfig {
        file: file.to_path_buf(),
        pipelines: Vec::new(),
        artifacts: Vec::new(),
        concurrency: 0,
        profiles: Vec::new(),
        warnings: Vec::new(),
    };
    for (i, mut doc) in documents.into_iter().enumerate() {
        let selected = profiles::select(&doc.profiles, named, activation, &mut warnings).map_err(
            |(p, message)| {
                Fault::at(
                    doc.profiles[p].info.position,
                    ConfigErrorKind::Profile {
                        profile: doc.profiles[p].info.name.clone(),
                        message,
                    },
                )
            },
        )?;
        for &p in &selected {
            profiles::apply(&mut doc.node, &doc.profiles[p])?;
            doc.profiles[p].info.applied = true;
        }
        if !selected.is_empty() {
            // Skaffold decodes the patched configuration strictly again.
            read_metadata(&Fields::strict(&doc.node, "", TOP_FIELDS)?)?;
        }
        let build = read_build(doc.node.get("build"), "build", file, i, doc.schema)?;
        let manifests = manifests::read(&doc.node, doc.schema.has_manifests())?;
        if !matches!(build.pipeline.build_type, BuildType::Local(_)) {
            warnings.push(warn(
                file,
                doc.node.pos,
                "build: kobuild builds on this machine; googleCloudBuild and cluster settings are ignored",
            ));
        }
        config.artifacts.extend(build.artifacts);
        config.pipelines.push(Pipeline {
            name: doc.name,
            manifests,
            ..build.pipeline
        });
        config
            .profiles
            .extend(doc.profiles.into_iter().map(|p| p.info));
    }
    config.concurrency = concurrency(&config.pipelines);
    // Skaffold's default renderer, for a lone configuration that names none.
    if let [only] = config.pipelines.as_mut_slice()
        && !only.manifests.configured
    {
        only.manifests.raw_yaml = vec![manifests::DEFAULT_RAW_YAML.to_string()];
    }
    config.warnings = warnings;
    Ok(config)
}

/// Skaffold's `getConcurrency` over pipelines: the smallest non-zero value, else 0.
fn concurrency(pipelines: &[Pipeline]) -> u32 {
    let values = pipelines.iter().map(|p| match &p.build_type {
        BuildType::Local(l) => l.concurrency.unwrap_or(1),
        _ => 1,
    });
    values.filter(|&c| c > 0).min().unwrap_or(0)
}

fn read_document(
    file: &Path,
    node: Node,
    pipeline: usize,
    warnings: &mut Vec<String>,
) -> Result<Document, Fault> {
    let f = Fields::strict(&node, "", TOP_FIELDS)?;
    let version_pos = f.get("apiVersion").map_or(node.pos, |n| n.pos);
    let version = f.string("apiVersion")?;
    if version.is_empty() {
        return Err(Fault::invalid(
            node.pos,
            "apiVersion",
            format!("missing; kobuild reads {FIRST_KO_SCHEMA} to skaffold/v4beta{LATEST_V4BETA}"),
        ));
    }
    let Some(schema) = Schema::parse(&version) else {
        return Err(Fault::at(
            version_pos,
            ConfigErrorKind::UnsupportedVersion { found: version },
        ));
    };
    if let Some(kind) = f.opt_string("kind")?
        && kind != "Config"
    {
        return Err(Fault::invalid(
            f.get("kind").map_or(node.pos, |n| n.pos),
            "kind",
            format!("must be Config, not {kind:?}"),
        ));
    }
    let name = read_metadata(&f)?;
    if let Some(requires) = node
        .entry("requires")
        .filter(|r| !r.value.is_null() && !matches!(&r.value.kind, Kind::Seq(v) if v.is_empty()))
    {
        warnings.push(warn(
            file,
            requires.key_pos,
            "requires: kobuild does not load other configurations; their artifacts are not built",
        ));
    }
    // Skaffold rejects a bad field anywhere in the file, applied profile or not.
    read_build(f.get("build"), "build", file, pipeline, schema)?;
    let mut profiles: Vec<Profile> = Vec::new();
    for (path, p) in f.list("profiles")? {
        let profile = profiles::parse_profile(p, &path, pipeline)?;
        if profiles.iter().any(|q| q.info.name == profile.info.name) {
            return Err(Fault::invalid(
                p.pos,
                &path,
                format!("duplicate profile name {:?}", profile.info.name),
            ));
        }
        read_build(
            p.get("build"),
            &join(&path, "build"),
            file,
            pipeline,
            schema,
        )?;
        profiles.push(profile);
    }
    let mut node = node;
    if let Kind::Map(entries) = &mut node.kind {
        entries.retain(|e| e.key != "profiles");
    }
    Ok(Document {
        node,
        schema,
        name,
        profiles,
    })
}

/// `metadata.name`, checking the rest of `metadata`.
fn read_metadata(top: &Fields) -> Result<String, Fault> {
    match top.get("metadata") {
        Some(m) => {
            let m = Fields::strict(m, "metadata", METADATA_FIELDS)?;
            m.string_map("labels")?;
            m.string_map("annotations")?;
            m.string("name")
        }
        None => Ok(String::new()),
    }
}

struct Build {
    artifacts: Vec<Artifact>,
    pipeline: Pipeline,
}

fn read_build(
    node: Option<&Node>,
    path: &str,
    file: &Path,
    pipeline: usize,
    schema: Schema,
) -> Result<Build, Fault> {
    let empty = Node::new(Kind::Null, Pos::default());
    let node = node.unwrap_or(&empty);
    let f = Fields::strict(node, path, &fields(BUILD_FIELDS, schema.platforms(), &[]))?;
    let artifacts = f
        .list("artifacts")?
        .into_iter()
        .map(|(p, n)| read_artifact(n, &p, file, pipeline, schema))
        .collect::<Result<Vec<_>, _>>()?;
    let types: Vec<&str> = ["local", "googleCloudBuild", "cluster"]
        .into_iter()
        .filter(|t| f.get(t).is_some())
        .collect();
    if types.len() > 1 {
        return Err(Fault::invalid(
            node.pos,
            path,
            format!(
                "only one of local, googleCloudBuild, cluster may be set, found {}",
                types.join(" and ")
            ),
        ));
    }
    let build_type = match types.first() {
        Some(&"googleCloudBuild") => BuildType::GoogleCloudBuild,
        Some(&"cluster") => BuildType::Cluster,
        _ => BuildType::Local(match f.get("local") {
            None => LocalBuild::default(),
            Some(n) => read_local(n, &f.path("local"))?,
        }),
    };
    Ok(Build {
        artifacts,
        pipeline: Pipeline {
            name: String::new(),
            position: node.pos,
            platforms: f.strings("platforms")?,
            tag_policy: match f.get("tagPolicy") {
                None => TagPolicy::default(),
                Some(n) => read_tag_policy(n, &f.path("tagPolicy"), TAGGERS)?.unwrap_or_default(),
            },
            build_type,
            insecure_registries: f.strings("insecureRegistries")?,
            manifests: Manifests::default(),
        },
    })
}

fn read_local(node: &Node, path: &str) -> Result<LocalBuild, Fault> {
    let f = Fields::strict(node, path, LOCAL_FIELDS)?;
    let concurrency = match f.opt_int("concurrency")? {
        None => None,
        Some(c) => Some(u32::try_from(c).map_err(|_| {
            Fault::invalid(
                f.get("concurrency").map_or(node.pos, |n| n.pos),
                &f.path("concurrency"),
                "must be 0 (no limit) or a positive number",
            )
        })?),
    };
    Ok(LocalBuild {
        push: f.opt_bool("push")?,
        try_import_missing: f.bool("tryImportMissing")?,
        use_docker_cli: f.bool("useDockerCLI")?,
        use_buildkit: f.opt_bool("useBuildkit")?,
        concurrency,
    })
}

/// A tag policy (or a `customTemplate` component, whose fields also allow `name`): `None`
/// when no tagger is set.
fn read_tag_policy(
    node: &Node,
    path: &str,
    allowed: &'static [&'static str],
) -> Result<Option<TagPolicy>, Fault> {
    let f = Fields::strict(node, path, allowed)?;
    let set: Vec<&str> = TAGGERS
        .iter()
        .copied()
        .filter(|t| f.get(t).is_some())
        .collect();
    if set.len() > 1 {
        return Err(Fault::invalid(
            node.pos,
            path,
            format!("only one tagger may be set, found {}", set.join(" and ")),
        ));
    }
    let Some(&tagger) = set.first() else {
        return Ok(None);
    };
    let n = f.get(tagger).unwrap_or(node);
    let p = f.path(tagger);
    let required = |f: &Fields, key: &str| -> Result<String, Fault> {
        let value = f.string(key)?;
        if value.is_empty() {
            return Err(Fault::invalid(n.pos, &p, format!("{key} is required")));
        }
        Ok(value)
    };
    Ok(Some(match tagger {
        "gitCommit" => {
            let g = Fields::strict(n, &p, GIT_FIELDS)?;
            let variant = g.string("variant")?;
            let variant = if variant.is_empty() {
                GitVariant::Tags
            } else {
                GIT_VARIANTS
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(&variant))
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        Fault::invalid(
                            g.get("variant").map_or(n.pos, |v| v.pos),
                            &g.path("variant"),
                            format!(
                                "{variant:?} is not one of {}",
                                GIT_VARIANTS.map(|(name, _)| name).join(", ")
                            ),
                        )
                    })?
            };
            TagPolicy::GitCommit {
                variant,
                prefix: g.string("prefix")?,
                ignore_changes: g.bool("ignoreChanges")?,
            }
        }
        "sha256" => {
            Fields::strict(n, &p, &[])?;
            TagPolicy::Sha256
        }
        "inputDigest" => {
            Fields::strict(n, &p, &[])?;
            TagPolicy::InputDigest
        }
        "envTemplate" => {
            let e = Fields::strict(n, &p, ENV_TEMPLATE_FIELDS)?;
            TagPolicy::EnvTemplate {
                template: required(&e, "template")?,
            }
        }
        "dateTime" => {
            let d = Fields::strict(n, &p, DATE_TIME_FIELDS)?;
            TagPolicy::DateTime {
                format: d.string("format")?,
                timezone: d.string("timezone")?,
            }
        }
        _ => {
            let c = Fields::strict(n, &p, CUSTOM_TEMPLATE_FIELDS)?;
            let components = c
                .list("components")?
                .into_iter()
                .map(|(cp, cn)| {
                    let name = Fields::strict(cn, &cp, COMPONENT_FIELDS)?.string("name")?;
                    // Skaffold rejects these too; it also keeps this recursion one level deep.
                    if let Some(nested) = cn.entry("customTemplate") {
                        return Err(Fault::invalid(
                            nested.key_pos,
                            &cp,
                            "a component cannot be a customTemplate",
                        ));
                    }
                    let tagger = read_tag_policy(cn, &cp, COMPONENT_FIELDS)?
                        .ok_or_else(|| Fault::invalid(cn.pos, &cp, "a component needs a tagger"))?;
                    Ok(TaggerComponent { name, tagger })
                })
                .collect::<Result<_, Fault>>()?;
            TagPolicy::CustomTemplate {
                template: required(&c, "template")?,
                components,
            }
        }
    }))
}

/// `known` without `platforms` unless `platforms` holds, with `extra` added.
fn fields(known: &[&'static str], platforms: bool, extra: &[&'static str]) -> Vec<&'static str> {
    known
        .iter()
        .copied()
        .filter(|f| platforms || *f != "platforms")
        .chain(extra.iter().copied())
        .collect()
}

fn read_artifact(
    node: &Node,
    path: &str,
    file: &Path,
    pipeline: usize,
    schema: Schema,
) -> Result<Artifact, Fault> {
    let f = Fields::strict(
        node,
        path,
        &fields(ARTIFACT_FIELDS, schema.platforms(), &[]),
    )?;
    let image = f.string("image")?;
    if image.is_empty() {
        return Err(Fault::invalid(node.pos, path, "image is required"));
    }
    // A builder key counts even when null: `ko:` alone is a mistake for `ko: {}`.
    let builders: Vec<&'static str> = BUILDERS
        .iter()
        .copied()
        .filter(|b| node.get(b).is_some())
        .collect();
    if builders.len() > 1 {
        return Err(Fault::invalid(
            node.pos,
            path,
            format!(
                "only one builder may be set, found {}",
                builders.join(" and ")
            ),
        ));
    }
    let mut ko_platforms = Vec::new();
    let builder = match builders.first() {
        None => Builder::Other("docker"),
        Some(&"ko") => {
            let ko_path = f.path("ko");
            let Some(ko) = f.get("ko") else {
                return Err(Fault::invalid(
                    node.entry("ko").map_or(node.pos, |e| e.key_pos),
                    &ko_path,
                    "is null, which Skaffold reads as no builder (docker); write `ko: {}`",
                ));
            };
            let (ko, platforms) = read_ko(ko, &ko_path, schema)?;
            // Skaffold's v2beta27 upgrade: a non-empty ko.platforms replaces the artifact's.
            if !platforms.is_empty() {
                ko_platforms = platforms;
            }
            Builder::Ko(ko)
        }
        Some(other) => Builder::Other(other),
    };
    let requires = f
        .list("requires")?
        .into_iter()
        .map(|(p, n)| {
            let d = Fields::strict(n, &p, ARTIFACT_DEPENDENCY_FIELDS)?;
            let image = d.string("image")?;
            if image.is_empty() {
                return Err(Fault::invalid(n.pos, &p, "image is required"));
            }
            Ok(ArtifactDependency {
                image,
                alias: d.string("alias")?,
            })
        })
        .collect::<Result<_, Fault>>()?;
    Ok(Artifact {
        image,
        context: f
            .opt_string("context")?
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| ".".to_string()),
        platforms: if ko_platforms.is_empty() {
            f.strings("platforms")?
        } else {
            ko_platforms
        },
        runtime_type: f.opt_string("runtimeType")?,
        requires,
        builder,
        pipeline,
        file: file.to_path_buf(),
        position: node.pos,
    })
}

/// The ko builder, and `ko.platforms` in the schemas that have it.
fn read_ko(node: &Node, path: &str, schema: Schema) -> Result<(KoArtifact, Vec<String>), Fault> {
    let extra: &[&str] = if schema.ko_platforms() {
        &["platforms"]
    } else {
        &[]
    };
    let f = Fields::strict(node, path, &fields(KO_FIELDS, true, extra))?;
    let dependencies = match f.get("dependencies") {
        None => None,
        Some(n) => {
            let d = Fields::strict(n, &f.path("dependencies"), KO_DEPENDENCY_FIELDS)?;
            Some(KoDependencies {
                paths: d.opt_strings("paths")?,
                ignore: d.opt_strings("ignore")?,
            })
        }
    };
    let platforms = f.strings("platforms")?;
    let ko = KoArtifact {
        from_image: f.string("fromImage")?,
        dependencies,
        dir: f.string("dir")?,
        env: f.strings("env")?,
        flags: f.strings("flags")?,
        labels: f.string_map("labels")?,
        ldflags: f.strings("ldflags")?,
        main: f.string("main")?,
    };
    Ok((ko, platforms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SkaffoldConfig, ConfigError> {
        parse_skaffold(Path::new("skaffold.yaml"), text, &[], None)
    }

    #[test]
    fn minimal_and_defaults() {
        let c = parse("apiVersion: skaffold/v4beta14\nkind: Config\nbuild:\n  artifacts:\n  - image: app\n    ko: {}\n").unwrap();
        assert_eq!(c.artifacts.len(), 1);
        let a = &c.artifacts[0];
        assert_eq!(a.context, ".");
        assert_eq!((a.position.line, a.position.column), (5, 5));
        assert!(matches!(&a.builder, Builder::Ko(k) if !k.specifies_build_config()));
        assert_eq!(c.pipelines[0].tag_policy, TagPolicy::default());
        assert_eq!(c.concurrency, 1);
    }

    /// Skaffold upgrades v2beta26–27 in memory: `ko.platforms` becomes the artifact's.
    #[test]
    fn older_schemas_upgrade_the_build_section() {
        let doc = |v: &str, ko: &str| {
            format!(
                "apiVersion: skaffold/{v}\nkind: Config\nbuild:\n  artifacts:\n  - image: app\n    ko:\n      {ko}\n"
            )
        };
        let c = parse(&doc("v2beta26", "platforms: [linux/arm64]")).unwrap();
        assert_eq!(c.artifacts[0].platforms, ["linux/arm64"]);
        let c = parse(&doc("v3", "main: ./cmd/app")).unwrap();
        assert!(matches!(&c.artifacts[0].builder, Builder::Ko(k) if k.main == "./cmd/app"));
        let e = parse(&doc("v2beta28", "platforms: [linux/arm64]")).unwrap_err();
        assert!(e.to_string().contains("unknown field \"platforms\""), "{e}");
        let e = parse(
            "apiVersion: skaffold/v2beta26\nbuild:\n  artifacts:\n  - image: app\n    platforms: [linux/arm64]\n    ko: {}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field \"platforms\""), "{e}");
    }

    #[test]
    fn versions() {
        for v in [
            "skaffold/v2beta26",
            "skaffold/v2beta29",
            "skaffold/v3alpha1",
            "skaffold/v3",
            "skaffold/v4beta1",
            "skaffold/v4beta14",
        ] {
            assert!(parse(&format!("apiVersion: {v}\n")).is_ok(), "{v}");
        }
        for v in [
            "skaffold/v2beta25",
            "skaffold/v2beta9",
            "skaffold/v1",
            "skaffold/v3alpha2",
            "skaffold/v4beta15",
            "skaffold/v4beta01",
            "skaffold/v4beta",
            "v4beta1",
        ] {
            let e = parse(&format!("apiVersion: {v}\n")).unwrap_err();
            assert!(
                matches!(e.kind, ConfigErrorKind::UnsupportedVersion { .. }),
                "{v}"
            );
            assert_eq!(e.position.map(|p| (p.line, p.column)), Some((1, 13)));
        }
        assert!(parse("kind: Config\n").is_err());
        assert!(parse("apiVersion: skaffold/v4beta1\nkind: Other\n").is_err());
        assert!(parse("").is_err());
        assert_eq!(
            parse("- a\n").unwrap_err().to_string(),
            "skaffold.yaml:1:1: the document: expected a mapping, found a list"
        );
    }

    #[test]
    fn dependency_defaults() {
        let ko = |paths: Option<Vec<&str>>, ignore: Option<Vec<&str>>| KoArtifact {
            dependencies: Some(KoDependencies {
                paths: paths.map(|v| v.into_iter().map(String::from).collect()),
                ignore: ignore.map(|v| v.into_iter().map(String::from).collect()),
            }),
            ..KoArtifact::default()
        };
        let go = (vec!["**/*.go".to_string()], vec![]);
        assert_eq!(KoArtifact::default().dependency_patterns(), go);
        assert_eq!(ko(None, None).dependency_patterns(), go);
        assert_eq!(
            ko(None, Some(vec!["."])).dependency_patterns(),
            (vec![], vec![".".to_string()])
        );
        assert_eq!(
            ko(Some(vec![]), None).dependency_patterns(),
            (vec![], vec![])
        );
    }

    #[test]
    fn concurrency_rule() {
        let p = |c: Option<u32>| Pipeline {
            name: String::new(),
            position: Pos::default(),
            platforms: vec![],
            tag_policy: TagPolicy::default(),
            build_type: BuildType::Local(LocalBuild {
                concurrency: c,
                ..LocalBuild::default()
            }),
            insecure_registries: vec![],
            manifests: Manifests::default(),
        };
        assert_eq!(concurrency(&[p(Some(0)), p(Some(0))]), 0);
        assert_eq!(concurrency(&[p(Some(0)), p(Some(3)), p(Some(2))]), 2);
        assert_eq!(concurrency(&[p(None), p(Some(4))]), 1);
        assert_eq!(concurrency(&[]), 0);
    }
}
