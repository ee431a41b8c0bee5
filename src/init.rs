//! `kobuild init`: a skaffold.yaml with a ko artifact for every Go main package below the
//! current directory, and the manifests that name `ko://` images, as Skaffold's ko init.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

/// Directories Skaffold's init does not look into.
fn skipped(name: &str) -> bool {
    name.starts_with('.') || name == "vendor" || name == "node_modules"
}

/// Writes `<cwd>/skaffold.yaml` (atomically; an existing one only with `force`) and returns
/// its path.
pub fn run(cwd: &Path, go: &str, force: bool) -> Result<PathBuf, Error> {
    let out = cwd.join("skaffold.yaml");
    if out.exists() && !force {
        return Err(Error::Config(format!(
            "{} exists: pass --force to replace it",
            out.display()
        )));
    }
    let mut modules = Vec::new();
    let mut manifests = Vec::new();
    walk(cwd, cwd, &mut modules, &mut manifests)?;
    let mut artifacts = Vec::new();
    for module in &modules {
        for import_path in main_packages(go, &cwd.join(module))? {
            artifacts.push((import_path, module.clone()));
        }
    }
    if artifacts.is_empty() {
        return Err(Error::Config(format!(
            "no Go main package found under {}",
            cwd.display()
        )));
    }
    let mut yaml =
        String::from("apiVersion: skaffold/v4beta14\nkind: Config\nbuild:\n  artifacts:\n");
    for (ip, module) in &artifacts {
        yaml.push_str(&format!("    - image: ko://{ip}\n"));
        if module != "." {
            yaml.push_str(&format!("      context: {module}\n"));
        }
        // go.mod, go.sum and kodata change images too; Skaffold's default (**/*.go) misses them.
        yaml.push_str(
            "      ko:\n        dependencies:\n          paths: [\"**/*.go\", \"go.*\"]\n",
        );
    }
    if !manifests.is_empty() {
        yaml.push_str("manifests:\n  rawYaml:\n");
        for m in &manifests {
            yaml.push_str(&format!("    - {m}\n"));
        }
    }
    crate::fsutil::write_atomic(&out, yaml.as_bytes())?;
    Ok(out)
}

/// Module directories (holding go.mod) and manifests naming `ko://` images, relative to `root`.
fn walk(
    root: &Path,
    dir: &Path,
    modules: &mut Vec<String>,
    manifests: &mut Vec<String>,
) -> Result<(), Error> {
    let read_err = |e: std::io::Error| Error::Config(format!("cannot read {}: {e}", dir.display()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    let rel = |p: &Path| {
        let r = p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned();
        if r.is_empty() { ".".to_string() } else { r }
    };
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if path.is_dir() {
            if !skipped(&name) {
                walk(root, &path, modules, manifests)?;
            }
        } else if name == "go.mod" {
            modules.push(rel(dir));
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "skaffold.yaml" {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if crate::render::find_ko_references(&text).is_ok_and(|r| !r.is_empty()) {
                manifests.push(rel(&path));
            }
        }
    }
    Ok(())
}

fn main_packages(go: &str, dir: &Path) -> Result<Vec<String>, Error> {
    let out = Command::new(go)
        .args([
            "list",
            "-f",
            "{{if eq .Name \"main\"}}{{.ImportPath}}{{end}}",
            "./...",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Config(format!("cannot run {go}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Config(format!(
            "go list in {}: {}",
            dir.display(),
            stderr.lines().last().unwrap_or("failed")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
