//! The registry operations kobuild needs: manifests and blobs, up and down, with retries.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, LOCATION};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;

use super::auth::Keychain;
use super::body;
use super::challenge::Scope;
use super::error::{ErrorKind, RegistryError, root_cause};
use super::reference::{Reference, Repository, check_manifest_ref};
use super::retry::{RetryPolicy, retrying};
use super::transport::{
    BodyStream, DEFAULT_IDLE_TIMEOUT, Endpoint, Payload, Request, Transport, escape,
    resolve_location, status_error,
};
use crate::digest::{Digest, HashingWriter};
use crate::image::oci::MANIFEST_ACCEPT;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const MAX_REDIRECTS: usize = 5;
const STREAMED: &str = "streamed push of a blob";

#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub keychain: Keychain,
    /// `host[:port]` (or a bare host, for every port) reached without certificate
    /// verification, and over plain HTTP when the port does not speak TLS.
    pub insecure_registries: Vec<String>,
    /// PEM files with CA certificates trusted in addition to the system's.
    pub extra_ca_files: Vec<PathBuf>,
    /// Empty: `kobuild/<version>`.
    pub user_agent: String,
    pub retry: RetryPolicy,
    /// A request on which no data moves for this long fails (and is retried); one that
    /// keeps moving never does, however long it takes (`--registry-timeout`). None: 300 s.
    pub idle_timeout: Option<Duration>,
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// A blob upload whose bytes are sent before their digest is known: started by
/// [`Client::start_upload`], fed by [`Client::send_stream`], then committed by digest
/// ([`Client::commit_upload`]) or abandoned ([`Client::cancel_upload`]).
#[derive(Clone)]
pub struct StreamedUpload {
    location: String,
}

