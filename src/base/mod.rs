//! Base images: `scratch`, a registry reference, or a local OCI layout, resolved to the
//! manifest and config for one platform.

use std::fs;
use std::path::{Path, PathBuf};

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::image::assemble::BaseImage;
use crate::image::oci::{self, ConfigFile, Index, Manifest};
use crate::platform::{Platform, Platforms};
use crate::registry::{Client, Reference, RegistryError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseSpec {
    Scratch,
    Registry(Reference),
    Layout {
        dir: PathBuf,
        selector: LayoutSelector,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutSelector {
    Only,
    Tag(String),
    Digest(Digest),
}

#[derive(Clone, Debug)]
pub struct ResolvedBase {
    /// Set when the result is an index: the base index's reference and media type.
    pub index: Option<IndexInfo>,
    /// One per platform to build, in the base's order.
    pub children: Vec<BaseChild>,
    pub blobs: BlobStore,
    /// The digest of what the spec named (index or image); `None` for `scratch`.
    pub digest: Option<Digest>,
}

#[derive(Clone, Debug)]
pub struct IndexInfo {
    /// The base index's name and digest, for annotations; `None` for `scratch`.
    pub reference: Option<(String, Digest)>,
    pub media_type: String,
}

#[derive(Clone, Debug)]
pub struct BaseChild {
    pub platform: Platform,
    /// The base index's descriptor for this child, kept for the output index.
    pub descriptor: Option<oci::Descriptor>,
    pub image: BaseImage,
}

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("invalid base {input:?}: {reason}")]
    Spec { input: String, reason: String },
    #[error("base {base}: {source}")]
    Registry { base: String, source: RegistryError },
    #[error("base {base}: {reason}")]
    Layout { base: String, reason: String },
    #[error("base {base} has no image for {wanted}; it offers: {offered}")]
    NoPlatform {
        base: String,
        wanted: String,
        offered: String,
    },
    #[error(
        "base {base} is for {have}, not {wanted}: pick a base for {wanted} or change --platform"
    )]
    WrongPlatform {
        base: String,
        have: String,
        wanted: String,
    },
    #[error("base {base}: {what} is not valid: {reason}")]
    Invalid {
        base: String,
        what: String,
        reason: String,
    },
}

const LAYOUT_PREFIX: &str = "oci-layout:";

impl BaseError {
    /// Errors in what the user asked for, as opposed to failures reaching the base.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            BaseError::Spec { .. } | BaseError::NoPlatform { .. } | BaseError::WrongPlatform { .. }
        )
    }
}

impl BaseSpec {
    pub fn parse(input: &str) -> Result<Self, BaseError> {
        let spec_err = |reason: String| BaseError::Spec {
            input: input.to_string(),
            reason,
        };
        if input == "scratch" {
            return Ok(BaseSpec::Scratch);
        }
        if let Some(rest) = input.strip_prefix(LAYOUT_PREFIX) {
            let (dir, selector) = if let Some((d, digest)) = rest.rsplit_once('@') {
                let digest = Digest::parse(digest).map_err(|e| spec_err(e.to_string()))?;
                (d, LayoutSelector::Digest(digest))
            } else {
                match rest.rsplit_once(':') {
                    Some((d, tag)) if !tag.is_empty() && !tag.contains('/') => {
                        (d, LayoutSelector::Tag(tag.into()))
                    }
                    _ => (rest, LayoutSelector::Only),
                }
            };
            if dir.is_empty() {
                return Err(spec_err(
                    "expected oci-layout:PATH[:TAG|@sha256:DIGEST]".into(),
                ));
            }
            return Ok(BaseSpec::Layout {
                dir: PathBuf::from(dir),
                selector,
            });
        }
        Reference::parse(input)
            .map(BaseSpec::Registry)
            .map_err(|e| spec_err(e.to_string()))
    }
}

