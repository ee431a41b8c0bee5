//! One authorised HTTP request to a registry: the scheme decided once per registry, the
//! auth challenge from `GET /v2/`, Basic or Bearer credentials, and cached tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Certificate, Method, RequestBuilder, Response, StatusCode};
use tokio::sync::OnceCell;
use tokio_util::io::ReaderStream;

use super::auth::{Credential, Keychain};
use super::body::{self, BodyError};
use super::challenge::{Challenge, Scope};
use super::error::{ErrorKind, RegistryError, describe_body, root_cause};
use super::idle::{self, Progress};
use super::reference::Repository;
use super::retry::{RetryPolicy, parse_retry_after, retrying};
use crate::digest::{Digest, HashingWriter};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request may go without data moving (`--registry-timeout`), unless set.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A loopback or insecure registry answers an HTTPS probe at once or not at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Token lifetime when the token endpoint does not say, and the most we believe.
const DEFAULT_TOKEN_SECS: u64 = 60;
const MAX_TOKEN_SECS: u64 = 24 * 3600;

/// A registry as discovered by `GET /v2/`.
pub(crate) struct Endpoint {
    pub(crate) registry: String,
    /// `https://host[:port]` or `http://host[:port]`.
    base: String,
    /// Certificates are not verified (`--insecure-registry`).
    insecure: bool,
    challenge: Challenge,
    credential: Credential,
}

impl Endpoint {
    pub(crate) fn url(&self, repository: &str, tail: &str) -> String {
        format!("{}/v2/{repository}/{tail}", self.base)
    }
}

pub(crate) enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Streamed from the file, which is opened anew for every send, and checked against
    /// the blob it should hold (see [`verified`]).
    File {
        path: &'a Path,
        size: u64,
        digest: &'a Digest,
    },
    /// Bytes as they are produced, of a length not known yet; sent once (a second send,
    /// e.g. after a 401, finds it taken and fails).
    Stream(&'a std::sync::Mutex<Option<BodyStream>>),
}

/// A file's chunks, hashed as they are sent: the chunk that completes `size` bytes is held
/// back, and the body fails, unless they hash to `digest`, so a registry never receives a
/// whole wrong blob. What was wrong goes to `bad`. Costs no read beyond the upload's own.
fn verified<B: AsRef<[u8]>>(
    chunks: impl futures_util::Stream<Item = std::io::Result<B>>,
    size: u64,
    digest: Digest,
    bad: Arc<std::sync::OnceLock<String>>,
) -> impl futures_util::Stream<Item = std::io::Result<B>> {
    use futures_util::StreamExt;
    use std::io::Write;
    let mut hasher = Some(HashingWriter::new(std::io::sink()));
    let mut sent = 0u64;
    chunks.map(move |chunk| {
        let chunk = chunk?;
        sent += chunk.as_ref().len() as u64;
        let why = match hasher.take() {
            Some(mut h) if sent <= size => {
                h.write_all(chunk.as_ref())?;
                if sent < size {
                    hasher = Some(h);
                    return Ok(chunk);
                }
                let (_, actual, _) = h.finish();
                if actual == digest {
                    return Ok(chunk);
                }
                format!("its bytes hash to {actual}")
            }
            _ => format!("it has more than {size} bytes"),
        };
        let _ = bad.set(why.clone());
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
    })
}

/// A request body produced while it is sent.
pub type BodyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

pub(crate) struct Request<'a> {
    method: Method,
    url: String,
    repository: &'a str,
    scope: &'a Scope,
    /// For error messages, e.g. "push of manifest v1".
    action: &'a str,
    headers: Vec<(HeaderName, String)>,
    body: Payload<'a>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        method: Method,
        url: String,
        repository: &'a str,
        scope: &'a Scope,
        action: &'a str,
    ) -> Self {
        Request {
            method,
            url,
            repository,
            scope,
            action,
            headers: Vec::new(),
            body: Payload::Empty,
        }
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Payload<'a>) -> Self {
        self.body = body;
        self
    }
}

/// (registry, scope).
type TokenKey = (String, String);

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

