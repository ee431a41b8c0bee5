//! A fault-injection HTTP proxy for the tests: it sits between kobuild and a real
//! `docker-registry` and, per request, forwards, answers with an injected status, resets the
//! connection, delays, truncates or corrupts the response, throttles the link, or stalls.
//!
//! Rules are (request kind or method, path substring, fault, times); the first rule that
//! matches a request and has times left decides. Every request is recorded with the time it
//! arrived and the fault it got, so tests can assert that a fault was followed by a retry.
//!
//! With [`FaultProxy::with_token_server`] the proxy also plays a Docker-style bearer token
//! server in front of a Plain registry: `/v2/` answers 401 with a `Bearer realm=.../token`
//! challenge, `/token` hands out tokens for Basic credentials, and only requests carrying a
//! token it issued are forwarded (without the token). Token requests pass the rules first,
//! so faults can be injected on the token endpoint too.
//!
//! The proxy runs on its own tokio runtime, so it serves plain `#[test]`s that run the
//! kobuild binary. Each forwarded request gets its own upstream connection; the response is
//! read whole and re-framed with a Content-Length, so the client connection can stay alive.
//! Plain HTTP only (a TLS probe is dropped at once, which makes clients fall back to HTTP).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Access, Endpoint, Registry, RegistryKind, USERNAME};

/// The request kinds a registry client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `GET /v2/`, the API check that also yields the auth challenge.
    Ping,
    /// The token endpoint of [`FaultProxy::with_token_server`] (`/token?...`).
    Token,
    HeadBlob,
    GetBlob,
    HeadManifest,
    GetManifest,
    /// `POST .../blobs/uploads/` that starts an upload.
    PostUpload,
    /// `PATCH` of an upload session (kobuild streams a changed binary's layer this way).
    PatchUpload,
    /// `PUT` that completes an upload (`?digest=`).
    PutUpload,
    /// `POST .../blobs/uploads/?mount=...&from=...`.
    Mount,
    /// `PUT .../manifests/sha256:...`.
    PutManifestDigest,
    /// `PUT .../manifests/TAG`.
    PutTag,
    DeleteUpload,
}

impl Kind {
    /// The kind of a request, if it is one a registry client sends.
    pub fn of(method: &str, path: &str) -> Option<Kind> {
        let manifests = path.contains("/manifests/");
        let by_digest = path.contains("/manifests/sha256:");
        let blob = path.contains("/blobs/sha256:");
        let upload = path.contains("/blobs/uploads/");
        Some(match method {
            "GET" if path == "/v2/" || path == "/v2" => Kind::Ping,
            _ if path.starts_with("/token") => Kind::Token,
            "HEAD" if blob => Kind::HeadBlob,
            "GET" if blob => Kind::GetBlob,
            "HEAD" if manifests => Kind::HeadManifest,
            "GET" if manifests => Kind::GetManifest,
            "POST" if upload && path.contains("mount=") => Kind::Mount,
            "POST" if upload => Kind::PostUpload,
            "PATCH" if upload => Kind::PatchUpload,
            "PUT" if upload => Kind::PutUpload,
            "DELETE" if upload => Kind::DeleteUpload,
            "PUT" if by_digest => Kind::PutManifestDigest,
            "PUT" if manifests => Kind::PutTag,
            _ => return None,
        })
    }
}

/// What happens to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and body) instead of forwarding; `retry_after` is sent as
    /// the `Retry-After` header.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: Vec<u8>,
    },
    /// Read the request head, then reset the connection (RST) without answering.
    Reset,
    /// Wait this long, then forward normally.
    Delay(Duration),
    /// Forward, then send only half the response (half the body; half the head when there
    /// is no body) and close the connection.
    Truncate,
    /// Forward, then flip one byte in the middle of the response body.
    Corrupt,
    /// Forward, reading the request body and writing the response at this many bytes/s.
    Throttle(u64),
    /// Read the request head, then nothing more: the body stays unread (the sender's
    /// window closes) and no answer comes. The connection stays open until the proxy goes.
    Stall,
    /// Forward, then write the response head at this many bytes/s (the body at full speed).
    SlowHead(u64),
    /// Read the whole request body, then nothing more: every byte sent is acknowledged, so
    /// only the client's own timer can end the wait. The connection stays open.
    Swallow,
    /// Forward, then send the response head and half the body (none for a HEAD), and then
    /// nothing more, with the connection open until the proxy goes.
    StallBody,
}

