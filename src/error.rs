//! The library's error, and which exit code each kind maps to.

use std::path::{Path, PathBuf};

use crate::base::BaseError;
use crate::gobuild::GoError;
use crate::image::layer::LayerError;
use crate::plan::PlanError;
use crate::publish::PublishError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Go(#[from] GoError),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    Gha(#[from] GhaError),
    #[error(transparent)]
    Merge(#[from] crate::merge::MergeError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    #[error(transparent)]
    Deps(#[from] crate::deps::DepsError),
    /// Only logged: the image is then built.
    #[error(transparent)]
    Reuse(#[from] crate::cache::ReuseError),
    #[error("--output: {0}")]
    Template(#[from] crate::template::TemplateError),
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// 2: the configuration or command line is wrong; 1: a build or push failed.
    pub fn exit_code(&self) -> i32 {
        let config = match self {
            Error::Plan(_) | Error::Config(_) | Error::Template(_) | Error::Deps(_) => true,
            Error::Go(e) => e.is_config(),
            Error::Base(e) => e.is_config(),
            Error::Render(e) => e.is_config(),
            Error::Gha(e) => e.is_config(),
            Error::Merge(e) => e.is_config(),
            Error::Layer(LayerError::Kodata(e)) => e.is_config(),
            _ => false,
        };
        if config { 2 } else { 1 }
    }
}

/// What a GitHub Actions step (`kobuild action`) can fail with besides a build: kept here,
/// not in `gha`, so that the crate's error does not depend on the action that returns it.
#[derive(Debug, thiserror::Error)]
pub enum GhaError {
    #[error("input {name}: {reason}")]
    Input { name: String, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write workflow commands to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("{0:?} cannot name a step output or environment variable")]
    RecordName(String),
    #[error("found no heredoc delimiter that the value of {0:?} does not contain")]
    Delimiter(String),
    #[error("the step summary would grow by {size} bytes, but the runner's 1 MiB leaves {room}")]
    SummaryTooLarge { size: u64, room: u64 },
}

impl GhaError {
    pub fn input(name: &str, reason: impl ToString) -> Self {
        GhaError::Input {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn file(path: &Path, source: std::io::Error) -> Self {
        GhaError::File {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Invalid inputs are the workflow's to fix (exit 2); the rest failed while running.
    pub fn is_config(&self) -> bool {
        matches!(self, GhaError::Input { .. })
    }
}
