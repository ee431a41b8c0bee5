//! Targets (a directory, `ko://import/path`, or `./...`) → exactly one `package main`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;

use super::GoError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub import_path: String,
    pub dir: PathBuf,
}

impl Package {
    /// ko's binary name: the last element of the import path (`ko-app` if there is none).
    pub fn app_name(&self) -> &str {
        match self.import_path.rsplit('/').next() {
            Some(n) if !n.is_empty() && n != "." => n,
            _ => "ko-app",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    import_path: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    dir: PathBuf,
}

/// What the user named, and where and how Go is asked about it: a directory (pattern `.`
/// there), an import path (from `cwd`), or a `...` pattern that must match one main package.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub name: String,
    pub dir: PathBuf,
    pub pattern: String,
}

impl Target {
    pub fn parse(cwd: &Path, target: &str) -> Result<Target, GoError> {
        let resolve_err = |message: String| GoError::Resolve {
            target: target.to_string(),
            message,
        };
        let (dir, pattern) = if let Some(ip) = target.strip_prefix("ko://") {
            if ip.is_empty() {
                return Err(resolve_err("empty import path after ko://".into()));
            }
            (cwd.to_path_buf(), ip.to_string())
        } else if let Some(prefix) = target.strip_suffix("/...") {
            // Listed from the directory itself, so its module is the main module.
            (cwd.join(prefix), "./...".to_string())
        } else {
            let dir = cwd.join(target);
            if !dir.is_dir() {
                return Err(resolve_err(format!(
                    "no such directory {}: give a directory with a Go main package, or ko://import/path",
                    dir.display()
                )));
            }
            (dir, ".".to_string())
        };
        Ok(Target {
            name: target.to_string(),
            dir,
            pattern,
        })
    }

    /// Whether `go build` can start before `go list` has answered: not for `...` patterns,
    /// which may match several packages.
    pub fn is_buildable(&self) -> bool {
        !self.pattern.ends_with("...")
    }
}

/// Resolve a target with `go list`: it must be exactly one `package main`.
pub async fn resolve(go: &str, t: &Target) -> Result<Package, GoError> {
    let target = &t.name;
    let resolve_err = |message: String| GoError::Resolve {
        target: target.to_string(),
        message,
    };
    let (dir, pattern) = (&t.dir, &t.pattern);
    let mut cmd = Command::new(go);
    // A buildable target's builds do not wait for this answer; a pattern's do.
    if t.is_buildable() {
        super::in_background(&mut cmd);
    }
    cmd.args(["list", "-json=ImportPath,Name,Dir", "--", pattern])
        .current_dir(dir)
        .stdin(Stdio::null());
    // If the run fails elsewhere first, Go must not keep building behind our back.
    let out = crate::interrupt::output(&mut cmd)
        .await
        .map_err(|source| GoError::Spawn {
            go: go.to_string(),
            source: source.into(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Progress lines ("go: finding module ...") say nothing about what is wrong.
        let message: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty() && !l.starts_with("go: finding") && !l.starts_with("go: downloading")
            })
            .collect();
        let message = if message.is_empty() {
            "failed".to_string()
        } else {
            message.join(" ")
        };
        return Err(resolve_err(format!("go list: {message}")));
    }
    let listed: Vec<Listed> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| resolve_err(format!("unreadable go list output: {e}")))?;
    let mains: Vec<&Listed> = listed.iter().filter(|p| p.name == "main").collect();
    match (mains.as_slice(), listed.as_slice()) {
        ([one], _) => Ok(Package {
            import_path: one.import_path.clone(),
            dir: one.dir.clone(),
        }),
        ([], []) => Err(resolve_err("matched no Go packages".into())),
        ([], [lib]) => Err(resolve_err(format!(
            "{} is package {}, a library: kobuild needs a package main",
            lib.import_path, lib.name
        ))),
        ([], _) => Err(resolve_err(format!(
            "matched {} packages and none is a package main",
            listed.len()
        ))),
        (several, _) => Err(resolve_err(format!(
            "matched {} main packages ({}): name one of them",
            several.len(),
            several
                .iter()
                .map(|p| p.import_path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_ko() {
        let p = |ip: &str| Package {
            import_path: ip.into(),
            dir: PathBuf::new(),
        };
        assert_eq!(p("github.com/google/ko").app_name(), "ko");
        assert_eq!(p("github.com/foo/bar/v2").app_name(), "v2");
        assert_eq!(p("hello").app_name(), "hello");
    }
}
