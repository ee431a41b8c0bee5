//! OCI image layout directories and OCI archives (a tar of a layout), for builds without
//! a registry. Each tag becomes an index entry with `org.opencontainers.image.ref.name`.

use std::fs;
use std::path::Path;

use super::{Context, PublishError, bad_blob, blobs, io_err, local_blob};
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::{self, Output, write_atomic};
use crate::image::assemble::Built;
use crate::image::oci::{self, Descriptor, Index};
use crate::image::tar::TarWriter;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Add the image to the layout at `dir` (created if missing), one entry per tag.
pub async fn write_layout(
    cx: &Context<'_>,
    built: &Built,
    dir: &Path,
    tags: &[String],
) -> Result<Digest, PublishError> {
    let Context {
        client,
        base,
        cache,
    } = *cx;
    let index_path = dir.join("index.json");
    let mut index = if index_path.exists() {
        let bytes = fs::read(&index_path).map_err(io_err(&index_path))?;
        serde_json::from_slice::<Index>(&bytes).map_err(|e| PublishError::NotALayout {
            path: dir.to_path_buf(),
            reason: format!("index.json: {e}"),
        })?
    } else if dir.exists()
        // A layout whose writing stopped before its index (the index goes last) is resumed.
        && fs::read(dir.join("oci-layout")).ok().as_deref() != Some(LAYOUT_FILE)
        && fs::read_dir(dir).map_err(io_err(dir))?.next().is_some()
    {
        return Err(PublishError::NotALayout {
            path: dir.to_path_buf(),
            reason: "it has files but no index.json; choose an empty or new directory".into(),
        });
    } else {
        Index {
            schema_version: 2,
            media_type: oci::OCI_INDEX.into(),
            manifests: Vec::new(),
            annotations: Default::default(),
            subject: None,
        }
    };
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(io_err(&blob_dir))?;
    write_atomic(&dir.join("oci-layout"), LAYOUT_FILE)?;

    for (digest, _, source) in blobs(built, cache)? {
        let dest = blob_dir.join(digest.hex());
        if !dest.exists() {
            let src = local_blob(client, &digest, &source, base, cache).await?;
            copy_blob(&src, &dest, &digest, cache)?;
        }
    }
    for image in built.images() {
        write_blob(&blob_dir, &image.digest, &image.manifest)?;
    }
    write_blob(&blob_dir, built.digest(), built.manifest())?;

    let tags: Vec<&str> = if tags.is_empty() {
        vec!["latest"]
    } else {
        tags.iter().map(String::as_str).collect()
    };
    index.manifests.retain(|m| {
        !m.annotations
            .get(REF_NAME)
            .is_some_and(|t| tags.contains(&t.as_str()))
    });
    for tag in tags {
        let mut d = Descriptor::new(
            built.media_type(),
            built.manifest().len() as u64,
            built.digest().clone(),
        );
        d.annotations.insert(REF_NAME.into(), tag.into());
        index.manifests.push(d);
    }
    // The index goes last: until it is renamed into place, the layout does not name the image.
    write_atomic(&index_path, &crate::gojson::to_vec(&index))?;
    Ok(built.digest().clone())
}

fn write_blob(blob_dir: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), PublishError> {
    let dest = blob_dir.join(digest.hex());
    if dest.exists() {
        Ok(())
    } else {
        Ok(write_atomic(&dest, bytes)?)
    }
}

