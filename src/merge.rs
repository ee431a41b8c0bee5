//! `kobuild merge`: matrix builds push per-platform images by digest, each job writing an
//! artifacts.json; merge reads those files, assembles one index per image, pushes it by
//! digest, attaches its SBOM, then tags it.
//!
//! Everything is fetched and checked before anything is pushed, so bad input (two images for
//! one platform, several repositories, mixed media types) leaves the registry untouched.
//! Index entries are sorted by platform, so the digest does not depend on the order of the
//! files.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::future::try_join_all;
use serde::Deserialize;

use crate::cli::{MergeArgs, SbomFormat};
use crate::digest::Digest;
use crate::image::oci::{
    self, ConfigFile, DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Index, Manifest, OCI_INDEX,
    OCI_MANIFEST, Platform,
};
use crate::plan::{Env, RegistryAccess};
use crate::publish::PublishError;
use crate::registry::{Client, Reference, RegistryError, Repository, valid_tag};
use crate::report::{self, Artifact};
use crate::sbom::{self, spdx::platform_string};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(
        "{file} is not an artifacts.json ({{\"builds\":[{{\"imageName\",\"tag\"}}]}}): {reason}"
    )]
    Parse { file: String, reason: String },
    #[error("{file}: image {image}: {reason}")]
    Entry {
        file: String,
        image: String,
        reason: String,
    },
    #[error("no images in {files}")]
    Empty { files: String },
    #[error(
        "--tag {tag:?} is not a valid tag: use letters, digits, '_', '.', '-' (at most 128, \
         not starting with '.' or '-')"
    )]
    Tag { tag: String },
    #[error(
        "image {}: {} and {} are in different repositories; one index needs one repository",
        .0.image, .0.first, .0.second
    )]
    Repositories(Box<Conflict>),
    #[error(
        "image {}: platform {platform} twice, from {} and {}; each platform may come from one \
         build only",
        conflict.image, conflict.first, conflict.second
    )]
    DuplicatePlatform {
        platform: String,
        conflict: Box<Conflict>,
    },
    #[error(
        "image {}: cannot put OCI and Docker manifests in one index: {} is OCI, {} is Docker; \
         build all platforms on one kind of base",
        .0.image, .0.first, .0.second
    )]
    MixedMediaTypes(Box<Conflict>),
    #[error("image {image}: {reference} ({file}) is {media_type:?}, not an image or an index")]
    Unsupported {
        image: String,
        reference: String,
        file: String,
        media_type: String,
    },
    #[error("image {image}: {reference}: {reason}")]
    Invalid {
        image: String,
        reference: String,
        reason: String,
    },
    #[error("registry setup: {0}")]
    Client(RegistryError),
    #[error(transparent)]
    Option(#[from] crate::plan::PlanError),
    #[error("{repo}: {source}")]
    Registry { repo: String, source: RegistryError },
    #[error(transparent)]
    Output(#[from] PublishError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
}

/// Two inputs of one image that cannot go into one index, each as `ref (file)`.
#[derive(Debug)]
pub struct Conflict {
    pub image: String,
    pub first: String,
    pub second: String,
}

impl Conflict {
    fn new(image: &str, first: &Input, second: &Input) -> Box<Conflict> {
        Box::new(Conflict {
            image: image.into(),
            first: format!("{} ({})", first.written, first.file),
            second: format!("{} ({})", second.written, second.file),
        })
    }
}

impl MergeError {
    /// Wrong input (files, flags, what the files name); registry failures and writing the
    /// output are not.
    pub fn is_config(&self) -> bool {
        !matches!(
            self,
            MergeError::Invalid { .. }
                | MergeError::Registry { .. }
                | MergeError::Output(_)
                | MergeError::Sbom(_)
        )
    }
}

/// One artifacts.json entry, with the file it came from for error messages.
#[derive(Clone, Debug)]
struct Input {
    file: String,
    written: String,
    reference: Reference,
}

/// A manifest going into the index, and the input it came from.
#[derive(Clone, Debug)]
struct Child {
    descriptor: Descriptor,
    platform: Platform,
    /// The image config's `created`, when it was fetched (the index SBOM's date).
    created: Option<String>,
    from: Input,
}

/// An index ready to push.
struct Merged {
    image_name: String,
    repo: Repository,
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
    tags: Vec<String>,
    entries: Vec<Descriptor>,
    /// The newest `created` of the children: the index SBOM's date, as a build's.
    created: String,
}

/// Merges the images the artifacts files name; returns one artifact per image, whose `tag`
/// is `repo:tag@sha256:<index digest>`, and writes them to `--file-output` if given.
/// `env` supplies DOCKER_CONFIG and HOME for credentials; relative paths are from `cwd`.
pub async fn run(args: &MergeArgs, env: &Env, cwd: &Path) -> Result<Vec<Artifact>, MergeError> {
    let mut groups: Vec<(String, Vec<Input>)> = Vec::new();
    for path in &args.artifacts {
        for (image, input) in read_artifacts(&cwd.join(path), &path.display().to_string())? {
            match groups.iter_mut().find(|(name, _)| *name == image) {
                Some((_, inputs)) => inputs.push(input),
                None => groups.push((image, vec![input])),
            }
        }
    }
    if groups.is_empty() {
        let files: Vec<String> = args
            .artifacts
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Err(MergeError::Empty {
            files: files.join(", "),
        });
    }
    if let Some(tag) = args.tags.iter().find(|t| !valid_tag(t)) {
        return Err(MergeError::Tag { tag: tag.clone() });
    }
    let client = client(args, env, cwd)?;
    let mut merged = Vec::new();
    for (image, inputs) in &groups {
        merged.push(prepare(&client, image, inputs, &args.tags).await?);
    }
    let mut artifacts = Vec::new();
    for m in &merged {
        let reg = |source| MergeError::Registry {
            repo: m.repo.to_string(),
            source,
        };
        client
            .put_manifest(&m.repo, m.digest.as_str(), &m.media_type, &m.bytes)
            .await
            .map_err(reg)?;
        // Before the tags, so no tag points at an index without its SBOM.
        if args.sbom != SbomFormat::None {
            attach_sbom(&client, m).await?;
        }
        for tag in &m.tags {
            client
                .put_manifest(&m.repo, tag, &m.media_type, &m.bytes)
                .await
                .map_err(reg)?;
        }
        artifacts.push(Artifact {
            image_name: m.image_name.clone(),
            tag: format!("{}:{}@{}", m.repo, m.tags[0], m.digest),
        });
    }
    if let Some(path) = &args.file_output {
        report::write_artifacts(&cwd.join(path), &artifacts)?;
    }
    Ok(artifacts)
}

/// The same SPDX document a multi-platform build attaches to its index.
async fn attach_sbom(client: &Client, m: &Merged) -> Result<(), MergeError> {
    let info = sbom::ImageInfo {
        digest: m.digest.clone(),
        repository: Some(m.repo.to_string()),
        tag: m.tags.first().cloned(),
    };
    let doc = sbom::index_document(&info, None, &m.entries, &m.created).to_bytes();
    let subject = Descriptor::new(&m.media_type, m.bytes.len() as u64, m.digest.clone());
    sbom::attach(client, &m.repo, &subject, &doc, &m.created).await?;
    Ok(())
}

/// The entries of one artifacts.json, as (imageName, input).
fn read_artifacts(path: &Path, file: &str) -> Result<Vec<(String, Input)>, MergeError> {
    #[derive(Deserialize)]
    struct BuildOutput {
        builds: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "imageName")]
        image_name: String,
        tag: String,
    }
    let bytes =
        crate::fsutil::read_bounded(path, crate::fsutil::MAX_CONFIG_BYTES).map_err(|source| {
            MergeError::Read {
                file: file.to_string(),
                source,
            }
        })?;
    let parsed: BuildOutput = serde_json::from_slice(&bytes).map_err(|e| MergeError::Parse {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    parsed
        .builds
        .into_iter()
        .map(|e| {
            let entry_err = |reason: String| MergeError::Entry {
                file: file.to_string(),
                image: e.image_name.clone(),
                reason,
            };
            let reference = Reference::parse(&e.tag).map_err(|err| entry_err(err.to_string()))?;
            if reference.digest.is_none() {
                return Err(entry_err(format!(
                    "{} has no digest; merge needs the pushed images' digests",
                    e.tag
                )));
            }
            Ok((
                e.image_name.clone(),
                Input {
                    file: file.to_string(),
                    written: e.tag,
                    reference,
                },
            ))
        })
        .collect()
}

/// Fetches every input of one image and builds its index, checking repositories, platforms
/// and media types.
async fn prepare(
    client: &Client,
    image: &str,
    inputs: &[Input],
    tags: &[String],
) -> Result<Merged, MergeError> {
    let first = &inputs[0];
    let repo = first.reference.repository();
    if let Some(other) = inputs.iter().find(|i| i.reference.repository() != repo) {
        return Err(MergeError::Repositories(Conflict::new(image, first, other)));
    }
    let fetched = try_join_all(inputs.iter().map(|i| children(client, image, i))).await?;
    let children: Vec<Child> = fetched.into_iter().flatten().collect();
    // RFC 3339 in UTC to the second sorts by time, so the newest is the largest.
    let created = children
        .iter()
        .filter_map(|c| c.created.clone())
        .max()
        .unwrap_or_else(|| crate::time::ZERO.into());
    let (media_type, manifests) = build_index(image, children)?;
    let index = Index {
        schema_version: 2,
        media_type: media_type.into(),
        manifests: manifests.clone(),
        annotations: BTreeMap::new(),
        subject: None,
    };
    let bytes = crate::gojson::to_vec(&index);
    Ok(Merged {
        image_name: image.into(),
        repo,
        media_type: media_type.into(),
        digest: Digest::of(&bytes),
        bytes,
        tags: if tags.is_empty() {
            vec![default_tag(inputs)]
        } else {
            tags.to_vec()
        },
        entries: manifests,
        created,
    })
}

/// The tag the inputs agree on, else `latest`.
fn default_tag(inputs: &[Input]) -> String {
    let first = inputs[0].reference.tag.as_deref();
    match first {
        Some(t) if inputs.iter().all(|i| i.reference.tag.as_deref() == Some(t)) => t.into(),
        _ => "latest".into(),
    }
}

/// Checks the children of one image and orders them: one per platform, one media type kind.
/// Returns the index media type and its entries.
fn build_index(
    image: &str,
    mut children: Vec<Child>,
) -> Result<(&'static str, Vec<Descriptor>), MergeError> {
    let key = |p: &Platform| {
        (
            p.os.clone(),
            p.architecture.clone(),
            p.variant.clone(),
            p.os_version.clone(),
            p.os_features.clone(),
        )
    };
    children.sort_by_key(|c| key(&c.platform));
    for pair in children.windows(2) {
        if key(&pair[0].platform) == key(&pair[1].platform) {
            return Err(MergeError::DuplicatePlatform {
                platform: platform_string(&pair[0].platform),
                conflict: Conflict::new(image, &pair[0].from, &pair[1].from),
            });
        }
    }
    let oci = children
        .iter()
        .find(|c| c.descriptor.media_type == OCI_MANIFEST);
    let docker = children
        .iter()
        .find(|c| c.descriptor.media_type == DOCKER_MANIFEST);
    let media_type = match (oci, docker) {
        (Some(o), Some(d)) => {
            return Err(MergeError::MixedMediaTypes(Conflict::new(
                image, &o.from, &d.from,
            )));
        }
        (None, Some(_)) => DOCKER_LIST,
        _ => OCI_INDEX,
    };
    Ok((
        media_type,
        children.into_iter().map(|c| c.descriptor).collect(),
    ))
}

/// The platform images an input names: itself, or an index's entries (attestations left out:
/// they belong to the index they came from).
async fn children(client: &Client, image: &str, input: &Input) -> Result<Vec<Child>, MergeError> {
    let repo = input.reference.repository();
    let reg = |source| MergeError::Registry {
        repo: repo.to_string(),
        source,
    };
    let invalid = |reference: &str, reason: String| MergeError::Invalid {
        image: image.into(),
        reference: reference.into(),
        reason,
    };
    let fetched = client.get_manifest(&input.reference).await.map_err(reg)?;
    if oci::is_image_manifest(&fetched.media_type) {
        let (descriptor, platform, created) = image_child(
            client,
            &repo,
            &fetched.bytes,
            &fetched.media_type,
            &fetched.digest,
        )
        .await
        .map_err(|e| match e {
            Fetch::Registry(source) => reg(source),
            Fetch::Invalid(reason) => invalid(&input.written, reason),
        })?;
        return Ok(vec![Child {
            descriptor,
            platform,
            created,
            from: input.clone(),
        }]);
    }
    if !oci::is_index(&fetched.media_type) {
        return Err(MergeError::Unsupported {
            image: image.into(),
            reference: input.written.clone(),
            file: input.file.clone(),
            media_type: fetched.media_type,
        });
    }
    let index: Index = serde_json::from_slice(&fetched.bytes)
        .map_err(|e| invalid(&input.written, format!("not a valid index: {e}")))?;
    let mut out = Vec::new();
    for d in index.manifests.into_iter().filter(|d| !is_attestation(d)) {
        let mut created = None;
        let child_ref = format!("{repo}@{}", d.digest);
        if !oci::is_image_manifest(&d.media_type) {
            return Err(MergeError::Unsupported {
                image: image.into(),
                reference: child_ref,
                file: input.file.clone(),
                media_type: d.media_type,
            });
        }
        let platform = match &d.platform {
            Some(p) if !p.os.is_empty() && !p.architecture.is_empty() => p.clone(),
            // No platform in the entry: the image's config has it.
            _ => {
                let reference = Reference {
                    digest: Some(d.digest.clone()),
                    tag: None,
                    ..input.reference.clone()
                };
                let m = client.get_manifest(&reference).await.map_err(reg)?;
                let (_, platform, config_created) =
                    image_child(client, &repo, &m.bytes, &m.media_type, &m.digest)
                        .await
                        .map_err(|e| match e {
                            Fetch::Registry(source) => reg(source),
                            Fetch::Invalid(reason) => invalid(&child_ref, reason),
                        })?;
                created = config_created;
                platform
            }
        };
        let mut descriptor = d;
        descriptor.platform = Some(platform.clone());
        out.push(Child {
            descriptor,
            platform,
            created,
            from: input.clone(),
        });
    }
    Ok(out)
}

enum Fetch {
    Registry(RegistryError),
    Invalid(String),
}

/// An image manifest's index entry, with the platform and `created` its config names.
async fn image_child(
    client: &Client,
    repo: &Repository,
    bytes: &[u8],
    media_type: &str,
    digest: &Digest,
) -> Result<(Descriptor, Platform, Option<String>), Fetch> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Fetch::Invalid(format!("not a valid image manifest: {e}")))?;
    let config_bytes = client
        .get_blob(repo, &manifest.config.digest)
        .await
        .map_err(Fetch::Registry)?;
    let config: ConfigFile = serde_json::from_slice(&config_bytes)
        .map_err(|e| Fetch::Invalid(format!("the image config is not valid: {e}")))?;
    if config.os.is_empty() || config.architecture.is_empty() {
        return Err(Fetch::Invalid(
            "the image config names no os and architecture".into(),
        ));
    }
    let platform = Platform {
        architecture: config.architecture,
        os: config.os,
        os_version: config.os_version,
        os_features: config.os_features,
        variant: config.variant,
        features: Vec::new(),
    };
    let mut d = Descriptor::new(media_type, bytes.len() as u64, digest.clone());
    d.platform = Some(platform.clone());
    // As kobuild's own indexes (and ko's) do.
    d.artifact_type = manifest.config.media_type;
    Ok((d, platform, config.created.0))
}

