//! SPDX 2.3 JSON documents for an image (its Go modules and its base) and for an index (its
//! platform images), in the shapes ko writes (ko `internal/sbom/spdx.go`), with these
//! differences: package IDs use only the characters SPDX allows (ko's `(devel)` does not
//! validate), download locations are `NOASSERTION` (ko names a module proxy), a replaced
//! dependency is described by its replacement (what the binary holds; ko ignores `=>`), and
//! images are named by their repository (ko: by digest; the digest is the version here) with
//! the repository and tag in their purls.
//!
//! Output is deterministic: the time is passed in, packages and relationships come in a fixed
//! order, and the namespace is derived from the image digest.

use serde::Serialize;

use super::buildinfo::{BuildInfo, Module};
use crate::digest::Digest;
use crate::image::oci::{Descriptor, Platform};
use crate::registry::Reference;

const NOASSERTION: &str = "NOASSERTION";
const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";

/// The image (or index) a document describes.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    /// The manifest's (or index's) digest.
    pub digest: Digest,
    /// `registry/repository` it is pushed to; `None` when it only went to a layout or archive.
    pub repository: Option<String>,
    /// The first tag it is pushed with.
    pub tag: Option<String>,
}

/// The base an image was built on, as its `org.opencontainers.image.base.*` annotations
/// name it.
#[derive(Clone, Debug)]
pub struct BaseInfo {
    /// `registry/repository:tag` or `registry/repository@sha256:…`.
    pub name: String,
    /// The base manifest's digest (for an index: the base index's).
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Document {
    #[serde(rename = "SPDXID")]
    pub id: String,
    pub name: String,
    #[serde(rename = "spdxVersion")]
    pub version: String,
    #[serde(rename = "creationInfo")]
    pub creation_info: CreationInfo,
    #[serde(rename = "dataLicense")]
    pub data_license: String,
    #[serde(rename = "documentNamespace")]
    pub namespace: String,
    pub packages: Vec<Package>,
    pub relationships: Vec<Relationship>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub id: String,
    pub name: String,
    #[serde(rename = "versionInfo", skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(rename = "filesAnalyzed")]
    pub files_analyzed: bool,
    #[serde(rename = "licenseDeclared")]
    pub license_declared: String,
    #[serde(rename = "licenseConcluded")]
    pub license_concluded: String,
    #[serde(rename = "downloadLocation")]
    pub download_location: String,
    #[serde(rename = "copyrightText")]
    pub copyright_text: String,
    #[serde(
        rename = "primaryPackagePurpose",
        skip_serializing_if = "String::is_empty"
    )]
    pub primary_purpose: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(rename = "externalRefs", skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checksum {
    pub algorithm: String,
    #[serde(rename = "checksumValue")]
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExternalRef {
    #[serde(rename = "referenceCategory")]
    pub category: String,
    #[serde(rename = "referenceLocator")]
    pub locator: String,
    #[serde(rename = "referenceType")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Relationship {
    #[serde(rename = "spdxElementId")]
    pub element: String,
    #[serde(rename = "relationshipType")]
    pub kind: String,
    #[serde(rename = "relatedSpdxElement")]
    pub related: String,
}

impl Document {
    /// The JSON file: 2-space indent and a trailing newline, as ko writes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("plain data serializes");
        out.push(b'\n');
        out
    }

    fn relate(&mut self, element: &str, kind: &str, related: &str) {
        self.relationships.push(Relationship {
            element: element.into(),
            kind: kind.into(),
            related: related.into(),
        });
    }
}

/// The SBOM of one image: the image CONTAINS the main module, which DEPENDS_ON each
/// dependency; the image is a DESCENDANT_OF its base. `created` is RFC 3339 (the config's
/// `created`, or SOURCE_DATE_EPOCH formatted); it is written in UTC to the second, as SPDX
/// requires, and as Go's zero time if it cannot be read.
pub fn document(
    image: &ImageInfo,
    base: Option<&BaseInfo>,
    info: &BuildInfo,
    created: &str,
) -> Document {
    let mut doc = starter(image, created);
    let image_id = oci_id(&image.digest);
    let mut image_pkg = oci_package(&image.digest, image.repository.as_deref());
    image_pkg.external_refs = vec![purl(oci_purl(
        image.repository.as_deref(),
        &image.digest,
        &repo_qualifiers(image.repository.as_deref(), image.tag.as_deref()),
    ))];
    doc.packages.push(image_pkg);
    doc.relate(DOCUMENT_ID, "DESCRIBES", &image_id);
    add_base(&mut doc, &image_id, base);

    let mut ids = IdSet::default();
    let main_id = ids.module_id(&info.main);
    let mut main = module_package(&main_id, &info.main);
    if main.name.is_empty() {
        // Built outside module mode: name the package by its import path.
        main.name = if info.path.is_empty() {
            "unknown".into()
        } else {
            info.path.clone()
        };
    }
    doc.packages.push(main);
    doc.relate(&image_id, "CONTAINS", &main_id);

    let mut deps: Vec<&Module> = info.deps.iter().collect();
    deps.sort_by(|a, b| (&a.path, &a.version).cmp(&(&b.path, &b.version)));
    for dep in deps {
        let id = ids.module_id(dep);
        doc.packages.push(module_package(&id, dep));
        doc.relate(&main_id, "DEPENDS_ON", &id);
    }
    doc
}

/// The SBOM of an index: the index and, for each platform image in `children` (the index's
/// own descriptors), a package the index is a VARIANT_OF (ko's direction).
pub fn index_document(
    index: &ImageInfo,
    base: Option<&BaseInfo>,
    children: &[Descriptor],
    created: &str,
) -> Document {
    let mut doc = starter(index, created);
    let index_id = oci_id(&index.digest);
    let repository = index.repository.as_deref();
    let mut pkg = oci_package(&index.digest, repository);
    pkg.external_refs = vec![purl(oci_purl(
        repository,
        &index.digest,
        &repo_qualifiers(repository, index.tag.as_deref()),
    ))];
    doc.packages.push(pkg);
    doc.relate(DOCUMENT_ID, "DESCRIBES", &index_id);
    add_base(&mut doc, &index_id, base);
    for child in children {
        let id = oci_id(&child.digest);
        if doc.packages.iter().any(|p| p.id == id) {
            continue;
        }
        let mut pkg = oci_package(&child.digest, repository);
        let mut qualifiers = repo_qualifiers(repository, None);
        if let Some(p) = &child.platform {
            pkg.version = platform_string(p);
            qualifiers.extend(platform_qualifiers(p));
        }
        pkg.external_refs = vec![purl(oci_purl(repository, &child.digest, &qualifiers))];
        doc.packages.push(pkg);
        doc.relate(&index_id, "VARIANT_OF", &id);
    }
    doc
}

/// `os/arch[/variant][:osversion]`, as ko (go-containerregistry) prints a platform.
pub fn platform_string(p: &Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        s = format!("{s}/{}", p.variant);
    }
    if !p.os_version.is_empty() {
        s = format!("{s}:{}", p.os_version);
    }
    s
}

