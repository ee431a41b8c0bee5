//! The registry client against real `docker-registry` servers (plain, htpasswd, TLS), and
//! behind a small in-test HTTP proxy that injects failures or plays a token server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Endpoint as _, Registry, RegistryKind};
use base64::Engine as _;
use kobuild::digest::Digest;
use kobuild::image::oci::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use kobuild::registry::{
    Client, ClientOptions, ErrorKind, Keychain, Reference, RegistryError, Repository, RetryPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ATTEMPTS: u32 = 4;

fn options(keychain: Keychain) -> ClientOptions {
    ClientOptions {
        keychain,
        retry: RetryPolicy {
            attempts: ATTEMPTS,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        ..Default::default()
    }
}

fn new_client(keychain: Keychain) -> Client {
    Client::new(options(keychain)).expect("client")
}

fn authed(registry: &Registry) -> Keychain {
    Keychain::default().with_credentials(&registry.host(), registry.username(), registry.password())
}

fn repo(host: &str, name: &str) -> Repository {
    Repository::parse(&format!("{host}/{name}")).expect("repository")
}

/// A blob written to a file, as the pipeline hands them over.
struct Blob {
    bytes: Vec<u8>,
    digest: Digest,
    path: PathBuf,
}

impl Blob {
    fn new(dir: &Path, bytes: Vec<u8>) -> Blob {
        let digest = Digest::of(&bytes);
        let path = dir.join(digest.hex());
        std::fs::write(&path, &bytes).unwrap();
        Blob {
            bytes,
            digest,
            path,
        }
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    async fn upload(&self, client: &Client, repo: &Repository) -> Result<(), RegistryError> {
        client
            .upload_blob(repo, &self.digest, self.size(), &self.path)
            .await
    }
}

/// A config blob, a layer blob (large enough to take several reads) and their manifest.
struct Image {
    _dir: tempfile::TempDir,
    config: Blob,
    layer: Blob,
    manifest: Vec<u8>,
    digest: Digest,
}

fn image(seed: &str) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let config = Blob::new(
        dir.path(),
        format!(r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["SEED={seed}"]}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#)
            .into_bytes(),
    );
    let layer_bytes: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .chain(seed.bytes())
        .collect();
    let layer = Blob::new(dir.path(), layer_bytes);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config.size(), "digest": config.digest},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "size": layer.size(), "digest": layer.digest}],
    }))
    .unwrap();
    let digest = Digest::of(&manifest);
    Image {
        _dir: dir,
        config,
        layer,
        manifest,
        digest,
    }
}

async fn push(client: &Client, repo: &Repository, img: &Image, tag: &str) {
    img.config
        .upload(client, repo)
        .await
        .expect("upload config");
    img.layer.upload(client, repo).await.expect("upload layer");
    let pushed = client
        .put_manifest(repo, img.digest.as_str(), OCI_MANIFEST, &img.manifest)
        .await
        .expect("put by digest");
    assert_eq!(pushed, img.digest);
    let tagged = client
        .put_manifest(repo, tag, OCI_MANIFEST, &img.manifest)
        .await
        .expect("put by tag");
    assert_eq!(tagged, img.digest);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<RegistryError>();
}