impl Fault {
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            body: Vec::new(),
        }
    }

    /// A status with a registry-style error body `{"errors":[{"code","message"}]}`.
    pub fn registry_error(code: u16, error: &str, message: &str) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            body: format!(r#"{{"errors":[{{"code":"{error}","message":"{message}"}}]}}"#)
                .into_bytes(),
        }
    }

    pub fn retry_after(code: u16, value: &str) -> Fault {
        Fault::Status {
            code,
            retry_after: Some(value.into()),
            body: Vec::new(),
        }
    }

    /// A short name for logs and reports.
    pub fn label(&self) -> String {
        match self {
            Fault::Status {
                code,
                retry_after,
                body,
            } => {
                // The registry error code of the body, if any: `"code":"NAME"`.
                let text = String::from_utf8_lossy(body);
                let error = text
                    .split_once(r#""code":""#)
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(name, _)| format!(" {name}"))
                    .unwrap_or_default();
                match retry_after {
                    Some(r) => format!("{code}{error} (Retry-After: {r})"),
                    None => format!("{code}{error}"),
                }
            }
            Fault::Reset => "reset".into(),
            Fault::Delay(d) => format!("delay {} ms", d.as_millis()),
            Fault::Truncate => "truncate".into(),
            Fault::Corrupt => "corrupt".into(),
            Fault::Throttle(rate) => format!("throttle {rate} B/s"),
            Fault::Stall => "stall".into(),
            Fault::StallBody => "stall in the body".into(),
            Fault::Swallow => "swallow".into(),
            Fault::SlowHead(rate) => format!("head at {rate} B/s"),
        }
    }
}

/// When a fault applies: a request kind (or any request), optionally narrowed by a path
/// substring, for the first `times` matching requests (`None`: forever).
#[derive(Clone, Debug)]
pub struct Rule {
    pub kind: Option<Kind>,
    pub path: Option<String>,
    pub fault: Fault,
    pub times: Option<usize>,
}

impl Rule {
    /// `fault` once on the next request of `kind`.
    pub fn once(kind: Kind, fault: Fault) -> Rule {
        Rule {
            kind: Some(kind),
            path: None,
            fault,
            times: Some(1),
        }
    }

    /// `fault` on every request of `kind`.
    pub fn always(kind: Kind, fault: Fault) -> Rule {
        Rule {
            times: None,
            ..Rule::once(kind, fault)
        }
    }

    /// `fault` on every request whatever its kind.
    pub fn every_request(fault: Fault) -> Rule {
        Rule {
            kind: None,
            path: None,
            fault,
            times: None,
        }
    }

    /// Only requests whose path (with query) contains `part`.
    pub fn path(mut self, part: &str) -> Rule {
        self.path = Some(part.into());
        self
    }

    pub fn times(mut self, times: usize) -> Rule {
        self.times = Some(times);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.kind.is_none_or(|k| Kind::of(method, path) == Some(k))
            && self.path.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path with query.
    pub path: String,
    pub kind: Option<Kind>,
    pub at: Instant,
    /// The index of the rule that applied, if any, and its fault.
    pub rule: Option<usize>,
    pub fault: Option<String>,
}

struct RuleState {
    rule: Rule,
    hits: AtomicUsize,
}

struct TokenServer {
    /// `Authorization` value the token endpoint accepts.
    basic: String,
    password: String,
    issued: Mutex<Vec<String>>,
}

struct State {
    upstream: SocketAddr,
    rules: Mutex<Vec<Arc<RuleState>>>,
    log: Mutex<Vec<Seen>>,
    token: Option<TokenServer>,
}

/// A fault-injection proxy in front of a Plain or Auth [`Registry`]; dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    access: Access,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Forwards to `registry` as it is (Basic auth of an Auth registry passes through).
    pub fn start(registry: &Registry) -> FaultProxy {
        Self::new(registry, registry.access.clone(), None)
    }

