//! ko's two layers, streamed: tar → sha256 (DiffID) → gzip level 1 → sha256 (digest) → file.
//! Nothing is held in memory beyond a buffer, whatever the binary's size.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use super::tar::TarWriter;
use crate::digest::{Digest, HashingWriter};

/// Where ko puts the app and the kodata tree inside the image.
pub const APP_DIR: &str = "/ko-app";
pub const KODATA_PATH: &str = "/var/run/ko";

/// A compressed layer written to `path`.
#[derive(Clone, Debug)]
pub struct Layer {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(
        "kodata: {path} is a symlink to {target}, outside {root}: kodata symlinks must stay inside the kodata directory"
    )]
    SymlinkEscape {
        path: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("kodata: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write layer to {dir}: {source}")]
    Write { dir: PathBuf, source: io::Error },
}

/// How layers are compressed. The algorithm, its level and its implementation all decide
/// the compressed digest, so each is pinned and part of the layer cache's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip through zlib-rs; level 1 is ko's (ggcr's) default.
    Gzip(u32),
    /// zstd through libzstd (OCI's `tar+zstd`), single-threaded so output is reproducible.
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(1)
    }
}

impl Compression {
    /// Part of the layer cache's key.
    fn recipe(self) -> String {
        match self {
            Compression::Gzip(level) => format!("gzip-{level}-zlib-rs"),
            Compression::Zstd(level) => {
                format!("zstd-{level}-libzstd-{}", zstd::zstd_safe::VERSION_NUMBER)
            }
        }
    }
}

/// Where layers are written, and whether finished layers may be reused.
#[derive(Clone, Debug)]
pub struct LayerStore {
    /// Compressed layers, named by digest hex (the blob cache).
    pub blobs: PathBuf,
    /// DiffID → compressed descriptor records; `None` disables reuse.
    pub index: Option<PathBuf>,
    pub compression: Compression,
}

