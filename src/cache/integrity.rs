//! Nothing read from the cache is trusted: records carry the sha256 of their body, blobs are
//! checked against their digest where they are read, and an entry that fails its check is
//! removed (with one warning naming it) so that it is made again. Temporary files of runs
//! that were killed are removed once no other run shares the cache.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::digest::Digest;

/// Removes a damaged cache entry, saying which and why. Whatever held it is made again.
pub fn evict(path: &Path, why: &str) {
    match fs::remove_file(path) {
        Ok(()) => tracing::warn!(
            "damaged cache entry {}: {why}; removed, making it again",
            path.display()
        ),
        // Another run evicted it first, or the directory is read-only: either way it is
        // not used.
        Err(e) => tracing::warn!(
            "damaged cache entry {}: {why}; cannot remove it ({e}), not using it",
            path.display()
        ),
    }
}

/// A record as stored: `sha256:<hex of the body>`, a newline, then the JSON body.
pub fn store<T: Serialize>(path: &Path, record: &T) -> io::Result<()> {
    let body = serde_json::to_vec(record).map_err(io::Error::other)?;
    let mut sealed = Digest::of(&body).to_string().into_bytes();
    sealed.push(b'\n');
    sealed.extend_from_slice(&body);
    crate::publish::write_atomic(path, &sealed).map_err(io::Error::other)
}

/// The record at `path`: `None` when there is none, or when it is damaged (then evicted).
pub fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!("cannot read {}: {e}", path.display());
            }
            return None;
        }
    };
    let checked = bytes.split_first_chunk::<72>().and_then(|(seal, body)| {
        let (newline, digest) = seal.split_last()?;
        let digest = Digest::parse(std::str::from_utf8(digest).ok()?).ok()?;
        (*newline == b'\n' && Digest::of(body) == digest).then_some(body)
    });
    let Some(body) = checked else {
        evict(path, "its contents do not match their recorded sha256");
        return None;
    };
    match serde_json::from_slice(body) {
        Ok(record) => Some(record),
        // Sealed but unreadable: written by a kobuild whose records differ.
        Err(e) => {
            evict(path, &format!("not a record this kobuild reads ({e})"));
            None
        }
    }
}

/// Held for a whole run: every run holds the cache's lock shared, so a run that gets it
/// exclusively knows no other run is using the cache.
pub struct Lock {
    _file: File,
}

/// Takes the cache's lock for this run; first, when no other run holds it, removes the
/// temporary files killed runs left behind (no run can still be writing them). Without a
/// lock (a cache on a file system that has none), nothing is removed.
pub fn lock(cache: &Path) -> Option<Lock> {
    fs::create_dir_all(cache).ok()?;
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(cache.join(".lock"))
        .ok()?;
    if flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        sweep(cache);
    }
    // Turning exclusive into shared may let another run lock exclusively in between; it
    // then finds only leftovers, as this run has written nothing yet.
    flock(&file, libc::LOCK_SH).then_some(Lock { _file: file })
}

fn flock(file: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on an open descriptor that outlives the call.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}

/// The prefixes of kobuild's temporary files in the cache: layers being compressed,
/// blobs being downloaded, records and blobs being written, the clock probe.
const TEMPORARY: [&str; 3] = [".layer-", ".download-", ".tmp"];

fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match entry.file_type() {
            Ok(t) if t.is_dir() => sweep(&path),
            Ok(_) if TEMPORARY.iter().any(|p| name.starts_with(p)) => {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::debug!("removed {}, left by a killed run", path.display()),
                    Err(e) => tracing::debug!("cannot remove {}: {e}", path.display()),
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        a: String,
    }

    #[test]
    fn records_read_back_only_when_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let r = R { a: "x".into() };
        store(&path, &r).unwrap();
        assert_eq!(load::<R>(&path), Some(r));

        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(load::<R>(&path), None);
        assert!(!path.exists(), "a damaged record is evicted");

        for junk in [&b""[..], b"{\"a\":\"x\"}", b"sha256:zz\n{}"] {
            fs::write(&path, junk).unwrap();
            assert_eq!(load::<R>(&path), None);
            assert!(!path.exists());
        }
        assert_eq!(load::<R>(&path), None, "a missing record is no record");
    }

    #[test]
    fn leftovers_are_swept_only_when_no_other_run_holds_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        fs::create_dir_all(cache.join("blobs/sha256")).unwrap();
        let leftover = cache.join("blobs/sha256/.layer-abc");
        let kept = cache.join("blobs/sha256/0123");
        fs::write(&kept, "blob").unwrap();

        fs::write(&leftover, "partial").unwrap();
        let other = lock(cache).expect("locked");
        assert!(!leftover.exists());
        fs::write(&leftover, "partial").unwrap();
        let this = lock(cache).expect("locked");
        assert!(leftover.exists(), "swept while another run held the cache");
        drop((other, this));
        let _again = lock(cache).expect("locked");
        assert!(!leftover.exists());
        assert!(kept.exists());
    }
}
