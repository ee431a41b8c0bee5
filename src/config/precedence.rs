//! How Skaffold's ko builder combines a skaffold.yaml ko artifact with `.ko.yaml`
//! (`pkg/skaffold/build/ko/builder.go`, ko's `LoadConfig` and `gobuilds` dispatch): what
//! is built where, from which base, for which platforms, with which env, flags and ldflags.
//! Templates are not expanded here; each value says which engine expands it.

use std::path::{Path, PathBuf};

use super::koyaml::{KoConfig, split_platforms};
use super::skaffold::{Artifact, KoArtifact};

/// What `go list` must resolve to find the package to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportTarget {
    /// A `ko://` image names the import path itself (case kept; `main` is ignored).
    ImportPath(String),
    /// `go list` run in `dir` for `pattern` must give exactly one package.
    Package { dir: PathBuf, pattern: String },
}

/// Skaffold's `getImportPath` for an artifact.
pub fn import_target(artifact: &Artifact, ko: &KoArtifact) -> ImportTarget {
    match artifact.image.strip_prefix("ko://") {
        Some(path) => ImportTarget::ImportPath(path.to_string()),
        None => ImportTarget::Package {
            dir: working_dir(artifact, ko),
            pattern: if ko.main.is_empty() {
                ".".to_string()
            } else {
                ko.main.clone()
            },
        },
    }
}

/// Where Skaffold runs ko: the artifact's `context` joined with `dir`. `.ko.yaml` is looked
/// up here.
pub fn working_dir(artifact: &Artifact, ko: &KoArtifact) -> PathBuf {
    join(Path::new(&artifact.context), &ko.dir)
}

