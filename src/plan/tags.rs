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

pub struct TagContext<'a> {
    /// The artifact's `context` directory.
    pub dir: &'a Path,
    /// The image name as written (Skaffold's `IMAGE_NAME` for envTemplate).
    pub image: &'a str,
    /// The artifact's dependency patterns (`ko.dependencies`, defaults applied), relative
    /// to `dir`: what inputDigest hashes.
    pub dep_paths: &'a [String],
    pub dep_ignore: &'a [String],
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
        TagPolicy::InputDigest => match input_digest(cx.dir, cx.dep_paths, cx.dep_ignore) {
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
/// digests over the artifact's dependency files, in sorted order. A symlink contributes its
/// path only; a file that vanished is skipped.
fn input_digest(dir: &Path, paths: &[String], ignore: &[String]) -> Result<String, DepsError> {
    let mut hashes = Vec::new();
    for rel in crate::deps::files(dir, paths, ignore)? {
        let path = dir.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mut h = Md5::new_with_prefix(rel.as_bytes());
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
            dep_paths: &[],
            dep_ignore: &[],
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
        assert_eq!(
            input_digest(d, &[], &[]).unwrap(),
            "38e0b9de817f645c4bec37c0d4a3e58baecccb040f5718dc069a72c7385a0bed"
        );
        std::fs::write(d.join("temp.file"), "hello\ngo\n").unwrap();
        let md5 = "3cced2dec96a8b41b22875686d8941a9";
        let want = Digest::of(format!("[\"{md5}\"]\n").as_bytes());
        assert_eq!(
            input_digest(d, &s(&["temp.file"]), &[]).unwrap(),
            want.hex()
        );
        // A symlink contributes its path only.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("temp.file", d.join("link")).unwrap();
            let path_only = hex(&Md5::digest(b"link"));
            let want = Digest::of(format!("[\"{path_only}\"]\n").as_bytes());
            assert_eq!(input_digest(d, &s(&["link"]), &[]).unwrap(), want.hex());
        }
        // No match: the tagger falls back to `latest`.
        let env = BTreeMap::new();
        let paths = s(&["missing/**"]);
        let cx = TagContext {
            dir: d,
            image: "app",
            dep_paths: &paths,
            dep_ignore: &[],
            env: &env,
            now: 0,
        };
        assert_eq!(tag(&TagPolicy::InputDigest, &cx).unwrap(), "latest");
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
            dep_paths: &[],
            dep_ignore: &[],
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
