//! Skaffold's tag policies, and the git facts they (and ko's templates) read.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::{GitVariant, TagPolicy};
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

pub struct TagContext<'a> {
    /// The artifact's `context` directory.
    pub dir: &'a Path,
    /// The image name as written (Skaffold's `IMAGE_NAME` for envTemplate).
    pub image: &'a str,
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
        TagPolicy::InputDigest => input_digest(cx.dir),
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

/// A digest of the Go sources and module files under `dir` (names and contents, sorted):
/// Skaffold's inputDigest over the ko builder's default dependencies.
fn input_digest(dir: &Path) -> String {
    let mut files = Vec::new();
    collect(dir, dir, &mut files);
    files.sort();
    let mut all = Vec::new();
    for rel in files {
        all.extend_from_slice(rel.as_bytes());
        all.push(0);
        all.extend_from_slice(&std::fs::read(dir.join(&rel)).unwrap_or_default());
        all.push(0);
    }
    Digest::of(&all).hex()[..32].to_string()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else if (name.ends_with(".go") || name == "go.mod" || name == "go.sum")
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
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
        std::fs::write(dir.path().join("main.go"), "package main").unwrap();
        let a = tag(&TagPolicy::InputDigest, &cx).unwrap();
        std::fs::write(dir.path().join("main.go"), "package main\n").unwrap();
        assert_ne!(tag(&TagPolicy::InputDigest, &cx).unwrap(), a);
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