/// Any RFC 3339 timestamp as SPDX writes time: UTC, to the second, `Z`.
pub fn timestamp(rfc3339: &str) -> Option<String> {
    let s = crate::time::normalize(rfc3339)?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let offset = match s.len().checked_sub(6).and_then(|i| s.get(i..)) {
        Some(z) if z.starts_with(['+', '-']) => {
            let minutes = num(s.len() - 5..s.len() - 3)? * 60 + num(s.len() - 2..s.len())?;
            if z.starts_with('-') {
                -minutes
            } else {
                minutes
            }
        }
        _ => 0,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset * 60;
    Some(crate::time::format_unix(secs))
}

// Howard Hinnant's days-from-civil: days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn starter(image: &ImageInfo, created: &str) -> Document {
    Document {
        id: DOCUMENT_ID.into(),
        name: format!("sbom-{}", image.digest),
        version: "SPDX-2.3".into(),
        creation_info: CreationInfo {
            created: timestamp(created).unwrap_or_else(|| crate::time::ZERO.into()),
            creators: vec![concat!("Tool: kobuild-", env!("CARGO_PKG_VERSION")).into()],
        },
        data_license: "CC0-1.0".into(),
        namespace: format!("https://spdx.org/spdxdocs/kobuild/{}", image.digest),
        packages: Vec::new(),
        relationships: Vec::new(),
    }
}

fn add_base(doc: &mut Document, element: &str, base: Option<&BaseInfo>) {
    let Some(base) = base else { return };
    let id = oci_id(&base.digest);
    if doc.packages.iter().any(|p| p.id == id) {
        return;
    }
    // A name that does not parse still names the base; only the purl qualifiers need parts.
    let parsed = Reference::parse(&base.name).ok();
    let repository = parsed
        .as_ref()
        .map(|r| format!("{}/{}", r.registry, r.repository));
    let tag = parsed.as_ref().and_then(|r| r.tag.clone());
    let mut pkg = oci_package(&base.digest, repository.as_deref());
    pkg.comment = format!("base image {}", base.name);
    pkg.external_refs = vec![purl(oci_purl(
        repository.as_deref(),
        &base.digest,
        &repo_qualifiers(repository.as_deref(), tag.as_deref()),
    ))];
    doc.packages.push(pkg);
    doc.relate(element, "DESCENDANT_OF", &id);
}

