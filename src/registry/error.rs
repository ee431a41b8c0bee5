//! Registry errors: one line each, naming the registry and repository and what to do.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::AuthError;
use super::idle::Stalled;
use super::reference::ReferenceError;
use crate::digest::Digest;

/// A registry operation failed; [`RegistryError::kind`] says how. Boxed, so that the
/// errors wrapping it stay small.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RegistryError(Box<ErrorKind>);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    // kobuild has no --username/--password flags: credentials come from the docker config
    // (`docker login`) or, in the GitHub Action, from its username/password inputs.
    #[error(
        "authentication to {registry} failed for {repository}: check the credentials \
         (docker login {registry}, or the action's username and password inputs)"
    )]
    Unauthorized {
        registry: String,
        repository: String,
    },

    #[error(
        "{registry}/{repository} needs credentials: run docker login {registry}, \
         or set the action's username and password inputs"
    )]
    CredentialsRequired {
        registry: String,
        repository: String,
    },

    #[error(
        "access to {registry}/{repository} denied{detail}: check that these credentials may {access} there"
    )]
    Denied {
        registry: String,
        repository: String,
        access: &'static str,
        detail: String,
    },

    /// `name` is what was looked for, e.g. `reg/repo:tag` or `reg/repo@sha256:…`.
    #[error("{name} not found")]
    NotFound { name: String },

    #[error(
        "cannot reach registry {registry} ({reason}): is it running, and is the address right?"
    )]
    Unreachable { registry: String, reason: String },

    #[error(
        "TLS certificate of {registry} is not trusted: pass its CA with --registry-ca FILE \
         (or --insecure-registry {registry})"
    )]
    UntrustedCertificate { registry: String },

    #[error(
        "{action} in {registry}/{repository} failed: connection lost ({reason}); check the network and try again"
    )]
    Connection {
        registry: String,
        repository: String,
        action: String,
        reason: String,
    },

    /// Nothing moved on the connection, or no response came after the request went out,
    /// for the registry timeout (`--registry-timeout`).
    #[error(
        "{action} in {registry}/{repository} failed: {} (the registry timeout); \
         check the network, or allow more with --registry-timeout SECONDS",
        silence(*answer, *secs)
    )]
    Timeout {
        registry: String,
        repository: String,
        action: String,
        secs: u64,
        /// Waiting for the response head: its bytes are invisible here, so a head arriving
        /// slowly is not called a stall.
        answer: bool,
    },

    /// An unexpected status; `detail` holds the registry's error codes and messages.
    #[error("{action} in {registry}/{repository} failed: HTTP {status}{detail}{}", hint(*status, detail))]
    Status {
        registry: String,
        repository: String,
        action: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },

    #[error(
        "digest mismatch for {what} in {registry}/{repository}: expected {expected}, got {actual}; \
         the content changed or was corrupted on the way, try again"
    )]
    DigestMismatch {
        registry: String,
        repository: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },

    /// A registry reached over HTTPS named a plain-HTTP token endpoint: sending the
    /// credentials there would put them on the wire in clear text.
    #[error(
        "{registry}/{repository}: the registry's token endpoint {realm:?} is plain HTTP, and \
         kobuild does not send credentials in clear text; if that is intended, pass \
         --insecure-registry {host}"
    )]
    CleartextCredentials {
        registry: String,
        repository: String,
        realm: String,
        host: String,
    },

    /// A response body longer than kobuild reads into memory.
    #[error(
        "{registry}/{repository}: {action}: the response is longer than {limit}, the most \
         kobuild reads into memory"
    )]
    TooLarge {
        registry: String,
        repository: String,
        action: String,
        limit: String,
    },

    /// The registry answered something unusable, or a request could not be formed.
    #[error("{registry}/{repository}: {message}")]
    Protocol {
        registry: String,
        repository: String,
        message: String,
    },

    #[error(transparent)]
    Auth(#[from] AuthError),

    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// A file to upload does not hold the blob it is named for.
    #[error("cannot upload {}: it does not hold blob {digest} ({why})", path.display())]
    BadLocalBlob {
        path: PathBuf,
        digest: Digest,
        why: String,
    },

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The client could not be set up (bad CA file, TLS setup).
    #[error("{0}")]
    Setup(String),
}

