//! Multi-platform builds: platform selection from base indexes, one output index, and the
//! binaries checked per platform (ELF machine, GOARM, arm64 run under qemu).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::kobuild::*;
use crate::common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

const BASE_ANNOTATIONS: [&str; 2] = [
    "org.opencontainers.image.base.name",
    "org.opencontainers.image.base.digest",
];

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The ELF `e_machine` of a binary: 62 x86-64, 183 AArch64, 40 ARM, 22 s390.
fn elf_machine(path: &Path) -> u16 {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    match bytes[5] {
        1 => u16::from_le_bytes([bytes[18], bytes[19]]),
        _ => u16::from_be_bytes([bytes[18], bytes[19]]),
    }
}

/// Pull one platform of `reference` out of a layout with skopeo and unpack it with umoci.
fn unpack_platform(layout: &Path, tag: &str, platform: &str, work: &Path) -> PathBuf {
    let name = platform.replace('/', "-");
    let oci = work.join(format!("oci-{name}"));
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet"]);
    let parts: Vec<&str> = platform.split('/').collect();
    cmd.args(["--override-os", parts[0], "--override-arch", parts[1]]);
    if let Some(v) = parts.get(2) {
        cmd.args(["--override-variant", v]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("oci:{}:x", oci.display()));
    run_checked(&mut cmd);
    umoci_unpack(&oci, "x", &work.join(format!("bundle-{name}")))
}

struct Built {
    /// Owns the temporary directories the paths below point into.
    _kb: Kobuild,
    base: PathBuf,
    layout: PathBuf,
    reference: String,
}

/// Build the hello fixture on a 4-platform base (with attestations) into a layout.
fn build_on(docker: bool, platforms: &str) -> Built {
    let kb = Kobuild::new().env("SOURCE_DATE_EPOCH", "0");
    let base_dir = kb.dir().join("base");
    let base = if docker {
        make_base(&base_dir, "v1", true, &ALL_PLATFORMS)
    } else {
        make_base_with_attestations(&base_dir, "v1", &ALL_PLATFORMS)
    };
    build_with(kb, base, platforms)
}

/// The base's path is part of its name (`base.name`), so a rebuild must use the same one.
fn build_with(kb: Kobuild, base: PathBuf, platforms: &str) -> Built {
    let layout = kb.dir().join("out");
    let refs = kb.ok(&[
        "./hello",
        "--base",
        &format!("oci-layout:{}:v1", base.display()),
        "--platform",
        platforms,
        "--push=false",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    Built {
        _kb: kb,
        base,
        layout,
        reference: refs[0].clone(),
    }
}

fn top(layout: &Path) -> (Value, Value) {
    let desc = layout_top(layout);
    let body = parse(&layout_blob(layout, desc["digest"].as_str().unwrap()));
    (desc, body)
}

#[test]
fn all_builds_every_base_platform_into_one_index() {
    let b = build_on(false, "all");
    let (desc, index) = top(&b.layout);
    assert_eq!(desc["mediaType"], OCI_INDEX);
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(
        index_platforms(&index),
        ALL_PLATFORMS,
        "base order, no unknown/unknown"
    );
    let base_index_digest = layout_top(&b.base)["digest"].clone();
    assert_eq!(index["annotations"][BASE_ANNOTATIONS[1]], base_index_digest);
    let base_index = parse(&layout_blob(&b.base, base_index_digest.as_str().unwrap()));
    for (child, platform) in index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip(ALL_PLATFORMS)
    {
        assert_eq!(child["artifactType"], OCI_CONFIG);
        let manifest = parse(&layout_blob(&b.layout, child["digest"].as_str().unwrap()));
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            3,
            "{platform}"
        );
        let base_child = base_index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"] == child["platform"])
            .unwrap();
        assert_eq!(
            manifest["annotations"][BASE_ANNOTATIONS[1]],
            base_child["digest"]
        );
        assert_eq!(
            manifest["annotations"][BASE_ANNOTATIONS[0]],
            index["annotations"][BASE_ANNOTATIONS[0]]
        );
    }

    let work = TempDir::new().unwrap();
    let expected = [
        ("linux/amd64", 62),
        ("linux/arm64", 183),
        ("linux/arm/v7", 40),
        ("linux/s390x", 22),
    ];
    for (platform, machine) in expected {
        let rootfs = unpack_platform(&b.layout, "latest", platform, work.path());
        let app = rootfs.join("ko-app/hello");
        assert_eq!(elf_machine(&app), machine, "{platform}");
        let release = fs::read_to_string(rootfs.join("etc/base-release")).unwrap();
        assert!(release.contains(platform), "{platform} got base {release}");
    }
    let arm = work.path().join("bundle-linux-arm-v7/rootfs/ko-app/hello");
    // Go writes no ARM attributes section; its build info records GOARM instead.
    let info = run_checked(Command::new("go").args(["version", "-m"]).arg(&arm));
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("GOARM=7"),
        "built with GOARM=7"
    );

    // The arm64 binary really runs (under qemu), reading its kodata.
    let rootfs = work.path().join("bundle-linux-arm64/rootfs");
    let out = run_checked(
        Command::new("qemu-aarch64-static")
            .arg(rootfs.join("ko-app/hello"))
            .env("KO_DATA_PATH", rootfs.join("var/run/ko")),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from kobuild\nHello there\n"
    );

    // Same inputs, fresh caches: the same index digest.
    let again = build_with(
        Kobuild::new().env("SOURCE_DATE_EPOCH", "0"),
        b.base.clone(),
        "all",
    );
    assert_eq!(digest_of(&again.reference), digest_of(&b.reference));
}

#[test]
fn a_list_keeps_base_order_and_one_match_is_a_single_image() {
    let b = build_on(false, "linux/s390x,linux/amd64");
    let (_, index) = top(&b.layout);
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/s390x"]);

    let single = build_on(false, "linux/arm64");
    let (desc, manifest) = top(&single.layout);
    assert_eq!(
        desc["mediaType"], OCI_MANIFEST,
        "one platform: an image, not an index"
    );
    let base_index = parse(&layout_blob(
        &single.base,
        layout_top(&single.base)["digest"].as_str().unwrap(),
    ));
    let arm64 = &base_index["manifests"][1];
    assert_eq!(arm64["platform"]["architecture"], "arm64");
    assert_eq!(
        manifest["annotations"][BASE_ANNOTATIONS[1]],
        arm64["digest"]
    );
    let config = parse(&layout_blob(
        &single.layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["architecture"], "arm64");
}

#[test]
fn docker_manifest_lists_stay_docker() {
    let b = build_on(true, "linux/amd64,linux/arm/v7");
    let (_, index) = top(&b.layout);
    assert_eq!(index["mediaType"], DOCKER_LIST);
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm/v7"]);
    for child in index["manifests"].as_array().unwrap() {
        assert_eq!(child["mediaType"], DOCKER_MANIFEST);
        let m = parse(&layout_blob(&b.layout, child["digest"].as_str().unwrap()));
        assert!(
            m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["mediaType"] == DOCKER_LAYER)
        );
    }
}

#[test]
fn an_index_pushes_after_its_children_and_skopeo_reads_it() {
    let reg = Registry::start(RegistryKind::Plain);
    let proxy = Proxy::start(&reg);
    let kb = Kobuild::new();
    let base = make_base_with_attestations(&kb.dir().join("base"), "v1", &ALL_PLATFORMS);
    let base_ref = push_base(&reg, &base, "v1", "base/multi").replace(&reg.host(), &proxy.host());
    let repo = format!("{}/apps", proxy.host());
    // The request counts below are the image's; SBOM referrers have their own test.
    let build = |extra: &[&str]| {
        let mut args = vec!["./hello", "--repo", &repo, "--base", &base_ref];
        args.extend(["--platform", "linux/amd64,linux/arm64", "--sbom=none"]);
        args.extend_from_slice(extra);
        kb.ok(&args)
    };
    let refs = build(&["-t", "v2"]);
    let puts: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(m, p)| m == "PUT" && p.contains("/manifests/"))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        puts.len(),
        4,
        "two children, the index by digest, the tag: {puts:?}"
    );
    let index_digest = digest_of(&refs[0]);
    assert!(
        puts[2].ends_with(index_digest),
        "index after its children: {puts:?}"
    );
    assert!(puts[3].ends_with("/manifests/v2"), "tag last: {puts:?}");

    let raw = skopeo_inspect_raw(&pinned(&refs[0]).replace(&proxy.host(), &reg.host()), &reg);
    assert_eq!(sha256_digest(&raw), index_digest);
    assert_eq!(
        index_platforms(&parse(&raw)),
        ["linux/amd64", "linux/arm64"]
    );
    assert_eq!(
        proxy.mount_attempts(),
        2,
        "each platform's base layer mounted"
    );

    // The base's index, manifests and configs are kept by digest: a later build (the
    // artifact cache off, so it builds) only asks what the tag names now.
    let base_reads = |proxy: &Proxy| -> Vec<(String, String)> {
        let requests = proxy.requests();
        requests
            .into_iter()
            .filter(|(_, p)| p.starts_with("/v2/base/multi/") && !p.contains("/uploads/"))
            .collect()
    };
    assert!(base_reads(&proxy).len() >= 5, "{:?}", base_reads(&proxy));
    proxy.clear();
    let again = build(&["--no-cache"]);
    assert_eq!(digest_of(&again[0]), index_digest);
    assert_eq!(
        base_reads(&proxy),
        [(
            "HEAD".to_string(),
            "/v2/base/multi/manifests/v1".to_string()
        )]
    );
}