/// ko's ID for an OCI object: `SPDXRef-Package-sha256-<hex>`.
fn oci_id(digest: &Digest) -> String {
    format!("SPDXRef-Package-sha256-{}", digest.hex())
}

/// An image or index: named by its repository when known, else by its digest (ko's name).
fn oci_package(digest: &Digest, repository: Option<&str>) -> Package {
    Package {
        id: oci_id(digest),
        name: repository.unwrap_or(digest.as_str()).to_string(),
        version: digest.to_string(),
        files_analyzed: false,
        license_declared: NOASSERTION.into(),
        license_concluded: NOASSERTION.into(),
        download_location: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        primary_purpose: "CONTAINER".into(),
        checksums: vec![Checksum {
            algorithm: "SHA256".into(),
            value: digest.hex().into(),
        }],
        external_refs: Vec::new(),
        comment: String::new(),
    }
}

/// A Go module, or what replaces it: a module replacement is what the binary holds, so it is
/// described; a directory replacement has no module identity, so the original is named, with
/// no purl or checksum, and a comment says where the code came from.
fn module_package(id: &str, m: &Module) -> Package {
    let (described, comment) = match m.replace.as_deref() {
        Some(r) if is_local_path(&r.path) => (
            Module {
                replace: None,
                sum: String::new(),
                ..m.clone()
            },
            format!("replaced by the local directory {}", r.path),
        ),
        Some(r) => (
            r.clone(),
            format!("replaces {} {}", m.path, m.version)
                .trim()
                .to_string(),
        ),
        None => (m.clone(), String::new()),
    };
    let local = m.replace.as_deref().is_some_and(|r| is_local_path(&r.path));
    Package {
        id: id.into(),
        name: described.path.clone(),
        version: described.version.clone(),
        files_analyzed: false,
        license_declared: NOASSERTION.into(),
        license_concluded: NOASSERTION.into(),
        download_location: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        primary_purpose: String::new(),
        checksums: h1_to_sha256(&described.sum)
            .map(|value| Checksum {
                algorithm: "SHA256".into(),
                value,
            })
            .into_iter()
            .collect(),
        external_refs: if local || described.path.is_empty() {
            Vec::new()
        } else {
            vec![purl(go_purl(&described))]
        },
        comment,
    }
}

/// Go's rule (`modfile.IsDirectoryPath`): a replacement path that is a directory.
fn is_local_path(path: &str) -> bool {
    path.starts_with("./")
        || path.starts_with("../")
        || path.starts_with('/')
        || path == "."
        || path == ".."
        || path.starts_with(".\\")
        || path.starts_with("..\\")
        || path.get(1..3) == Some(":\\")
}

/// The hex sha256 inside Go's `h1:<base64>` module sum.
fn h1_to_sha256(sum: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sum.strip_prefix("h1:")?)
        .ok()?;
    (bytes.len() == 32).then(|| crate::digest::to_hex(&bytes))
}

/// Package IDs must be `SPDXRef-` plus letters, digits, `.` and `-`, and unique; module paths
/// and versions hold other characters (`(devel)`, `+incompatible`, `_`, `~`).
#[derive(Default)]
struct IdSet(std::collections::BTreeSet<String>);

impl IdSet {
    fn module_id(&mut self, m: &Module) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
                    '/' => '.',
                    _ => '-',
                })
                .collect()
        };
        let base = format!("SPDXRef-Package-{}-{}", clean(&m.path), clean(&m.version));
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn purl(locator: String) -> ExternalRef {
    ExternalRef {
        category: "PACKAGE-MANAGER".into(),
        locator,
        kind: "purl".into(),
    }
}

/// `pkg:golang/<path>[@<version>]?type=module`, the first two path elements lowercased as the
/// purl spec asks (ko's rule); a `(devel)` version is left out, it names no release.
fn go_purl(m: &Module) -> String {
    let mut parts: Vec<String> = m.path.split('/').map(str::to_string).collect();
    if parts.len() > 2 {
        parts[0] = parts[0].to_lowercase();
        parts[1] = parts[1].to_lowercase();
    }
    let path: Vec<String> = parts.iter().map(|p| escape(p, "")).collect();
    let version = if m.version.is_empty() || m.version == "(devel)" {
        String::new()
    } else {
        format!("@{}", escape(&m.version, ""))
    };
    format!("pkg:golang/{}{version}?type=module", path.join("/"))
}