/// Resolve `spec` for the requested platforms, as ko does: an index yields its matching
/// children in the base's order (one match gives a single image); a single-platform base
/// must itself match. Every requested platform must be found.
///
/// A registry base's manifests and config are kept in the blob cache under `cache` by
/// digest: once the tag's HEAD names a known digest, nothing else is fetched.
pub async fn resolve(
    spec: &BaseSpec,
    platforms: &Platforms,
    client: &Client,
    cache: &Path,
) -> Result<ResolvedBase, BaseError> {
    match spec {
        BaseSpec::Scratch => scratch(platforms),
        BaseSpec::Registry(r) => {
            resolve_from(
                &Source::Registry {
                    client,
                    reference: r,
                    cache: Some(cache),
                },
                platforms,
            )
            .await
        }
        BaseSpec::Layout { dir, selector } => {
            resolve_from(&Source::Layout { dir, selector }, platforms).await
        }
    }
}

/// What `spec` names right now, as cheaply as that can be known (a HEAD of a tag, a read
/// of a layout's index.json): the artifact cache compares it with [`ResolvedBase::digest`].
pub async fn current_digest(spec: &BaseSpec, client: &Client) -> Result<Option<Digest>, BaseError> {
    match spec {
        BaseSpec::Scratch => Ok(None),
        BaseSpec::Registry(r) => {
            if let Some(d) = &r.digest {
                return Ok(Some(d.clone()));
            }
            let source = Source::Registry {
                client,
                reference: r,
                cache: None,
            };
            match client
                .head_manifest(&r.repository(), r.reference_str())
                .await
            {
                Ok(Some((digest, _, _))) => Ok(Some(digest)),
                Ok(None) => Err(source.invalid("manifest", "not found")),
                Err(e) => Err(source.reg_err(e)),
            }
        }
        BaseSpec::Layout { dir, selector } => {
            let source = Source::Layout { dir, selector };
            let index_path = dir.join("index.json");
            let index: Index = fs::read(&index_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    source.layout_err(format!("cannot read {}", index_path.display()))
                })?;
            let desc = pick_layout_entry(&index, selector).map_err(|r| source.layout_err(r))?;
            Ok(Some(desc.digest.clone()))
        }
    }
}

fn scratch(platforms: &Platforms) -> Result<ResolvedBase, BaseError> {
    let Platforms::List(list) = platforms else {
        return Err(BaseError::Spec {
            input: "scratch".into(),
            reason: "--platform all needs a multi-platform base to list the platforms; name them instead".into(),
        });
    };
    let children = list
        .iter()
        .map(|p| BaseChild {
            platform: p.clone(),
            descriptor: None,
            image: crate::image::assemble::scratch(p),
        })
        .collect();
    let index = (list.len() > 1).then(|| IndexInfo {
        reference: None,
        media_type: oci::OCI_INDEX.into(),
    });
    Ok(ResolvedBase {
        index,
        children,
        blobs: BlobStore::None,
        digest: None,
    })
}

enum Source<'a> {
    Registry {
        client: &'a Client,
        reference: &'a Reference,
        /// The blob cache; `None` when only the reference's current digest is wanted.
        cache: Option<&'a Path>,
    },
    Layout {
        dir: &'a Path,
        selector: &'a LayoutSelector,
    },
}