pub(crate) struct Transport {
    verified: reqwest::Client,
    /// For `--insecure-registry` hosts only: accepts any certificate.
    unverified: reqwest::Client,
    keychain: Keychain,
    insecure_registries: Vec<String>,
    pub(crate) retry: RetryPolicy,
    /// A request fails when no data moves for this long (see [`idle`]).
    idle: Duration,
    endpoints: Mutex<HashMap<String, Arc<OnceCell<Arc<Endpoint>>>>>,
    tokens: Mutex<HashMap<TokenKey, Token>>,
    /// One token fetch per (registry, scope) at a time: parallel requests (uploads start
    /// four at once) wait for it and share its token instead of each asking the token
    /// server, which may rate-limit them.
    token_fetches: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
}

struct Auth {
    header: String,
    from_cache: bool,
}

impl Transport {
    pub(crate) fn new(
        keychain: Keychain,
        insecure_registries: Vec<String>,
        certs: Vec<Certificate>,
        user_agent: &str,
        retry: RetryPolicy,
        idle: Duration,
    ) -> Result<Self, RegistryError> {
        let build = |accept_invalid: bool| {
            // No reqwest read_timeout: until the response head it is one timer for the
            // whole upload, not an idle one. `idle` keeps the time instead.
            let builder = reqwest::Client::builder()
                .user_agent(user_agent)
                // Redirects are followed by hand so that credentials stay with the registry.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .tls_certs_merge(certs.iter().cloned())
                .tls_danger_accept_invalid_certs(accept_invalid);
            // The kernel sees bytes move that kobuild has handed over: sent data that stays
            // unacknowledged (or unread: a zero window) this long fails the connection.
            #[cfg(any(target_os = "android", target_os = "linux"))]
            let builder = builder.tcp_user_timeout(idle);
            builder.build().map_err(|e| {
                ErrorKind::Setup(format!("cannot set up the HTTP client: {}", root_cause(&e)))
            })
        };
        Ok(Transport {
            verified: build(false)?,
            unverified: build(true)?,
            keychain,
            insecure_registries,
            retry,
            idle,
            endpoints: Mutex::default(),
            tokens: Mutex::default(),
            token_fetches: Mutex::default(),
        })
    }

    /// The registry's endpoint, discovered on first use; `repo` names the first user in errors.
    pub(crate) async fn endpoint(&self, repo: &Repository) -> Result<Arc<Endpoint>, RegistryError> {
        let cell = lock(&self.endpoints)
            .entry(repo.registry.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.discover(repo)).await.cloned()
    }