/// `pkg:oci/<last repository element>@sha256:<hex>[?<qualifiers>]`, qualifiers sorted by key.
fn oci_purl(repository: Option<&str>, digest: &Digest, qualifiers: &[(&str, String)]) -> String {
    let name = repository
        .and_then(|r| r.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .unwrap_or("image")
        .to_lowercase();
    let mut purl = format!("pkg:oci/{}@{digest}", escape(&name, ""));
    let mut qualifiers: Vec<&(&str, String)> =
        qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    qualifiers.sort();
    for (i, (k, v)) in qualifiers.into_iter().enumerate() {
        purl.push(if i == 0 { '?' } else { '&' });
        purl.push_str(&format!("{k}={}", escape(v, "/:")));
    }
    purl
}

fn repo_qualifiers(repository: Option<&str>, tag: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(r) = repository {
        q.push(("repository_url", r.to_string()));
    }
    if let Some(t) = tag {
        q.push(("tag", t.to_string()));
    }
    q
}

fn platform_qualifiers(p: &Platform) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("arch", p.architecture.clone()),
        ("os", p.os.clone()),
        ("variant", p.variant.clone()),
        ("os-version", p.os_version.clone()),
    ];
    q.extend(p.os_features.iter().map(|f| ("os-feature", f.clone())));
    q
}

