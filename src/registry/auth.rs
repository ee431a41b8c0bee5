//! Credentials for a registry: explicit ones first, then the docker config directory
//! (`credHelpers`, `auths`, `credsStore`), as `docker login` and its helpers leave them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::reference::DOCKER_HUB;

/// What Docker calls Docker Hub's server address in configs and helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// A helper waiting for a GUI prompt must not hang a CI job.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
}

impl Credential {
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credential::Anonymous)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid docker config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        helper: String,
        registry: String,
        reason: String,
    },
}

/// Credentials for one registry, meant for [`Keychain::with_credentials`] (they win over the
/// docker config): `username`/`password` action inputs, or a CI token.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where credentials come from. Reads nothing from the environment: the caller passes the
/// docker config directory (`$DOCKER_CONFIG` or `~/.docker`).
#[derive(Clone, Default)]
pub struct Keychain {
    config_dir: Option<PathBuf>,
    helper_dir: Option<PathBuf>,
    /// (normalised registry, username, password)
    explicit: Vec<(String, String, String)>,
}

impl fmt::Debug for Keychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registries: Vec<&str> = self.explicit.iter().map(|(r, _, _)| r.as_str()).collect();
        f.debug_struct("Keychain")
            .field("config_dir", &self.config_dir)
            .field("helper_dir", &self.helper_dir)
            .field("explicit_credentials_for", &registries)
            .finish()
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: Option<BTreeMap<String, String>>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl Keychain {
    /// Credentials from `config_dir/config.json` (none when `None` or when the file is absent).
    pub fn new(config_dir: Option<PathBuf>) -> Self {
        Keychain {
            config_dir,
            ..Default::default()
        }
    }

    /// Credentials for `registry` that win over the docker config.
    pub fn with_credentials(
        mut self,
        registry: &str,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.explicit
            .push((normalize_key(registry), username.into(), password.into()));
        self
    }

    /// Run credential helpers as `dir/docker-credential-<name>` instead of from PATH.
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.helper_dir = Some(dir.into());
        self
    }

    pub async fn resolve(&self, registry: &str) -> Result<Credential, AuthError> {
        let key = normalize_key(registry);
        if let Some((_, username, password)) =
            self.explicit.iter().rev().find(|(r, _, _)| *r == key)
        {
            return Ok(Credential::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        let Some(dir) = &self.config_dir else {
            return Ok(Credential::Anonymous);
        };
        let path = dir.join("config.json");
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credential::Anonymous),
            Err(source) => return Err(AuthError::Read { path, source }),
        };
        let config: ConfigFile = serde_json::from_str(&text).map_err(|e| AuthError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let server = if key == DOCKER_HUB {
            DOCKER_HUB_SERVER
        } else {
            registry
        };

        if let Some(helper) = config
            .cred_helpers
            .as_ref()
            .and_then(|h| lookup(h, registry, &key))
        {
            return self.run_helper(helper, server).await;
        }
        if let Some((name, entry)) = config
            .auths
            .as_ref()
            .and_then(|a| lookup_entry(a, registry, &key))
            && let Some(credential) = entry.credential().map_err(|reason| AuthError::Config {
                path: path.clone(),
                reason: format!("auths[{name:?}]: {reason}"),
            })?
        {
            return Ok(credential);
        }
        match config.creds_store.as_deref() {
            Some(store) if !store.is_empty() => self.run_helper(store, server).await,
            _ => Ok(Credential::Anonymous),
        }
    }

    /// Runs `docker-credential-<helper> get` with the server address on stdin.
    async fn run_helper(&self, helper: &str, server: &str) -> Result<Credential, AuthError> {
        let fail = |reason: String| AuthError::Helper {
            helper: helper.into(),
            registry: server.into(),
            reason,
        };
        if helper.is_empty() || helper.contains(['/', '\\']) {
            return Err(fail("invalid helper name".into()));
        }
        let program = format!("docker-credential-{helper}");
        let program = match &self.helper_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut child = tokio::process::Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => fail(format!(
                    "{} not found: is it installed and on PATH?",
                    program.display()
                )),
                _ => fail(format!("cannot run {}: {e}", program.display())),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is judged by its exit status below.
            let _ = stdin.write_all(server.as_bytes()).await;
        }
        let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| fail(format!("no answer within {} s", HELPER_TIMEOUT.as_secs())))?
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let text = format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if text.contains("credentials not found") {
                return Ok(Credential::Anonymous);
            }
            let first_line = text
                .trim()
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>();
            return Err(fail(format!("{}: {first_line}", out.status)));
        }
        // The output holds the secret: never quote it in an error.
        let parsed: HelperOutput = serde_json::from_slice(&out.stdout)
            .map_err(|_| fail("its output is not JSON with Username and Secret".into()))?;
        Ok(match (parsed.username.as_str(), parsed.secret) {
            (_, secret) if secret.is_empty() => Credential::Anonymous,
            ("<token>", secret) => Credential::IdentityToken(secret),
            (username, password) => Credential::Basic {
                username: username.into(),
                password,
            },
        })
    }
}