impl Source<'_> {
    fn name(&self) -> String {
        match self {
            Source::Registry { reference, .. } => reference.name(),
            Source::Layout { dir, selector } => {
                let d = dir.display();
                match selector {
                    LayoutSelector::Only => format!("{LAYOUT_PREFIX}{d}"),
                    LayoutSelector::Tag(t) => format!("{LAYOUT_PREFIX}{d}:{t}"),
                    LayoutSelector::Digest(g) => format!("{LAYOUT_PREFIX}{d}@{g}"),
                }
            }
        }
    }

    fn blob_store(&self) -> BlobStore {
        match self {
            Source::Registry { reference, .. } => BlobStore::Registry(reference.repository()),
            Source::Layout { dir, .. } => BlobStore::Layout(dir.to_path_buf()),
        }
    }

    /// The top-level manifest: (bytes, media type, digest).
    async fn top(&self) -> Result<(Vec<u8>, String, Digest), BaseError> {
        match self {
            Source::Registry {
                client, reference, ..
            } => {
                let known = match &reference.digest {
                    Some(d) => Some((d.clone(), String::new())),
                    None => client
                        .head_manifest(&reference.repository(), reference.reference_str())
                        .await
                        .map_err(|source| self.reg_err(source))?
                        .map(|(digest, _, media_type)| (digest, media_type)),
                };
                if let Some((digest, served_type)) = known
                    && let Some(bytes) = self.cached(&digest)
                {
                    let media_type = media_type_of(&served_type, &bytes_media_type(&bytes));
                    // Pinned by digest, a body without its media type needs the registry's word.
                    if !media_type.is_empty() {
                        return Ok((bytes, media_type, digest));
                    }
                }
                let f = client
                    .get_manifest(reference)
                    .await
                    .map_err(|source| self.reg_err(source))?;
                self.keep(&f.bytes);
                Ok((f.bytes, f.media_type, f.digest))
            }
            Source::Layout { dir, selector } => {
                let index_path = dir.join("index.json");
                let bytes = fs::read(&index_path).map_err(|e| {
                    self.layout_err(format!("cannot read {}: {e}", index_path.display()))
                })?;
                let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
                    self.layout_err(format!("{} is not an OCI index: {e}", index_path.display()))
                })?;
                let desc = pick_layout_entry(&index, selector).map_err(|r| self.layout_err(r))?;
                let bytes = self.blob(&desc.digest).await?;
                let media_type = media_type_of(&desc.media_type, &bytes_media_type(&bytes));
                Ok((bytes, media_type, desc.digest.clone()))
            }
        }
    }

    /// A manifest by digest: (bytes, media type as the body states it, or empty).
    async fn manifest(&self, digest: &Digest) -> Result<(Vec<u8>, String), BaseError> {
        match self {
            Source::Registry {
                client, reference, ..
            } => {
                if let Some(bytes) = self.cached(digest) {
                    let mt = bytes_media_type(&bytes);
                    return Ok((bytes, mt));
                }
                let mut r = (*reference).clone();
                r.digest = Some(digest.clone());
                let f = client
                    .get_manifest(&r)
                    .await
                    .map_err(|source| self.reg_err(source))?;
                self.keep(&f.bytes);
                Ok((f.bytes, f.media_type))
            }
            Source::Layout { .. } => {
                let bytes = self.blob(digest).await?;
                let mt = bytes_media_type(&bytes);
                Ok((bytes, mt))
            }
        }
    }

    async fn blob(&self, digest: &Digest) -> Result<Vec<u8>, BaseError> {
        match self {
            Source::Registry {
                client, reference, ..
            } => {
                if let Some(bytes) = self.cached(digest) {
                    return Ok(bytes);
                }
                let bytes = client
                    .get_blob(&reference.repository(), digest)
                    .await
                    .map_err(|source| self.reg_err(source))?;
                self.keep(&bytes);
                Ok(bytes)
            }
            Source::Layout { dir, .. } => {
                let path = dir.join("blobs/sha256").join(digest.hex());
                let bytes = fs::read(&path).map_err(|e| {
                    self.layout_err(format!("cannot read blob {}: {e}", path.display()))
                })?;
                if Digest::of(&bytes) != *digest {
                    return Err(self
                        .layout_err(format!("blob {} does not match its digest", path.display())));
                }
                Ok(bytes)
            }
        }
    }

    /// Bytes of `digest` from the blob cache, if there and intact (evicted if damaged, to
    /// be fetched and kept again).
    fn cached(&self, digest: &Digest) -> Option<Vec<u8>> {
        let Source::Registry {
            cache: Some(cache), ..
        } = self
        else {
            return None;
        };
        let path = crate::blobs::blob_cache_path(cache, digest);
        let bytes = fs::read(&path).ok()?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            crate::integrity::evict(&path, &format!("its bytes hash to {actual}"));
            return None;
        }
        Some(bytes)
    }

    /// Keeps fetched, verified bytes for the next build; a cache that cannot be written
    /// only costs that build the fetch again.
    fn keep(&self, bytes: &[u8]) {
        if let Source::Registry {
            cache: Some(cache), ..
        } = self
            && let Err(e) = crate::blobs::cache_bytes(cache, bytes)
        {
            tracing::debug!("base not cached: {e}");
        }
    }

    fn reg_err(&self, source: RegistryError) -> BaseError {
        BaseError::Registry {
            base: self.name(),
            source,
        }
    }

    fn layout_err(&self, reason: String) -> BaseError {
        BaseError::Layout {
            base: self.name(),
            reason,
        }
    }

    fn invalid(&self, what: &str, reason: impl ToString) -> BaseError {
        BaseError::Invalid {
            base: self.name(),
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

fn pick_layout_entry<'a>(
    index: &'a Index,
    selector: &LayoutSelector,
) -> Result<&'a oci::Descriptor, String> {
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    let found = match selector {
        LayoutSelector::Digest(d) => index.manifests.iter().find(|m| &m.digest == d),
        LayoutSelector::Tag(t) => index
            .manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME) == Some(t)),
        LayoutSelector::Only if index.manifests.len() == 1 => index.manifests.first(),
        LayoutSelector::Only => {
            return Err(format!(
                "the layout holds {} images: name one as oci-layout:PATH:TAG or oci-layout:PATH@sha256:DIGEST",
                index.manifests.len()
            ));
        }
    };
    found.ok_or_else(|| {
        let tags: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(REF_NAME))
            .map(String::as_str)
            .collect();
        format!(
            "no such image in the layout (tags: {})",
            if tags.is_empty() {
                "none".into()
            } else {
                tags.join(", ")
            }
        )
    })
}