#[tokio::test]
async fn push_and_pull_on_a_plain_registry() {
    let registry = Registry::start(RegistryKind::Plain);
    let client = Arc::new(new_client(Keychain::default()));
    let repo = repo(&registry.host(), "kobuild/app");
    let img = image("plain");

    assert!(!client.blob_exists(&repo, &img.layer.digest).await.unwrap());
    // Uploads run in spawned tasks, as a pipeline runs them in parallel.
    let uploads = [&img.config, &img.layer].map(|blob| {
        let (client, repo) = (client.clone(), repo.clone());
        let (digest, size, path) = (blob.digest.clone(), blob.size(), blob.path.clone());
        tokio::spawn(async move { client.upload_blob(&repo, &digest, size, &path).await })
    });
    for upload in uploads {
        upload.await.unwrap().expect("upload");
    }
    assert!(client.blob_exists(&repo, &img.layer.digest).await.unwrap());
    assert!(client.blob_exists(&repo, &img.config.digest).await.unwrap());
    assert!(registry.blob_digests().contains(img.layer.digest.as_str()));

    let pushed = client
        .put_manifest(&repo, img.digest.as_str(), OCI_MANIFEST, &img.manifest)
        .await
        .unwrap();
    assert_eq!(pushed, img.digest);
    client
        .put_manifest(&repo, "v1", OCI_MANIFEST, &img.manifest)
        .await
        .unwrap();

    for reference in [format!("{repo}:v1"), format!("{repo}@{}", img.digest)] {
        let fetched = client
            .get_manifest(&Reference::parse(&reference).unwrap())
            .await
            .unwrap();
        assert_eq!(fetched.bytes, img.manifest, "{reference}");
        assert_eq!(fetched.digest, img.digest, "{reference}");
        assert_eq!(fetched.media_type, OCI_MANIFEST, "{reference}");
    }

    let head = client.head_manifest(&repo, "v1").await.unwrap();
    assert_eq!(
        head,
        Some((
            img.digest.clone(),
            img.manifest.len() as u64,
            OCI_MANIFEST.to_string()
        ))
    );
    assert_eq!(
        client
            .head_manifest(&repo, img.digest.as_str())
            .await
            .unwrap()
            .map(|h| h.0),
        Some(img.digest.clone())
    );
    assert_eq!(client.head_manifest(&repo, "nope").await.unwrap(), None);

    assert_eq!(
        client.get_blob(&repo, &img.config.digest).await.unwrap(),
        img.config.bytes
    );
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("layer");
    client
        .download_blob(&repo, &img.layer.digest, &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), img.layer.bytes);
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );

    let missing = Digest::of(b"never pushed");
    let e = client
        .get_manifest(&Reference::parse(&format!("{repo}@{missing}")).unwrap())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.to_string(), format!("{repo}@{missing} not found"));
    let e = client
        .get_manifest(&Reference::parse(&format!("{repo}:nope")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), format!("{repo}:nope not found"));
    let e = client.get_blob(&repo, &missing).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = client
        .download_blob(&repo, &missing, &out.path().join("missing"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), format!("blob {repo}@{missing} not found"));
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        1,
        "nothing written for a missing blob"
    );

    // A manifest whose blobs are missing: the registry's code and what to do.
    let other = image("orphan");
    let e = client
        .put_manifest(&repo, "orphan", OCI_MANIFEST, &other.manifest)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("MANIFEST_BLOB_UNKNOWN") && msg.contains("push the blobs"),
        "{msg}"
    );
    assert!(msg.contains(&repo.to_string()), "{msg}");

    // Wrong size or a digest that does not match the bytes: refused before anything is sent.
    let e = client
        .upload_blob(&repo, &img.layer.digest, 1, &img.layer.path)
        .await
        .unwrap_err();
    let why = format!("it has {} bytes, not 1", img.layer.size());
    assert_eq!(e.bad_local_blob(), Some(why.as_str()), "{e}");
    let e = client
        .put_manifest(&repo, missing.as_str(), OCI_MANIFEST, &img.manifest)
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DigestMismatch { .. }), "{e}");
    // A request that cannot be sent at all fails at once, without retries.
    let e = client
        .put_manifest(&repo, "v2", "bad\ntype", &img.manifest)
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Protocol { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("cannot make the request for push of manifest v2"),
        "{e}"
    );
    // A file that does not hold the blob named (a damaged cache entry): the client sees it
    // as it sends the file, and holds back the end, so the registry never has it.
    let e = client
        .upload_blob(&repo, &missing, img.config.size(), &img.config.path)
        .await
        .unwrap_err();
    let why = e.bad_local_blob().unwrap_or_else(|| panic!("{e}"));
    assert!(why.contains(img.config.digest.as_str()), "{e}");
    assert!(!client.blob_exists(&repo, &missing).await.unwrap());
}

