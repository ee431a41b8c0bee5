//! Output files, written as Unix tools write them.
//!
//! A regular file, or a path where nothing is yet, is written to a temporary file beside it
//! and renamed over it: readers see the old bytes or the new ones, never a mix. The new file
//! gets mode `0666 & ~umask`, or the mode and owner of the regular file it replaces. A
//! symlink is followed and its target replaced; the link stays. Anything else (a FIFO, a
//! device, a descriptor reached through `/dev/stdout` or `/proc/self/fd`) is opened and
//! written where it is, since a rename would put a plain file in its place.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The name every temporary file or directory kobuild makes starts with. One left behind
/// (by a killed run) is never a finished output and may be deleted.
pub const TEMP_PREFIX: &str = ".kobuild-tmp-";

/// Symlinks followed before giving up, as the kernel does (ELOOP).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path:?}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_path_buf(),
        source,
    }
}

/// `bytes` to `path`, atomically where `path` is (or will be) a regular file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut out = Output::create(path)?;
    out.write_all(bytes).map_err(write_error(path))?;
    out.commit()
}

/// A temporary file in `dir` (removed on SIGINT/SIGTERM too), mode `0666 & ~umask` like any new file (tempfile's 0600 would
/// keep other users out of the output it becomes).
pub fn temp_file_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    crate::interrupt::temp(
        || {
            tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .permissions(Permissions::from_mode(0o666))
                .tempfile_in(dir)
        },
        |t| t.path(),
    )
}

/// A temporary directory in `dir`, mode `0777 & ~umask`, removed when dropped.
pub fn temp_dir_in(dir: &Path) -> io::Result<tempfile::TempDir> {
    crate::interrupt::temp(
        || {
            tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .permissions(Permissions::from_mode(0o777))
                .tempdir_in(dir)
        },
        |t| t.path(),
    )
}

/// The most kobuild reads of a configuration file (skaffold.yaml, .ko.yaml, artifacts.json):
/// far beyond any real one, and a bound on what `-f /dev/zero` costs.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most kobuild reads of one Kubernetes manifest input (a file or stdin).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// All of `path`, if it holds at most `limit` bytes; more is an error of kind
/// `FileTooLarge` saying the limit, found after reading `limit + 1` bytes at most.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_all_bounded(File::open(path)?, limit)
}