/// Percent-encodes all but purl's unreserved characters and `keep`.
fn escape(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::buildinfo;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn image() -> ImageInfo {
        ImageInfo {
            digest: digest('a'),
            repository: Some("reg.example:5000/apps/hello".into()),
            tag: Some("v1".into()),
        }
    }

    const APP: &str = "x: go1.26.8\n\tpath\texample.com/App/cmd\n\
        \tmod\texample.com/App\t(devel)\t\n\
        \tdep\tgithub.com/Foo/Bar\tv1.0.0+incompatible\th1:ofyhxvXcZhMsU5ulbFiLKl/XBFqE1GSq7atu8tAmTRI=\n\
        \tdep\texample.com/dep\tv1.2.3\n\t=>\t../dep\t(devel)\t\n\
        \tdep\tgithub.com/google/go-cmp\tv0.6.0\n\
        \t=>\tgithub.com/google/go-cmp\tv0.7.0\th1:wk8382ETsv4JYUZwIsn6YpYiWiBsYLSJiTsyBybVuN8=\n";

    #[test]
    fn image_document_has_every_module_and_the_base() {
        let base = BaseInfo {
            name: "reg.example:5000/base/static:v1".into(),
            digest: digest('b'),
        };
        let doc = document(
            &image(),
            Some(&base),
            &buildinfo::parse(APP),
            "2023-11-14T17:13:20.5-05:00",
        );
        let v: serde_json::Value = serde_json::from_slice(&doc.to_bytes()).unwrap();
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            v["documentNamespace"],
            format!("https://spdx.org/spdxdocs/kobuild/{}", digest('a'))
        );
        let purls: Vec<&str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .unwrap_or("-")
            })
            .collect();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(
            purls,
            [
                format!(
                    "pkg:oci/hello@sha256:{a}?repository_url=reg.example:5000/apps/hello&tag=v1"
                )
                .as_str(),
                &format!(
                    "pkg:oci/static@sha256:{b}?repository_url=reg.example:5000/base/static&tag=v1"
                ),
                "pkg:golang/example.com/App?type=module",
                "-",
                "pkg:golang/github.com/foo/Bar@v1.0.0%2Bincompatible?type=module",
                "pkg:golang/github.com/google/go-cmp@v0.7.0?type=module",
            ]
        );
        let p = &v["packages"];
        assert_eq!(p[3]["name"], "example.com/dep");
        assert_eq!(p[3]["comment"], "replaced by the local directory ../dep");
        assert!(p[3].get("checksums").is_none());
        assert_eq!(
            p[4]["checksums"][0]["checksumValue"],
            "a1fca1c6f5dc66132c539ba56c588b2a5fd7045a84d464aaedab6ef2d0264d12"
        );
        assert_eq!(p[5]["comment"], "replaces github.com/google/go-cmp v0.6.0");
        assert_eq!(
            p[4]["SPDXID"],
            "SPDXRef-Package-github.com.Foo.Bar-v1.0.0-incompatible"
        );
        assert_eq!(p[2]["SPDXID"], "SPDXRef-Package-example.com.App--devel-");
        let rels: Vec<String> = v["relationships"]
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
            .collect();
        let img = format!("SPDXRef-Package-sha256-{a}");
        let main = "SPDXRef-Package-example.com.App--devel-";
        assert_eq!(
            rels,
            [
                format!("SPDXRef-DOCUMENT DESCRIBES {img}"),
                format!("{img} DESCENDANT_OF SPDXRef-Package-sha256-{b}"),
                format!("{img} CONTAINS {main}"),
                format!("{main} DEPENDS_ON SPDXRef-Package-example.com.dep-v1.2.3"),
                format!("{main} DEPENDS_ON SPDXRef-Package-github.com.Foo.Bar-v1.0.0-incompatible"),
                format!("{main} DEPENDS_ON SPDXRef-Package-github.com.google.go-cmp-v0.6.0"),
            ]
        );
    }

    #[test]
    fn same_input_same_bytes() {
        let info = buildinfo::parse(APP);
        let one = document(&image(), None, &info, "2024-01-01T00:00:00Z").to_bytes();
        let mut shuffled = info.clone();
        shuffled.deps.reverse();
        let two = document(&image(), None, &shuffled, "2024-01-01T00:00:00Z").to_bytes();
        assert_eq!(one, two);
        assert!(one.ends_with(b"}\n"));
    }

    #[test]
    fn ids_stay_unique_and_valid() {
        let mut ids = IdSet::default();
        let m = |p: &str, v: &str| Module {
            path: p.into(),
            version: v.into(),
            ..Default::default()
        };
        assert_eq!(
            ids.module_id(&m("a/b_c", "v1~x")),
            "SPDXRef-Package-a.b-c-v1-x"
        );
        assert_eq!(
            ids.module_id(&m("a/b~c", "v1_x")),
            "SPDXRef-Package-a.b-c-v1-x-2"
        );
        assert_eq!(
            ids.module_id(&m("a/b~c", "v1+x")),
            "SPDXRef-Package-a.b-c-v1-x-3"
        );
    }

    #[test]
    fn index_document_lists_variants() {
        let mut arm = Descriptor::new(crate::image::oci::OCI_MANIFEST, 10, digest('c'));
        arm.platform = Some(Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: "v7".into(),
            ..Default::default()
        });
        let mut amd = Descriptor::new(crate::image::oci::OCI_MANIFEST, 10, digest('d'));
        amd.platform = Some(Platform {
            os: "windows".into(),
            architecture: "amd64".into(),
            os_version: "10.0.17763".into(),
            ..Default::default()
        });
        let index = ImageInfo {
            digest: digest('e'),
            repository: None,
            tag: None,
        };
        let doc = index_document(&index, None, &[arm, amd], "bad time");
        assert_eq!(doc.creation_info.created, "0001-01-01T00:00:00Z");
        assert_eq!(doc.packages.len(), 3);
        assert_eq!(doc.packages[0].name, digest('e').to_string());
        assert_eq!(doc.packages[1].version, "linux/arm/v7");
        assert_eq!(
            doc.packages[1].external_refs[0].locator,
            format!("pkg:oci/image@{}?arch=arm&os=linux&variant=v7", digest('c'))
        );
        assert_eq!(doc.packages[2].version, "windows/amd64:10.0.17763");
        assert_eq!(
            doc.packages[2].external_refs[0].locator,
            format!(
                "pkg:oci/image@{}?arch=amd64&os=windows&os-version=10.0.17763",
                digest('d')
            )
        );
        let kinds: Vec<&str> = doc.relationships.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["DESCRIBES", "VARIANT_OF", "VARIANT_OF"]);
    }

    #[test]
    fn timestamps_become_utc_seconds() {
        for (input, want) in [
            ("1970-01-01T00:00:00Z", Some("1970-01-01T00:00:00Z")),
            ("2024-02-29T23:30:00-01:00", Some("2024-03-01T00:30:00Z")),
            (
                "2024-01-01T00:10:00.999+01:00",
                Some("2023-12-31T23:10:00Z"),
            ),
            ("0001-01-01T00:00:00Z", Some("0001-01-01T00:00:00Z")),
            ("2024-13-01T00:00:00Z", None),
            ("yesterday", None),
        ] {
            assert_eq!(timestamp(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn module_sums_decode_to_hex() {
        assert_eq!(
            h1_to_sha256("h1:wk8382ETsv4JYUZwIsn6YpYiWiBsYLSJiTsyBybVuN8=").as_deref(),
            Some("c24f37f36113b2fe0961467022c9fa6296225a206c60b489893b320726d5b8df")
        );
        assert_eq!(h1_to_sha256("h2:abc"), None);
        assert_eq!(h1_to_sha256("h1:!!"), None);
        assert_eq!(h1_to_sha256("h1:YWJj"), None);
    }
}