/// Copies the blob `digest` from `src`, hashing it on the way: unless it is intact, nothing
/// lands at `dest`.
fn copy_blob(src: &Path, dest: &Path, digest: &Digest, cache: &Path) -> Result<(), PublishError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = fsutil::temp_file_in(dir).map_err(io_err(dir))?;
    let mut from = match fs::File::open(src) {
        Ok(from) => from,
        // Evicted by another run sharing the cache: it is made again like a damaged one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad_blob(cache, src, digest, "it is gone"));
        }
        Err(e) => return Err(io_err(src)(e)),
    };
    let mut to = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 17, tmp));
    std::io::copy(&mut from, &mut to).map_err(io_err(src))?;
    let (to, actual, _) = to.finish();
    if actual != *digest {
        return Err(bad_blob(
            cache,
            src,
            digest,
            &format!("its bytes hash to {actual}"),
        ));
    }
    let tmp = to.into_inner().map_err(|e| PublishError::Io {
        path: dest.to_path_buf(),
        source: e.into_error(),
    })?;
    tmp.persist(dest).map_err(|e| PublishError::Io {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// An OCI archive: the layout, staged in the cache, as a tar file. A regular file is
/// replaced only once the tar is complete; a FIFO or device receives the tar as it is made.
pub async fn write_archive(
    cx: &Context<'_>,
    built: &Built,
    file: &Path,
    tags: &[String],
) -> Result<Digest, PublishError> {
    let cache = cx.cache;
    fs::create_dir_all(cache).map_err(io_err(cache))?;
    let staging = fsutil::temp_dir_in(cache).map_err(io_err(cache))?;
    let digest = write_layout(cx, built, staging.path(), tags).await?;

    let mut tar = TarWriter::new(std::io::BufWriter::new(Output::create(file)?));
    let root = staging.path();
    for name in ["oci-layout", "index.json"] {
        append_file(&mut tar, root, name, file)?;
    }
    tar.dir("blobs", 0).map_err(io_err(file))?;
    tar.dir("blobs/sha256", 0).map_err(io_err(file))?;
    let mut names: Vec<String> = fs::read_dir(root.join("blobs/sha256"))
        .map_err(io_err(root))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io_err(root))?;
    names.sort();
    for n in names {
        append_file(&mut tar, root, &format!("blobs/sha256/{n}"), file)?;
    }
    let out = tar
        .finish()
        .map_err(io_err(file))?
        .into_inner()
        .map_err(|e| PublishError::Io {
            path: file.to_path_buf(),
            source: e.into_error(),
        })?;
    out.commit()?;
    Ok(digest)
}

/// Errors name `out`, the archive: reading the staged layout is not what fails.
fn append_file<W: std::io::Write>(
    tar: &mut TarWriter<W>,
    root: &Path,
    name: &str,
    out: &Path,
) -> Result<(), PublishError> {
    let path = root.join(name);
    let mut f = fs::File::open(&path).map_err(io_err(&path))?;
    let size = f.metadata().map_err(io_err(&path))?.len();
    tar.file(name, size, 0, &[], &mut f).map_err(io_err(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intact_blobs_are_copied_and_damaged_cache_entries_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, out, user) = (
            dir.path().join("cache"),
            dir.path().join("out"),
            dir.path().join("user"),
        );
        for d in [&cache, &out, &user] {
            fs::create_dir_all(d).unwrap();
        }
        let digest = Digest::of(b"blob");
        let (src, dest) = (cache.join(digest.hex()), out.join(digest.hex()));

        fs::write(&src, b"blob").unwrap();
        copy_blob(&src, &dest, &digest, &cache).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"blob");
        fs::remove_file(&dest).unwrap();

        fs::write(&src, b"blOb").unwrap();
        let err = copy_blob(&src, &dest, &digest, &cache).unwrap_err();
        assert!(matches!(err, PublishError::Damaged { .. }), "{err}");
        assert!(!src.exists(), "evicted");
        assert!(!dest.exists(), "nothing lands in the layout");
        // Gone (another run evicted it): made again the same way.
        let err = copy_blob(&src, &dest, &digest, &cache).unwrap_err();
        assert!(matches!(err, PublishError::Damaged { .. }), "{err}");

        // A file of the user's (a base layout) is an error, and is left alone.
        let theirs = user.join(digest.hex());
        fs::write(&theirs, b"blOb").unwrap();
        let err = copy_blob(&theirs, &dest, &digest, &cache).unwrap_err();
        assert!(matches!(err, PublishError::BadBlob { .. }), "{err}");
        assert!(err.to_string().contains("restore it"), "{err}");
        assert!(theirs.exists());
    }
}
