//! skaffold.yaml and .ko.yaml, end to end: two ko artifacts (a docker one skipped), default-repo
//! naming, the envTemplate tagger, templated ldflags and labels, .ko.yaml defaults, profiles.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::kobuild::*;
use crate::common::*;
use serde_json::Value;
use tempfile::TempDir;

/// The fixture project with REGISTRY replaced by `host`, and base images pushed there.
fn project(reg: &Registry) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    copy_dir(&fixtures_dir().join("skaffold"), &root);
    for file in ["skaffold.yaml", ".ko.yaml"] {
        let text = fs::read_to_string(root.join(file))
            .unwrap()
            .replace("REGISTRY", &reg.host());
        fs::write(root.join(file), text).unwrap();
    }
    let layout = make_base(&dir.path().join("base"), "v1", false, &["linux/amd64"]);
    push_base(reg, &layout, "v1", "base/static");
    let docker = make_base(
        &dir.path().join("docker-base"),
        "v1",
        true,
        &["linux/amd64"],
    );
    push_base(reg, &docker, "v1", "base/alt");
    (dir, root)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn run_binary(reference: &str, reg: &Registry, app: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("oci");
    copy_to_oci_dir(&pinned(reference), reg, &oci, "x", None);
    let rootfs = umoci_unpack(&oci, "x", &work.path().join("bundle"));
    let out = run_in_rootfs(&rootfs, &[&format!("/ko-app/{app}")], &[]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kobuild() -> Kobuild {
    Kobuild::new()
        .env("VERSION", "1.2.3")
        .env("GITHUB_SHA", "abc123")
}

#[test]
fn builds_the_ko_artifacts_of_skaffold_yaml() {
    let reg = Registry::start(RegistryKind::Plain);
    let (_dir, root) = project(&reg);
    let kb = kobuild();
    let repo = format!("{}/shop", reg.host());
    let artifacts = root.join("out/artifacts.json");
    let out = kb.run_in(
        &root,
        &["-d", &repo, "--file-output", artifacts.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping legacy: kobuild builds ko artifacts, not docker"),
        "{stderr}"
    );
    let refs: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(refs.len(), 2, "{refs:?}");
    // Skaffold's default-repo rule flattens the import path; the envTemplate tagger gives 1.2.3.
    assert!(
        refs[0].starts_with(&format!("{repo}/example_com_shop_cmd_api:1.2.3@sha256:")),
        "{}",
        refs[0]
    );
    assert!(
        refs[1].starts_with(&format!("{repo}/web:1.2.3@sha256:")),
        "{}",
        refs[1]
    );

    let written: Value = serde_json::from_slice(&fs::read(&artifacts).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"builds": [
            {"imageName": "ko://example.com/shop/cmd/api", "tag": refs[0]},
            {"imageName": "web", "tag": refs[1]},
        ]})
    );

    // skaffold.yaml's ldflags template saw VERSION; web got .ko.yaml's defaultLdflags.
    assert_eq!(run_binary(refs[0], &reg, "api"), "api 1.2.3");
    assert_eq!(run_binary(refs[1], &reg, "web"), "web 1.2.3-ko");
    let config = skopeo_inspect_config(&pinned(refs[0]), &reg);
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        "abc123"
    );
    let manifest: Value =
        serde_json::from_slice(&skopeo_inspect_raw(&pinned(refs[1]), &reg)).unwrap();
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        format!("{}/base/static:v1", reg.host())
    );

    // A profile patches fromImage.
    let out = kb.run_in(&root, &["-d", &repo, "-p", "alt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let manifest: Value = serde_json::from_slice(&skopeo_inspect_raw(&pinned(&api), &reg)).unwrap();
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        format!("{}/base/alt:v1", reg.host())
    );
    assert_eq!(
        manifest["mediaType"], DOCKER_MANIFEST,
        "the alt base is a Docker image"
    );
}

#[test]
fn output_templates_and_config_errors() {
    let reg = Registry::start(RegistryKind::Plain);
    let (_dir, root) = project(&reg);
    let kb = kobuild();
    let repo = format!("{}/shop", reg.host());
    let out = kb.run_in(
        &root,
        &[
            "-d",
            &repo,
            "-q",
            "-o",
            "{{range .Builds}}{{.ImageName}} {{end}}",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ko://example.com/shop/cmd/api web "
    );

    let err = kb.fails_in(&root, &["-d", &repo, "-p", "nope"], 2);
    assert!(err.contains("nope") && err.contains("alt"), "{err}");
    // A ko:// image without a default repo cannot be pushed, as in Skaffold.
    let err = kb.fails_in(&root, &[], 2);
    assert!(err.contains("default repo must be set"), "{err}");
    let text = fs::read_to_string(root.join("skaffold.yaml"))
        .unwrap()
        .replace("ldflags:", "ldflagz:");
    fs::write(root.join("skaffold.yaml"), text).unwrap();
    let err = kb.fails_in(&root, &["-d", &repo], 2);
    assert!(
        err.contains("skaffold.yaml:14:9: unknown field \"ldflagz\"") && err.contains("ldflagz"),
        "{err}"
    );
}

#[test]
fn ko_yaml_builds_apply_to_command_line_targets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    copy_dir(&fixtures_dir().join("skaffold"), &root);
    fs::remove_file(root.join("skaffold.yaml")).unwrap();
    fs::write(
        root.join(".ko.yaml"),
        "defaultBaseImage: scratch\ndefaultLdflags: [\"-X main.version=default\"]\nbuilds:\n  - id: api\n    main: ./cmd/api\n    ldflags: [\"-X main.version={{.Env.VERSION}}-build\"]\n",
    )
    .unwrap();
    let kb = kobuild();
    let layout = root.join("out");
    let refs = kb.ok_in(
        &root,
        &[
            "./cmd/api",
            "./cmd/web",
            "--push=false",
            "--oci-layout-path",
            layout.to_str().unwrap(),
        ],
    );
    assert_eq!(refs.len(), 2);
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        1,
        "both were tagged latest: the last wins"
    );
    for (app, want) in [("api", "api 1.2.3-build"), ("web", "web default")] {
        let out = root.join(format!("out-{app}"));
        kb.ok_in(
            &root,
            &[
                &format!("./cmd/{app}"),
                "--push=false",
                "--oci-layout-path",
                out.to_str().unwrap(),
            ],
        );
        let rootfs = umoci_unpack(&out, "latest", &root.join(format!("bundle-{app}")));
        let run = run_in_rootfs(&rootfs, &[&format!("/ko-app/{app}")], &[]);
        assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), want);
    }
}
