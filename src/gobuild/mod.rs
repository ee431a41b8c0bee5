//! `go list` to resolve what to build, `go build` to build it.

mod build;
mod resolve;

pub use build::{Binary, BinaryKey, GoBuild, Link, build, is_archive};
pub use resolve::{Package, Target, resolve};

use std::path::PathBuf;
use std::sync::Arc;

/// Run a go command whose answer is not needed before the builds are done at the lowest
/// CPU priority: it uses what the compiler and linker leave idle instead of slowing them.
#[allow(
    unsafe_code,
    reason = "pre_exec is unsafe: the closure runs in the forked child"
)]
pub(crate) fn in_background(cmd: &mut tokio::process::Command) {
    // SAFETY: setpriority is async-signal-safe; a failure only leaves the default priority.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
}

/// Clone: one failed build is reported to every image waiting for that binary.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GoError {
    #[error("cannot run {go}: {source} (is Go installed and on PATH?)")]
    Spawn {
        go: String,
        source: Arc<std::io::Error>,
    },
    #[error("{target}: {message}")]
    Resolve { target: String, message: String },
    #[error("go build of {import_path} for {platform} failed:\n{output}")]
    Build {
        import_path: String,
        platform: String,
        output: String,
    },
    #[error("cannot prepare build output {path}: {source}")]
    Output {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
}

impl GoError {
    /// Resolution problems are the user's input; compile errors are build failures.
    pub fn is_config(&self) -> bool {
        matches!(self, GoError::Resolve { .. })
    }
}
