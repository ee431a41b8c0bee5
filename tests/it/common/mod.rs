//! Shared harness for the integration tests: real `docker-registry` servers
//! (plain, htpasswd, TLS + htpasswd), a request-recording HTTP proxy, base
//! images written by `tests/fixtures/make_base.py`, and wrappers around
//! skopeo, umoci, chroot and runc to check images independently of kobuild.
//!
//! Every helper panics with the full command and its stderr on failure, so a
//! failing test says what went wrong without a rerun. The tools come from
//! Debian packages that `scripts/test` installs.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod faults;
pub mod kobuild;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

pub const USERNAME: &str = "ci";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The four platforms of the multi-platform base images.
pub const ALL_PLATFORMS: [&str; 4] = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"];

// ---------------------------------------------------------------------------
// Small utilities

/// `sha256:<hex>` of `bytes`, computed here rather than by kobuild.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Runs `cmd`, panicking with the command line, status and stderr unless it succeeds.
pub fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` (stdin closed unless set), killing it and panicking if it is not done within
/// `limit`: for runs that must not hang.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // Its output is not awaited: a grandchild may still hold the pipes.
            panic!("{cmd:?} still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn is_root() -> bool {
    // /proc/self belongs to the effective uid; avoids a libc dependency.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A Go app under `tests/fixtures/apps/` ("hello", "lib", "broken", "server").
pub fn app_dir(name: &str) -> PathBuf {
    fixtures_dir().join("apps").join(name)
}

/// Writes an executable `go` at `path` that runs the shell lines `before`, then the real
/// `go` with the same arguments (for kobuild's `KO_GO_PATH`).
pub fn go_wrapper(path: &Path, before: &str) {
    let real =
        String::from_utf8(run_checked(Command::new("sh").args(["-c", "command -v go"])).stdout)
            .unwrap();
    let script = format!("#!/bin/sh\n{before}exec '{}' \"$@\"\n", real.trim());
    fs::write(path, script).unwrap();
    run_checked(Command::new("chmod").arg("+x").arg(path));
}

/// A copy of a fixture app, at `<temp dir>/<name>`, for tests that edit it.
pub fn app_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_checked(
        Command::new("cp")
            .arg("-r")
            .arg(app_dir(name))
            .arg(dir.path()),
    );
    dir
}

// ---------------------------------------------------------------------------
// Registries

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryKind {
    /// Plain HTTP, no auth.
    Plain,
    /// Plain HTTP with htpasswd basic auth.
    Auth,
    /// TLS with a per-registry CA, plus htpasswd basic auth.
    Tls,
}

/// What a client needs to reach a registry: credentials and trust.
#[derive(Clone, Debug)]
struct Access {
    kind: RegistryKind,
    password: Option<String>,
    cert_dir: Option<PathBuf>,
}

impl Access {
    /// skopeo flags for this registry; `prefix` is "--", "--src-" or "--dest-".
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut flags = Vec::new();
        match &self.cert_dir {
            Some(dir) => flags.push(format!("{prefix}cert-dir={}", dir.display())),
            // With verification off skopeo falls back to plain HTTP.
            None => flags.push(format!("{prefix}tls-verify=false")),
        }
        if let Some(password) = &self.password {
            flags.push(format!("{prefix}creds={USERNAME}:{password}"));
        }
        flags
    }
}

/// Something skopeo can push to or pull from: a [`Registry`] or a [`Proxy`] in front of one.
pub trait Endpoint {
    /// `127.0.0.1:PORT`, to prefix repository names with.
    fn host(&self) -> String;
    /// skopeo flags for TLS and credentials; `prefix` is "--", "--src-" or "--dest-".
    fn skopeo_flags(&self, prefix: &str) -> Vec<String>;
}

/// A `docker-registry serve` child process with its own storage, config and
/// log in a temporary directory. Dropping it kills the registry.
pub struct Registry {
    access: Access,
    port: u16,
    child: Child,
    dir: TempDir,
}

impl Registry {
    pub fn start(kind: RegistryKind) -> Registry {
        Registry::start_with(kind, None)
    }

    /// A Tls registry whose 401s name `realm` as their bearer token endpoint instead of
    /// asking for Basic credentials (it never accepts a token: for tests of the realm).
    pub fn tls_with_token_realm(realm: &str) -> Registry {
        Registry::start_with(RegistryKind::Tls, Some(realm))
    }

    fn start_with(kind: RegistryKind, realm: Option<&str>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("kobuild-registry-")
            .tempdir()
            .expect("tempdir");
        let password = (kind != RegistryKind::Plain).then(|| format!("ci-pass-{}", random_hex(8)));
        if let Some(password) = &password {
            let out = run_checked(Command::new("htpasswd").args(["-Bbn", USERNAME, password]));
            fs::write(dir.path().join("htpasswd"), out.stdout).expect("write htpasswd");
        }
        let cert_dir = (kind == RegistryKind::Tls).then(|| make_certs(dir.path()));
        let access = Access {
            kind,
            password,
            cert_dir,
        };
        let log_path = dir.path().join("registry.log");
        for _ in 0..3 {
            let port = free_port();
            fs::write(
                dir.path().join("config.yml"),
                config_yaml(dir.path(), kind, port, realm),
            )
            .expect("write registry config");
            let log = fs::File::create(&log_path).expect("create log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start docker-registry: {e}"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_ready(&mut child, addr, kind) {
                Ok(()) => {
                    return Registry {
                        access,
                        port,
                        child,
                        dir,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    // A port found free can be taken by another process
                    // before the registry binds it; then a fresh port is enough.
                    assert!(
                        log.contains("address already in use"),
                        "{kind:?} registry did not start: {e}\n{log}"
                    );
                    eprintln!("registry port {port} was taken; retrying");
                }
            }
        }
        panic!("no free port for a {kind:?} registry after 3 tries");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn kind(&self) -> RegistryKind {
        self.access.kind
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = match self.access.kind {
            RegistryKind::Tls => "https",
            _ => "http",
        };
        format!("{scheme}://{}", self.host())
    }

    pub fn username(&self) -> &str {
        assert!(
            self.access.password.is_some(),
            "a Plain registry has no credentials"
        );
        USERNAME
    }

    pub fn password(&self) -> &str {
        self.access
            .password
            .as_deref()
            .expect("a Plain registry has no credentials")
    }

    /// Writes `dir/config.json` in Docker's format with this registry's
    /// credentials (what `docker login` leaves), for `DOCKER_CONFIG=dir` or
    /// skopeo's `--authfile`; returns the file's path.
    pub fn write_docker_config(&self, dir: &Path) -> PathBuf {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.username(),
            self.password()
        ));
        let config = serde_json::json!({"auths": {self.host(): {"auth": auth}}});
        fs::create_dir_all(dir).expect("create docker config dir");
        let path = dir.join("config.json");
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).expect("write config.json");
        path
    }

    /// The CA certificate that signed a Tls registry's server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.cert_dir().join("ca.crt")
    }

    /// A directory holding `ca.crt`, for skopeo's `--cert-dir`.
    pub fn cert_dir(&self) -> &Path {
        self.access
            .cert_dir
            .as_deref()
            .expect("only a Tls registry has a CA")
    }

    /// The registry's stdout and stderr so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read(self.dir.path().join("registry.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Digests (`sha256:<hex>`) of every blob in the registry's storage,
    /// manifests included, whichever repository it was pushed to.
    pub fn blob_digests(&self) -> BTreeSet<String> {
        let root = self.storage_dir().join("docker/registry/v2/blobs/sha256");
        let mut digests = BTreeSet::new();
        for prefix in fs::read_dir(&root).into_iter().flatten() {
            let prefix = prefix.expect("read blob dir").path();
            for blob in fs::read_dir(&prefix).expect("read blob dir") {
                let blob = blob.expect("read blob dir").path();
                if blob.join("data").is_file() {
                    let hex = blob.file_name().unwrap().to_string_lossy().into_owned();
                    digests.insert(format!("sha256:{hex}"));
                }
            }
        }
        digests
    }

    /// Status of a plain-HTTP GET of `path` (e.g. "/v2/"), with or without
    /// the registry's credentials. Not for Tls registries.
    pub fn get_status(&self, path: &str, authenticated: bool) -> u16 {
        assert!(
            self.access.kind != RegistryKind::Tls,
            "get_status speaks plain HTTP only"
        );
        let auth = authenticated.then(|| (self.username(), self.password()));
        http_get_status(self.addr(), path, auth)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }
}

impl Endpoint for Registry {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        self.access.skopeo_flags(prefix)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until the registry answers a real request, or it exits, or 10 s pass.
fn wait_ready(child: &mut Child, addr: SocketAddr, kind: RegistryKind) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("docker-registry exited with {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err("port not open after 10 s".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    // A plain-HTTP request to the TLS port gets Go's "400 Client sent an
    // HTTP request to an HTTPS server", which proves the server is up too.
    let expected = match kind {
        RegistryKind::Plain => 200,
        RegistryKind::Auth => 401,
        RegistryKind::Tls => 400,
    };
    match http_get_status(addr, "/v2/", None) {
        Ok(status) if status == expected => Ok(()),
        Ok(status) => Err(format!("GET /v2/ gave {status}, expected {expected}")),
        Err(e) => Err(format!("GET /v2/ failed: {e}")),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

fn config_yaml(dir: &Path, kind: RegistryKind, port: u16, realm: Option<&str>) -> String {
    let mut http = serde_json::json!({
        "addr": format!("127.0.0.1:{port}"),
        "secret": "kobuild-test-not-secret",
    });
    if kind == RegistryKind::Tls {
        http["tls"] = serde_json::json!({
            "certificate": dir.join("tls/server.crt"),
            "key": dir.join("tls/server.key"),
        });
    }
    let mut config = serde_json::json!({
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": true}},
        "storage": {
            "filesystem": {"rootdirectory": dir.join("storage")},
            "delete": {"enabled": true},
        },
        "http": http,
    });
    if let Some(realm) = realm {
        config["auth"] = serde_json::json!({
            "token": {
                "realm": realm,
                "service": "kobuild-test",
                "issuer": "kobuild-test",
                "rootcertbundle": dir.join("tls/server.crt"),
            },
        });
    } else if kind != RegistryKind::Plain {
        config["auth"] = serde_json::json!({
            "htpasswd": {"realm": "kobuild-test", "path": dir.join("htpasswd")},
        });
    }
    // JSON is valid YAML, and serde_json quotes paths correctly.
    serde_json::to_string_pretty(&config).expect("serialize config")
}

/// A fresh CA and a server certificate signed by it for 127.0.0.1 and
/// localhost, so that clients are tested with a real trust chain rather than
/// a pinned self-signed certificate. Returns the directory holding `ca.crt`.
fn make_certs(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    let cert_dir = dir.join("certs.d");
    fs::create_dir_all(&tls).expect("mkdir tls");
    fs::create_dir_all(&cert_dir).expect("mkdir certs.d");
    let cnf = tls.join("openssl.cnf");
    // An own config keeps the result independent of the system openssl.cnf.
    fs::write(
        &cnf,
        "[req]\n\
         distinguished_name = dn\n\
         [dn]\n\
         [ca_ext]\n\
         basicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server_ext]\n\
         basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid,issuer\n",
    )
    .expect("write openssl.cnf");
    let ca_crt = cert_dir.join("ca.crt");
    let ca_key = tls.join("ca.key");
    // P-256 keys: generated instantly, and accepted by Go, rustls and skopeo.
    let newkey = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_checked(
        Command::new("openssl")
            .args(["req", "-x509", "-config"])
            .arg(&cnf)
            .args(["-extensions", "ca_ext", "-days", "7"])
            .args(newkey)
            .args(["-subj", &format!("/CN=kobuild test CA {}", random_hex(4))])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt),
    );
    run_checked(
        Command::new("openssl")
            .args(["req", "-new", "-config"])
            .arg(&cnf)
            .args(newkey)
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(tls.join("server.key"))
            .arg("-out")
            .arg(tls.join("server.csr")),
    );
    run_checked(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "7", "-set_serial", "2", "-in"])
            .arg(tls.join("server.csr"))
            .arg("-CA")
            .arg(&ca_crt)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&cnf)
            .args(["-extensions", "server_ext", "-out"])
            .arg(tls.join("server.crt")),
    );
    cert_dir
}

/// One HTTP/1.1 GET over a fresh connection; returns the status code.
fn http_get_status(addr: SocketAddr, path: &str, auth: Option<(&str, &str)>) -> io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line)?;
    status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))
}

// ---------------------------------------------------------------------------
// Request-recording proxy

/// A plain-HTTP proxy in front of a Plain or Auth registry that records the
/// method and path (with query) of every request, e.g. to tell whether a
/// second push uploaded any blob or tried cross-repository mounts.
///
/// Requests are framed by Content-Length or chunked encoding, which is all
/// registry clients send; responses are relayed as raw bytes. The Host header
/// is left alone, so the registry's upload Locations point back at the proxy.
/// TLS registries are not supported (that would need TLS termination).
pub struct Proxy {
    access: Access,
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    holds: Arc<Mutex<Vec<Hold>>>,
    /// Dropped with the proxy, which lets held connections close.
    _release: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(registry: &Registry) -> Proxy {
        assert!(
            registry.kind() != RegistryKind::Tls,
            "the recording proxy speaks plain HTTP only"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = registry.addr();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let holds: Arc<Mutex<Vec<Hold>>> = Arc::default();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release_rx));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (requests, holds, stop) = (requests.clone(), holds.clone(), stop.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let rules = Rules {
                        requests: requests.clone(),
                        holds: holds.clone(),
                        release: release.clone(),
                    };
                    // Connections end when either side closes; nothing joins them.
                    thread::spawn(move || {
                        let _ = relay_connection(client, upstream, &rules);
                    });
                }
            })
        };
        Proxy {
            access: registry.access.clone(),
            addr,
            requests,
            holds,
            _release: release_tx,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Every request so far as (method, path-with-query), in arrival order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops forwarding the first request whose method is `method` and whose path contains
    /// `path`: the connection is held open, unanswered, until the proxy is dropped. The
    /// returned receiver gets a message when that request arrives.
    pub fn hold(&self, method: &str, path: &str) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        self.holds.lock().unwrap().push(Hold {
            method: method.into(),
            path: path.into(),
            arrived: tx,
        });
        rx
    }

    /// Forgets the requests recorded so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// Blob uploads started (`POST .../blobs/uploads/` without `mount=`).
    pub fn upload_starts(&self) -> usize {
        self.count_posts(|path| !path.contains("mount="))
    }

    /// Cross-repository mount attempts (`POST .../blobs/uploads/?mount=...`).
    pub fn mount_attempts(&self) -> usize {
        self.count_posts(|path| path.contains("mount="))
    }

    fn count_posts(&self, filter: impl Fn(&str) -> bool) -> usize {
        self.requests()
            .iter()
            .filter(|(method, path)| {
                method == "POST" && path.contains("/blobs/uploads/") && filter(path)
            })
            .count()
    }
}

impl Endpoint for Proxy {
    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        self.access.skopeo_flags(prefix)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Hold {
    method: String,
    path: String,
    arrived: mpsc::Sender<()>,
}

/// What a proxy connection consults per request.
struct Rules {
    requests: Arc<Mutex<Vec<(String, String)>>>,
    holds: Arc<Mutex<Vec<Hold>>>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

fn relay_connection(client: TcpStream, upstream: SocketAddr, rules: &Rules) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    // skopeo with --tls-verify=false tries HTTPS first; dropping its TLS
    // ClientHello makes it fall back to HTTP at once.
    if !reader
        .fill_buf()?
        .first()
        .is_some_and(u8::is_ascii_uppercase)
    {
        return Ok(());
    }
    let server = TcpStream::connect(upstream)?;
    let mut to_server = server.try_clone()?;
    let responses = thread::spawn(move || {
        let (mut server, mut client) = (server, client);
        let _ = io::copy(&mut server, &mut client);
        let _ = client.shutdown(Shutdown::Write);
    });
    let forwarded = loop {
        match forward_request(&mut reader, &mut to_server, rules) {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // After a clean end the last response may still be on its way; after a
    // broken request nothing useful is, so the connection closes at once.
    let how = if forwarded.is_ok() {
        Shutdown::Write
    } else {
        Shutdown::Both
    };
    let _ = to_server.shutdown(how);
    let _ = responses.join();
    forwarded
}

/// Forwards one request; returns false at a clean end of the connection.
fn forward_request(
    reader: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
    rules: &Rules,
) -> io::Result<bool> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if reader.read_until(b'\n', &mut head)? == 0 {
            return if head.is_empty() {
                Ok(false)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if &head[start..] == b"\r\n" || &head[start..] == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    rules
        .requests
        .lock()
        .unwrap()
        .push((method.clone(), path.clone()));
    let held = {
        let mut holds = rules.holds.lock().unwrap();
        let i = holds
            .iter()
            .position(|h| h.method == method && path.contains(&h.path));
        i.map(|i| holds.remove(i))
    };
    if let Some(hold) = held {
        let _ = hold.arrived.send(());
        // Blocks until the proxy is dropped (the sender side goes away).
        let _ = rules.release.lock().unwrap().recv();
        return Err(io::ErrorKind::ConnectionAborted.into());
    }

    let (mut length, mut chunked) = (0u64, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| io::Error::other(format!("bad Content-Length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    out.write_all(&head)?;
    if chunked {
        forward_chunked(reader, out)?;
    } else {
        copy_exactly(reader, out, length)?;
    }
    Ok(true)
}

fn forward_chunked(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        out.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size line {text:?}")))?;
        if size == 0 {
            // Trailer fields, then the final empty line.
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                out.write_all(&line)?;
                if line == b"\r\n" || line == b"\n" {
                    return Ok(());
                }
            }
        }
        // The chunk data and its closing CRLF.
        copy_exactly(reader, out, size + 2)?;
    }
}

fn copy_exactly(reader: &mut BufReader<TcpStream>, out: &mut TcpStream, n: u64) -> io::Result<()> {
    if io::copy(&mut reader.by_ref().take(n), out)? == n {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

// ---------------------------------------------------------------------------
// Base images and OCI layouts

/// Writes a deterministic base image layout with `make_base.py` into `dir`
/// (tagged `tag`) and returns its path. One platform gives a single manifest,
/// several give an index (Docker: a manifest list).
pub fn make_base(dir: &Path, tag: &str, docker: bool, platforms: &[&str]) -> PathBuf {
    run_make_base(dir, tag, docker, platforms, false)
}

/// Like [`make_base`] with OCI media types, plus a BuildKit-style
/// `unknown/unknown` attestation manifest per platform in the index.
pub fn make_base_with_attestations(dir: &Path, tag: &str, platforms: &[&str]) -> PathBuf {
    run_make_base(dir, tag, false, platforms, true)
}

fn run_make_base(dir: &Path, tag: &str, docker: bool, platforms: &[&str], attest: bool) -> PathBuf {
    let mut cmd = Command::new("python3");
    cmd.arg(fixtures_dir().join("make_base.py")).arg(dir).args([
        "--tag",
        tag,
        "--platforms",
        &platforms.join(","),
    ]);
    if docker {
        cmd.arg("--docker");
    }
    if attest {
        cmd.arg("--attestation");
    }
    run_checked(&mut cmd);
    dir.to_path_buf()
}

/// The descriptor in an OCI layout's index.json (the first one).
pub fn layout_top(layout: &Path) -> serde_json::Value {
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(layout.join("index.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", layout.display())),
    )
    .expect("index.json is JSON");
    index["manifests"][0].clone()
}

/// The bytes of a blob (`sha256:<hex>`) in an OCI layout.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The platform strings ("linux/arm/v7", "unknown/unknown") of an index.
pub fn index_platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(variant) = p["variant"].as_str() {
                s = format!("{s}/{variant}");
            }
            s
        })
        .collect()
}

/// Pushes a base layout to `HOST/REPO:TAG` with every platform and the
/// digests unchanged; returns that reference (without `docker://`).
pub fn push_base(target: &impl Endpoint, layout: &Path, tag: &str, repo: &str) -> String {
    let reference = format!("{}/{repo}:{tag}", target.host());
    let top = layout_top(layout);
    let docker = top["mediaType"]
        .as_str()
        .is_some_and(|t| t.starts_with("application/vnd.docker."));
    // skopeo's oci: transport only accepts OCI media types in index.json, so
    // Docker images go through its dir: transport instead.
    let staging;
    let source = if docker {
        staging = tempfile::tempdir().expect("tempdir");
        docker_dir_view(layout, &top, staging.path());
        format!("dir:{}", staging.path().display())
    } else {
        format!("oci:{}:{tag}", layout.display())
    };
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
    ])
    .args(target.skopeo_flags("--dest-"))
    .arg(source)
    .arg(format!("docker://{reference}"));
    run_checked(&mut cmd);
    reference
}

