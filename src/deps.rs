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
    env: &crate::env::Env,
    cwd: &Path,
) -> Result<Vec<String>, crate::Error> {
    let file = cwd.join(
        args.skaffold
            .filename
            .as_deref()
            .unwrap_or(Path::new("skaffold.yaml")),
    );
    let activation = crate::config::ActivationContext {
        env,
        command: "build",
        kube_context: None,
    };
    // The error names FILE:LINE:COL already.
    let config =
        crate::config::load_skaffold(&file, &args.skaffold.profile.profiles, Some(&activation))
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
/// sorted, as Skaffold's lister finds them: patterns see through symlinked directories,
/// each match of a pattern is walked without following symlinks, and `ignore` is tested on every entry of that walk (a matching
/// directory is pruned), never on the directories above the match.
pub fn files(
    context: &Path,
    paths: &[String],
    ignore: &[String],
) -> Result<Vec<String>, DepsError> {
    let mut all = Vec::new();
    let start = context
        .canonicalize()
        .unwrap_or_else(|_| context.to_path_buf());
    walk(context, context, 0, &mut vec![start], &mut all)?;
    let is_ignored = |p: &str| ignore.iter().any(|i| glob_match(&clean(i), p));
    let mut selected: Vec<String> = Vec::new();
    for pattern in paths {
        let pattern = clean(pattern);
        let matched: Vec<(&str, bool)> = if pattern == "." {
            vec![(".", true)]
        } else {
            all.iter()
                .filter(|f| glob_match(&pattern, &f.rel))
                .map(|f| (f.rel.as_str(), f.is_dir))
                .collect()
        };
        if matched.is_empty() {
            return Err(DepsError::NoMatch {
                context: context.to_path_buf(),
                pattern: pattern.to_string(),
            });
        }
        for (root, is_dir) in matched {
            if is_ignored(root) {
                continue;
            }
            if !is_dir {
                selected.push(root.to_string());
                continue;
            }
            let depth = if root == "." { 0 } else { root.len() };
            // Entries come parent first, so a pruned directory is seen before its contents.
            let mut pruned: Vec<String> = Vec::new();
            for f in &all {
                if f.link > depth || under(root, &f.rel).is_none() {
                    continue;
                }
                if pruned.iter().any(|p| f.rel.starts_with(p.as_str())) {
                    continue;
                }
                if is_ignored(&f.rel) {
                    if f.is_dir {
                        pruned.push(format!("{}/", f.rel));
                    }
                    continue;
                }
                if !f.is_dir {
                    selected.push(f.rel.clone());
                }
            }
        }
    }
    selected.sort();
    selected.dedup();
    Ok(selected)
}

/// `f` below the directory `root` ("." is the context): the rest of its path.
fn under<'a>(root: &str, f: &'a str) -> Option<&'a str> {
    if root == "." {
        return Some(f);
    }
    f.strip_prefix(root)?.strip_prefix('/')
}

/// A pattern as `filepath.Join(context, pattern)` leaves it: no `.` or empty segments.
fn clean(pattern: &str) -> String {
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// One entry under the context: its path relative to it, whether it is a directory itself
/// (a symlink is not), and the length of its deepest symlinked-directory ancestor's path
/// (0 when none), which a walk that does not follow symlinks never reaches past.
struct Found {
    rel: String,
    is_dir: bool,
    link: usize,
}

/// Every entry under `dir`, relative to `root`, parents before their contents. Symlinked
/// directories are entered, as doublestar's `**` enters them, once per chain (no loops).
fn walk(
    root: &Path,
    dir: &Path,
    link: usize,
    chain: &mut Vec<PathBuf>,
    out: &mut Vec<Found>,
) -> Result<(), DepsError> {
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
        let file_type = e.file_type().map_err(read_err)?;
        let is_dir = file_type.is_dir();
        let linked_dir = file_type.is_symlink() && path.is_dir();
        let below = if linked_dir { rel.len() } else { link };
        out.push(Found { rel, is_dir, link });
        if is_dir || linked_dir {
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if chain.contains(&real) {
                continue;
            }
            chain.push(real);
            walk(root, &path, below, chain, out)?;
            chain.pop();
        }
    }
    Ok(())
}

