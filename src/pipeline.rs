//! The build pipeline for a plan: resolve → go build → layers → image → publish → report.

use std::sync::Arc;

use crate::base::{self, ResolvedBase};
use crate::error::Error;
use crate::gobuild::{self, GoBuild, Package};
use crate::image::assemble::{self, BuiltImage, Recipe};
use crate::image::layer;
use crate::plan::Plan;
use crate::publish;
use crate::registry::{Client, ClientOptions, Keychain, Repository};
use crate::report::{self, Artifact};

/// Build every target of the plan; returns one artifact per image, in target order.
/// artifacts.json is written only after every image was published.
pub async fn build(plan: &Plan) -> Result<Vec<Artifact>, Error> {
    let client = Arc::new(client(plan)?);
    if plan.image_name.is_some() && plan.targets.len() > 1 {
        return Err(Error::Config(
            "--image names one image, but several targets were given".into(),
        ));
    }
    let mut packages = Vec::new();
    for t in &plan.targets {
        packages.push(gobuild::resolve(&plan.go, &plan.cwd, t).await?);
    }
    let base = base::resolve(&plan.base, &plan.platform, &client).await?;
    if let Some((name, digest)) = &base.image.reference {
        tracing::info!("using base {name}@{digest}");
    }

    let mut artifacts = Vec::new();
    for pkg in &packages {
        let image = build_one(plan, pkg, &base).await?;
        let reference = publish_one(plan, &client, pkg, &base, &image).await?;
        artifacts.push(Artifact {
            image_name: plan
                .image_name
                .clone()
                .unwrap_or_else(|| format!("ko://{}", pkg.import_path)),
            tag: reference,
        });
    }
    if let Some(path) = &plan.file_output {
        report::write_artifacts(path, &artifacts)?;
    }
    Ok(artifacts)
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

async fn build_one(plan: &Plan, pkg: &Package, base: &ResolvedBase) -> Result<BuiltImage, Error> {
    let output = gobuild::output_path(&plan.cache_dir, pkg, &plan.platform);
    let binary = gobuild::build(&GoBuild {
        go: &plan.go,
        package: pkg,
        platform: plan.platform.to_string(),
        env: plan.go_env.clone(),
        flags: plan.flags.clone(),
        ldflags: plan.ldflags.clone(),
        output,
    })
    .await?;
    let layer_dir = plan.cache_dir.join("blobs/sha256");
    let kodata_dir = pkg.dir.join("kodata");
    let epoch = plan.kodata_date_epoch.unwrap_or(0).max(0) as u64;
    let app = pkg.app_name().to_string();
    let (kodata, bin) = tokio::task::spawn_blocking(move || {
        let kodata = layer::kodata_layer(&kodata_dir, epoch, &layer_dir)?;
        let bin = layer::binary_layer(&binary, &app, &layer_dir)?;
        Ok::<_, layer::LayerError>((kodata, bin))
    })
    .await
    .map_err(|e| Error::Internal(format!("layer task failed: {e}")))??;
    Ok(assemble::assemble(
        &base.image,
        &kodata,
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

/// Publish to every configured output; the ref printed is the registry's when there is one.
async fn publish_one(
    plan: &Plan,
    client: &Client,
    pkg: &Package,
    base: &ResolvedBase,
    image: &BuiltImage,
) -> Result<String, Error> {
    let name = plan
        .image_name
        .clone()
        .unwrap_or_else(|| pkg.app_name().to_lowercase());
    let tag = &plan.tags[0];
    let mut reference = None;
    if let Some(archive) = &plan.outputs.oci_archive {
        let d = publish::write_archive(
            client,
            image,
            &base.blobs,
            archive,
            &plan.tags,
            &plan.cache_dir,
        )
        .await?;
        reference = Some(format!("oci-archive:{}@{d}", archive.display()));
    }
    if let Some(dir) = &plan.outputs.oci_layout {
        let d = publish::write_layout(client, image, &base.blobs, dir, &plan.tags, &plan.cache_dir)
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
        let d = publish::push(
            client,
            image,
            &base.blobs,
            &target,
            &plan.tags,
            &plan.cache_dir,
        )
        .await?;
        reference = Some(format!("{target}:{tag}@{d}"));
    }
    reference.ok_or_else(|| Error::Internal("the plan has no output".into()))
}