impl AuthEntry {
    fn credential(&self) -> Result<Option<Credential>, String> {
        let set = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(token) = set(&self.identitytoken) {
            return Ok(Some(Credential::IdentityToken(token)));
        }
        if let Some(auth) = set(&self.auth) {
            let bad = || "\"auth\" is not base64 of username:password".to_string();
            let decoded = STANDARD.decode(auth.trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::Basic {
                username: username.into(),
                password: password.into(),
            }));
        }
        Ok(match (set(&self.username), set(&self.password)) {
            (Some(username), Some(password)) => Some(Credential::Basic { username, password }),
            _ => None,
        })
    }
}

/// The exact key first, then any key that normalises to the same registry.
fn lookup<'a>(map: &'a BTreeMap<String, String>, registry: &str, key: &str) -> Option<&'a str> {
    map.get(registry)
        .or_else(|| {
            map.iter()
                .find(|(k, _)| normalize_key(k) == key)
                .map(|(_, v)| v)
        })
        .map(String::as_str)
}

fn lookup_entry<'a>(
    map: &'a BTreeMap<String, AuthEntry>,
    registry: &str,
    key: &str,
) -> Option<(&'a str, &'a AuthEntry)> {
    map.get_key_value(registry)
        .or_else(|| map.iter().find(|(k, _)| normalize_key(k) == key))
        .map(|(k, v)| (k.as_str(), v))
}

/// `https://host/v1/`, `http://host` and `host` name the same registry; Docker Hub has
/// several names.
fn normalize_key(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn config_dir(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        dir
    }

    const HELPER: &str = r#"#!/bin/sh
read -r server
case "$server" in
  reg.example.com) echo '{"ServerURL":"reg.example.com","Username":"hu","Secret":"hs"}' ;;
  tok.example.com) echo '{"Username":"<token>","Secret":"idtok"}' ;;
  https://index.docker.io/v1/) echo '{"Username":"hub","Secret":"hubpass"}' ;;
  garbage.example.com) echo 'not json, secret inside' ;;
  broken.example.com) echo 'keychain locked' >&2; exit 3 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
