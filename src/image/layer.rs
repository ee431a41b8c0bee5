//! ko's two layers, streamed: tar → sha256 (DiffID) → gzip → sha256 (digest) → file.
//! gzip is compressed in parallel, in fixed blocks (`image::pgzip`); nothing is held in
//! memory beyond a few blocks per worker, whatever the binary's size.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::kodata::{self, KodataError, Node};
use super::pgzip;
use super::tar::TarWriter;
use crate::digest::{Digest, HashingWriter};
use crate::integrity;

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
    #[error(transparent)]
    Kodata(#[from] KodataError),
    #[error("kodata: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write layer to {dir}: {source}")]
    Write { dir: PathBuf, source: io::Error },
    /// A kept binary does not give the layer recorded for it: it was changed since.
    #[error("{path} does not give the layer {expected} recorded for it")]
    Changed { path: PathBuf, expected: Digest },
}

/// How layers are compressed. The algorithm, its level and its implementation all decide
/// the compressed digest, so each is pinned and part of the layer cache's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip through zlib-rs, level 2 by default: no bigger than ko's level 1, which is Go's
    /// and has dynamic Huffman codes; zlib-rs uses them from level 2 on (its level 1 has
    /// static codes only, 11% bigger). Compressed in independent 1 MiB blocks on all cores,
    /// deterministically (`image::pgzip`).
    Gzip(u32),
    /// zstd through libzstd (OCI's `tar+zstd`), single-threaded so output is reproducible.
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(2)
    }
}

impl Compression {
    /// What decides the compressed bytes: part of the layer and artifact caches' keys.
    pub fn recipe(self) -> String {
        match self {
            Compression::Gzip(level) => format!(
                "gzip-{level}-zlib-rs-blocks-{}k-dict-{}k-v{}",
                pgzip::BLOCK_SIZE >> 10,
                pgzip::DICT_SIZE >> 10,
                pgzip::VERSION
            ),
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
    Gzip(Box<pgzip::GzEncoder<W>>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: io::Write> Encoder<W> {
    fn new(c: Compression, out: W, threads: usize) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip(level) => {
                Encoder::Gzip(Box::new(pgzip::GzEncoder::new(out, level, threads)))
            }
            Compression::Zstd(level) => Encoder::Zstd(zstd::Encoder::new(out, level)?),
        })
    }

    /// gzip blocks are recorded, and copied from `earlier` where it has them (zstd has no
    /// blocks).
    fn keyed(self, earlier: Option<pgzip::Earlier>) -> Self {
        match self {
            Encoder::Gzip(gz) => Encoder::Gzip(Box::new(gz.keyed(earlier))),
            zstd => zstd,
        }
    }

    fn finish(self) -> io::Result<(W, Vec<pgzip::BlockRecord>)> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish().map(|w| (w, Vec::new())),
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

/// How far a layer file is written, for an upload that follows it.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// A read handle on the file being written, opened before the first byte: the file is
    /// renamed when finished, and a reader that opened it by path after that would miss it.
    pub file: Option<Arc<File>>,
    /// Bytes in the file so far.
    pub bytes: u64,
    /// Every byte is in the file.
    pub done: bool,
}

pub type WrittenTx = tokio::sync::watch::Sender<Written>;

/// Reports every write that reached the file.
struct Reporting<'a, W> {
    inner: W,
    tx: Option<&'a WrittenTx>,
}

impl<W: io::Write> io::Write for Reporting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(tx) = self.tx {
            tx.send_modify(|w| w.bytes += n as u64);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A finished layer, stored under its DiffID, which it names too: a record moved to
/// another name is not used.
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheRecord {
    diff_id: Digest,
    digest: Digest,
    size: u64,
}

/// The last layer made from one binary path, with its gzip blocks.
#[derive(serde::Serialize, serde::Deserialize)]
struct BlocksRecord {
    digest: Digest,
    size: u64,
    blocks: Vec<pgzip::BlockRecord>,
}

/// What a layer build may take from finished layers.
#[derive(Clone, Copy)]
enum Reuse<'a> {
    /// Nothing: the content is new (a binary just linked).
    Nothing,
    /// A finished layer with the same DiffID, when the store has one.
    Same,
    /// Like `Same`, for a file that must still give this DiffID (a kept binary): anything
    /// else is [`LayerError::Changed`], and nothing is made from it.
    Expect { file: &'a Path, diff_id: &'a Digest },
}