    /// In front of a Plain registry, demands bearer tokens from its own token endpoint,
    /// which accepts the user [`USERNAME`] with `password`.
    pub fn with_token_server(registry: &Registry, password: &str) -> FaultProxy {
        assert_eq!(
            registry.kind(),
            RegistryKind::Plain,
            "the token server fronts a Plain registry"
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}"))
        );
        let access = Access {
            kind: RegistryKind::Auth,
            password: Some(password.into()),
            cert_dir: None,
        };
        let token = TokenServer {
            basic,
            password: password.into(),
            issued: Mutex::default(),
        };
        Self::new(registry, access, Some(token))
    }

    fn new(registry: &Registry, access: Access, token: Option<TokenServer>) -> FaultProxy {
        assert!(
            registry.kind() != RegistryKind::Tls,
            "the fault proxy speaks plain HTTP only"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            upstream: registry.addr(),
            rules: Mutex::default(),
            log: Mutex::default(),
            token,
        });
        let accept_state = state.clone();
        runtime.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(conn, accept_state.clone()));
            }
        });
        FaultProxy {
            addr,
            access,
            state,
            runtime: Some(runtime),
        }
    }

    /// Adds a rule after the existing ones; returns its index for [`FaultProxy::hits`].
    pub fn add(&self, rule: Rule) -> usize {
        let mut rules = self.state.rules.lock().unwrap();
        rules.push(Arc::new(RuleState {
            rule,
            hits: AtomicUsize::new(0),
        }));
        rules.len() - 1
    }

    /// How many requests rule `index` has applied to.
    pub fn hits(&self, index: usize) -> usize {
        self.state.rules.lock().unwrap()[index]
            .hits
            .load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests of `kind` so far.
    pub fn count(&self, kind: Kind) -> usize {
        self.requests()
            .iter()
            .filter(|s| s.kind == Some(kind))
            .count()
    }

    /// The password of the token server's user.
    pub fn password(&self) -> &str {
        match &self.state.token {
            Some(t) => &t.password,
            None => self
                .access
                .password
                .as_deref()
                .expect("no credentials for this proxy"),
        }
    }
}

impl Endpoint for FaultProxy {
    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        self.access.skopeo_flags(prefix)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Also works when dropped inside another runtime.
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------
// Connections

/// A stream with a read buffer, so that a request head can be read line by line while the
/// socket stays usable for writing and for an abortive close.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// More bytes into the buffer; false at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The bytes up to and including the blank line ending a head; None at a clean EOF.
    async fn read_head(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..i + 4).collect()));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    async fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=i).collect());
            }
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Exactly `n` bytes, at most `rate` bytes per second when given.
    async fn read_exact(&mut self, n: usize, rate: Option<u64>) -> std::io::Result<Vec<u8>> {
        let pace = Pace::new(rate);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = (n - out.len()).min(self.buf.len()).min(pace.chunk());
            out.extend(self.buf.drain(..take));
            pace.wait(out.len()).await;
        }
        Ok(out)
    }

    async fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// A body framed by `headers`: chunked (de-chunked here), Content-Length, or, for a
    /// response, everything to EOF.
    async fn read_body(
        &mut self,
        headers: &[(String, String)],
        to_eof: bool,
        rate: Option<u64>,
    ) -> std::io::Result<Vec<u8>> {
        if header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = self.read_line().await?;
                let text = String::from_utf8_lossy(&line);
                let size =
                    usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| std::io::Error::other(format!("bad chunk size {text:?}")))?;
                if size == 0 {
                    // Trailers up to the blank line.
                    while !matches!(self.read_line().await?.as_slice(), b"\r\n" | b"\n") {}
                    return Ok(body);
                }
                body.extend(self.read_exact(size, rate).await?);
                self.read_line().await?;
            }
        }
        match header(headers, "content-length") {
            Some(n) => {
                let n = n
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("bad Content-Length {n:?}")))?;
                self.read_exact(n, rate).await
            }
            None if to_eof => self.read_to_end().await,
            None => Ok(Vec::new()),
        }
    }
}

/// Keeps a transfer at `rate` bytes per second.
struct Pace {
    rate: Option<u64>,
    start: Instant,
}