/// `filepath.Join`-like: an empty `dir` adds nothing (not even a trailing separator).
fn join(base: &Path, dir: &str) -> PathBuf {
    if dir.is_empty() {
        base.to_path_buf()
    } else {
        base.join(dir)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseImageSource {
    /// `.ko.yaml` `baseImageOverrides` for the import path (it beats `fromImage`).
    Override,
    FromImage,
    /// `.ko.yaml` `defaultBaseImage` or `KO_DEFAULTBASEIMAGE`.
    KoDefault,
    /// ko's default, `cgr.dev/chainguard/static:latest`.
    BuiltIn,
}

/// Which template engine a value still goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From skaffold.yaml: Skaffold's expansion (`template::skaffold_expand`); flags and
    /// ldflags then also ko's (`template::ko_expand`), as ko templates them again.
    Skaffold,
    /// From `.ko.yaml` (a `builds` entry or a `default*` key): ko's expansion of flags and
    /// ldflags only.
    KoYaml,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values {
    pub values: Vec<String>,
    pub origin: Origin,
}

/// The build an artifact gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveKoBuild {
    /// The Go import path built (no `ko://`).
    pub import_path: String,
    /// Where `go build` runs.
    pub working_dir: PathBuf,
    pub base_image: String,
    pub base_image_source: BaseImageSource,
    /// Empty: none configured; the caller picks its default (`linux/amd64`, or
    /// `$GOOS/$GOARCH` when both are set).
    pub platforms: Vec<String>,
    pub env: Values,
    pub flags: Values,
    pub ldflags: Values,
    pub linux_capabilities: Vec<String>,
    /// Index of the `.ko.yaml` `builds` entry used.
    pub ko_build: Option<usize>,
    /// Things the user may not expect, worth a log line.
    pub warnings: Vec<String>,
}

/// ko's relative package pattern for a `builds` entry's `main` (`"./" + main`).
pub fn build_pattern(main: &str) -> String {
    let main = if main.is_empty() { "." } else { main };
    if main == "."
        || main.starts_with("./")
        || main.starts_with("../")
        || Path::new(main).is_absolute()
    {
        main.to_string()
    } else {
        format!("./{main}")
    }
}

/// Combine a ko artifact with `.ko.yaml` as Skaffold's ko builder does.
///
/// `platforms` are the ones Skaffold passes (the artifact's, else `build.platforms`; see
/// `SkaffoldConfig::platforms`). `resolve(dir, pattern)` runs `go list` and returns the one
/// package's import path; it is called for the artifact when its image is not `ko://…`,
/// and for every `.ko.yaml` `builds` entry when the artifact leaves the build config to
/// `.ko.yaml` (a `main` naming a file stands for its directory, as in ko).
pub fn effective_ko_build<E>(
    artifact: &Artifact,
    ko: &KoArtifact,
    platforms: &[String],
    ko_config: &KoConfig,
    mut resolve: impl FnMut(&Path, &str) -> Result<String, E>,
) -> Result<EffectiveKoBuild, E> {
    let import_path = match import_target(artifact, ko) {
        ImportTarget::ImportPath(path) => path,
        ImportTarget::Package { dir, pattern } => resolve(&dir, &pattern)?,
    };
    let base_dir = working_dir(artifact, ko);
    let mut warnings = Vec::new();
    let empty = |origin| Values {
        values: Vec::new(),
        origin,
    };
    let mut build = EffectiveKoBuild {
        import_path,
        working_dir: base_dir.clone(),
        base_image: String::new(),
        base_image_source: BaseImageSource::BuiltIn,
        platforms: Vec::new(),
        env: empty(Origin::KoYaml),
        flags: empty(Origin::KoYaml),
        ldflags: empty(Origin::KoYaml),
        linux_capabilities: Vec::new(),
        ko_build: None,
        warnings: Vec::new(),
    };

    if ko.specifies_build_config() {
        let skaffold = |values: &[String]| Values {
            values: values.to_vec(),
            origin: Origin::Skaffold,
        };
        build.env = skaffold(&ko.env);
        build.flags = skaffold(&ko.flags);
        build.ldflags = skaffold(&ko.ldflags);
        if !ko_config.builds.is_empty() {
            warnings.push(
                "the artifact sets dir, main, env, flags or ldflags, so .ko.yaml builds are not used"
                    .to_string(),
            );
        }
    } else {
        // ko keys build configs by import path; a later entry for the same path wins.
        for (i, b) in ko_config.builds.iter().enumerate() {
            if resolve(&join(&base_dir, &b.dir), &build_pattern(&b.main))? == build.import_path {
                build.ko_build = Some(i);
            }
        }
        if let Some(i) = build.ko_build {
            let b = &ko_config.builds[i];
            let from_ko = |values: &[String]| Values {
                values: values.to_vec(),
                origin: Origin::KoYaml,
            };
            build.working_dir = join(&base_dir, &b.dir);
            build.env = from_ko(&b.env);
            build.flags = from_ko(&b.flags);
            build.ldflags = from_ko(&b.ldflags);
            build.linux_capabilities = b.linux_capabilities.clone();
        }
    }

    if build.env.values.is_empty() {
        build.env = Values {
            values: ko_config.default_env.clone(),
            origin: Origin::KoYaml,
        };
    }
    // Skaffold's ko appends -trimpath to the flags before looking at defaultFlags.
    if build.flags.values.is_empty() && !ko_config.default_flags.is_empty() {
        warnings.push(
            "defaultFlags in .ko.yaml are not used: Skaffold's ko builder adds -trimpath first"
                .to_string(),
        );
    }
    if build.ldflags.values.is_empty() {
        build.ldflags = Values {
            values: ko_config.default_ldflags.clone(),
            origin: Origin::KoYaml,
        };
    }

    (build.base_image, build.base_image_source) =
        if let Some(image) = ko_config.base_image_override(&build.import_path) {
            (image.to_string(), BaseImageSource::Override)
        } else if !ko.from_image.is_empty() {
            (ko.from_image.clone(), BaseImageSource::FromImage)
        } else if let Some(image) = &ko_config.default_base_image {
            (image.clone(), BaseImageSource::KoDefault)
        } else {
            (super::DEFAULT_BASE.to_string(), BaseImageSource::BuiltIn)
        };

    build.platforms = split_platforms(if platforms.is_empty() {
        ko_config.default_platforms.clone()
    } else {
        platforms.to_vec()
    });
    build.warnings = warnings;
    Ok(build)
}
