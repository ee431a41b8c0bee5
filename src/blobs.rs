//! Where blobs are: the blob cache, and the store a base's layers come from. Shared by
//! `base`, which fills them, and `publish`, which reads them.

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::fsutil::{WriteError, write_atomic};
use crate::registry::Repository;

/// Where an image's base layers (`LayerSource::Base`) are read or mounted from when
/// publishing.
#[derive(Clone, Debug)]
pub enum BlobStore {
    None,
    Registry(Repository),
    Layout(PathBuf),
}

/// Downloaded and generated blobs live in the cache, named by digest.
pub fn blob_cache_path(cache: &Path, digest: &Digest) -> PathBuf {
    cache.join("blobs/sha256").join(digest.hex())
}

/// Write `bytes` to the blob cache (atomically) and return the path.
pub fn cache_bytes(cache: &Path, bytes: &[u8]) -> Result<PathBuf, WriteError> {
    let path = blob_cache_path(cache, &Digest::of(bytes));
    if !path.exists() {
        write_atomic(&path, bytes)?;
    }
    Ok(path)
}
