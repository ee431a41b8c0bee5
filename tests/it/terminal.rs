//! The live status line: drawn on a terminal (here a pseudo-terminal from `script`), never
//! in a redirected log, and cleared before the refs reach stdout.

use std::fs;
use std::process::Command;

use crate::common::kobuild::*;
use crate::common::*;

#[test]
fn a_terminal_gets_a_status_line_and_a_redirected_log_does_not() {
    let dir = tempfile::tempdir().unwrap();
    // A go that takes a while, so the line is drawn a few times during `go build`.
    let go = dir.path().join("slow-go");
    go_wrapper(&go, "[ \"$1\" = build ] && sleep 1\n");
    let kb = Kobuild::new()
        .env("KO_GO_PATH", go.to_str().unwrap())
        .env("TERM", "xterm");
    let layout = dir.path().join("layout");
    let args = [
        "build",
        ".",
        "--base",
        "scratch",
        "--push=false",
        "--sbom=none",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ];
    // `script` runs the command on a pseudo-terminal and copies what it wrote to stdout.
    let mut cmd = kb.subcommand(&app_dir("hello"), "build", &[]);
    let line = std::iter::once(cmd.get_program().to_str().unwrap().to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = run_checked(
        Command::new("script")
            .args(["-qefc", &line, "/dev/null"])
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env_remove("GITHUB_ACTIONS")
            .current_dir(app_dir("hello")),
    );
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.contains("\r\x1b[Kgo build hello linux/amd64"),
        "no status line on the terminal:\n{seen:?}"
    );
    // Cleared before the ref is printed: on the screen, the ref is all of its line.
    let line = seen
        .lines()
        .find(|l| l.contains("oci-layout:"))
        .expect("the ref");
    let shown = line.rsplit("\r\x1b[K").next().unwrap();
    assert!(shown.starts_with("oci-layout:"), "{line:?}");

    // The same build with stderr to a file: plain lines only.
    fs::remove_dir_all(&layout).unwrap();
    cmd = kb.subcommand(&app_dir("hello"), "build", &args[1..]);
    let out = run_checked(cmd.env_remove("GITHUB_ACTIONS"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains('\r') && !log.contains("\x1b[K"), "{log:?}");
}