/// BuildKit's attestation manifests, which sit in an index as `unknown/unknown` entries.
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
}

fn client(args: &MergeArgs, env: &Env, cwd: &Path) -> Result<Client, MergeError> {
    let access = RegistryAccess::new(&args.registry, env, cwd)?;
    access.client().map_err(MergeError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(platform: &str, media_type: &str, file: &str) -> Child {
        let p = crate::platform::Platform::parse(platform).unwrap().to_oci();
        let digest = Digest::of(platform.as_bytes());
        let written = format!("r.io/app:t@{digest}");
        let mut descriptor = Descriptor::new(media_type, 1, digest);
        descriptor.platform = Some(p.clone());
        Child {
            descriptor,
            platform: p,
            created: None,
            from: Input {
                file: file.into(),
                reference: Reference::parse(&written).unwrap(),
                written,
            },
        }
    }

    #[test]
    fn sorts_by_platform_and_picks_the_media_type() {
        let (mt, entries) = build_index(
            "app",
            vec![
                child("linux/arm64", OCI_MANIFEST, "b.json"),
                child("linux/amd64", OCI_MANIFEST, "a.json"),
                child("linux/arm/v7", OCI_MANIFEST, "c.json"),
            ],
        )
        .unwrap();
        assert_eq!(mt, OCI_INDEX);
        let platforms: Vec<String> = entries
            .iter()
            .map(|d| platform_string(d.platform.as_ref().unwrap()))
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
        let (mt, _) = build_index("app", vec![child("linux/amd64", DOCKER_MANIFEST, "a")]).unwrap();
        assert_eq!(mt, DOCKER_LIST);
    }

    #[test]
    fn refuses_duplicates_and_mixtures() {
        let e = build_index(
            "app",
            vec![
                child("linux/amd64", OCI_MANIFEST, "a.json"),
                child("linux/arm64", OCI_MANIFEST, "b.json"),
                child("linux/amd64", OCI_MANIFEST, "c.json"),
            ],
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("image app: platform linux/amd64 twice"),
            "{msg}"
        );
        assert!(
            msg.contains("(a.json)") && msg.contains("(c.json)"),
            "{msg}"
        );
        assert!(e.is_config());
        let e = build_index(
            "app",
            vec![
                child("linux/amd64", OCI_MANIFEST, "a.json"),
                child("linux/arm64", DOCKER_MANIFEST, "b.json"),
            ],
        )
        .unwrap_err();
        assert!(matches!(e, MergeError::MixedMediaTypes(_)), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn default_tag_is_the_agreed_one() {
        let input = |r: &str| Input {
            file: "f".into(),
            written: r.into(),
            reference: Reference::parse(r).unwrap(),
        };
        let d = Digest::of(b"x");
        let a = input(&format!("r.io/app:v1@{d}"));
        let b = input(&format!("r.io/app:v2@{d}"));
        let none = input(&format!("r.io/app@{d}"));
        assert_eq!(default_tag(&[a.clone(), a.clone()]), "v1");
        assert_eq!(default_tag(&[a, b]), "latest");
        assert_eq!(default_tag(&[none]), "latest");
    }

    #[test]
    fn reads_artifacts_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"x");
        let path = dir.path().join("a.json");
        std::fs::write(
            &path,
            format!(r#"{{"builds":[{{"imageName":"ko://ex.com/app","tag":"r.io/app:v1@{d}"}}]}}"#),
        )
        .unwrap();
        let entries = read_artifacts(&path, "a.json").unwrap();
        assert_eq!(entries[0].0, "ko://ex.com/app");
        assert_eq!(entries[0].1.reference.digest, Some(d));

        std::fs::write(
            &path,
            r#"{"builds":[{"imageName":"app","tag":"r.io/app:v1"}]}"#,
        )
        .unwrap();
        let e = read_artifacts(&path, "a.json").unwrap_err().to_string();
        assert_eq!(
            e,
            "a.json: image app: r.io/app:v1 has no digest; merge needs the pushed images' digests"
        );
        std::fs::write(&path, "[]").unwrap();
        assert!(matches!(
            read_artifacts(&path, "a.json"),
            Err(MergeError::Parse { .. })
        ));
        assert!(matches!(
            read_artifacts(&dir.path().join("missing.json"), "missing.json"),
            Err(MergeError::Read { .. })
        ));
    }

    #[test]
    fn attestations_are_recognized() {
        let mut d = Descriptor::new(OCI_MANIFEST, 1, Digest::of(b"a"));
        assert!(!is_attestation(&d));
        d.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        assert!(is_attestation(&d));
    }
}
