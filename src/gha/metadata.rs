//! OCI labels from the repository's metadata, as docker/metadata-action sets them: one
//! `GET {GITHUB_API_URL}/repos/{owner}/{repo}` per workflow run, its answer kept in
//! `$RUNNER_TEMP` for the run's later steps.
//!
//! Plain reqwest on the crate's rustls (ring) stack rather than octocrab: one GET does not
//! justify a second HTTP and TLS stack. A failed call never fails the step: the caller warns
//! and keeps the labels from the GitHub context.
//!
//! The token goes into one request header, marked sensitive, and nowhere else: not into
//! errors, logs or the cache file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::plan::Env;

/// The whole call, connecting included: labels are not worth a slow step.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The REST API version the fields below are read from.
pub const API_VERSION: &str = "2022-11-28";

/// A repository's answer is a few KiB; anything much larger is not one.
const MAX_BODY: usize = 1 << 20;

/// docker/metadata-action's license value for "GitHub could not tell".
const NOASSERTION: &str = "NOASSERTION";

/// The fields of GitHub's repository object that become labels; also the cache file's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct RepoInfo {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub license: Option<License>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct License {
    #[serde(default)]
    pub spdx_id: Option<String>,
}

impl RepoInfo {
    /// Parses the API's repository JSON (or a cache file); unknown fields are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<RepoInfo, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if !value.is_object() {
            return Err("not a JSON object".into());
        }
        serde_json::from_value(value).map_err(|e| format!("not a repository: {e}"))
    }
}

/// `org.opencontainers.image.*` labels, in docker/metadata-action's order: title, description,
/// url and source from the repository, revision from the commit, licenses from its SPDX id.
/// `created` is left out (it would change every digest), and so is `version`, which depends on
/// tags. A missing or empty field gives no label; `source` falls back to `context_source`.
pub fn labels(repo: &RepoInfo, context_source: Option<&str>, sha: Option<&str>) -> Vec<String> {
    let present = |v: Option<&str>| v.filter(|v| !v.trim().is_empty()).map(str::to_string);
    let html_url = present(repo.html_url.as_deref());
    let license = present(
        repo.license
            .as_ref()
            .and_then(|l| l.spdx_id.as_deref())
            .filter(|id| *id != NOASSERTION),
    );
    [
        ("title", present(repo.name.as_deref())),
        ("description", present(repo.description.as_deref())),
        ("url", html_url.clone()),
        ("source", html_url.or_else(|| present(context_source))),
        ("revision", present(sha)),
        ("licenses", license),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some(format!("org.opencontainers.image.{key}={}", value?)))
    .collect()
}

/// Why the repository's metadata could not be had. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("GITHUB_REPOSITORY {0:?} is not OWNER/REPO")]
    Repository(String),
    #[error("GET {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("GET {url}: HTTP {status}{message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("GET {url}: {reason}")]
    Body { url: String, reason: String },
}

/// Where the metadata comes from, read from the environment the runner sets.
#[derive(Clone, Debug)]
pub struct Source {
    /// `GITHUB_API_URL` without a trailing slash (`https://api.github.com`, or a GHES
    /// server's `https://HOST/api/v3`).
    pub api_url: String,
    /// `GITHUB_REPOSITORY`, `owner/repo`.
    pub repository: String,
    /// `$RUNNER_TEMP/kobuild-repo-<owner>-<repo>-<GITHUB_RUN_ID>.json`, when both are set.
    pub cache: Option<PathBuf>,
}

impl Source {
    /// `None`, with the reason, when the environment does not say which repository or
    /// which API (the runner always sets both).
    pub fn from_env(env: &Env) -> Result<Source, &'static str> {
        let set = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
        let api_url = set("GITHUB_API_URL").ok_or("GITHUB_API_URL is not set")?;
        let repository = set("GITHUB_REPOSITORY").ok_or("GITHUB_REPOSITORY is not set")?;
        let cache = match (set("RUNNER_TEMP"), set("GITHUB_RUN_ID")) {
            (Some(temp), Some(run)) => Some(Path::new(&temp).join(format!(
                "kobuild-repo-{}-{}.json",
                file_part(&repository.replace('/', "-")),
                file_part(&run)
            ))),
            _ => None,
        };
        Ok(Source {
            api_url: api_url.trim().trim_end_matches('/').to_string(),
            repository: repository.trim().to_string(),
            cache,
        })
    }

    pub fn url(&self) -> String {
        format!("{}/repos/{}", self.api_url, self.repository)
    }
}

