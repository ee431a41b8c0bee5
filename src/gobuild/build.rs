//! `go build` into a stable path per image and platform, so Go's own up-to-date check
//! skips relinking an unchanged package.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::{GoError, Package};

pub struct GoBuild<'a> {
    pub go: &'a str,
    pub package: &'a Package,
    pub platform: String,
    /// Applied over the inherited environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    pub flags: Vec<String>,
    pub ldflags: Vec<String>,
    pub output: PathBuf,
}

pub async fn build(b: &GoBuild<'_>) -> Result<PathBuf, GoError> {
    let out_err = |source| GoError::Output {
        path: b.output.clone(),
        source,
    };
    if let Some(parent) = b.output.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(out_err)?;
    }
    let mut cmd = Command::new(b.go);
    cmd.arg("build").args(&b.flags).arg("-trimpath");
    if !b.ldflags.is_empty() {
        cmd.arg(format!("-ldflags={}", b.ldflags.join(" ")));
    }
    cmd.arg("-o")
        .arg(&b.output)
        .arg(&b.package.import_path)
        .current_dir(&b.package.dir)
        .envs(b.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    tracing::debug!(import_path = %b.package.import_path, platform = %b.platform, "go build");
    let out = cmd.output().await.map_err(|source| GoError::Spawn {
        go: b.go.to_string(),
        source,
    })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        }
        return Err(GoError::Build {
            import_path: b.package.import_path.clone(),
            platform: b.platform.clone(),
            output,
        });
    }
    Ok(b.output.clone())
}

/// `<cache>/bin/<import path>/<os>-<arch>[-<variant>]/<app>`.
pub fn output_path(
    cache: &Path,
    package: &Package,
    platform: &crate::platform::Platform,
) -> PathBuf {
    let plat = platform.to_string().replace(['/', ':'], "-");
    cache
        .join("bin")
        .join(&package.import_path)
        .join(plat)
        .join(package.app_name())
}
