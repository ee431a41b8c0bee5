//! ko's `.ko.yaml`, read as ko's `LoadConfig` does through viper: found in the build's
//! working directory (first of viper's extensions that exists) or at `KO_CONFIG_PATH` (a
//! file, or a directory holding `.ko.yaml`); keys are case-insensitive; `KO_DEFAULT*`
//! environment variables override the file; unknown keys are ignored (returned as warnings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrorKind, Fault, Pos, closest};
use super::yaml::{Entry, Kind, Node, index, join, parse_documents, string};
use crate::env::Env;

/// Viper's `SupportedExts`, in its search order.
const VIPER_EXTENSIONS: [&str; 12] = [
    "json",
    "toml",
    "yaml",
    "yml",
    "properties",
    "props",
    "prop",
    "hcl",
    "tfvars",
    "dotenv",
    "env",
    "ini",
];
/// Of those, the formats kobuild reads (JSON through the YAML parser).
const READABLE: [&str; 3] = ["json", "yaml", "yml"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KoConfig {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `defaultBaseImage` (or `KO_DEFAULTBASEIMAGE`); `None` means ko's built-in default.
    pub default_base_image: Option<String>,
    /// `baseImageOverrides`, keys lower-cased (viper lower-cases keys).
    pub base_image_overrides: BTreeMap<String, String>,
    /// `defaultPlatforms` (or `KO_DEFAULTPLATFORMS`), split as ko splits them.
    pub default_platforms: Vec<String>,
    pub default_env: Vec<String>,
    pub default_flags: Vec<String>,
    pub default_ldflags: Vec<String>,
    pub builds: Vec<KoBuild>,
    /// `FILE:LINE:COL: …` for keys ko ignores.
    pub warnings: Vec<String>,
}

/// One `builds` entry (ko's `build.Config`), templates not expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KoBuild {
    pub id: String,
    /// "" means ".".
    pub dir: String,
    /// "" means ".".
    pub main: String,
    pub env: Vec<String>,
    pub flags: Vec<String>,
    pub ldflags: Vec<String>,
    pub linux_capabilities: Vec<String>,
    pub position: Pos,
}

impl KoConfig {
    /// Find and read the configuration for a build running in `working_dir`, or the one
    /// `ko_config_path` (`KO_CONFIG_PATH`) names; then apply the `KO_*` variables of `env`.
    /// Without a file, the result holds only what the environment sets.
    pub fn load(
        working_dir: &Path,
        ko_config_path: Option<&Path>,
        env: &Env,
    ) -> Result<KoConfig, ConfigError> {
        let Some(file) = locate(working_dir, ko_config_path)? else {
            let mut config = KoConfig::default();
            config.apply_env(env);
            return Ok(config);
        };
        let text = crate::fsutil::read_string_bounded(&file, crate::fsutil::MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError {
                file: file.clone(),
                position: None,
                kind: ConfigErrorKind::Io(e),
            })?;
        KoConfig::parse(&file, &text, env)
    }

    /// Read `.ko.yaml` text; `file` names it in errors and warnings.
    pub fn parse(file: &Path, text: &str, env: &Env) -> Result<KoConfig, ConfigError> {
        let mut config = read(file, text).map_err(|f| f.in_file(file))?;
        config.file = Some(file.to_path_buf());
        config.apply_env(env);
        Ok(config)
    }

    /// The `baseImageOverrides` entry for an import path (with or without `ko://`),
    /// matched lower-cased as ko does.
    pub fn base_image_override(&self, import_path: &str) -> Option<&str> {
        let key = import_path
            .strip_prefix("ko://")
            .unwrap_or(import_path)
            .to_lowercase();
        self.base_image_overrides.get(&key).map(String::as_str)
    }

    /// Viper's AutomaticEnv: `KO_<KEY>` wins over the file; an empty variable counts as unset.
    fn apply_env(&mut self, env: &Env) {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty());
        let fields = |v: String| v.split_whitespace().map(String::from).collect::<Vec<_>>();
        if let Some(v) = var("KO_DEFAULTBASEIMAGE") {
            self.default_base_image = Some(v);
        }
        if let Some(v) = var("KO_DEFAULTPLATFORMS") {
            self.default_platforms = split_platforms(fields(v));
        }
        if let Some(v) = var("KO_DEFAULTENV") {
            self.default_env = fields(v);
        }
        if let Some(v) = var("KO_DEFAULTFLAGS") {
            self.default_flags = fields(v);
        }
        if let Some(v) = var("KO_DEFAULTLDFLAGS") {
            self.default_ldflags = fields(v);
        }
    }
}

/// ko's `WithPlatforms`: a single element is split on commas (`linux/amd64,linux/arm64`).
pub fn split_platforms(platforms: Vec<String>) -> Vec<String> {
    match platforms.as_slice() {
        [one] => one.split(',').map(String::from).collect(),
        _ => platforms,
    }
}

fn message(file: &Path, text: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        position: None,
        kind: ConfigErrorKind::Message(text),
    }
}