/// Keeps a file name a single, plain component whatever the variable holds.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `owner/repo` as GitHub allows them: nothing that could change the URL's path.
fn valid_repository(repository: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(repository.split_once('/'), Some((o, r)) if part(o) && part(r))
}

/// The repository's metadata: from this run's cache file when an earlier step wrote it,
/// else from the API (then cached). `token` is sent as a bearer token when given.
pub async fn repository(source: &Source, token: Option<&str>) -> Result<RepoInfo, MetadataError> {
    if !valid_repository(&source.repository) {
        return Err(MetadataError::Repository(source.repository.clone()));
    }
    if let Some(path) = &source.cache {
        match std::fs::read(path) {
            Ok(bytes) => match RepoInfo::from_json(&bytes) {
                Ok(info) => {
                    tracing::debug!("repository metadata from {}", path.display());
                    return Ok(info);
                }
                Err(e) => tracing::debug!("{}: {e}; asking the API again", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!("{}: {e}; asking the API again", path.display()),
        }
    }
    let info = fetch(&source.url(), token).await?;
    if let Some(path) = &source.cache {
        // Only the fields used: the rest of the answer is of no use to later steps.
        let bytes = serde_json::to_vec(&info).expect("serializable");
        match crate::fsutil::write_atomic(path, &bytes) {
            Ok(()) => tracing::debug!("repository metadata cached in {}", path.display()),
            Err(e) => tracing::debug!("cannot cache the repository metadata: {e}"),
        }
    }
    Ok(info)
}

async fn fetch(url: &str, token: Option<&str>) -> Result<RepoInfo, MetadataError> {
    let request_error = |reason: String| MetadataError::Request {
        url: url.to_string(),
        reason,
    };
    // Another part of the process may have installed one already; either is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent("kobuild")
        .timeout(TIMEOUT)
        // reqwest drops Authorization when a redirect leaves the host.
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| request_error(format!("cannot set up the HTTP client: {}", cause(&e))))?;
    let mut request = client
        .get(url)
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION);
    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| request_error("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    let mut response = request.send().await.map_err(|e| request_error(cause(&e)))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| MetadataError::Body {
        url: url.to_string(),
        reason: cause(&e),
    })? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(MetadataError::Body {
                url: url.to_string(),
                reason: format!("the answer is larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(MetadataError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            message: api_message(&body),
        });
    }
    RepoInfo::from_json(&body).map_err(|reason| MetadataError::Body {
        url: url.to_string(),
        reason,
    })
}

/// GitHub's error answers carry `{"message": ...}`: `: Not Found`, shortened.
fn api_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let message: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if message.is_empty() {
        message
    } else {
        format!(": {message}")
    }
}

