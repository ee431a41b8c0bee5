//! Running the kobuild binary from tests, each run with its own HOME, cache and docker config.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use super::fixtures_dir;

/// A kobuild invocation with its own HOME, cache and docker config, sharing one Go cache
/// across tests so only the first build compiles the standard library.
pub struct Kobuild {
    home: TempDir,
    pub env: Vec<(String, String)>,
}

impl Kobuild {
    pub fn new() -> Kobuild {
        let home = tempfile::tempdir().unwrap();
        let gocache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache");
        let env = vec![
            ("HOME".into(), home.path().display().to_string()),
            (
                "KOBUILD_CACHE_DIR".into(),
                home.path().join("cache").display().to_string(),
            ),
            (
                "DOCKER_CONFIG".into(),
                home.path().join("docker").display().to_string(),
            ),
            ("GOCACHE".into(), gocache.display().to_string()),
            ("GOTOOLCHAIN".into(), "local".into()),
        ];
        Kobuild { home, env }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(&fixtures_dir().join("apps"), args)
    }

    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().expect("run kobuild")
    }

    /// `kobuild build ARGS` in `cwd` with this run's environment, not yet started.
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        self.subcommand(cwd, "build", args)
    }

    /// `kobuild SUBCOMMAND ARGS` in `cwd` with this run's environment, not yet started.
    pub fn subcommand(&self, cwd: &Path, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kobuild"));
        for k in [
            "KOBUILD_DEFAULT_REPO",
            "SOURCE_DATE_EPOCH",
            "KO_DATA_DATE_EPOCH",
            "CGO_ENABLED",
        ] {
            cmd.env_remove(k);
        }
        cmd.arg(subcommand)
            .args(args)
            .current_dir(cwd)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs and requires success; returns the refs printed on stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<String> {
        self.ok_in(&fixtures_dir().join("apps"), args)
    }

    pub fn ok_in(&self, cwd: &Path, args: &[&str]) -> Vec<String> {
        let out = self.run_in(cwd, args);
        assert!(
            out.status.success(),
            "kobuild {args:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Runs and requires failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        self.fails_in(&fixtures_dir().join("apps"), args, code)
    }

    pub fn fails_in(&self, cwd: &Path, args: &[&str], code: i32) -> String {
        let out = self.run_in(cwd, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "kobuild {args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "stdout must stay empty on failure: {:?}",
            out.stdout
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
        stderr
    }
}

/// `repo:tag@digest` → `repo@digest`: skopeo refuses references with both.
pub fn pinned(reference: &str) -> String {
    let (name, digest) = reference.split_once('@').expect("ref has a digest");
    let slash = name.rfind('/').unwrap_or(0);
    let repo = match name[slash..].find(':') {
        Some(i) => &name[..slash + i],
        None => name,
    };
    format!("{repo}@{digest}")
}

pub fn digest_of(reference: &str) -> &str {
    &reference[reference.rfind('@').expect("ref has a digest") + 1..]
}