/// doublestar's matching: `**` spans any number of path segments; `*`, `?` and `[…]` stay
/// within one segment; `{a,b}` picks an alternative; `\\` escapes.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').collect();
    expand_braces(pattern).iter().any(|p| {
        let pat: Vec<&str> = p.split('/').collect();
        match_segments(&pat, &segs)
    })
}

/// Every pattern a `{a,b}` group stands for (nested groups included).
fn expand_braces(pattern: &str) -> Vec<String> {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'{' => {
                let (mut depth, mut j, mut commas) = (0, i, vec![]);
                while j < b.len() {
                    match b[j] {
                        b'\\' => j += 1,
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b',' if depth == 1 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                if j >= b.len() {
                    return vec![pattern.to_string()];
                }
                let mut bounds = vec![i];
                bounds.extend(commas);
                bounds.push(j);
                let (head, tail) = (&pattern[..i], &pattern[j + 1..]);
                return bounds
                    .windows(2)
                    .flat_map(|w| {
                        expand_braces(&format!("{head}{}{tail}", &pattern[w[0] + 1..w[1]]))
                    })
                    .collect();
            }
            _ => i += 1,
        }
    }
    vec![pattern.to_string()]
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
        (Some((b'[', rest)), Some((&c, srest))) => match class(rest, c) {
            Some((true, after)) => match_segment(after, srest),
            Some((false, _)) => false,
            // An unclosed `[` matches itself.
            None => c == b'[' && match_segment(rest, srest),
        },
        (Some((b'\\', rest)), Some((d, srest))) if !rest.is_empty() => {
            rest[0] == *d && match_segment(&rest[1..], srest)
        }
        (Some((c, rest)), Some((d, srest))) => c == d && match_segment(rest, srest),
        _ => false,
    }
}

/// A `[…]` class (after its `[`) against `c`: whether it matches, and the pattern after `]`.
fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negate, mut p) = match p.first() {
        Some(b'^' | b'!') => (true, &p[1..]),
        _ => (false, p),
    };
    let mut hit = false;
    let mut first = true;
    loop {
        let (&lo, rest) = p.split_first()?;
        if lo == b']' && !first {
            return Some((hit != negate, rest));
        }
        first = false;
        let (lo, rest) = if lo == b'\\' {
            let (&e, r) = rest.split_first()?;
            (e, r)
        } else {
            (lo, rest)
        };
        if let [b'-', hi, after @ ..] = rest
            && *hi != b']'
        {
            hit |= (lo..=*hi).contains(&c);
            p = after;
        } else {
            hit |= lo == c;
            p = rest;
        }
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
        assert!(glob_match("{cmd,pkg}/**/*.{go,s}", "pkg/x/a.s"));
        assert!(!glob_match("{cmd,pkg}/**/*.{go,s}", "vendor/a.go"));
        assert!(glob_match("[a-c]?.go", "bx.go"));
        assert!(!glob_match("[!a-c]?.go", "bx.go"));
        assert!(glob_match("**/.env", ".config/.env"));
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
            files(d, &s(&["**/*.go"]), &s(&["vendor/**"])).unwrap(),
            ["cmd/api/main.go", "main.go"]
        );
        assert_eq!(
            files(d, &s(&["kodata", "go.*"]), &[]).unwrap(),
            ["go.mod", "kodata/a.txt"]
        );
        // Ignore is tested below each match only: a directory above the match is not.
        assert_eq!(
            files(d, &s(&["**/*.go"]), &s(&["cmd"])).unwrap(),
            ["cmd/api/main.go", "main.go", "vendor/x/y.go"]
        );
        assert_eq!(
            files(d, &s(&["./"]), &s(&["cmd", "kodata/*"])).unwrap(),
            ["go.mod", "main.go", "vendor/x/y.go"]
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("cmd", d.join("link")).unwrap();
            assert!(
                files(d, &s(&["**/*.go"]), &[])
                    .unwrap()
                    .contains(&"link/api/main.go".into())
            );
            let all = files(d, &s(&["."]), &[]).unwrap();
            assert!(all.contains(&"link".into()) && !all.contains(&"link/api/main.go".into()));
            std::fs::remove_file(d.join("link")).unwrap();
        }
        let e = files(d, &s(&["**/*.rs"]), &[]).unwrap_err().to_string();
        assert!(e.contains("did not match any file"), "{e}");
    }
}