/// Lays out a Docker image from an OCI layout as skopeo's dir: transport
/// expects it: `manifest.json`, `<hex>.manifest.json` per list entry, and
/// every blob as `<hex>`.
fn docker_dir_view(layout: &Path, top: &serde_json::Value, out: &Path) {
    fs::write(out.join("version"), "Directory Transport Version: 1.1\n").expect("write version");
    let top_bytes = layout_blob(layout, top["digest"].as_str().expect("digest"));
    let top_json: serde_json::Value = serde_json::from_slice(&top_bytes).expect("manifest is JSON");
    for entry in top_json["manifests"].as_array().into_iter().flatten() {
        let digest = entry["digest"].as_str().expect("digest");
        let hex = &digest["sha256:".len()..];
        fs::write(
            out.join(format!("{hex}.manifest.json")),
            layout_blob(layout, digest),
        )
        .expect("write manifest");
    }
    fs::write(out.join("manifest.json"), top_bytes).expect("write manifest.json");
    for blob in fs::read_dir(layout.join("blobs/sha256")).expect("read blobs") {
        let blob = blob.expect("read blobs").path();
        fs::copy(&blob, out.join(blob.file_name().unwrap())).expect("copy blob");
    }
}

// ---------------------------------------------------------------------------
// skopeo, umoci, chroot, runc