/// The compressor in the layer pipeline.
enum Encoder<W: io::Write> {
    Gzip(GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: io::Write> Encoder<W> {
    fn new(c: Compression, out: W) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip(level) => {
                Encoder::Gzip(GzEncoder::new(out, flate2::Compression::new(level)))
            }
            Compression::Zstd(level) => Encoder::Zstd(zstd::Encoder::new(out, level)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: io::Write> io::Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheRecord {
    digest: Digest,
    size: u64,
}

impl LayerStore {
    fn record_path(&self, diff_id: &Digest) -> Option<PathBuf> {
        self.index
            .as_ref()
            .map(|d| d.join(self.compression.recipe()).join(diff_id.hex()))
    }

    /// A layer built before from the same tar bytes, if its blob is still there.
    fn lookup(&self, diff_id: &Digest) -> Option<Layer> {
        let bytes = fs::read(self.record_path(diff_id)?).ok()?;
        let r: CacheRecord = serde_json::from_slice(&bytes).ok()?;
        let path = self.blobs.join(r.digest.hex());
        (fs::metadata(&path).ok()?.len() == r.size).then(|| Layer {
            path,
            digest: r.digest,
            size: r.size,
            diff_id: diff_id.clone(),
        })
    }

    fn remember(&self, layer: &Layer) -> io::Result<()> {
        let Some(path) = self.record_path(&layer.diff_id) else {
            return Ok(());
        };
        let record = CacheRecord {
            digest: layer.digest.clone(),
            size: layer.size,
        };
        write_file_atomic(
            &path,
            &serde_json::to_vec(&record).map_err(io::Error::other)?,
        )
    }
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

enum Entry {
    Dir(String),
    File {
        name: String,
        host: PathBuf,
        size: u64,
    },
}

fn emit<W: io::Write>(
    tar: &mut TarWriter<W>,
    entries: &[Entry],
    mtime: u64,
    werr: &dyn Fn(io::Error) -> LayerError,
) -> Result<(), LayerError> {
    for e in entries {
        match e {
            Entry::Dir(name) => tar.dir(name, mtime).map_err(werr)?,
            Entry::File { name, host, size } => {
                let mut f = File::open(host).map_err(|source| LayerError::Read {
                    path: host.clone(),
                    source,
                })?;
                tar.file(name, *size, mtime, &[], &mut f).map_err(werr)?;
            }
        }
    }
    Ok(())
}

/// Build a layer from `entries`: hash the tar first (cheap), reuse a finished layer with the
/// same DiffID if the store has one, else tar → compressor → file, hashed on both sides.
fn build(entries: &[Entry], mtime: u64, store: &LayerStore) -> Result<Layer, LayerError> {
    let werr = |source| LayerError::Write {
        dir: store.blobs.clone(),
        source,
    };
    if store.index.is_some() {
        let mut hasher = TarWriter::new(HashingWriter::new(io::sink()));
        emit(&mut hasher, entries, mtime, &werr)?;
        let (_, diff_id, _) = hasher.finish().map_err(werr)?.finish();
        if let Some(layer) = store.lookup(&diff_id) {
            return Ok(layer);
        }
    }
    fs::create_dir_all(&store.blobs).map_err(werr)?;
    let tmp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(&store.blobs)
        .map_err(werr)?;
    let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 17, tmp));
    let gz = Encoder::new(store.compression, compressed).map_err(werr)?;
    let mut tar = TarWriter::new(HashingWriter::new(gz));
    emit(&mut tar, entries, mtime, &werr)?;
    let (gz, diff_id, _) = tar.finish().map_err(werr)?.finish();
    let (buf, digest, size) = gz.finish().map_err(werr)?.finish();
    let tmp = buf.into_inner().map_err(|e| werr(e.into_error()))?;
    tmp.as_file().sync_data().map_err(werr)?;
    let path = store.blobs.join(digest.hex());
    tmp.persist(&path).map_err(|e| werr(e.error))?;
    let layer = Layer {
        path,
        digest,
        size,
        diff_id,
    };
    store.remember(&layer).map_err(werr)?;
    Ok(layer)
}

/// The binary layer: directory `ko-app`, then `/ko-app/NAME` (mode 0555, mtime 0).
pub fn binary_layer(
    binary: &Path,
    app_name: &str,
    store: &LayerStore,
) -> Result<Layer, LayerError> {
    let size = fs::metadata(binary)
        .map_err(|source| LayerError::Read {
            path: binary.to_path_buf(),
            source,
        })?
        .len();
    let entries = [
        Entry::Dir(APP_DIR.trim_start_matches('/').into()),
        Entry::File {
            name: format!("{APP_DIR}/{app_name}"),
            host: binary.to_path_buf(),
            size,
        },
    ];
    build(&entries, 0, store)
}

/// The kodata layer: `/var`, `/var/run`, `/var/run/ko`, then the package's `kodata/` tree
/// (sorted, symlinks followed but confined to the tree), all with mtime `epoch`.
/// A missing `kodata` directory gives just the three directories, as ko does.
pub fn kodata_layer(kodata: &Path, epoch: u64, store: &LayerStore) -> Result<Layer, LayerError> {
    let mut entries = vec![
        Entry::Dir("/var".into()),
        Entry::Dir("/var/run".into()),
        Entry::Dir(KODATA_PATH.into()),
    ];
    if kodata.is_dir() {
        let root = kodata.canonicalize().map_err(|source| LayerError::Read {
            path: kodata.to_path_buf(),
            source,
        })?;
        walk(&root, &root, KODATA_PATH, &mut entries)?;
    }
    build(&entries, epoch, store)
}

// Depth first, names sorted bytewise within each directory, as Go's filepath.Walk.
fn walk(root: &Path, dir: &Path, in_image: &str, out: &mut Vec<Entry>) -> Result<(), LayerError> {
    let rerr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayerError::Read { path, source }
    };
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(rerr(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(rerr(dir))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let host = dir.join(&name);
        let image_path = format!("{in_image}/{}", name.to_string_lossy());
        let real = host.canonicalize().map_err(rerr(&host))?;
        if !real.starts_with(root) {
            return Err(LayerError::SymlinkEscape {
                path: host,
                target: real,
                root: root.to_path_buf(),
            });
        }
        let meta = fs::metadata(&real).map_err(rerr(&host))?;
        if meta.is_dir() {
            out.push(Entry::Dir(image_path.clone()));
            walk(root, &real, &image_path, out)?;
        } else {
            out.push(Entry::File {
                name: image_path,
                host: real,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn store(dir: &Path) -> LayerStore {
        LayerStore {
            blobs: dir.join("blobs"),
            index: Some(dir.join("index")),
            compression: Compression::default(),
        }
    }

    // Golden DiffIDs from ko-image-format.md §8.4 (Go archive/tar with ko's header rules).
    #[test]
    fn empty_kodata_matches_ko() {
        let out = tempfile::tempdir().unwrap();
        let l = kodata_layer(Path::new("/nonexistent"), 0, &store(out.path())).unwrap();
        assert_eq!(
            l.diff_id.as_str(),
            "sha256:ffe56a1c5f3878e9b5f803842adb9e2ce81584b6bd027e8599582aefe14a975b"
        );
        let l = kodata_layer(Path::new("/nonexistent"), 1_700_000_000, &store(out.path())).unwrap();
        assert_eq!(
            l.diff_id.as_str(),
            "sha256:b51381ac64a4033cff00bdced914587d3def0bbd97dd95c182d3a16dc2e86d80"
        );
    }

    #[test]
    fn ko_test_kodata_matches_ko() {
        let src = tempfile::tempdir().unwrap();
        let k = src.path().join("kodata");
        fs::create_dir_all(k.join("subdir")).unwrap();
        fs::write(k.join("a"), "hello\n").unwrap();
        symlink("a", k.join("b")).unwrap();
        fs::write(k.join("kenobi"), "Hello there\n").unwrap();
        fs::write(k.join("subdir/file.txt"), "subdir file content\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let l = kodata_layer(&k, 0, &store(out.path())).unwrap();
        assert_eq!(
            l.diff_id.as_str(),
            "sha256:b8efb7f2d64dc1a4876e559d489a4711505279c134c1e254fa1164e3d59e3b66"
        );
    }

    #[test]
    fn binary_layer_matches_ko() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        fs::write(&bin, "hello").unwrap();
        let out = tempfile::tempdir().unwrap();
        let l = binary_layer(&bin, "app", &store(out.path())).unwrap();
        assert_eq!(
            l.diff_id.as_str(),
            "sha256:ae2ceceff525f99138968ae262272285e6539a4203babb3acdcca061de0d83f7"
        );
        let bytes = fs::read(&l.path).unwrap();
        assert_eq!(Digest::of(&bytes), l.digest);
        assert_eq!(bytes.len() as u64, l.size);
        assert_eq!(&bytes[..10], b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff");
    }

    #[test]
    fn symlinks_out_of_kodata_are_refused() {
        let src = tempfile::tempdir().unwrap();
        let k = src.path().join("kodata");
        fs::create_dir_all(&k).unwrap();
        fs::write(src.path().join("secret"), "x").unwrap();
        symlink("../secret", k.join("leak")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = kodata_layer(&k, 0, &store(out.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn finished_layers_are_reused_by_diff_id_and_rebuilt_when_their_blob_is_gone() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        fs::write(&bin, "hello").unwrap();
        let out = tempfile::tempdir().unwrap();
        let st = store(out.path());
        let first = binary_layer(&bin, "app", &st).unwrap();
        // Make a rebuild detectable: a reused layer keeps the file as it is.
        let marker = fs::metadata(&first.path).unwrap().modified().unwrap();
        let again = binary_layer(&bin, "app", &st).unwrap();
        assert_eq!(
            (again.digest.clone(), again.size),
            (first.digest.clone(), first.size)
        );
        assert_eq!(
            fs::metadata(&again.path).unwrap().modified().unwrap(),
            marker
        );
        // A different name in the image is a different tar, so a different layer.
        assert_ne!(
            binary_layer(&bin, "other", &st).unwrap().diff_id,
            first.diff_id
        );
        fs::remove_file(&first.path).unwrap();
        let rebuilt = binary_layer(&bin, "app", &st).unwrap();
        assert_eq!(rebuilt.digest, first.digest);
        assert!(rebuilt.path.exists());
        // Without an index nothing is looked up or recorded.
        let plain = LayerStore {
            blobs: out.path().join("plain"),
            index: None,
            compression: Compression::default(),
        };
        assert_eq!(
            binary_layer(&bin, "app", &plain).unwrap().digest,
            first.digest
        );
    }

    #[test]
    fn zstd_layers_are_reproducible_and_cached_apart_from_gzip() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        fs::write(&bin, "hello".repeat(1000)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let gzip = binary_layer(&bin, "app", &store(out.path())).unwrap();
        let zst = LayerStore {
            compression: Compression::Zstd(3),
            ..store(out.path())
        };
        let a = binary_layer(&bin, "app", &zst).unwrap();
        assert_eq!(a.diff_id, gzip.diff_id);
        assert_ne!(
            a.digest, gzip.digest,
            "the gzip layer's cache record is not reused"
        );
        assert_eq!(&fs::read(&a.path).unwrap()[..4], b"\x28\xb5\x2f\xfd");
        let other = tempfile::tempdir().unwrap();
        let b = binary_layer(
            &bin,
            "app",
            &LayerStore {
                compression: Compression::Zstd(3),
                ..store(other.path())
            },
        )
        .unwrap();
        assert_eq!(a.digest, b.digest);
    }
}