/// An OCI distribution client. Cheap to share behind an `Arc`: it caches each registry's
/// scheme, auth challenge and tokens.
pub struct Client {
    t: Transport,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certs = Vec::new();
        for path in &opts.extra_ca_files {
            let pem = std::fs::read(path).map_err(|source| ErrorKind::Io {
                action: "cannot read the CA file",
                path: path.clone(),
                source,
            })?;
            let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ErrorKind::Setup(format!(
                    "{}: not a PEM certificate: {}",
                    path.display(),
                    root_cause(&e)
                ))
            })?;
            if found.is_empty() {
                return Err(ErrorKind::Setup(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                ))
                .into());
            }
            certs.extend(found);
        }
        let user_agent = if opts.user_agent.is_empty() {
            concat!("kobuild/", env!("CARGO_PKG_VERSION"))
        } else {
            &opts.user_agent
        };
        let t = Transport::new(
            opts.keychain,
            opts.insecure_registries,
            certs,
            user_agent,
            opts.retry,
            opts.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        )?;
        Ok(Client { t })
    }

    /// The manifest or index `reference` names, verified against its digest if it has one.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<Fetched, RegistryError> {
        let repo = reference.repository();
        let ep = self.t.endpoint(&repo).await?;
        let scope = Scope::pull(&repo.name);
        let url = ep.url(
            &repo.name,
            &format!("manifests/{}", reference.reference_str()),
        );
        let name = reference.name();
        let action = format!("pull of manifest {}", reference.reference_str());
        let (bytes, content_type, served) = retrying(&self.t.retry, "GET", &name, || async {
            let req = Request::new(Method::GET, url.clone(), &repo.name, &scope, &action)
                .header(ACCEPT, MANIFEST_ACCEPT.join(", "));
            let resp = self.t.send(&ep, &req).await?;
            if resp.status() != StatusCode::OK {
                return Err(status_error(&ep, &req, resp, &name).await);
            }
            let content_type = header(&resp, CONTENT_TYPE).unwrap_or_default();
            let served = header(&resp, DOCKER_CONTENT_DIGEST);
            let limit = body::MANIFEST_LIMIT;
            let bytes = self.read_body(&ep, &repo, &action, resp, limit).await?;
            Ok((bytes, content_type, served))
        })
        .await?;
        let digest = Digest::of(&bytes);
        // By digest, the bytes must hash to it. By tag, to the digest the registry says it
        // serves (Docker-Content-Digest; containerd pulls by that digest, so registries get
        // it right for the manifest types kobuild accepts). Schema 1 manifests are signed
        // and their header digest covers the payload only, so they are not checked here
        // (kobuild refuses them later anyway). Without the header a tag cannot be checked.
        let (expected, what) = match &reference.digest {
            Some(d) => (Some(d.clone()), "manifest"),
            None if !is_schema1(&content_type, &bytes) => (
                served.and_then(|d| Digest::parse(&d).ok()),
                "manifest (against the registry's Docker-Content-Digest)",
            ),
            None => (None, "manifest"),
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(ErrorKind::DigestMismatch {
                registry: repo.registry,
                repository: repo.name,
                what: what.into(),
                expected,
                actual: digest,
            }
            .into());
        }
        #[derive(serde::Deserialize)]
        struct MediaType {
            #[serde(rename = "mediaType", default)]
            media_type: String,
        }
        let media_type = serde_json::from_slice::<MediaType>(&bytes)
            .ok()
            .map(|m| m.media_type)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                content_type
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            });
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Digest, size and media type of the manifest `reference` (a tag or digest) names;
    /// `None` when there is none.
    pub async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<(Digest, u64, String)>, RegistryError> {
        check_manifest_ref(reference)?;
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::pull(&repo.name);
        let url = ep.url(&repo.name, &format!("manifests/{reference}"));
        let as_ref = manifest_reference(repo, reference);
        let name = as_ref.name();
        let action = format!("check of manifest {reference}");
        let found = retrying(&self.t.retry, "HEAD", &name, || async {
            let req = Request::new(Method::HEAD, url.clone(), &repo.name, &scope, &action)
                .header(ACCEPT, MANIFEST_ACCEPT.join(", "));
            let resp = self.t.send(&ep, &req).await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(None),
                _ => return Err(status_error(&ep, &req, resp, &name).await),
            }
            let digest = header(&resp, DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(&d).ok());
            let size = header(&resp, CONTENT_LENGTH).and_then(|s| s.parse::<u64>().ok());
            let media_type = header(&resp, CONTENT_TYPE).unwrap_or_default();
            Ok(Some(digest.zip(size).map(|(d, s)| (d, s, media_type))))
        })
        .await?;
        match found {
            None => Ok(None),
            Some(Some(head)) => Ok(Some(head)),
            // The registry did not say: fetch the manifest and compute it.
            Some(None) => {
                let f = self.get_manifest(&as_ref).await?;
                Ok(Some((f.digest, f.bytes.len() as u64, f.media_type)))
            }
        }
    }

    pub async fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::pull(&repo.name);
        let action = format!("check of blob {digest}");
        retrying(&self.t.retry, "HEAD", &repo.to_string(), || async {
            let resp = self
                .blob_request(&ep, Method::HEAD, repo, digest, &scope, &action)
                .await?;
            match resp.status() {
                StatusCode::OK => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(blob_error(&ep, repo, digest, &scope, &action, resp).await),
            }
        })
        .await
    }

    /// A (small) blob in memory, verified against its digest.
    pub async fn get_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::pull(&repo.name);
        let action = format!("pull of blob {digest}");
        let bytes = retrying(&self.t.retry, "GET", &repo.to_string(), || async {
            let resp = self
                .blob_request(&ep, Method::GET, repo, digest, &scope, &action)
                .await?;
            if resp.status() != StatusCode::OK {
                return Err(blob_error(&ep, repo, digest, &scope, &action, resp).await);
            }
            // Configs: as large as a manifest may be.
            self.read_body(&ep, repo, &action, resp, body::MANIFEST_LIMIT)
                .await
        })
        .await?;
        check_digest(repo, "blob", digest, Digest::of(&bytes))?;
        Ok(bytes)
    }

    /// Streams a blob into `dest` through a temporary file in the same directory, renamed
    /// into place once verified, so `dest` is complete or absent.
    pub async fn download_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        dest: &Path,
    ) -> Result<(), RegistryError> {
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::pull(&repo.name);
        let action = format!("pull of blob {digest}");
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ErrorKind::Io {
                action,
                path,
                source,
            }
        };
        retrying(&self.t.retry, "GET", &repo.to_string(), || async {
            let resp = self
                .blob_request(&ep, Method::GET, repo, digest, &scope, &action)
                .await?;
            if resp.status() != StatusCode::OK {
                return Err(blob_error(&ep, repo, digest, &scope, &action, resp).await);
            }
            let tmp =
                crate::fsutil::temp_file_in(dir).map_err(io("cannot create a file in", dir))?;
            let std_file = tmp
                .as_file()
                .try_clone()
                .map_err(io("cannot write", tmp.path()))?;
            let mut file = tokio::fs::File::from_std(std_file);
            let mut hasher = HashingWriter::new(std::io::sink());
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.body_error(&ep, repo, &action, &e))?;
                hasher
                    .write_all(&chunk)
                    .map_err(io("cannot write", tmp.path()))?;
                file.write_all(&chunk)
                    .await
                    .map_err(io("cannot write", tmp.path()))?;
            }
            file.flush().await.map_err(io("cannot write", tmp.path()))?;
            drop(file);
            let (_, actual, _) = hasher.finish();
            check_digest(repo, "blob", digest, actual)?;
            tmp.persist(dest).map_err(|e| ErrorKind::Io {
                action: "cannot write",
                path: dest.into(),
                source: e.error,
            })?;
            Ok(())
        })
        .await
    }

    /// Asks the registry to link a blob of `from` into `target` without uploading it.
    /// `false` when it declines (a different registry, or 202: it started an upload
    /// instead, which is cancelled here).
    pub async fn mount_blob(
        &self,
        target: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<bool, RegistryError> {
        if target.registry != from.registry {
            return Ok(false);
        }
        let ep = self.t.endpoint(target).await?;
        let scope = Scope::mount(&target.name, &from.name);
        let url = ep.url(
            &target.name,
            &format!(
                "blobs/uploads/?mount={}&from={}",
                escape(digest.as_str()),
                escape(&from.name)
            ),
        );
        let action = format!("mount of blob {digest} from {}", from.name);
        retrying(&self.t.retry, "POST", &target.to_string(), || async {
            let req = Request::new(Method::POST, url.clone(), &target.name, &scope, &action)
                .body(Payload::Bytes(&[]));
            let resp = self.t.send(&ep, &req).await?;
            match resp.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    if let Some(location) =
                        header(&resp, LOCATION).and_then(|l| resolve_location(&url, &l))
                    {
                        let cancel =
                            Request::new(Method::DELETE, location, &target.name, &scope, &action);
                        // Only tidiness: the registry expires abandoned uploads anyway.
                        if let Err(e) = self.t.send(&ep, &cancel).await {
                            tracing::debug!("cancelling the upload the mount started failed: {e}");
                        }
                    }
                    Ok(false)
                }
                _ => Err(status_error(&ep, &req, resp, &target.to_string()).await),
            }
        })
        .await
    }

    /// Uploads the file at `path` (exactly `size` bytes, hashing to `digest`) as a blob:
    /// POST to start, then one streamed PUT. A retry starts over with a new upload. The file
    /// is hashed as it is sent: one that does not hold the blob fails with
    /// [`ErrorKind::BadLocalBlob`] before the registry has all of it.
    pub async fn upload_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<(), RegistryError> {
        let bad = |why: String| ErrorKind::BadLocalBlob {
            path: path.into(),
            digest: digest.clone(),
            why,
        };
        let actual = match tokio::fs::metadata(path).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad("it is gone".into()).into());
            }
            Err(source) => {
                return Err(ErrorKind::Io {
                    action: "cannot read",
                    path: path.into(),
                    source,
                }
                .into());
            }
        };
        if actual != size {
            return Err(bad(format!("it has {actual} bytes, not {size}")).into());
        }
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::push(&repo.name);
        let action = format!("push of blob {digest}");
        retrying(&self.t.retry, "upload", &repo.to_string(), || async {
            let location = self.open_upload(&ep, repo, &scope, &action).await?;
            let put = Request::new(
                Method::PUT,
                with_digest(&location, digest),
                &repo.name,
                &scope,
                &action,
            )
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Payload::File { path, size, digest });
            let resp = self.t.send(&ep, &put).await?;
            if !resp.status().is_success() {
                return Err(status_error(&ep, &put, resp, &repo.to_string()).await);
            }
            Ok(())
        })
        .await
    }

    /// Starts a blob upload whose digest is not known yet (POST). Streamed uploads are
    /// not retried: a stream cannot be replayed, so callers fall back to
    /// [`Client::upload_blob`] from the finished file.
    pub async fn start_upload(&self, repo: &Repository) -> Result<StreamedUpload, RegistryError> {
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::push(&repo.name);
        let location = self.open_upload(&ep, repo, &scope, STREAMED).await?;
        Ok(StreamedUpload { location })
    }

    /// POSTs a new upload session; returns where its bytes go.
    async fn open_upload(
        &self,
        ep: &Endpoint,
        repo: &Repository,
        scope: &Scope,
        action: &str,
    ) -> Result<String, RegistryError> {
        let url = ep.url(&repo.name, "blobs/uploads/");
        let start = Request::new(Method::POST, url.clone(), &repo.name, scope, action)
            .body(Payload::Bytes(&[]));
        let resp = self.t.send(ep, &start).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(ep, &start, resp, &repo.to_string()).await);
        }
        upload_location(repo, &url, &resp)
    }

    /// Sends `body` into a started upload as it is produced (one PATCH, no length).
    pub async fn send_stream(
        &self,
        repo: &Repository,
        upload: StreamedUpload,
        body: BodyStream,
    ) -> Result<StreamedUpload, RegistryError> {
        let body = std::sync::Mutex::new(Some(body));
        let location = upload.location;
        let payload = Some(Payload::Stream(&body));
        let resp = self
            .upload_step(repo, Method::PATCH, location.clone(), STREAMED, payload)
            .await?;
        // The next step goes where the registry says; some keep the same URL.
        let location = upload_location(repo, &location, &resp).unwrap_or(location);
        Ok(StreamedUpload { location })
    }

    /// Abandons a started upload (DELETE); the registry would expire it anyway.
    pub async fn cancel_upload(
        &self,
        repo: &Repository,
        upload: &StreamedUpload,
    ) -> Result<(), RegistryError> {
        let url = upload.location.clone();
        self.upload_step(repo, Method::DELETE, url, STREAMED, None)
            .await
            .map(drop)
    }

    /// Completes a streamed upload under the digest of everything sent.
    pub async fn commit_upload(
        &self,
        repo: &Repository,
        upload: &StreamedUpload,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let url = with_digest(&upload.location, digest);
        let action = format!("push of blob {digest}");
        let payload = Some(Payload::Bytes(&[]));
        self.upload_step(repo, Method::PUT, url, &action, payload)
            .await
            .map(drop)
    }

    /// One request of a streamed upload, sent once; anything but a success is an error.
    async fn upload_step(
        &self,
        repo: &Repository,
        method: Method,
        url: String,
        action: &str,
        body: Option<Payload<'_>>,
    ) -> Result<Response, RegistryError> {
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::push(&repo.name);
        let mut req = Request::new(method, url, &repo.name, &scope, action);
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body);
        }
        let resp = self.t.send(&ep, &req).await?;
        if !resp.status().is_success() {
            return Err(status_error(&ep, &req, resp, &repo.to_string()).await);
        }
        Ok(resp)
    }

    /// PUTs exactly `bytes` as a manifest under `reference` (a tag or digest) and returns
    /// their digest.
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        check_manifest_ref(reference)?;
        let digest = Digest::of(bytes);
        if let Ok(named) = Digest::parse(reference) {
            check_digest(repo, "manifest", &named, digest.clone())?;
        }
        let ep = self.t.endpoint(repo).await?;
        let scope = Scope::push(&repo.name);
        let url = ep.url(&repo.name, &format!("manifests/{reference}"));
        let action = format!("push of manifest {reference}");
        let served = retrying(&self.t.retry, "PUT", &repo.to_string(), || async {
            let req = Request::new(Method::PUT, url.clone(), &repo.name, &scope, &action)
                .header(CONTENT_TYPE, media_type)
                .body(Payload::Bytes(bytes));
            let resp = self.t.send(&ep, &req).await?;
            if !resp.status().is_success() {
                return Err(status_error(&ep, &req, resp, &repo.to_string()).await);
            }
            Ok(header(&resp, DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(&d).ok()))
        })
        .await?;
        if let Some(served) = served {
            check_digest(repo, "pushed manifest", &digest, served)?;
        }
        Ok(digest)
    }

    async fn read_body(
        &self,
        ep: &Endpoint,
        repo: &Repository,
        action: &str,
        resp: Response,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let t = &self.t;
        t.read_body(&ep.registry, &repo.name, action, resp, limit)
            .await
    }

    fn body_error(
        &self,
        ep: &Endpoint,
        repo: &Repository,
        action: &str,
        e: &reqwest::Error,
    ) -> RegistryError {
        self.t.transport_error(&ep.registry, &repo.name, action, e)
    }

    /// A blob GET or HEAD. Redirects (e.g. to object storage) are followed here; the
    /// transport attaches credentials only for the registry's own origin.
    async fn blob_request(
        &self,
        ep: &Endpoint,
        method: Method,
        repo: &Repository,
        digest: &Digest,
        scope: &Scope,
        action: &str,
    ) -> Result<Response, RegistryError> {
        let mut url = ep.url(&repo.name, &format!("blobs/{digest}"));
        for _ in 0..=MAX_REDIRECTS {
            let req = Request::new(method.clone(), url.clone(), &repo.name, scope, action);
            let resp = self.t.send(ep, &req).await?;
            let next = header(&resp, LOCATION).and_then(|l| resolve_location(&url, &l));
            match next {
                Some(next) if resp.status().is_redirection() => url = next,
                _ => return Ok(resp),
            }
        }
        Err(ErrorKind::Protocol {
            registry: repo.registry.clone(),
            repository: repo.name.clone(),
            message: format!("more than {MAX_REDIRECTS} redirects for blob {digest}"),
        }
        .into())
    }
}

