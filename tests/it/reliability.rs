//! Interrupted pushes and shared caches: a run killed at any point leaves no tag behind and
//! the next run completes; two runs sharing one cache directory both succeed.

use std::process::Stdio;
use std::time::Duration;

use crate::common::kobuild::*;
use crate::common::*;

#[test]
fn kill_9_before_the_manifest_leaves_no_tag_and_a_rerun_completes() {
    let reg = Registry::start(RegistryKind::Plain);
    let proxy = Proxy::start(&reg);
    let kb = Kobuild::new();
    let apps = fixtures_dir().join("apps");
    let manifest_put = proxy.hold("PUT", "/manifests/");
    let repo_via_proxy = format!("{}/apps", proxy.host());
    let mut child = kb
        .command(
            &apps,
            &[
                "./hello",
                "--repo",
                &repo_via_proxy,
                "--base",
                "scratch",
                "-t",
                "v1",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Every blob is uploaded by the time the first manifest is put.
    manifest_put
        .recv_timeout(Duration::from_secs(120))
        .expect("kobuild reached the manifest push");
    child.kill().unwrap();
    child.wait().unwrap();
    let tag = format!("docker://{}/apps/hello:v1", reg.host());
    let inspect = skopeo(&["inspect", "--raw", "--tls-verify=false", &tag]);
    assert!(!inspect.status.success(), "a killed run leaves no tag");
    assert!(
        String::from_utf8_lossy(&inspect.stderr).contains("manifest unknown"),
        "{inspect:?}"
    );

    let repo = format!("{}/apps", reg.host());
    let refs = kb.ok(&["./hello", "--repo", &repo, "--base", "scratch", "-t", "v1"]);
    let raw = skopeo_inspect_raw(&pinned(&refs[0]), &reg);
    assert_eq!(sha256_digest(&raw), digest_of(&refs[0]));
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&tag, &reg)),
        digest_of(&refs[0])
    );
    // The cache the killed run left is sound: a third run from it gives the same image.
    assert_eq!(
        kb.ok(&["./hello", "--repo", &repo, "--base", "scratch", "-t", "v1"]),
        refs
    );
}

#[test]
fn two_runs_sharing_a_cache_dir_both_succeed() {
    let reg = Registry::start(RegistryKind::Plain);
    let kb = Kobuild::new();
    let apps = fixtures_dir().join("apps");
    let repo = format!("{}/apps", reg.host());
    let args = |tag: &'static str| {
        vec![
            "./hello",
            "--repo",
            &repo,
            "--base",
            "scratch",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            tag,
        ]
    };
    let (a, b) = (args("a"), args("b"));
    let first = kb
        .command(&apps, &a)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let second = kb
        .command(&apps, &b)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for out in [&first, &second] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let digest = |out: &std::process::Output| {
        digest_of(String::from_utf8_lossy(&out.stdout).trim()).to_string()
    };
    assert_eq!(digest(&first), digest(&second));
}
