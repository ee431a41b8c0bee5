//! The artifact cache: a whole image skipped when nothing that decides it changed.
//!
//! The key is the artifact's expanded configuration with the plan settings that shape an
//! image and the Go toolchain's identity. Its record holds what the key cannot know
//! before building: the package, the base's digest and a snapshot of every local input.
//! A record is used only when all of those still match and the registry still has the
//! image; the tags are then pointed at it remotely.

mod binary;
mod inputs;
mod record;
mod reuse;
pub mod shape;

pub use binary::{forget_layer, record_layer, recorded_layer};
pub use inputs::{Inputs, Listing, Snapshot};
pub use record::{Listable, Recorded, snapshot};
pub use reuse::ReuseError;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::base::BaseSpec;
use crate::digest::{Digest, to_hex};
use crate::integrity;
use crate::plan::{ArtifactPlan, Plan};

/// Bumped when the record's meaning changes, so old records are never misread.
const FORMAT: u32 = 4;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The key it is stored under: a record moved to another key is not used.
    pub key: String,
    pub import_path: String,
    /// The package's directory, as `go list` named it.
    pub package_dir: PathBuf,
    /// The base as configured, and the digest it named when the image was built.
    pub base: String,
    pub base_digest: Option<Digest>,
    pub inputs: Snapshot,
    pub repository: String,
    pub digest: Digest,
    pub media_type: String,
    /// The manifest (or index) itself, to tag it without fetching it.
    pub manifest: String,
    pub platforms: Vec<String>,
    pub size: u64,
    pub blobs: usize,
}

/// Where one artifact's record lives.
pub struct ArtifactCache {
    pub key: String,
    path: PathBuf,
}

impl ArtifactCache {
    pub fn new(plan: &Plan, a: &ArtifactPlan) -> ArtifactCache {
        let key = key(plan, a);
        ArtifactCache {
            path: plan.cache_dir.join("artifacts").join(format!("{key}.json")),
            key,
        }
    }

    /// The record, if it is intact and this artifact's.
    pub fn load(&self) -> Option<Record> {
        let record: Record = integrity::load(&self.path)?;
        if record.key == self.key {
            return Some(record);
        }
        integrity::evict(&self.path, "it is the record of other settings");
        None
    }

    /// Atomic: a concurrent run reads the old record or the new one, never a mix.
    fn store(&self, record: &Record) -> Result<(), String> {
        integrity::store(&self.path, record).map_err(|e| e.to_string())
    }
}

/// Everything known before building that decides the image, tags excepted: a new tag
/// for the same image is a remote re-tag, not a rebuild.
fn key(plan: &Plan, a: &ArtifactPlan) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: String| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.len().to_le_bytes());
        h.update(value.as_bytes());
    };
    field("format", format!("{FORMAT} {}", env!("CARGO_PKG_VERSION")));
    let mut artifact = a.clone();
    artifact.tags.clear();
    field("artifact", format!("{artifact:?}"));
    field(
        "plan",
        format!(
            "{} {} {} {:?} {:?} {} {:?} {:?}",
            plan.compression.recipe(),
            plan.debug,
            plan.cover,
            plan.source_date_epoch,
            plan.kodata_date_epoch,
            plan.cgo_disabled_by_default,
            plan.sbom,
            plan.dlv.as_ref().map(|(p, arch)| (file_identity(p), arch)),
        ),
    );
    let t = &plan.toolchain;
    field(
        "go",
        format!(
            "{} {:?}",
            plan.go,
            t.go_binary.as_deref().map(file_identity)
        ),
    );
    field("go env", format!("{:?}", t.env));
    field(
        "go env file",
        t.env_file
            .as_deref()
            .and_then(|f| fs::read(f).ok())
            .map(|b| Digest::of(&b).to_string())
            .unwrap_or_default(),
    );
    to_hex(&h.finalize())
}

/// How a record names the base as configured.
fn base_key(spec: &BaseSpec) -> String {
    format!("{spec:?}")
}

