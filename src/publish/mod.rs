//! Sinks for a built image: a registry, an OCI layout directory, an OCI archive file.

mod follow;
mod layout;
mod registry;

pub use layout::{write_archive, write_layout};
pub use registry::{PushStats, Pushed, push, push_ahead, push_while_written, tag};

use std::path::{Path, PathBuf};

use crate::blobs::BlobStore;
use crate::blobs::{blob_cache_path, cache_bytes};
use crate::digest::Digest;
use crate::fsutil::WriteError;
use crate::image::assemble::{Built, BuiltImage, LayerSource};
use crate::registry::{Client, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("push to {repo}: {source}")]
    Registry { repo: String, source: RegistryError },
    #[error("cannot write {path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{path} exists and is not an OCI image layout: {reason}")]
    NotALayout { path: PathBuf, reason: String },
    /// A cache file did not hold the blob it is named for. It was removed from the cache:
    /// building again makes or fetches it anew.
    #[error(
        "cache file {} did not hold blob {digest}; it was removed from the cache (if this repeats, check the disk)",
        path.display()
    )]
    Damaged { path: PathBuf, digest: Digest },
    /// A file outside the cache (a base layout's blob) does not hold the blob it is named for.
    #[error("{} does not hold blob {digest} ({why}): the file is damaged; restore it", path.display())]
    BadBlob {
        path: PathBuf,
        digest: Digest,
        why: String,
    },
}

/// What every sink needs besides the image: the registry client, where the base's blobs
/// are, and the cache (downloaded base layers, staging).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub client: &'a Client,
    pub base: &'a BlobStore,
    pub cache: &'a Path,
}

/// `path` was read and does not hold `digest` (`why`). A cache entry is evicted, and the
/// image is built again without it; anything else is the user's file, and an error.
pub(crate) fn bad_blob(cache: &Path, path: &Path, digest: &Digest, why: &str) -> PublishError {
    if path.starts_with(cache) {
        crate::integrity::evict(path, why);
        PublishError::Damaged {
            path: path.to_path_buf(),
            digest: digest.clone(),
        }
    } else {
        PublishError::BadBlob {
            path: path.to_path_buf(),
            digest: digest.clone(),
            why: why.to_string(),
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A blob of the image and where its bytes can be had locally, fetching base layers
/// from their registry into the cache when needed.
pub(crate) async fn local_blob(
    client: &Client,
    digest: &Digest,
    source: &LayerSource,
    base: &BlobStore,
    cache: &Path,
) -> Result<PathBuf, PublishError> {
    match (source, base) {
        (LayerSource::File(p), _) => Ok(p.clone()),
        (LayerSource::Base, BlobStore::Layout(dir)) => {
            Ok(dir.join("blobs/sha256").join(digest.hex()))
        }
        (LayerSource::Base, BlobStore::Registry(repo)) => {
            let path = blob_cache_path(cache, digest);
            if !path.exists() {
                let parent = path.parent().unwrap_or(cache);
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(io_err(parent))?;
                client
                    .download_blob(repo, digest, &path)
                    .await
                    .map_err(|source| PublishError::Registry {
                        repo: repo.to_string(),
                        source,
                    })?;
            }
            Ok(path)
        }
        (LayerSource::Base, BlobStore::None) => Err(PublishError::Io {
            path: blob_cache_path(cache, digest),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "base layer without a source",
            ),
        }),
    }
}

/// Every blob of every image (configs first, then layers), each digest once, with where its
/// bytes are. Configs are written to the blob cache so every blob can be streamed from a file.
pub(crate) fn blobs(
    built: &Built,
    cache: &Path,
) -> Result<Vec<(Digest, u64, LayerSource)>, PublishError> {
    images_blobs(built.images(), cache)
}

/// [`blobs`] of some images.
pub(crate) fn images_blobs(
    images: &[BuiltImage],
    cache: &Path,
) -> Result<Vec<(Digest, u64, LayerSource)>, PublishError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for image in images {
        let config = cache_bytes(cache, &image.config)?;
        let d = &image.config_descriptor;
        if seen.insert(d.digest.clone()) {
            out.push((d.digest.clone(), d.size, LayerSource::File(config)));
        }
    }
    for image in images {
        for (d, source) in &image.layers {
            if seen.insert(d.digest.clone()) {
                out.push((d.digest.clone(), d.size, source.clone()));
            }
        }
    }
    Ok(out)
}