/// reqwest's outer message ("error sending request for url ...") repeats the URL, which the
/// error already names; the innermost cause says what happened.
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", TIMEOUT.as_secs());
    }
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        // `io::Error::source()` skips the error it wraps.
        let next = current.source().or_else(|| {
            current
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn std::error::Error + 'static))
        });
        match next {
            Some(next) => current = next,
            None => return current.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn repo(json: &str) -> RepoInfo {
        RepoInfo::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn maps_like_docker_metadata_action() {
        let r = repo(
            r#"{"id": 1, "name": "app", "full_name": "Owner/app",
                "description": "An app.\nTwo lines, a = sign.",
                "html_url": "https://github.com/Owner/app",
                "license": {"key": "apache-2.0", "spdx_id": "Apache-2.0"},
                "owner": {"login": "Owner"}, "private": false}"#,
        );
        assert_eq!(
            labels(&r, Some("https://github.com/owner/APP"), Some(SHA)),
            [
                "org.opencontainers.image.title=app",
                "org.opencontainers.image.description=An app.\nTwo lines, a = sign.",
                "org.opencontainers.image.url=https://github.com/Owner/app",
                "org.opencontainers.image.source=https://github.com/Owner/app",
                &format!("org.opencontainers.image.revision={SHA}"),
                "org.opencontainers.image.licenses=Apache-2.0",
            ]
        );
    }

    #[test]
    fn missing_null_empty_and_noassertion_give_no_label() {
        for json in [
            r#"{"name": "app", "description": null, "license": null}"#,
            r#"{"name": "app", "description": "  ", "license": {"spdx_id": "NOASSERTION"}}"#,
            r#"{"name": "app", "license": {"key": "other", "spdx_id": null}}"#,
            r#"{"name": "app", "license": {}}"#,
        ] {
            assert_eq!(
                labels(&repo(json), None, None),
                ["org.opencontainers.image.title=app"],
                "{json}"
            );
        }
        // No html_url: source is the context's; no sha: no revision.
        assert_eq!(
            labels(&RepoInfo::default(), Some("https://ghe.example/o/r"), None),
            ["org.opencontainers.image.source=https://ghe.example/o/r"]
        );
        assert!(labels(&RepoInfo::default(), None, Some("")).is_empty());
    }

    #[test]
    fn rejects_what_is_not_a_repository() {
        for body in ["", "<html>", "[]", "\"x\"", r#"{"name": 3}"#] {
            assert!(RepoInfo::from_json(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn cache_file_round_trips() {
        let r = repo(
            r#"{"name": "app", "description": "d", "html_url": "https://h/o/app",
                "license": {"spdx_id": "MIT", "key": "mit"}, "stargazers_count": 3}"#,
        );
        let bytes = serde_json::to_vec(&r).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("stargazers"));
        assert_eq!(RepoInfo::from_json(&bytes).unwrap(), r);
    }

    #[test]
    fn source_comes_from_the_runner_environment() {
        let env = Env::from_pairs(&[
            ("GITHUB_API_URL", "https://ghe.example/api/v3/"),
            ("GITHUB_REPOSITORY", "Owner/Repo"),
            ("RUNNER_TEMP", "/tmp/runner"),
            ("GITHUB_RUN_ID", "42"),
        ]);
        let s = Source::from_env(&env).unwrap();
        assert_eq!(s.url(), "https://ghe.example/api/v3/repos/Owner/Repo");
        assert_eq!(
            s.cache,
            Some(PathBuf::from("/tmp/runner/kobuild-repo-Owner-Repo-42.json"))
        );

        let env = Env::from_pairs(&[
            ("GITHUB_API_URL", "https://api.github.com"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "../x"),
            ("RUNNER_TEMP", "/t"),
        ]);
        assert_eq!(
            Source::from_env(&env).unwrap().cache,
            Some(PathBuf::from("/t/kobuild-repo-o-r-.._x.json"))
        );
        let env = Env::from_pairs(&[("GITHUB_API_URL", "https://api.github.com")]);
        assert_eq!(
            Source::from_env(&env).unwrap_err(),
            "GITHUB_REPOSITORY is not set"
        );
        let env = Env::from_pairs(&[("GITHUB_REPOSITORY", "o/r")]);
        assert_eq!(
            Source::from_env(&env).unwrap_err(),
            "GITHUB_API_URL is not set"
        );
        let env = Env::from_pairs(&[
            ("GITHUB_API_URL", "https://api.github.com"),
            ("GITHUB_REPOSITORY", "o/r"),
        ]);
        assert_eq!(Source::from_env(&env).unwrap().cache, None);
    }

    #[test]
    fn repository_names_cannot_change_the_path() {
        for ok in ["o/r", "Owner-1/re.po_x"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in [
            "o", "o/r/x", "../r", "o/..", "o/r?x", "o/r#", "/r", "o/", "o/r x",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn error_messages_are_short() {
        assert_eq!(api_message(br#"{"message": "Not Found"}"#), ": Not Found");
        assert_eq!(api_message(b"<html>oops</html>"), "");
        assert_eq!(api_message(&[b'{'; 3]), "");
    }
}