"#;

    fn helper_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker-credential-fake");
        std::fs::write(&path, HELPER).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[tokio::test]
    async fn auths_entries_with_normalised_keys() {
        let b64 = |s: &str| STANDARD.encode(s);
        let dir = config_dir(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "http://plain.example.com": {{"username": "pu", "password": "pp"}},
                "https://acr.example.io/v1/": {{"identitytoken": "refresh"}},
                "127.0.0.1:5000": {{"auth": "{}"}},
                "empty.example.com": {{}}
            }}}}"#,
            b64("hubuser:hub:pass"),
            b64("local:pw"),
        ));
        let kc = Keychain::new(Some(dir.path().into()));
        let cases = [
            ("index.docker.io", basic("hubuser", "hub:pass")),
            ("docker.io", basic("hubuser", "hub:pass")),
            ("registry-1.docker.io", basic("hubuser", "hub:pass")),
            ("plain.example.com", basic("pu", "pp")),
            (
                "acr.example.io",
                Credential::IdentityToken("refresh".into()),
            ),
            ("127.0.0.1:5000", basic("local", "pw")),
            ("127.0.0.1:5001", Credential::Anonymous),
            ("empty.example.com", Credential::Anonymous),
            ("other.example.com", Credential::Anonymous),
        ];
        for (registry, want) in cases {
            assert_eq!(kc.resolve(registry).await.unwrap(), want, "{registry}");
        }
    }

    #[tokio::test]
    async fn explicit_credentials_win() {
        let dir = config_dir(r#"{"auths": {"ghcr.io": {"username": "cfg", "password": "cfg"}}}"#);
        let kc =
            Keychain::new(Some(dir.path().into())).with_credentials("https://ghcr.io", "me", "tok");
        assert_eq!(kc.resolve("ghcr.io").await.unwrap(), basic("me", "tok"));
        let kc = Keychain::default().with_credentials("docker.io", "me", "pw");
        assert_eq!(
            kc.resolve("index.docker.io").await.unwrap(),
            basic("me", "pw")
        );
        assert_eq!(kc.resolve("ghcr.io").await.unwrap(), Credential::Anonymous);
    }

    #[tokio::test]
    async fn missing_config_is_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let kc = Keychain::new(Some(dir.path().join("nope")));
        assert_eq!(kc.resolve("ghcr.io").await.unwrap(), Credential::Anonymous);
        assert_eq!(
            Keychain::new(None).resolve("ghcr.io").await.unwrap(),
            Credential::Anonymous
        );
    }

    #[tokio::test]
    async fn malformed_config_names_the_file() {
        let cases = [
            ("{not json", "is not a valid docker config"),
            (
                r#"{"auths": {"ghcr.io": {"auth": "%%%"}}}"#,
                "auths[\"ghcr.io\"]: \"auth\" is not base64",
            ),
            (
                r#"{"auths": {"ghcr.io": {"auth": "bm9jb2xvbg=="}}}"#,
                "not base64 of username:password",
            ),
        ];
        for (json, want) in cases {
            let dir = config_dir(json);
            let e = Keychain::new(Some(dir.path().into()))
                .resolve("ghcr.io")
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&dir.path().join("config.json").display().to_string()),
                "{e}"
            );
            assert!(e.contains(want), "{e}");
        }
    }

    #[tokio::test]
    async fn credential_helpers() {
        let helpers = helper_dir();
        let dir = config_dir(
            r#"{"auths": {"reg.example.com": {"username": "cfg", "password": "cfg"}},
                "credHelpers": {"reg.example.com": "fake", "tok.example.com": "fake",
                                "broken.example.com": "fake", "garbage.example.com": "fake",
                                "gone.example.com": "missing", "evil.example.com": "../x"},
                "credsStore": "fake"}"#,
        );
        let kc = Keychain::new(Some(dir.path().into())).with_helper_dir(helpers.path());
        // credHelpers wins over auths; credsStore serves the rest.
        assert_eq!(
            kc.resolve("reg.example.com").await.unwrap(),
            basic("hu", "hs")
        );
        assert_eq!(
            kc.resolve("tok.example.com").await.unwrap(),
            Credential::IdentityToken("idtok".into())
        );
        assert_eq!(
            kc.resolve("docker.io").await.unwrap(),
            basic("hub", "hubpass")
        );
        assert_eq!(
            kc.resolve("unknown.example.com").await.unwrap(),
            Credential::Anonymous
        );

        let errors = [
            (
                "broken.example.com",
                "docker-credential-fake failed for broken.example.com: exit status: 3: keychain locked",
            ),
            (
                "garbage.example.com",
                "docker-credential-fake failed for garbage.example.com: its output is not JSON",
            ),
            (
                "gone.example.com",
                "docker-credential-missing failed for gone.example.com",
            ),
            ("evil.example.com", "invalid helper name"),
        ];
        for (registry, want) in errors {
            let e = kc.resolve(registry).await.unwrap_err().to_string();
            assert!(e.contains(want), "{registry}: {e}");
            assert!(!e.contains("secret inside"), "{e}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!(
            "{:?} {:?} {:?}",
            basic("user", "hunter2"),
            Credential::IdentityToken("tok-secret".into()),
            Keychain::default().with_credentials("ghcr.io", "user", "hunter2"),
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-secret"),
            "{shown}"
        );
        assert!(
            shown.contains("***") && shown.contains("ghcr.io"),
            "{shown}"
        );
    }
}
