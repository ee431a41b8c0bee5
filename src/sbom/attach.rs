//! Attaching an SBOM to a pushed image as an OCI 1.1 artifact: a manifest with
//! `artifactType` and a `subject`, found through the referrers tag schema.
//!
//! kobuild's client cannot see whether a registry offers the referrers API (that needs the
//! `OCI-Subject` response header or a GET of `/referrers/`, which it does not expose), so the
//! fallback tag `sha256-<subject hex>` is always maintained; on registries with the API it is
//! a harmless extra tag. ko's deprecated `.sbom` tag is not written.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde::Serialize;

use super::SbomError;
use crate::digest::Digest;
use crate::image::oci::{Descriptor, Index, OCI_INDEX, OCI_MANIFEST};
use crate::registry::{BLOB_UNKNOWN_ATTEMPTS, Client, Reference, RegistryError, Repository};

pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
/// The OCI empty descriptor's media type, for artifacts without a config.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";
const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// Field order of the OCI image-spec's manifest, which go-containerregistry shares.
#[derive(Serialize)]
struct ArtifactManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: i64,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "artifactType")]
    artifact_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: Descriptor,
    annotations: BTreeMap<String, String>,
}

/// The artifact manifest for `sbom` about `subject`, and its digest. `created` (RFC 3339)
/// becomes the `org.opencontainers.image.created` annotation, in UTC to the second.
pub fn artifact_manifest(subject: &Descriptor, sbom: &[u8], created: &str) -> (Vec<u8>, Digest) {
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        artifact_type: SPDX_MEDIA_TYPE,
        config: Descriptor::new(
            EMPTY_MEDIA_TYPE,
            EMPTY_JSON.len() as u64,
            Digest::of(EMPTY_JSON),
        ),
        layers: vec![Descriptor::new(
            SPDX_MEDIA_TYPE,
            sbom.len() as u64,
            Digest::of(sbom),
        )],
        // Only what identifies the subject: its platform or annotations are not the SBOM's.
        subject: Descriptor::new(&subject.media_type, subject.size, subject.digest.clone()),
        annotations: created_annotation(created),
    };
    let bytes = crate::gojson::to_vec(&manifest);
    let digest = Digest::of(&bytes);
    (bytes, digest)
}

/// The referrers tag schema's tag for `subject`: `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// Pushes the SBOM blob, the empty config and the artifact manifest (by digest) to `repo`,
/// then adds the artifact to the referrers index under [`referrers_tag`]. Returns the
/// artifact manifest's digest. Attaching the same SBOM again changes nothing; concurrent
/// attaches (identical runs, or different SBOMs of one image) all succeed and all stay listed.
pub async fn attach(
    client: &Client,
    repo: &Repository,
    subject: &Descriptor,
    sbom: &[u8],
    created: &str,
) -> Result<Digest, SbomError> {
    let reg = |source: RegistryError| SbomError::Registry {
        repo: repo.to_string(),
        source,
    };
    push_blob(client, repo, EMPTY_JSON, false).await?;
    push_blob(client, repo, sbom, false).await?;
    let (bytes, digest) = artifact_manifest(subject, sbom, created);
    let mut attempt = 1;
    while let Err(e) = client
        .put_manifest(repo, digest.as_str(), OCI_MANIFEST, &bytes)
        .await
    {
        // A blob another run uploaded at the same moment can be unknown to the registry for
        // a while (distribution links it to the repository after the upload): upload it
        // again, as the image push does, and put the manifest again.
        if !e.is_blob_unknown() || attempt == BLOB_UNKNOWN_ATTEMPTS {
            return Err(reg(e));
        }
        tracing::warn!("{repo}: {e}; uploading the SBOM's blobs again");
        push_blob(client, repo, EMPTY_JSON, true).await?;
        push_blob(client, repo, sbom, true).await?;
        attempt += 1;
    }

    let mut referrer = Descriptor::new(OCI_MANIFEST, bytes.len() as u64, digest.clone());
    referrer.artifact_type = SPDX_MEDIA_TYPE.into();
    referrer.annotations = created_annotation(created);
    add_referrer(client, repo, &subject.digest, referrer).await?;
    Ok(digest)
}

/// Writes of the referrers index before giving up.
const UPDATE_ATTEMPTS: u32 = 5;

