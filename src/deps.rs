//! Skaffold's dependency lists for ko artifacts (`list.Files`): `**`-style patterns under the
//! context; a pattern that matches nothing is an error; ignore patterns drop files and whole
//! directories. `kobuild deps` prints them.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("{file}: no ko artifact named {image:?} (ko artifacts: {known})")]
    UnknownImage {
        file: PathBuf,
        image: String,
        known: String,
    },
    #[error(
        "{context}: dependencies pattern {pattern:?} did not match any file: fix ko.dependencies.paths"
    )]
    NoMatch { context: PathBuf, pattern: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `kobuild deps`: each selected ko artifact's dependency files, as `IMAGE<TAB>PATH` lines
/// (paths relative to the artifact's context), or bare paths when one image was asked for.
pub fn run(
    args: &crate::cli::DepsArgs,
    env: &crate::plan::Env,
    cwd: &Path,
) -> Result<Vec<String>, crate::Error> {
    let file = cwd.join(
        args.filename
            .as_deref()
            .unwrap_or(Path::new("skaffold.yaml")),
    );
    let activation = crate::config::ActivationContext {
        env,
        command: "build",
        kube_context: None,
    };
    // The error names FILE:LINE:COL already.
    let config = crate::config::load_skaffold(&file, &args.profiles, Some(&activation))
        .map_err(|e| crate::Error::Config(e.to_string()))?;
    let dir = file.parent().unwrap_or(cwd);
    let ko: Vec<_> = config
        .artifacts
        .iter()
        .filter_map(|a| match &a.builder {
            crate::config::Builder::Ko(k) => Some((a, k)),
            crate::config::Builder::Other(_) => None,
        })
        .collect();
    for image in &args.images {
        if !ko.iter().any(|(a, _)| &a.image == image) {
            let known: Vec<&str> = ko.iter().map(|(a, _)| a.image.as_str()).collect();
            return Err(DepsError::UnknownImage {
                file,
                image: image.clone(),
                known: known.join(", "),
            }
            .into());
        }
    }
    let mut lines = Vec::new();
    for (a, k) in ko
        .iter()
        .filter(|(a, _)| args.images.is_empty() || args.images.contains(&a.image))
    {
        let (paths, ignore) = k.dependency_patterns();
        for f in files(&dir.join(&a.context), &paths, &ignore)? {
            lines.push(if args.images.len() == 1 {
                f
            } else {
                format!("{}\t{f}", a.image)
            });
        }
    }
    Ok(lines)
}

/// Files under `context` that `paths` select and `ignore` does not, relative to `context`,
/// sorted.
pub fn files(
    context: &Path,
    paths: &[String],
    ignore: &[String],
) -> Result<Vec<String>, DepsError> {
    let mut all = Vec::new();
    walk(context, context, &mut all)?;
    let mut selected: Vec<String> = Vec::new();
    for pattern in paths {
        let pattern = pattern.trim_start_matches("./");
        let matched: Vec<&(String, bool)> =
            all.iter().filter(|(p, _)| glob_match(pattern, p)).collect();
        if matched.is_empty() {
            return Err(DepsError::NoMatch {
                context: context.to_path_buf(),
                pattern: pattern.to_string(),
            });
        }
        for (p, is_dir) in matched {
            if *is_dir {
                let prefix = format!("{p}/");
                selected.extend(
                    all.iter()
                        .filter(|(f, d)| !d && f.starts_with(&prefix))
                        .map(|(f, _)| f.clone()),
                );
            } else {
                selected.push(p.clone());
            }
        }
    }
    selected.retain(|f| !ignored(f, ignore));
    selected.sort();
    selected.dedup();
    Ok(selected)
}

/// A file is ignored when it, or a directory above it, matches an ignore pattern.
fn ignored(file: &str, ignore: &[String]) -> bool {
    let mut prefix = String::new();
    for part in file.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if ignore
            .iter()
            .any(|i| glob_match(i.trim_start_matches("./"), &prefix))
        {
            return true;
        }
    }
    false
}

/// Every file and directory under `dir`, relative to `root`, with whether it is a directory.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, bool)>) -> Result<(), DepsError> {
    let read_err = |source| DepsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let is_dir = path.is_dir();
        out.push((rel, is_dir));
        if is_dir && !e.file_type().map_err(read_err)?.is_symlink() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// doublestar's matching: `**` spans any number of path segments, `*` and `?` stay within
/// one segment.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|i| match_segments(rest, &segs[i..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_segment(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match (p.split_first(), s.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        (Some((b'?', rest)), Some((_, srest))) => match_segment(rest, srest),
        (Some((c, rest)), Some((d, srest))) => c == d && match_segment(rest, srest),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_doublestar() {
        assert!(glob_match("**/*.go", "main.go"));
        assert!(glob_match("**/*.go", "cmd/api/main.go"));
        assert!(!glob_match("**/*.go", "cmd/api/main.go.txt"));
        assert!(glob_match("go.*", "go.mod"));
        assert!(!glob_match("go.*", "sub/go.mod"));
        assert!(glob_match("cmd/?pi/*", "cmd/api/x"));
        assert!(glob_match("kodata", "kodata"));
    }

    #[test]
    fn selects_ignores_and_fails_on_empty_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "main.go",
            "go.mod",
            "cmd/api/main.go",
            "kodata/a.txt",
            "vendor/x/y.go",
        ] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), "x").unwrap();
        }
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            files(d, &s(&["**/*.go"]), &s(&["vendor"])).unwrap(),
            ["cmd/api/main.go", "main.go"]
        );
        assert_eq!(
            files(d, &s(&["kodata", "go.*"]), &[]).unwrap(),
            ["go.mod", "kodata/a.txt"]
        );
        let e = files(d, &s(&["**/*.rs"]), &[]).unwrap_err().to_string();
        assert!(e.contains("did not match any file"), "{e}");
    }
}