async fn blob_error(
    ep: &Endpoint,
    repo: &Repository,
    digest: &Digest,
    scope: &Scope,
    action: &str,
    resp: Response,
) -> RegistryError {
    let req = Request::new(Method::GET, String::new(), &repo.name, scope, action);
    status_error(ep, &req, resp, &format!("blob {repo}@{digest}")).await
}

/// Where an upload continues, from a response's `Location` (relative to `base`).
fn upload_location(
    repo: &Repository,
    base: &str,
    resp: &Response,
) -> Result<String, RegistryError> {
    Ok(header(resp, LOCATION)
        .and_then(|l| resolve_location(base, &l))
        .ok_or_else(|| ErrorKind::Protocol {
            registry: repo.registry.clone(),
            repository: repo.name.clone(),
            message: "the registry started an upload without a usable Location header".into(),
        })?)
}

/// An upload's URL with the digest that completes it.
fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", escape(digest.as_str()))
}

fn header(resp: &Response, name: HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn check_digest(
    repo: &Repository,
    what: &str,
    expected: &Digest,
    actual: Digest,
) -> Result<(), RegistryError> {
    if *expected == actual {
        return Ok(());
    }
    Err(ErrorKind::DigestMismatch {
        registry: repo.registry.clone(),
        repository: repo.name.clone(),
        what: what.into(),
        expected: expected.clone(),
        actual,
    }
    .into())
}

/// A Docker schema 1 manifest (signed; its `Docker-Content-Digest` is not of the bytes).
fn is_schema1(content_type: &str, bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u64>,
    }
    content_type.contains("distribution.manifest.v1")
        || serde_json::from_slice::<Version>(bytes).is_ok_and(|v| v.schema_version == Some(1))
}

/// `repo` plus a tag or digest as a [`Reference`].
fn manifest_reference(repo: &Repository, reference: &str) -> Reference {
    let digest = Digest::parse(reference).ok();
    Reference {
        registry: repo.registry.clone(),
        repository: repo.name.clone(),
        tag: digest.is_none().then(|| reference.to_string()),
        digest,
    }
}
