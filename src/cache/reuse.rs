//! Using a record: its image stands for a build when everything that decided it is
//! unchanged and the registry still has it.

use crate::base::{self, BaseError, BaseSpec};
use crate::gobuild::Package;
use crate::publish::PublishError;
use crate::registry::{Client, Repository};

use super::{Record, base_key};

/// Why a record could not be checked (the image is then built).
#[derive(Debug, thiserror::Error)]
pub enum ReuseError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Record {
    /// The package as recorded.
    pub fn package(&self) -> Package {
        Package {
            import_path: self.import_path.clone(),
            dir: self.package_dir.clone(),
        }
    }

    /// The package as recorded, while its module's go.mod is unchanged: usable without
    /// `go list`.
    pub fn known_package(&self) -> Option<Package> {
        self.inputs
            .module_unchanged(&self.package_dir)
            .then(|| self.package())
    }

    /// Whether the recorded image is what building `what` on `base` for `repo` would give,
    /// and `repo` still has it: the base as configured and its digest, every input and the
    /// repository are unchanged. Changed inputs end the check at once.
    pub async fn reusable(
        &self,
        what: &str,
        base: &BaseSpec,
        repo: &Repository,
        client: &Client,
    ) -> Result<bool, ReuseError> {
        if base_key(base) != self.base {
            return Ok(false);
        }
        let inputs = self.inputs.clone();
        // Go starts at once when inputs changed, without waiting for the registry.
        let unchanged = async {
            match tokio::task::spawn_blocking(move || inputs.unchanged()).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(None),
                Err(e) => Err(Some(ReuseError::Internal(e.to_string()))),
            }
        };
        let base_digest = async {
            let digest = base::current_digest(base, client).await;
            digest.map_err(|e| Some(ReuseError::from(e)))
        };
        let base_digest = match tokio::try_join!(base_digest, unchanged) {
            Ok((digest, ())) => digest,
            Err(Some(e)) => return Err(e),
            Err(None) => {
                tracing::debug!("{what}: inputs changed, building");
                return Ok(false);
            }
        };
        if base_digest != self.base_digest {
            tracing::info!("{what}: the base changed, building");
            return Ok(false);
        }
        if repo.to_string() != self.repository {
            return Ok(false);
        }
        let digest = &self.digest;
        let found = client
            .head_manifest(repo, digest.as_str())
            .await
            .map_err(|source| PublishError::Registry {
                repo: repo.to_string(),
                source,
            })?;
        if !matches!(found, Some((found, _, _)) if found == *digest) {
            tracing::info!("{repo}@{digest} is gone from the registry, building");
            return Ok(false);
        }
        Ok(true)
    }
}