fn docker_ref(reference: &str) -> String {
    if reference.starts_with("docker://") {
        reference.to_string()
    } else {
        format!("docker://{reference}")
    }
}

/// skopeo with the given arguments, success not checked (for tests of failures).
pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("start skopeo")
}

/// `skopeo copy --all SRC DST`, with `target`'s TLS and credential flags on
/// whichever side is a `docker://` reference.
pub fn skopeo_copy(src: &str, dst: &str, target: &impl Endpoint) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet", "--all"]);
    if src.starts_with("docker://") {
        cmd.args(target.skopeo_flags("--src-"));
    }
    if dst.starts_with("docker://") {
        cmd.args(target.skopeo_flags("--dest-"));
    }
    run_checked(cmd.args([src, dst]));
}

/// The exact manifest (or index) bytes the registry serves for `reference`
/// (`HOST/REPO:TAG` or `HOST/REPO@DIGEST`, `docker://` optional).
pub fn skopeo_inspect_raw(reference: &str, target: &impl Endpoint) -> Vec<u8> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"])
        .args(target.skopeo_flags("--"))
        .arg(docker_ref(reference));
    run_checked(&mut cmd).stdout
}

/// The image config blob of `reference`, as stored (for an index: the
/// host platform's image).
pub fn skopeo_inspect_config(reference: &str, target: &impl Endpoint) -> serde_json::Value {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--config", "--raw"])
        .args(target.skopeo_flags("--"))
        .arg(docker_ref(reference));
    serde_json::from_slice(&run_checked(&mut cmd).stdout).expect("config is JSON")
}

