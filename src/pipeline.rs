//! The build pipeline for a plan: resolve → go build → layers → image → publish → report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::try_join_all;
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::{OnceCell, Semaphore};

use crate::base::{self, BaseChild, BaseSpec, ResolvedBase};
use crate::cache::{self, ArtifactCache, Listable, Record, Recorded};
use crate::error::Error;
use crate::gobuild::{self, Binary, BinaryKey, GoBuild, GoError, Link, Package, Target};
use crate::image::assemble::{self, Built, BuiltImage, IndexChild, Recipe};
use crate::image::layer::{self, BinaryEntry, Compression, Layer, LayerError, LayerStore};
use crate::plan::{ArtifactPlan, Destination, Plan};
use crate::platform::{Platform, Platforms};
use crate::publish::{self, PublishError, PushStats, Pushed};
use crate::registry::{Client, Repository};
use crate::report::{self, Artifact, ImageReport};
use crate::sbom::Sboms;

/// Build every artifact of the plan; returns one report per image, in plan order.
/// artifacts.json is written only after every image was published.
pub async fn build(plan: &Plan) -> Result<Vec<ImageReport>, Error> {
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let dir = plan.cache_dir.clone();
    // Held until the run ends: another run sharing the cache leaves this run's files alone.
    let _lock = tokio::task::spawn_blocking(move || crate::integrity::lock(&dir))
        .await
        .map_err(|e| Error::Internal(format!("cache lock: {e}")))?;
    let client = plan.registry.client()?;
    let builder = Builder {
        plan,
        client: &client,
        jobs: Semaphore::new(plan.jobs),
        binaries: Mutex::default(),
        relinks: Mutex::default(),
        bases: Mutex::default(),
    };
    let at_once = match plan.build_concurrency {
        0 => plan.artifacts.len().max(1),
        n => n,
    };
    let reports: Vec<ImageReport> = stream::iter(&plan.artifacts)
        .map(|a| builder.build(a))
        .buffered(at_once)
        .try_collect()
        .await?;
    let artifacts: Vec<Artifact> = reports.iter().map(ImageReport::artifact).collect();
    write_file_output(plan, &artifacts)?;
    Ok(reports)
}

/// `--dry-run`: what a build would tag (`name:tag`, no digest), with nothing built or
/// pushed; `--file-output` is written as after a build.
pub fn dry_run(plan: &Plan) -> Result<Vec<Artifact>, Error> {
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!("skipping the build since --dry-run is set");
    let artifacts: Vec<Artifact> = plan
        .artifacts
        .iter()
        .map(|a| Artifact {
            image_name: a.image_name.clone().unwrap_or_default(),
            tag: a.tagged_name.clone().unwrap_or_default(),
        })
        .collect();
    write_file_output(plan, &artifacts)?;
    Ok(artifacts)
}

fn write_file_output(plan: &Plan, artifacts: &[Artifact]) -> Result<(), Error> {
    if let Some(path) = &plan.file_output {
        match &plan.output_template {
            Some(t) => {
                crate::fsutil::write_atomic(path, report::render_output(t, artifacts)?.as_bytes())?
            }
            None => report::write_artifacts(path, artifacts)?,
        }
    }
    Ok(())
}

fn log_base(base: &ResolvedBase) {
    let reference = match &base.index {
        Some(info) => info.reference.as_ref(),
        None => base
            .children
            .first()
            .and_then(|c| c.image.reference.as_ref()),
    };
    if let Some((name, digest)) = reference {
        tracing::info!("using base {name}@{digest}");
    }
}

type BaseKey = (String, String);

type BinaryCell = Arc<OnceCell<Result<Binary, GoError>>>;

/// Where images go while they are built: the repository, the sinks' context (with the
/// base's blobs), and what was pushed so far.
struct Ahead<'a> {
    repo: Repository,
    cx: publish::Context<'a>,
    pushed: &'a Pushed,
    /// Each platform's whole image too (several platforms): the push then adds the index.
    images: bool,
}

