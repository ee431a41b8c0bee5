//! Real Skaffold as the oracle: values Skaffold computes from a skaffold.yaml (the inputDigest
//! tag) must equal kobuild's for the same project.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::kobuild::*;
use crate::common::*;
use serde_json::Value;

/// `imageName` → the reference up to any `@digest`, from an artifacts.json document.
fn tags(artifacts: &Value) -> Vec<(String, String)> {
    artifacts["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let tag = b["tag"].as_str().unwrap();
            let tag = tag.split('@').next().unwrap();
            (
                b["imageName"].as_str().unwrap().to_string(),
                tag.to_string(),
            )
        })
        .collect()
}

/// The tags `skaffold build --dry-run` computes (no build, no Docker).
fn skaffold_tags(root: &Path, repo: &str, cache: &Path) -> Vec<(String, String)> {
    let skaffold = std::env::var("KOBUILD_SKAFFOLD").expect("KOBUILD_SKAFFOLD (scripts/peers)");
    let out = run_checked(
        Command::new(skaffold)
            .args(["build", "-q", "--dry-run", "--default-repo", repo])
            .arg("--cache-file")
            .arg(cache)
            .current_dir(root),
    );
    tags(&serde_json::from_slice(&out.stdout).unwrap())
}

fn kobuild_tags(root: &Path, repo: &str) -> Vec<(String, String)> {
    let out_file = root.parent().unwrap().join("artifacts.json");
    let out = Kobuild::new().run_in(
        root,
        &["-d", repo, "--file-output", out_file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tags(&serde_json::from_slice(&fs::read(&out_file).unwrap()).unwrap())
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn input_digest_tags_equal_skaffold() {
    let reg = Registry::start(RegistryKind::Plain);
    let dir = tempfile::tempdir().unwrap();
    let layout = make_base(&dir.path().join("base"), "v1", false, &["linux/amd64"]);
    push_base(&reg, &layout, "v1", "base/static");
    let root = dir.path().join("proj");
    let app = app_dir("hello");
    for f in ["go.mod", "main.go"] {
        let text = fs::read_to_string(app.join(f)).unwrap();
        write(&root.join(f), &text);
        write(&root.join("sub/inner").join(f), &text);
    }
    write(&root.join("kodata/a.txt"), "a\n");
    write(&root.join("kodata/b.txt"), "b\n");
    write(&root.join(".hidden/x.go"), "package hidden\n");
    // `**` sees through a symlinked directory; a walk of a matched directory does not.
    write(&root.join("realpkg/r.go"), "package realpkg\n");
    std::os::unix::fs::symlink("realpkg", root.join("linkpkg")).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("kodata/a.link")).unwrap();
    write(
        &root.join("skaffold.yaml"),
        &format!(
            "apiVersion: skaffold/v4beta13
kind: Config
build:
  tagPolicy:
    inputDigest: {{}}
  artifacts:
  - image: plain
    ko:
      fromImage: {base}
  - image: withdata
    ko:
      fromImage: {base}
      dependencies:
        paths: [\"**/*.go\", kodata, go.mod]
        ignore: [\"kodata/b*\", sub]
  - image: nested
    context: sub
    ko:
      fromImage: {base}
      dir: inner
  - image: nomatch
    ko:
      fromImage: {base}
      dependencies:
        paths: [\"missing/**\"]
",
            base = format!("{}/base/static:v1", reg.host())
        ),
    );
    let repo = format!("{}/p", reg.host());
    let cache = dir.path().join("skaffold-cache");

    let want = skaffold_tags(&root, &repo, &cache);
    assert_eq!(want.len(), 4, "{want:?}");
    assert!(
        want[0].1.len() == repo.len() + "/plain:".len() + 64,
        "{want:?}"
    );
    assert!(want[3].1.ends_with("/nomatch:latest"), "{want:?}");
    assert_eq!(kobuild_tags(&root, &repo), want);

    // A kodata edit changes the tag of the artifact that lists kodata, and only its tag.
    write(&root.join("kodata/a.txt"), "a2\n");
    let edited = skaffold_tags(&root, &repo, &cache);
    assert_ne!(edited[1], want[1]);
    assert_eq!(edited[0], want[0]);
    assert_eq!(kobuild_tags(&root, &repo), edited);
}

/// Files in older schemas with the ko builder build as Skaffold upgrades them: a
/// `skaffold/v2beta27` `ko.platforms` becomes the artifact's platforms, and `skaffold/v3`
/// reads as it is. Skaffold itself accepts both (its dry-run gives the same tags).
#[test]
fn older_schema_versions_build_like_skaffold() {
    let reg = Registry::start(RegistryKind::Plain);
    let dir = tempfile::tempdir().unwrap();
    let layout = make_base(
        &dir.path().join("base"),
        "v1",
        false,
        &["linux/amd64", "linux/arm64"],
    );
    push_base(&reg, &layout, "v1", "base/static");
    let base = format!("{}/base/static:v1", reg.host());
    let app = app_dir("hello");
    let repo = format!("{}/p", reg.host());
    for (version, extra) in [
        ("skaffold/v2beta27", "\n      platforms: [linux/arm64]"),
        ("skaffold/v3", ""),
    ] {
        let root = dir.path().join(version.replace('/', "-")).join("proj");
        for f in ["go.mod", "main.go"] {
            write(&root.join(f), &fs::read_to_string(app.join(f)).unwrap());
        }
        write(
            &root.join("skaffold.yaml"),
            &format!(
                "apiVersion: {version}
kind: Config
build:
  tagPolicy:
    inputDigest: {{}}
  artifacts:
  - image: app
    ko:
      fromImage: {base}{extra}
"
            ),
        );
        let want = skaffold_tags(&root, &repo, &dir.path().join("cache"));
        let got = kobuild_tags(&root, &repo);
        assert_eq!(got, want, "{version}");
        if !extra.is_empty() {
            let written: Value = serde_json::from_slice(
                &fs::read(root.parent().unwrap().join("artifacts.json")).unwrap(),
            )
            .unwrap();
            let reference = written["builds"][0]["tag"].as_str().unwrap();
            let raw: Value =
                serde_json::from_slice(&skopeo_inspect_raw(&pinned(reference), &reg)).unwrap();
            let platforms = if raw["manifests"].is_array() {
                index_platforms(&raw)
            } else {
                let config = skopeo_inspect_config(&pinned(reference), &reg);
                vec![format!(
                    "{}/{}",
                    config["os"].as_str().unwrap(),
                    config["architecture"].as_str().unwrap()
                )]
            };
            assert_eq!(platforms, ["linux/arm64"], "{version}");
        }
    }
}