/// Copies one image of `reference` into the OCI layout `dir` as `tag`.
/// `platform` ("linux/arm/v7") picks an index entry; None picks the host's.
pub fn copy_to_oci_dir(
    reference: &str,
    target: &impl Endpoint,
    dir: &Path,
    tag: &str,
    platform: Option<&str>,
) {
    // skopeo refuses a destination whose parent directory does not exist.
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).expect("create parent of OCI dir");
    }
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet"]);
    if let Some(platform) = platform {
        let mut parts = platform.split('/');
        let (os, arch) = (parts.next().unwrap(), parts.next().expect("os/arch"));
        cmd.args(["--override-os", os, "--override-arch", arch]);
        if let Some(variant) = parts.next() {
            cmd.args(["--override-variant", variant]);
        }
    }
    cmd.args(target.skopeo_flags("--src-"))
        .arg(docker_ref(reference))
        .arg(format!("oci:{}:{tag}", dir.display()));
    run_checked(&mut cmd);
}

/// `umoci unpack` of `oci_dir:tag` (a single image, not an index) into a
/// new runtime bundle; returns the bundle's rootfs.
pub fn umoci_unpack(oci_dir: &Path, tag: &str, bundle_dir: &Path) -> PathBuf {
    run_checked(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", oci_dir.display()))
            .arg(bundle_dir),
    );
    bundle_dir.join("rootfs")
}