fn locate(
    working_dir: &Path,
    ko_config_path: Option<&Path>,
) -> Result<Option<PathBuf>, ConfigError> {
    let io = |file: &Path, e: std::io::Error| ConfigError {
        file: file.to_path_buf(),
        position: None,
        kind: ConfigErrorKind::Io(e),
    };
    let file = match ko_config_path.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => {
            let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
            if meta.is_file() {
                path.to_path_buf()
            } else if meta.is_dir() {
                let file = path.join(".ko.yaml");
                let meta = std::fs::metadata(&file).map_err(|e| io(&file, e))?;
                if !meta.is_file() {
                    return Err(message(
                        &file,
                        "config file is not a regular file".to_string(),
                    ));
                }
                file
            } else {
                return Err(message(
                    path,
                    "config file is not a regular file".to_string(),
                ));
            }
        }
        None => {
            let found = VIPER_EXTENSIONS
                .iter()
                .map(|ext| working_dir.join(format!(".ko.{ext}")))
                .find(|p| p.metadata().is_ok_and(|m| !m.is_dir()));
            match found {
                Some(file) => file,
                None => return Ok(None),
            }
        }
    };
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if !READABLE.contains(&ext) {
        return Err(message(
            &file,
            format!(
                "unsupported config type {ext:?}: kobuild reads .ko.yaml, .ko.yml and .ko.json"
            ),
        ));
    }
    Ok(Some(file))
}

fn warn(file: &Path, pos: Pos, text: &str) -> String {
    format!("{}:{}:{}: {text}", file.display(), pos.line, pos.column)
}

/// The keys `read` and `read_build` know, as ko spells them (matched case-insensitively).
const TOP_LEVEL_KEYS: &[&str] = &[
    "defaultBaseImage",
    "baseImageOverrides",
    "defaultPlatforms",
    "defaultEnv",
    "defaultFlags",
    "defaultLdflags",
    "builds",
];
const BUILD_KEYS: &[&str] = &[
    "id",
    "dir",
    "main",
    "env",
    "flags",
    "ldflags",
    "linux_capabilities",
];

/// A warning, not an error, since ko ignores unknown keys: a typo such as
/// `defaultBaseImagez` would otherwise quietly build on the default base.
fn unknown_key(file: &Path, e: &Entry, path: &str, known: &[&str]) -> String {
    let place = if path.is_empty() {
        String::new()
    } else {
        format!(" in {path}")
    };
    let hint = closest(&e.key, known)
        .map(|k| format!("did you mean {k:?}? "))
        .unwrap_or_default();
    warn(
        file,
        e.key_pos,
        &format!(
            "unknown key {:?}{place} ignored, as ko ignores it; {hint}known keys: {}",
            e.key,
            known.join(", ")
        ),
    )
}

fn type_error(node: &Node, path: &str, expected: &'static str) -> Fault {
    Fault::at(
        node.pos,
        ConfigErrorKind::Type {
            path: path.to_string(),
            expected,
            found: node.describe(),
        },
    )
}

/// Viper's `GetStringSlice`: a list's elements, or a string split on whitespace.
fn string_slice(node: &Node, path: &str) -> Result<Vec<String>, Fault> {
    match &node.kind {
        Kind::Null => Ok(Vec::new()),
        Kind::Scalar { text, .. } => Ok(text.split_whitespace().map(String::from).collect()),
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| string(n, &index(path, i)))
            .collect(),
        Kind::Map(_) => Err(type_error(node, path, "a list or a string")),
    }
}

/// ko's `StringArray` (`ldflags`): a string stays one element.
fn string_array(node: &Node, path: &str) -> Result<Vec<String>, Fault> {
    match &node.kind {
        Kind::Scalar { text, .. } => Ok(vec![text.clone()]),
        _ => string_slice(node, path),
    }
}

fn read(file: &Path, text: &str) -> Result<KoConfig, Fault> {
    let mut config = KoConfig::default();
    let mut documents = parse_documents(text)?.into_iter();
    let Some(root) = documents.next() else {
        return Ok(config);
    };
    if let Some(extra) = documents.next() {
        config.warnings.push(warn(
            file,
            extra.pos,
            "only the first YAML document is read, as ko does",
        ));
    }
    let entries = match root.kind {
        Kind::Null => return Ok(config),
        Kind::Map(entries) => entries,
        _ => return Err(type_error(&root, "", "a mapping")),
    };
    for e in entries {
        let key = e.key.to_lowercase();
        let v = &e.value;
        let path = e.key.as_str();
        match key.as_str() {
            "defaultbaseimage" => {
                config.default_base_image = Some(string(v, path)?).filter(|s| !s.is_empty());
            }
            "baseimageoverrides" => match &v.kind {
                Kind::Null => {}
                Kind::Map(overrides) => {
                    for o in overrides {
                        let image = string(&o.value, &join(path, &o.key))?;
                        config
                            .base_image_overrides
                            .insert(o.key.to_lowercase(), image);
                    }
                }
                _ => return Err(type_error(v, path, "a mapping of import paths to images")),
            },
            "defaultplatforms" => {
                config.default_platforms = split_platforms(string_slice(v, path)?)
            }
            "defaultenv" => config.default_env = string_slice(v, path)?,
            "defaultflags" => config.default_flags = string_slice(v, path)?,
            "defaultldflags" => config.default_ldflags = string_slice(v, path)?,
            "builds" => match &v.kind {
                Kind::Null => {}
                Kind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let build = read_build(file, item, &index(path, i), &mut config.warnings)?;
                        config.builds.push(build);
                    }
                }
                _ => return Err(type_error(v, path, "a list")),
            },
            _ => config
                .warnings
                .push(unknown_key(file, &e, "", TOP_LEVEL_KEYS)),
        }
    }
    Ok(config)
}

