//! How kobuild reaches registries: read once from the command line and the environment,
//! for every command that talks to one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Env, Field, Flag, PlanError, err};
use crate::cli::RegistryArgs;
use crate::registry::{Client, ClientOptions, Keychain, RegistryCredential, RegistryError};

#[derive(Clone, Debug)]
pub struct RegistryAccess {
    pub docker_config_dir: Option<PathBuf>,
    /// Explicit logins (action inputs); they win over the docker config.
    pub credentials: Vec<RegistryCredential>,
    pub insecure_registries: Vec<String>,
    pub registry_ca: Vec<PathBuf>,
    /// `--registry-timeout` or `KOBUILD_REGISTRY_TIMEOUT`: how long a registry request may
    /// go without data moving (None: the client's default).
    pub timeout: Option<Duration>,
}

impl RegistryAccess {
    /// Relative CA files are from `cwd`; each is read and parsed now (see `ca_files`).
    pub fn new(args: &RegistryArgs, env: &Env, cwd: &Path) -> Result<RegistryAccess, PlanError> {
        Ok(RegistryAccess {
            docker_config_dir: env.docker_config_dir(),
            credentials: Vec::new(),
            insecure_registries: args.insecure_registries.clone(),
            registry_ca: super::ca_files(&args.registry_ca, cwd)?,
            timeout: registry_timeout(args.registry_timeout.as_deref(), env)?,
        })
    }

    pub fn client(&self) -> Result<Client, RegistryError> {
        let keychain = self
            .credentials
            .iter()
            .fold(Keychain::new(self.docker_config_dir.clone()), |k, c| {
                k.with_credentials(&c.registry, &c.username, &c.password)
            });
        Client::new(ClientOptions {
            keychain,
            insecure_registries: self.insecure_registries.clone(),
            extra_ca_files: self.registry_ca.clone(),
            user_agent: format!("kobuild/{}", env!("CARGO_PKG_VERSION")),
            retry: Default::default(),
            idle_timeout: self.timeout,
        })
    }
}

/// `--registry-timeout`, else `KOBUILD_REGISTRY_TIMEOUT` (empty: unset): whole seconds, 1 to
/// 86400.
fn registry_timeout(flag: Option<&str>, env: &Env) -> Result<Option<Duration>, PlanError> {
    let (field, value) = match (flag, env.get("KOBUILD_REGISTRY_TIMEOUT")) {
        (Some(v), _) => (Field::from(Flag::RegistryTimeout), v.to_string()),
        (None, Some(v)) if !v.is_empty() => ("KOBUILD_REGISTRY_TIMEOUT".into(), v),
        _ => return Ok(None),
    };
    match value.trim().parse::<u64>() {
        Ok(secs @ 1..=86_400) => Ok(Some(Duration::from_secs(secs))),
        _ => Err(err(
            field,
            format!(
                "{value:?} is not a whole number of seconds from 1 to 86400 (how long a \
                 registry request may go without data moving), e.g. 60"
            ),
        )),
    }
}
