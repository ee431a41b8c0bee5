//! Proves the shared test harness (tests/common) works: each registry kind
//! starts and takes pushes, the base images are deterministic and well
//! formed, the proxy records requests, and the Go fixtures build and run
//! in an unpacked image under chroot and runc.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Name and content of each entry of a gzip'd tar layer.
fn layer_entries(tgz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn gunzip(tgz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(tgz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn make_base_is_deterministic_and_well_formed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_base_with_attestations(&tmp.path().join("a"), "1", &ALL_PLATFORMS);
    let b = make_base_with_attestations(&tmp.path().join("b"), "1", &ALL_PLATFORMS);
    assert_eq!(tree(&a), tree(&b), "two runs must write identical layouts");
    let d1 = make_base(&tmp.path().join("d1"), "1", true, &ALL_PLATFORMS);
    let d2 = make_base(&tmp.path().join("d2"), "1", true, &ALL_PLATFORMS);
    assert_eq!(
        tree(&d1),
        tree(&d2),
        "two runs must write identical layouts"
    );

    // OCI index: four images, then one attestation per image.
    let top = layout_top(&a);
    assert_eq!(top["mediaType"], OCI_INDEX);
    assert_eq!(top["annotations"]["org.opencontainers.image.ref.name"], "1");
    let index = json(&layout_blob(&a, top["digest"].as_str().unwrap()));
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut expected: Vec<String> = ALL_PLATFORMS.iter().map(|p| p.to_string()).collect();
    expected.extend(std::iter::repeat_n("unknown/unknown".to_string(), 4));
    assert_eq!(index_platforms(&index), expected);
    let entries = index["manifests"].as_array().unwrap();
    for (image, attestation) in entries[..4].iter().zip(&entries[4..]) {
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
    }

    // The arm/v7 image: config fields, a layer whose diff_id matches.
    let manifest = json(&layout_blob(&a, entries[2]["digest"].as_str().unwrap()));
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], OCI_LAYER);
    let config = json(&layout_blob(
        &a,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["architecture"], "arm");
    assert_eq!(config["variant"], "v7");
    assert_eq!(config["config"]["User"], "65532");
    assert_eq!(config["config"]["Env"][1], "BASE=1");
    assert_eq!(config["config"]["Labels"]["base.label"], "yes");
    assert_eq!(config["created"], "2024-01-02T03:04:05Z");
    let tgz = layout_blob(&a, manifest["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        sha256_digest(&gunzip(&tgz))
    );
    let files = layer_entries(&tgz);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/base-release",
            "etc/passwd",
            "home/",
            "home/nonroot/"
        ]
    );
    assert_eq!(files[1].1, b"kobuild-test-base linux/arm/v7\n");

    // Docker manifest list with Docker media types throughout.
    let top = layout_top(&d1);
    assert_eq!(top["mediaType"], DOCKER_LIST);
    let list = json(&layout_blob(&d1, top["digest"].as_str().unwrap()));
    assert_eq!(list["mediaType"], DOCKER_LIST);
    assert_eq!(index_platforms(&list), ALL_PLATFORMS);
    let manifest = json(&layout_blob(
        &d1,
        list["manifests"][0]["digest"].as_str().unwrap(),
    ));
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], DOCKER_LAYER);
}