impl LayerStore {
    /// Records live in a directory of their own per format: records of older kobuilds are
    /// not read (nor mistaken for damaged ones).
    fn records(&self) -> Option<PathBuf> {
        self.index
            .as_ref()
            .map(|d| d.join("sealed").join(self.compression.recipe()))
    }

    fn record_path(&self, diff_id: &Digest) -> Option<PathBuf> {
        self.records().map(|d| d.join(diff_id.hex()))
    }

    /// A layer built before from the same tar bytes, if its record is intact and its blob
    /// is still there. Its bytes are not read here: they are checked against the digest
    /// wherever they are read (upload, layout copy, gzip blocks).
    fn lookup(&self, diff_id: &Digest) -> Option<Layer> {
        let path = self.record_path(diff_id)?;
        let r: CacheRecord = integrity::load(&path)?;
        if r.diff_id != *diff_id {
            integrity::evict(&path, &format!("it is the record of {}", r.diff_id));
            return None;
        }
        Some(Layer {
            path: self.blob(&r.digest, r.size)?,
            digest: r.digest,
            size: r.size,
            diff_id: r.diff_id,
        })
    }

    /// A blob of the store, if it is there with its recorded size (evicted if not).
    fn blob(&self, digest: &Digest, size: u64) -> Option<PathBuf> {
        let path = self.blobs.join(digest.hex());
        let len = fs::metadata(&path).ok()?.len();
        if len != size {
            integrity::evict(&path, &format!("it has {len} bytes, not {size}"));
            return None;
        }
        Some(path)
    }

    /// Where the blocks of the last layer made from `binary` are recorded: a relinked binary
    /// whose bytes moved little (a version stamp of the same length, say) copies its
    /// unchanged blocks from that layer. `None` without a cache, or for zstd.
    fn blocks_path(&self, binary: &Path) -> Option<PathBuf> {
        if !matches!(self.compression, Compression::Gzip(_)) {
            return None;
        }
        let slot = Digest::of(binary.as_os_str().as_encoded_bytes());
        self.records().map(|d| d.join("blocks").join(slot.hex()))
    }

    /// The recorded layer's blocks, if its record is intact and its blob still there; with
    /// the blob's path.
    fn earlier(&self, blocks_path: &Path) -> Option<(pgzip::Earlier, PathBuf)> {
        let r: BlocksRecord = integrity::load(blocks_path)?;
        let path = self.blob(&r.digest, r.size)?;
        Some((pgzip::Earlier::new(File::open(&path).ok()?, r.blocks), path))
    }

    fn remember_blocks(
        &self,
        blocks_path: &Path,
        layer: &Layer,
        blocks: Vec<pgzip::BlockRecord>,
    ) -> io::Result<()> {
        let record = BlocksRecord {
            digest: layer.digest.clone(),
            size: layer.size,
            blocks,
        };
        integrity::store(blocks_path, &record)
    }

    fn remember(&self, layer: &Layer) -> io::Result<()> {
        let Some(path) = self.record_path(&layer.diff_id) else {
            return Ok(());
        };
        let record = CacheRecord {
            diff_id: layer.diff_id.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        };
        integrity::store(&path, &record)
    }
}

enum Entry {
    Dir(String),
    File {
        name: String,
        host: PathBuf,
        size: u64,
        /// `security.capability`, for the binary when `linux_capabilities` asks for it.
        capabilities: Option<[u8; 20]>,
    },
}

/// The PAX record ko stores file capabilities in, as Go's archive/tar names xattrs.
const CAPABILITY_RECORD: &str = "SCHILY.xattr.security.capability";

fn emit<W: io::Write>(
    tar: &mut TarWriter<W>,
    entries: &[Entry],
    mtime: u64,
    werr: &dyn Fn(io::Error) -> LayerError,
) -> Result<(), LayerError> {
    for e in entries {
        match e {
            Entry::Dir(name) => tar.dir(name, mtime).map_err(werr)?,
            Entry::File {
                name,
                host,
                size,
                capabilities,
            } => {
                let mut f =
                    crate::fsutil::open_regular(host).map_err(|source| LayerError::Read {
                        path: host.clone(),
                        source,
                    })?;
                let pax: Vec<(&str, &[u8])> = capabilities
                    .iter()
                    .map(|c| (CAPABILITY_RECORD, &c[..]))
                    .collect();
                tar.file(name, *size, mtime, &pax, &mut f).map_err(werr)?;
            }
        }
    }
    Ok(())
}

