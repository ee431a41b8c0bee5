//! Repository labels in the action step: one GitHub API call per workflow run, against a mock
//! API server written here, and the labels it gives in the built image's config.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::kobuild::Kobuild;
use crate::common::*;
use serde_json::Value;
use tempfile::TempDir;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "ghs_fakeWorkflowToken0123456789";
const REPOSITORY: &str = "Owner/Repo";

/// What GitHub answers for `GET /repos/Owner/Repo`, trimmed.
const REPO_JSON: &str = r#"{
  "id": 1296269,
  "name": "Repo",
  "full_name": "Owner/Repo",
  "owner": {"login": "Owner", "id": 1},
  "private": false,
  "html_url": "https://github.com/Owner/Repo",
  "description": "Builds things.",
  "url": "https://api.github.com/repos/Owner/Repo",
  "license": {"key": "apache-2.0", "name": "Apache License 2.0", "spdx_id": "Apache-2.0"},
  "default_branch": "main",
  "stargazers_count": 80
}"#;

// ---------------------------------------------------------------------------
// The mock API

#[derive(Clone)]
enum Answer {
    Status(u16, &'static str),
    /// Reads the request and never answers.
    Hang,
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    /// Header names lower-cased.
    headers: BTreeMap<String, String>,
}

struct MockApi {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockApi {
    fn start(answer: Answer) -> MockApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, stop, answer) = (requests.clone(), stop.clone(), answer.clone());
                    // Detached: a hanging answer must not keep the next one waiting.
                    thread::spawn(move || serve(conn, &requests, &stop, &answer));
                }
            })
        };
        MockApi {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Request>>, stop: &AtomicBool, answer: &Answer) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 || stop.load(Ordering::SeqCst) {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    requests.lock().unwrap().push(Request {
        method,
        path,
        headers,
    });
    let mut conn = conn;
    match answer {
        Answer::Status(status, body) => {
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
        Answer::Hang => {
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The step, as the runner starts it

struct Step {
    kb: Kobuild,
    dir: TempDir,
    temp: PathBuf,
}

struct StepRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    layout: PathBuf,
}

impl Step {
    fn new() -> Step {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("runner-temp");
        fs::create_dir_all(&temp).unwrap();
        Step {
            kb: Kobuild::new(),
            dir,
            temp,
        }
    }

    /// `kobuild action` with the runner's variables and `inputs`; `env` adds to or (with an
    /// empty value) removes from the runner's. Builds ./cmd/one of the action fixture on
    /// scratch into a fresh OCI layout, pushing nothing.
    fn run(&self, api: Option<&MockApi>, inputs: &[(&str, &str)], env: &[(&str, &str)]) -> StepRun {
        let layout = tempfile::Builder::new()
            .prefix("layout-")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep();
        let mut vars: BTreeMap<String, String> = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", REPOSITORY),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_SHA", SHA),
            ("GITHUB_RUN_ID", "4242"),
            ("INPUT_GITHUB-TOKEN", TOKEN),
            ("INPUT_TARGETS", "./cmd/one"),
            ("INPUT_WORKING-DIRECTORY", "app"),
            ("INPUT_FROM-IMAGE", "scratch"),
            ("INPUT_PUSH", "false"),
            ("INPUT_SBOM", "none"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.insert("RUNNER_TEMP".into(), self.temp.display().to_string());
        vars.insert(
            "GITHUB_WORKSPACE".into(),
            action_fixture().display().to_string(),
        );
        vars.insert("INPUT_OCI-LAYOUT-PATH".into(), layout.display().to_string());
        if let Some(api) = api {
            vars.insert("GITHUB_API_URL".into(), api.url());
        }
        for (k, v) in inputs {
            vars.insert(format!("INPUT_{}", k.to_uppercase()), v.to_string());
        }
        for (k, v) in env {
            if v.is_empty() {
                vars.remove(*k);
            } else {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_kobuild"))
            .arg("action")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.kb.env.iter().map(|(k, v)| (k, v)))
            .envs(&vars)
            .current_dir(action_fixture())
            .stdin(Stdio::null())
            .output()
            .expect("run kobuild action");
        let run = StepRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            layout,
        };
        assert_eq!(
            run.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        assert!(!run.stdout.contains("::error"), "{}", run.stdout);
        run
    }

    fn cache_file(&self, run_id: &str) -> PathBuf {
        self.temp
            .join(format!("kobuild-repo-Owner-Repo-{run_id}.json"))
    }
}

impl StepRun {
    /// The `org.opencontainers.image.*` labels of the built image's config, keys shortened.
    fn labels(&self) -> BTreeMap<String, String> {
        let top = layout_top(&self.layout);
        assert_eq!(top["mediaType"], OCI_MANIFEST, "one platform: {top}");
        let manifest: Value =
            serde_json::from_slice(&layout_blob(&self.layout, top["digest"].as_str().unwrap()))
                .unwrap();
        let config: Value = serde_json::from_slice(&layout_blob(
            &self.layout,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        config["config"]["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("org.opencontainers.image.")?;
                Some((key.to_string(), v.as_str().unwrap().to_string()))
            })
            .collect()
    }

    fn warnings(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("::warning::"))
            .collect()
    }

    /// The token only ever appears in its `::add-mask::` command.
    fn assert_token_kept(&self, files: &[&Path]) {
        let stdout: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .collect();
        assert!(!stdout.join("\n").contains(TOKEN), "stdout leaks the token");
        assert!(!self.stderr.contains(TOKEN), "stderr leaks the token");
        for f in files {
            let content = fs::read(f).unwrap();
            assert!(
                !String::from_utf8_lossy(&content).contains(TOKEN),
                "{} leaks the token",
                f.display()
            );
        }
    }
}

fn action_fixture() -> PathBuf {
    fixtures_dir().join("action")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn context_labels() -> BTreeMap<String, String> {
    labels(&[
        ("source", "https://github.com/Owner/Repo"),
        ("revision", SHA),
    ])
}

// ---------------------------------------------------------------------------

#[test]
fn repository_labels_come_from_the_api_once_per_run() {
    let api = MockApi::start(Answer::Status(200, REPO_JSON));
    let step = Step::new();
    // The user's label wins over the repository's.
    let user = [("labels", "org.opencontainers.image.description=Mine.")];
    let run = step.run(Some(&api), &user, &[]);

    let want = labels(&[
        ("title", "Repo"),
        ("description", "Mine."),
        ("url", "https://github.com/Owner/Repo"),
        ("source", "https://github.com/Owner/Repo"),
        ("revision", SHA),
        ("licenses", "Apache-2.0"),
    ]);
    assert_eq!(run.labels(), want, "{}", run.stderr);
    assert!(run.warnings().is_empty(), "{}", run.stdout);

    {
        let requests = api.requests.lock().unwrap();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let r = &requests[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/repos/Owner/Repo")
        );
        let h = &r.headers;
        assert_eq!(h["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(h["x-github-api-version"], "2022-11-28");
        assert_eq!(h["accept"], "application/vnd.github+json");
        assert_eq!(h["user-agent"], "kobuild");
    }

    // Cached for the run, without the token or the fields no label uses.
    let cache = step.cache_file("4242");
    let cached: Value = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["name"], "Repo");
    assert!(cached.get("stargazers_count").is_none(), "{cached}");
    run.assert_token_kept(&[&cache]);

    // A later step of the same run reads the cache; the description is the repository's now.
    let again = step.run(Some(&api), &[], &[]);
    assert_eq!(api.count(), 1, "the cache answered");
    let mut repo_labels = want.clone();
    repo_labels.insert("description".into(), "Builds things.".into());
    assert_eq!(again.labels(), repo_labels);

    // Another run asks again, with GITHUB_TOKEN when the input is empty.
    let other = step.run(
        Some(&api),
        &[("github-token", "")],
        &[("GITHUB_RUN_ID", "4243"), ("GITHUB_TOKEN", TOKEN)],
    );
    assert_eq!(api.count(), 2);
    assert_eq!(other.labels(), repo_labels);
    assert_eq!(
        api.requests.lock().unwrap()[1].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
    assert!(step.cache_file("4243").is_file());
    other.assert_token_kept(&[&step.cache_file("4243")]);

    // Without a run id (or RUNNER_TEMP) there is nothing to cache in: every step asks.
    let step = Step::new();
    step.run(Some(&api), &[], &[("GITHUB_RUN_ID", "")]);
    step.run(Some(&api), &[], &[("GITHUB_RUN_ID", "")]);
    assert_eq!(api.count(), 4);
    assert_eq!(
        fs::read_dir(&step.temp)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("kobuild-repo-")
            })
            .count(),
        0
    );
}

#[test]
fn a_failed_call_is_a_warning_and_keeps_the_context_labels() {
    let cases = [
        (
            Answer::Status(500, r#"{"message": "Server Error"}"#),
            "HTTP 500: Server Error",
        ),
        (
            Answer::Status(404, r#"{"message": "Not Found"}"#),
            "HTTP 404: Not Found",
        ),
        (Answer::Status(200, "<html>rate limited</html>"), "not JSON"),
        (Answer::Hang, "no answer within 5 s"),
    ];
    for (answer, reason) in cases {
        let api = MockApi::start(answer);
        let step = Step::new();
        let started = Instant::now();
        let run = step.run(Some(&api), &[], &[]);
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(api.count(), 1, "{reason}");
        let warnings = run.warnings();
        assert_eq!(warnings.len(), 1, "{reason}: {}", run.stdout);
        let prefix = format!("repository labels: GET {}/repos/Owner/Repo: ", api.url());
        assert!(
            warnings[0].starts_with(&prefix) && warnings[0].contains(reason),
            "{reason}: {}",
            warnings[0]
        );
        assert_eq!(run.labels(), context_labels(), "{reason}");
        assert!(!step.cache_file("4242").exists(), "failures are not cached");
        run.assert_token_kept(&[]);
    }

    // Nobody listening: the same.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let step = Step::new();
    let run = step.run(
        None,
        &[],
        &[("GITHUB_API_URL", &format!("http://127.0.0.1:{port}"))],
    );
    assert_eq!(run.warnings().len(), 1, "{}", run.stdout);
    assert_eq!(run.labels(), context_labels());
}

#[test]
fn nothing_is_called_when_off_or_outside_actions() {
    let api = MockApi::start(Answer::Status(200, REPO_JSON));
    let step = Step::new();

    let off = step.run(Some(&api), &[("repository-labels", "false")], &[]);
    assert_eq!(off.labels(), context_labels());
    let no_defaults = step.run(Some(&api), &[("default-labels", "false")], &[]);
    assert_eq!(no_defaults.labels(), labels(&[]));
    let outside = step.run(Some(&api), &[], &[("GITHUB_ACTIONS", "")]);
    assert_eq!(outside.labels(), context_labels());
    assert_eq!(api.count(), 0);
    for run in [&off, &no_defaults, &outside] {
        assert!(run.warnings().is_empty(), "{}", run.stdout);
    }
    assert!(!step.cache_file("4242").exists());

    // Outside Actions, asking for it is enough.
    let asked = step.run(
        Some(&api),
        &[("repository-labels", "true")],
        &[("GITHUB_ACTIONS", "")],
    );
    assert_eq!(api.count(), 1);
    assert_eq!(asked.labels()["title"], "Repo");
}
