//! SBOMs: SPDX documents from real Go binaries pass the SPDX project's own validator
//! (`pyspdxtools`, installed by scripts/test), and attaching them to images that kobuild
//! pushed leaves an OCI 1.1 artifact plus the referrers tag schema's index in the registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::kobuild::*;
use crate::common::*;
use ::kobuild::digest::Digest;
use ::kobuild::image::oci::{Descriptor, Index, Platform};
use ::kobuild::registry::{Client, ClientOptions, Keychain, Repository};
use ::kobuild::sbom::{self, BaseInfo, ImageInfo, buildinfo};
use serde_json::Value;

const CREATED: &str = "2023-11-14T22:13:20Z";
const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `scripts/test` installs pyspdxtools into `$KOBUILD_TOOLS/venv` (default
/// `~/.cache/kobuild-tools`); PATH is the fallback.
fn pyspdxtools() -> PathBuf {
    let dir = std::env::var_os("KOBUILD_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kobuild-tools")));
    if let Some(path) = dir.map(|d| d.join("venv/bin/pyspdxtools"))
        && path.is_file()
    {
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("pyspdxtools"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("pyspdxtools not found: scripts/test installs it"))
}

/// Runs the SPDX validator on `file`; panics with its findings unless the file is valid.
fn validate(file: &Path) {
    let out = Command::new(pyspdxtools())
        .arg("-i")
        .arg(file)
        .output()
        .expect("start pyspdxtools");
    assert!(
        out.status.success(),
        "{} is not valid SPDX:\n{}{}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(file).unwrap_or_default()
    );
}

/// `go build` of the Go main package in `dir`, offline, into `out`.
fn go_build(dir: &Path, out: &Path) {
    let gocache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache");
    run_checked(
        Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(out)
            .arg(".")
            .current_dir(dir)
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-buildvcs=false")
            .env("GOCACHE", gocache),
    );
}

fn client(reg: &Registry, host: &str) -> Client {
    Client::new(ClientOptions {
        keychain: Keychain::default().with_credentials(host, reg.username(), reg.password()),
        ..Default::default()
    })
    .unwrap()
}

/// `host/repo` of a `host/repo:tag@digest` reference.
fn repository_of(reference: &str) -> String {
    let pinned = pinned(reference);
    pinned.split('@').next().unwrap().to_string()
}

/// The relationships of an SPDX document as `ELEMENT TYPE RELATED` lines.
fn relationships(doc: &Value) -> Vec<String> {
    doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["spdxElementId"].as_str().unwrap(),
                r["relationshipType"].as_str().unwrap(),
                r["relatedSpdxElement"].as_str().unwrap()
            )
        })
        .collect()
}

fn package<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name} in {doc:#}"))
}

/// A built image pushed by kobuild to an htpasswd registry, behind a recording proxy.
struct Pushed {
    reg: Registry,
    proxy: Proxy,
    /// `host/apps/hello:v1@sha256:…`
    reference: String,
    _kb: Kobuild,
    _base: tempfile::TempDir,
}

fn push_hello(platforms: &[&str]) -> Pushed {
    let reg = Registry::start(RegistryKind::Auth);
    let proxy = Proxy::start(&reg);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(&base_dir.path().join("base"), "v1", false, platforms);
    let base = push_base(&reg, &layout, "v1", "base/static");
    let kb = Kobuild::new().env("SOURCE_DATE_EPOCH", "1700000000");
    reg.write_docker_config(&kb.dir().join("docker"));
    let refs = kb.ok(&[
        "./hello",
        "--repo",
        &format!("{}/apps", reg.host()),
        "--base",
        &base,
        "--platform",
        &platforms.join(","),
        "-t",
        "v1",
    ]);
    Pushed {
        reg,
        proxy,
        reference: refs[0].clone(),
        _kb: kb,
        _base: base_dir,
    }
}