#[derive(serde::Deserialize)]
struct MediaTypeOnly {
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

fn bytes_media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<MediaTypeOnly>(bytes)
        .map(|m| m.media_type)
        .unwrap_or_default()
}

fn media_type_of(declared: &str, in_body: &str) -> String {
    if in_body.is_empty() {
        declared.to_string()
    } else {
        in_body.to_string()
    }
}

async fn resolve_from(
    source: &Source<'_>,
    platforms: &Platforms,
) -> Result<ResolvedBase, BaseError> {
    let name = source.name();
    let (bytes, media_type, digest) = source.top().await?;
    if !oci::is_index(&media_type) {
        let image = image(
            source,
            &bytes,
            &media_type,
            Some((name.clone(), digest.clone())),
        )
        .await?;
        let have = config_platform(&image.config);
        match platforms {
            Platforms::All => {}
            Platforms::List(list) => {
                if let Some(missing) = list.iter().find(|p| !p.matches(&have)) {
                    return Err(BaseError::WrongPlatform {
                        base: name,
                        have: show(&have),
                        wanted: missing.to_string(),
                    });
                }
            }
        }
        let child = BaseChild {
            platform: Platform::from(&have),
            descriptor: None,
            image,
        };
        return Ok(ResolvedBase {
            index: None,
            children: vec![child],
            blobs: source.blob_store(),
            digest: Some(digest),
        });
    }

    let index: Index = serde_json::from_slice(&bytes).map_err(|e| source.invalid("index", e))?;
    let chosen = select_children(&index, platforms, &name)?;
    // Fetched side by side: a round trip each, against a remote registry.
    let children = futures_util::future::try_join_all(chosen.iter().map(|d| async {
        let (b, mt) = source.manifest(&d.digest).await?;
        let mt = media_type_of(&d.media_type, &mt);
        let image = image(source, &b, &mt, Some((name.clone(), d.digest.clone()))).await?;
        let platform = Platform::from(
            d.platform
                .as_ref()
                .expect("selected children have a platform"),
        );
        Ok::<_, BaseError>(BaseChild {
            platform,
            descriptor: Some((*d).clone()),
            image,
        })
    }))
    .await?;
    // One match gives a single image, as ko does.
    let index = (children.len() > 1).then_some(IndexInfo {
        reference: Some((name, digest.clone())),
        media_type,
    });
    Ok(ResolvedBase {
        index,
        children,
        blobs: source.blob_store(),
        digest: Some(digest),
    })
}

async fn image(
    source: &Source<'_>,
    bytes: &[u8],
    media_type: &str,
    reference: Option<(String, Digest)>,
) -> Result<BaseImage, BaseError> {
    if !oci::is_image_manifest(media_type) {
        return Err(source.invalid("manifest", format!("unsupported media type {media_type:?}")));
    }
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| source.invalid("manifest", e))?;
    let config_bytes = source.blob(&manifest.config.digest).await?;
    let config: ConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|e| source.invalid("config", e))?;
    Ok(BaseImage {
        reference,
        media_type: media_type.to_string(),
        manifest,
        config,
    })
}

fn config_platform(c: &ConfigFile) -> oci::Platform {
    oci::Platform {
        architecture: c.architecture.clone(),
        os: c.os.clone(),
        os_version: c.os_version.clone(),
        variant: c.variant.clone(),
        ..Default::default()
    }
}