impl Pace {
    fn new(rate: Option<u64>) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
        }
    }

    /// How many bytes to move at once: a twentieth of a second's worth, at least a byte (a
    /// trickle of a byte a second really sends one byte a second).
    fn chunk(&self) -> usize {
        self.rate.map_or(usize::MAX, |r| ((r / 20) as usize).max(1))
    }

    /// Sleeps until `done` bytes are due.
    async fn wait(&self, done: usize) {
        if let Some(rate) = self.rate {
            let due = self.start + Duration::from_secs_f64(done as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Start line and header fields of a head.
fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (start, headers)
}

/// A response to send to the client.
struct Response {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The answer to a HEAD request: its Content-Length is kept, and no body is sent.
    to_head: bool,
}

impl Response {
    fn local(code: u16, headers: Vec<(String, String)>, body: Vec<u8>, to_head: bool) -> Self {
        Response {
            status_line: format!("HTTP/1.1 {code} {}", reason(code)),
            headers,
            body: if to_head { Vec::new() } else { body },
            to_head,
        }
    }

    /// The head, re-framed with a Content-Length, and the body.
    fn bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let mut head = format!("{}\r\n", self.status_line);
        for (k, v) in &self.headers {
            let framing = ["connection", "keep-alive", "transfer-encoding"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h))
                || (!self.to_head && k.eq_ignore_ascii_case("content-length"));
            if !framing {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        if !self.to_head {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        (head.into_bytes(), self.body.clone())
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let mut conn = Conn::new(stream);
    // A TLS ClientHello (a client probing for HTTPS) is dropped, so that it falls back.
    match conn.fill().await {
        Ok(true) if conn.buf[0].is_ascii_uppercase() => {}
        _ => return,
    }
    while let Ok(true) = serve_one(&mut conn, &state).await {}
}

/// One request on `conn`; false when the connection is done.
async fn serve_one(conn: &mut Conn, state: &State) -> std::io::Result<bool> {
    let Some(head) = conn.read_head().await? else {
        return Ok(false);
    };
    let (request_line, headers) = parse_head(&head);
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let kind = Kind::of(&method, &path);

    let applied = {
        let rules = state.rules.lock().unwrap();
        rules.iter().enumerate().find_map(|(i, r)| {
            if !r.rule.matches(&method, &path) {
                return None;
            }
            // Claim one of the remaining times; a rule used up lets later rules match.
            let claimed = r
                .hits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                    r.rule.times.is_none_or(|t| h < t).then_some(h + 1)
                })
                .is_ok();
            claimed.then(|| (i, r.rule.fault.clone()))
        })
    };
    state.log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        kind,
        at: Instant::now(),
        rule: applied.as_ref().map(|(i, _)| *i),
        fault: applied.as_ref().map(|(_, f)| f.label()),
    });
    let fault = applied.map(|(_, f)| f);
    let rate = match &fault {
        Some(Fault::Throttle(rate)) => Some(*rate),
        _ => None,
    };
    let to_head = method == "HEAD";

    match &fault {
        Some(Fault::Reset) => {
            // An abortive close: the client gets a connection reset, with no answer.
            let _ = conn.stream.set_zero_linger();
            return Ok(false);
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::Stall) => return hold(conn).await,
        _ => {}
    }
    let body = conn.read_body(&headers, false, rate).await?;
    if let Some(Fault::Swallow) = fault {
        return hold(conn).await;
    }

    let response = match &fault {
        Some(Fault::Status {
            code,
            retry_after,
            body,
        }) => {
            let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
            if let Some(r) = retry_after {
                h.push(("Retry-After".into(), r.clone()));
            }
            Response::local(*code, h, body.clone(), to_head)
        }
        _ => match token_answer(state, &method, &path, &headers, to_head) {
            Some(local) => local,
            None => forward(state, &head, &headers, &body, to_head).await?,
        },
    };

    let (head_bytes, mut body_bytes) = response.bytes();
    match fault {
        Some(Fault::Truncate) => {
            let mut all = head_bytes.clone();
            let cut = if body_bytes.is_empty() {
                head_bytes.len() / 2
            } else {
                head_bytes.len() + body_bytes.len() / 2
            };
            all.extend(body_bytes);
            conn.stream.write_all(&all[..cut]).await?;
            conn.stream.shutdown().await?;
            return Ok(false);
        }
        Some(Fault::Corrupt) if !body_bytes.is_empty() => {
            let mid = body_bytes.len() / 2;
            body_bytes[mid] ^= 0x01;
        }
        Some(Fault::StallBody) => {
            conn.stream.write_all(&head_bytes).await?;
            conn.stream
                .write_all(&body_bytes[..body_bytes.len() / 2])
                .await?;
            conn.stream.flush().await?;
            return hold(conn).await;
        }
        Some(Fault::SlowHead(head_rate)) => {
            let pace = Pace::new(Some(head_rate));
            let mut sent = 0;
            while sent < head_bytes.len() {
                let end = head_bytes.len().min(sent + pace.chunk());
                conn.stream.write_all(&head_bytes[sent..end]).await?;
                conn.stream.flush().await?;
                sent = end;
                pace.wait(sent).await;
            }
            conn.stream.write_all(&body_bytes).await?;
            conn.stream.flush().await?;
            return Ok(true);
        }
        _ => {}
    }
    conn.stream.write_all(&head_bytes).await?;
    let pace = Pace::new(rate);
    let mut sent = 0;
    while sent < body_bytes.len() {
        let end = body_bytes.len().min(sent.saturating_add(pace.chunk()));
        conn.stream.write_all(&body_bytes[sent..end]).await?;
        sent = end;
        pace.wait(sent).await;
    }
    conn.stream.flush().await?;
    Ok(true)
}

