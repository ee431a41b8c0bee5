//! The build pipeline for a plan: resolve → go build → layers → image → publish → report.

use std::time::Instant;

use futures_util::future::try_join_all;
use tokio::sync::Semaphore;

use crate::base::{self, BaseChild, IndexInfo, ResolvedBase};
use crate::error::Error;
use crate::gobuild::{self, GoBuild, Package};
use crate::image::assemble::{self, Built, BuiltImage, IndexChild, Recipe};
use crate::image::layer::{self, Layer};
use crate::plan::Plan;
use crate::publish::{self, PushStats};
use crate::registry::{Client, ClientOptions, Keychain, Repository};
use crate::report::{self, Artifact, ImageReport};

/// Build every target of the plan; returns one report per image, in target order.
/// artifacts.json is written only after every image was published.
pub async fn build(plan: &Plan) -> Result<Vec<ImageReport>, Error> {
    let client = client(plan)?;
    if plan.image_name.is_some() && plan.targets.len() > 1 {
        return Err(Error::Config(
            "--image names one image, but several targets were given".into(),
        ));
    }
    let mut packages = Vec::new();
    for t in &plan.targets {
        packages.push(gobuild::resolve(&plan.go, &plan.cwd, t).await?);
    }
    let base = base::resolve(&plan.base, &plan.platforms, &client).await?;
    match (
        &base.index,
        base.children
            .first()
            .and_then(|c| c.image.reference.as_ref()),
    ) {
        (
            Some(IndexInfo {
                reference: Some((name, digest)),
                ..
            }),
            _,
        )
        | (None, Some((name, digest))) => {
            tracing::info!("using base {name}@{digest}")
        }
        _ => {}
    }
    let platforms: Vec<String> = base
        .children
        .iter()
        .map(|c| c.platform.to_string())
        .collect();
    tracing::info!("platforms: {}", platforms.join(", "));

    let jobs = Semaphore::new(plan.jobs);
    let mut reports = Vec::new();
    for pkg in &packages {
        let start = Instant::now();
        let built = build_artifact(plan, pkg, &base, &jobs).await?;
        let (reference, push) = publish_one(plan, &client, pkg, &base, &built).await?;
        reports.push(ImageReport {
            image_name: plan
                .image_name
                .clone()
                .unwrap_or_else(|| format!("ko://{}", pkg.import_path)),
            reference,
            digest: built.digest().clone(),
            platforms: platforms.clone(),
            size: size_of(&built),
            seconds: start.elapsed().as_secs_f64(),
            push,
        });
    }
    if let Some(path) = &plan.file_output {
        let artifacts: Vec<Artifact> = reports.iter().map(ImageReport::artifact).collect();
        report::write_artifacts(path, &artifacts)?;
    }
    Ok(reports)
}

/// All platforms of one package, built in parallel (bounded by `jobs`), then the index.
async fn build_artifact(
    plan: &Plan,
    pkg: &Package,
    base: &ResolvedBase,
    jobs: &Semaphore,
) -> Result<Built, Error> {
    let layer_dir = plan.cache_dir.join("blobs/sha256");
    let kodata_dir = pkg.dir.join("kodata");
    let epoch = plan.kodata_date_epoch.unwrap_or(0).max(0) as u64;
    let kodata = blocking({
        let layer_dir = layer_dir.clone();
        move || layer::kodata_layer(&kodata_dir, epoch, &layer_dir)
    })
    .await?;
    let images = try_join_all(
        base.children
            .iter()
            .map(|child| build_image(plan, pkg, child, &kodata, jobs)),
    )
    .await?;
    let Some(info) = &base.index else {
        return Ok(Built::Image(Box::new(
            images
                .into_iter()
                .next()
                .expect("a base has at least one child"),
        )));
    };
    let children = images
        .into_iter()
        .zip(&base.children)
        .map(|(image, child)| IndexChild {
            image,
            base_descriptor: child.descriptor.as_ref(),
            platform: &child.platform,
        })
        .collect();
    Ok(Built::Index(assemble::assemble_index(
        &info.media_type,
        info.reference.as_ref(),
        children,
        &plan.annotations,
    )))
}

