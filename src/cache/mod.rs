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
const FORMAT: u32 = 5;

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

/// The part of the cache a CI job persists between runners: the artifact records. They
/// are small, and portable: nothing in them or in their keys depends on the machine, an
/// mtime or where the checkout is.
pub const RECORDS_DIR: &str = "artifacts";

/// Where one artifact's record lives.
pub struct ArtifactCache {
    pub key: String,
    path: PathBuf,
    /// Paths under it are recorded relative to it: the checkout, wherever a runner has it.
    root: PathBuf,
}

impl ArtifactCache {
    pub fn new(plan: &Plan, a: &ArtifactPlan) -> ArtifactCache {
        let key = key(plan, a);
        ArtifactCache {
            path: plan.cache_dir.join(RECORDS_DIR).join(format!("{key}.json")),
            key,
            root: plan.cwd.clone(),
        }
    }

    /// The record, if it is intact and this artifact's, with its paths under this checkout.
    pub fn load(&self) -> Option<Record> {
        let record: Record = integrity::load(&self.path)?;
        if record.key == self.key {
            return Some(record.map_paths(&|p| rebase(&self.root, p)));
        }
        integrity::evict(&self.path, "it is the record of other settings");
        None
    }

    /// Atomic: a concurrent run reads the old record or the new one, never a mix.
    fn store(&self, record: Record) -> Result<(), String> {
        let record = record.map_paths(&|p| relative(&self.root, p));
        integrity::store(&self.path, &record).map_err(|e| e.to_string())
    }
}

impl Record {
    fn map_paths(self, f: &dyn Fn(PathBuf) -> PathBuf) -> Record {
        Record {
            package_dir: f(self.package_dir),
            inputs: self.inputs.map_paths(f),
            ..self
        }
    }
}

/// `path` relative to `root` when under it (`.` for `root`), else as it is.
fn relative(root: &Path, path: PathBuf) -> PathBuf {
    match path.strip_prefix(root) {
        Ok(rest) if rest.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rest) => rest.to_path_buf(),
        Err(_) => path,
    }
}

/// The inverse of [`relative`].
fn rebase(root: &Path, path: PathBuf) -> PathBuf {
    if path == Path::new(".") {
        root.to_path_buf()
    } else if path.is_relative() {
        root.join(path)
    } else {
        path
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
    artifact.dir = relative(&plan.cwd, artifact.dir);
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
            plan.dlv
                .as_ref()
                .map(|(p, arch)| (content_identity(p), arch)),
        ),
    );
    let t = &plan.toolchain;
    field(
        "go",
        format!(
            "{} {:?}",
            plan.go,
            t.go_binary.as_deref().map(toolchain_identity)
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

/// The Go toolchain by what it is, not where: its release (`GOROOT/VERSION`, beside
/// `bin/go`) and the go binary's contents. The same setup-go version on another runner, at
/// another path, is the same toolchain.
fn toolchain_identity(go: &Path) -> String {
    let go = fs::canonicalize(go).unwrap_or_else(|_| go.to_path_buf());
    let version = go
        .parent()
        .and_then(Path::parent)
        .and_then(|root| fs::read_to_string(root.join("VERSION")).ok())
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_default();
    format!("{version} {}", content_identity(&go))
}

/// A file's contents as a digest (hashed once per run): the key holds only the digest, so
/// it means the same on every machine.
fn content_identity(path: &Path) -> String {
    inputs::hash_once(path).map_or_else(|| "unreadable".into(), |d| d.to_string())
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
            root: "/src".into(),
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
        cache.store(r.clone()).unwrap();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.package(), r.package());
        assert_eq!((loaded.digest, loaded.manifest), (r.digest, r.manifest));
    }

    #[test]
    fn a_record_moves_with_its_checkout() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = cache(tmp.path());
        let repo = Repository::parse("registry.example/app").unwrap();
        cache.store(record(&cache, &repo)).unwrap();
        let stored = fs::read_to_string(&cache.path).unwrap();
        assert!(!stored.contains("/src"), "{stored}");
        let elsewhere = ArtifactCache {
            root: "/home/runner/work/app".into(),
            ..cache
        };
        let loaded = elsewhere.load().unwrap();
        assert_eq!(loaded.package_dir, Path::new("/home/runner/work/app/app"));
        assert_eq!(
            rebase(Path::new("/w"), relative(Path::new("/w"), "/w".into())),
            Path::new("/w")
        );
        assert_eq!(
            relative(Path::new("/w"), "/elsewhere/x".into()),
            Path::new("/elsewhere/x")
        );
    }

    #[test]
    fn a_record_of_other_settings_is_evicted() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = cache(tmp.path());
        let repo = Repository::parse("registry.example/app").unwrap();
        let mut r = record(&cache, &repo);
        r.key = "other".into();
        cache.store(r.clone()).unwrap();
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