fn build(entries: &[Entry], mtime: u64, store: &LayerStore) -> Result<Layer, LayerError> {
    build_with(
        entries,
        mtime,
        store,
        pgzip::default_threads(),
        Reuse::Same,
        None,
        None,
    )
}

/// Build a layer from `entries`: hash the tar first, reuse a finished layer with the same
/// DiffID if the store has one, else tar → compressor → file, hashed on both sides.
///
/// With a cache, a miss reads the tar twice: a hash-only pass (tar + sha256, ~1.7 GB/s with
/// SHA-NI, 60 ms per 100 MB) to look the DiffID up, then the compressing pass (~0.5 s per
/// 100 MB at level 2 on two cores). Compressing speculatively during the first pass would
/// save at most those 60 ms on a miss, but make every hit (an unchanged binary, kodata) cost
/// a whole compression instead of a hash. The second pass hashes the tar again rather than
/// trust the first, so a layer's DiffID always describes the bytes that were compressed.
/// Without a cache (`--no-cache`), or with nothing to reuse (a binary just linked, whose
/// DiffID is new unless the link reproduced an earlier one) there is one pass; the layer is
/// still recorded. `threads` decides speed, never bytes. `follow` hears of every write.
/// `blocks`: the record of this layer's gzip blocks, read for blocks to copy and rewritten.
fn build_with(
    entries: &[Entry],
    mtime: u64,
    store: &LayerStore,
    threads: usize,
    reuse: Reuse<'_>,
    follow: Option<&WrittenTx>,
    blocks: Option<&Path>,
) -> Result<Layer, LayerError> {
    let werr = |source| LayerError::Write {
        dir: store.blobs.clone(),
        source,
    };
    // Whichever pass hashes the tar first checks an expected DiffID: no extra read.
    let check = |actual: &Digest| match reuse {
        Reuse::Expect { file, diff_id } if diff_id != actual => Err(LayerError::Changed {
            path: file.to_path_buf(),
            expected: diff_id.clone(),
        }),
        _ => Ok(()),
    };
    if !matches!(reuse, Reuse::Nothing) && store.index.is_some() {
        let mut hasher = TarWriter::new(HashingWriter::new(io::sink()));
        emit(&mut hasher, entries, mtime, &werr)?;
        let (_, diff_id, _) = hasher.finish().map_err(werr)?.finish();
        check(&diff_id)?;
        if let Some(layer) = store.lookup(&diff_id) {
            return Ok(layer);
        }
    }
    fs::create_dir_all(&store.blobs).map_err(werr)?;
    let tmp = crate::fsutil::temp_file_in(&store.blobs).map_err(werr)?;
    if let Some(tx) = follow {
        let reader = tmp.reopen().map_err(werr)?;
        tx.send_modify(|w| w.file = Some(Arc::new(reader)));
    }
    let reporting = Reporting {
        inner: tmp,
        tx: follow,
    };
    let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 17, reporting));
    let mut gz = Encoder::new(store.compression, compressed, threads).map_err(werr)?;
    let earlier = blocks.and_then(|p| store.earlier(p));
    let lender = earlier
        .as_ref()
        .map(|(e, path)| (e.damaged(), path.clone()));
    if blocks.is_some() {
        gz = gz.keyed(earlier.map(|(e, _)| e));
    }
    let mut tar = TarWriter::new(HashingWriter::new(gz));
    emit(&mut tar, entries, mtime, &werr)?;
    let (gz, diff_id, _) = tar.finish().map_err(werr)?.finish();
    let (compressed, records) = gz.finish().map_err(werr)?;
    if let Some((damaged, path)) = lender
        && damaged.load(std::sync::atomic::Ordering::Relaxed)
    {
        // Its damaged blocks were compressed afresh; the layer must not be used again.
        integrity::evict(&path, "its gzip blocks do not match their recorded sha256");
    }
    check(&diff_id)?;
    let (buf, digest, size) = compressed.finish();
    let tmp = buf.into_inner().map_err(|e| werr(e.into_error()))?.inner;
    if let Some(tx) = follow {
        tx.send_modify(|w| w.done = true);
    }
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
    if let Some(p) = blocks {
        store.remember_blocks(p, &layer, records).map_err(werr)?;
    }
    Ok(layer)
}

/// What goes into the binary layer: the file, its name under `/ko-app`, and the file
/// capabilities ko would give it (the xattr's bytes).
#[derive(Clone, Copy)]
pub struct BinaryEntry<'a> {
    pub path: &'a Path,
    pub app_name: &'a str,
    pub capabilities: Option<[u8; 20]>,
}

