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
use crate::registry::{Client, Reference, RegistryError, Repository};

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
/// artifact manifest's digest. Attaching the same SBOM again changes nothing.
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
    push_blob(client, repo, EMPTY_JSON).await?;
    push_blob(client, repo, sbom).await?;
    let (bytes, digest) = artifact_manifest(subject, sbom, created);
    client
        .put_manifest(repo, digest.as_str(), OCI_MANIFEST, &bytes)
        .await
        .map_err(reg)?;

    let mut referrer = Descriptor::new(OCI_MANIFEST, bytes.len() as u64, digest.clone());
    referrer.artifact_type = SPDX_MEDIA_TYPE.into();
    referrer.annotations = created_annotation(created);
    let tag = referrers_tag(&subject.digest);
    let reference = Reference {
        registry: repo.registry.clone(),
        repository: repo.name.clone(),
        tag: Some(tag.clone()),
        digest: None,
    };
    let mut index = match client.get_manifest(&reference).await {
        Ok(found) => {
            serde_json::from_slice::<Index>(&found.bytes).map_err(|e| SbomError::Referrers {
                repo: repo.to_string(),
                tag: tag.clone(),
                reason: e.to_string(),
            })?
        }
        Err(e) if e.is_not_found() => Index {
            schema_version: 2,
            media_type: OCI_INDEX.into(),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            subject: None,
        },
        Err(e) => return Err(reg(e)),
    };
    match index.manifests.iter_mut().find(|d| d.digest == digest) {
        Some(existing) if *existing == referrer => return Ok(digest),
        Some(existing) => *existing = referrer,
        None => index.manifests.push(referrer),
    }
    index.media_type = OCI_INDEX.into();
    client
        .put_manifest(repo, &tag, OCI_INDEX, &crate::gojson::to_vec(&index))
        .await
        .map_err(reg)?;
    Ok(digest)
}

fn created_annotation(created: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        ANNOTATION_CREATED.to_string(),
        super::spdx::timestamp(created).unwrap_or_else(|| crate::time::ZERO.into()),
    )])
}

/// Uploads small in-memory bytes as a blob unless the repository has it; the client streams
/// uploads from files, so they are staged in a temporary file.
async fn push_blob(client: &Client, repo: &Repository, bytes: &[u8]) -> Result<(), SbomError> {
    let reg = |source: RegistryError| SbomError::Registry {
        repo: repo.to_string(),
        source,
    };
    let digest = Digest::of(bytes);
    if client.blob_exists(repo, &digest).await.map_err(reg)? {
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
