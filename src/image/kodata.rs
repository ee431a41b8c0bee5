//! The kodata tree as ko puts it in the image: depth first, names sorted bytewise within each
//! directory (Go's `filepath.Walk`), symlinks followed and stored as what they point to, but
//! only inside the tree. Unlike ko, the walk always ends: a symlink back to a directory it is
//! in is a cycle, trees nest at most [`MAX_DEPTH`] directories deep, and a FIFO, socket or
//! device is refused instead of read (a FIFO would block forever, a device would be copied as
//! whatever it yields). Every tree without these gets ko's layer, byte for byte.

use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many directories deep a kodata tree may nest; far beyond real trees, and a bound on
/// the walk's recursion.
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum KodataError {
    #[error(
        "kodata: {path:?} is a symlink to {target:?}, outside {root:?}: kodata symlinks must stay inside the kodata directory"
    )]
    SymlinkEscape {
        path: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error(
        "kodata: {path:?} leads back to {to:?}, a directory it is in: remove the symlink that makes this cycle"
    )]
    Cycle { path: PathBuf, to: PathBuf },
    #[error(
        "kodata: {path:?} is a {kind}: kodata may hold only regular files, directories and symlinks to them; remove it"
    )]
    Special { path: PathBuf, kind: &'static str },
    #[error(
        "kodata: {path:?} is more than {MAX_DEPTH} directories deep: flatten the tree (or remove the symlink that nests it)"
    )]
    TooDeep { path: PathBuf },
    #[error("kodata: cannot read {path:?}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

impl KodataError {
    /// The tree is wrong (exit 2), rather than unreadable.
    pub fn is_config(&self) -> bool {
        !matches!(self, KodataError::Read { .. })
    }
}

/// A directory or regular file of the tree: `host` as reached from the kodata directory
/// (through any symlinks), `rel` its path in the tree, `/`-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir {
        host: PathBuf,
        rel: String,
    },
    File {
        host: PathBuf,
        rel: String,
        size: u64,
    },
}

/// Every directory and file below `kodata`, in ko's order; nothing when it is not a
/// directory (ko's layer then holds just `/var/run/ko`).
pub fn walk(kodata: &Path) -> Result<Vec<Node>, KodataError> {
    let meta = match fs::metadata(kodata) {
        Ok(m) if m.is_dir() => m,
        _ => return Ok(Vec::new()),
    };
    let mut walk = Walk {
        root: kodata.canonicalize().map_err(read_error(kodata))?,
        ancestors: vec![(meta.dev(), meta.ino(), kodata.to_path_buf())],
        nodes: Vec::new(),
    };
    walk.dir(kodata, "")?;
    Ok(walk.nodes)
}

struct Walk {
    /// The tree's real path, which every symlink must resolve inside.
    root: PathBuf,
    /// Device, inode and path of each directory from the root down to the one being read.
    ancestors: Vec<(u64, u64, PathBuf)>,
    nodes: Vec<Node>,
}

impl Walk {
    fn dir(&mut self, dir: &Path, rel: &str) -> Result<(), KodataError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(read_error(dir))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let host = dir.join(&name);
            let rel = match rel {
                "" => name.to_string_lossy().into_owned(),
                _ => format!("{rel}/{}", name.to_string_lossy()),
            };
            let real = match host.canonicalize() {
                Ok(real) => real,
                // Symlinks that only lead to each other.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(KodataError::Cycle {
                        to: host.clone(),
                        path: host,
                    });
                }
                Err(e) => return Err(read_error(&host)(e)),
            };
            if !real.starts_with(&self.root) {
                return Err(KodataError::SymlinkEscape {
                    path: host,
                    target: real,
                    root: self.root.clone(),
                });
            }
            let meta = fs::metadata(&real).map_err(read_error(&host))?;
            let kind = meta.file_type();
            if kind.is_file() {
                self.nodes.push(Node::File {
                    host,
                    rel,
                    size: meta.len(),
                });
            } else if kind.is_dir() {
                let id = (meta.dev(), meta.ino());
                if let Some((.., to)) = self.ancestors.iter().find(|(d, i, _)| (*d, *i) == id) {
                    return Err(KodataError::Cycle {
                        to: to.clone(),
                        path: host,
                    });
                }
                if self.ancestors.len() > MAX_DEPTH {
                    return Err(KodataError::TooDeep { path: host });
                }
                self.nodes.push(Node::Dir {
                    host: host.clone(),
                    rel: rel.clone(),
                });
                self.ancestors.push((id.0, id.1, host.clone()));
                self.dir(&host, &rel)?;
                self.ancestors.pop();
            } else {
                return Err(KodataError::Special {
                    path: host,
                    kind: special(kind),
                });
            }
        }
        Ok(())
    }
}

fn special(kind: FileType) -> &'static str {
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> KodataError + '_ {
    move |source| KodataError::Read {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kodata");
        fs::create_dir_all(k.join("a/b")).unwrap();
        fs::write(k.join("a/b/file"), "x").unwrap();
        (dir, k)
    }

    #[test]
    fn a_symlink_to_a_sibling_is_walked_again_but_one_to_an_ancestor_is_a_cycle() {
        let (_d, k) = tree();
        symlink("a/b", k.join("c")).unwrap();
        let rels: Vec<String> = walk(&k)
            .unwrap()
            .into_iter()
            .map(|n| match n {
                Node::Dir { rel, .. } => format!("{rel}/"),
                Node::File { rel, .. } => rel,
            })
            .collect();
        assert_eq!(rels, ["a/", "a/b/", "a/b/file", "c/", "c/file"]);

        for (link, target, to) in [
            ("self", ".", ""),
            ("a/b/up", "../..", ""),
            ("a/b/back", "..", "a"),
        ] {
            let (_d, k) = tree();
            symlink(target, k.join(link)).unwrap();
            match walk(&k) {
                Err(KodataError::Cycle { path, to: back }) => {
                    assert_eq!(path, k.join(link));
                    assert_eq!(back, k.join(to).components().collect::<PathBuf>());
                }
                other => panic!("{link} -> {target}: {other:?}"),
            }
        }
    }

    #[test]
    fn symlinks_leading_only_to_each_other_are_a_cycle() {
        let (_d, k) = tree();
        symlink("y", k.join("x")).unwrap();
        symlink("x", k.join("y")).unwrap();
        let e = walk(&k).unwrap_err();
        assert!(matches!(e, KodataError::Cycle { .. }), "{e}");
        assert!(e.is_config());
    }

    #[test]
    fn a_fifo_is_refused_without_being_opened() {
        let (_d, k) = tree();
        crate::fsutil::tests::mkfifo(&k.join("a/pipe"));
        let e = walk(&k).unwrap_err();
        assert!(
            matches!(&e, KodataError::Special { path, kind: "FIFO" } if *path == k.join("a/pipe")),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("{:?}", k.join("a/pipe"))),
            "{e}"
        );
    }

    #[test]
    fn trees_nest_at_most_max_depth_directories() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kodata");
        let deepest = (0..MAX_DEPTH).fold(k.clone(), |p, _| p.join("d"));
        fs::create_dir_all(&deepest).unwrap();
        assert_eq!(walk(&k).unwrap().len(), MAX_DEPTH);
        fs::create_dir(deepest.join("d")).unwrap();
        match walk(&k) {
            Err(KodataError::TooDeep { path }) => assert_eq!(path, deepest.join("d")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_kodata_directory_is_an_empty_tree() {
        assert!(walk(Path::new("/nonexistent/kodata")).unwrap().is_empty());
    }
}
