//! `--debug` and `--cover` builds: the binaries carry the flags, and a coverage build run from
//! its image writes coverage files where the image's GOCOVERDIR says.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::kobuild::Kobuild;
use common::*;

fn build(kb: &Kobuild, layout: &Path, extra: &str) -> serde_json::Value {
    kb.ok(&[
        "./hello",
        "--base",
        "scratch",
        "--push=false",
        "--oci-layout-path",
        layout.to_str().unwrap(),
        extra,
    ]);
    let manifest: serde_json::Value = serde_json::from_slice(&layout_blob(
        layout,
        layout_top(layout)["digest"].as_str().unwrap(),
    ))
    .unwrap();
    serde_json::from_slice(&layout_blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap()
}

fn build_info(rootfs: &Path) -> String {
    let out = run_checked(
        Command::new("go")
            .args(["version", "-m"])
            .arg(rootfs.join("ko-app/hello")),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn debug_builds_keep_paths_and_turn_optimisations_off() {
    let kb = Kobuild::new();
    let layout = kb.dir().join("debug");
    let config = build(&kb, &layout, "--debug");
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "KO_DATA_PATH=/var/run/ko")
    );
    let rootfs = umoci_unpack(&layout, "latest", &kb.dir().join("bundle"));
    let info = build_info(&rootfs);
    assert!(info.contains("-gcflags=\"all=-N -l\""), "{info}");
    assert!(!info.contains("-trimpath=true"), "{info}");
}

#[test]
fn coverage_builds_write_coverage_files_from_the_image() {
    let kb = Kobuild::new();
    let layout = kb.dir().join("cover");
    let config = build(&kb, &layout, "--cover");
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"GOCOVERDIR=/tmp"), "{env:?}");
    let rootfs = umoci_unpack(&layout, "latest", &kb.dir().join("bundle"));
    assert!(build_info(&rootfs).contains("-cover=true"));
    // scratch has no /tmp; a real base would.
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    let pairs: Vec<(&str, &str)> = env.iter().filter_map(|e| e.split_once('=')).collect();
    let out = run_in_rootfs(&rootfs, &["/ko-app/hello"], &pairs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = fs::read_dir(rootfs.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("covmeta.")), "{files:?}");
    assert!(
        files.iter().any(|f| f.starts_with("covcounters.")),
        "{files:?}"
    );
}