#[test]
fn scratch_builds_an_index_for_several_platforms() {
    let kb = Kobuild::new();
    let layout = kb.dir().join("out");
    let archive = kb.dir().join("multi.tar");
    let refs = kb.ok(&[
        "./hello",
        "--oci-archive",
        archive.to_str().unwrap(),
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "--push=false",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    let (_, index) = top(&layout);
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    assert!(index.get("annotations").is_none(), "no base to name");
    // The archive holds the whole index too, which ko's tarball cannot.
    let raw = run_checked(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}:latest", archive.display())),
    );
    assert_eq!(sha256_digest(&raw.stdout), digest_of(&refs[0]));
    assert_eq!(
        index_platforms(&parse(&raw.stdout)),
        ["linux/amd64", "linux/arm64"]
    );
}

#[test]
fn platform_errors_are_one_line_each() {
    let kb = Kobuild::new();
    let base = make_base_with_attestations(&kb.dir().join("base"), "v1", &ALL_PLATFORMS);
    let single = make_base(&kb.dir().join("single"), "v1", false, &["linux/amd64"]);
    let multi = format!("oci-layout:{}:v1", base.display());
    let one = format!("oci-layout:{}:v1", single.display());
    let layout = kb.dir().join("out");
    let out = [
        "--push=false",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ];
    let case = |args: &[&str], env: Option<(&str, &str)>, needle: &str| {
        let args: Vec<&str> = ["./hello"]
            .iter()
            .chain(args)
            .chain(&out)
            .copied()
            .collect();
        let kb = match env {
            Some((k, v)) => Kobuild::new().env(k, v),
            None => Kobuild::new(),
        };
        let err = kb.fails(&args, 2);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        assert!(!layout.exists());
    };
    case(
        &["--base", &multi, "--platform", "linux/amd64,linux/riscv64"],
        None,
        "no image for linux/riscv64; it offers: linux/amd64, linux/arm64, linux/arm/v7, linux/s390x",
    );
    case(
        &["--base", &multi, "--platform", "all,linux/amd64"],
        None,
        "all cannot be combined",
    );
    case(
        &["--base", &one, "--platform", "linux/arm64"],
        None,
        "is for linux/amd64, not linux/arm64",
    );
    case(
        &["--base", &multi, "--platform", "linux/arm64"],
        Some(("GOARCH", "arm64")),
        "GOARCH is set",
    );

    // A base index whose entry is itself an index.
    let inner = layout_top(&base);
    let nested = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [inner]});
    let bytes = serde_json::to_vec(&nested).unwrap();
    let digest = sha256_digest(&bytes);
    fs::write(base.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_INDEX, "size": bytes.len(), "digest": digest,
        "annotations": {"org.opencontainers.image.ref.name": "nested"}}]});
    fs::write(base.join("index.json"), index.to_string()).unwrap();
    let args = [
        "./hello",
        "--base",
        &format!("oci-layout:{}:nested", base.display()),
    ];
    let args: Vec<&str> = args.iter().chain(&out).copied().collect();
    let err = kb.fails(&args, 1);
    assert!(err.contains("nested index"), "{err}");
}