async fn build_image(
    plan: &Plan,
    pkg: &Package,
    child: &BaseChild,
    kodata: &Layer,
    jobs: &Semaphore,
) -> Result<BuiltImage, Error> {
    let _permit = jobs
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let platform = &child.platform;
    let mut env = Vec::new();
    if plan.cgo_disabled_by_default {
        env.push(("CGO_ENABLED".to_string(), "0".to_string()));
    }
    env.extend(
        platform
            .go_env()
            .map_err(|e| Error::Config(format!("base platform: {e}")))?,
    );
    env.extend(plan.go_env.iter().cloned());
    let binary = gobuild::build(&GoBuild {
        go: &plan.go,
        package: pkg,
        platform: platform.to_string(),
        env,
        flags: plan.flags.clone(),
        ldflags: plan.ldflags.clone(),
        output: gobuild::output_path(&plan.cache_dir, pkg, platform),
    })
    .await?;
    let layer_dir = plan.cache_dir.join("blobs/sha256");
    let app = pkg.app_name().to_string();
    let bin = blocking(move || layer::binary_layer(&binary, &app, &layer_dir)).await?;
    Ok(assemble::assemble(
        &child.image,
        kodata,
        &bin,
        &Recipe {
            import_path: &pkg.import_path,
            app_name: pkg.app_name(),
            source_date_epoch: plan.source_date_epoch,
            kodata_date_epoch: plan.kodata_date_epoch,
            labels: &plan.labels,
            annotations: &plan.annotations,
        },
    ))
}

/// Layers are plain blocking I/O and compression: keep them off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, layer::LayerError> + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("layer task failed: {e}")))??)
}

fn client(plan: &Plan) -> Result<Client, Error> {
    Ok(Client::new(ClientOptions {
        keychain: Keychain::new(plan.docker_config_dir.clone()),
        insecure_registries: plan.insecure_registries.clone(),
        extra_ca_files: plan.registry_ca.clone(),
        user_agent: format!("kobuild/{}", env!("CARGO_PKG_VERSION")),
        retry: Default::default(),
    })?)
}

fn size_of(built: &Built) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut size = built.manifest().len() as u64;
    for image in built.images() {
        if matches!(built, Built::Index(_)) {
            size += image.manifest.len() as u64;
        }
        size += image.config.len() as u64;
        for (d, _) in &image.layers {
            if seen.insert(&d.digest) {
                size += d.size;
            }
        }
    }
    size
}

/// Publish to every configured output; the ref printed is the registry's when there is one.
async fn publish_one(
    plan: &Plan,
    client: &Client,
    pkg: &Package,
    base: &ResolvedBase,
    built: &Built,
) -> Result<(String, Option<PushStats>), Error> {
    let name = plan
        .image_name
        .clone()
        .unwrap_or_else(|| pkg.app_name().to_lowercase());
    let tag = &plan.tags[0];
    let mut reference = None;
    let mut stats = None;
    if let Some(archive) = &plan.outputs.oci_archive {
        let d = publish::write_archive(
            client,
            built,
            &base.blobs,
            archive,
            &plan.tags,
            &plan.cache_dir,
        )
        .await?;
        reference = Some(format!("oci-archive:{}@{d}", archive.display()));
    }
    if let Some(dir) = &plan.outputs.oci_layout {
        let d = publish::write_layout(client, built, &base.blobs, dir, &plan.tags, &plan.cache_dir)
            .await?;
        if plan.outputs.default_layout {
            tracing::warn!(
                "no registry configured (--default-repo or KOBUILD_DEFAULT_REPO): wrote an OCI layout to {}",
                dir.display()
            );
        }
        reference = Some(format!("oci-layout:{}@{d}", dir.display()));
    }
    if let Some(repo) = &plan.outputs.repo {
        let target = Repository::parse(&format!("{repo}/{name}"))
            .map_err(|e| Error::Config(format!("image name {name:?}: {e}")))?;
        let pushed = publish::push(
            client,
            built,
            &base.blobs,
            &target,
            &plan.tags,
            &plan.cache_dir,
        )
        .await?;
        reference = Some(format!("{target}:{tag}@{}", built.digest()));
        stats = Some(pushed);
    }
    let reference = reference.ok_or_else(|| Error::Internal("the plan has no output".into()))?;
    Ok((reference, stats))
}