impl<E: Into<ErrorKind>> From<E> for RegistryError {
    fn from(kind: E) -> Self {
        RegistryError(Box::new(kind.into()))
    }
}

/// Puts of a manifest refused as naming unknown content (see
/// [`RegistryError::is_blob_unknown`]), each after uploading its blobs again, before giving
/// up: identical runs at once (a re-run CI job) keep racing while they push.
pub const BLOB_UNKNOWN_ATTEMPTS: u32 = 5;

impl RegistryError {
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    pub fn is_not_found(&self) -> bool {
        matches!(*self.0, ErrorKind::NotFound { .. })
    }

    /// Why the file to upload does not hold its blob, if that was the failure.
    pub fn bad_local_blob(&self) -> Option<&str> {
        match &*self.0 {
            ErrorKind::BadLocalBlob { why, .. } => Some(why),
            _ => None,
        }
    }

    /// The registry refused a manifest for naming content it does not have (yet). Two
    /// pushes of the same blob at once can leave distribution briefly unaware of it; see
    /// [`BLOB_UNKNOWN_ATTEMPTS`].
    pub fn is_blob_unknown(&self) -> bool {
        match &*self.0 {
            ErrorKind::Status { detail, .. } => {
                detail.contains("BLOB_UNKNOWN") || detail.contains("MANIFEST_UNKNOWN")
            }
            _ => false,
        }
    }

    /// Worth another attempt: connection trouble, timeouts, overload, gateway errors.
    pub(crate) fn is_retryable(&self) -> bool {
        match *self.0 {
            ErrorKind::Unreachable { .. }
            | ErrorKind::Connection { .. }
            | ErrorKind::Timeout { .. } => true,
            ErrorKind::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match *self.0 {
            ErrorKind::Status { retry_after, .. } => retry_after,
            _ => None,
        }
    }

    /// The request made no progress for `idle`; `answer`: while waiting for the response.
    pub(crate) fn timeout(
        registry: &str,
        repository: &str,
        action: &str,
        idle: Duration,
        answer: bool,
    ) -> Self {
        ErrorKind::Timeout {
            registry: registry.into(),
            repository: repository.into(),
            action: action.into(),
            secs: idle.as_secs(),
            answer,
        }
        .into()
    }

    /// Classifies a failed send or body read; `idle` is the registry timeout, which the
    /// kernel enforces too (`TCP_USER_TIMEOUT`, a "timed out" I/O error).
    pub(crate) fn from_transport(
        registry: &str,
        repository: &str,
        action: &str,
        idle: Duration,
        e: &reqwest::Error,
    ) -> Self {
        if is_certificate_error(e) {
            return ErrorKind::UntrustedCertificate {
                registry: registry.into(),
            }
            .into();
        }
        if !e.is_connect() && is_stall(e) {
            return Self::timeout(registry, repository, action, idle, false);
        }
        let reason = root_cause(e);
        if e.is_builder() {
            // Not worth a retry: the URL or a header value cannot be sent at all.
            let message = format!("cannot make the request for {action}: {reason}");
            let (registry, repository) = (registry.into(), repository.into());
            return ErrorKind::Protocol {
                registry,
                repository,
                message,
            }
            .into();
        }
        if e.is_connect() {
            ErrorKind::Unreachable {
                registry: registry.into(),
                reason,
            }
            .into()
        } else {
            let (registry, repository, action) =
                (registry.into(), repository.into(), action.into());
            ErrorKind::Connection {
                registry,
                repository,
                action,
                reason,
            }
            .into()
        }
    }
}

/// What to do about a failed status, from the registry's error codes.
fn hint(status: u16, detail: &str) -> &'static str {
    let has = |code: &str| detail.contains(code);
    if has("MANIFEST_BLOB_UNKNOWN") || (has("BLOB_UNKNOWN") && status == 400) {
        " (push the blobs and manifests it references first)"
    } else if has("DIGEST_INVALID") {
        " (the uploaded bytes do not match their digest: the local file may have changed)"
    } else if has("MANIFEST_INVALID") || has("UNSUPPORTED") {
        " (the registry rejects this manifest or its media type)"
    } else if has("NAME_INVALID") {
        " (the registry rejects this repository name)"
    } else if status == 429 || has("TOOMANYREQUESTS") {
        " (rate limited: try again later, or log in for a higher limit)"
    } else if status == 408 {
        " (the registry timed out waiting for the request: check the network and try again)"
    } else if status >= 500 {
        " (the registry kept failing: try again later)"
    } else if status == 400 {
        " (the registry refused the request as invalid: its log says why)"
    } else if status == 401 {
        " (authentication failed: check the credentials, e.g. docker login)"
    } else if status == 403 {
        " (access denied: check that the credentials may use this repository)"
    } else if status == 404 {
        // Only pushes get here: a 404 to a pull is `NotFound`, to a HEAD "absent".
        " (the registry does not know this repository or upload: check the registry \
         address and the repository name)"
    } else {
        ""
    }
}

