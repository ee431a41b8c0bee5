//! What `skaffold render` renders for one configuration: `manifests:` from
//! `skaffold/v3alpha1` on, and before it `deploy.kubectl.manifests` and `deploy.kustomize`,
//! which Skaffold's in-memory upgrade moves there. Only the fields kobuild acts on are read:
//! Skaffold itself has checked the rest, and `kobuild build` must not fail on them.

use super::error::{Fault, Pos};
use super::yaml::{Node, strings};

/// Renderers kobuild does not run; `render` refuses them rather than leave manifests out.
const UNSUPPORTED: &[&str] = &["helm", "kpt", "remoteManifests", "transform"];
/// Deployers whose presence turns off Skaffold's default `rawYaml: [k8s/*.yaml]`.
const DEPLOYERS: &[&str] = &["kubectl", "kustomize", "helm", "kpt", "docker", "cloudrun"];
/// Skaffold's manifests when one configuration names no renderer and no deployer.
pub const DEFAULT_RAW_YAML: &str = "k8s/*.yaml";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifests {
    /// File paths or globs, relative to the skaffold.yaml's directory.
    pub raw_yaml: Vec<String>,
    pub kustomize: Option<Kustomize>,
    /// Renderers kobuild does not run, as `manifests.helm` (or `deploy.helm`), with where.
    pub unsupported: Vec<(String, Pos)>,
    /// Whether the configuration names a renderer or a deployer at all.
    pub configured: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kustomize {
    /// Directories holding a kustomization, relative to the skaffold.yaml's directory.
    pub paths: Vec<String>,
    /// Extra `kustomize build` arguments; each entry is split on single spaces, as Skaffold does.
    pub build_args: Vec<String>,
}

/// Reads one configuration document (profiles applied) of the given schema.
pub(super) fn read(doc: &Node, upgraded: bool) -> Result<Manifests, Fault> {
    let mut m = Manifests::default();
    if upgraded {
        let Some(node) = set(doc.get("manifests")) else {
            m.configured = deployer(doc);
            return Ok(m);
        };
        m.raw_yaml = strings_at(node, "rawYaml", "manifests")?;
        if let Some(k) = set(node.get("kustomize")) {
            m.kustomize = Some(Kustomize {
                paths: strings_at(k, "paths", "manifests.kustomize")?,
                build_args: strings_at(k, "buildArgs", "manifests.kustomize")?,
            });
        }
        unsupported(node, "manifests", &mut m.unsupported);
        m.configured = !m.raw_yaml.is_empty()
            || m.kustomize.is_some()
            || !m.unsupported.is_empty()
            || deployer(doc);
    } else {
        let deploy = set(doc.get("deploy"));
        if let Some(kubectl) = deploy.and_then(|d| set(d.get("kubectl"))) {
            m.raw_yaml = strings_at(kubectl, "manifests", "deploy.kubectl")?;
            // Skaffold's v2 defaults gave a kubectl deployer without manifests this glob.
            if m.raw_yaml.is_empty() {
                m.raw_yaml.push(DEFAULT_RAW_YAML.to_string());
            }
            if let Some(e) = kubectl
                .entry("remoteManifests")
                .filter(|e| e.value.non_empty())
            {
                m.unsupported
                    .push(("deploy.kubectl.remoteManifests".into(), e.key_pos));
            }
        }
        if let Some(k) = deploy.and_then(|d| set(d.get("kustomize"))) {
            let mut paths = strings_at(k, "paths", "deploy.kustomize")?;
            // The v3alpha1 upgrade gives an empty list the context directory.
            if paths.is_empty() {
                paths.push(".".into());
            }
            m.kustomize = Some(Kustomize {
                paths,
                build_args: strings_at(k, "buildArgs", "deploy.kustomize")?,
            });
        }
        if let Some(d) = deploy {
            for key in ["helm", "kpt"] {
                if let Some(e) = d.entry(key).filter(|e| !e.value.is_null()) {
                    m.unsupported.push((format!("deploy.{key}"), e.key_pos));
                }
            }
        }
        m.configured = deployer(doc);
    }
    Ok(m)
}

/// A mapping value that is there and not null.
fn set(node: Option<&Node>) -> Option<&Node> {
    node.filter(|n| !n.is_null())
}

fn strings_at(node: &Node, key: &str, parent: &str) -> Result<Vec<String>, Fault> {
    match node.get(key) {
        None => Ok(Vec::new()),
        Some(n) => strings(n, &format!("{parent}.{key}")),
    }
}

fn unsupported(node: &Node, parent: &str, out: &mut Vec<(String, Pos)>) {
    for key in UNSUPPORTED {
        if let Some(e) = node.entry(key).filter(|e| e.value.non_empty()) {
            out.push((format!("{parent}.{key}"), e.key_pos));
        }
    }
}

fn deployer(doc: &Node) -> bool {
    set(doc.get("deploy")).is_some_and(|d| DEPLOYERS.iter().any(|k| set(d.get(k)).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse_documents;

    fn read_text(text: &str, upgraded: bool) -> Manifests {
        read(&parse_documents(text).unwrap().remove(0), upgraded).unwrap()
    }

    #[test]
    fn v3_manifests_are_read_as_written() {
        let m = read_text(
            "manifests:\n  rawYaml: [a.yaml, 'k8s/*.yaml']\n  kustomize:\n    paths: [overlays/dev]\n    buildArgs: ['--load-restrictor LoadRestrictionsNone']\n  helm:\n    releases: [{name: x}]\n",
            true,
        );
        assert_eq!(m.raw_yaml, ["a.yaml", "k8s/*.yaml"]);
        let k = m.kustomize.unwrap();
        assert_eq!(k.paths, ["overlays/dev"]);
        assert_eq!(k.build_args, ["--load-restrictor LoadRestrictionsNone"]);
        assert_eq!(m.unsupported.len(), 1);
        assert_eq!(m.unsupported[0].0, "manifests.helm");
        assert!(m.configured);
    }

    #[test]
    fn v2_deployers_are_upgraded_as_skaffold_does() {
        let m = read_text("deploy:\n  kubectl: {}\n  kustomize: {}\n", false);
        assert_eq!(m.raw_yaml, [DEFAULT_RAW_YAML]);
        assert_eq!(m.kustomize.unwrap().paths, ["."]);
        let m = read_text("deploy:\n  kubectl:\n    manifests: [x.yaml]\n", false);
        assert_eq!(m.raw_yaml, ["x.yaml"]);
        // A v3 file's deploy section is not a renderer.
        let m = read_text("deploy:\n  kubectl:\n    manifests: [x.yaml]\n", true);
        assert!(m.raw_yaml.is_empty() && m.configured);
    }

    #[test]
    fn nothing_configured_is_told_apart() {
        assert!(!read_text("build: {}\n", true).configured);
        assert!(!read_text("manifests: {}\n", true).configured);
        assert!(!read_text("build: {}\n", false).configured);
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let doc = parse_documents("manifests:\n  rawYaml: 3\n")
            .unwrap()
            .remove(0);
        let err = read(&doc, true).unwrap_err();
        assert!(format!("{err:?}").contains("manifests.rawYaml"), "{err:?}");
    }
}