fn read_build(
    file: &Path,
    node: &Node,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<KoBuild, Fault> {
    let entries = match &node.kind {
        Kind::Map(entries) => entries,
        Kind::Null => {
            return Ok(KoBuild {
                position: node.pos,
                ..KoBuild::default()
            });
        }
        _ => return Err(type_error(node, path, "a mapping")),
    };
    let mut build = KoBuild {
        position: node.pos,
        ..KoBuild::default()
    };
    for e in entries {
        let v = &e.value;
        let p = join(path, &e.key);
        match e.key.to_lowercase().as_str() {
            "id" => build.id = string(v, &p)?,
            "dir" => build.dir = string(v, &p)?,
            "main" => build.main = string(v, &p)?,
            "env" => build.env = string_array(v, &p)?,
            "flags" => build.flags = string_slice(v, &p)?,
            "ldflags" => build.ldflags = string_array(v, &p)?,
            "linux_capabilities" => build.linux_capabilities = string_slice(v, &p)?,
            _ => warnings.push(unknown_key(file, e, path, BUILD_KEYS)),
        }
    }
    Ok(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<KoConfig, ConfigError> {
        KoConfig::parse(Path::new(".ko.yaml"), text, &Env::from_pairs(env))
    }

    #[test]
    fn fields_and_case_insensitive_keys() {
        let c = parse(
            "DefaultBaseImage: alpine\nbaseImageOverrides:\n  Example.com/App: busybox\ndefaultPlatforms: linux/amd64,linux/arm64\ndefaultEnv: [A=1]\ndefaultLdflags: -s -w\nbuilds:\n- id: x\n  Flags: -v -x\n  ldflags: -s -w\n  env: A=1\n  goos: [linux]\nextra: 1\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.default_base_image.as_deref(), Some("alpine"));
        assert_eq!(
            c.base_image_override("ko://EXAMPLE.com/app"),
            Some("busybox")
        );
        assert_eq!(c.default_platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(c.default_env, ["A=1"]);
        assert_eq!(c.default_ldflags, ["-s", "-w"]);
        let b = &c.builds[0];
        assert_eq!(
            (b.flags.len(), b.ldflags.as_slice(), b.env.as_slice()),
            (2, &["-s -w".to_string()][..], &["A=1".to_string()][..])
        );
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings[0].starts_with(".ko.yaml:12:3: unknown key \"goos\" in builds[0]"));
        assert!(!c.warnings[1].contains("did you mean"), "{}", c.warnings[1]);
    }

    #[test]
    fn typos_warn_with_the_known_keys() {
        let c = parse(
            "defaultBaseImagez: scratch\nbuilds:\n- id: x\n  ldflag: -s\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.default_base_image, None);
        assert_eq!(
            c.warnings,
            [
                ".ko.yaml:1:1: unknown key \"defaultBaseImagez\" ignored, as ko ignores it; \
                 did you mean \"defaultBaseImage\"? known keys: defaultBaseImage, \
                 baseImageOverrides, defaultPlatforms, defaultEnv, defaultFlags, defaultLdflags, \
                 builds",
                ".ko.yaml:4:3: unknown key \"ldflag\" in builds[0] ignored, as ko ignores it; \
                 did you mean \"ldflags\"? known keys: id, dir, main, env, flags, ldflags, \
                 linux_capabilities",
            ]
        );
    }

    #[test]
    fn environment_overrides() {
        let c = parse(
            "defaultBaseImage: alpine\ndefaultPlatforms: [linux/arm64]\n",
            &[
                ("KO_DEFAULTBASEIMAGE", "scratch"),
                ("KO_DEFAULTPLATFORMS", "linux/amd64,linux/s390x"),
                ("KO_DEFAULTENV", ""),
                ("KO_DEFAULTFLAGS", "-a  -b"),
            ],
        )
        .unwrap();
        assert_eq!(c.default_base_image.as_deref(), Some("scratch"));
        assert_eq!(c.default_platforms, ["linux/amd64", "linux/s390x"]);
        assert!(c.default_env.is_empty());
        assert_eq!(c.default_flags, ["-a", "-b"]);
        let err = parse("builds: {a: 1}\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            ".ko.yaml:1:9: builds: expected a list, found a mapping"
        );
    }
}