/// The innermost cause, e.g. "Connection refused (os error 111)" rather than reqwest's
/// "error sending request for url".
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = next_cause(current) {
        current = next;
    }
    current.to_string()
}

/// `io::Error::source()` skips the error it wraps, so look inside explicitly.
fn next_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.source().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static))
    })
}

fn silence(answer: bool, secs: u64) -> String {
    if answer {
        format!("no response within {secs} s of the request's last byte going out")
    } else {
        format!("no data moved for {secs} s")
    }
}

/// A body that stalled ([`Stalled`]), or a connection the kernel gave up on because its
/// data went unacknowledged (`ETIMEDOUT`).
fn is_stall(e: &reqwest::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let timed_out = err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out || err.downcast_ref::<Stalled>().is_some() {
            return true;
        }
        current = next_cause(err);
    }
    false
}

fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref() {
            return true;
        }
        current = next_cause(err);
    }
    false
}

/// The registry's `{"errors":[{"code","message"}]}` as `: CODE: message; …`, else the
/// start of a text body; always one line.
pub(crate) fn describe_body(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = match serde_json::from_slice::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        line
    } else {
        format!(": {line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_error_bodies() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:x"}]}"#,
             ": MANIFEST_BLOB_UNKNOWN: blob unknown to registry"),
            (br#"{"errors":[{"code":"A","message":"x"},{"code":"B"}]}"#, ": A: x; B"),
            (b"404 page not found\n", ": 404 page not found"),
            (b"", ""),
            (b"line one\nline two", ": line one line two"),
        ];
        for (body, want) in cases {
            assert_eq!(describe_body(body), want);
        }
    }

    #[test]
    fn status_messages_say_what_to_do() {
        let status = |status: u16, detail: &str| -> RegistryError {
            ErrorKind::Status {
                registry: "r.io".into(),
                repository: "a/b".into(),
                action: "push of manifest v1".into(),
                status,
                detail: detail.into(),
                retry_after: None,
            }
            .into()
        };
        let e = status(400, ": MANIFEST_BLOB_UNKNOWN: blob unknown to registry").to_string();
        assert_eq!(
            e,
            "push of manifest v1 in r.io/a/b failed: HTTP 400: MANIFEST_BLOB_UNKNOWN: blob unknown to registry \
             (push the blobs and manifests it references first)"
        );
        assert!(
            status(400, ": DIGEST_INVALID: x")
                .to_string()
                .contains("local file may have changed")
        );
        assert!(
            status(503, "")
                .to_string()
                .ends_with("HTTP 503 (the registry kept failing: try again later)")
        );
        // Every permanent status says what to do, even without the registry's error codes.
        for (code, hint) in [
            (400, "refused the request"),
            (403, "access denied"),
            (404, "check the registry address and the repository name"),
            (408, "check the network"),
        ] {
            let e = status(code, "").to_string();
            assert!(
                e.contains(&format!("HTTP {code} (")) && e.contains(hint),
                "{e}"
            );
        }
        assert!(status(503, "").is_retryable() && status(429, "").is_retryable());
        assert!(!status(400, "").is_retryable() && !status(501, "").is_retryable());
    }
}
