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

pub async fn build(b: &GoBuild<'_>) -> Result<PathBuf, GoError> {
    let out_err = |source| GoError::Output {
        path: b.output.clone(),
        source: std::sync::Arc::new(source),
    };
    if let Some(parent) = b.output.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(out_err)?;
    }
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
    Ok(b.output.clone())
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