/// An artifact's image, built and not yet published.
struct Image {
    base: Arc<ResolvedBase>,
    pkg: Package,
    built: Built,
    /// Each image's binary, in the base's platform order.
    binaries: Vec<PathBuf>,
    platforms: Vec<String>,
}

/// Where an image was published.
struct Output {
    /// The reference printed: the registry's when there is one.
    reference: String,
    push: Option<PushStats>,
    repo: Option<Repository>,
}

/// An artifact's image, published.
struct Published {
    image: Image,
    output: Output,
}

/// Binaries are memoized by their [`BinaryKey`], so a platform built before the base was
/// known is not built again, and artifacts sharing a package and flags build it once.
struct Builder<'a> {
    plan: &'a Plan,
    client: &'a Client,
    /// Bounds concurrent `go build`s (`--jobs`).
    jobs: Semaphore,
    /// A failure is kept too: every image waiting for that binary gets the same error, and
    /// Go does not run a failing build twice.
    binaries: Mutex<HashMap<BinaryKey, BinaryCell>>,
    /// Kept binaries that failed their check, linked again once for all their images.
    relinks: Mutex<HashMap<BinaryKey, BinaryCell>>,
    /// Artifacts on the same base fetch it once.
    bases: Mutex<HashMap<BaseKey, Arc<OnceCell<Arc<ResolvedBase>>>>>,
}