    async fn discover(&self, repo: &Repository) -> Result<Arc<Endpoint>, RegistryError> {
        let registry = repo.registry.as_str();
        let credential = self.keychain.resolve(registry).await?;
        let insecure = self.is_insecure(registry);
        let https = format!("https://{registry}");
        let (base, resp) = if insecure || is_loopback(registry) {
            // Plain HTTP only if the port does not speak TLS; an untrusted certificate stays an error.
            let once = RetryPolicy {
                attempts: 1,
                ..self.retry.clone()
            };
            match self
                .ping(repo, &https, insecure, &once, Some(PROBE_TIMEOUT))
                .await
            {
                Ok(resp) => (https, resp),
                Err(e) if matches!(e.kind(), ErrorKind::UntrustedCertificate { .. }) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!("{registry}: no HTTPS ({e}); trying plain HTTP");
                    let http = format!("http://{registry}");
                    let resp = self.ping(repo, &http, insecure, &self.retry, None).await?;
                    (http, resp)
                }
            }
        } else {
            let resp = self.ping(repo, &https, false, &self.retry, None).await?;
            (https, resp)
        };
        let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
            Challenge::parse(
                resp.headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            )
        } else {
            Challenge::None
        };
        if let Challenge::Unsupported(scheme) = &challenge {
            let message = if scheme == "none" {
                // Not a registry's answer: something in between refuses the request.
                "GET /v2/ answered HTTP 401 without an authentication challenge \
                 (no WWW-Authenticate header): check the registry address and any proxy in front of it"
                    .to_string()
            } else {
                format!("the registry asks for an unsupported authentication scheme ({scheme})")
            };
            return Err(ErrorKind::Protocol {
                registry: registry.into(),
                repository: repo.name.clone(),
                message,
            }
            .into());
        }
        tracing::debug!("{registry}: using {base}, authentication {challenge:?}");
        Ok(Arc::new(Endpoint {
            registry: registry.into(),
            base,
            insecure,
            challenge,
            credential,
        }))
    }

    async fn ping(
        &self,
        repo: &Repository,
        base: &str,
        insecure: bool,
        policy: &RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Response, RegistryError> {
        let client = if insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let url = format!("{base}/v2/");
        let action = "the API check (GET /v2/)";
        retrying(policy, "GET", &repo.to_string(), || async {
            let mut rb = client.get(&url);
            if let Some(t) = timeout {
                rb = rb.timeout(t);
            }
            let resp = self
                .exchange(rb, &Progress::new(0), &repo.registry, &repo.name, action)
                .await?;
            tracing::debug!("GET {url} -> {}", resp.status().as_u16());
            match resp.status() {
                StatusCode::OK | StatusCode::UNAUTHORIZED => Ok(resp),
                // Whatever answers there, it is not a registry's API.
                StatusCode::NOT_FOUND => Err(ErrorKind::Protocol {
                    registry: repo.registry.clone(),
                    repository: repo.name.clone(),
                    message: "GET /v2/ answered HTTP 404, so this is no registry API: \
                              check the registry address"
                        .into(),
                }
                .into()),
                status => Err(ErrorKind::Status {
                    registry: repo.registry.clone(),
                    repository: repo.name.clone(),
                    action: action.into(),
                    status: status.as_u16(),
                    retry_after: retry_after(&resp),
                    detail: describe_body(&body::prefix(resp, body::ERROR_LIMIT).await),
                }
                .into()),
            }
        })
        .await
    }

    /// The realm's `host[:port]` when credentials sent to it would travel in clear text
    /// although the registry itself was reached over HTTPS: a plain-HTTP realm, unless its
    /// host is an allowed insecure registry. A registry already spoken to over plain HTTP
    /// (insecure or loopback) gains nothing from refusing its realm.
    fn cleartext_host(&self, ep: &Endpoint, realm: &str) -> Option<String> {
        let url = reqwest::Url::parse(realm).ok()?;
        if url.scheme() != "http" || ep.base.starts_with("http://") {
            return None;
        }
        let host = url.host_str()?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        (!self.is_insecure(&host)).then_some(host)
    }

    fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|r| r == registry || r == host_of(registry))
    }

    /// Sends `req` with credentials (only to the registry's own origin). A 401 on a cached
    /// token gets one retry with a fresh token: it may have expired or been revoked early.
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        req: &Request<'_>,
    ) -> Result<Response, RegistryError> {
        let own_origin = same_origin(&req.url, &ep.base);
        let auth = if own_origin {
            self.authorization(ep, req, false).await?
        } else {
            None
        };
        let resp = self.send_raw(ep, req, own_origin, auth.as_ref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED && auth.as_ref().is_some_and(|a| a.from_cache)
        {
            let fresh = self.authorization(ep, req, true).await?;
            return self.send_raw(ep, req, own_origin, fresh.as_ref()).await;
        }
        Ok(resp)
    }

    async fn send_raw(
        &self,
        ep: &Endpoint,
        req: &Request<'_>,
        own_origin: bool,
        auth: Option<&Auth>,
    ) -> Result<Response, RegistryError> {
        let client = if ep.insecure && own_origin {
            &self.unverified
        } else {
            &self.verified
        };
        let mut rb = client.request(req.method.clone(), &req.url);
        for (name, value) in &req.headers {
            rb = rb.header(name, value);
        }
        if let Some(auth) = auth {
            let mut value =
                HeaderValue::from_str(&auth.header).map_err(|_| ErrorKind::Protocol {
                    registry: ep.registry.clone(),
                    repository: req.repository.into(),
                    message: "the credentials contain characters that HTTP headers cannot carry"
                        .into(),
                })?;
            value.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, value);
        }
        let progress;
        // Set when a file body turns out not to hold its blob.
        let bad_file = Arc::new(std::sync::OnceLock::new());
        rb = match &req.body {
            Payload::Empty => {
                progress = Progress::new(0);
                rb
            }
            Payload::Bytes(bytes) => {
                progress = Progress::new(bytes.len() as u64);
                rb.body(bytes.to_vec())
            }
            Payload::File { path, size, digest } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| ErrorKind::Io {
                        action: "cannot read",
                        path: path.to_path_buf(),
                        source,
                    })?;
                progress = Progress::new(0);
                let shown =
                    crate::progress::task(|| format!("upload {}", short(digest)), Some(*size));
                let chunks = ReaderStream::with_capacity(file, idle::CHUNK);
                let chunks = verified(chunks, *size, (*digest).clone(), bad_file.clone());
                let chunks = futures_util::StreamExt::inspect(chunks, move |c| {
                    if let Ok(c) = c {
                        shown.add(c.len() as u64);
                    }
                });
                rb.header(CONTENT_LENGTH, *size)
                    .body(reqwest::Body::wrap_stream(progress.count(chunks)))
            }
            Payload::Stream(body) => {
                let taken = body.lock().ok().and_then(|mut b| b.take());
                let chunks = taken.ok_or_else(|| ErrorKind::Protocol {
                    registry: ep.registry.clone(),
                    repository: req.repository.into(),
                    message: "a streamed upload cannot be sent twice".into(),
                })?;
                progress = Progress::new(0);
                // A layer still being compressed: its size is not known yet.
                let shown = crate::progress::task(|| "upload (compressing)".to_string(), None);
                let chunks = futures_util::StreamExt::inspect(chunks, move |c| {
                    if let Ok(c) = c {
                        shown.add(c.len() as u64);
                    }
                });
                rb.body(reqwest::Body::wrap_stream(progress.count(chunks)))
            }
        };
        let path = url_path(&req.url);
        let mut result = self
            .exchange(rb, &progress, &ep.registry, req.repository, req.action)
            .await;
        if let (Some(why), Payload::File { path, digest, .. }) = (bad_file.get(), &req.body) {
            result = Err(ErrorKind::BadLocalBlob {
                path: path.to_path_buf(),
                digest: (*digest).clone(),
                why: why.clone(),
            }
            .into());
        }
        match &result {
            Ok(resp) => tracing::debug!("{} {path} -> {}", req.method, resp.status().as_u16()),
            Err(e) => tracing::debug!("{} {path} failed: {e}", req.method),
        }
        result
    }

    /// Sends `rb`, failing when no data moves for the registry timeout, and returns the
    /// response with a body that fails so too. The other arguments name it in errors.
    async fn exchange(
        &self,
        rb: RequestBuilder,
        progress: &Progress,
        registry: &str,
        repository: &str,
        action: &str,
    ) -> Result<Response, RegistryError> {
        match idle::watch(rb.send(), progress, self.idle).await {
            Ok(Ok(resp)) => Ok(idle::guard(resp, self.idle)),
            Ok(Err(e)) => Err(self.transport_error(registry, repository, action, &e)),
            Err(idle::Stalled(after)) => Err(RegistryError::timeout(
                registry, repository, action, after, true,
            )),
        }
    }

    /// A failed send or body read, classified.
    /// `resp`'s body, at most `limit` bytes.
    pub(crate) async fn read_body(
        &self,
        registry: &str,
        repository: &str,
        action: &str,
        resp: Response,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        body::read(resp, limit).await.map_err(|e| match e {
            BodyError::Read(e) => self.transport_error(registry, repository, action, &e),
            BodyError::TooLarge => ErrorKind::TooLarge {
                registry: registry.into(),
                repository: repository.into(),
                action: action.into(),
                limit: body::describe_limit(limit),
            }
            .into(),
        })
    }

    pub(crate) fn transport_error(
        &self,
        registry: &str,
        repository: &str,
        action: &str,
        e: &reqwest::Error,
    ) -> RegistryError {
        RegistryError::from_transport(registry, repository, action, self.idle, e)
    }

    async fn authorization(
        &self,
        ep: &Endpoint,
        req: &Request<'_>,
        refresh: bool,
    ) -> Result<Option<Auth>, RegistryError> {
        match (&ep.challenge, &ep.credential) {
            (Challenge::Basic, Credential::Basic { username, password }) => Ok(Some(Auth {
                header: format!(
                    "Basic {}",
                    STANDARD.encode(format!("{username}:{password}"))
                ),
                from_cache: false,
            })),
            (Challenge::Bearer { realm, service }, _) => {
                let key = (ep.registry.clone(), req.scope.joined());
                let cached = || {
                    lock(&self.tokens)
                        .get(&key)
                        .filter(|t| t.expires > Instant::now())
                        .map(|token| Auth {
                            header: format!("Bearer {}", token.value),
                            from_cache: true,
                        })
                };
                if !refresh && let Some(auth) = cached() {
                    return Ok(Some(auth));
                }
                let gate = lock(&self.token_fetches)
                    .entry(key.clone())
                    .or_default()
                    .clone();
                let _fetching = gate.lock().await;
                // Another request may have fetched it while this one waited.
                if !refresh && let Some(auth) = cached() {
                    return Ok(Some(auth));
                }
                let token = self.fetch_token(ep, realm, service.as_deref(), req).await?;
                let header = format!("Bearer {}", token.value);
                lock(&self.tokens).insert(key, token);
                Ok(Some(Auth {
                    header,
                    from_cache: false,
                }))
            }
            _ => Ok(None),
        }
    }

    /// The token dance: GET realm?service&scope with Basic credentials (or none), or the
    /// OAuth2 refresh-token POST for identity tokens.
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        req: &Request<'_>,
    ) -> Result<Token, RegistryError> {
        let client = if ep.insecure {
            &self.unverified
        } else {
            &self.verified
        };
        let action = format!("token request for {}", req.action);
        if !ep.credential.is_anonymous()
            && let Some(host) = self.cleartext_host(ep, realm)
        {
            return Err(ErrorKind::CleartextCredentials {
                registry: ep.registry.clone(),
                repository: req.repository.into(),
                realm: realm.into(),
                host,
            }
            .into());
        }
        let mut params: Vec<(&str, &str)> = service.map(|s| ("service", s)).into_iter().collect();
        let rb = match &ep.credential {
            Credential::IdentityToken(refresh_token) => {
                let scope = req.scope.joined();
                params.extend([
                    ("scope", scope.as_str()),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.as_str()),
                    ("client_id", "kobuild"),
                ]);
                client
                    .post(realm)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form_encode(&params))
            }
            credential => {
                params.extend(req.scope.items().iter().map(|s| ("scope", s.as_str())));
                let sep = if realm.contains('?') { '&' } else { '?' };
                let rb = client.get(format!("{realm}{sep}{}", form_encode(&params)));
                match credential {
                    Credential::Basic { username, password } => {
                        rb.basic_auth(username, Some(password))
                    }
                    _ => rb,
                }
            }
        };
        let resp = self
            .exchange(rb, &Progress::new(0), &ep.registry, req.repository, &action)
            .await?;
        tracing::debug!(
            "token endpoint {} -> {}",
            url_path(realm),
            resp.status().as_u16()
        );
        if resp.status() != StatusCode::OK {
            let token_req = Request::new(
                Method::GET,
                realm.into(),
                req.repository,
                req.scope,
                &action,
            );
            // No `not_found` name: a 404 from the token endpoint is a failed request for
            // the repository, not a missing image.
            return Err(status_error(ep, &token_req, resp, "").await);
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = self
            .read_body(
                &ep.registry,
                req.repository,
                &action,
                resp,
                body::TOKEN_LIMIT,
            )
            .await?;
        let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
        let (value, expires_in) = parsed
            .and_then(|t| {
                let expires_in = t.expires_in;
                t.token
                    .or(t.access_token)
                    .filter(|v| !v.is_empty())
                    .map(|v| (v, expires_in))
            })
            .ok_or_else(|| ErrorKind::Protocol {
                registry: ep.registry.clone(),
                repository: req.repository.into(),
                message: format!(
                    "the token endpoint {} answered without a token",
                    url_path(realm)
                ),
            })?;
        // Renew a little early, so that a token does not run out on the way.
        let secs = expires_in.unwrap_or(DEFAULT_TOKEN_SECS).min(MAX_TOKEN_SECS);
        let lifetime = Duration::from_secs(secs).mul_f64(0.9);
        Ok(Token {
            value,
            expires: Instant::now() + lifetime,
        })
    }
}

