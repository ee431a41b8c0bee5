//! `--compression zstd`: OCI `tar+zstd` layers that other tools read, reproducible digests.

use std::process::Command;

use crate::common::kobuild::*;
use crate::common::*;

#[test]
fn zstd_layers_push_read_back_and_run() {
    let reg = Registry::start(RegistryKind::Plain);
    let repo = format!("{}/apps", reg.host());
    let kb = Kobuild::new();
    let args = [
        "./hello",
        "--base",
        "scratch",
        "--repo",
        &repo,
        "--compression",
        "zstd",
        "--sbom=none",
    ];
    let refs = kb.ok(&args);
    let manifest: serde_json::Value =
        serde_json::from_slice(&skopeo_inspect_raw(&pinned(&refs[0]), &reg)).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    // skopeo decompresses the layers (recompressing them as gzip) and umoci runs what it gets.
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("oci");
    run_checked(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-compress-format",
                "gzip",
            ])
            .arg(format!("docker://{}", pinned(&refs[0])))
            .arg(format!("oci:{}:x", oci.display())),
    );
    let rootfs = umoci_unpack(&oci, "x", &work.path().join("bundle"));
    let out = run_in_rootfs(
        &rootfs,
        &["/ko-app/hello"],
        &[("KO_DATA_PATH", "/var/run/ko")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from kobuild\nHello there\n"
    );

    // A fresh cache compresses again, to the same bytes; gzip gives other digests.
    let again = Kobuild::new().ok(&args);
    assert_eq!(digest_of(&again[0]), digest_of(&refs[0]));
    let gzip = Kobuild::new().ok(&[
        "./hello",
        "--base",
        "scratch",
        "--repo",
        &repo,
        "--sbom=none",
    ]);
    assert_ne!(digest_of(&gzip[0]), digest_of(&refs[0]));
    let err = kb.fails(
        &[
            "./hello",
            "--base",
            "scratch",
            "--repo",
            &repo,
            "--compression-level",
            "22",
        ],
        2,
    );
    assert!(err.contains("--compression-level"), "{err}");
}
