//! Skaffold's tag policies, and the git facts they (and ko's templates) read.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::{GitVariant, TagPolicy};
use md5::{Digest as _, Md5};

use crate::deps::DepsError;
use crate::digest::Digest;
use crate::template::{self, GitInfo};

/// `git ARGS` in `dir`: its trimmed stdout, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn dirty(dir: &Path) -> bool {
    git(dir, &["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty())
}

/// What ko's templates see as `.Git` for `dir` (empty fields outside a repository).
pub fn git_info(dir: &Path) -> GitInfo {
    let Some(full) = git(dir, &["rev-parse", "HEAD"]) else {
        return GitInfo::default();
    };
    GitInfo {
        branch: git(dir, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default(),
        tag: git(dir, &["describe", "--tags", "--abbrev=0"]).unwrap_or_else(|| "v0.0.0".into()),
        short_commit: git(dir, &["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
        full_commit: full,
        commit_timestamp: git(dir, &["log", "-1", "--format=%ct"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(template::GO_ZERO_TIME_UNIX),
        dirty: dirty(dir),
    }
}

/// One artifact's dependency patterns, as inputDigest lists them: its `context` as written
/// (relative to the skaffold.yaml's directory) and `ko.dependencies`, defaults applied.
#[derive(Clone, Debug, Default)]
pub struct DepList {
    pub context: String,
    pub paths: Vec<String>,
    pub ignore: Vec<String>,
}

pub struct TagContext<'a> {
    /// The artifact's `context` directory.
    pub dir: &'a Path,
    /// The image name as written (Skaffold's `IMAGE_NAME` for envTemplate).
    pub image: &'a str,
    /// The skaffold.yaml's directory, which `DepList::context` is relative to.
    pub root: &'a Path,
    /// What inputDigest hashes: the artifact's own list first, then those of the artifacts
    /// it `requires`, transitively.
    pub deps: &'a [DepList],
    pub env: &'a BTreeMap<String, String>,
    /// Unix seconds for `dateTime` (SOURCE_DATE_EPOCH, else now).
    pub now: i64,
}

/// The tag a policy gives; errors are template errors. Without git, the gitCommit tagger
/// falls back to `latest`, as Skaffold does.
pub fn tag(policy: &TagPolicy, cx: &TagContext) -> Result<String, template::TemplateError> {
    Ok(match policy {
        TagPolicy::GitCommit {
            variant,
            prefix,
            ignore_changes,
        } => {
            let args: &[&str] = match variant {
                GitVariant::Tags => &["describe", "--tags", "--always"],
                GitVariant::CommitSha => &["rev-parse", "HEAD"],
                GitVariant::AbbrevCommitSha => &["rev-parse", "--short", "HEAD"],
                GitVariant::TreeSha => &["rev-parse", "HEAD:./"],
                GitVariant::AbbrevTreeSha => &["rev-parse", "--short", "HEAD:./"],
                GitVariant::Branches => &["rev-parse", "--abbrev-ref", "HEAD"],
            };
            match git(cx.dir, args) {
                Some(t) if !t.is_empty() => {
                    let suffix = if !ignore_changes && dirty(cx.dir) {
                        "-dirty"
                    } else {
                        ""
                    };
                    format!("{prefix}{}{suffix}", sanitize_tag(&t))
                }
                _ => "latest".into(),
            }
        }
        TagPolicy::Sha256 => "latest".into(),
        TagPolicy::EnvTemplate { template } => {
            let extra = BTreeMap::from([("IMAGE_NAME".to_string(), cx.image.to_string())]);
            template::skaffold_expand(template, cx.env, &extra)?
        }
        TagPolicy::DateTime { format, .. } => {
            let layout = if format.is_empty() {
                "2006-01-02_15-04-05.999_MST"
            } else {
                format
            };
            template::format_go_time(cx.now, 0, layout)
        }
        TagPolicy::InputDigest => match input_digest(cx.root, cx.deps) {
            Ok(t) => t,
            Err(e) => {
                // Skaffold's tagger fallback.
                tracing::warn!(
                    "inputDigest tagger failed, tagging {:?} latest: {e}",
                    cx.image
                );
                "latest".into()
            }
        },
        TagPolicy::CustomTemplate {
            template,
            components,
        } => {
            let mut values = BTreeMap::new();
            for c in components {
                values.insert(c.name.clone(), tag(&c.tagger, cx)?);
            }
            template::skaffold_expand(template, &values, &BTreeMap::new())?
        }
    })
}

/// Branch names may hold `/`, which a tag may not.
fn sanitize_tag(t: &str) -> String {
    t.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Skaffold's inputDigest: sha256 of the JSON list of per-file `md5(relpath ‖ content)` hex
/// digests over the dependency files of the artifact and of those it requires, sorted by
/// their path from `root`; `relpath` is from the artifact's own context (`../base/x.go` for
/// a required artifact's file). A symlink contributes its path only; a file that vanished is
/// skipped.
fn input_digest(root: &Path, deps: &[DepList]) -> Result<String, DepsError> {
    let mut files = std::collections::BTreeSet::new();
    for list in deps {
        for rel in crate::deps::files(&root.join(&list.context), &list.paths, &list.ignore)? {
            files.insert(join(&list.context, &rel));
        }
    }
    let own = deps.first().map_or(".", |d| d.context.as_str());
    let mut hashes = Vec::new();
    for joined in files {
        let path = root.join(&joined);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mut h = Md5::new_with_prefix(relative(own, &joined).as_bytes());
        if meta.is_file() {
            let content = std::fs::read(&path).map_err(|source| DepsError::Read {
                path: path.clone(),
                source,
            })?;
            h.update(&content);
        }
        hashes.push(hex(&h.finalize()));
    }
    // Go's json.Encoder: a nil list is `null`, then a newline.
    let json = if hashes.is_empty() {
        "null".to_string()
    } else {
        serde_json::to_string(&hashes).expect("a list of strings serializes")
    };
    Ok(Digest::of(format!("{json}\n").as_bytes()).hex().to_string())
}

/// The segments of a slash path, `.` and empty ones dropped (Go's `filepath.Clean`, short of
/// `..` handling, which dependency paths from a walk do not hold).
fn segments(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect()
}

/// Go's `filepath.Join` of a context and a path in it.
fn join(context: &str, rel: &str) -> String {
    let mut all = segments(context);
    all.extend(segments(rel));
    if all.is_empty() {
        ".".into()
    } else {
        all.join("/")
    }
}

/// Go's `filepath.Rel` between two clean relative paths.
fn relative(base: &str, target: &str) -> String {
    let (b, t) = (segments(base), segments(target));
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    let mut out: Vec<&str> = vec![".."; b.len() - common];
    out.extend(&t[common..]);
    if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_without_git() {
        let dir = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([("VERSION".to_string(), "1.2.3".to_string())]);
        let cx = TagContext {
            dir: dir.path(),
            image: "app",
            root: dir.path(),
            deps: &[],
            env: &env,
            now: 1_700_000_000,
        };
        let git = TagPolicy::GitCommit {
            variant: GitVariant::Tags,
            prefix: String::new(),
            ignore_changes: false,
        };
        assert_eq!(tag(&git, &cx).unwrap(), "latest");
        assert_eq!(tag(&TagPolicy::Sha256, &cx).unwrap(), "latest");
        let t = TagPolicy::EnvTemplate {
            template: "{{.IMAGE_NAME}}-{{.VERSION}}".into(),
        };
        assert_eq!(tag(&t, &cx).unwrap(), "app-1.2.3");
        let d = TagPolicy::DateTime {
            format: "2006-01-02".into(),
            timezone: String::new(),
        };
        assert_eq!(tag(&d, &cx).unwrap(), "2023-11-14");
    }

    /// Skaffold's vectors (input_digest_test.go, and the `null` hash of an empty list).
    #[test]
    fn input_digest_matches_skaffold_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let own = |paths: &[&str]| {
            [DepList {
                context: ".".into(),
                paths: s(paths),
                ignore: vec![],
            }]
        };
        assert_eq!(
            input_digest(d, &own(&[])).unwrap(),
            "38e0b9de817f645c4bec37c0d4a3e58baecccb040f5718dc069a72c7385a0bed"
        );
        std::fs::write(d.join("temp.file"), "hello\ngo\n").unwrap();
        let md5 = "3cced2dec96a8b41b22875686d8941a9";
        let want = Digest::of(format!("[\"{md5}\"]\n").as_bytes());
        assert_eq!(input_digest(d, &own(&["temp.file"])).unwrap(), want.hex());
        // A symlink contributes its path only.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("temp.file", d.join("link")).unwrap();
            let path_only = hex(&Md5::digest(b"link"));
            let want = Digest::of(format!("[\"{path_only}\"]\n").as_bytes());
            assert_eq!(input_digest(d, &own(&["link"])).unwrap(), want.hex());
        }
        // No match: the tagger falls back to `latest`.
        let env = BTreeMap::new();
        let deps = own(&["missing/**"]);
        let cx = TagContext {
            dir: d,
            image: "app",
            root: d,
            deps: &deps,
            env: &env,
            now: 0,
        };
        assert_eq!(tag(&TagPolicy::InputDigest, &cx).unwrap(), "latest");
    }

    /// A required artifact's files count too, named from the artifact's own context, all
    /// sorted by their path from the skaffold.yaml.
    #[test]
    fn input_digest_takes_required_artifacts_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (f, text) in [("app/main.go", "a"), ("base/x.go", "b"), ("app/z.go", "c")] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), text).unwrap();
        }
        let list = |context: &str| DepList {
            context: context.into(),
            paths: vec!["**/*.go".into()],
            ignore: vec![],
        };
        let md5 = |rel: &str, content: &str| hex(&Md5::digest(format!("{rel}{content}")));
        // app/main.go, app/z.go, base/x.go in that order; relpaths from `app`.
        let hashes = [
            md5("main.go", "a"),
            md5("z.go", "c"),
            md5("../base/x.go", "b"),
        ];
        let want = Digest::of(format!("{}\n", serde_json::to_string(&hashes).unwrap()).as_bytes());
        assert_eq!(
            input_digest(d, &[list("app"), list("base")]).unwrap(),
            want.hex()
        );
        assert_eq!(relative(".", "a/b"), "a/b");
        assert_eq!(relative("a/b", "a/c/d"), "../c/d");
        assert_eq!(join("./app/", "x.go"), "app/x.go");
    }

    #[test]
    fn git_commit_tags_and_dirty_state() {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q"]);
        std::fs::write(dir.path().join("a.go"), "package main").unwrap();
        run(&["add", "."]);
        run(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "x",
        ]);
        run(&["tag", "v1.0.0"]);
        let env = BTreeMap::new();
        let cx = TagContext {
            dir: dir.path(),
            image: "app",
            root: dir.path(),
            deps: &[],
            env: &env,
            now: 0,
        };
        let git = |ignore_changes| TagPolicy::GitCommit {
            variant: GitVariant::Tags,
            prefix: "p-".into(),
            ignore_changes,
        };
        assert_eq!(tag(&git(false), &cx).unwrap(), "p-v1.0.0");
        std::fs::write(dir.path().join("a.go"), "package main\n").unwrap();
        assert_eq!(tag(&git(false), &cx).unwrap(), "p-v1.0.0-dirty");
        assert_eq!(tag(&git(true), &cx).unwrap(), "p-v1.0.0");
        let info = git_info(dir.path());
        assert_eq!(info.tag, "v1.0.0");
        assert!(info.dirty);
        assert_eq!(info.full_commit.len(), 40);
    }
}