impl Builder<'_> {
    /// One artifact: its recorded image while nothing that decided it changed, else built,
    /// published, and recorded for the next run.
    async fn build(&self, a: &ArtifactPlan) -> Result<ImageReport, Error> {
        let start = Instant::now();
        let cache = self
            .plan
            .artifact_cache
            .then(|| ArtifactCache::new(self.plan, a));
        let record = cache.as_ref().and_then(ArtifactCache::load);
        if let Some(record) = &record {
            match self.reuse(a, record).await {
                Ok(Some(mut report)) => {
                    report.seconds = start.elapsed().as_secs_f64();
                    return Ok(report);
                }
                Ok(None) => {}
                Err(e) => tracing::info!("{}: not reusing the cached image: {e}", a.target),
            }
        }
        let previous = record.as_ref().map(|r| r.inputs.clone());
        let known = record.as_ref().and_then(Record::known_package);
        let since = cache
            .as_ref()
            .and_then(|_| cache::file_clock(&self.plan.cache_dir));
        let target = Target::parse(&a.dir, &a.target)?;
        // A record needs the inputs listed, the image does not: they are listed (at low
        // priority) and hashed alongside the build and the push.
        let (listable_tx, listable_rx) = tokio::sync::oneshot::channel();
        let listable_tx = since.map(|_| listable_tx);
        let recording = async {
            let listable = listable_rx.await.ok()?;
            cache::snapshot(self.plan, a, since?, &listable, previous).await
        };
        let pushed = Pushed::default();
        let publishing = async {
            let first = self
                .publish(a, &target, known.clone(), listable_tx, &pushed)
                .await;
            match first {
                // The entry is gone from the cache: building again makes or fetches it anew.
                Err(Error::Publish(e @ PublishError::Damaged { .. })) => {
                    tracing::info!("{}: {e}; building again", a.target);
                    self.publish(a, &target, known, None, &pushed).await
                }
                result => result,
            }
        };
        let (published, inputs) = tokio::join!(publishing, recording);
        let Published { image, output } = published?;
        let Image {
            base,
            pkg,
            built,
            platforms,
            ..
        } = image;
        if let (Some(cache), Some(inputs), Some(repo), Some(push)) =
            (&cache, inputs, &output.repo, &output.push)
        {
            let recorded = Recorded {
                package: &pkg,
                base: base_spec(a, &pkg.import_path),
                base_digest: base.digest.clone(),
                repository: repo,
                built: &built,
                platforms: &platforms,
                push,
            };
            if let Err(e) = cache.record(inputs, &recorded) {
                tracing::warn!("cannot record {} in the artifact cache: {e}", a.target);
            }
        }
        Ok(ImageReport {
            image_name: a
                .image_name
                .clone()
                .unwrap_or_else(|| format!("ko://{}", pkg.import_path)),
            reference: output.reference,
            digest: built.digest().clone(),
            platforms,
            size: built.size(),
            seconds: start.elapsed().as_secs_f64(),
            push: output.push,
        })
    }

    /// Build one artifact's image and publish it to every output.
    async fn publish(
        &self,
        a: &ArtifactPlan,
        target: &Target,
        known: Option<Package>,
        listable: Option<tokio::sync::oneshot::Sender<Listable>>,
        pushed: &Pushed,
    ) -> Result<Published, Error> {
        let image = self.build_image(a, target, known, listable, pushed).await?;
        let output = self.publish_outputs(a, &image, pushed).await?;
        let plan = self.plan;
        if (plan.sbom && output.repo.is_some()) || plan.sbom_dir.is_some() {
            let sboms = Sboms {
                client: self.client,
                go: &plan.go,
                source_date_epoch: plan.source_date_epoch,
                dir: plan.sbom_dir.as_deref(),
                repository: output.repo.as_ref(),
                attach: plan.sbom,
                tag: plan.pushed_tags(a).first().cloned(),
                app: image.pkg.app_name(),
            };
            sboms
                .write(&image.base, &image.built, &image.binaries)
                .await?;
        }
        Ok(Published { image, output })
    }

    /// Resolve, compile and assemble one artifact's image (not yet published).
    /// `known`: the package as the last build of this artifact found it, used without
    /// `go list` for a directory whose go.mod did not change since (the build then checks it
    /// made a program). `listable` is sent the target and platforms as soon as both are known.
    async fn build_image(
        &self,
        a: &ArtifactPlan,
        target: &Target,
        known: Option<Package>,
        listable: Option<tokio::sync::oneshot::Sender<Listable>>,
        pushed: &Pushed,
    ) -> Result<Image, Error> {
        // The base comes over the network while Go resolves and compiles: for a list of
        // platforms the binaries do not depend on it, so nothing waits for anything else.
        let known = known.filter(|_| target.pattern == ".");
        let listed = known.is_none();
        let resolve = async {
            match known {
                Some(pkg) => Ok((target.clone(), pkg)),
                None => self.resolve(a, target).await,
            }
        };
        let image = async {
            let (base, (target, pkg)) =
                tokio::try_join!(self.base(&a.base, &a.platforms), resolve)?;
            let base = match a.base_overrides.get(&pkg.import_path.to_lowercase()) {
                Some(spec) => self.base(spec, &a.platforms).await?,
                None => base,
            };
            log_base(&base);
            let platforms: Vec<String> = base
                .children
                .iter()
                .map(|c| c.platform.to_string())
                .collect();
            tracing::info!("{}: platforms {}", pkg.import_path, platforms.join(", "));
            let ahead = target_repository(a, &pkg)?.map(|repo| Ahead {
                repo,
                cx: self.context(&base),
                pushed,
                images: base.index.is_some(),
            });
            let artifact = self
                .artifact(a, &target, &pkg, &base, listable, ahead.as_ref())
                .await;
            // Without `go list`, what it would have said comes first: a build that failed,
            // or made a package archive, may not be a package main at all.
            let archive = |b: &Vec<PathBuf>| b.iter().any(|b| gobuild::is_archive(b));
            let suspect = match &artifact {
                Ok((_, binaries)) => !listed && archive(binaries),
                Err(e) => !listed && matches!(e, Error::Go(GoError::Build { .. })),
            };
            if suspect {
                gobuild::resolve(&self.plan.go, &target).await?;
            }
            let (built, binaries) = artifact?;
            if suspect {
                return Err(Error::Go(GoError::Resolve {
                    target: target.name.clone(),
                    message: "go build made a package archive, not a program: kobuild needs a package main".into(),
                }));
            }
            Ok(Image {
                base,
                pkg,
                built,
                binaries,
                platforms,
            })
        };
        // A build's failure reaches the image through the memoized binary; a failing
        // `go list` ends everything at once (its message explains more), killing the builds.
        let prebuild = async {
            if target.is_buildable() {
                let _ = self.prebuild(a, target).await;
            }
            Ok::<(), Error>(())
        };
        let (image, ()) = tokio::try_join!(image, prebuild)?;
        Ok(image)
    }

    /// The image a record names, when everything that decided it is unchanged and the
    /// registry still has it; its tags are pointed at it. `Ok(None)`: build it.
    async fn reuse(&self, a: &ArtifactPlan, record: &Record) -> Result<Option<ImageReport>, Error> {
        let Some(repo) = target_repository(a, &record.package())? else {
            return Ok(None);
        };
        let base = base_spec(a, &record.import_path);
        if !record.reusable(&a.target, base, &repo, self.client).await? {
            return Ok(None);
        }
        let digest = &record.digest;
        publish::tag(
            self.client,
            &repo,
            digest,
            &record.media_type,
            record.manifest.as_bytes(),
            self.plan.pushed_tags(a),
        )
        .await?;
        tracing::info!(
            "{}: inputs, base and settings unchanged; {repo}@{digest} reused",
            record.import_path
        );
        Ok(Some(ImageReport {
            image_name: a
                .image_name
                .clone()
                .unwrap_or_else(|| format!("ko://{}", record.import_path)),
            reference: self.plan.pushed_reference(a, &repo, digest),
            digest: digest.clone(),
            platforms: record.platforms.clone(),
            size: record.size,
            seconds: 0.0,
            push: Some(PushStats {
                existed: record.blobs,
                ..PushStats::default()
            }),
        }))
    }

    async fn base(
        &self,
        spec: &BaseSpec,
        platforms: &Platforms,
    ) -> Result<Arc<ResolvedBase>, Error> {
        let cell = {
            let mut map = self
                .bases
                .lock()
                .map_err(|e| Error::Internal(e.to_string()))?;
            map.entry((format!("{spec:?}"), platforms.to_string()))
                .or_default()
                .clone()
        };
        let base = cell
            .get_or_try_init(|| async {
                Ok::<_, Error>(Arc::new(
                    base::resolve(spec, platforms, self.client, &self.plan.cache_dir).await?,
                ))
            })
            .await?;
        Ok(base.clone())
    }

    /// `go list` the target; a `...` pattern becomes its one main package's directory.
    async fn resolve(&self, a: &ArtifactPlan, t: &Target) -> Result<(Target, Package), Error> {
        let pkg = gobuild::resolve(&self.plan.go, t).await?;
        if t.is_buildable() {
            return Ok((t.clone(), pkg));
        }
        let t = Target {
            name: t.name.clone(),
            dir: pkg.dir.clone(),
            pattern: ".".into(),
        };
        self.prebuild(a, &t).await?;
        Ok((t, pkg))
    }

    /// Start the binaries an explicit platform list determines (`linux/arm` without a
    /// variant is left to the base: it may offer v6 and v7).
    async fn prebuild(&self, a: &ArtifactPlan, t: &Target) -> Result<(), Error> {
        let Platforms::List(list) = &a.platforms else {
            return Ok(());
        };
        let wanted = list
            .iter()
            .filter(|p| p.arch != "arm" || !p.variant.is_empty());
        try_join_all(wanted.map(|p| self.binary(a, t, p))).await?;
        Ok(())
    }

    fn binary_key(
        &self,
        a: &ArtifactPlan,
        t: &Target,
        platform: &Platform,
    ) -> Result<BinaryKey, Error> {
        self.plan
            .binary_key(a, t, platform)
            .map_err(|e| Error::Config(format!("base platform: {e}")))
    }

    /// The memo cell of `key` in `cells`.
    fn cell(
        cells: &Mutex<HashMap<BinaryKey, BinaryCell>>,
        key: &BinaryKey,
    ) -> Result<BinaryCell, Error> {
        let mut map = cells.lock().map_err(|e| Error::Internal(e.to_string()))?;
        Ok(map.entry(key.clone()).or_default().clone())
    }

    async fn binary(
        &self,
        a: &ArtifactPlan,
        t: &Target,
        platform: &Platform,
    ) -> Result<Binary, Error> {
        let key = self.binary_key(a, t, platform)?;
        let cell = Self::cell(&self.binaries, &key)?;
        let built = cell.get_or_init(|| self.link(&key, platform)).await;
        Ok(built.clone()?)
    }

    /// Links `binary` again, once for all the images that use it: it was kept by Go but
    /// failed its check (`why`, a warning), or has no record to be checked against.
    async fn relink(
        &self,
        a: &ArtifactPlan,
        t: &Target,
        platform: &Platform,
        binary: &Binary,
        why: Option<String>,
    ) -> Result<Binary, Error> {
        let key = self.binary_key(a, t, platform)?;
        let cell = Self::cell(&self.relinks, &key)?;
        let relinked = cell
            .get_or_init(|| async {
                match why {
                    Some(why) => crate::integrity::evict(&binary.path, &why),
                    None => {
                        tracing::info!(
                            "{}: no record of the layer made from it to check it against; linking it again",
                            binary.path.display()
                        );
                        let _ = std::fs::remove_file(&binary.path);
                    }
                }
                self.link(&key, platform).await
            })
            .await;
        Ok(relinked.clone()?)
    }

    /// `go build` into the binary's stable path, and what that did to it.
    async fn link(&self, key: &BinaryKey, platform: &Platform) -> Result<Binary, GoError> {
        // The semaphore is never closed.
        let _permit = self.jobs.acquire().await.ok();
        let binary = gobuild::build(&GoBuild {
            go: &self.plan.go,
            key,
            platform: platform.to_string(),
            output: key.output_path(&self.plan.cache_dir),
            trimpath: !self.plan.debug,
        })
        .await?;
        if binary.link != Link::Kept {
            // The new binary is recorded with its layer.
            cache::forget_layer(&binary.path);
        }
        Ok(binary)
    }

    /// The binary's layer. A binary Go kept is used only while it gives the layer recorded
    /// when it was linked: Go decides from the build ID in the file and would not notice
    /// other bytes changed, or the file cut short. Checking costs nothing: the tar is hashed
    /// anyway, to find the finished layer by DiffID.
    async fn binary_layer(
        &self,
        a: &ArtifactPlan,
        t: &Target,
        platform: &Platform,
        app: &str,
        ahead: Option<&Ahead<'_>>,
    ) -> Result<(Layer, Binary), Error> {
        let mut binary = self.binary(a, t, platform).await?;
        let caps = a.capabilities.map(|c| c.xattr());
        // Each blocking task owns what it reads.
        let task = |path: PathBuf| (path, app.to_string(), layer_store(self.plan));
        if binary.link == Link::Kept {
            let why = match cache::recorded_layer(&binary.path, app, caps) {
                Some(diff_id) => {
                    let (path, app, store) = task(binary.path.clone());
                    let kept = blocking(move || {
                        let entry = BinaryEntry {
                            path: &path,
                            app_name: &app,
                            capabilities: caps,
                        };
                        layer::kept_binary_layer(entry, &store, &diff_id)
                    });
                    match kept.await {
                        Ok(layer) => return Ok((layer, binary)),
                        Err(Error::Layer(LayerError::Changed { expected, .. })) => Some(format!(
                            "it no longer gives the layer {expected} made from it when it was linked"
                        )),
                        Err(e) => return Err(e),
                    }
                }
                None => None,
            };
            binary = self.relink(a, t, platform, &binary, why).await?;
        }
        let (path, name, store) = task(binary.path.clone());
        let fresh = move |follow: Option<&layer::WrittenTx>| {
            let entry = BinaryEntry {
                path: &path,
                app_name: &name,
                capabilities: caps,
            };
            layer::fresh_binary_layer(entry, &store, follow)
        };
        let layer = match (binary.link, ahead) {
            (Link::Replaced, Some(ahead)) => {
                let (tx, rx) = tokio::sync::watch::channel(layer::Written::default());
                let build = blocking(move || fresh(Some(&tx)));
                publish::push_while_written(self.client, &ahead.repo, ahead.pushed, rx, build)
                    .await?
            }
            _ => blocking(move || fresh(None)).await?,
        };
        if let Err(e) = cache::record_layer(&binary.path, app, caps, &layer.diff_id) {
            // The next run links it again rather than trust it unchecked.
            tracing::debug!("cannot record the layer of {}: {e}", binary.path.display());
        }
        Ok((layer, binary))
    }

    /// What every output needs to publish images on `base`.
    fn context<'b>(&'b self, base: &'b ResolvedBase) -> publish::Context<'b> {
        publish::Context {
            client: self.client,
            base: &base.blobs,
            cache: &self.plan.cache_dir,
        }
    }

    /// Publish to every configured output: the OCI archive, the OCI layout, the registry.
    async fn publish_outputs(
        &self,
        a: &ArtifactPlan,
        image: &Image,
        pushed: &Pushed,
    ) -> Result<Output, Error> {
        let (plan, built) = (self.plan, &image.built);
        let cx = self.context(&image.base);
        let mut reference = None;
        let mut push = None;
        if let Some(archive) = &plan.outputs.oci_archive {
            let d = publish::write_archive(&cx, built, archive, &a.tags).await?;
            reference = Some(format!("oci-archive:{}@{d}", archive.display()));
        }
        if let Some(dir) = &plan.outputs.oci_layout {
            let d = publish::write_layout(&cx, built, dir, &a.tags).await?;
            if plan.outputs.default_layout {
                tracing::warn!(
                    "no registry configured (--default-repo or KOBUILD_DEFAULT_REPO): wrote an OCI layout to {}",
                    dir.display()
                );
            }
            reference = Some(format!("oci-layout:{}@{d}", dir.display()));
        }
        let repo = target_repository(a, &image.pkg)?;
        if let Some(repo) = &repo {
            let tags = plan.pushed_tags(a);
            push = Some(publish::push(&cx, built, repo, tags, pushed).await?);
            reference = Some(plan.pushed_reference(a, repo, built.digest()));
        }
        let reference =
            reference.ok_or_else(|| Error::Internal("the plan has no output".into()))?;
        Ok(Output {
            reference,
            push,
            repo,
        })
    }

    /// All platforms of one package, built in parallel, then the index; with each image's
    /// binary. Each platform's layers are made as soon as its binary is linked.
    async fn artifact(
        &self,
        a: &ArtifactPlan,
        t: &Target,
        pkg: &Package,
        base: &ResolvedBase,
        listable: Option<tokio::sync::oneshot::Sender<Listable>>,
        ahead: Option<&Ahead<'_>>,
    ) -> Result<(Built, Vec<PathBuf>), Error> {
        let store = layer_store(self.plan);
        let kodata_dir = pkg.dir.join("kodata");
        let epoch = self.plan.kodata_date_epoch.unwrap_or(0).max(0) as u64;
        let kodata = blocking(move || layer::kodata_layer(&kodata_dir, epoch, &store)).await?;
        if let Some(tx) = listable {
            let _ = tx.send(Listable {
                target: t.clone(),
                platforms: base.children.iter().map(|c| c.platform.clone()).collect(),
                kodata: pkg.dir.join("kodata"),
            });
        }
        let built = try_join_all(
            base.children
                .iter()
                .map(|child| self.image(a, t, pkg, child, &kodata, ahead)),
        )
        .await?;
        let (images, binaries): (Vec<BuiltImage>, Vec<PathBuf>) = built.into_iter().unzip();
        let Some(info) = &base.index else {
            let image = images
                .into_iter()
                .next()
                .expect("a base has at least one child");
            return Ok((Built::Image(Box::new(image)), binaries));
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
        let index = assemble::assemble_index(
            &info.media_type,
            info.reference.as_ref(),
            children,
            &a.annotations,
        );
        Ok((Built::Index(index), binaries))
    }

    async fn image(
        &self,
        a: &ArtifactPlan,
        t: &Target,
        pkg: &Package,
        child: &BaseChild,
        kodata: &Layer,
        ahead: Option<&Ahead<'_>>,
    ) -> Result<(BuiltImage, PathBuf), Error> {
        let (bin, binary) = self
            .binary_layer(a, t, &child.platform, pkg.app_name(), ahead)
            .await?;
        let dlv = match &self.plan.dlv {
            Some((dlv, arch)) if *arch == child.platform.arch => {
                let (dlv, store) = (dlv.clone(), layer_store(self.plan));
                Some(
                    blocking(move || {
                        let entry = BinaryEntry {
                            path: &dlv,
                            app_name: "dlv",
                            capabilities: None,
                        };
                        layer::binary_layer(entry, &store)
                    })
                    .await?,
                )
            }
            Some((_, arch)) => {
                tracing::warn!(
                    "{}: no Delve layer, the Delve given is for {arch}",
                    child.platform
                );
                None
            }
            None => None,
        };
        let image = assemble::assemble(
            &child.image,
            kodata,
            &bin,
            &Recipe {
                import_path: &pkg.import_path,
                app_name: pkg.app_name(),
                source_date_epoch: self.plan.source_date_epoch,
                kodata_date_epoch: self.plan.kodata_date_epoch,
                labels: &a.labels,
                annotations: &a.annotations,
                env: if self.plan.cover { COVER_ENV } else { &[] },
                zstd: matches!(self.plan.compression, Compression::Zstd(_)),
                dlv: dlv.as_ref(),
            },
        );
        if let Some(ahead) = ahead.filter(|a| a.images) {
            publish::push_ahead(&ahead.cx, &image, &ahead.repo, ahead.pushed).await?;
        }
        Ok((image, binary.path))
    }
}

