//! SIGINT and SIGTERM during a `go build`: kobuild exits 130/143 promptly, ends Go and
//! everything Go started, leaves no temporary file and tags nothing; as PID 1 too.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::kobuild::*;
use crate::common::*;

/// Generous: the handler needs well under a second; a loaded CI machine may be slow.
const EXIT_BOUND: Duration = Duration::from_secs(10);

struct Scene {
    reg: Registry,
    kb: Kobuild,
    app: tempfile::TempDir,
    base: String,
    /// Holds the `go` wrapper; its path marks every process the wrapper starts.
    go_dir: tempfile::TempDir,
    _base_dir: tempfile::TempDir,
}

fn scene() -> Scene {
    let reg = Registry::start(RegistryKind::Plain);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(&base_dir.path().join("base"), "v1", false, &["linux/amd64"]);
    let base = push_base(&reg, &layout, "v1", "base/sig");
    let go_dir = tempfile::tempdir().unwrap();
    let marker = go_dir.path().display().to_string();
    // `go build` hangs in a child of its own (as the compiler would), named by the marker
    // so it can be found from outside a PID namespace too.
    go_wrapper(
        &go_dir.path().join("go"),
        &format!(
            "if [ \"$1\" = build ]; then\n\
             sh -c 'sleep 60; true' '{marker}/child' &\n\
             echo $! >> '{marker}/pids'\n\
             echo $$ >> '{marker}/pids'\n\
             wait\n\
             fi\n"
        ),
    );
    let kb = Kobuild::new().env(
        "KO_GO_PATH",
        &go_dir.path().join("go").display().to_string(),
    );
    Scene {
        reg,
        kb,
        app: app_copy("hello"),
        base,
        go_dir,
        _base_dir: base_dir,
    }
}

impl Scene {
    fn command(&self) -> Command {
        self.command_with(&[])
    }

    fn command_with(&self, extra: &[&str]) -> Command {
        let repo = format!("{}/sig", self.reg.host());
        let args = [
            "--repo",
            &repo,
            "--base",
            &self.base,
            "--platform",
            "linux/amd64",
            ".",
        ];
        let mut cmd = self
            .kb
            .command(&self.app.path().join("hello"), &[&args[..], extra].concat());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Waits (boundedly) until the wrapper's `go build` and its child are running.
    fn wait_for_go_build(&self, child: &mut Child) {
        let pids = self.go_dir.path().join("pids");
        let deadline = Instant::now() + Duration::from_secs(120);
        while fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .count()
            < 2
        {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("kobuild ended ({status}) before go build started");
            }
            assert!(Instant::now() < deadline, "go build never started");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` to `pid` and returns the exit code of `waited` and how long it took.
    fn signal_and_wait(&self, pid: u32, sig: &str, waited: &mut Child) -> (Option<i32>, Duration) {
        let start = Instant::now();
        run_checked(Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]));
        loop {
            if let Some(status) = waited.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > EXIT_BOUND {
                let _ = waited.kill();
                let _ = waited.wait();
                panic!("still running {EXIT_BOUND:?} after SIG{sig}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What must hold after an interrupted run: Go and its children gone, no temporary
    /// file in the cache or the app, no tag in the registry.
    fn assert_clean(&self, stderr: &str) {
        // The group gets a grace period and a SIGKILL; exiting processes take a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let marker = self.go_dir.path().display().to_string();
        loop {
            let left = live_processes_naming(&marker);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "children left running: {left:?}\n{stderr}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        for root in [self.kb.dir(), self.app.path()] {
            let temps = temp_names(root);
            assert!(temps.is_empty(), "temporary files left: {temps:?}");
        }
        assert_eq!(
            self.reg.get_status("/v2/sig/hello/manifests/latest", false),
            404,
            "an interrupted run must tag nothing"
        );
    }
}

/// Pids of live (not zombie) processes whose command line contains `marker`.
fn live_processes_naming(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(format!("{name}: {}", String::from_utf8_lossy(&cmdline)));
        }
    }
    found
}

fn temp_names(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".kobuild-tmp-") {
            found.push(e.path().display().to_string());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temp_names(&e.path()));
        }
    }
    found
}

fn interrupted_during_go_build(sig: &str, code: i32) {
    let s = scene();
    let mut child = s.command().spawn().unwrap();
    s.wait_for_go_build(&mut child);
    let (exit, took) = s.signal_and_wait(child.id(), sig, &mut child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("SIG{sig}: exit {exit:?} after {took:?}");
    assert_eq!(exit, Some(code), "{stderr}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(stderr.contains(&format!("SIG{sig}")), "{stderr}");
    s.assert_clean(&stderr);
}

#[test]
fn sigterm_during_go_build_exits_143_and_ends_go() {
    interrupted_during_go_build("TERM", 143);
}

#[test]
fn sigint_during_go_build_exits_130_and_ends_go() {
    interrupted_during_go_build("INT", 130);
}

/// As a container's entrypoint: PID 1 has no default signal dispositions, so without a
/// handler SIGTERM would be ignored until the runtime's grace period ran out.
#[test]
fn sigterm_as_pid_1_exits_143() {
    if !is_root() {
        eprintln!("skipped: a PID namespace (unshare --pid) needs root");
        return;
    }
    let s = scene();
    let inner = s.command();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(inner.get_current_dir().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut unshare = cmd.spawn().unwrap();
    s.wait_for_go_build(&mut unshare);
    // kobuild is unshare's only child, PID 1 of the new namespace.
    let children =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let (exit, took) = s.signal_and_wait(pid, "TERM", &mut unshare);
    let out = unshare.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("SIGTERM as PID 1: exit {exit:?} after {took:?}");
    assert_eq!(exit, Some(143), "{stderr}");
    s.assert_clean(&stderr);
}

/// `--timeout 3` with a `go build` that never ends: the run stops soon after 3 s with one
/// line naming the limit, exit 1, and is left as clean as after a signal.
#[test]
fn the_run_timeout_stops_a_hung_go_build() {
    let s = scene();
    let start = Instant::now();
    let mut child = s.command_with(&["--timeout", "3"]).spawn().unwrap();
    s.wait_for_go_build(&mut child);
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--timeout 3: exit {:?} after {took:?}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(3) + EXIT_BOUND);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        ["error: --timeout: the run took over 3 s; stopped (allow more with --timeout SECONDS)"],
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    s.assert_clean(&stderr);
}
