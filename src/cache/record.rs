//! Recording a published image: the snapshot of its inputs, taken alongside the build, and
//! the record stored once the push succeeded.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::base::BaseSpec;
use crate::digest::Digest;
use crate::gobuild::{Package, Target};
use crate::image::assemble::Built;
use crate::plan::{ArtifactPlan, Plan};
use crate::platform::Platform;
use crate::publish::PushStats;
use crate::registry::Repository;

use super::{ArtifactCache, Inputs, Listing, Record, Snapshot, base_key};

/// What listing an artifact's inputs needs: the resolved target and the platforms built.
pub struct Listable {
    pub target: Target,
    pub platforms: Vec<Platform>,
    pub kodata: PathBuf,
}

/// A pushed image, as its record describes it.
pub struct Recorded<'a> {
    pub package: &'a Package,
    pub base: &'a BaseSpec,
    /// What the base named when the image was built.
    pub base_digest: Option<Digest>,
    pub repository: &'a Repository,
    pub built: &'a Built,
    pub platforms: &'a [String],
    pub push: &'a PushStats,
}

impl ArtifactCache {
    /// Store the record of `image`, built from the inputs in `inputs`.
    pub fn record(&self, inputs: Snapshot, image: &Recorded<'_>) -> Result<(), String> {
        self.store(Record::new(self.key.clone(), inputs, image))
    }
}

impl Record {
    pub(super) fn new(key: String, inputs: Snapshot, image: &Recorded<'_>) -> Record {
        let Recorded {
            package,
            built,
            push,
            ..
        } = image;
        Record {
            key,
            import_path: package.import_path.clone(),
            package_dir: package.dir.clone(),
            base: base_key(image.base),
            base_digest: image.base_digest.clone(),
            inputs,
            repository: image.repository.to_string(),
            digest: built.digest().clone(),
            media_type: built.media_type().to_string(),
            manifest: String::from_utf8_lossy(built.manifest()).into_owned(),
            platforms: image.platforms.to_vec(),
            size: built.size(),
            blobs: push.uploaded + push.mounted + push.existed,
        }
    }
}

/// The record's snapshot of the inputs of what was built. A failure only means no record:
/// the build reports its own. `previous`: the last record's, whose file list is reused
/// when no file that decides the listing changed.
pub async fn snapshot(
    plan: &Plan,
    a: &ArtifactPlan,
    since: SystemTime,
    what: &Listable,
    previous: Option<Snapshot>,
) -> Option<Snapshot> {
    // Checked after `since`: an edit after this check is caught by its mtime.
    let relisted = match previous {
        Some(p) => tokio::task::spawn_blocking(move || p.relisted())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let inputs = match relisted {
        Some(inputs) => {
            tracing::debug!("{}: same files as recorded, not listed", a.target);
            inputs
        }
        None => match list_inputs(plan, a, what).await {
            Ok(inputs) => inputs,
            Err(e) => {
                tracing::warn!("{}: not cached: {e}", a.target);
                return None;
            }
        },
    };
    let extra: Vec<PathBuf> = plan.dlv.iter().map(|(p, _)| p.clone()).collect();
    let trees = [what.kodata.clone()];
    let taken =
        tokio::task::spawn_blocking(move || Snapshot::take(inputs, &extra, &trees, since)).await;
    match taken.map_err(|e| e.to_string()).and_then(|t| t) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("{}: not cached: {e}", a.target);
            None
        }
    }
}

/// `go list -deps` of the target in each built platform's environment.
async fn list_inputs(plan: &Plan, a: &ArtifactPlan, what: &Listable) -> Result<Inputs, String> {
    let mut envs: Vec<Vec<(String, String)>> = Vec::new();
    for p in &what.platforms {
        let env = plan
            .go_env(a, p)
            .map_err(|e| format!("base platform: {e}"))?;
        if !envs.contains(&env) {
            envs.push(env);
        }
    }
    let flags = plan.go_flags(a);
    let listings: Vec<Listing> = envs
        .into_iter()
        .map(|env| Listing {
            go: &plan.go,
            dir: &what.target.dir,
            pattern: &what.target.pattern,
            env,
            flags: &flags,
        })
        .collect();
    Inputs::list(&listings).await
}
