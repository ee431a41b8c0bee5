//! The GitHub Action: action.yml and the workflows pass action-validator, their shell steps pass
//! shellcheck, Dockerfile.runner passes hadolint, and the composite action's kobuild step runs
//! the way the runner runs it (inputs with action.yml's defaults, as env; the environment
//! files) against a real registry.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::kobuild::*;
use crate::common::*;
use granit_parser::{Event, Parser, options};
use serde_json::Value;
use tempfile::TempDir;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Linters, installed by scripts/test

/// `scripts/test` installs the linters under `$KOBUILD_TOOLS` (default
/// `~/.cache/kobuild-tools`); PATH is the fallback.
fn tool(name: &str, under: &str) -> PathBuf {
    let dir = std::env::var_os("KOBUILD_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kobuild-tools")));
    if let Some(path) = dir.map(|d| d.join(under).join(name))
        && path.is_file()
    {
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| panic!("{name} not found: scripts/test installs it"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The workflow files this repository ships: its own CI and release, and the examples.
fn workflow_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [".github/workflows", "examples/workflows"] {
        for entry in fs::read_dir(repo_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn action_and_workflows_pass_action_validator() {
    let validator = tool("action-validator", "bin");
    let mut files = vec![repo_root().join("action.yml")];
    let workflows = workflow_files();
    assert!(
        workflows.len() >= 7,
        "release, ci and five examples: {workflows:?}"
    );
    files.extend(workflows);
    for file in &files {
        let out = output(Command::new(&validator).arg(file));
        assert!(
            out.status.success(),
            "{}:\n{}{}",
            file.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    // The validator picks the schema by file name and does fail: a broken action proves it.
    let dir = tempfile::tempdir().unwrap();
    let broken = fs::read_to_string(repo_root().join("action.yml"))
        .unwrap()
        .replace("using: composite", "using: compost");
    fs::write(dir.path().join("action.yml"), broken).unwrap();
    let out = output(Command::new(&validator).arg(dir.path().join("action.yml")));
    assert!(!out.status.success(), "a broken action.yml passed");
}

#[test]
fn runner_dockerfile_passes_hadolint() {
    let out = output(
        Command::new(tool("hadolint", "venv/bin"))
            .arg("--failure-threshold")
            .arg("style")
            .arg(repo_root().join("Dockerfile.runner")),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Every `run:` of the action and the workflows, and scripts/action-install, is bash that
/// shellcheck accepts, with no `${{ }}` expression in it: values reach scripts through env,
/// never by text substitution.
#[test]
fn shell_steps_pass_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![repo_root().join("action.yml")];
    files.extend(workflow_files());
    let mut scripts = 0;
    for file in &files {
        let doc = yaml(&fs::read_to_string(file).unwrap());
        let mut steps: Vec<&Value> = Vec::new();
        if let Some(s) = doc["runs"]["steps"].as_array() {
            steps.extend(s);
        }
        for job in doc["jobs"].as_object().into_iter().flat_map(|j| j.values()) {
            steps.extend(job["steps"].as_array().into_iter().flatten());
        }
        for (i, step) in steps.iter().enumerate() {
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            let name = format!("{}#{i}", file.display());
            assert!(
                !run.contains("${{"),
                "{name}: expression in a script:\n{run}"
            );
            let script = dir.path().join(format!("{scripts}.sh"));
            fs::write(&script, format!("#!/usr/bin/env bash\n{run}")).unwrap();
            let out = output(
                Command::new("shellcheck")
                    .arg("-s")
                    .arg("bash")
                    .arg(&script),
            );
            assert!(
                out.status.success(),
                "{name}:\n{run}\n{}",
                text(&out.stdout)
            );
            scripts += 1;
        }
    }
    assert!(scripts >= 10, "only {scripts} scripts found");

    // The install steps' script, which the steps above only call.
    let install = repo_root().join("scripts/action-install");
    let out = output(Command::new("shellcheck").arg(&install));
    assert!(out.status.success(), "{}", text(&out.stdout));
}

// ---------------------------------------------------------------------------
// YAML, through the parser the crate already has

fn yaml(source: &str) -> Value {
    let mut events = Parser::new_from_str_with_options(source, options! { emit_comments: false })
        .map(|e| e.expect("valid YAML").0)
        .filter(|e| !matches!(e, Event::StreamStart | Event::DocumentStart(..)));
    let first = events.next().expect("a YAML document");
    node(first, &mut events)
}

/// Every scalar as a string: action.yml quotes its defaults, and the runner treats inputs
/// as strings anyway.
fn node<'a>(event: Event<'a>, events: &mut impl Iterator<Item = Event<'a>>) -> Value {
    match event {
        Event::Scalar(value, ..) => Value::String(value.into_owned()),
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            loop {
                match events.next().expect("sequence end") {
                    Event::SequenceEnd => return Value::Array(items),
                    e => items.push(node(e, events)),
                }
            }
        }
        Event::MappingStart(..) => {
            let mut map = serde_json::Map::new();
            loop {
                match events.next().expect("mapping end") {
                    Event::MappingEnd => return Value::Object(map),
                    Event::Scalar(key, ..) => {
                        let value = events.next().expect("mapping value");
                        map.insert(key.into_owned(), node(value, events));
                    }
                    e => panic!("unsupported mapping key {e:?}"),
                }
            }
        }
        e => panic!("unsupported YAML event {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// The composite action's kobuild step, run as the runner runs it

/// What the runner knows about the workflow run: the `github` context and the directories.
struct Runner {
    dir: TempDir,
    workspace: PathBuf,
    temp: PathBuf,
    output: PathBuf,
    env_file: PathBuf,
    path_file: PathBuf,
    summary: PathBuf,
    token: String,
}

/// One run of a step: its exit code, stdout, stderr and the outputs as the runner parses them.
#[derive(Clone)]
struct StepRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    outputs: BTreeMap<String, String>,
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

impl Runner {
    fn new(workspace: &Path) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("runner-temp");
        let files = dir.path().join("file-commands");
        fs::create_dir_all(&temp).unwrap();
        fs::create_dir_all(&files).unwrap();
        Runner {
            workspace: workspace.to_path_buf(),
            temp,
            output: files.join("set_output"),
            env_file: files.join("set_env"),
            path_file: files.join("add_path"),
            summary: files.join("step_summary"),
            token: "ghs_fakeWorkflowToken0123456789".into(),
            dir,
        }
    }

    /// The kobuild step, its install step's output being the binary under test.
    fn run(&self, kb: &Kobuild, with: &[(&str, &str)]) -> StepRun {
        let bin = env!("CARGO_BIN_EXE_kobuild").to_string();
        self.run_step(
            "kobuild",
            &kb.env,
            with,
            &[("steps.install.outputs.bin", bin)],
        )
    }

    /// Evaluates the step's env (`${{ inputs.X }}` from `with` or action.yml's default, other
    /// expressions from `context`) and runs its script with bash, as a composite step runs.
    fn run_step(
        &self,
        id: &str,
        base_env: &[(String, String)],
        with: &[(&str, &str)],
        context: &[(&str, String)],
    ) -> StepRun {
        for f in [&self.output, &self.env_file, &self.path_file, &self.summary] {
            fs::write(f, "").unwrap();
        }
        let action = yaml(&fs::read_to_string(repo_root().join("action.yml")).unwrap());
        let inputs = action["inputs"].as_object().expect("inputs");
        for (name, _) in with {
            assert!(
                inputs.contains_key(*name),
                "{name} is not an input of action.yml"
            );
        }
        let steps = action["runs"]["steps"].as_array().expect("steps");
        let step = steps
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step with id {id}"));
        let evaluate = |value: &str| -> String {
            let Some(expr) = value
                .strip_prefix("${{ ")
                .and_then(|v| v.strip_suffix(" }}"))
            else {
                assert!(!value.contains("${{"), "the test does not evaluate {value}");
                return value.into();
            };
            if let Some(name) = expr.strip_prefix("inputs.") {
                let given = with.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
                let value = given
                    .or_else(|| inputs[name]["default"].as_str())
                    .unwrap_or("");
                return match value {
                    "${{ github.token }}" => self.token.clone(),
                    v => v.into(),
                };
            }
            context
                .iter()
                .find(|(k, _)| *k == expr)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("the test does not evaluate {value}"))
        };

        let mut cmd = Command::new("bash");
        // The runner's `shell: bash`; the environment is only what a runner would set.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(base_env.iter().map(|(k, v)| (k, v)))
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_WORKSPACE", &self.workspace)
            .env("GITHUB_REPOSITORY", "Owner/Repo")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_ACTOR", "octocat")
            .env("RUNNER_TEMP", &self.temp)
            .env("GITHUB_OUTPUT", &self.output)
            .env("GITHUB_ENV", &self.env_file)
            .env("GITHUB_PATH", &self.path_file)
            .env("GITHUB_STEP_SUMMARY", &self.summary);
        let env = step["env"].as_object().expect("env of the step");
        for (key, value) in env {
            let value = value.as_str().unwrap();
            if let Some(name) = value
                .strip_prefix("${{ inputs.")
                .and_then(|v| v.strip_suffix(" }}"))
                && key.starts_with("INPUT_")
            {
                assert_eq!(key, &format!("INPUT_{}", name.to_uppercase()), "{key}");
            }
            cmd.env(key, evaluate(value));
        }
        if id == "kobuild" {
            // Every input reaches the step under the runner's own variable name.
            // `version` is read by the install steps only, `cache-records` by the records
            // steps.
            for name in inputs
                .keys()
                .filter(|n| !["version", "cache-records"].contains(&n.as_str()))
            {
                let var = format!("INPUT_{}", name.replace(' ', "_").to_uppercase());
                assert!(
                    env.contains_key(&var),
                    "input {name} is not passed as {var}"
                );
            }
        }
        let script = self.dir.path().join(format!("{id}.sh"));
        fs::write(&script, step["run"].as_str().expect("run")).unwrap();
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script)
            .current_dir(&self.workspace);
        let out = output(&mut cmd);
        StepRun {
            code: out.status.code(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
            outputs: parse_env_file(&fs::read_to_string(&self.output).unwrap()),
        }
    }
}

/// The runner's reading of GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines and
/// `name<<DELIMITER` heredocs.
pub(crate) fn parse_env_file(content: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let mut lines = content.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let heredoc = line.find("<<");
        match (line.find('='), heredoc) {
            (Some(eq), h) if h.is_none_or(|h| eq < h) => {
                values.insert(line[..eq].to_string(), line[eq + 1..].to_string());
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                let mut value = Vec::new();
                loop {
                    let l = lines
                        .next()
                        .unwrap_or_else(|| panic!("{name}: no closing {delimiter}"));
                    if l == delimiter {
                        break;
                    }
                    value.push(l);
                }
                values.insert(name.to_string(), value.join("\n"));
            }
            _ => panic!("not an environment file line: {line:?}"),
        }
    }
    values
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn action_fixture() -> PathBuf {
    fixtures_dir().join("action")
}

#[test]
fn the_step_pushes_and_writes_every_output() {
    let reg = Registry::start(RegistryKind::Auth);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(&base_dir.path().join("base"), "v1", false, &["linux/amd64"]);
    let base = push_base(&reg, &layout, "v1", "base/static");
    // No docker config: the username/password inputs alone log in, for the base and the push.
    let kb = Kobuild::new();
    let repo = format!("{}/apps", reg.host());
    let runner = Runner::new(&action_fixture());
    // A tag shaped like the runner toolkit's delimiters ends up in the multi-line output.
    let tag = "ghadelimiter_0000";
    let with = [
        ("targets", "./cmd/one, ./cmd/two"),
        ("working-directory", "app"),
        ("default-repo", repo.as_str()),
        ("from-image", base.as_str()),
        ("tags", "ghadelimiter_0000\nv1\n"),
        ("labels", "org.opencontainers.image.title=one and two"),
        ("username", reg.username()),
        ("password", reg.password()),
    ];

    let run = runner.run(&kb, &with);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );

    // Secrets are masked first and appear nowhere else.
    let first_line = run.stdout.lines().next().unwrap_or_default();
    assert!(first_line.starts_with("::add-mask::"), "{}", run.stdout);
    let masks: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("::add-mask::"))
        .collect();
    assert!(masks.contains(&reg.password()), "{}", run.stdout);
    assert!(masks.contains(&runner.token.as_str()), "{}", run.stdout);
    let artifacts_file = PathBuf::from(&run.outputs["artifacts-file"]);
    let files = [
        &runner.output,
        &runner.env_file,
        &runner.summary,
        &artifacts_file,
    ];
    for secret in [reg.password(), runner.token.as_str()] {
        let stdout_rest: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .collect();
        assert!(!stdout_rest.join("\n").contains(secret), "stdout leaks");
        assert!(!run.stderr.contains(secret), "stderr leaks");
        for f in files {
            assert!(
                !fs::read_to_string(f).unwrap().contains(secret),
                "{} leaks",
                f.display()
            );
        }
    }
    assert!(run.stdout.contains("::group::"), "{}", run.stdout);
    assert!(run.stdout.contains("::endgroup::"), "{}", run.stdout);
    assert!(!run.stdout.contains("::error"), "{}", run.stdout);

    // Outputs.
    let o = &run.outputs;
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        [
            "artifacts",
            "artifacts-file",
            "digest",
            "images",
            "metadata"
        ]
    );
    let images: Vec<&str> = o["images"].lines().collect();
    assert_eq!(images.len(), 2, "{:?}", o["images"]);
    for (image, app) in images.iter().zip(["one", "two"]) {
        assert!(
            image.starts_with(&format!("{repo}/{app}:{tag}@sha256:")),
            "{image}"
        );
        let manifest = skopeo_inspect_raw(&pinned(image), &reg);
        assert_eq!(sha256_digest(&manifest), digest_of(image));
    }
    assert_eq!(o["digest"], digest_of(images[0]));
    assert_eq!(
        artifacts_file,
        runner.temp.join("kobuild-artifacts.json"),
        "RUNNER_TEMP by default"
    );
    assert_eq!(fs::read_to_string(&artifacts_file).unwrap(), o["artifacts"]);
    assert_eq!(
        json(&o["artifacts"]),
        serde_json::json!({"builds": [
            {"imageName": "ko://example.com/action/cmd/one", "tag": images[0]},
            {"imageName": "ko://example.com/action/cmd/two", "tag": images[1]},
        ]})
    );
    let metadata = json(&o["metadata"]);
    let one = &metadata["ko://example.com/action/cmd/one"];
    assert_eq!(one["ref"], images[0]);
    assert_eq!(one["digest"], o["digest"].as_str());
    assert_eq!(one["platforms"], serde_json::json!(["linux/amd64"]));
    assert!(one["size"].as_u64().unwrap() > 1000, "{one}");
    assert_eq!(metadata.as_object().unwrap().len(), 2);
    assert_eq!(
        fs::read_to_string(&runner.env_file).unwrap(),
        "",
        "default-repo was given: nothing to export"
    );

    // Labels: the GitHub context's defaults and the input.
    let config = skopeo_inspect_config(&pinned(images[0]), &reg);
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/Owner/Repo"
    );
    assert_eq!(labels["org.opencontainers.image.revision"], SHA);
    assert_eq!(labels["org.opencontainers.image.title"], "one and two");

    // The summary: a row per image, everything new uploaded.
    let summary = fs::read_to_string(&runner.summary).unwrap();
    let rows: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with("| `ko://"))
        .collect();
    assert_eq!(rows.len(), 2, "{summary}");
    assert!(rows[0].contains(&o["digest"]), "{summary}");
    assert!(rows.iter().all(|r| r.contains("linux/amd64")), "{summary}");
    assert!(
        rows.iter()
            .all(|r| r.contains(" mounted, ") && !r.contains("| 0 uploaded")),
        "{summary}"
    );

    // The same step again: the same digests, and the registry already has every blob.
    let again = runner.run(&kb, &with);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.outputs["images"], o["images"]);
    let summary = fs::read_to_string(&runner.summary).unwrap();
    let rows: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with("| `ko://"))
        .collect();
    assert_eq!(rows.len(), 2, "{summary}");
    assert!(
        rows.iter()
            .all(|r| r.contains("| 0 uploaded (0 B), 0 mounted,")),
        "{summary}"
    );
}