#[tokio::test]
async fn image_sbom_validates_and_attaches_with_the_referrers_tag() {
    let p = push_hello(&["linux/amd64"]);
    let raw = skopeo_inspect_raw(&pinned(&p.reference), &p.reg);
    let manifest = json(&raw);
    let image_digest = Digest::parse(digest_of(&p.reference)).unwrap();
    assert_eq!(sha256_digest(&raw), image_digest.to_string());

    let work = tempfile::tempdir().unwrap();
    let binary = work.path().join("hello");
    go_build(&app_dir("hello"), &binary);
    let base = BaseInfo {
        name: manifest["annotations"][BASE_NAME].as_str().unwrap().into(),
        digest: Digest::parse(manifest["annotations"][BASE_DIGEST].as_str().unwrap()).unwrap(),
    };
    let image = ImageInfo {
        digest: image_digest.clone(),
        repository: Some(repository_of(&p.reference)),
        tag: Some("v1".into()),
    };
    let bytes = sbom::image_sbom("go", &binary, &image, Some(&base), CREATED)
        .await
        .unwrap();
    let platform = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        ..Default::default()
    };
    let file =
        sbom::write_to_dir(&work.path().join("sboms"), "hello", Some(&platform), &bytes).unwrap();
    assert_eq!(file, work.path().join("sboms/hello-linux-amd64.spdx.json"));
    validate(&file);

    let doc = json(&bytes);
    assert_eq!(doc["creationInfo"]["created"], CREATED);
    let image_id = format!("SPDXRef-Package-sha256-{}", image_digest.hex());
    let base_id = format!("SPDXRef-Package-sha256-{}", base.digest.hex());
    let main = package(&doc, "example.com/hello");
    assert_eq!(main["versionInfo"], "(devel)");
    let rels = relationships(&doc);
    assert_eq!(
        rels,
        [
            format!("SPDXRef-DOCUMENT DESCRIBES {image_id}"),
            format!("{image_id} DESCENDANT_OF {base_id}"),
            format!("{image_id} CONTAINS {}", main["SPDXID"].as_str().unwrap()),
        ]
    );
    let purl = package(&doc, &repository_of(&p.reference))["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        purl,
        format!(
            "pkg:oci/hello@{image_digest}?repository_url={}&tag=v1",
            repository_of(&p.reference)
        )
    );

    // Attach through the proxy, to see what the second attach sends.
    let repo =
        Repository::parse(&repository_of(&p.reference).replace(&p.reg.host(), &p.proxy.host()))
            .unwrap();
    let client = client(&p.reg, &p.proxy.host());
    let subject = Descriptor::new(
        manifest["mediaType"].as_str().unwrap(),
        raw.len() as u64,
        image_digest.clone(),
    );
    let artifact = sbom::attach(&client, &repo, &subject, &bytes, CREATED)
        .await
        .unwrap();

    let repo_name = repository_of(&p.reference);
    let stored = skopeo_inspect_raw(&format!("{repo_name}@{artifact}"), &p.reg);
    assert_eq!(sha256_digest(&stored), artifact.to_string());
    let stored = json(&stored);
    assert_eq!(stored["mediaType"], OCI_MANIFEST);
    assert_eq!(stored["artifactType"], "application/spdx+json");
    assert_eq!(
        stored["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(stored["config"]["digest"], sha256_digest(b"{}"));
    assert_eq!(stored["layers"][0]["mediaType"], "application/spdx+json");
    assert_eq!(stored["layers"][0]["digest"], sha256_digest(&bytes));
    assert_eq!(stored["subject"]["digest"], image_digest.to_string());
    assert_eq!(stored["subject"]["size"], raw.len());
    assert_eq!(
        stored["annotations"]["org.opencontainers.image.created"],
        CREATED
    );
    let blobs = p.reg.blob_digests();
    assert!(blobs.contains(&sha256_digest(&bytes)) && blobs.contains(&sha256_digest(b"{}")));

    let tag = format!("{repo_name}:sha256-{}", image_digest.hex());
    let referrers = json(&skopeo_inspect_raw(&tag, &p.reg));
    assert_eq!(referrers["mediaType"], OCI_INDEX);
    assert_eq!(
        referrers["manifests"],
        serde_json::json!([{
            "mediaType": OCI_MANIFEST,
            "size": skopeo_inspect_raw(&format!("{repo_name}@{artifact}"), &p.reg).len(),
            "digest": artifact.to_string(),
            "annotations": {"org.opencontainers.image.created": CREATED},
            "artifactType": "application/spdx+json",
        }])
    );
    // The image itself is untouched.
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&format!("{repo_name}:v1"), &p.reg)),
        image_digest.to_string()
    );

    // Again: same artifact, and the referrers index is left alone.
    p.proxy.clear();
    let again = sbom::attach(&client, &repo, &subject, &bytes, CREATED)
        .await
        .unwrap();
    assert_eq!(again, artifact);
    let index_puts = p
        .proxy
        .requests()
        .into_iter()
        .filter(|(m, path)| m == "PUT" && path.contains("/manifests/sha256-"))
        .count();
    assert_eq!(index_puts, 0, "{:?}", p.proxy.requests());
    assert_eq!(
        json(&skopeo_inspect_raw(&tag, &p.reg))["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A second SBOM (another time) joins the first.
    let later = "2024-01-01T00:00:00Z";
    let other = sbom::image_sbom("go", &binary, &image, Some(&base), later)
        .await
        .unwrap();
    let second = sbom::attach(&client, &repo, &subject, &other, later)
        .await
        .unwrap();
    assert_ne!(second, artifact);
    let listed: Vec<String> = json(&skopeo_inspect_raw(&tag, &p.reg))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [artifact.to_string(), second.to_string()]);
}