/// The binary layer: directory `ko-app`, then `/ko-app/NAME` (mode 0555, mtime 0).
pub fn binary_layer(binary: BinaryEntry<'_>, store: &LayerStore) -> Result<Layer, LayerError> {
    build_binary_layer(binary, store, Reuse::Same, None)
}

/// [`binary_layer`] for a binary this run just linked: compressed at once, without first
/// hashing it to look for a finished layer (almost always a miss; a hit would give the
/// same bytes anyway). `follow` hears of every write, for an upload that follows the file.
pub fn fresh_binary_layer(
    binary: BinaryEntry<'_>,
    store: &LayerStore,
    follow: Option<&WrittenTx>,
) -> Result<Layer, LayerError> {
    build_binary_layer(binary, store, Reuse::Nothing, follow)
}

/// [`binary_layer`] for a binary kept from an earlier run, whose layer then had DiffID
/// `expected`: [`LayerError::Changed`] if the binary no longer gives it. The check rides on
/// the pass that hashes the tar anyway.
pub fn kept_binary_layer(
    binary: BinaryEntry<'_>,
    store: &LayerStore,
    expected: &Digest,
) -> Result<Layer, LayerError> {
    let reuse = Reuse::Expect {
        file: binary.path,
        diff_id: expected,
    };
    build_binary_layer(binary, store, reuse, None)
}

fn build_binary_layer(
    binary: BinaryEntry<'_>,
    store: &LayerStore,
    reuse: Reuse<'_>,
    follow: Option<&WrittenTx>,
) -> Result<Layer, LayerError> {
    let size = fs::metadata(binary.path)
        .map_err(|source| LayerError::Read {
            path: binary.path.to_path_buf(),
            source,
        })?
        .len();
    let entries = [
        Entry::Dir(APP_DIR.trim_start_matches('/').into()),
        Entry::File {
            name: format!("{APP_DIR}/{}", binary.app_name),
            host: binary.path.to_path_buf(),
            size,
            capabilities: binary.capabilities,
        },
    ];
    let blocks = store.blocks_path(binary.path);
    build_with(
        &entries,
        0,
        store,
        pgzip::default_threads(),
        reuse,
        follow,
        blocks.as_deref(),
    )
}

