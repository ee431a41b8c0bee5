//! SIGINT, SIGTERM and `--timeout`: stop starting work, end every child's process group,
//! remove the temporary files still open, and exit 130, 143 or 1.
//!
//! Children run in process groups of their own (a terminal's Ctrl-C then reaches only
//! kobuild), so `go` and the compilers it starts are ended as a unit. The handler is a real
//! one, not the default disposition, so it works as PID 1 too, where the kernel drops
//! signals that have no handler. Creating a temporary file or a child and shutting down take
//! one lock: nothing is started after the cleanup has begun.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

struct State {
    stopping: bool,
    /// Process group ids (= the leader's pid) of children not yet reaped.
    groups: BTreeSet<i32>,
    /// Temporary files and directories made. One renamed into place or dropped is gone
    /// from its name, so whatever still exists at shutdown is unfinished.
    temps: BTreeSet<PathBuf>,
}

static STATE: Mutex<State> = Mutex::new(State {
    stopping: false,
    groups: BTreeSet::new(),
    temps: BTreeSet::new(),
});

/// How long children get to clean up after SIGTERM (Go removes its work directory) before
/// they are killed.
const GRACE: Duration = Duration::from_millis(300);

fn state() -> MutexGuard<'static, State> {
    // A panic elsewhere while holding the lock leaves the sets intact.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "kobuild is shutting down")
}

/// Handles SIGINT and SIGTERM on a thread of its own from now on, so a busy runtime cannot
/// delay the exit.
pub fn install() -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered before returning: a signal from here on is handled, never fatal.
    let (mut int, mut term) = {
        let _ctx = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let (name, code) = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => ("SIGINT", 130),
                    _ = term.recv() => ("SIGTERM", 143),
                }
            });
            shutdown(name, &format!("interrupted by {name}"), code)
        })?;
    Ok(())
}

/// `--timeout`: the whole run stops after `limit` as it does on a signal, with exit 1. Tags
/// are pushed after the manifests they name, so a push cut short tags no incomplete image.
pub fn limit(limit: Duration) -> io::Result<()> {
    std::thread::Builder::new()
        .name("timeout".into())
        .spawn(move || {
            std::thread::sleep(limit);
            let secs = limit.as_secs();
            shutdown(
                "--timeout",
                &format!("--timeout: the run took over {secs} s; stopped (allow more with --timeout SECONDS)"),
                1,
            )
        })?;
    Ok(())
}

/// `why` names the cause in the log; `message` is the error line.
#[allow(unsafe_code, reason = "killpg has no safe wrapper in std")]
fn shutdown(why: &str, message: &str, code: i32) -> ! {
    // Held until exit: no new child or temporary file after this point.
    let mut s = state();
    s.stopping = true;
    tracing::error!(
        "{why}: stopping, ending {} child process group(s)",
        s.groups.len()
    );
    if !s.groups.is_empty() {
        for &g in &s.groups {
            // SAFETY: killpg only sends a signal; a group already gone gives ESRCH.
            unsafe { libc::killpg(g, libc::SIGTERM) };
        }
        std::thread::sleep(GRACE);
        for &g in &s.groups {
            // SAFETY: as above.
            unsafe { libc::killpg(g, libc::SIGKILL) };
        }
    }
    for p in &s.temps {
        let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
    }
    eprintln!("error: {message}");
    std::process::exit(code)
}

/// Creates a temporary file or directory with `make` and records its name for removal on
/// shutdown; refused once shutdown has begun.
pub(crate) fn temp<T>(
    make: impl FnOnce() -> io::Result<T>,
    path: impl Fn(&T) -> &Path,
) -> io::Result<T> {
    let mut s = state();
    if s.stopping {
        return Err(interrupted());
    }
    let t = make()?;
    s.temps.insert(path(&t).to_path_buf());
    Ok(t)
}

/// Ends a child's process group if it is dropped before the child was reaped (the run
/// failed elsewhere first, or the future was cancelled).
struct Group {
    pid: i32,
    reaped: bool,
}

impl Drop for Group {
    #[allow(unsafe_code, reason = "killpg has no safe wrapper in std")]
    fn drop(&mut self) {
        state().groups.remove(&self.pid);
        if !self.reaped {
            // SAFETY: killpg only sends a signal; the unreaped leader keeps the id ours.
            unsafe { libc::killpg(self.pid, libc::SIGKILL) };
        }
    }
}

/// Runs `cmd` as `Command::output` does (stdout and stderr captured), in a process group of
/// its own that shutdown ends.
pub async fn output(cmd: &mut tokio::process::Command) -> io::Result<Output> {
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let (child, mut group) = {
        let mut s = state();
        if s.stopping {
            return Err(interrupted());
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| io::Error::other("child has no pid"))?;
        s.groups.insert(pid);
        (child, Group { pid, reaped: false })
    };
    let out = child.wait_with_output().await?;
    group.reaped = true;
    Ok(out)
}
