//! `kobuild render` on a skaffold.yaml: the manifests its configurations name, found as
//! `skaffold render` finds them. `rawYaml` entries are used as written when the path exists,
//! else as globs (a glob matching nothing is a warning, as in Skaffold); `kustomize.paths`
//! are built by `kustomize build`, else `kubectl kustomize`. Each configuration's raw
//! manifests come before its kustomizations, configurations in file order.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Input, RenderError, io_error, metadata, walk};
use crate::config::{ActivationContext, Kustomize, Manifests, load_skaffold};
use crate::env::Env;
use crate::fsutil;

/// Whether `path` is a Skaffold configuration rather than a manifest: a file with a
/// top-level `apiVersion: skaffold/…`, which no Kubernetes object has. Only the file's start
/// is read, where every configuration names it: a manifest of megabytes is read once, later.
pub(super) fn is_config(path: &Path) -> bool {
    const HEAD: u64 = 64 * 1024;
    let mut head = Vec::new();
    let read = fsutil::open_regular(path).and_then(|f| f.take(HEAD).read_to_end(&mut head));
    read.is_ok()
        && String::from_utf8_lossy(&head).lines().any(|line| {
            line.strip_prefix("apiVersion:").is_some_and(|v| {
                v.trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .starts_with("skaffold/")
            })
        })
}

/// The manifests `file`'s configurations name, after `profiles`, in Skaffold's order.
pub(super) fn inputs(
    file: &Path,
    profiles: &[String],
    env: &Env,
) -> Result<Vec<Input>, RenderError> {
    let activation = ActivationContext {
        env,
        command: "render",
        kube_context: None,
    };
    let config = load_skaffold(file, profiles, Some(&activation))
        .map_err(|e| RenderError::Skaffold(e.to_string()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for pipeline in &config.pipelines {
        manifests_of(file, dir, &pipeline.manifests, env, &mut out)?;
    }
    Ok(out)
}

fn manifests_of(
    file: &Path,
    dir: &Path,
    m: &Manifests,
    env: &Env,
    out: &mut Vec<Input>,
) -> Result<(), RenderError> {
    if let Some((field, pos)) = m.unsupported.first() {
        return Err(RenderError::Renderer {
            at: format!("{}:{}:{}", file.display(), pos.line, pos.column),
            field: field.clone(),
        });
    }
    for pattern in &m.raw_yaml {
        let path = dir.join(pattern);
        if path.exists() {
            if metadata(&path)?.is_dir() {
                walk(&path, false, out)?;
            } else {
                out.push(Input::File(path));
            }
            continue;
        }
        let found = glob(&path);
        if found.is_empty() {
            tracing::warn!(
                "{}: manifests.rawYaml {pattern:?} matched no file",
                file.display()
            );
        }
        out.extend(found.into_iter().map(Input::File));
    }
    if let Some(k) = &m.kustomize {
        for path in &k.paths {
            let expanded = crate::template::skaffold_expand_label(path, env.vars())
                .map_err(|e| RenderError::Skaffold(format!("{}: {e}", file.display())))?;
            let target = dir.join(expanded);
            let text = kustomize(&target, k, env)?;
            out.push(Input::Generated {
                name: format!("kustomize build {}", target.display()),
                text,
            });
        }
    }
    Ok(())
}

/// `filepath.Glob` on an absolute pattern: each segment with `*`, `?` or `[` is matched
/// against the directory's entries, the others are taken as written; files only, sorted
/// within each directory.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for part in pattern.components() {
        let seg = part.as_os_str().to_string_lossy();
        let magic = seg.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for base in &found {
            if !magic {
                let p = base.join(part);
                if p.symlink_metadata().is_ok() {
                    next.push(p);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| crate::deps::glob_match(&seg, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        found = next;
    }
    found.into_iter().filter(|p| p.is_file()).collect()
}

/// `kustomize build [ARGS] DIR`, or `kubectl kustomize [ARGS] DIR` when only kubectl is
/// there: its output, bounded as any manifest.
fn kustomize(dir: &Path, k: &Kustomize, env: &Env) -> Result<String, RenderError> {
    let shown = dir.display().to_string();
    let (program, sub) = if let Some(p) = env.find_program("kustomize") {
        (p, "build")
    } else if let Some(p) = env.find_program("kubectl") {
        (p, "kustomize")
    } else {
        return Err(RenderError::NoKustomize(shown));
    };
    // Skaffold splits each entry on single spaces.
    let args = k.build_args.iter().flat_map(|a| a.split(' '));
    let mut child = Command::new(&program)
        .arg(sub)
        .args(args)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RenderError::Kustomize {
            dir: shown.clone(),
            message: format!("cannot run {}: {e}", program.display()),
        })?;
    let mut stderr = child.stderr.take().expect("piped");
    // Read apart, so neither pipe can fill up and stall the other.
    let errors = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });
    let text = fsutil::read_all_bounded(
        child.stdout.as_mut().expect("piped"),
        fsutil::MAX_MANIFEST_BYTES,
    );
    if text.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| io_error(dir, e))?;
    let errors = errors.join().unwrap_or_default();
    let text = text.map_err(|e| io_error(dir, e))?;
    if !status.success() {
        let last = String::from_utf8_lossy(&errors)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::trim)
            .unwrap_or("no message")
            .to_string();
        return Err(RenderError::Kustomize {
            dir: shown,
            message: format!("{} {sub} failed: {last:?}", program.display()),
        });
    }
    String::from_utf8(text).map_err(|_| RenderError::NotUtf8(format!("kustomize build {shown}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_per_segment_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        for f in ["k8s/b.yaml", "k8s/a.yaml", "k8s/c.txt", "other/x/d.yaml"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            glob(&d.path().join(pattern))
                .iter()
                .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("k8s/*.yaml"), ["k8s/a.yaml", "k8s/b.yaml"]);
        assert_eq!(names("*/*/d.yaml"), ["other/x/d.yaml"]);
        assert!(names("nope/*.yaml").is_empty());
    }

    #[test]
    fn configs_are_told_from_manifests() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x.yaml");
        std::fs::write(&f, "apiVersion: \"skaffold/v4beta11\"\nkind: Config\n").unwrap();
        assert!(is_config(&f));
        std::fs::write(&f, "apiVersion: apps/v1\nkind: Deployment\n").unwrap();
        assert!(!is_config(&f));
        assert!(!is_config(d.path()));
    }
}