fn show(p: &oci::Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        s = format!("{s}/{}", p.variant);
    }
    if !p.os_version.is_empty() {
        s = format!("{s}:{}", p.os_version);
    }
    s
}

/// The children of `index` wanted by `platforms`, in the index's order, skipping attestation
/// (`unknown/unknown`) entries. Every platform of a list must match at least one child.
pub fn select_children<'a>(
    index: &'a Index,
    platforms: &Platforms,
    base: &str,
) -> Result<Vec<&'a oci::Descriptor>, BaseError> {
    let mut chosen = Vec::new();
    let mut offered = Vec::new();
    for m in &index.manifests {
        if oci::is_index(&m.media_type) {
            return Err(BaseError::Invalid {
                base: base.into(),
                what: "index".into(),
                reason: format!("nested index {} is not supported", m.digest),
            });
        }
        let Some(p) = &m.platform else { continue };
        if p.os == "unknown" && p.architecture == "unknown" {
            continue;
        }
        offered.push(show(p));
        if platforms.wants(p) {
            chosen.push(m);
        }
    }
    let offered = if offered.is_empty() {
        "nothing".to_string()
    } else {
        offered.join(", ")
    };
    let missing = match platforms {
        Platforms::List(list) => list
            .iter()
            .find(|want| {
                !chosen
                    .iter()
                    .any(|c| c.platform.as_ref().is_some_and(|p| want.matches(p)))
            })
            .map(Platform::to_string),
        Platforms::All if chosen.is_empty() => Some("any platform".into()),
        Platforms::All => None,
    };
    match missing {
        Some(wanted) => Err(BaseError::NoPlatform {
            base: base.into(),
            wanted,
            offered,
        }),
        None => Ok(chosen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_specs() {
        assert_eq!(BaseSpec::parse("scratch").unwrap(), BaseSpec::Scratch);
        assert_eq!(
            BaseSpec::parse("oci-layout:./base:v1").unwrap(),
            BaseSpec::Layout {
                dir: "./base".into(),
                selector: LayoutSelector::Tag("v1".into())
            }
        );
        assert_eq!(
            BaseSpec::parse("oci-layout:/tmp/x").unwrap(),
            BaseSpec::Layout {
                dir: "/tmp/x".into(),
                selector: LayoutSelector::Only
            }
        );
        let d = Digest::of(b"x");
        assert_eq!(
            BaseSpec::parse(&format!("oci-layout:/tmp/x@{d}")).unwrap(),
            BaseSpec::Layout {
                dir: "/tmp/x".into(),
                selector: LayoutSelector::Digest(d)
            }
        );
        assert!(BaseSpec::parse("oci-layout:").is_err());
        assert!(BaseSpec::parse("oci-layout:/x@sha256:zz").is_err());
        assert!(matches!(
            BaseSpec::parse("alpine").unwrap(),
            BaseSpec::Registry(_)
        ));
        assert!(BaseSpec::parse("UPPER/case").is_err());
    }

    #[test]
    fn selects_children_like_ko() {
        let idx: Index = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{m}","size":1,"digest":"{a}","platform":{{"os":"unknown","architecture":"unknown"}}}},
              {{"mediaType":"{m}","size":1,"digest":"{b}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{m}","size":1,"digest":"{c}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            m = oci::OCI_MANIFEST,
            a = Digest::of(b"a"),
            b = Digest::of(b"b"),
            c = Digest::of(b"c")
        ))
        .unwrap();
        let pick = |p: &[&str]| {
            select_children(&idx, &Platforms::parse(p).unwrap(), "b")
                .map(|v| v.iter().map(|d| d.digest.clone()).collect::<Vec<_>>())
        };
        assert_eq!(pick(&["linux/arm64"]).unwrap(), vec![Digest::of(b"b")]);
        assert_eq!(
            pick(&["linux/amd64,linux/arm64"]).unwrap(),
            vec![Digest::of(b"b"), Digest::of(b"c")]
        );
        assert_eq!(
            pick(&["all"]).unwrap(),
            vec![Digest::of(b"b"), Digest::of(b"c")]
        );
        let err = pick(&["linux/amd64,linux/s390x"]).unwrap_err().to_string();
        assert!(err.contains("no image for linux/s390x"), "{err}");
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
        assert!(!err.contains("unknown"), "{err}");
    }
}
