//! Identical runs at the same time (a re-run CI job, two workflows on one commit): all of
//! them succeed, and no SBOM drops out of the referrers index.

use std::thread;

use crate::common::kobuild::*;
use crate::common::*;
use ::kobuild::digest::Digest;
use ::kobuild::image::oci::Descriptor;
use ::kobuild::registry::{Client, ClientOptions, Repository};
use ::kobuild::sbom;
use serde_json::Value;

const RUNS: usize = 6;

fn referrers(reg: &Registry, repo: &str, subject: &str) -> Vec<String> {
    let tag = sbom::referrers_tag(&Digest::parse(subject).unwrap());
    let raw = skopeo_inspect_raw(&format!("{}/{repo}:{tag}", reg.host()), reg);
    let index: Value = serde_json::from_slice(&raw).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Two platforms: the index, its children and their SBOMs give the registry's link race
/// the most manifests to refuse.
#[test]
fn identical_concurrent_runs_on_one_cache_all_succeed() {
    let reg = Registry::start(RegistryKind::Plain);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(
        &base_dir.path().join("base"),
        "v1",
        false,
        &["linux/amd64", "linux/arm64"],
    );
    let base = push_base(&reg, &layout, "v1", "base/same");
    let kb = Kobuild::new().env("SOURCE_DATE_EPOCH", "1700000000");
    let repo = format!("{}/same", reg.host());
    let args = [
        "./hello",
        "--repo",
        &repo,
        "--base",
        &base,
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "v1",
    ];
    let outputs: Vec<_> = thread::scope(|s| {
        let runs: Vec<_> = (0..RUNS).map(|_| s.spawn(|| kb.run(&args))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let failed: Vec<String> = outputs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    eprintln!(
        "{} of {RUNS} identical concurrent runs succeeded",
        RUNS - failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {RUNS} failed:\n{}",
        failed.len(),
        failed.join("\n---\n")
    );
    let refs: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .collect();
    assert!(
        refs.iter().all(|r| *r == refs[0]),
        "same source, same digest: {refs:?}"
    );
    assert_eq!(referrers(&reg, "same/hello", digest_of(&refs[0])).len(), 1);
}

#[tokio::test]
async fn concurrent_attaches_of_different_sboms_keep_every_referrer() {
    let reg = Registry::start(RegistryKind::Plain);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(&base_dir.path().join("base"), "v1", false, &["linux/amd64"]);
    let reference = push_base(&reg, &layout, "v1", "apps/subject");
    let raw = skopeo_inspect_raw(&reference, &reg);
    let media_type = serde_json::from_slice::<Value>(&raw).unwrap()["mediaType"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = Descriptor::new(&media_type, raw.len() as u64, Digest::of(&raw));
    let client = Client::new(ClientOptions::default()).unwrap();
    let repo = Repository::parse(&format!("{}/apps/subject", reg.host())).unwrap();
    let docs: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("{{\"spdxVersion\":\"SPDX-2.3\",\"n\":{i}}}").into_bytes())
        .collect();
    let attached = futures_util::future::join_all(
        docs.iter()
            .map(|d| sbom::attach(&client, &repo, &subject, d, "2023-11-14T22:13:20Z")),
    )
    .await;
    let mut want: Vec<String> = attached
        .into_iter()
        .map(|r| r.expect("every attach succeeds").to_string())
        .collect();
    let mut listed = referrers(&reg, "apps/subject", subject.digest.as_str());
    want.sort();
    listed.sort();
    assert_eq!(listed, want, "every referrer stays listed");
}
