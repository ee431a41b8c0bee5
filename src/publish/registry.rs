//! Push: blobs (HEAD first, mount base layers, else upload), the manifest by digest, then
//! the tags, so no tag ever points at something incomplete.

use std::path::Path;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{PublishError, blobs, local_blob};
use crate::base::BlobStore;
use crate::digest::Digest;
use crate::image::assemble::{Built, LayerSource};
use crate::registry::{Client, RegistryError, Repository};

const PARALLEL_UPLOADS: usize = 4;

/// What a push had to do, for logs and the step summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    pub existed: usize,
}

enum Outcome {
    Existed,
    Mounted,
    Uploaded(u64),
}

pub async fn push(
    client: &Client,
    built: &Built,
    base: &BlobStore,
    repo: &Repository,
    tags: &[String],
    cache: &Path,
) -> Result<PushStats, PublishError> {
    let reg_err = |source: RegistryError| PublishError::Registry {
        repo: repo.to_string(),
        source,
    };
    let blobs = blobs(built, cache)?;
    let mut stats = upload_all(client, repo, &blobs, base, cache).await?;
    if let Err(e) = put_manifests(client, repo, built).await {
        if !e.is_blob_unknown() {
            return Err(reg_err(e));
        }
        tracing::warn!("{repo}: {e}; checking every blob again");
        let again = upload_all(client, repo, &blobs, base, cache).await?;
        stats.uploaded += again.uploaded;
        stats.uploaded_bytes += again.uploaded_bytes;
        put_manifests(client, repo, built).await.map_err(reg_err)?;
    }
    tag(
        client,
        repo,
        built.digest(),
        built.media_type(),
        built.manifest(),
        tags,
    )
    .await?;
    Ok(stats)
}

/// Point `tags` at a manifest the registry has; a tag already there is not put again.
pub async fn tag(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    media_type: &str,
    manifest: &[u8],
    tags: &[String],
) -> Result<(), PublishError> {
    let reg_err = |source: RegistryError| PublishError::Registry {
        repo: repo.to_string(),
        source,
    };
    for tag in tags {
        let current = client.head_manifest(repo, tag).await.map_err(reg_err)?;
        if current.as_ref().map(|(d, _, _)| d) == Some(digest) {
            tracing::info!("{repo}:{tag} already points at {digest}");
            continue;
        }
        client
            .put_manifest(repo, tag, media_type, manifest)
            .await
            .map_err(reg_err)?;
    }
    Ok(())
}

async fn upload_all(
    client: &Client,
    repo: &Repository,
    blobs: &[(Digest, u64, LayerSource)],
    base: &BlobStore,
    cache: &Path,
) -> Result<PushStats, PublishError> {
    let outcomes = stream::iter(blobs)
        .map(|(digest, size, source)| ensure_blob(client, repo, digest, *size, source, base, cache))
        .buffer_unordered(PARALLEL_UPLOADS)
        .try_collect::<Vec<Outcome>>()
        .await?;
    let mut stats = PushStats::default();
    for o in outcomes {
        match o {
            Outcome::Existed => stats.existed += 1,
            Outcome::Mounted => stats.mounted += 1,
            Outcome::Uploaded(n) => {
                stats.uploaded += 1;
                stats.uploaded_bytes += n;
            }
        }
    }
    Ok(stats)
}

/// The manifest by digest, after its children when it is an index: an index may only name
/// manifests the registry already has.
async fn put_manifests(
    client: &Client,
    repo: &Repository,
    built: &Built,
) -> Result<(), RegistryError> {
    if let Built::Index(index) = built {
        stream::iter(&index.children)
            .map(|c| client.put_manifest(repo, c.digest.as_str(), &c.media_type, &c.manifest))
            .buffer_unordered(PARALLEL_UPLOADS)
            .try_collect::<Vec<Digest>>()
            .await?;
    }
    client
        .put_manifest(
            repo,
            built.digest().as_str(),
            built.media_type(),
            built.manifest(),
        )
        .await?;
    Ok(())
}

async fn ensure_blob(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    size: u64,
    source: &LayerSource,
    base: &BlobStore,
    cache: &Path,
) -> Result<Outcome, PublishError> {
    let reg_err = |source: RegistryError| PublishError::Registry {
        repo: repo.to_string(),
        source,
    };
    let short = &digest.hex()[..12];
    if client.blob_exists(repo, digest).await.map_err(reg_err)? {
        tracing::info!("blob {short} exists in {repo}");
        return Ok(Outcome::Existed);
    }
    if let (LayerSource::Base, BlobStore::Registry(from)) = (source, base)
        && from.registry == repo.registry
        && from != repo
    {
        if client
            .mount_blob(repo, digest, from)
            .await
            .map_err(reg_err)?
        {
            tracing::info!("blob {short} mounted from {from}");
            return Ok(Outcome::Mounted);
        }
        tracing::info!(
            "blob {short}: {} declined the mount from {from}, uploading",
            repo.registry
        );
    }
    // A base layer comes from the base's registry first; its errors name that registry and
    // repository, and are reported as part of this push (not as a push to the base).
    let path = local_blob(client, digest, source, base, cache)
        .await
        .map_err(|e| match e {
            PublishError::Registry { source, .. } => reg_err(source),
            other => other,
        })?;
    let start = Instant::now();
    client
        .upload_blob(repo, digest, size, &path)
        .await
        .map_err(reg_err)?;
    tracing::info!(
        "blob {short} pushed ({:.1} MB in {:.1}s)",
        size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(Outcome::Uploaded(size))
}
