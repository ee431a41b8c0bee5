//! `kobuild resolve`: every distinct ko:// reference built once, pushed, and put into the
//! manifests without touching anything else.

use std::fs;

use crate::common::kobuild::*;
use crate::common::*;

const MANIFEST: &str = "# shop, resolved by kobuild
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  template:
    spec:
      containers:
        - name: api
          image: ko://example.com/shop/cmd/api   # the API
        - name: web
          image: \"ko://example.com/shop/cmd/web\"
---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - image: ko://example.com/shop/cmd/api
";

#[test]
fn builds_each_reference_once_and_renders_losslessly() {
    let reg = Registry::start(RegistryKind::Plain);
    let proxy = Proxy::start(&reg);
    let kb = Kobuild::new().env("VERSION", "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("shop.yaml");
    fs::write(&manifest, MANIFEST).unwrap();
    let repo = format!("{}/shop", proxy.host());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kobuild"));
    let out = cmd
        .args(["resolve", "-f"])
        .arg(&manifest)
        .args(["--base", "scratch", "--repo", &repo, "--sbom=none"])
        .envs(kb.env.iter().map(|(k, v)| (k, v)))
        .current_dir(fixtures_dir().join("skaffold"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rendered = String::from_utf8(out.stdout).unwrap();

    let refs: Vec<String> = rendered
        .lines()
        .filter(|l| l.contains("@sha256:"))
        .map(|l| {
            let start = l.find(&repo).unwrap();
            l[start..].split(['"', ' ']).next().unwrap().to_string()
        })
        .collect();
    assert_eq!(refs.len(), 3, "{rendered}");
    assert!(
        refs[0].starts_with(&format!("{repo}/api:latest@sha256:")),
        "{}",
        refs[0]
    );
    assert!(
        refs[1].starts_with(&format!("{repo}/web:latest@sha256:")),
        "{}",
        refs[1]
    );
    assert_eq!(
        refs[0], refs[2],
        "the same reference resolves to the same image"
    );

    // Only the three image values changed; comments, quotes and flow style stayed.
    let before: Vec<&str> = MANIFEST.lines().collect();
    let after: Vec<&str> = rendered.lines().collect();
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        if b.contains("ko://") {
            let masked = a.replace(&refs[0], "REF").replace(&refs[1], "REF");
            let expected = b
                .replace("ko://example.com/shop/cmd/api", "REF")
                .replace("ko://example.com/shop/cmd/web", "REF");
            assert_eq!(masked, expected);
        } else {
            assert_eq!(a, b);
        }
    }

    // Each distinct image was built and pushed once: two manifests by digest, two tags.
    let puts = proxy
        .requests()
        .into_iter()
        .filter(|(m, p)| m == "PUT" && p.contains("/manifests/"))
        .count();
    assert_eq!(puts, 4, "{:?}", proxy.requests());
    for r in &refs[..2] {
        let local = pinned(&r.replace(&proxy.host(), &reg.host()));
        assert_eq!(
            sha256_digest(&skopeo_inspect_raw(&local, &reg)),
            digest_of(r)
        );
    }
}

#[test]
fn an_unbuildable_reference_fails_before_anything_is_printed() {
    let kb = Kobuild::new().env("VERSION", "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("bad.yaml");
    fs::write(&manifest, "image: ko://example.com/shop/cmd/nothere\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kobuild"))
        .args(["resolve", "-f"])
        .arg(&manifest)
        .args(["--base", "scratch", "--push=false", "--oci-layout-path"])
        .arg(dir.path().join("out"))
        .envs(kb.env.iter().map(|(k, v)| (k, v)))
        .current_dir(fixtures_dir().join("skaffold"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ko://example.com/shop/cmd/nothere"));
}