#[test]
fn an_invalid_boolean_fails_with_one_error_naming_the_input() {
    let kb = Kobuild::new();
    let runner = Runner::new(&action_fixture());
    let run = runner.run(&kb, &[("working-directory", "app"), ("push", "yes")]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let message = r#"input push: "yes" is not a boolean (true or false)"#;
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    assert_eq!(errors, [format!("::error::{message}")], "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with(&format!("::add-mask::{}\n", runner.token)),
        "the token is masked before the error: {}",
        run.stdout
    );
    assert_eq!(run.stderr.trim_end(), format!("error: {message}"));
    assert!(run.outputs.is_empty(), "{:?}", run.outputs);
    assert_eq!(fs::read_to_string(&runner.summary).unwrap(), "");
}

#[test]
fn a_compile_error_is_annotated_at_its_file_and_line() {
    let kb = Kobuild::new();
    // The workspace is tests/fixtures; the broken app is a directory in it.
    let runner = Runner::new(&fixtures_dir());
    let layout = kb.dir().join("layout");
    let run = runner.run(
        &kb,
        &[
            ("working-directory", "apps/broken"),
            ("from-image", "scratch"),
            ("push", "false"),
            ("oci-layout-path", layout.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    // One annotation at the file, its message the compile error under the error's headline.
    assert_eq!(errors.len(), 1, "{}", run.stdout);
    let (location, message) = errors[0].split_once("::go build of ").unwrap();
    assert_eq!(location, "::error file=apps/broken/main.go,line=6,col=2");
    assert!(message.ends_with(" failed: undefined: nope"), "{message}");
    assert!(run.outputs.is_empty(), "{:?}", run.outputs);
}

#[test]
fn install_only_builds_nothing() {
    let kb = Kobuild::new();
    let runner = Runner::new(&action_fixture());
    // Inputs that would fail a build are not even read.
    let run = runner.run(
        &kb,
        &[("install-only", "True"), ("working-directory", "missing")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.outputs.is_empty(), "{:?}", run.outputs);
}

// ---------------------------------------------------------------------------
// The install step, against a local stand-in for the release download URL

/// `python3 -m http.server` over a directory laid out like `<repo>/releases/download/<ref>/`.
struct FileServer {
    child: std::process::Child,
    port: u16,
}

impl FileServer {
    fn start(root: &Path) -> FileServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "file server not up on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        FileServer { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release target of this machine, as the install step maps `runner.arch` to it.
fn host_target() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("ARM64", "aarch64-unknown-linux-musl"),
        _ => ("X64", "x86_64-unknown-linux-musl"),
    }
}

/// A release of this build's binary as the release workflow lays it out, optionally with a
/// checksum of something else.
fn publish_release(root: &Path, reference: &str, honest: bool) -> String {
    let (_, target) = host_target();
    let dir = root.join("o/kobuild/releases/download").join(reference);
    fs::create_dir_all(&dir).unwrap();
    let staging = tempfile::tempdir().unwrap();
    fs::copy(
        env!("CARGO_BIN_EXE_kobuild"),
        staging.path().join("kobuild"),
    )
    .unwrap();
    let asset = format!("kobuild-{target}.tar.gz");
    run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(staging.path())
            .arg("-czf")
            .arg(dir.join(&asset))
            .arg("kobuild"),
    );
    let bytes = fs::read(dir.join(&asset)).unwrap();
    let digest = sha256_digest(if honest { &bytes } else { b"something else" });
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::write(
        dir.join(format!("{asset}.sha256")),
        format!("{hex}  {asset}\n"),
    )
    .unwrap();
    asset
}

fn install_context(
    server: &FileServer,
    reference: &str,
    action_dir: &Path,
) -> Vec<(&'static str, String)> {
    let (arch, _) = host_target();
    vec![
        ("github.action_ref", reference.to_string()),
        ("github.action_repository", "o/kobuild".into()),
        ("github.action_path", action_dir.display().to_string()),
        (
            "github.server_url",
            format!("http://127.0.0.1:{}", server.port),
        ),
        ("runner.os", "Linux".into()),
        ("runner.arch", arch.into()),
    ]
}

/// Commits with a release, as the API's tag list gives them: v9.9.9 is annotated in the
/// repository, but the list carries the commit it points at either way.
const RELEASED_SHA: &str = "9999999999999999999999999999999999999999";
const BAD_SHA: &str = "6666666666666666666666666666666666666666";
const UNRELEASED_SHA: &str = "5555555555555555555555555555555555555555";

/// The `tags` listing of o/kobuild at `<root>/api`, served by the same file server.
fn publish_tags(root: &Path) {
    let dir = root.join("api/repos/o/kobuild");
    fs::create_dir_all(&dir).unwrap();
    let tags = serde_json::json!([
        {"name": "v9", "commit": {"sha": RELEASED_SHA}},
        {"name": "v9.9.9", "commit": {"sha": RELEASED_SHA}},
        {"name": "v6.6.6", "commit": {"sha": BAD_SHA}},
        {"name": "v1.0.0", "commit": {"sha": "1111111111111111111111111111111111111111"}},
    ]);
    fs::write(dir.join("tags"), tags.to_string()).unwrap();
}

/// A `cargo` that records its arguments and "builds" by copying this build's binary to
/// `--root`/bin, as `cargo install` does; PATH is it plus the system's tools.
struct FakeCargo {
    dir: TempDir,
}

impl FakeCargo {
    fn new() -> FakeCargo {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "#!/usr/bin/env bash\nset -eu\necho \"$*\" >>{log}\n\
             while [[ $# -gt 0 ]]; do [[ $1 == --root ]] && root=$2; shift; done\n\
             echo '   Compiling kobuild' >&2\n\
             mkdir -p \"$root/bin\" && cp {bin} \"$root/bin/kobuild\"\n",
            log = dir.path().join("calls").display(),
            bin = env!("CARGO_BIN_EXE_kobuild"),
        );
        let path = dir.path().join("bin/cargo");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, script).unwrap();
        let mut perms = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&path, perms).unwrap();
        FakeCargo { dir }
    }

    fn env(&self, server: &FileServer) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            ),
            (
                "GITHUB_API_URL".into(),
                format!("http://127.0.0.1:{}/api", server.port),
            ),
        ]
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// The install steps as the runner runs them: `release`, then (when it asks for a build)
/// the cache restore, simulated by `cached` (a binary put where actions/cache/restore puts
/// it), then `install`. Returns the step that ended the install.
fn install(
    runner: &Runner,
    base_env: &[(String, String)],
    with: &[(&str, &str)],
    context: &[(&str, String)],
    cached: bool,
) -> (StepRun, StepRun) {
    let release = runner.run_step("release", base_env, with, context);
    if release.code != Some(0) {
        return (release.clone(), release);
    }
    if release.outputs.get("build").is_some_and(|b| b == "true") && cached {
        fs::copy(
            env!("CARGO_BIN_EXE_kobuild"),
            runner.temp.join("kobuild-action/bin/kobuild"),
        )
        .unwrap();
    }
    let install = runner.run_step("install", base_env, with, context);
    (release, install)
}