/// The kodata layer: `/var`, `/var/run`, `/var/run/ko`, then the package's `kodata/` tree
/// ([`kodata::walk`]), all with mtime `epoch`. A missing `kodata` directory gives just the
/// three directories, as ko does.
pub fn kodata_layer(kodata: &Path, epoch: u64, store: &LayerStore) -> Result<Layer, LayerError> {
    let mut entries = vec![
        Entry::Dir("/var".into()),
        Entry::Dir("/var/run".into()),
        Entry::Dir(KODATA_PATH.into()),
    ];
    entries.extend(kodata::walk(kodata)?.into_iter().map(|node| match node {
        Node::Dir { rel, .. } => Entry::Dir(format!("{KODATA_PATH}/{rel}")),
        Node::File { host, rel, size } => Entry::File {
            capabilities: None,
            name: format!("{KODATA_PATH}/{rel}"),
            host,
            size,
        },
    }));
    build(&entries, epoch, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a Path, app_name: &'a str) -> BinaryEntry<'a> {
        BinaryEntry {
            path,
            app_name,
            capabilities: None,
        }
    }
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
        let l = binary_layer(entry(&bin, "app"), &store(out.path())).unwrap();
        assert_eq!(
            l.diff_id.as_str(),
            "sha256:ae2ceceff525f99138968ae262272285e6539a4203babb3acdcca061de0d83f7"
        );
        let bytes = fs::read(&l.path).unwrap();
        assert_eq!(Digest::of(&bytes), l.digest);
        assert_eq!(bytes.len() as u64, l.size);
        // No name or mtime; XFL 0 (neither fastest nor best), OS unknown.
        assert_eq!(&bytes[..10], b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff");
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
    fn a_relinked_binary_copies_unchanged_blocks_into_the_same_layer_as_without_cache() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        let mut x = 7u64;
        let content: Vec<u8> = (0..pgzip::BLOCK_SIZE * 7 / 2)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if i % 3 == 0 {
                    (x >> 59) as u8
                } else {
                    b"go"[i % 2]
                }
            })
            .collect();
        fs::write(&bin, &content).unwrap();
        let out = tempfile::tempdir().unwrap();
        let st = store(out.path());
        fresh_binary_layer(entry(&bin, "app"), &st, None).unwrap();
        let record = st.blocks_path(&bin).unwrap();
        assert!(
            st.earlier(&record).is_some(),
            "the blocks were not recorded"
        );

        // A stamp of the same length changes, as a version string set at link time would.
        let mut relinked = content;
        relinked[pgzip::BLOCK_SIZE * 2 + 100..][..7].copy_from_slice(b"v1.2.4 ");
        fs::write(&bin, &relinked).unwrap();
        let copied = fresh_binary_layer(entry(&bin, "app"), &st, None).unwrap();
        let plain = LayerStore {
            index: None,
            ..store(&out.path().join("plain"))
        };
        let fresh = fresh_binary_layer(entry(&bin, "app"), &plain, None).unwrap();
        assert_eq!(copied.digest, fresh.digest);
        assert_eq!(
            fs::read(&copied.path).unwrap(),
            fs::read(&fresh.path).unwrap()
        );
        assert_eq!(copied.diff_id, fresh.diff_id);
        assert!(
            plain.blocks_path(&bin).is_none(),
            "--no-cache records no blocks"
        );
    }

    #[test]
    fn finished_layers_are_reused_by_diff_id_and_rebuilt_when_their_blob_is_gone() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        fs::write(&bin, "hello").unwrap();
        let out = tempfile::tempdir().unwrap();
        let st = store(out.path());
        let first = binary_layer(entry(&bin, "app"), &st).unwrap();
        // Make a rebuild detectable: a reused layer keeps the file as it is.
        let marker = fs::metadata(&first.path).unwrap().modified().unwrap();
        let again = binary_layer(entry(&bin, "app"), &st).unwrap();
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
            binary_layer(entry(&bin, "other"), &st).unwrap().diff_id,
            first.diff_id
        );
        // A fresh binary is compressed again, to the same layer, and recorded.
        let fresh = fresh_binary_layer(entry(&bin, "app"), &st, None).unwrap();
        assert_eq!(
            (&fresh.digest, &fresh.diff_id),
            (&first.digest, &first.diff_id)
        );
        assert_ne!(
            fs::metadata(&fresh.path).unwrap().modified().unwrap(),
            marker
        );
        fs::remove_file(&first.path).unwrap();
        let rebuilt = binary_layer(entry(&bin, "app"), &st).unwrap();
        assert_eq!(rebuilt.digest, first.digest);
        assert!(rebuilt.path.exists());
        // Without an index nothing is looked up or recorded.
        let plain = LayerStore {
            blobs: out.path().join("plain"),
            index: None,
            compression: Compression::default(),
        };
        assert_eq!(
            binary_layer(entry(&bin, "app"), &plain).unwrap().digest,
            first.digest
        );
    }

    #[test]
    fn a_kept_binary_that_changed_gives_no_layer() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        fs::write(&bin, "hello").unwrap();
        let out = tempfile::tempdir().unwrap();
        let cached = store(out.path());
        let plain = LayerStore {
            index: None,
            ..store(&out.path().join("plain"))
        };
        for st in [&cached, &plain] {
            let first = fresh_binary_layer(entry(&bin, "app"), st, None).unwrap();
            let kept = kept_binary_layer(entry(&bin, "app"), st, &first.diff_id).unwrap();
            assert_eq!(kept.digest, first.digest);

            fs::write(&bin, "hellO").unwrap();
            let blobs = fs::read_dir(&st.blobs).unwrap().count();
            let err = kept_binary_layer(entry(&bin, "app"), st, &first.diff_id).unwrap_err();
            assert!(matches!(err, LayerError::Changed { .. }), "{err}");
            assert_eq!(
                fs::read_dir(&st.blobs).unwrap().count(),
                blobs,
                "nothing made"
            );
            fs::write(&bin, "hello").unwrap();
        }
    }

    #[test]
    fn damaged_layer_records_and_blobs_are_evicted_and_made_again() {
        let src = tempfile::tempdir().unwrap();
        let (a, b) = (src.path().join("a"), src.path().join("b"));
        fs::write(&a, "amd64").unwrap();
        fs::write(&b, "arm64").unwrap();
        let out = tempfile::tempdir().unwrap();
        let st = store(out.path());
        let la = binary_layer(entry(&a, "app"), &st).unwrap();
        let lb = binary_layer(entry(&b, "app"), &st).unwrap();

        // Records swapped: each names the other's DiffID, so neither is used.
        let (ra, rb) = (
            st.record_path(&la.diff_id).unwrap(),
            st.record_path(&lb.diff_id).unwrap(),
        );
        let (bytes_a, bytes_b) = (fs::read(&ra).unwrap(), fs::read(&rb).unwrap());
        fs::write(&ra, bytes_b).unwrap();
        fs::write(&rb, bytes_a).unwrap();
        let again = binary_layer(entry(&a, "app"), &st).unwrap();
        assert_eq!((&again.digest, &again.diff_id), (&la.digest, &la.diff_id));
        assert!(st.lookup(&la.diff_id).is_some(), "recorded again");
        assert!(st.lookup(&lb.diff_id).is_none());
        assert!(!rb.exists(), "evicted");

        // A blob cut short is evicted, and made again.
        fs::write(&la.path, b"short").unwrap();
        assert!(st.lookup(&la.diff_id).is_none());
        assert!(!la.path.exists());
        let again = binary_layer(entry(&a, "app"), &st).unwrap();
        assert_eq!(Digest::of(&fs::read(&again.path).unwrap()), la.digest);
    }

    #[test]
    fn a_layer_lending_damaged_blocks_is_evicted() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        let mut x = 7u64;
        let content: Vec<u8> = (0..pgzip::BLOCK_SIZE * 3)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 60) as u8
            })
            .collect();
        fs::write(&bin, &content).unwrap();
        let out = tempfile::tempdir().unwrap();
        let st = store(out.path());
        let first = fresh_binary_layer(entry(&bin, "app"), &st, None).unwrap();
        let mut damaged = fs::read(&first.path).unwrap();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        fs::write(&first.path, damaged).unwrap();

        let mut relinked = content;
        relinked[10] ^= 1;
        fs::write(&bin, &relinked).unwrap();
        let layer = fresh_binary_layer(entry(&bin, "app"), &st, None).unwrap();
        assert!(!first.path.exists(), "the damaged layer is still there");
        let plain = LayerStore {
            index: None,
            ..store(&out.path().join("plain"))
        };
        let want = fresh_binary_layer(entry(&bin, "app"), &plain, None).unwrap();
        assert_eq!(layer.digest, want.digest);
    }

    #[test]
    fn zstd_layers_are_reproducible_and_cached_apart_from_gzip() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        fs::write(&bin, "hello".repeat(1000)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let gzip = binary_layer(entry(&bin, "app"), &store(out.path())).unwrap();
        let zst = LayerStore {
            compression: Compression::Zstd(3),
            ..store(out.path())
        };
        let a = binary_layer(entry(&bin, "app"), &zst).unwrap();
        assert_eq!(a.diff_id, gzip.diff_id);
        assert_ne!(
            a.digest, gzip.digest,
            "the gzip layer's cache record is not reused"
        );
        assert_eq!(&fs::read(&a.path).unwrap()[..4], b"\x28\xb5\x2f\xfd");
        let other = tempfile::tempdir().unwrap();
        let b = binary_layer(
            entry(&bin, "app"),
            &LayerStore {
                compression: Compression::Zstd(3),
                ..store(other.path())
            },
        )
        .unwrap();
        assert_eq!(a.digest, b.digest);
    }

    /// A zstd layer's bytes depend only on the input and the level: not on how the input is
    /// cut into writes (a file read returns what it returns), nor on what else compresses
    /// at the same time. libzstd is built without its worker threads, so none can race.
    #[test]
    fn zstd_streams_depend_only_on_input_and_level() {
        use super::pgzip::tests::{executable, go_elf, random};
        use std::io::Write;
        const B: usize = 1 << 20;
        let zstd = |input: &[u8], level: i32, chunk: usize| {
            let mut e = Encoder::new(Compression::Zstd(level), Vec::new(), 0).unwrap();
            for c in input.chunks(chunk) {
                e.write_all(c).unwrap();
            }
            e.finish().unwrap().0
        };
        let mut inputs = vec![random(2 * B + 777, 7), executable(4 * B + 4321, 11)];
        inputs.extend(go_elf());
        // Level 6 uses another match finder than 3 (lazy, with SIMD row hashing).
        for level in [3, 6] {
            let want: Vec<Vec<u8>> = inputs
                .iter()
                .map(|input| zstd(input, level, input.len().max(1)))
                .collect();
            for round in 0..6 {
                std::thread::scope(|s| {
                    for (i, (input, want)) in inputs.iter().zip(&want).enumerate() {
                        s.spawn(move || {
                            let chunk = [1000, 65536, B + 7, 131_072 + 3][(round + i) % 4];
                            assert!(
                                zstd(input, level, chunk) == *want,
                                "input {i}, level {level}, writes of {chunk}: other bytes"
                            );
                        });
                    }
                });
            }
        }
    }

    /// Compressed digests are pinned: if one changes (a zlib-rs upgrade, a new block size),
    /// the recipe in `Compression::recipe` must change with it, or caches would mix the two.
    /// Level 2 is the default, level 1 ko's.
    #[test]
    fn gzip_digests_are_pinned() {
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        let pinned = |level: u32| {
            let out = tempfile::tempdir().unwrap();
            let st = LayerStore {
                compression: Compression::Gzip(level),
                ..store(out.path())
            };
            let mut got = Vec::new();
            fs::write(&bin, "hello").unwrap();
            got.push(binary_layer(entry(&bin, "app"), &st).unwrap());
            got.push(kodata_layer(Path::new("/nonexistent"), 0, &st).unwrap());
            // Just under one block of tar, then two and a half blocks.
            for len in [(1 << 20) - 3000, 5 << 19] {
                let data: Vec<u8> = (0..len as u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x3f)
                    .collect();
                fs::write(&bin, &data).unwrap();
                got.push(binary_layer(entry(&bin, "app"), &st).unwrap());
            }
            got.iter()
                .map(|l| (l.digest.hex()[..16].to_string(), l.size))
                .collect::<Vec<_>>()
        };
        assert_eq!(Compression::default(), Compression::Gzip(2));
        let want = |pins: [(&str, u64); 4]| pins.map(|(d, n)| (d.to_string(), n)).to_vec();
        assert_eq!(
            pinned(2),
            want([
                ("6140cf6dba1d3234", 127),
                ("3c63c81cee31dc63", 121),
                ("f70431caa41aeedd", 41258),
                ("38f5f69ca7d1127c", 103347),
            ])
        );
        assert_eq!(
            pinned(1),
            want([
                ("c9c34520689797de", 142),
                ("6b33cd6045a3bb95", 141),
                ("b95173a379ff8da7", 43291),
                ("2ffc70bc7ebb59c6", 108405),
            ])
        );
    }

    fn tar_of(bin: &Path, name: &str) -> Vec<u8> {
        let mut tar = TarWriter::new(Vec::new());
        tar.dir("ko-app", 0).unwrap();
        let size = fs::metadata(bin).unwrap().len();
        let mut f = File::open(bin).unwrap();
        tar.file(&format!("{APP_DIR}/{name}"), size, 0, &[], &mut f)
            .unwrap();
        tar.finish().unwrap()
    }

    #[test]
    fn multi_block_gzip_layers_are_the_tar_and_independent_of_threads() {
        use std::io::Read;
        let src = tempfile::tempdir().unwrap();
        let bin = src.path().join("out");
        // 2.5 blocks, half compressible, half not, like a Go binary.
        let data: Vec<u8> = (0..pgzip::BLOCK_SIZE as u32 * 5 / 2)
            .map(|i| match (i >> 12) % 2 {
                0 => b"main.main runtime.morestack "[i as usize % 28],
                _ => (i.wrapping_mul(2654435761) >> 11) as u8,
            })
            .collect();
        fs::write(&bin, &data).unwrap();
        let tar = tar_of(&bin, "app");
        let out = tempfile::tempdir().unwrap();
        let entries = [
            Entry::Dir("ko-app".into()),
            Entry::File {
                name: format!("{APP_DIR}/app"),
                host: bin.clone(),
                size: data.len() as u64,
                capabilities: None,
            },
        ];
        let layers: Vec<Layer> = [0, 1, 2, 5]
            .into_iter()
            .map(|threads| {
                let st = LayerStore {
                    blobs: out.path().join(format!("t{threads}")),
                    index: None,
                    compression: Compression::default(),
                };
                build_with(&entries, 0, &st, threads, Reuse::Same, None, None).unwrap()
            })
            .collect();
        for l in &layers[1..] {
            assert_eq!((&l.digest, l.size), (&layers[0].digest, layers[0].size));
        }
        let l = &layers[0];
        assert_eq!(l.diff_id, Digest::of(&tar));
        // The default thread count and a cache give the same layer.
        let cached = binary_layer(entry(&bin, "app"), &store(out.path())).unwrap();
        assert_eq!((&cached.digest, &cached.diff_id), (&l.digest, &l.diff_id));
        let gz = fs::read(&l.path).unwrap();
        assert_eq!(Digest::of(&gz), l.digest);
        assert_eq!(gz.len() as u64, l.size);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == tar, "GzDecoder gives other bytes");
        plain.clear();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == tar, "MultiGzDecoder gives other bytes");
        match std::process::Command::new("zcat").arg(&l.path).output() {
            Ok(z) => {
                assert!(z.status.success(), "{}", String::from_utf8_lossy(&z.stderr));
                assert!(z.stdout == tar, "zcat gives other bytes");
            }
            Err(e) => eprintln!("zcat: {e}: skipped"),
        }
    }

    /// Layer-path throughput on a large binary, best of `KOBUILD_BENCH_RUNS` (default 5),
    /// including the fsync. Not a test: run it on a release build,
    /// `KOBUILD_BENCH_BIN=path cargo test --release --lib layer_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn layer_throughput() {
        use std::time::Instant;
        let bin = PathBuf::from(std::env::var("KOBUILD_BENCH_BIN").expect("KOBUILD_BENCH_BIN"));
        let runs: usize = std::env::var("KOBUILD_BENCH_RUNS").map_or(5, |r| r.parse().unwrap());
        let len = fs::metadata(&bin).unwrap().len();
        let entries = [
            Entry::Dir("ko-app".into()),
            Entry::File {
                name: format!("{APP_DIR}/app"),
                host: bin.clone(),
                size: len,
                capabilities: None,
            },
        ];
        let _ = fs::read(&bin).unwrap(); // page cache
        let out = tempfile::tempdir().unwrap();
        let base = out.path().to_path_buf();
        let fresh = |name: &str| LayerStore {
            blobs: base.join(name),
            index: None,
            compression: Compression::default(),
        };
        // User + system CPU seconds of this process, from /proc (10 ms ticks).
        let cpu = || {
            let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split(' ').collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            ticks(12)
                .zip(ticks(13))
                .map_or(0.0, |(u, s)| (u + s) / 100.0)
        };
        let bench = |name: &str, f: &mut dyn FnMut(usize) -> Layer| {
            let mut times = Vec::new();
            let mut l = None;
            let cpu0 = cpu();
            for i in 0..runs {
                let start = Instant::now();
                l = Some(f(i));
                times.push(start.elapsed().as_secs_f64());
            }
            let cpu_per_run = (cpu() - cpu0) / runs as f64;
            times.sort_by(f64::total_cmp);
            let (best, median) = (times[0], times[runs / 2]);
            let l = l.unwrap();
            println!(
                "{name:<34} best {best:>6.3}s {:>6.1} MB/s  median {median:>6.3}s  cpu {cpu_per_run:>5.2}s  {} bytes, ratio {:.4}",
                len as f64 / best / 1e6,
                l.size,
                l.size as f64 / len as f64,
            );
        };
        // Before blocks: tar → sha256 → one flate2 GzEncoder stream → sha256 → file.
        bench("single stream (flate2, before)", &mut |i| {
            let st = fresh(&format!("single{i}"));
            fs::create_dir_all(&st.blobs).unwrap();
            let tmp = tempfile::NamedTempFile::new_in(&st.blobs).unwrap();
            let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 17, tmp));
            let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::new(1));
            let mut tar = TarWriter::new(HashingWriter::new(gz));
            emit(&mut tar, &entries, 0, &|e| panic!("{e}")).unwrap();
            let (gz, diff_id, _) = tar.finish().unwrap().finish();
            let (buf, digest, size) = gz.finish().unwrap().finish();
            let tmp = buf.into_inner().unwrap();
            tmp.as_file().sync_data().unwrap();
            let path = st.blobs.join(digest.hex());
            tmp.persist(&path).unwrap();
            Layer {
                path,
                digest,
                size,
                diff_id,
            }
        });
        for threads in [0, 1, 2, pgzip::default_threads()] {
            bench(&format!("blocks, {threads} workers, no cache"), &mut |i| {
                build_with(
                    &entries,
                    0,
                    &fresh(&format!("t{threads}-{i}")),
                    threads,
                    Reuse::Same,
                    None,
                    None,
                )
                .unwrap()
            });
        }
        bench("blocks, cache miss", &mut |i| {
            binary_layer(entry(&bin, "app"), &store(&base.join(format!("miss{i}")))).unwrap()
        });
        bench("blocks, cache hit", &mut |_| {
            binary_layer(entry(&bin, "app"), &store(&base.join("miss0"))).unwrap()
        });
    }
}