#[tokio::test]
async fn mounts_from_another_repository() {
    let registry = Registry::start(RegistryKind::Auth);
    let client = new_client(authed(&registry));
    let (base, app) = (
        repo(&registry.host(), "base/img"),
        repo(&registry.host(), "team/app"),
    );
    let img = image("mount");
    img.layer.upload(&client, &base).await.unwrap();

    assert!(!client.blob_exists(&app, &img.layer.digest).await.unwrap());
    assert!(
        client
            .mount_blob(&app, &img.layer.digest, &base)
            .await
            .unwrap()
    );
    assert!(client.blob_exists(&app, &img.layer.digest).await.unwrap());

    // A blob the source does not have: the registry starts an upload (202) instead.
    let missing = Digest::of(b"not in base");
    assert!(!client.mount_blob(&app, &missing, &base).await.unwrap());
    // Another registry: nothing to ask.
    let elsewhere = repo("127.0.0.1:1", "base/img");
    assert!(
        !client
            .mount_blob(&app, &img.layer.digest, &elsewhere)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn basic_auth_with_right_wrong_and_no_credentials() {
    let registry = Registry::start(RegistryKind::Auth);
    let host = registry.host();
    let repo = repo(&host, "secure/app");
    let img = image("auth");

    push(&new_client(authed(&registry)), &repo, &img, "v1").await;

    // Credentials from a docker config directory, as `docker login` leaves them.
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        registry.username(),
        registry.password()
    ));
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"http://{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let from_config = new_client(Keychain::new(Some(config.path().into())));
    let fetched = from_config
        .get_manifest(&Reference::parse(&format!("{repo}:v1")).unwrap())
        .await
        .unwrap();
    assert_eq!(fetched.digest, img.digest);

    let wrong = new_client(Keychain::default().with_credentials(
        &host,
        registry.username(),
        "wrong-password",
    ));
    let e = img
        .layer
        .upload(&wrong, &repo)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "authentication to {host} failed for secure/app: check the credentials \
             (docker login {host}, or the action's username and password inputs)"
        )
    );
    assert!(!e.contains("wrong-password"));

    let anonymous = new_client(Keychain::default());
    let e = anonymous
        .blob_exists(&repo, &img.layer.digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{repo} needs credentials: run docker login {host}"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn tls_with_and_without_the_ca() {
    let registry = Registry::start(RegistryKind::Tls);
    let host = registry.host();
    let img = image("tls");

    let trusted = Client::new(ClientOptions {
        extra_ca_files: vec![registry.ca_file()],
        ..options(authed(&registry))
    })
    .unwrap();
    push(&trusted, &repo(&host, "tls/app"), &img, "v1").await;
    // The certificate also names localhost.
    let localhost = format!("localhost:{}", host.rsplit_once(':').unwrap().1);
    let by_name = Client::new(ClientOptions {
        extra_ca_files: vec![registry.ca_file()],
        ..options(Keychain::default().with_credentials(
            &localhost,
            registry.username(),
            registry.password(),
        ))
    })
    .unwrap();
    assert!(
        by_name
            .blob_exists(&repo(&localhost, "tls/app"), &img.layer.digest)
            .await
            .unwrap()
    );

    let untrusted = new_client(authed(&registry));
    let e = untrusted
        .blob_exists(&repo(&host, "tls/app"), &img.layer.digest)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "TLS certificate of {host} is not trusted: pass its CA with --registry-ca FILE (or --insecure-registry {host})"
        )
    );

    let insecure = Client::new(ClientOptions {
        insecure_registries: vec![host.clone()],
        ..options(authed(&registry))
    })
    .unwrap();
    assert!(
        insecure
            .blob_exists(&repo(&host, "tls/app"), &img.layer.digest)
            .await
            .unwrap()
    );

    let e = Client::new(ClientOptions {
        extra_ca_files: vec!["/nonexistent/ca.pem".into()],
        ..options(Keychain::default())
    })
    .err()
    .expect("a missing CA file is an error")
    .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let host = format!("127.0.0.1:{}", free_port());
    let e = new_client(Keychain::default())
        .blob_exists(&repo(&host, "a/b"), &Digest::of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Unreachable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("cannot reach registry {host} (")),
        "{msg}"
    );
    assert!(
        msg.ends_with("): is it running, and is the address right?"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// A one-request-per-connection HTTP proxy whose handler decides, per request, to
// forward it to the registry (possibly to another path) or to answer it itself.

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Action {
    Forward,
    ForwardTo(String),
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A 200 whose body stops halfway through its Content-Length.
    Truncate(Vec<u8>),
}

fn respond(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Action {
    Action::Respond {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

type Handler = dyn Fn(&Head) -> Action + Send + Sync;

struct FaultProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(
        registry: &Registry,
        handler: impl Fn(&Head) -> Action + Send + Sync + 'static,
    ) -> FaultProxy {
        let upstream: SocketAddr = registry.host().parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, upstream, handler.clone()));
            }
        });
        FaultProxy { addr, task }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut conn: TcpStream,
    upstream: SocketAddr,
    handler: Arc<Handler>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_len = loop {
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        // A TLS ClientHello (the client probing for HTTPS) is dropped, so it falls back.
        if n == 0 || !buf[0].is_ascii_uppercase() {
            return Ok(());
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        request_line.next().unwrap_or_default().to_string(),
        request_line.next().unwrap_or_default().to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut head = Head {
        method,
        path,
        headers,
        body: buf[head_len..].to_vec(),
    };
    assert!(
        head.header("transfer-encoding").is_none(),
        "the client sends bodies with a Content-Length"
    );
    let length: usize = head
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while head.body.len() < length {
        let mut chunk = vec![0u8; 65536];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.body.extend_from_slice(&chunk[..n]);
    }
    match handler(&head) {
        action @ (Action::Forward | Action::ForwardTo(_)) => {
            let path = match action {
                Action::ForwardTo(p) => p,
                _ => head.path.clone(),
            };
            let mut up = TcpStream::connect(upstream).await?;
            let mut out = format!("{} {path} HTTP/1.1\r\n", head.method);
            for (k, v) in head
                .headers
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("connection"))
            {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            // One request per connection, so that every request passes the handler.
            out.push_str("Connection: close\r\n\r\n");
            up.write_all(out.as_bytes()).await?;
            up.write_all(&head.body).await?;
            tokio::io::copy(&mut up, &mut conn).await?;
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut out = format!("HTTP/1.1 {status} Injected\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            conn.write_all(out.as_bytes()).await?;
            conn.write_all(&body).await?;
        }
        Action::Truncate(body) => {
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(out.as_bytes()).await?;
            conn.write_all(&body[..body.len() / 2]).await?;
        }
    }
    conn.shutdown().await
}

/// Answers the first `times` requests that `matches` accepts with `action`, counting them.
fn fail_first(
    times: usize,
    matches: impl Fn(&Head) -> bool + Send + Sync,
    action: impl Fn() -> Action + Send + Sync,
) -> (Arc<AtomicUsize>, impl Fn(&Head) -> Option<Action>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let rule = move |h: &Head| {
        (matches(h) && counter.fetch_add(1, Ordering::SeqCst) < times).then(&action)
    };
    (hits, rule)
}

#[tokio::test]
async fn retries_transient_failures() {
    let registry = Registry::start(RegistryKind::Plain);
    let img = image("retry");
    let (blob_puts, blob_put_rule) = fail_first(
        2,
        |h| h.method == "PUT" && h.path.contains("/blobs/uploads/"),
        || {
            respond(
                503,
                &[],
                br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#,
            )
        },
    );
    let (manifest_puts, manifest_rule) = fail_first(
        1,
        |h| h.method == "PUT" && h.path.contains("/manifests/"),
        || respond(429, &[("Retry-After", "0")], b""),
    );
    let layer = img.layer.bytes.clone();
    let (blob_gets, truncate_rule) = fail_first(
        1,
        |h| h.method == "GET" && h.path.contains("/blobs/sha256:"),
        move || Action::Truncate(layer.clone()),
    );
    let (forever, forever_rule) = fail_first(
        usize::MAX,
        |h| h.path.ends_with("/manifests/broken"),
        || respond(502, &[], b"bad gateway"),
    );
    let posts = Arc::new(AtomicUsize::new(0));
    let post_count = posts.clone();
    let proxy = FaultProxy::start(&registry, move |h| {
        if h.method == "POST" {
            post_count.fetch_add(1, Ordering::SeqCst);
        }
        blob_put_rule(h)
            .or_else(|| manifest_rule(h))
            .or_else(|| truncate_rule(h))
            .or_else(|| forever_rule(h))
            .unwrap_or(Action::Forward)
    })
    .await;
    let client = new_client(Keychain::default());
    let repo = repo(&proxy.host(), "flaky/app");

    img.layer
        .upload(&client, &repo)
        .await
        .expect("upload succeeds after two 503s");
    assert_eq!(blob_puts.load(Ordering::SeqCst), 3);
    assert_eq!(
        posts.load(Ordering::SeqCst),
        3,
        "each retry starts a new upload"
    );
    img.config.upload(&client, &repo).await.unwrap();
    client
        .put_manifest(&repo, "v1", OCI_MANIFEST, &img.manifest)
        .await
        .expect("put succeeds after a 429");
    assert_eq!(manifest_puts.load(Ordering::SeqCst), 2);

    let bytes = client
        .get_blob(&repo, &img.layer.digest)
        .await
        .expect("get succeeds after a truncated body");
    assert_eq!(bytes, img.layer.bytes);
    assert_eq!(blob_gets.load(Ordering::SeqCst), 2);

    let e = client
        .get_manifest(&Reference::parse(&format!("{repo}:broken")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        forever.load(Ordering::SeqCst),
        ATTEMPTS as usize,
        "gives up after the configured attempts"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 502: bad gateway") && msg.contains("try again later"),
        "{msg}"
    );
}

#[tokio::test]
async fn detects_content_that_does_not_match_the_digest() {
    let registry = Registry::start(RegistryKind::Plain);
    let (a, b) = (image("a"), image("b"));
    let direct = new_client(Keychain::default());
    let plain_repo = repo(&registry.host(), "swap/app");
    push(&direct, &plain_repo, &a, "a").await;
    push(&direct, &plain_repo, &b, "b").await;
    // The proxy serves b whenever a is asked for.
    let (a_path, b_path) = (
        format!("/v2/swap/app/manifests/{}", a.digest),
        "/v2/swap/app/manifests/b".to_string(),
    );
    let proxy = FaultProxy::start(&registry, move |h| {
        if h.path == a_path {
            Action::ForwardTo(b_path.clone())
        } else {
            Action::Forward
        }
    })
    .await;
    let swapped = Reference::parse(&format!("{}/swap/app@{}", proxy.host(), a.digest)).unwrap();
    let e = direct.get_manifest(&swapped).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::DigestMismatch { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("expected {}, got {}", a.digest, b.digest)),
        "{msg}"
    );
}

#[tokio::test]
async fn refuses_a_manifest_longer_than_the_limit() {
    let registry = Registry::start(RegistryKind::Plain);
    // go-containerregistry's limit, one byte over: refused by its Content-Length.
    let proxy = FaultProxy::start(&registry, |h| {
        if h.path.starts_with("/v2/big/app/manifests/") {
            respond(
                200,
                &[("Content-Type", OCI_MANIFEST)],
                &vec![b' '; (100 << 20) + 1],
            )
        } else {
            Action::Forward
        }
    })
    .await;
    let client = new_client(Keychain::default());
    let big = Reference::parse(&format!("{}/big/app:v1", proxy.host())).unwrap();
    let e = client.get_manifest(&big).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TooLarge { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("longer than 100 MiB, the most kobuild reads into memory"),
        "{msg}"
    );
}

/// What the token server in front of the registry has seen.
#[derive(Default)]
struct TokenLog {
    issued: usize,
    /// Tokens numbered below this are refused (revoked).
    min_valid: usize,
    /// The query (GET) or form body (POST) of every token request.
    requests: Vec<String>,
    /// Whether each redirected blob GET carried an Authorization header.
    redirected_with_auth: Vec<bool>,
}

#[tokio::test]
async fn bearer_tokens_scopes_refresh_and_redirects() {
    let registry = Registry::start(RegistryKind::Plain);
    let log = Arc::new(Mutex::new(TokenLog::default()));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:pass")
    );
    let state = log.clone();
    let proxy = FaultProxy::start(&registry, move |h| {
        let mut s = state.lock().unwrap();
        let host = h.header("host").unwrap_or_default().to_string();
        if let Some(query) = h.path.strip_prefix("/token?") {
            s.requests.push(query.to_string());
            if h.header("authorization") != Some(basic.as_str()) {
                return respond(401, &[], br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
            }
            s.issued += 1;
            return respond(
                200,
                &[],
                format!(r#"{{"token":"tok-{}","expires_in":300}}"#, s.issued).as_bytes(),
            );
        }
        if h.path == "/token" && h.method == "POST" {
            let form = String::from_utf8_lossy(&h.body).into_owned();
            s.requests.push(form.clone());
            if !form.contains("grant_type=refresh_token")
                || !form.contains("refresh_token=idtok-123")
            {
                return respond(401, &[], b"");
            }
            s.issued += 1;
            return respond(
                200,
                &[],
                format!(r#"{{"access_token":"tok-{}"}}"#, s.issued).as_bytes(),
            );
        }
        if let Some(rest) = h.path.strip_prefix("/redirected") {
            s.redirected_with_auth
                .push(h.header("authorization").is_some());
            return Action::ForwardTo(rest.to_string());
        }
        let valid = h
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer tok-"))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= s.min_valid && n <= s.issued);
        if !valid {
            let challenge = format!(r#"Bearer realm="http://{host}/token",service="kobuild-test""#);
            return respond(
                401,
                &[("WWW-Authenticate", &challenge)],
                br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
        if h.method == "GET" && h.path.contains("/blobs/sha256:") {
            // Object storage elsewhere: another origin, which must not see the token.
            let port = host.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
            return respond(
                307,
                &[(
                    "Location",
                    &format!("http://localhost:{port}/redirected{}", h.path),
                )],
                b"",
            );
        }
        Action::Forward
    })
    .await;
    let host = proxy.host();
    let client = new_client(Keychain::default().with_credentials(&host, "user", "pass"));
    let (base, app) = (repo(&host, "base/img"), repo(&host, "team/app"));
    let img = image("bearer");

    img.layer.upload(&client, &base).await.unwrap();
    assert_eq!(
        log.lock().unwrap().requests,
        ["service=kobuild-test&scope=repository%3Abase%2Fimg%3Apull%2Cpush"]
    );

    assert!(
        client
            .mount_blob(&app, &img.layer.digest, &base)
            .await
            .unwrap()
    );
    let mount_request = log.lock().unwrap().requests.last().cloned().unwrap();
    assert_eq!(
        mount_request,
        "service=kobuild-test&scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository%3Abase%2Fimg%3Apull"
    );

    // A cached token that the registry no longer accepts is replaced once.
    assert!(client.blob_exists(&base, &img.layer.digest).await.unwrap());
    let issued = {
        let mut s = log.lock().unwrap();
        s.min_valid = s.issued + 1;
        s.issued
    };
    let bytes = client.get_blob(&base, &img.layer.digest).await.unwrap();
    assert_eq!(bytes, img.layer.bytes);
    {
        let s = log.lock().unwrap();
        assert_eq!(s.issued, issued + 1, "exactly one fresh token");
        assert_eq!(
            s.redirected_with_auth,
            [false],
            "no credentials to another origin"
        );
    }

    // An identity token (`docker login` to ACR and the like) goes through the OAuth2 POST.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"identitytoken":"idtok-123"}}}}}}"#),
    )
    .unwrap();
    let oauth = new_client(Keychain::new(Some(config.path().into())));
    assert!(oauth.blob_exists(&app, &img.layer.digest).await.unwrap());
    let form = log.lock().unwrap().requests.last().cloned().unwrap();
    assert!(
        form.contains("client_id=kobuild") && form.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{form}"
    );

    let wrong = new_client(Keychain::default().with_credentials(&host, "user", "nope"));
    let e = wrong
        .blob_exists(&app, &img.layer.digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("authentication to {host} failed for team/app")),
        "{e}"
    );
    let anonymous = new_client(Keychain::default());
    let e = anonymous
        .blob_exists(&app, &img.layer.digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("{app} needs credentials")), "{e}");
}
