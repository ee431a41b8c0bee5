//! What `go build` gets for an artifact on a platform: its flags and environment, which
//! together with the target are the binary's key.

use crate::gobuild::{BinaryKey, Target};
use crate::platform::{InvalidPlatform, Platform};

use super::{ArtifactPlan, Plan};

impl Plan {
    /// The artifact's flags, plus what `--debug` (Skaffold's debug flags; `-trimpath` is
    /// dropped in the build) and `--cover` add. They are part of the binary's key and path.
    pub fn go_flags(&self, a: &ArtifactPlan) -> Vec<String> {
        let mut flags = a.flags.clone();
        if self.debug {
            flags.extend(["-gcflags".to_string(), "all=-N -l".to_string()]);
        }
        if self.cover {
            flags.push("-cover".to_string());
        }
        flags
    }

    /// The environment over the inherited one, in order (later entries win): the plan's,
    /// the platform's, then the artifact's own.
    pub fn go_env(
        &self,
        a: &ArtifactPlan,
        platform: &Platform,
    ) -> Result<Vec<(String, String)>, InvalidPlatform> {
        let mut env = Vec::new();
        if let Some(dir) = &self.gocache {
            env.push(("GOCACHE".to_string(), dir.display().to_string()));
        }
        if self.cgo_disabled_by_default {
            env.push(("CGO_ENABLED".to_string(), "0".to_string()));
        }
        env.extend(platform.go_env()?);
        env.extend(a.go_env.iter().cloned());
        Ok(env)
    }

    pub fn binary_key(
        &self,
        a: &ArtifactPlan,
        target: &Target,
        platform: &Platform,
    ) -> Result<BinaryKey, InvalidPlatform> {
        Ok(BinaryKey {
            target: target.clone(),
            env: self.go_env(a, platform)?,
            flags: self.go_flags(a),
            ldflags: a.ldflags.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::cli::BuildArgs;
    use crate::plan::Env;

    use super::*;

    fn plan(set: impl FnOnce(&mut BuildArgs), env: &[(&str, &str)]) -> Plan {
        let mut args = BuildArgs::default();
        set(&mut args);
        let env = [env, &[("HOME", "/home/u")]].concat();
        Plan::new(&args, &Env::from_pairs(&env), PathBuf::from("/work")).unwrap()
    }

    #[test]
    fn env_is_plan_then_platform_then_artifact() {
        let p = plan(|a| a.opts.env = vec!["GOARCH=arm64".into()], &[]);
        let arm = Platform::parse("linux/arm/v7").unwrap();
        let env = p.go_env(&p.artifacts[0], &arm).unwrap();
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["CGO_ENABLED", "GOOS", "GOARCH", "GOARM", "GOARCH"]);
        // The artifact's own setting comes last, so it wins in `go build`.
        assert_eq!(env.last().unwrap().1, "arm64");
    }

    #[test]
    fn cgo_is_left_alone_when_the_environment_sets_it() {
        let p = plan(|_| {}, &[("CGO_ENABLED", "1")]);
        let env = p.go_env(&p.artifacts[0], &Platform::linux_amd64()).unwrap();
        assert!(env.iter().all(|(k, _)| k != "CGO_ENABLED"));
    }

    #[test]
    fn debug_and_cover_add_flags_to_the_key() {
        let t = Target::parse(std::path::Path::new("/work"), ".").unwrap();
        let amd64 = Platform::linux_amd64();
        let plain = plan(|_| {}, &[]);
        let debug = plan(|a| (a.opts.debug, a.opts.cover) = (true, true), &[]);
        let plain_key = plain.binary_key(&plain.artifacts[0], &t, &amd64).unwrap();
        let debug_key = debug.binary_key(&debug.artifacts[0], &t, &amd64).unwrap();
        assert_eq!(debug_key.flags, ["-gcflags", "all=-N -l", "-cover"]);
        assert_ne!(
            plain_key.output_path(&plain.cache_dir),
            debug_key.output_path(&debug.cache_dir)
        );
    }
}