/// The least wait before checking that a write of the referrers index stayed: on a loaded
/// machine another writer's read and write can take far longer than this one's.
const MIN_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Adds `referrer` to the index under the subject's referrers tag. The tag schema has no
/// conditional write (distribution ignores If-Match), so an attach that read the index
/// before this write and writes after it drops this entry. Hence, after writing: wait until
/// any such writer is done (twice this update's own read and write, at least [`MIN_SETTLE`]) and read again; the
/// entry is re-added until a read shows it.
async fn add_referrer(
    client: &Client,
    repo: &Repository,
    subject: &Digest,
    referrer: Descriptor,
) -> Result<(), SbomError> {
    let tag = referrers_tag(subject);
    let reference = Reference {
        registry: repo.registry.clone(),
        repository: repo.name.clone(),
        tag: Some(tag.clone()),
        digest: None,
    };
    let referrers_err = |reason: String| SbomError::Referrers {
        repo: repo.to_string(),
        tag: tag.clone(),
        reason,
    };
    for written in 0..=UPDATE_ATTEMPTS {
        let started = std::time::Instant::now();
        let mut index = match client.get_manifest(&reference).await {
            Ok(found) => serde_json::from_slice::<Index>(&found.bytes)
                .map_err(|e| referrers_err(e.to_string()))?,
            Err(e) if e.is_not_found() => Index {
                schema_version: 2,
                media_type: OCI_INDEX.into(),
                manifests: Vec::new(),
                annotations: BTreeMap::new(),
                subject: None,
            },
            Err(e) => {
                return Err(SbomError::Registry {
                    repo: repo.to_string(),
                    source: e,
                });
            }
        };
        match index
            .manifests
            .iter_mut()
            .find(|d| d.digest == referrer.digest)
        {
            Some(existing) if *existing == referrer => return Ok(()),
            Some(existing) => *existing = referrer.clone(),
            None => index.manifests.push(referrer.clone()),
        }
        if written == UPDATE_ATTEMPTS {
            break;
        }
        index.media_type = OCI_INDEX.into();
        match client
            .put_manifest(repo, &tag, OCI_INDEX, &crate::gojson::to_vec(&index))
            .await
        {
            Ok(_) => {}
            // An entry another run just added may name an artifact the registry has not
            // linked yet: read and write again.
            Err(e) if e.is_blob_unknown() => tracing::warn!("{repo}: {e}; updating {tag} again"),
            Err(e) => {
                return Err(SbomError::Registry {
                    repo: repo.to_string(),
                    source: e,
                });
            }
        }
        tokio::time::sleep((started.elapsed() * 2).max(MIN_SETTLE)).await;
    }
    Err(SbomError::ReferrerLost {
        repo: repo.to_string(),
        tag,
        artifact: referrer.digest.to_string(),
        writes: UPDATE_ATTEMPTS,
    })
}

fn created_annotation(created: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        ANNOTATION_CREATED.to_string(),
        super::spdx::timestamp(created).unwrap_or_else(|| crate::time::ZERO.into()),
    )])
}

/// Uploads small in-memory bytes as a blob unless the repository has it (asked unless
/// `force`); the client streams uploads from files, so they are staged in a temporary file.
async fn push_blob(
    client: &Client,
    repo: &Repository,
    bytes: &[u8],
    force: bool,
) -> Result<(), SbomError> {
    let reg = |source: RegistryError| SbomError::Registry {
        repo: repo.to_string(),
        source,
    };
    let digest = Digest::of(bytes);
    if !force && client.blob_exists(repo, &digest).await.map_err(reg)? {
        return Ok(());
    }
    let mut file = tempfile::NamedTempFile::new().map_err(SbomError::Staging)?;
    file.write_all(bytes).map_err(SbomError::Staging)?;
    file.flush().map_err(SbomError::Staging)?;
    client
        .upload_blob(repo, &digest, bytes.len() as u64, file.path())
        .await
        .map_err(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_manifest_has_the_oci_1_1_shape() {
        let subject_digest = Digest::of(b"image");
        let mut subject = Descriptor::new(OCI_MANIFEST, 5, subject_digest.clone());
        subject.annotations.insert("x".into(), "y".into());
        let (bytes, digest) = artifact_manifest(&subject, b"sbom", "2024-01-02T03:04:05+01:00");
        assert_eq!(digest, Digest::of(&bytes));
        let expected = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"{m}","artifactType":"application/spdx+json","#,
                r#""config":{{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"#,
                r#""digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}},"#,
                r#""layers":[{{"mediaType":"application/spdx+json","size":4,"digest":"{s}"}}],"#,
                r#""subject":{{"mediaType":"{m}","size":5,"digest":"{d}"}},"#,
                r#""annotations":{{"org.opencontainers.image.created":"2024-01-02T02:04:05Z"}}}}"#
            ),
            m = OCI_MANIFEST,
            s = Digest::of(b"sbom"),
            d = subject_digest,
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
        assert_eq!(
            referrers_tag(&subject_digest),
            format!("sha256-{}", subject_digest.hex())
        );
    }
}
