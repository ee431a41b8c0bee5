//! The layer a linked binary gave, recorded as `NAME.layer` beside the binary `NAME`: a
//! binary Go keeps is trusted only while it still gives that layer (its DiffID hashes every
//! byte of the binary), for the app name and file capabilities it was made with.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::integrity;

#[derive(Serialize, Deserialize)]
struct LayerRecord {
    app: String,
    diff_id: Digest,
    /// The binary's `security.capability` bytes, which are in the layer too.
    #[serde(default)]
    capabilities: Option<[u8; 20]>,
}

fn record_path(binary: &Path) -> PathBuf {
    let mut name = binary.file_name().unwrap_or_default().to_os_string();
    name.push(".layer");
    binary.with_file_name(name)
}

/// The DiffID of the layer `binary` gave for `app` and `capabilities` when it was linked,
/// if recorded.
pub fn recorded_layer(binary: &Path, app: &str, capabilities: Option<[u8; 20]>) -> Option<Digest> {
    integrity::load::<LayerRecord>(&record_path(binary))
        .filter(|r| r.app == app && r.capabilities == capabilities)
        .map(|r| r.diff_id)
}

pub fn record_layer(
    binary: &Path,
    app: &str,
    capabilities: Option<[u8; 20]>,
    diff_id: &Digest,
) -> io::Result<()> {
    let record = LayerRecord {
        app: app.to_string(),
        diff_id: diff_id.clone(),
        capabilities,
    };
    integrity::store(&record_path(binary), &record)
}

/// Drops the record of a binary linked again: it described the old one.
pub fn forget_layer(binary: &Path) {
    let _ = std::fs::remove_file(record_path(binary));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_recorded_per_binary_and_app_until_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let binary = tmp.path().join("app");
        let diff_id = Digest::of(b"layer");
        assert_eq!(recorded_layer(&binary, "app", None), None);
        record_layer(&binary, "app", None, &diff_id).unwrap();
        assert!(tmp.path().join("app.layer").is_file());
        assert_eq!(recorded_layer(&binary, "app", None), Some(diff_id));
        assert_eq!(
            recorded_layer(&binary, "other", None),
            None,
            "made for another app name"
        );
        assert_eq!(
            recorded_layer(&binary, "app", Some([1; 20])),
            None,
            "made with other file capabilities"
        );
        forget_layer(&binary);
        assert_eq!(recorded_layer(&binary, "app", None), None);
    }

    #[test]
    fn a_damaged_record_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let binary = tmp.path().join("app");
        record_layer(&binary, "app", None, &Digest::of(b"layer")).unwrap();
        let path = tmp.path().join("app.layer");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(recorded_layer(&binary, "app", None), None);
    }
}