/// Now, on the clock file modification times use (the kernel's coarse clock, which can lag
/// `SystemTime::now()`): a file edited after this has a later or equal mtime.
pub fn file_clock(dir: &Path) -> Option<SystemTime> {
    fs::create_dir_all(dir).ok()?;
    let marker = tempfile::NamedTempFile::new_in(dir).ok()?;
    marker.as_file().metadata().ok()?.modified().ok()
}

/// A binary's identity without reading it all: where it is, its size and its mtime.
fn file_identity(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match fs::metadata(&path).and_then(|m| Ok((m.len(), m.modified()?))) {
        Ok((len, modified)) => format!("{} {len} {modified:?}", path.display()),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gobuild::Package;
    use crate::image::assemble::{Built, BuiltIndex};
    use crate::publish::PushStats;
    use crate::registry::{Client, ClientOptions, Keychain, Reference, Repository};

    fn client() -> Client {
        Client::new(ClientOptions {
            keychain: Keychain::new(None),
            insecure_registries: Vec::new(),
            extra_ca_files: Vec::new(),
            user_agent: String::new(),
            retry: Default::default(),
            idle_timeout: None,
        })
        .unwrap()
    }

    fn record(cache: &ArtifactCache, repo: &Repository) -> Record {
        let package = Package {
            import_path: "example.com/app".into(),
            dir: "/src/app".into(),
        };
        let built = Built::Index(BuiltIndex {
            media_type: crate::image::oci::OCI_INDEX.into(),
            manifest: b"{}".to_vec(),
            digest: Digest::of(b"{}"),
            children: Vec::new(),
        });
        let push = PushStats {
            uploaded: 1,
            mounted: 2,
            existed: 3,
            ..PushStats::default()
        };
        Record::new(
            cache.key.clone(),
            Snapshot::default(),
            &Recorded {
                package: &package,
                base: &BaseSpec::Scratch,
                base_digest: None,
                repository: repo,
                built: &built,
                platforms: &["linux/amd64".to_string()],
                push: &push,
            },
        )
    }

    fn cache(dir: &Path) -> ArtifactCache {
        ArtifactCache {
            key: "k".into(),
            path: dir.join("artifacts/k.json"),
        }
    }

    #[test]
    fn a_record_is_read_back_as_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = cache(tmp.path());
        let repo = Repository::parse("registry.example/app").unwrap();
        let r = record(&cache, &repo);
        assert_eq!((r.blobs, r.size), (6, 2));
        assert_eq!(r.base, base_key(&BaseSpec::Scratch));
        cache.store(&r).unwrap();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.package(), r.package());
        assert_eq!((loaded.digest, loaded.manifest), (r.digest, r.manifest));
    }

    #[test]
    fn a_record_of_other_settings_is_evicted() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = cache(tmp.path());
        let repo = Repository::parse("registry.example/app").unwrap();
        let mut r = record(&cache, &repo);
        r.key = "other".into();
        cache.store(&r).unwrap();
        assert!(cache.load().is_none());
        assert!(!cache.path.exists());
    }

    #[tokio::test]
    async fn a_changed_base_or_repository_is_not_reused_without_asking_the_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::parse("registry.invalid/app").unwrap();
        let r = record(&cache(tmp.path()), &repo);
        let client = client();
        let other_base = BaseSpec::Registry(Reference::parse("registry.invalid/base").unwrap());
        assert!(
            !r.reusable("app", &other_base, &repo, &client)
                .await
                .unwrap()
        );
        let other_repo = Repository::parse("registry.invalid/other").unwrap();
        let reusable = r.reusable("app", &BaseSpec::Scratch, &other_repo, &client);
        assert!(!reusable.await.unwrap());
        let mut moved = r.clone();
        moved.base_digest = Some(Digest::of(b"old base"));
        let reusable = moved.reusable("app", &BaseSpec::Scratch, &repo, &client);
        assert!(!reusable.await.unwrap());
    }
}