/// The error for a response with an unexpected status; `not_found` names what a 404 to a
/// GET or HEAD lacks (empty: a 404 is reported as a failed request, as for pushes).
pub(crate) async fn status_error(
    ep: &Endpoint,
    req: &Request<'_>,
    resp: Response,
    not_found: &str,
) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = retry_after(&resp);
    let detail = describe_body(&body::prefix(resp, body::ERROR_LIMIT).await);
    let (registry, repository) = (ep.registry.clone(), req.repository.to_string());
    match status {
        401 if ep.credential.is_anonymous() => ErrorKind::CredentialsRequired {
            registry,
            repository,
        }
        .into(),
        401 => ErrorKind::Unauthorized {
            registry,
            repository,
        }
        .into(),
        403 => {
            let access = if req.scope.is_push() { "push" } else { "pull" };
            ErrorKind::Denied {
                registry,
                repository,
                access,
                detail,
            }
            .into()
        }
        // A 404 to a pull means the image or blob is not there. To a push (POST, PUT) it
        // means an unknown repository or upload session: reported with the request and a
        // hint, since "REPO not found" would not say what failed.
        404 if matches!(req.method, Method::GET | Method::HEAD) && !not_found.is_empty() => {
            ErrorKind::NotFound {
                name: not_found.into(),
            }
            .into()
        }
        _ => ErrorKind::Status {
            registry,
            repository,
            action: req.action.into(),
            status,
            detail,
            retry_after,
        }
        .into(),
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    parse_retry_after(
        resp.headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `host` of `host:port` (IPv6 stays bracketed).
fn host_of(registry: &str) -> &str {
    match registry.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// localhost, 127.0.0.0/8 and [::1]: tried over HTTPS first, then plain HTTP, as Docker does.
fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn same_origin(url: &str, base: &str) -> bool {
    match (reqwest::Url::parse(url), reqwest::Url::parse(base)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

/// The path of a URL, for logs: the query may carry upload state.
fn url_path(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

/// Resolves a `Location` header against the URL that answered with it.
pub(crate) fn resolve_location(base: &str, location: &str) -> Option<String> {
    reqwest::Url::parse(base)
        .ok()?
        .join(location)
        .ok()
        .map(String::from)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn form_encode(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `sha256:0123abcd`: enough of a digest to tell uploads apart on the status line.
fn short(digest: &crate::digest::Digest) -> String {
    digest.as_str().chars().take("sha256:".len() + 8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_body_is_held_back_unless_it_holds_its_blob() {
        use futures_util::StreamExt;
        let send = |chunks: &[&'static [u8]], size: u64, digest: &Digest| {
            let bad = Arc::new(std::sync::OnceLock::new());
            let items: Vec<std::io::Result<&[u8]>> = chunks.iter().map(|c| Ok(*c)).collect();
            let body = verified(
                futures_util::stream::iter(items),
                size,
                digest.clone(),
                bad.clone(),
            );
            async move {
                let sent: Vec<std::io::Result<&[u8]>> = body.collect().await;
                let ok: Vec<u8> = sent.iter().flatten().flat_map(|c| c.to_vec()).collect();
                (ok, sent.iter().any(Result::is_err), bad.get().cloned())
            }
        };
        let digest = Digest::of(b"hello world");
        assert_eq!(
            send(&[b"hello ", b"world"], 11, &digest).await,
            (b"hello world".to_vec(), false, None)
        );
        // The chunk that completes the body is not sent when the whole is wrong.
        let (ok, failed, why) = send(&[b"hello ", b"wOrld"], 11, &digest).await;
        assert_eq!((ok, failed), (b"hello ".to_vec(), true));
        assert!(why.unwrap().contains("hash to sha256:"));
        let (ok, failed, why) = send(&[b"hello ", b"world!"], 11, &digest).await;
        assert_eq!((ok, failed), (b"hello ".to_vec(), true));
        assert!(why.unwrap().contains("more than 11 bytes"));
    }

    #[test]
    fn loopback_and_hosts() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]",
            "[::1]:5000",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
        assert_eq!(host_of("reg.local:5000"), "reg.local");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
    }

    #[test]
    fn origins_and_locations() {
        let base = "http://127.0.0.1:5000";
        assert!(same_origin("http://127.0.0.1:5000/v2/a/blobs/x", base));
        assert!(!same_origin("http://localhost:5000/v2/", base));
        assert!(!same_origin("https://127.0.0.1:5000/v2/", base));
        assert!(!same_origin("http://127.0.0.1:5001/v2/", base));
        assert!(same_origin("https://r.io:443/x", "https://r.io"));
        assert!(!same_origin("not a url", base));
        let post = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_location(post, "/v2/a/blobs/uploads/u1?_state=s%3D").as_deref(),
            Some("http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s%3D")
        );
        assert_eq!(
            resolve_location(post, "https://s3.example/up?x=1").as_deref(),
            Some("https://s3.example/up?x=1")
        );
    }

    #[test]
    fn encodes_forms() {
        assert_eq!(escape("sha256:ab"), "sha256%3Aab");
        assert_eq!(
            form_encode(&[("scope", "repository:a/b:pull,push"), ("service", "r.io")]),
            "scope=repository%3Aa%2Fb%3Apull%2Cpush&service=r.io"
        );
    }
}
