//! `--debug` and `--cover` builds: the binaries carry the flags, and a coverage build run from
//! its image writes coverage files where the image's GOCOVERDIR says.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::kobuild::Kobuild;
use crate::common::*;

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

#[test]
fn a_local_delve_becomes_a_layer_and_the_entrypoint() {
    let kb = Kobuild::new();
    // A stand-in Delve that prints how it was started.
    let src = kb.dir().join("fake-dlv");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("go.mod"), "module example.com/dlv\n\ngo 1.22\n").unwrap();
    fs::write(
        src.join("main.go"),
        "package main\n\nimport (\"fmt\"\n\"os\"\n\"strings\")\n\nfunc main() { fmt.Println(strings.Join(os.Args, \" \")) }\n",
    )
    .unwrap();
    let dlv = kb.dir().join("dlv");
    run_checked(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&dlv)
            .arg(".")
            .current_dir(&src)
            .envs(kb.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CGO_ENABLED", "0"),
    );
    let layout = kb.dir().join("debug");
    kb.ok(&[
        "./hello",
        "--base",
        "scratch",
        "--push=false",
        "--oci-layout-path",
        layout.to_str().unwrap(),
        "--debug",
        "--dlv",
        dlv.to_str().unwrap(),
    ]);
    let manifest: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        layout_top(&layout)["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        3,
        "kodata, app, dlv"
    );
    let config: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let entrypoint: Vec<&str> = config["config"]["Entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        entrypoint,
        [
            "/ko-app/dlv",
            "exec",
            "--listen=:40000",
            "--headless",
            "--log",
            "--accept-multiclient",
            "--api-version=2",
            "--",
            "/ko-app/hello"
        ]
    );
    let rootfs = umoci_unpack(&layout, "latest", &kb.dir().join("bundle"));
    let out = run_in_rootfs(&rootfs, &entrypoint, &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        entrypoint.join(" ")
    );

    let err = kb.fails(
        &[
            "./hello",
            "--base",
            "scratch",
            "--dlv",
            dlv.to_str().unwrap(),
        ],
        2,
    );
    assert!(err.contains("--debug"), "{err}");
}