/// Runs `argv` (argv[0] is a path inside the rootfs, e.g. the image's
/// entrypoint) chrooted into `rootfs` with exactly `env`, so absolute paths
/// such as `KO_DATA_PATH=/var/run/ko` resolve inside the image. Needs root
/// and a binary the host can execute (amd64). Success is not checked.
pub fn run_in_rootfs(rootfs: &Path, argv: &[&str], env: &[(&str, &str)]) -> Output {
    // Resolved here: env_clear() also hides PATH from the lookup of chroot.
    let chroot = ["/usr/sbin/chroot", "/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils) not found");
    Command::new(chroot)
        .arg(rootfs)
        .args(argv)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("start chroot")
}

/// Runs an unpacked bundle with `runc run` (no terminal) and returns its
/// output, success not checked. None, with a note, where runc cannot work:
/// it needs root here (rootless runc needs setup this harness does not do).
pub fn runc_run(bundle: &Path) -> Option<Output> {
    if !is_root() {
        eprintln!(
            "note: not root, so runc cannot run {}; skipped",
            bundle.display()
        );
        return None;
    }
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).expect("read config.json"))
            .expect("config.json is JSON");
    config["process"]["terminal"] = false.into();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap())
        .expect("write config.json");
    let state = tempfile::tempdir().expect("tempdir");
    let id = format!("kobuild-test-{}", random_hex(6));
    let output = Command::new("runc")
        .arg("--root")
        .arg(state.path())
        .args(["run", "-b"])
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("start runc");
    Some(output)
}
