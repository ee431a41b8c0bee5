//! An artifact's SBOMs: one per image and one for the index, written to `--sbom-dir` and
//! attached to what was pushed. Attaching never changes an image's digest.

use std::path::{Path, PathBuf};

use crate::base::ResolvedBase;
use crate::digest::Digest;
use crate::image::assemble::Built;
use crate::image::oci::{self, Descriptor};
use crate::registry::{Client, Repository};

use super::{BaseInfo, ImageInfo, SbomError, attach, image_sbom, index_document, write_to_dir};

/// Where an artifact's SBOMs go and what they name besides the image.
pub struct Sboms<'a> {
    pub client: &'a Client,
    pub go: &'a str,
    pub source_date_epoch: Option<i64>,
    /// `--sbom-dir`.
    pub dir: Option<&'a Path>,
    /// The repository the image was pushed to, if any: named in the documents.
    pub repository: Option<&'a Repository>,
    /// Attach the documents in `repository` (`--sbom spdx`).
    pub attach: bool,
    /// The first tag pushed, named in the documents.
    pub tag: Option<String>,
    /// The app name, for the file names.
    pub app: &'a str,
}

impl Sboms<'_> {
    /// `binaries`: each image's, in the order of `built.images()` and the base's children.
    pub async fn write(
        &self,
        base: &ResolvedBase,
        built: &Built,
        binaries: &[PathBuf],
    ) -> Result<(), SbomError> {
        let attach_to = self.repository.filter(|_| self.attach);
        let mut created = crate::time::ZERO.to_string();
        for ((image, child), binary) in built.images().iter().zip(&base.children).zip(binaries) {
            created = created_of(self.source_date_epoch, &image.config);
            let base = base_info(child.image.reference.as_ref());
            let info = self.info(&image.digest);
            let doc = image_sbom(self.go, binary, &info, base.as_ref(), &created).await?;
            if let Some(dir) = self.dir {
                write_to_dir(dir, self.app, Some(&child.platform.to_oci()), &doc)?;
            }
            if let Some(repo) = attach_to {
                let size = image.manifest.len() as u64;
                let subject = Descriptor::new(&image.media_type, size, image.digest.clone());
                attach(self.client, repo, &subject, &doc, &created).await?;
            }
        }
        if let Built::Index(index) = built {
            let parsed: oci::Index =
                serde_json::from_slice(&index.manifest).map_err(SbomError::Index)?;
            let index_base = base_info(base.index.as_ref().and_then(|i| i.reference.as_ref()));
            // The index's document is dated as the last image's.
            let doc = index_document(
                &self.info(&index.digest),
                index_base.as_ref(),
                &parsed.manifests,
                &created,
            )
            .to_bytes();
            if let Some(dir) = self.dir {
                write_to_dir(dir, self.app, None, &doc)?;
            }
            if let Some(repo) = attach_to {
                let size = index.manifest.len() as u64;
                let subject = Descriptor::new(&index.media_type, size, index.digest.clone());
                attach(self.client, repo, &subject, &doc, &created).await?;
            }
        }
        Ok(())
    }

    fn info(&self, digest: &Digest) -> ImageInfo {
        ImageInfo {
            digest: digest.clone(),
            repository: self.repository.map(Repository::to_string),
            tag: self.tag.clone(),
        }
    }
}

fn base_info(reference: Option<&(String, Digest)>) -> Option<BaseInfo> {
    reference.map(|(name, digest)| BaseInfo {
        name: name.clone(),
        digest: digest.clone(),
    })
}

/// A document's creation time: SOURCE_DATE_EPOCH when set, else the image config's
/// `created`, else the zero time.
fn created_of(source_date_epoch: Option<i64>, config: &[u8]) -> String {
    match source_date_epoch {
        Some(epoch) => crate::time::format_unix(epoch),
        None => serde_json::from_slice::<serde_json::Value>(config)
            .ok()
            .and_then(|c| c["created"].as_str().map(str::to_string))
            .unwrap_or_else(|| crate::time::ZERO.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_prefers_the_epoch_then_the_config() {
        let config = br#"{"created":"2024-05-01T10:00:00Z"}"#;
        assert_eq!(
            created_of(Some(0), config),
            crate::time::format_unix(0),
            "SOURCE_DATE_EPOCH wins"
        );
        assert_eq!(created_of(None, config), "2024-05-01T10:00:00Z");
        assert_eq!(created_of(None, b"{}"), crate::time::ZERO);
        assert_eq!(created_of(None, b"not json"), crate::time::ZERO);
    }

    #[test]
    fn base_info_names_the_reference() {
        let digest = Digest::of(b"base");
        let info = base_info(Some(&("cgr.dev/static".to_string(), digest.clone()))).unwrap();
        assert_eq!(
            (info.name.as_str(), info.digest),
            ("cgr.dev/static", digest)
        );
        assert!(base_info(None).is_none());
    }
}