#[test]
fn plain_registry_takes_single_platform_oci_base() {
    let reg = Registry::start(RegistryKind::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let layout = make_base(&tmp.path().join("base"), "v1", false, &["linux/amd64"]);
    let reference = push_base(&reg, &layout, "v1", "base/oci");
    assert_eq!(reference, format!("{}/base/oci:v1", reg.host()));

    let raw = skopeo_inspect_raw(&reference, &reg);
    let manifest = json(&raw);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(
        sha256_digest(&raw),
        layout_top(&layout)["digest"],
        "digest preserved"
    );
    let config = skopeo_inspect_config(&reference, &reg);
    assert_eq!(config["config"]["WorkingDir"], "/home/nonroot");
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh");
    let stored = reg.blob_digests();
    for blob in [
        &manifest["config"]["digest"],
        &manifest["layers"][0]["digest"],
    ] {
        assert!(
            stored.contains(blob.as_str().unwrap()),
            "{blob} not in {stored:?}"
        );
    }

    let oci = tmp.path().join("pulled/oci");
    copy_to_oci_dir(&reference, &reg, &oci, "x", None);
    let rootfs = umoci_unpack(&oci, "x", &tmp.path().join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/base-release")).unwrap(),
        "kobuild-test-base linux/amd64\n"
    );
    assert!(
        fs::read_to_string(rootfs.join("etc/passwd"))
            .unwrap()
            .contains("nonroot:x:65532:")
    );
}

#[test]
fn auth_registry_takes_single_platform_docker_base() {
    let reg = Registry::start(RegistryKind::Auth);
    assert_eq!(reg.get_status("/v2/", false), 401);
    assert_eq!(reg.get_status("/v2/", true), 200);
    let tmp = tempfile::tempdir().unwrap();
    let layout = make_base(&tmp.path().join("base"), "v1", true, &["linux/amd64"]);
    let reference = push_base(&reg, &layout, "v1", "base/docker");

    let raw = skopeo_inspect_raw(&reference, &reg);
    let manifest = json(&raw);
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(
        sha256_digest(&raw),
        layout_top(&layout)["digest"],
        "digest preserved"
    );
    assert_eq!(
        skopeo_inspect_config(&reference, &reg)["config"]["Env"][1],
        "BASE=1"
    );
    let path = format!(
        "/v2/base/docker/manifests/{}",
        layout_top(&layout)["digest"].as_str().unwrap()
    );
    assert_eq!(
        reg.get_status(&path, false),
        401,
        "anonymous reads are refused"
    );

    // A Docker config.json, as `docker login` writes it, carries the credentials.
    let authfile = reg.write_docker_config(&tmp.path().join("docker"));
    let docker_ref = format!("docker://{reference}");
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        &docker_ref,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, raw);
}

#[test]
fn tls_registry_takes_oci_index_with_attestations() {
    let reg = Registry::start(RegistryKind::Tls);
    assert!(reg.url().starts_with("https://"));
    assert!(
        fs::read_to_string(reg.ca_file())
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let tmp = tempfile::tempdir().unwrap();
    let layout = make_base_with_attestations(&tmp.path().join("base"), "v1", &ALL_PLATFORMS);
    let reference = push_base(&reg, &layout, "v1", "base/multi");

    let raw = skopeo_inspect_raw(&reference, &reg);
    let index = json(&raw);
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(index_platforms(&index).len(), 8);
    assert_eq!(
        sha256_digest(&raw),
        layout_top(&layout)["digest"],
        "digest preserved"
    );

    // The CA is what makes the connection trusted.
    let creds = format!("{}:{}", reg.username(), reg.password());
    let untrusted = skopeo(&[
        "inspect",
        "--raw",
        "--creds",
        &creds,
        &format!("docker://{reference}"),
    ]);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        stderr.contains("x509") || stderr.contains("certificate"),
        "{stderr}"
    );

    let oci = tmp.path().join("pulled/oci");
    copy_to_oci_dir(&reference, &reg, &oci, "armv7", Some("linux/arm/v7"));
    let rootfs = umoci_unpack(&oci, "armv7", &tmp.path().join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/base-release")).unwrap(),
        "kobuild-test-base linux/arm/v7\n"
    );

    // The whole index pulled back into a layout keeps its digest.
    let all = tmp.path().join("pulled/all");
    skopeo_copy(
        &format!("docker://{reference}"),
        &format!("oci:{}:all", all.display()),
        &reg,
    );
    assert_eq!(layout_top(&all)["digest"], layout_top(&layout)["digest"]);
}