#[tokio::test]
async fn index_sbom_lists_each_platform_and_attaches_to_the_index() {
    let p = push_hello(&["linux/amd64", "linux/arm64"]);
    let raw = skopeo_inspect_raw(&pinned(&p.reference), &p.reg);
    let index: Index = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index.media_type, OCI_INDEX);
    let digest = Digest::parse(digest_of(&p.reference)).unwrap();
    let base = BaseInfo {
        name: index.annotations[BASE_NAME].clone(),
        digest: Digest::parse(&index.annotations[BASE_DIGEST]).unwrap(),
    };
    let info = ImageInfo {
        digest: digest.clone(),
        repository: Some(repository_of(&p.reference)),
        tag: Some("v1".into()),
    };
    let bytes = sbom::index_document(&info, Some(&base), &index.manifests, CREATED).to_bytes();
    let work = tempfile::tempdir().unwrap();
    let file = sbom::write_to_dir(work.path(), "hello", None, &bytes).unwrap();
    assert!(file.ends_with("hello-index.spdx.json"));
    validate(&file);

    let doc = json(&bytes);
    let index_id = format!("SPDXRef-Package-sha256-{}", digest.hex());
    let mut expected = vec![
        format!("SPDXRef-DOCUMENT DESCRIBES {index_id}"),
        format!(
            "{index_id} DESCENDANT_OF SPDXRef-Package-sha256-{}",
            base.digest.hex()
        ),
    ];
    for child in &index.manifests {
        expected.push(format!(
            "{index_id} VARIANT_OF SPDXRef-Package-sha256-{}",
            child.digest.hex()
        ));
    }
    assert_eq!(relationships(&doc), expected);
    let versions: Vec<&str> = doc["packages"].as_array().unwrap()[2..]
        .iter()
        .map(|p| p["versionInfo"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["linux/amd64", "linux/arm64"]);

    let repo = Repository::parse(&repository_of(&p.reference)).unwrap();
    let client = client(&p.reg, &p.reg.host());
    let subject = Descriptor::new(OCI_INDEX, raw.len() as u64, digest.clone());
    let artifact = sbom::attach(&client, &repo, &subject, &bytes, CREATED)
        .await
        .unwrap();
    let repo_name = repository_of(&p.reference);
    let stored = json(&skopeo_inspect_raw(
        &format!("{repo_name}@{artifact}"),
        &p.reg,
    ));
    assert_eq!(stored["subject"]["mediaType"], OCI_INDEX);
    assert_eq!(stored["subject"]["digest"], digest.to_string());
    let referrers = json(&skopeo_inspect_raw(
        &format!("{repo_name}:{}", sbom::referrers_tag(&digest)),
        &p.reg,
    ));
    assert_eq!(referrers["manifests"][0]["digest"], artifact.to_string());
}

#[tokio::test]
async fn module_dependencies_are_described_and_valid() {
    let work = tempfile::tempdir().unwrap();
    let image = ImageInfo {
        digest: Digest::of(b"an image"),
        repository: None,
        tag: None,
    };

    // A real binary whose dependency is replaced by a local directory.
    let binary = work.path().join("sbomapp");
    go_build(&fixtures_dir().join("sbom/app"), &binary);
    let info = buildinfo::read("go", &binary).await.unwrap();
    assert_eq!(info.path, "example.com/sbomapp");
    assert_eq!(info.deps.len(), 1);
    assert_eq!(info.deps[0].replace.as_ref().unwrap().path, "./greet");
    assert!(info.settings.contains(&("CGO_ENABLED".into(), "0".into())));
    let bytes = sbom::document(&image, None, &info, CREATED).to_bytes();
    let file = work.path().join("app.spdx.json");
    fs::write(&file, &bytes).unwrap();
    validate(&file);
    let doc = json(&bytes);
    let greet = package(&doc, "example.com/greet");
    assert_eq!(greet["versionInfo"], "v1.2.3");
    assert_eq!(greet["comment"], "replaced by the local directory ./greet");

    // Captured `go version -m` of binaries with module sums and a module replacement.
    for (name, dep, version, sha256) in [
        (
            "deps.txt",
            "github.com/google/go-cmp",
            "v0.6.0",
            "a1fca1c6f5dc66132c539ba56c588b2a5fd7045a84d464aaedab6ef2d0264d12",
        ),
        (
            "replaced.txt",
            "github.com/google/go-cmp",
            "v0.7.0",
            "c24f37f36113b2fe0961467022c9fa6296225a206c60b489893b320726d5b8df",
        ),
    ] {
        let output = fs::read_to_string(fixtures_dir().join("sbom").join(name)).unwrap();
        let info = buildinfo::parse(&output);
        let bytes = sbom::document(&image, None, &info, CREATED).to_bytes();
        let file = work.path().join(format!("{name}.spdx.json"));
        fs::write(&file, &bytes).unwrap();
        validate(&file);
        let doc = json(&bytes);
        let pkg = package(&doc, dep);
        assert_eq!(pkg["versionInfo"], version, "{name}");
        assert_eq!(pkg["checksums"][0]["checksumValue"], sha256, "{name}");
        assert_eq!(
            pkg["externalRefs"][0]["referenceLocator"],
            format!("pkg:golang/{dep}@{version}?type=module"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn not_a_go_binary_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("not-go");
    fs::write(&file, "#!/bin/sh\n").unwrap();
    let e = buildinfo::read("go", &file).await.unwrap_err().to_string();
    assert!(e.starts_with("go version -m "), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = buildinfo::read("/nonexistent/go", &file)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot run /nonexistent/go version -m"),
        "{e}"
    );
}
