//! Base image + ko's two layers → config and manifest bytes, with ko's config edits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use super::layer::{APP_DIR, KODATA_PATH, Layer};
use super::oci::{self, ConfigFile, Descriptor, History, Manifest, Time};
use crate::digest::Digest;

pub const AUTHOR: &str = "kobuild";
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// The base as assembly needs it: its manifest and config, already fetched and parsed.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// For the `base.name`/`base.digest` annotations; `None` for `scratch`.
    pub reference: Option<(String, Digest)>,
    pub media_type: String,
    pub manifest: Manifest,
    pub config: ConfigFile,
}

pub struct Recipe<'a> {
    pub import_path: &'a str,
    pub app_name: &'a str,
    pub source_date_epoch: Option<i64>,
    pub kodata_date_epoch: Option<i64>,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    /// `KEY=VALUE` entries appended to the config's environment (e.g. `GOCOVERDIR`).
    pub env: &'a [&'a str],
    /// Layers are zstd (media type `tar+zstd`), not gzip.
    pub zstd: bool,
    /// ko's Delve layer (`/ko-app/dlv`) for debug images; the entrypoint then starts the
    /// app under Delve, as ko does.
    pub dlv: Option<&'a Layer>,
}

/// Where a layer's bytes are: the base's blob store, or a file kobuild wrote.
#[derive(Clone, Debug)]
pub enum LayerSource {
    Base,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub layers: Vec<(Descriptor, LayerSource)>,
}

/// An index over per-platform images, in the base index's order.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub children: Vec<BuiltImage>,
}

/// What one artifact builds to: a single image, or an index of them.
#[derive(Clone, Debug)]
pub enum Built {
    Image(Box<BuiltImage>),
    Index(BuiltIndex),
}

impl Built {
    pub fn digest(&self) -> &Digest {
        match self {
            Built::Image(i) => &i.digest,
            Built::Index(i) => &i.digest,
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Built::Image(i) => &i.media_type,
            Built::Index(i) => &i.media_type,
        }
    }

    pub fn manifest(&self) -> &[u8] {
        match self {
            Built::Image(i) => &i.manifest,
            Built::Index(i) => &i.manifest,
        }
    }

    /// The platform images: the image itself, or the index's children.
    pub fn images(&self) -> &[BuiltImage] {
        match self {
            Built::Image(i) => std::slice::from_ref(i),
            Built::Index(i) => &i.children,
        }
    }

    /// Bytes a registry stores for it: manifests, configs and each distinct layer once.
    pub fn size(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        let mut size = self.manifest().len() as u64;
        for image in self.images() {
            if matches!(self, Built::Index(_)) {
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
}

/// One child of an output index: the image, and the base index's entry it was built on
/// (whose urls, annotations and platform ko keeps verbatim).
pub struct IndexChild<'a> {
    pub image: BuiltImage,
    pub base_descriptor: Option<&'a Descriptor>,
    pub platform: &'a crate::platform::Platform,
}

/// The output index: base order and media type, `artifactType` from each config, and the
/// base annotations at the index level too.
pub fn assemble_index(
    media_type: &str,
    base: Option<&(String, Digest)>,
    children: Vec<IndexChild>,
    annotations: &BTreeMap<String, String>,
) -> BuiltIndex {
    let manifests = children
        .iter()
        .map(|c| {
            let mut d = Descriptor::new(
                &c.image.media_type,
                c.image.manifest.len() as u64,
                c.image.digest.clone(),
            );
            match c.base_descriptor {
                Some(b) => {
                    d.urls = b.urls.clone();
                    d.annotations = b.annotations.clone();
                    d.platform = b.platform.clone();
                }
                None => d.platform = Some(c.platform.to_oci()),
            }
            d.artifact_type = c.image.config_descriptor.media_type.clone();
            d
        })
        .collect();
    let mut index = oci::Index {
        schema_version: 2,
        media_type: media_type.to_string(),
        manifests,
        annotations: BTreeMap::new(),
        subject: None,
    };
    if let Some((name, digest)) = base {
        index
            .annotations
            .insert(ANNOTATION_BASE_NAME.into(), name.clone());
        index
            .annotations
            .insert(ANNOTATION_BASE_DIGEST.into(), digest.to_string());
    }
    index
        .annotations
        .extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    let bytes = crate::gojson::to_vec(&index);
    BuiltIndex {
        media_type: media_type.to_string(),
        digest: Digest::of(&bytes),
        manifest: bytes,
        children: children.into_iter().map(|c| c.image).collect(),
    }
}

/// ko's layer media type follows the base manifest's: OCI or Docker.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// zstd has only an OCI media type; Docker manifests get it too (containerd reads it).
pub fn layer_media_type(manifest_media_type: &str, zstd: bool) -> &'static str {
    if zstd {
        return OCI_LAYER_ZSTD;
    }
    if manifest_media_type == oci::DOCKER_MANIFEST {
        oci::DOCKER_LAYER_GZIP
    } else {
        oci::OCI_LAYER_GZIP
    }
}

pub fn assemble(base: &BaseImage, kodata: &Layer, binary: &Layer, r: &Recipe) -> BuiltImage {
    let config = edit_config(base.config.clone(), kodata, binary, r);
    let config_bytes = crate::gojson::to_vec(&config);

    let mut manifest = base.manifest.clone();
    let mut cfg_desc = manifest.config.clone();
    cfg_desc.size = config_bytes.len() as u64;
    cfg_desc.digest = Digest::of(&config_bytes);
    if cfg_desc.data.is_some() {
        cfg_desc.data = Some(base64::engine::general_purpose::STANDARD.encode(&config_bytes));
    }
    manifest.config = cfg_desc.clone();

    let mut layers: Vec<(Descriptor, LayerSource)> = manifest
        .layers
        .iter()
        .map(|d| (d.clone(), LayerSource::Base))
        .collect();
    let media = layer_media_type(&base.media_type, r.zstd);
    for l in [Some(kodata), Some(binary), r.dlv].into_iter().flatten() {
        let d = Descriptor::new(media, l.size, l.digest.clone());
        manifest.layers.push(d.clone());
        layers.push((d, LayerSource::File(l.path.clone())));
    }

    if let Some((name, digest)) = &base.reference {
        manifest
            .annotations
            .insert(ANNOTATION_BASE_NAME.into(), name.clone());
        manifest
            .annotations
            .insert(ANNOTATION_BASE_DIGEST.into(), digest.to_string());
    }
    manifest
        .annotations
        .extend(r.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));