/// Where a `--cover` binary writes its coverage files: most bases have a writable /tmp.
const COVER_ENV: &[&str] = &["GOCOVERDIR=/tmp"];

fn layer_store(plan: &Plan) -> LayerStore {
    LayerStore {
        blobs: plan.cache_dir.join("blobs/sha256"),
        index: plan.layer_cache.then(|| plan.cache_dir.join("layers")),
        compression: plan.compression,
    }
}

/// Layers are plain blocking I/O and compression: keep them off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, layer::LayerError> + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("layer task failed: {e}")))??)
}

/// The repository an artifact is pushed to, if any.
fn target_repository(a: &ArtifactPlan, pkg: &Package) -> Result<Option<Repository>, Error> {
    Ok(match &a.destination {
        Destination::None => None,
        Destination::Repository(r) => Some(r.clone()),
        Destination::DefaultRepo { repo, name } => {
            let name = name
                .clone()
                .unwrap_or_else(|| pkg.app_name().to_lowercase());
            Some(
                Repository::parse(&format!("{repo}/{name}"))
                    .map_err(|e| Error::Config(format!("image name {name:?}: {e}")))?,
            )
        }
    })
}

/// The base an artifact's package builds on: `.ko.yaml`'s override for it, or the default.
fn base_spec<'a>(a: &'a ArtifactPlan, import_path: &str) -> &'a BaseSpec {
    a.base_overrides
        .get(&import_path.to_lowercase())
        .unwrap_or(&a.base)
}
