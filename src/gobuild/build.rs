//! `go build` into a stable path per image and platform, so Go's own up-to-date check
//! skips relinking an unchanged package.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::{GoError, Target};
use crate::digest::Digest;

/// What decides a binary's bytes: binaries are memoized by it, and its output path is
/// derived from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinaryKey {
    pub target: Target,
    /// Applied over the inherited environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    pub flags: Vec<String>,
    pub ldflags: Vec<String>,
}

pub struct GoBuild<'a> {
    pub go: &'a str,
    pub key: &'a BinaryKey,
    pub platform: String,
    /// ko's `-trimpath`; off for debug builds, so debuggers find the sources.
    pub trimpath: bool,
    pub output: PathBuf,
}

/// A binary at its stable path, and what this run's `go build` did to it.
#[derive(Clone)]
pub struct Binary {
    pub path: PathBuf,
    pub link: Link,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Up to date: its layer is most likely cached.
    Kept,
    /// Linked where there was none (a new cache): the layer may well be in the registry
    /// already, from a build of the same source elsewhere.
    New,
    /// Linked over an older binary (the source changed): the layer is new, so it is
    /// uploaded while it is compressed.
    Replaced,
}

/// `go build` into `b.output`, and what that did to the binary there.
pub async fn build(b: &GoBuild<'_>) -> Result<Binary, GoError> {
    let out_err = |source| GoError::Output {
        path: b.output.clone(),
        source: std::sync::Arc::new(source),
    };
    if let Some(parent) = b.output.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(out_err)?;
    }
    let before = link_stamp(&b.output);
    let BinaryKey {
        target,
        env,
        flags,
        ldflags,
    } = b.key;
    let mut cmd = Command::new(b.go);
    cmd.arg("build").args(flags);
    if b.trimpath {
        cmd.arg("-trimpath");
    }
    if !ldflags.is_empty() {
        cmd.arg(format!("-ldflags={}", ldflags.join(" ")));
    }
    cmd.arg("-o")
        .arg(&b.output)
        .arg(&target.pattern)
        .current_dir(&target.dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    tracing::debug!(target = %target.name, platform = %b.platform, "go build");
    let _shown = crate::progress::task(
        || {
            let app = b.output.file_name().unwrap_or_default().to_string_lossy();
            format!("go build {app} {}", b.platform)
        },
        None,
    );
    // If the run fails elsewhere first, Go must not keep building behind our back.
    let out = crate::interrupt::output(&mut cmd)
        .await
        .map_err(|source| GoError::Spawn {
            go: b.go.to_string(),
            source: source.into(),
        })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        }
        return Err(GoError::Build {
            import_path: target.name.clone(),
            platform: b.platform.clone(),
            output,
        });
    }
    let link = match before {
        None => Link::New,
        Some(_) if link_stamp(&b.output) == before => Link::Kept,
        Some(_) => Link::Replaced,
    };
    Ok(Binary {
        path: b.output.clone(),
        link,
    })
}

/// Whether `go build -o` wrote a package archive (a library) instead of a program.
pub fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"!<arch>\n")
}

/// What tells a relinked binary from a kept one: its size and first 64 KiB, where Go's
/// linker puts the build ID (a hash of the inputs). Not the mtime: Go touches an
/// up-to-date output. A miss here only costs an optimization, never a wrong layer.
fn link_stamp(path: &Path) -> Option<(u64, Vec<u8>)> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut head = Vec::with_capacity(64 << 10);
    file.take(64 << 10).read_to_end(&mut head).ok()?;
    Some((len, head))
}

impl BinaryKey {
    /// `<cache>/bin/<id>-<name>/<GOOS>-<GOARCH>[-<GOARM|GOAMD64>]/<name>`: one stable path per
    /// target and build settings (id = hash of directory, pattern, environment and flags) and
    /// platform, so an unchanged package is not relinked, and `linux/arm64` and
    /// `linux/arm64/v8` share a binary.
    pub fn output_path(&self, cache: &Path) -> PathBuf {
        let BinaryKey {
            target,
            env,
            flags,
            ldflags,
        } = self;
        let get = |key: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let mut platform = format!(
            "{}-{}",
            get("GOOS").unwrap_or("unknown"),
            get("GOARCH").unwrap_or("unknown")
        );
        if let Some(v) = get("GOARM").or_else(|| get("GOAMD64")) {
            platform = format!("{platform}-{v}");
        }
        let settings: Vec<String> = env
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "GOOS" | "GOARCH" | "GOARM" | "GOAMD64"))
            .map(|(k, v)| format!("{k}={v}"))
            .chain(flags.iter().cloned())
            .chain(ldflags.iter().map(|l| format!("ldflags:{l}")))
            .collect();
        let id = Digest::of(
            format!(
                "{}\0{}\0{}",
                target.dir.display(),
                target.pattern,
                settings.join("\0")
            )
            .as_bytes(),
        );
        let name = match target.pattern.as_str() {
            "." => target
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            p => p.rsplit('/').next().map(str::to_string),
        }
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "app".to_string());
        cache
            .join("bin")
            .join(format!("{}-{name}", &id.hex()[..16]))
            .join(platform)
            .join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_is_told_from_a_program_by_its_magic() {
        let tmp = tempfile::tempdir().unwrap();
        let (archive, program) = (tmp.path().join("lib.a"), tmp.path().join("app"));
        std::fs::write(&archive, b"!<arch>\n__.PKGDEF").unwrap();
        std::fs::write(&program, b"\x7fELF\x02\x01\x01\0").unwrap();
        assert!(is_archive(&archive));
        assert!(!is_archive(&program));
        assert!(!is_archive(&tmp.path().join("missing")));
    }

    #[test]
    fn a_stamp_changes_with_the_bytes_not_the_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app");
        assert_eq!(link_stamp(&path), None);
        std::fs::write(&path, b"build id 1").unwrap();
        let first = link_stamp(&path);
        std::fs::write(&path, b"build id 1").unwrap();
        assert_eq!(link_stamp(&path), first, "rewritten with the same bytes");
        std::fs::write(&path, b"build id 2").unwrap();
        assert_ne!(link_stamp(&path), first);
    }
}