fn errors(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("::error::")).collect()
}

#[test]
fn install_downloads_the_release_for_its_ref_and_checks_it() {
    let root = tempfile::tempdir().unwrap();
    publish_release(root.path(), "v9.9.9", true);
    let asset = publish_release(root.path(), "v6.6.6", false);
    let server = FileServer::start(root.path());
    let cargo = FakeCargo::new();
    let env = cargo.env(&server);
    let runner = Runner::new(&action_fixture());
    // An empty github-token: no `gh`, the plain download.
    let with = [("github-token", "")];

    let (release, run) = install(
        &runner,
        &env,
        &with,
        &install_context(&server, "v9.9.9", &repo_root()),
        false,
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(release.outputs.is_empty(), "{:?}", release.outputs);
    let bin = runner.temp.join("kobuild-action/bin");
    assert_eq!(
        run.outputs["bin"],
        bin.join("kobuild").display().to_string()
    );
    assert_eq!(
        fs::read_to_string(&runner.path_file).unwrap(),
        format!("{}\n", bin.display())
    );
    assert!(
        run.stdout
            .contains(&format!("kobuild {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        run.stdout
    );
    assert!(
        release.stdout.contains(&format!(
            "kobuild v9.9.9: downloaded {asset} (checksum verified)"
        )),
        "{}",
        release.stdout
    );
    assert_eq!(cargo.calls(), Vec::<String>::new(), "downloaded, not built");

    // Without github.action_ref the ref and repository come from the action's checkout path.
    let runner = Runner::new(&action_fixture());
    let checkout = runner.dir.path().join("_actions/o/kobuild/v9.9.9");
    fs::create_dir_all(checkout.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(repo_root(), &checkout).unwrap();
    let mut context = install_context(&server, "", &checkout);
    context[1].1 = String::new();
    let (_, run) = install(&runner, &env, &with, &context, false);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(runner.temp.join("kobuild-action/bin/kobuild").is_file());

    // A checksum that does not match fails the step; it never falls back to building.
    let runner = Runner::new(&action_fixture());
    let (release, _) = install(
        &runner,
        &env,
        &with,
        &install_context(&server, "v6.6.6", &repo_root()),
        false,
    );
    assert_eq!(
        release.code,
        Some(1),
        "{}\n{}",
        release.stdout,
        release.stderr
    );
    assert_eq!(
        errors(&release.stdout),
        [format!(
            "::error::kobuild v6.6.6: {asset} does not match {asset}.sha256"
        )],
        "{}",
        release.stdout
    );
    assert_eq!(cargo.calls(), Vec::<String>::new());
    assert!(release.outputs.is_empty());

    // No release for the ref and no cargo: one error saying what to add.
    let runner = Runner::new(&action_fixture());
    let no_cargo = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
    let (release, run) = install(
        &runner,
        &no_cargo,
        &with,
        &install_context(&server, "main", &repo_root()),
        false,
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        release
            .stdout
            .contains("::notice::no kobuild release asset for main on Linux/"),
        "{}",
        release.stdout
    );
    assert_eq!(errors(&run.stdout).len(), 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("::error::cargo is needed"),
        "{}",
        run.stdout
    );
}

#[test]
fn install_finds_the_release_of_a_pinned_commit() {
    let root = tempfile::tempdir().unwrap();
    publish_release(root.path(), "v9.9.9", true);
    let asset = publish_release(root.path(), "v6.6.6", false);
    publish_tags(root.path());
    let server = FileServer::start(root.path());
    let cargo = FakeCargo::new();
    let env = cargo.env(&server);
    let with = [("github-token", "")];

    // The tag list names v9 (no release) and v9.9.9 at the commit: the release is used.
    let runner = Runner::new(&action_fixture());
    let (release, run) = install(
        &runner,
        &env,
        &with,
        &install_context(&server, RELEASED_SHA, &repo_root()),
        false,
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        release
            .stdout
            .contains(&format!("kobuild v9.9.9: downloaded {asset}")),
        "{}",
        release.stdout
    );
    assert!(release.outputs.is_empty(), "{:?}", release.outputs);
    assert_eq!(cargo.calls(), Vec::<String>::new(), "downloaded, not built");

    // The release at the commit has a bad checksum: the step fails, nothing is built.
    let runner = Runner::new(&action_fixture());
    let (release, _) = install(
        &runner,
        &env,
        &with,
        &install_context(&server, BAD_SHA, &repo_root()),
        false,
    );
    assert_eq!(release.code, Some(1), "{}", release.stdout);
    assert_eq!(
        errors(&release.stdout),
        [format!(
            "::error::kobuild v6.6.6: {asset} does not match {asset}.sha256"
        )]
    );
    assert_eq!(cargo.calls(), Vec::<String>::new());
}

#[test]
fn install_builds_an_unreleased_commit_once_then_uses_the_cache() {
    let root = tempfile::tempdir().unwrap();
    publish_release(root.path(), "v9.9.9", true);
    publish_tags(root.path());
    let server = FileServer::start(root.path());
    let cargo = FakeCargo::new();
    let env = cargo.env(&server);
    let with = [("github-token", "")];
    let context = install_context(&server, UNRELEASED_SHA, &repo_root());

    let runner = Runner::new(&action_fixture());
    let (release, run) = install(&runner, &env, &with, &context, false);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(release.outputs["build"], "true");
    let key = release.outputs["key"].clone();
    let hex = key
        .strip_prefix(&format!("kobuild-Linux-{}-", host_target().0))
        .unwrap_or_else(|| panic!("{key}"));
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    // Cargo's own progress reaches the log: no --quiet.
    let calls = cargo.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with(&format!(
            "install --locked --path {} --root ",
            repo_root().display()
        )) && !calls[0].contains("--quiet"),
        "{calls:?}"
    );
    assert!(run.stderr.contains("Compiling kobuild"), "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("kobuild {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.outputs["bin"],
        runner
            .temp
            .join("kobuild-action/bin/kobuild")
            .display()
            .to_string()
    );

    // The next job: same key, the binary restored from the cache, nothing built.
    let runner = Runner::new(&action_fixture());
    let (release, run) = install(&runner, &env, &with, &context, true);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(release.outputs["key"], key);
    assert_eq!(cargo.calls().len(), 1, "built again: {:?}", cargo.calls());
}

#[test]
fn install_version_input_pins_a_release() {
    let root = tempfile::tempdir().unwrap();
    let asset = publish_release(root.path(), "v9.9.9", true);
    let server = FileServer::start(root.path());
    let cargo = FakeCargo::new();
    let env = cargo.env(&server);
    let context = install_context(&server, "main", &repo_root());

    let runner = Runner::new(&action_fixture());
    let (release, run) = install(
        &runner,
        &env,
        &[("github-token", ""), ("version", "v9.9.9")],
        &context,
        false,
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        release.stdout.contains(&format!(
            "kobuild v9.9.9: downloaded {asset} (checksum verified)"
        )),
        "{}",
        release.stdout
    );
    assert_eq!(cargo.calls(), Vec::<String>::new());

    // A version without a release fails; it does not build something else instead.
    let runner = Runner::new(&action_fixture());
    let (release, _) = install(
        &runner,
        &env,
        &[("github-token", ""), ("version", "v7.7.7")],
        &context,
        false,
    );
    assert_eq!(release.code, Some(1), "{}", release.stdout);
    assert_eq!(
        errors(&release.stdout),
        [format!(
            "::error::version 'v7.7.7': no release of o/kobuild has {asset}"
        )]
    );
    assert_eq!(cargo.calls(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Colour in the log

#[test]
fn the_log_is_coloured_only_where_it_renders() {
    let esc = |kb: &Kobuild, args: &[&str]| {
        let mut cmd = kb.subcommand(&action_fixture(), "action", args);
        // Only what the case sets: this test may itself run in Actions.
        cmd.env_remove("GITHUB_ACTIONS")
            .env_remove("NO_COLOR")
            .envs(kb.env.iter().map(|(k, v)| (k, v)));
        let out = output(&mut cmd);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("install-only"),
            "{}",
            text(&out.stderr)
        );
        out.stderr.contains(&0x1b)
    };
    let kb = || Kobuild::new().env("INPUT_INSTALL-ONLY", "true");
    assert!(!esc(&kb(), &[]), "a redirected log stays plain");
    assert!(
        esc(&kb().env("GITHUB_ACTIONS", "true"), &[]),
        "the Actions log renders colour"
    );
    assert!(!esc(
        &kb().env("GITHUB_ACTIONS", "true").env("NO_COLOR", "1"),
        &[]
    ));
    assert!(esc(&kb(), &["--color", "always"]));
    assert!(!esc(
        &kb().env("GITHUB_ACTIONS", "true"),
        &["--color=never"]
    ));
}