/// One platform's image reaches the registry while the next platform is still building:
/// the arm64 `go build` (run after amd64's, `--jobs 1`) waits for a manifest to appear in
/// the registry's storage, and fails the build if none comes.
#[test]
fn each_platform_is_pushed_while_the_next_one_builds() {
    let reg = Registry::start(RegistryKind::Plain);
    let kb = Kobuild::new();
    let base = make_base(
        &kb.dir().join("base"),
        "v1",
        false,
        &["linux/amd64", "linux/arm64"],
    );
    let base_ref = push_base(&reg, &base, "v1", "base/ahead");
    let revisions = reg
        .storage_dir()
        .join("docker/registry/v2/repositories/ahead/hello/_manifests/revisions/sha256");
    let go = kb.dir().join("go");
    go_wrapper(
        &go,
        &format!(
            "if [ \"$1\" = build ] && [ \"$GOARCH\" = arm64 ]; then\n\
             \x20 i=0\n\
             \x20 until [ -n \"$(ls '{dir}' 2>/dev/null)\" ]; do\n\
             \x20   i=$((i+1)); [ $i -gt 600 ] && {{ echo 'no image was pushed ahead' >&2; exit 1; }}\n\
             \x20   sleep 0.1\n\
             \x20 done\n\
             fi\n",
            dir = revisions.display(),
        ),
    );
    let kb = kb.env("KO_GO_PATH", &go.display().to_string());
    let refs = kb.ok(&[
        "./hello",
        "--repo",
        &format!("{}/ahead", reg.host()),
        "--base",
        &base_ref,
        "--platform",
        "linux/amd64,linux/arm64",
        "--jobs",
        "1",
        "--sbom=none",
    ]);
    let raw = skopeo_inspect_raw(&pinned(&refs[0]), &reg);
    assert_eq!(sha256_digest(&raw), digest_of(&refs[0]));
    assert_eq!(
        index_platforms(&parse(&raw)),
        ["linux/amd64", "linux/arm64"]
    );
}