#[test]
fn proxy_records_pushes_of_a_docker_list() {
    let reg = Registry::start(RegistryKind::Auth);
    let proxy = Proxy::start(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let layout = make_base(
        &tmp.path().join("base"),
        "v1",
        true,
        &["linux/amd64", "linux/arm64"],
    );
    let reference = push_base(&proxy, &layout, "v1", "base/list");
    let requests = proxy.requests();
    // Two layers and two configs, then two manifests by digest and the list by tag.
    assert_eq!(proxy.upload_starts(), 4, "{requests:#?}");
    let manifest_puts: Vec<&String> = requests
        .iter()
        .filter(|(m, p)| m == "PUT" && p.contains("/manifests/"))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(manifest_puts.len(), 3, "{requests:#?}");
    assert_eq!(manifest_puts[2], "/v2/base/list/manifests/v1");
    let raw = skopeo_inspect_raw(&reference, &reg);
    assert_eq!(json(&raw)["mediaType"], DOCKER_LIST);
    assert_eq!(sha256_digest(&raw), layout_top(&layout)["digest"]);

    // Pushing the same image again finds every blob and uploads none.
    proxy.clear();
    push_base(&proxy, &layout, "v2", "base/list");
    assert_eq!(proxy.upload_starts(), 0, "{:#?}", proxy.requests());
    assert!(
        proxy
            .requests()
            .iter()
            .any(|(m, p)| m == "HEAD" && p.contains("/blobs/sha256:"))
    );

    // Into another repository skopeo mounts layers it pushed before (its
    // blob-info cache knows where they are); how many is skopeo's business.
    proxy.clear();
    push_base(&proxy, &layout, "v1", "other/list");
    assert!(proxy.mount_attempts() >= 1, "{:#?}", proxy.requests());
}

/// `go build` of a fixture app for linux/amd64; returns the output.
fn go_build(app: &str, out: &Path, ldflags: &str) -> std::process::Output {
    Command::new("go")
        .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
        .arg(out)
        .arg(".")
        .current_dir(app_dir(app))
        .env("CGO_ENABLED", "0")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("start go")
}

#[test]
fn go_fixtures_build_and_run_in_an_unpacked_image() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = tmp.path().join("hello");
    let built = go_build("hello", &hello, "-X main.version=1.2.3");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let version = run_checked(Command::new(&hello).arg("-version"));
    assert_eq!(String::from_utf8_lossy(&version.stdout), "1.2.3\n");

    let broken = go_build("broken", &tmp.path().join("broken"), "");
    assert!(!broken.status.success());
    assert!(String::from_utf8_lossy(&broken.stderr).contains("undefined: nope"));
    let lib = run_checked(
        Command::new("go")
            .args(["list", "-f", "{{.Name}}", "."])
            .current_dir(app_dir("lib"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local"),
    );
    assert_eq!(String::from_utf8_lossy(&lib.stdout), "lib\n");

    // The app and its kodata placed in an unpacked base as ko lays them out.
    let layout = make_base(&tmp.path().join("base"), "v1", false, &["linux/amd64"]);
    let bundle = tmp.path().join("bundle");
    let rootfs = umoci_unpack(&layout, "v1", &bundle);
    fs::create_dir_all(rootfs.join("ko-app")).unwrap();
    fs::copy(&hello, rootfs.join("ko-app/hello")).unwrap();
    fs::create_dir_all(rootfs.join("var/run/ko")).unwrap();
    fs::copy(
        app_dir("hello").join("kodata/greeting.txt"),
        rootfs.join("var/run/ko/greeting.txt"),
    )
    .unwrap();
    let expected = "hello from kobuild\nHello there\n";

    let out = run_in_rootfs(
        &rootfs,
        &["/ko-app/hello"],
        &[("KO_DATA_PATH", "/var/run/ko")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    let config_path = bundle.join("config.json");
    let mut config = json(&fs::read(&config_path).unwrap());
    config["process"]["args"] = serde_json::json!(["/ko-app/hello"]);
    config["process"]["env"] = serde_json::json!(["KO_DATA_PATH=/var/run/ko"]);
    fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    if let Some(out) = runc_run(&bundle) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}
