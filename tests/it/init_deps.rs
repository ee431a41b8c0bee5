//! `kobuild init` writes a skaffold.yaml that `kobuild build` builds; `kobuild deps` lists
//! what each artifact depends on, with Skaffold's pattern rules.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::kobuild::Kobuild;
use crate::common::*;

fn kobuild(kb: &Kobuild, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kobuild"))
        .args(args)
        .envs(kb.env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn project() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    for f in ["go.mod", "cmd/api/main.go", "cmd/web/main.go"] {
        fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        fs::copy(fixtures_dir().join("skaffold").join(f), root.join(f)).unwrap();
    }
    fs::create_dir_all(root.join("k8s")).unwrap();
    fs::write(
        root.join("k8s/api.yaml"),
        "kind: Pod\nspec:\n  containers:\n  - image: ko://example.com/shop/cmd/api\n",
    )
    .unwrap();
    fs::write(root.join("k8s/other.yaml"), "kind: Pod\n").unwrap();
    (dir, root)
}

#[test]
fn init_then_build_then_deps() {
    let (_dir, root) = project();
    let kb = Kobuild::new();
    let out = kobuild(&kb, &root, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = fs::read_to_string(root.join("skaffold.yaml")).unwrap();
    assert!(
        yaml.contains("- image: ko://example.com/shop/cmd/api\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("- image: ko://example.com/shop/cmd/web\n"),
        "{yaml}"
    );
    assert!(yaml.contains("rawYaml:\n    - k8s/api.yaml\n"), "{yaml}");
    assert!(!yaml.contains("other.yaml"), "{yaml}");

    let again = kobuild(&kb, &root, &["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // The written file builds as it is.
    let layout = root.join("out");
    let out = kobuild(
        &kb,
        &root,
        &[
            "build",
            "--base",
            "scratch",
            "--push=false",
            "--oci-layout-path",
            layout.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let out = kobuild(&kb, &root, &["deps", "ko://example.com/shop/cmd/web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cmd/api/main.go\ncmd/web/main.go\ngo.mod\n"
    );
    let out = kobuild(&kb, &root, &["deps"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
}

#[test]
fn deps_errors_name_the_pattern_or_image() {
    let (_dir, root) = project();
    let kb = Kobuild::new();
    fs::write(
        root.join("skaffold.yaml"),
        "apiVersion: skaffold/v4beta14\nkind: Config\nbuild:\n  artifacts:\n  - image: ko://example.com/shop/cmd/api\n    ko:\n      dependencies:\n        paths: [\"**/*.rs\"]\n",
    )
    .unwrap();
    let out = kobuild(&kb, &root, &["deps"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"**/*.rs\" did not match any file"));
    let out = kobuild(&kb, &root, &["deps", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ko artifact named \"nope\""));
}
