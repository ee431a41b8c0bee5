//! Every workflow in examples/workflows runs end to end under act (host mode), with this
//! repository's action.yml and the test's kobuild, against a harness registry. The workflows
//! change only where they must: registries and the base image point at the harness, and the
//! remote actions (setup-go, the artifact actions, docker/login-action) are small local stand-ins,
//! since act cannot fetch them here.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::action::parse_env_file;
use crate::common::*;
use serde_json::Value;
use tempfile::TempDir;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn act_binary() -> PathBuf {
    std::env::var_os("KOBUILD_ACT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "KOBUILD_ACT is not set: run eval \"$(scripts/peers --env)\" (scripts/test does)"
            )
        })
}

fn write_exec(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// actions/cache/restore: the entry named `key`, else the newest whose name starts with a
/// line of `restore-keys`, from directories under `$KOBUILD_TEST_CACHE/<key>`.
const CACHE_RESTORE_STUB: &str = r#"inputs:
  path: {}
  key: {}
  restore-keys: {}
outputs:
  cache-hit:
    value: ${{ steps.restore.outputs.hit }}
runs:
  using: composite
  steps:
    - id: restore
      shell: bash
      env:
        DEST: ${{ inputs.path }}
        KEY: ${{ inputs.key }}
        PREFIXES: ${{ inputs.restore-keys }}
      run: |
        hit=false src=""
        if [[ -d $KOBUILD_TEST_CACHE/$KEY ]]; then
          hit=true src=$KOBUILD_TEST_CACHE/$KEY
        else
          while read -r p; do
            [[ -n $p ]] || continue
            src=$(ls -dt "$KOBUILD_TEST_CACHE/$p"* 2>/dev/null | head -1 || true)
            [[ -z $src ]] || break
          done <<<"$PREFIXES"
        fi
        if [[ -n $src ]]; then mkdir -p "$DEST" && cp -r "$src/." "$DEST/" && echo "restored $(basename "$src")"; fi
        echo "hit=$hit" >>"$GITHUB_OUTPUT"
"#;

/// actions/cache/save: `path` copied to `$KOBUILD_TEST_CACHE/<key>`, once per key.
const CACHE_SAVE_STUB: &str = r#"inputs:
  path: {}
  key: {}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        SRC: ${{ inputs.path }}
        KEY: ${{ inputs.key }}
      run: |
        if [[ -d $KOBUILD_TEST_CACHE/$KEY ]]; then echo "cache entry $KEY exists"; exit 0; fi
        mkdir -p "$KOBUILD_TEST_CACHE/$KEY" && cp -r "$SRC/." "$KOBUILD_TEST_CACHE/$KEY/" && echo "saved $KEY"
"#;

/// Stand-ins for the remote actions the examples use: composite actions doing the part the
/// workflow relies on. Artifacts are directories under `$KOBUILD_TEST_ARTIFACTS/<name>`.
const STUBS: [(&str, &str); 4] = [
    (
        "actions/setup-go@v5",
        // Go is on the host already; the job uses it as setup-go would leave it.
        "inputs:\n  go-version-file: {}\nruns:\n  using: composite\n  steps:\n    - shell: bash\n      run: go version\n",
    ),
    (
        "docker/login-action@v3",
        // The harness registry takes anonymous pushes.
        "inputs:\n  registry: {}\n  username: {}\n  password: {}\nruns:\n  using: composite\n  steps:\n    - shell: bash\n      run: echo login skipped\n",
    ),
    (
        "actions/upload-artifact@v4",
        r#"inputs:
  name: {}
  path: {}
  retention-days: {}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        NAME: ${{ inputs.name }}
        SRC: ${{ inputs.path }}
      run: mkdir -p "$KOBUILD_TEST_ARTIFACTS/$NAME" && cp "$SRC" "$KOBUILD_TEST_ARTIFACTS/$NAME/"
"#,
    ),
    (
        "actions/download-artifact@v4",
        r#"inputs:
  name: {}
  pattern: {}
  path: {}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        NAME: ${{ inputs.name }}
        PATTERN: ${{ inputs.pattern }}
        DEST: ${{ inputs.path }}
      run: |
        mkdir -p "$DEST"
        if [[ -n $NAME ]]; then cp "$KOBUILD_TEST_ARTIFACTS/$NAME"/* "$DEST/"; fi
        if [[ -n $PATTERN ]]; then
          for d in "$KOBUILD_TEST_ARTIFACTS"/$PATTERN; do cp -r "$d" "$DEST/"; done
        fi
"#,
    ),
];

/// One example workflow run under act, with everything it left behind.
struct ActRun {
    _tmp: TempDir,
    reg: Registry,
    /// The outputs and summary of every `kobuild action` step, in the order they ran.
    steps: Vec<(BTreeMap<String, String>, String)>,
    artifacts: PathBuf,
    /// What the action saved with actions/cache/save, one directory per key.
    actions_cache: PathBuf,
    log: String,
    seconds: f64,
}

impl ActRun {
    /// Runs `examples/workflows/<name>` after `adapt(workflow, base, registry host)` rewrote
    /// it; fails with act's log.
    fn run(name: &str, adapt: impl Fn(String, &str, &str) -> String) -> ActRun {
        let act = act_binary();
        let reg = Registry::start(RegistryKind::Plain);
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let base_layout = make_base(
            &t.join("base"),
            "v1",
            false,
            &["linux/amd64", "linux/arm64"],
        );
        let base = push_base(&reg, &base_layout, "v1", "base/static");
        let host = reg.host();

        // The application repository the workflow runs in.
        let repo = t.join("repo");
        run_checked(
            Command::new("cp")
                .arg("-r")
                .arg(fixtures_dir().join("act"))
                .arg(&repo),
        );
        for file in [".ko.yaml", "skaffold.yaml"] {
            let p = repo.join(file);
            fs::write(
                &p,
                fs::read_to_string(&p).unwrap().replace("REGISTRY", &host),
            )
            .unwrap();
        }
        let workflow =
            fs::read_to_string(repo_root().join("examples/workflows").join(name)).unwrap();
        fs::create_dir_all(repo.join(".github/workflows")).unwrap();
        fs::write(
            repo.join(".github/workflows").join(name),
            adapt(workflow, &base, &host),
        )
        .unwrap();
        let git = |args: &[&str]| {
            run_checked(
                Command::new("git")
                    .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                    .args(args)
                    .current_dir(&repo),
            )
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "app"]);

        // The action as released: action.yml and the install script, under the name the
        // examples use.
        let action = t.join("action");
        fs::create_dir_all(action.join("scripts")).unwrap();
        fs::copy(repo_root().join("action.yml"), action.join("action.yml")).unwrap();
        fs::copy(
            repo_root().join("scripts/action-install"),
            action.join("scripts/action-install"),
        )
        .unwrap();
        let mut args: Vec<String> = vec![
            "push".into(),
            "-P".into(),
            "ubuntu-24.04=-self-hosted".into(),
            "-W".into(),
            format!(".github/workflows/{name}"),
            "--local-repository".into(),
            format!("OWNER/kobuild@v1={}", action.display()),
        ];
        for (uses, yml) in STUBS {
            let dir = t.join("stubs").join(uses.replace(['/', '@'], "_"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("action.yml"), yml).unwrap();
            args.push("--local-repository".into());
            args.push(format!("{uses}={}", dir.display()));
        }
        // actions/cache's restore and save, which the install uses only when it builds:
        // KOBUILD_BIN skips them, but act resolves every action the job names.
        let cache = t.join("stubs/actions_cache_v4");
        for (sub, stub) in [("restore", CACHE_RESTORE_STUB), ("save", CACHE_SAVE_STUB)] {
            fs::create_dir_all(cache.join(sub)).unwrap();
            fs::write(cache.join(sub).join("action.yml"), stub).unwrap();
        }
        args.push("--local-repository".into());
        args.push(format!("actions/cache@v4={}", cache.display()));

        // The test's kobuild, through KOBUILD_BIN; it keeps a copy of each action step's
        // outputs and summary, which act deletes with the job.
        let captured = t.join("captured");
        fs::create_dir_all(&captured).unwrap();
        let wrapper = t.join("bin/kobuild");
        write_exec(
            &wrapper,
            &format!(
                "#!/bin/bash\n\"{bin}\" \"$@\"\nrc=$?\nif [[ $1 == action ]]; then\n  n=$(date +%s%N)\n  cp \"$GITHUB_OUTPUT\" \"{cap}/$n.out\"\n  cp \"$GITHUB_STEP_SUMMARY\" \"{cap}/$n.md\"\nfi\nexit $rc\n",
                bin = env!("CARGO_BIN_EXE_kobuild"),
                cap = captured.display()
            ),
        );
        let artifacts = t.join("artifacts");
        let actions_cache = t.join("actions-cache");
        let home = t.join("home");
        fs::create_dir_all(&home).unwrap();
        let gocache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache");

        let started = Instant::now();
        let out = output_within(
            Command::new(act)
                .args(&args)
                .current_dir(&repo)
                .env("HOME", &home)
                .env("XDG_CACHE_HOME", t.join("xdg"))
                .env("KOBUILD_BIN", &wrapper)
                .env("KOBUILD_TEST_ARTIFACTS", &artifacts)
                .env("KOBUILD_TEST_CACHE", &actions_cache)
                .env("KOBUILD_DEFAULT_REPO", format!("{host}/act"))
                .env("KOBUILD_CACHE_DIR", t.join("cache"))
                .env("DOCKER_CONFIG", t.join("docker"))
                .env("GOCACHE", gocache)
                .env("GOTOOLCHAIN", "local")
                .env_remove("GITHUB_ACTIONS")
                .env_remove("SOURCE_DATE_EPOCH"),
            Duration::from_secs(300),
        );
        let seconds = started.elapsed().as_secs_f64();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "act {name} failed:\n{log}");
        eprintln!("act {name}: {seconds:.1}s");

        let mut names: Vec<PathBuf> = fs::read_dir(&captured)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "out"))
            .collect();
        names.sort();
        let steps = names
            .iter()
            .map(|p| {
                (
                    parse_env_file(&fs::read_to_string(p).unwrap()),
                    fs::read_to_string(p.with_extension("md")).unwrap(),
                )
            })
            .collect();
        ActRun {
            _tmp: tmp,
            reg,
            steps,
            artifacts,
            actions_cache,
            log,
            seconds,
        }
    }

    /// The outputs and summary of the only step that built something.
    fn build_step(&self) -> (&BTreeMap<String, String>, &str) {
        let built: Vec<_> = self
            .steps
            .iter()
            .filter(|(o, _)| o.contains_key("images"))
            .collect();
        assert_eq!(built.len(), 1, "{:?}\n{}", self.steps, self.log);
        (&built[0].0, &built[0].1)
    }

    /// The manifest or index a reference names, from the registry; `REPO:TAG@DIGEST` is
    /// fetched by digest.
    fn manifest(&self, reference: &str) -> Value {
        let reference = match reference.split_once('@') {
            Some((named, digest)) => format!("{}@{digest}", repository(named)),
            None => reference.to_string(),
        };
        serde_json::from_slice(&skopeo_inspect_raw(
            &format!("docker://{reference}"),
            &self.reg,
        ))
        .unwrap()
    }

    /// The digest a tag points at in the registry.
    fn tag_digest(&self, named: &str) -> String {
        sha256_digest(&skopeo_inspect_raw(&format!("docker://{named}"), &self.reg))
    }

    /// Checks a pushed `REPO:TAG@DIGEST`: in the harness registry, the tag resolves to the
    /// digest, and it holds the platforms asked for (an index for several).
    fn check_pushed(&self, reference: &str, platforms: &[&str]) {
        let (named, digest) = reference.split_once('@').expect(reference);
        assert!(named.starts_with(&self.reg.host()), "{reference}");
        assert_eq!(self.tag_digest(named), digest, "{reference}");
        let m = self.manifest(reference);
        if platforms.len() > 1 {
            let mut got = index_platforms(&m);
            got.sort();
            assert_eq!(got, platforms, "{reference}");
        } else {
            assert_eq!(m["mediaType"], OCI_MANIFEST, "{reference}");
        }
    }
}

/// `HOST:PORT/PATH` from `HOST:PORT/PATH:TAG`.
/// `named` without its tag; a `:` before the last `/` is a registry port, not a tag.
fn repository(named: &str) -> &str {
    match named.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => named,
    }
}

fn adapt_nothing(workflow: String, _base: &str, _host: &str) -> String {
    workflow
}

#[test]
fn ghcr_example_pushes_and_reports() {
    // default-repo is derived from the repository unless KOBUILD_DEFAULT_REPO names one.
    let run = ActRun::run("ghcr.yml", adapt_nothing);
    let (outputs, summary) = run.build_step();
    let image = outputs["images"].trim();
    run.check_pushed(image, &["linux/amd64"]);
    let digest = &outputs["digest"];
    assert!(image.ends_with(&format!("@{digest}")), "{image}");
    let latest = format!("{}:latest", repository(image.split_once('@').unwrap().0));
    assert_eq!(&run.tag_digest(&latest), digest, "the second tag");
    assert!(summary.contains(digest.as_str()), "{summary}");
    assert!(
        run.log.contains(&format!("digest: {digest}")),
        "{}",
        run.log
    );
    // The artifact records went to the Actions cache, for the next runner.
    let saved: Vec<PathBuf> = fs::read_dir(&run.actions_cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}\n{}", run.log);
    let name = saved[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("kobuild-records-Linux-X64-"), "{name}");
    let records = fs::read_dir(&saved[0]).unwrap().count();
    assert_eq!(records, 1, "one record per image");
    assert!(run.seconds < 120.0);
}

#[test]
fn multi_platform_example_builds_on_an_amd64_and_arm64_base() {
    // The base stands in for cgr.dev/chainguard/static, which has these two platforms only.
    let run = ActRun::run("multi-platform.yml", |w, base, _| {
        w.replace("cgr.dev/chainguard/static:latest", base)
    });
    let (outputs, summary) = run.build_step();
    let metadata: Value = serde_json::from_str(&outputs["metadata"]).unwrap();
    let entries = metadata.as_object().unwrap();
    assert_eq!(entries.len(), 2, "api and worker: {metadata}");
    for entry in entries.values() {
        assert_eq!(
            entry["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        let reference = entry["ref"].as_str().unwrap();
        run.check_pushed(reference, &["linux/amd64", "linux/arm64"]);
        assert!(summary.contains(entry["digest"].as_str().unwrap()));
    }
    assert_eq!(outputs["images"].lines().count(), 2, "one line per image");
}

#[test]
fn skaffold_example_builds_the_skaffold_yaml() {
    // `targets` is left at its default: the skaffold.yaml decides (issue #17).
    let run = ActRun::run("skaffold.yml", |w, _, host| {
        w.replace("registry.example.com", host)
    });
    let (outputs, summary) = run.build_step();
    let image = outputs["images"].trim();
    assert!(
        image.starts_with(&format!("{}/team/app:", run.reg.host())),
        "{image}"
    );
    run.check_pushed(image, &["linux/amd64"]);
    let artifacts: Value = serde_json::from_str(&outputs["artifacts"]).unwrap();
    assert_eq!(artifacts["builds"][0]["imageName"], "app", "{artifacts}");
    let uploaded = run.artifacts.join("build-artifacts/kobuild-artifacts.json");
    assert_eq!(
        serde_json::from_str::<Value>(&fs::read_to_string(uploaded).unwrap()).unwrap(),
        artifacts
    );
    assert!(summary.contains(&outputs["digest"]), "{summary}");
}

#[test]
fn build_and_render_example_pins_the_manifest_by_digest() {
    let run = ActRun::run("build-and-render.yml", adapt_nothing);
    let (outputs, _) = run.build_step();
    let image = outputs["images"].trim();
    run.check_pushed(image, &["linux/amd64"]);
    let rendered = fs::read_to_string(run.artifacts.join("manifests/rendered.yaml")).unwrap();
    // The reference as pushed, tag and digest, as Skaffold renders it.
    assert!(
        rendered.contains(&format!("image: {image}\n")),
        "{rendered}\n{image}"
    );
    assert!(!rendered.contains("ko://"), "{rendered}");
}

#[test]
fn matrix_example_merges_the_platforms_into_one_tagged_index() {
    let run = ActRun::run("matrix.yml", adapt_nothing);
    let built: Vec<&BTreeMap<String, String>> = run
        .steps
        .iter()
        .map(|(o, _)| o)
        .filter(|o| o.contains_key("images"))
        .collect();
    assert_eq!(built.len(), 2, "one build per platform:\n{}", run.log);
    let repo = repository(built[0]["images"].split_once('@').unwrap().0).to_string();
    let index = run.manifest(&format!("{repo}:latest"));
    let mut platforms = index_platforms(&index);
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");
    for outputs in built {
        let digest = &outputs["digest"];
        assert!(
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["digest"] == digest.as_str()),
            "{digest} not in {index}"
        );
    }
}
