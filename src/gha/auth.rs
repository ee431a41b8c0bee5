//! Registry credentials an action step adds to what the docker config already holds:
//! the `username`/`password` inputs, and for ghcr.io the workflow's token.

use std::path::Path;

use super::inputs::{ActionInputs, token_fits_ghcr};
use crate::plan::Env;
use crate::registry::{Credential, Keychain, RegistryCredential};

const GHCR: &str = "ghcr.io";

/// Explicit inputs always apply. The workflow's token is only a default for ghcr.io: a login
/// already in the docker config (docker/login-action, perhaps with a broader token) wins.
pub async fn credentials(
    inputs: &ActionInputs,
    env: &Env,
    docker_config_dir: Option<&Path>,
) -> Vec<RegistryCredential> {
    let mut out = Vec::new();
    if let Some(login) = &inputs.login {
        out.push(RegistryCredential {
            registry: login.registry.clone(),
            username: login.username.clone(),
            password: login.password.clone(),
        });
    }
    let Some(token) = &inputs.github_token else {
        return out;
    };
    if !token_fits_ghcr(env) || out.iter().any(|c| host(&c.registry) == GHCR) {
        return out;
    }
    match Keychain::new(docker_config_dir.map(Path::to_path_buf))
        .resolve(GHCR)
        .await
    {
        Ok(Credential::Anonymous) => out.push(RegistryCredential {
            registry: GHCR.into(),
            // ghcr.io ignores the user name with a token; the actor is the convention.
            username: env
                .get("GITHUB_ACTOR")
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "github-actions".into()),
            password: token.clone(),
        }),
        Ok(_) => tracing::debug!("ghcr.io: using the login from the docker config"),
        // The build resolves the same entry and reports the problem where it matters.
        Err(e) => tracing::debug!("ghcr.io: docker config: {e}"),
    }
    out
}

/// `https://ghcr.io/` and `ghcr.io` name the same registry.
fn host(registry: &str) -> &str {
    let r = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    r.split('/').next().unwrap_or(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> ActionInputs {
        ActionInputs::from_env(&Env::from_pairs(pairs), Path::new("/")).unwrap()
    }

    fn run(env: &[(&str, &str)], config_dir: Option<&Path>) -> Vec<RegistryCredential> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(credentials(&inputs(env), &Env::from_pairs(env), config_dir))
    }

    fn cred(registry: &str, username: &str, password: &str) -> RegistryCredential {
        RegistryCredential {
            registry: registry.into(),
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn token_defaults_for_ghcr_only_without_a_docker_login() {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("INPUT_GITHUB-TOKEN", "ghs_token"),
            ("GITHUB_ACTOR", "octocat"),
            ("INPUT_DEFAULT-REPO", "ghcr.io/o/r"),
        ];
        assert_eq!(
            run(&env, Some(dir.path())),
            [cred("ghcr.io", "octocat", "ghs_token")]
        );

        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"ghcr.io":{"auth":"dTpwYXQ="}}}"#,
        )
        .unwrap();
        assert_eq!(run(&env, Some(dir.path())), []);

        let ghes = [env[0], ("GITHUB_SERVER_URL", "https://ghe.example")];
        assert_eq!(run(&ghes, None), []);
    }

    #[test]
    fn explicit_inputs_come_first_and_replace_the_token_for_their_registry() {
        let env = [
            ("INPUT_GITHUB-TOKEN", "ghs_token"),
            ("INPUT_DEFAULT-REPO", "registry.example/team"),
            ("INPUT_USERNAME", "me"),
            ("INPUT_PASSWORD", "pw"),
        ];
        assert_eq!(
            run(&env, None),
            [
                cred("registry.example", "me", "pw"),
                cred("ghcr.io", "github-actions", "ghs_token")
            ]
        );
        let env = [
            ("INPUT_GITHUB-TOKEN", "ghs_token"),
            ("INPUT_REGISTRY", "https://ghcr.io/"),
            ("INPUT_USERNAME", "me"),
            ("INPUT_PASSWORD", "pat"),
        ];
        assert_eq!(run(&env, None), [cred("https://ghcr.io/", "me", "pat")]);
        assert!(!format!("{:?}", run(&env, None)).contains("pat\""));
    }
}