/// [`read_bounded`] for any reader, e.g. stdin.
pub fn read_all_bounded(reader: impl io::Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "larger than {} MiB, kobuild's limit for this input",
                limit >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// [`read_bounded`] as text.
pub fn read_string_bounded(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// `path` opened for reading if it is a regular file. Anything else is an error, found
/// without waiting: opening a FIFO would block until a writer came, and a device is not data.
pub fn open_regular(path: &Path) -> io::Result<File> {
    // O_NONBLOCK makes the open of a FIFO return at once; a regular file's reads ignore it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}

/// An output being written. For a regular file nothing shows at the path before
/// [`Output::commit`]; dropped without it, the temporary file is removed.
pub struct Output {
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    Staged {
        tmp: tempfile::NamedTempFile,
        dest: PathBuf,
    },
    InPlace(File),
}

impl Output {
    pub fn create(path: &Path) -> Result<Output, WriteError> {
        let err = write_error(path);
        let sink = match target(path) {
            Ok(Target::InPlace) => OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map(Sink::InPlace),
            Ok(Target::Replace { dest, existing }) => staged(dest, existing.as_ref()),
            Err(e) => Err(e),
        }
        .map_err(err)?;
        Ok(Output {
            path: path.to_path_buf(),
            sink,
        })
    }

    /// The open file, for copies the kernel can make without a trip through memory.
    pub fn file(&mut self) -> &mut File {
        match &mut self.sink {
            Sink::Staged { tmp, .. } => tmp.as_file_mut(),
            Sink::InPlace(f) => f,
        }
    }

    /// Puts a staged file in place; an in-place write is already there.
    pub fn commit(self) -> Result<(), WriteError> {
        match self.sink {
            Sink::Staged { tmp, dest } => tmp
                .persist(&dest)
                .map(drop)
                .map_err(|e| write_error(&self.path)(e.error)),
            Sink::InPlace(_) => Ok(()),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn staged(dest: PathBuf, existing: Option<&fs::Metadata>) -> io::Result<Sink> {
    let dir = parent(&dest);
    fs::create_dir_all(dir)?;
    let tmp = temp_file_in(dir)?;
    if let Some(m) = existing {
        // Best effort, as `sed -i` does: only root may give a file away. Before the chmod,
        // which a chown would partly undo (it clears set-id bits).
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()));
        tmp.as_file()
            .set_permissions(Permissions::from_mode(m.mode() & 0o7777))?;
    }
    Ok(Sink::Staged { tmp, dest })
}

enum Target {
    /// A regular file or nothing: staged beside `dest` and renamed over it.
    Replace {
        dest: PathBuf,
        existing: Option<fs::Metadata>,
    },
    /// Written through the path as given.
    InPlace,
}

fn target(path: &Path) -> io::Result<Target> {
    let mut p = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Target::Replace {
                    dest: p,
                    existing: None,
                });
            }
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        if kind.is_file() {
            return Ok(Target::Replace {
                dest: p,
                existing: Some(meta),
            });
        }
        if kind.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        if !kind.is_symlink() {
            return Ok(Target::InPlace);
        }
        let dir = parent(&p);
        // The links in /proc (where /dev/stdout leads) stand for an open file, not a path: a
        // pipe's reads `pipe:[…]`, and a redirected file is to be written through, not replaced.
        if dir.canonicalize().is_ok_and(|d| d.starts_with("/proc")) {
            return Ok(Target::InPlace);
        }
        p = dir.join(fs::read_link(&p)?);
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, symlink};

    /// Every name in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    /// The process's umask, read without changing it (other tests run in parallel).
    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    #[test]
    fn a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("sub/new.json");
        write_atomic(&new, b"new").unwrap();
        assert_eq!(fs::read(&new).unwrap(), b"new");
        assert_eq!(mode(&new), 0o666 & !umask());
        assert_eq!(mode(new.parent().unwrap()), 0o777 & !umask());

        let old = dir.path().join("old.json");
        fs::write(&old, "old").unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o640)).unwrap();
        write_atomic(&old, b"replaced").unwrap();
        assert_eq!(fs::read(&old).unwrap(), b"replaced");
        assert_eq!(mode(&old), 0o640);
        assert_eq!(names(dir.path()), ["old.json", "sub"]);
    }

    #[test]
    fn a_symlink_stays_and_its_target_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        fs::write(dir.path().join("real/out.json"), "old").unwrap();
        symlink("real/out.json", dir.path().join("link")).unwrap();
        symlink("link", dir.path().join("link2")).unwrap();
        write_atomic(&dir.path().join("link2"), b"new").unwrap();
        for link in ["link", "link2"] {
            let m = fs::symlink_metadata(dir.path().join(link)).unwrap();
            assert!(m.file_type().is_symlink(), "{link} was replaced");
        }
        assert_eq!(fs::read(dir.path().join("real/out.json")).unwrap(), b"new");
        assert_eq!(names(&dir.path().join("real")), ["out.json"]);

        // A dangling link is followed too: its target is created, as `>` in a shell would.
        symlink("made/here.json", dir.path().join("dangling")).unwrap();
        write_atomic(&dir.path().join("dangling"), b"x").unwrap();
        assert_eq!(fs::read(dir.path().join("made/here.json")).unwrap(), b"x");
        assert!(
            fs::symlink_metadata(dir.path().join("dangling"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_link_loop_and_a_directory_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let e = write_atomic(&dir.path().join("a"), b"x").unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("{:?}", dir.path().join("a")))
        );
        let e = write_atomic(dir.path(), b"x").unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(libc::EISDIR), "{e}");
        assert_eq!(names(dir.path()), ["a", "b"]);
    }

    #[test]
    fn a_fifo_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(names(dir.path()), ["fifo"]);
    }

    #[test]
    fn an_output_dropped_before_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tar");
        let mut out = Output::create(&path).unwrap();
        out.write_all(&[0; 4096]).unwrap();
        assert_eq!(names(dir.path()).len(), 1, "the staged file");
        assert!(names(dir.path())[0].starts_with(TEMP_PREFIX));
        drop(out);
        assert!(names(dir.path()).is_empty());
    }

    /// A FIFO at `path`, made by the system's tool (no libc call needed in tests).
    pub(crate) fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