/// Keeps `conn` open and silent: nothing more is read or written. The proxy's runtime drops
/// the task (and so the connection) when the proxy goes.
async fn hold(conn: &mut Conn) -> std::io::Result<bool> {
    let _open = conn;
    std::future::pending().await
}

/// The token server's own answers: tokens, and 401s for requests without a valid one.
/// None: forward the request.
fn token_answer(
    state: &State,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    to_head: bool,
) -> Option<Response> {
    let token = state.token.as_ref()?;
    let json = || vec![("Content-Type".to_string(), "application/json".to_string())];
    if path.starts_with("/token") {
        if method != "GET" || header(headers, "authorization") != Some(token.basic.as_str()) {
            let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
            return Some(Response::local(401, json(), body.to_vec(), to_head));
        }
        let mut issued = token.issued.lock().unwrap();
        let value = format!("tok-{}", issued.len() + 1);
        issued.push(value.clone());
        let body = format!(r#"{{"token":"{value}","expires_in":300}}"#);
        return Some(Response::local(200, json(), body.into_bytes(), to_head));
    }
    let presented = header(headers, "authorization").and_then(|a| a.strip_prefix("Bearer "));
    if presented.is_some_and(|t| token.issued.lock().unwrap().iter().any(|i| i == t)) {
        return None;
    }
    let host = header(headers, "host").unwrap_or_default();
    let mut h = json();
    h.push((
        "WWW-Authenticate".into(),
        format!(r#"Bearer realm="http://{host}/token",service="fault-proxy""#),
    ));
    let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    Some(Response::local(401, h, body.to_vec(), to_head))
}

/// Sends the request to the registry on a fresh connection and reads the whole answer.
async fn forward(
    state: &State,
    head: &[u8],
    headers: &[(String, String)],
    body: &[u8],
    to_head: bool,
) -> std::io::Result<Response> {
    let (request_line, _) = parse_head(head);
    let mut out = format!("{request_line}\r\n");
    for (k, v) in headers {
        let dropped = ["connection", "keep-alive", "transfer-encoding", "content-length"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
            // The registry behind a token server is open; tokens are the proxy's own.
            || (state.token.is_some() && k.eq_ignore_ascii_case("authorization"));
        // Repeated fields (Accept) stay separate lines: collapsing them changes what
        // distribution serves.
        if !dropped {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if !body.is_empty() || header(headers, "content-length").is_some() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut up = Conn::new(TcpStream::connect(state.upstream).await?);
    up.stream.write_all(out.as_bytes()).await?;
    up.stream.write_all(body).await?;
    let head = up
        .read_head()
        .await?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    let (status_line, headers) = parse_head(&head);
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let no_body = to_head || code == 204 || code == 304 || (100..200).contains(&code);
    let body = if no_body {
        Vec::new()
    } else {
        up.read_body(&headers, true, None).await?
    };
    Ok(Response {
        status_line,
        headers,
        body,
        to_head,
    })
}

// ---------------------------------------------------------------------------
// Checking a registry directly

/// A plain-HTTP request to `host` (`127.0.0.1:PORT`) with the OCI and Docker manifest
/// types accepted (without them distribution 2.8 answers 404 for OCI manifests); returns
/// the status, headers and body.
pub fn oci_request(host: &str, method: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept: String = [
        super::OCI_MANIFEST,
        super::OCI_INDEX,
        super::DOCKER_MANIFEST,
        super::DOCKER_LIST,
    ]
    .iter()
    .map(|t| format!("Accept: {t}\r\n"))
    .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read the answer");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let (status_line, headers) = parse_head(&all[..split]);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, headers, all[split + 4..].to_vec())
}
