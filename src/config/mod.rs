//! Build configuration from files: `skaffold.yaml` (artifacts, profiles, tag policy),
//! ko's `.ko.yaml`, Skaffold's image naming, and how the two files combine for a ko
//! artifact. Pure functions of their inputs: the environment comes in as a parameter, and
//! templates are left for [`crate::template`].

/// ko's default base image, when nothing names one.
pub const DEFAULT_BASE: &str = "cgr.dev/chainguard/static:latest";

mod caps;
mod error;
mod koyaml;
mod manifests;
mod naming;
mod precedence;
mod profiles;
mod skaffold;
mod yaml;

pub use caps::FileCaps;
pub use error::{ConfigError, ConfigErrorKind, Pos};
pub use koyaml::{KoBuild, KoConfig, split_platforms};
pub use manifests::{Kustomize, Manifests};
pub use naming::{
    ImageReference, NamingError, image_template_vars, parse_reference, registry_repository,
    sanitize_image_name, substitute_default_repo,
};
pub use precedence::{
    BaseImageSource, EffectiveKoBuild, ImportTarget, Origin, Values, build_pattern,
    effective_ko_build, import_target, working_dir,
};
pub use profiles::{Activation, ActivationContext, ProfileInfo};
pub use skaffold::{
    Artifact, ArtifactDependency, BuildType, Builder, GitVariant, KoArtifact, KoDependencies,
    LATEST_V4BETA, LocalBuild, Pipeline, SkaffoldConfig, TagPolicy, TaggerComponent, load_skaffold,
    parse_skaffold,
};