    let bytes = crate::gojson::to_vec(&manifest);
    BuiltImage {
        media_type: base.media_type.clone(),
        digest: Digest::of(&bytes),
        manifest: bytes,
        config: config_bytes,
        config_descriptor: cfg_desc,
        layers,
    }
}

fn edit_config(mut c: ConfigFile, kodata: &Layer, binary: &Layer, r: &Recipe) -> ConfigFile {
    let app = format!("{APP_DIR}/{}", r.app_name);
    c.config.entrypoint = Some(vec![app.clone()]);
    c.config.cmd = None;
    match c.config.env.iter_mut().find(|e| e.starts_with("PATH=")) {
        Some(path) => path.push_str(&format!(":{APP_DIR}")),
        None => c.config.env.push(format!("PATH={APP_DIR}")),
    }
    c.config.env.push(format!("KO_DATA_PATH={KODATA_PATH}"));
    c.config.env.extend(r.env.iter().map(|e| e.to_string()));
    c.author = AUTHOR.into();
    c.config
        .labels
        .extend(r.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(epoch) = r.source_date_epoch {
        c.created = Time(Some(crate::time::format_unix(epoch)));
    }
    let at = |epoch: Option<i64>| Time(epoch.map(crate::time::format_unix));
    let created_by = format!("kobuild build ko://{}", r.import_path);
    c.history.push(History {
        author: AUTHOR.into(),
        created: at(r.kodata_date_epoch),
        created_by: created_by.clone(),
        comment: "kodata contents, at $KO_DATA_PATH".into(),
        empty_layer: false,
    });
    c.history.push(History {
        author: AUTHOR.into(),
        created: at(r.source_date_epoch),
        created_by,
        comment: format!("go build output, at {app}"),
        empty_layer: false,
    });
    if c.rootfs.kind.is_empty() {
        c.rootfs.kind = "layers".into();
    }
    c.rootfs.diff_ids.push(kodata.diff_id.clone());
    c.rootfs.diff_ids.push(binary.diff_id.clone());
    if let Some(dlv) = r.dlv {
        c.history.push(History {
            author: AUTHOR.into(),
            created: at(r.source_date_epoch),
            created_by: format!("kobuild build ko://{}", r.import_path),
            comment: format!("Delve debugger, at {APP_DIR}/dlv"),
            empty_layer: false,
        });
        c.rootfs.diff_ids.push(dlv.diff_id.clone());
        let mut entrypoint: Vec<String> = [
            "exec",
            "--listen=:40000",
            "--headless",
            "--log",
            "--accept-multiclient",
            "--api-version=2",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        entrypoint.insert(0, format!("{APP_DIR}/dlv"));
        entrypoint.push(app);
        c.config.entrypoint = Some(entrypoint);
    }
    c
}

/// `scratch`: an empty OCI image for the platform, so runtimes see the right os/arch.
pub fn scratch(platform: &crate::platform::Platform) -> BaseImage {
    let config = ConfigFile {
        architecture: platform.arch.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        os_version: platform.os_version.clone(),
        rootfs: oci::RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        ..Default::default()
    };
    let bytes = crate::gojson::to_vec(&config);
    BaseImage {
        reference: None,
        media_type: oci::OCI_MANIFEST.into(),
        manifest: Manifest {
            schema_version: 2,
            media_type: oci::OCI_MANIFEST.into(),
            config: Descriptor::new(oci::OCI_CONFIG, bytes.len() as u64, Digest::of(&bytes)),
            layers: Vec::new(),
            annotations: BTreeMap::new(),
            subject: None,
        },
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> Layer {
        Layer {
            path: PathBuf::from(format!("/l{n}")),
            digest: Digest::of(&[n]),
            size: 10 + u64::from(n),
            diff_id: Digest::of(&[n, n]),
        }
    }

    fn base(docker: bool) -> BaseImage {
        let config: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z",
                "config":{"Env":["PATH=/usr/bin:/bin","A=1"],"Cmd":["/bin/sh"],"User":"65532","Labels":{"base":"yes"}},
                "rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]},
                "history":[{"created":"2024-01-02T03:04:05Z","created_by":"base"}]}"#,
        )
        .unwrap();
        let mt = if docker {
            oci::DOCKER_MANIFEST
        } else {
            oci::OCI_MANIFEST
        };
        let manifest: Manifest = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"x","size":1,"digest":"{}"}},
                "layers":[{{"mediaType":"base-layer","size":5,"digest":"{}"}}]}}"#,
            Digest::of(b"c"),
            Digest::of(b"l")
        ))
        .unwrap();
        BaseImage {
            reference: Some(("registry.test/base:1".into(), Digest::of(b"base"))),
            media_type: mt.into(),
            manifest,
            config,
        }
    }

    fn recipe<'a>(
        labels: &'a BTreeMap<String, String>,
        ann: &'a BTreeMap<String, String>,
    ) -> Recipe<'a> {
        Recipe {
            import_path: "example.com/hello",
            app_name: "hello",
            source_date_epoch: Some(1_700_000_000),
            kodata_date_epoch: None,
            labels,
            annotations: ann,
            env: &[],
            zstd: false,
            dlv: None,
        }
    }

    #[test]
    fn config_gets_ko_edits() {
        let labels = BTreeMap::from([("l".to_string(), "v".to_string())]);
        let ann = BTreeMap::new();
        let img = assemble(&base(false), &layer(1), &layer(2), &recipe(&labels, &ann));
        let c: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(
            c["config"]["Entrypoint"],
            serde_json::json!(["/ko-app/hello"])
        );
        assert!(c["config"].get("Cmd").is_none());
        assert_eq!(
            c["config"]["Env"],
            serde_json::json!([
                "PATH=/usr/bin:/bin:/ko-app",
                "A=1",
                "KO_DATA_PATH=/var/run/ko"
            ])
        );
        assert_eq!(
            c["config"]["Labels"],
            serde_json::json!({"base": "yes", "l": "v"})
        );
        assert_eq!(c["config"]["User"], "65532");
        assert_eq!(c["created"], "2023-11-14T22:13:20Z");
        assert_eq!(c["author"], AUTHOR);
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
        let h = c["history"].as_array().unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1]["created"], "0001-01-01T00:00:00Z");
        assert_eq!(h[2]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(h[2]["comment"], "go build output, at /ko-app/hello");
    }

    #[test]
    fn manifest_appends_layers_with_base_media_types_and_annotations() {
        let (l, a) = (
            BTreeMap::new(),
            BTreeMap::from([("k".to_string(), "v".to_string())]),
        );
        for docker in [false, true] {
            let img = assemble(&base(docker), &layer(1), &layer(2), &recipe(&l, &a));
            let m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
            let layers = m["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 3);
            assert_eq!(layers[0]["mediaType"], "base-layer");
            let want = if docker {
                oci::DOCKER_LAYER_GZIP
            } else {
                oci::OCI_LAYER_GZIP
            };
            assert_eq!(layers[2]["mediaType"], want);
            assert_eq!(m["config"]["digest"], Digest::of(&img.config).as_str());
            assert_eq!(
                m["annotations"][ANNOTATION_BASE_NAME],
                "registry.test/base:1"
            );
            assert_eq!(m["annotations"]["k"], "v");
            assert_eq!(img.digest, Digest::of(&img.manifest));
        }
    }

    #[test]
    fn no_path_gets_one() {
        let (l, a) = (BTreeMap::new(), BTreeMap::new());
        let img = assemble(
            &scratch(&crate::platform::Platform::linux_amd64()),
            &layer(1),
            &layer(2),
            &recipe(&l, &a),
        );
        let c: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(
            c["config"]["Env"],
            serde_json::json!(["PATH=/ko-app", "KO_DATA_PATH=/var/run/ko"])
        );
        assert_eq!(c["architecture"], "amd64");
        let m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        assert!(m.get("annotations").is_none());
    }
}
