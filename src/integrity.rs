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
        // Another run sharing the cache removed it first, and said so.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!("{} is gone already: {why}", path.display());
        }
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
    crate::fsutil::write_atomic(path, &sealed).map_err(|e| e.source)
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
/// exclusively knows no other run is using the cache. Each run also leaves a marker while it
/// runs; a marker found under the exclusive lock is that of a run that was killed.
pub struct Lock {
    _file: File,
    _running: Option<tempfile::NamedTempFile>,
}

/// Marks a run in progress (removed when it ends, left behind when it is killed).
const RUNNING: &str = ".running-";

/// Takes the cache's lock for this run. First, when no other run holds it and a killed
/// run left its marker, removes the temporary files killed runs left behind: no run can be
/// writing them. Runs that end normally remove their own, so a cache is walked only after
/// a kill. Without a lock (a file system that has none), nothing is removed.
pub fn lock(cache: &Path) -> Option<Lock> {
    fs::create_dir_all(cache).ok()?;
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(cache.join(".lock"))
        .ok()?;
    if flock(&file, libc::LOCK_EX | libc::LOCK_NB) && killed_runs(cache) {
        sweep(cache);
    }
    let running = tempfile::Builder::new()
        .prefix(RUNNING)
        .tempfile_in(cache)
        .ok();
    // Turning exclusive into shared may let another run lock exclusively in between; it
    // then finds only leftovers and this run's marker, as this run has written nothing yet.
    flock(&file, libc::LOCK_SH).then_some(Lock {
        _file: file,
        _running: running,
    })
}

#[allow(unsafe_code, reason = "flock has no safe wrapper in std")]
fn flock(file: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on an open descriptor that outlives the call.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}

fn killed_runs(cache: &Path) -> bool {
    fs::read_dir(cache).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(RUNNING))
    })
}

/// The prefixes of kobuild's temporary files in the cache: layers being compressed, blobs
/// being downloaded, records and blobs being written (all made by `fsutil`), the clock
/// probe, run markers.
const TEMPORARY: [&str; 3] = [crate::fsutil::TEMP_PREFIX, ".tmp", RUNNING];

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
    fn leftovers_of_a_killed_run_are_swept_once_no_other_run_holds_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        fs::create_dir_all(cache.join("blobs/sha256")).unwrap();
        let leftover = cache.join(format!("blobs/sha256/{}abc", crate::fsutil::TEMP_PREFIX));
        let kept = cache.join("blobs/sha256/0123");
        fs::write(&kept, "blob").unwrap();
        let killed = |lock: Lock| {
            let Lock { _file, _running } = lock;
            _running.unwrap().keep().unwrap();
        };

        // A run that ended normally leaves nothing to sweep: the cache is not walked.
        drop(lock(cache).expect("locked"));
        fs::write(&leftover, "partial").unwrap();
        drop(lock(cache).expect("locked"));
        assert!(leftover.exists());

        killed(lock(cache).expect("locked"));
        let other = lock(cache).expect("locked");
        assert!(!leftover.exists(), "left by a killed run");
        fs::write(&leftover, "partial").unwrap();
        killed(lock(cache).expect("locked"));
        let this = lock(cache).expect("locked");
        assert!(leftover.exists(), "swept while another run held the cache");
        drop((other, this));
        let _again = lock(cache).expect("locked");
        assert!(!leftover.exists());
        assert!(kept.exists());
        let markers = fs::read_dir(cache)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(RUNNING)
            })
            .count();
        assert_eq!(markers, 1, "only the running one");
    }
}
