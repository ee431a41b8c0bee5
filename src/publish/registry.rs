//! Push: blobs (HEAD first, mount base layers, else upload), the manifest by digest, then
//! the tags, so no tag ever points at something incomplete.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::follow::follow;
use super::{Context, PublishError, bad_blob, blobs, images_blobs, local_blob};
use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::image::assemble::{Built, BuiltImage, LayerSource};
use crate::image::layer::{Layer, Written};
use crate::registry::{BLOB_UNKNOWN_ATTEMPTS, Client, RegistryError, Repository};

const PARALLEL_UPLOADS: usize = 8;

/// What a push had to do, for logs and the step summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    pub existed: usize,
}

#[derive(Clone, Copy)]
enum Outcome {
    Existed,
    Mounted,
    Uploaded(u64),
}

/// What one repository already received during this run: blobs and untagged manifests of
/// the platforms pushed ahead of the whole image ([`push_ahead`]).
#[derive(Default)]
pub struct Pushed {
    blobs: Mutex<HashMap<Digest, Outcome>>,
    manifests: Mutex<HashSet<Digest>>,
    /// One gate per blob: platforms pushed in parallel share base layers, and each blob is
    /// checked and mounted once; parallel HEADs and mounts of one blob once tripped a
    /// registry's own race (HTTP 500).
    gates: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pushed {
    fn gate(&self, digest: &Digest) -> Option<Arc<tokio::sync::Mutex<()>>> {
        Some(
            self.gates
                .lock()
                .ok()?
                .entry(digest.clone())
                .or_default()
                .clone(),
        )
    }

    fn blob(&self, digest: &Digest) -> Option<Outcome> {
        self.blobs.lock().ok()?.get(digest).copied()
    }

    fn has_manifest(&self, digest: &Digest) -> bool {
        self.manifests.lock().is_ok_and(|m| m.contains(digest))
    }
}

/// Push one platform's blobs and manifest (by digest, untagged) while the other platforms
/// still build. Best effort: whatever fails here, [`push`] does again and reports, except
/// a damaged cache entry ([`PublishError::Damaged`]), which needs the image built again.
pub async fn push_ahead(
    cx: &Context<'_>,
    image: &BuiltImage,
    repo: &Repository,
    pushed: &Pushed,
) -> Result<(), PublishError> {
    let Context {
        client,
        base,
        cache,
    } = *cx;
    let ahead = async {
        let images = std::slice::from_ref(image);
        let blobs = images_blobs(images, cache)?;
        let new = new_configs(images, pushed);
        upload_all(client, repo, &blobs, base, cache, Some(pushed), &new).await?;
        client
            .put_manifest(
                repo,
                image.digest.as_str(),
                &image.media_type,
                &image.manifest,
            )
            .await
            .map_err(|source| PublishError::Registry {
                repo: repo.to_string(),
                source,
            })?;
        if let Ok(mut m) = pushed.manifests.lock() {
            m.insert(image.digest.clone());
        }
        Ok::<_, PublishError>(())
    };
    match ahead.await {
        Err(e @ PublishError::Damaged { .. }) => Err(e),
        Err(e) => {
            tracing::debug!("{repo}: pushing {} ahead: {e}", image.digest);
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Build a layer while uploading it: the upload follows the file as it is written and is
/// committed once the digest is known, or dropped if the registry turns out to have the
/// blob already. Best effort: after any upload failure nothing is recorded, and [`push`]
/// uploads the finished file. Returns what `build` returns.
pub async fn push_while_written<E>(
    client: &Client,
    repo: &Repository,
    pushed: &Pushed,
    written: tokio::sync::watch::Receiver<Written>,
    build: impl Future<Output = Result<Layer, E>>,
) -> Result<Layer, E> {
    let start = Instant::now();
    let session = Mutex::new(None);
    let (layer, outcome) = {
        let upload = async {
            let started = client.start_upload(repo).await?;
            if let Ok(mut s) = session.lock() {
                *s = Some(started.clone());
            }
            client.send_stream(repo, started, follow(written)).await
        };
        let mut upload = std::pin::pin!(upload);
        let mut build = std::pin::pin!(build);
        let mut sent = None;
        let layer = loop {
            tokio::select! {
                layer = &mut build => break layer?,
                r = &mut upload, if sent.is_none() => sent = Some(r),
            }
        };
        let digest = layer.digest.clone();
        let commit = async {
            let sent = match sent {
                Some(r) => r,
                None => upload.await,
            }?;
            client.commit_upload(repo, &sent, &digest).await
        };
        let mut commit = std::pin::pin!(commit);
        let uploaded = Outcome::Uploaded(layer.size);
        let outcome = tokio::select! {
            biased;
            done = &mut commit => done.map(|()| uploaded),
            found = client.blob_exists(repo, &digest) => match found {
                Ok(true) => Ok(Outcome::Existed),
                _ => commit.await.map(|()| uploaded),
            },
        };
        (layer, outcome)
    };
    let started = session.lock().ok().and_then(|mut s| s.take());
    if let (false, Some(started)) = (matches!(outcome, Ok(Outcome::Uploaded(_))), started) {
        // Only a courtesy: registries expire abandoned uploads.
        let _ = client.cancel_upload(repo, &started).await;
    }
    let short = &layer.digest.hex()[..12];
    match outcome {
        Ok(outcome) => {
            if let Ok(mut blobs) = pushed.blobs.lock() {
                blobs.insert(layer.digest.clone(), outcome);
            }
            match outcome {
                Outcome::Existed => tracing::info!("blob {short} exists in {repo}"),
                _ => tracing::info!(
                    "blob {short} pushed while compressed ({:.1} MB in {:.1}s)",
                    layer.size as f64 / 1e6,
                    start.elapsed().as_secs_f64()
                ),
            }
        }
        // Worded for counting in the -v log: a fallback costs a second upload.
        Err(e) => {
            tracing::debug!("{repo}: streamed upload of blob {short} fell back to the file: {e}")
        }
    }
    Ok(layer)
}

pub async fn push(
    cx: &Context<'_>,
    built: &Built,
    repo: &Repository,
    tags: &[String],
    pushed: &Pushed,
) -> Result<PushStats, PublishError> {
    let Context {
        client,
        base,
        cache,
    } = *cx;
    let reg_err = |source: RegistryError| PublishError::Registry {
        repo: repo.to_string(),
        source,
    };
    let blobs = blobs(built, cache)?;
    let new = new_configs(built.images(), pushed);
    // Where the tags point is asked while the blobs go up: one round trip less at the end.
    let (mut stats, current) = tokio::try_join!(
        upload_all(client, repo, &blobs, base, cache, Some(pushed), &new),
        tag_targets(client, repo, tags)
    )?;
    let mut attempt = 1;
    loop {
        // Blobs and manifests already pushed by this run are trusted on the first try only.
        let known = (attempt == 1).then_some(pushed);
        let e = match put_manifests(client, repo, built, known).await {
            Ok(()) => match put_tags(
                client,
                repo,
                built.digest(),
                built.media_type(),
                built.manifest(),
                tags,
                &current,
            )
            .await
            {
                Ok(()) => return Ok(stats),
                Err(PublishError::Registry { source, .. }) => source,
                Err(other) => return Err(other),
            },
            Err(e) => e,
        };
        if !e.is_blob_unknown() || attempt == BLOB_UNKNOWN_ATTEMPTS {
            return Err(reg_err(e));
        }
        tracing::warn!("{repo}: {e}; checking every blob again");
        let none = HashSet::new();
        let again = upload_all(client, repo, &blobs, base, cache, None, &none).await?;
        stats.uploaded += again.uploaded;
        stats.uploaded_bytes += again.uploaded_bytes;
        attempt += 1;
    }
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
    let current = tag_targets(client, repo, tags).await?;
    put_tags(client, repo, digest, media_type, manifest, tags, &current).await
}

/// The digest each tag points at now, if it exists.
async fn tag_targets(
    client: &Client,
    repo: &Repository,
    tags: &[String],
) -> Result<Vec<Option<Digest>>, PublishError> {
    let heads = tags.iter().map(|tag| async move {
        let head = client.head_manifest(repo, tag).await;
        head.map(|found| found.map(|(d, _, _)| d))
            .map_err(|source| PublishError::Registry {
                repo: repo.to_string(),
                source,
            })
    });
    futures_util::future::try_join_all(heads).await
}

async fn put_tags(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    media_type: &str,
    manifest: &[u8],
    tags: &[String],
    current: &[Option<Digest>],
) -> Result<(), PublishError> {
    let reg_err = |source: RegistryError| PublishError::Registry {
        repo: repo.to_string(),
        source,
    };
    for (tag, current) in tags.iter().zip(current) {
        if current.as_ref() == Some(digest) {
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

/// Configs of images with a layer this run had to upload: the repository cannot have had
/// them (a config names its layers), so they go up without a HEAD first. Were one there
/// after all (a push that stopped before its layers), it costs a few hundred bytes again.
fn new_configs(images: &[BuiltImage], pushed: &Pushed) -> HashSet<Digest> {
    images
        .iter()
        .filter(|image| {
            image
                .layers
                .iter()
                .any(|(d, _)| matches!(pushed.blob(&d.digest), Some(Outcome::Uploaded(_))))
        })
        .map(|image| image.config_descriptor.digest.clone())
        .collect()
}

async fn upload_all(
    client: &Client,
    repo: &Repository,
    blobs: &[(Digest, u64, LayerSource)],
    base: &BlobStore,
    cache: &Path,
    pushed: Option<&Pushed>,
    new: &HashSet<Digest>,
) -> Result<PushStats, PublishError> {
    // Largest first: small blobs fill in while the big ones upload.
    let mut blobs: Vec<_> = blobs.iter().collect();
    blobs.sort_by_key(|(_, size, _)| std::cmp::Reverse(*size));
    let outcomes = stream::iter(blobs)
        .map(|blob| async move {
            let digest = &blob.0;
            let gate = pushed.and_then(|p| p.gate(digest));
            let _checking = match &gate {
                Some(gate) => Some(gate.lock().await),
                None => None,
            };
            // After the gate: another platform may have just pushed it.
            if let Some(done) = pushed.and_then(|p| p.blob(digest)) {
                return Ok::<_, PublishError>(done);
            }
            let missing = new.contains(digest);
            let outcome = ensure_blob(client, repo, blob, base, cache, missing).await?;
            if let Some(Ok(mut blobs)) = pushed.map(|p| p.blobs.lock()) {
                blobs.insert(digest.clone(), outcome);
            }
            Ok(outcome)
        })
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
    pushed: Option<&Pushed>,
) -> Result<(), RegistryError> {
    if let Built::Index(index) = built {
        let missing = index
            .children
            .iter()
            .filter(|c| !pushed.is_some_and(|p| p.has_manifest(&c.digest)));
        stream::iter(missing)
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

/// `missing`: known not to be in the repository, so not asked about.
async fn ensure_blob(
    client: &Client,
    repo: &Repository,
    (digest, size, source): &(Digest, u64, LayerSource),
    base: &BlobStore,
    cache: &Path,
    missing: bool,
) -> Result<Outcome, PublishError> {
    let size = *size;
    let reg_err = |source: RegistryError| PublishError::Registry {
        repo: repo.to_string(),
        source,
    };
    let short = &digest.hex()[..12];
    if !missing && client.blob_exists(repo, digest).await.map_err(reg_err)? {
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
        .map_err(|e| match e.bad_local_blob() {
            Some(why) => bad_blob(cache, &path, digest, why),
            None => reg_err(e),
        })?;
    tracing::info!(
        "blob {short} pushed ({:.1} MB in {:.1}s)",
        size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(Outcome::Uploaded(size))
}
