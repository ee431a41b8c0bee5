//! SBOMs: SPDX 2.3 documents built from a Go binary's build information (`go version -m`),
//! written to `--sbom-dir` under ko's file names, and attached to pushed images as OCI 1.1
//! artifacts (with the referrers tag schema, since registries such as distribution 2.8 have
//! no referrers API).

mod attach;
pub mod buildinfo;
mod images;
pub mod spdx;

pub use attach::{EMPTY_MEDIA_TYPE, SPDX_MEDIA_TYPE, artifact_manifest, attach, referrers_tag};
pub use buildinfo::BuildInfo;
pub use images::Sboms;
pub use spdx::{BaseInfo, Document, ImageInfo, document, index_document};

use std::path::{Path, PathBuf};

use crate::fsutil::{WriteError, write_atomic};
use crate::image::oci::Platform;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("cannot run {go} version -m: {source} (is Go installed and on PATH?)")]
    GoSpawn { go: String, source: std::io::Error },
    #[error("go version -m {}: {message}", binary.display())]
    GoVersion { binary: PathBuf, message: String },
    #[error("attaching the SBOM in {repo}: {source}")]
    Registry { repo: String, source: RegistryError },
    #[error("attaching the SBOM in {repo}: tag {tag} holds no OCI image index ({reason})")]
    Referrers {
        repo: String,
        tag: String,
        reason: String,
    },
    #[error(
        "attaching the SBOM in {repo}: {artifact} was still missing from tag {tag} after \
         {writes} writes (the limit): other attaches to the same image kept overwriting it"
    )]
    ReferrerLost {
        repo: String,
        tag: String,
        artifact: String,
        writes: u32,
    },
    #[error("internal error: index just built does not parse: {0}")]
    Index(serde_json::Error),
    #[error("cannot stage the SBOM for upload: {0}")]
    Staging(std::io::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The SBOM file of one image: `go version -m` on its binary, then [`document`].
pub async fn image_sbom(
    go: &str,
    binary: &Path,
    image: &ImageInfo,
    base: Option<&BaseInfo>,
    created: &str,
) -> Result<Vec<u8>, SbomError> {
    let info = buildinfo::read(go, binary).await?;
    Ok(document(image, base, &info, created).to_bytes())
}

/// ko's `--sbom-dir` names: `<app>-<os>-<arch>[-<variant>][-<osversion>].spdx.json` for an
/// image, `<app>-index.spdx.json` for an index (`platform` `None`).
pub fn file_name(app: &str, platform: Option<&Platform>) -> String {
    let suffix = match platform {
        Some(p) => spdx::platform_string(p).replace(['/', ':'], "-"),
        None => "index".into(),
    };
    format!("{app}-{suffix}.spdx.json")
}

/// Writes `sbom` into `dir` under [`file_name`] (atomically) and returns the path.
pub fn write_to_dir(
    dir: &Path,
    app: &str,
    platform: Option<&Platform>,
    sbom: &[u8],
) -> Result<PathBuf, SbomError> {
    let path = dir.join(file_name(app, platform));
    write_atomic(&path, sbom)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_kos() {
        let p = |os: &str, arch: &str, variant: &str, os_version: &str| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
            os_version: os_version.into(),
            ..Default::default()
        };
        assert_eq!(
            file_name("test", Some(&p("linux", "amd64", "", ""))),
            "test-linux-amd64.spdx.json"
        );
        assert_eq!(
            file_name("app", Some(&p("linux", "arm", "v7", ""))),
            "app-linux-arm-v7.spdx.json"
        );
        assert_eq!(
            file_name("app", Some(&p("windows", "amd64", "", "10.0.17763"))),
            "app-windows-amd64-10.0.17763.spdx.json"
        );
        assert_eq!(file_name("test", None), "test-index.spdx.json");
    }

    #[test]
    fn writes_into_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_to_dir(&dir.path().join("sboms"), "app", None, b"{}\n").unwrap();
        assert_eq!(path, dir.path().join("sboms/app-index.spdx.json"));
        assert_eq!(std::fs::read(path).unwrap(), b"{}\n");
    }
}
