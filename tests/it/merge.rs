//! `kobuild merge`: two matrix jobs each push one platform by digest and write an
//! artifacts.json; merge turns them into one index, checked with skopeo against the registry.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::kobuild::*;
use crate::common::*;
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `kobuild merge ARGS` in `cwd` with `kb`'s environment (its docker config has the
/// registry's credentials).
fn merge(kb: &Kobuild, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kobuild"))
        .arg("merge")
        .args(args)
        .current_dir(cwd)
        .envs(kb.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run kobuild merge")
}

/// Requires exit code 2, nothing on stdout and one `error:` line on stderr; returns it.
fn merge_fails(kb: &Kobuild, cwd: &Path, args: &[&str]) -> String {
    let out = merge(kb, cwd, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "merge {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    stderr
}

/// One matrix job: `kobuild build ./hello` for one platform, pushed by digest with `tag`,
/// artifacts.json written to `out`. Returns the printed ref.
fn job(reg: &Registry, base: &str, platform: &str, tag: &str, out: &Path) -> String {
    let kb = Kobuild::new().env("SOURCE_DATE_EPOCH", "1700000000");
    if reg.kind() != RegistryKind::Plain {
        reg.write_docker_config(&kb.dir().join("docker"));
    }
    let refs = kb.ok(&[
        "./hello",
        "--platform",
        platform,
        "--base",
        base,
        "--repo",
        &format!("{}/apps", reg.host()),
        "-t",
        tag,
        "--file-output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(refs.len(), 1);
    refs[0].clone()
}

#[test]
fn merges_matrix_jobs_into_one_index() {
    let reg = Registry::start(RegistryKind::Auth);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let layout = make_base(&dir.join("base"), "v1", false, &ALL_PLATFORMS);
    let base = push_base(&reg, &layout, "v1", "base/static");

    let amd64 = job(&reg, &base, "linux/amd64", "amd64", &dir.join("a.json"));
    let arm64 = job(&reg, &base, "linux/arm64", "arm64", &dir.join("b.json"));
    for (reference, mt) in [(&amd64, OCI_MANIFEST), (&arm64, OCI_MANIFEST)] {
        let raw = json(&skopeo_inspect_raw(&pinned(reference), &reg));
        assert_eq!(
            raw["mediaType"], mt,
            "a one-platform job pushes a single image"
        );
    }

    let kb = Kobuild::new();
    reg.write_docker_config(&kb.dir().join("docker"));
    let out = merge(
        &kb,
        dir,
        &[
            "--artifacts",
            "a.json",
            "--artifacts",
            "b.json",
            "--tag",
            "v1",
            "--file-output",
            "out/merged.json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let merged = lines[0];
    let repo = format!("{}/apps/hello", reg.host());
    assert!(
        merged.starts_with(&format!("{repo}:v1@sha256:")),
        "{merged}"
    );

    let raw = skopeo_inspect_raw(&format!("{repo}:v1"), &reg);
    assert_eq!(
        sha256_digest(&raw),
        digest_of(merged),
        "v1 points at the index"
    );
    let index = json(&raw);
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    let children: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(children, [digest_of(&amd64), digest_of(&arm64)]);
    for (m, job_ref) in index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&amd64, &arm64])
    {
        let manifest = skopeo_inspect_raw(&pinned(job_ref), &reg);
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["size"], manifest.len());
        assert_eq!(m["artifactType"], OCI_CONFIG);
    }
    let config = skopeo_inspect_config(&pinned(&arm64), &reg);
    assert_eq!(
        index["manifests"][1]["platform"]["architecture"],
        config["architecture"]
    );

    let written = json(&fs::read(dir.join("out/merged.json")).unwrap());
    assert_eq!(
        written,
        serde_json::json!({"builds": [{"imageName": "ko://example.com/hello", "tag": merged}]})
    );

    // The order of the files does not matter; without --tag the jobs' tags disagree, so
    // the index is tagged latest.
    let out = merge(
        &kb,
        dir,
        &["--artifacts", "b.json", "--artifacts", "a.json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        again.trim_end(),
        format!("{repo}:latest@{}", digest_of(merged))
    );

    // Errors are the input's (exit 2, one line) and push nothing.
    let e = merge_fails(
        &kb,
        dir,
        &[
            "--artifacts",
            "a.json",
            "--artifacts",
            "a.json",
            "-t",
            "dup",
        ],
    );
    assert!(e.contains("platform linux/amd64 twice"), "{e}");
    assert!(e.contains("(a.json)"), "{e}");
    let mut inspect = vec!["inspect".to_string(), "--raw".into()];
    inspect.extend(reg.skopeo_flags("--"));
    inspect.push(format!("docker://{repo}:dup"));
    let inspect: Vec<&str> = inspect.iter().map(String::as_str).collect();
    assert!(
        !skopeo(&inspect).status.success(),
        "a failed merge must not tag"
    );

    let other = fs::read_to_string(dir.join("b.json"))
        .unwrap()
        .replace("/apps/hello", "/elsewhere/hello");
    fs::write(dir.join("c.json"), other).unwrap();
    let e = merge_fails(
        &kb,
        dir,
        &["--artifacts", "a.json", "--artifacts", "c.json"],
    );
    assert!(e.contains("different repositories"), "{e}");
    assert!(e.contains("(a.json)") && e.contains("(c.json)"), "{e}");

    let e = merge_fails(
        &kb,
        dir,
        &["--artifacts", "a.json", "--artifacts", "missing.json"],
    );
    assert!(e.contains("cannot read missing.json"), "{e}");

    fs::write(dir.join("broken.json"), "{\"builds\": [").unwrap();
    let e = merge_fails(&kb, dir, &["--artifacts", "broken.json"]);
    assert!(e.contains("broken.json is not an artifacts.json"), "{e}");

    let e = merge_fails(&kb, dir, &["--artifacts", "a.json", "--tag=-bad"]);
    assert!(e.contains("--tag \"-bad\" is not a valid tag"), "{e}");
}

#[test]
fn refuses_to_mix_oci_and_docker_images() {
    let reg = Registry::start(RegistryKind::Plain);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let platforms = ["linux/amd64", "linux/arm64"];
    let oci = push_base(
        &reg,
        &make_base(&dir.join("oci"), "v1", false, &platforms),
        "v1",
        "base/oci",
    );
    let docker = push_base(
        &reg,
        &make_base(&dir.join("docker"), "v1", true, &platforms),
        "v1",
        "base/docker",
    );
    job(&reg, &oci, "linux/amd64", "a", &dir.join("a.json"));
    let arm = job(&reg, &docker, "linux/arm64", "b", &dir.join("b.json"));
    assert_eq!(
        json(&skopeo_inspect_raw(&pinned(&arm), &reg))["mediaType"],
        DOCKER_MANIFEST
    );
    let e = merge_fails(
        &Kobuild::new(),
        dir,
        &["--artifacts", "a.json", "--artifacts", "b.json"],
    );
    assert!(
        e.contains("cannot put OCI and Docker manifests in one index"),
        "{e}"
    );
}

/// The registry's tags for `repo` (host/path), sorted.
fn list_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let mut args = vec!["list-tags".to_string()];
    args.extend(reg.skopeo_flags("--"));
    args.push(format!("docker://{repo}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = skopeo(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tags: Vec<String> = json(&out.stdout)["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

#[test]
fn push_by_digest_legs_leave_no_tags_and_merge_attaches_the_index_sbom() {
    let reg = Registry::start(RegistryKind::Plain);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let layout = make_base(&dir.join("base"), "v1", false, &ALL_PLATFORMS);
    let base = push_base(&reg, &layout, "v1", "base/static");
    let repo = format!("{}/apps/hello", reg.host());

    let mut legs = Vec::new();
    for (platform, file) in [("linux/amd64", "a.json"), ("linux/arm64", "b.json")] {
        let kb = Kobuild::new().env("SOURCE_DATE_EPOCH", "1700000000");
        let refs = kb.ok(&[
            "./hello",
            "--platform",
            platform,
            "--base",
            &base,
            "--repo",
            &format!("{}/apps", reg.host()),
            "--push-by-digest",
            "--file-output",
            dir.join(file).to_str().unwrap(),
        ]);
        assert_eq!(refs.len(), 1);
        assert!(refs[0].starts_with(&format!("{repo}@sha256:")), "{refs:?}");
        let written = json(&fs::read(dir.join(file)).unwrap());
        assert_eq!(written["builds"][0]["tag"], refs[0]);
        legs.push(refs[0].clone());
    }
    // Only the legs' SBOM referrers tags (`sha256-<hex>`, the referrers tag schema's), no
    // named tag.
    let referrers = |refs: &[&String]| -> Vec<String> {
        let mut t: Vec<String> = refs
            .iter()
            .map(|r| format!("sha256-{}", &digest_of(r)[7..]))
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        list_tags(&reg, &repo),
        referrers(&[&legs[0], &legs[1]]),
        "pushing by digest leaves no tag but the SBOMs'"
    );

    let kb = Kobuild::new();
    let out = merge(
        &kb,
        dir,
        &["--artifacts", "a.json", "--artifacts", "b.json", "-t", "v1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged = String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string();
    assert!(
        merged.starts_with(&format!("{repo}:v1@sha256:")),
        "{merged}"
    );
    let raw = skopeo_inspect_raw(&format!("{repo}:v1"), &reg);
    assert_eq!(sha256_digest(&raw), digest_of(&merged), "v1 is the index");
    let index = json(&raw);
    let children: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(children, [digest_of(&legs[0]), digest_of(&legs[1])]);

    // The index's SBOM, found through the referrers tag, as a multi-platform build's.
    let index_hex = &digest_of(&merged)[7..];
    let refs = json(&skopeo_inspect_raw(
        &format!("{repo}:sha256-{index_hex}"),
        &reg,
    ));
    let entries = refs["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{refs}");
    assert_eq!(entries[0]["artifactType"], "application/spdx+json");
    let artifact = json(&skopeo_inspect_raw(
        &format!("{repo}@{}", entries[0]["digest"].as_str().unwrap()),
        &reg,
    ));
    assert_eq!(artifact["subject"]["digest"], digest_of(&merged));
    assert_eq!(artifact["subject"]["mediaType"], OCI_INDEX);
    let sbom_digest = artifact["layers"][0]["digest"].as_str().unwrap();
    let mut copy = vec!["copy".to_string()];
    copy.extend(reg.skopeo_flags("--src-"));
    let sbom_dir = dir.join("sbom");
    copy.push(format!(
        "docker://{repo}@{}",
        entries[0]["digest"].as_str().unwrap()
    ));
    copy.push(format!("dir:{}", sbom_dir.display()));
    let copy: Vec<&str> = copy.iter().map(String::as_str).collect();
    let out = skopeo(&copy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&fs::read(sbom_dir.join(&sbom_digest[7..])).unwrap());
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let relationships = doc["relationships"].to_string();
    for leg in &legs {
        let child = format!("SPDXRef-Package-sha256-{}", &digest_of(leg)[7..]);
        assert!(relationships.contains(&child), "{relationships}");
    }
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");

    let mut want = referrers(&[&legs[0], &legs[1], &merged]);
    want.push("v1".into());
    want.sort();
    assert_eq!(list_tags(&reg, &repo), want);

    // A tag with --push-by-digest is refused: exit 2, naming the flags.
    let e = Kobuild::new().fails(
        &[
            "./hello",
            "--repo",
            "r.example/x",
            "--push-by-digest",
            "-t",
            "v1",
        ],
        2,
    );
    assert!(e.contains("--push-by-digest pushes no tag"), "{e}");
}
