//! Fault injection: `kobuild build` (the real binary) pushes through a fault proxy
//! (tests/common/faults.rs) in front of real registries, with faults on one request kind per
//! run (transient ones up to three in a row). Transient faults (408, 429 with Retry-After, 500, 502, 503, 504, connection reset,
//! truncated response, delay) must end in a correct image after a retry the proxy saw;
//! permanent ones (400, 401, 403, 404, MANIFEST_INVALID, MANIFEST_BLOB_UNKNOWN) in exit 1
//! with exactly one `error:` line naming the registry and repository and what to do, an
//! empty stdout and no tag. Corrupted pulls fail with a digest mismatch; a slow link does
//! not time out, not even when it takes longer than `--registry-timeout`; a stall is retried
//! after that timeout; a fault that never ends gives up within the retry policy's bound.
//!
//! Setup: registry A (the target) and registry B (the base's home), both Plain, each behind
//! its own per-run fault proxy that also plays a bearer token server, so the token endpoint
//! is a request kind like the others. The base is a two-platform OCI index, pushed to B
//! (its layers are downloaded and re-uploaded: GET blob on B) and to A (mounted: POST
//! mount on A). The app is tests/fixtures/apps/hello for linux/amd64.
//!
//! The matrix (slot × fault → expected outcome) is in `transient_faults_*` and
//! `permanent_faults_*`; `cargo test --test faults -- --nocapture` prints each run's outcome.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::faults::{Fault, FaultProxy, Kind, Rule, Seen, oci_request};
use crate::common::kobuild::{Kobuild, digest_of};
use crate::common::*;

const PASSWORD: &str = "fault-proxy-pass";
const TAG: &str = "v1";

/// Where the rule goes: the target registry's proxy or the base registry's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Target,
    Base,
}

/// Where the base image comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BaseAt {
    /// Registry B: pulled, layers downloaded and re-uploaded to A.
    Remote,
    /// Registry A, another repository: layers mounted.
    SameRegistry,
}

/// A request kind in a setup that produces it.
#[derive(Clone, Debug)]
struct Slot {
    name: &'static str,
    side: Side,
    kind: Kind,
    /// Narrows the rule to one request of the kind (a digest, a tag).
    path: Option<String>,
    base: BaseAt,
}

/// Two registries with the base in both, and the reference image built without faults.
struct World {
    target: Registry,
    source: Registry,
    base_config: String,
    base_layer: String,
    /// Config digest and layer digests of the image every successful run must produce.
    config: String,
    layers: Vec<String>,
    next_repo: AtomicUsize,
}

impl World {
    fn start() -> World {
        let target = Registry::start(RegistryKind::Plain);
        let source = Registry::start(RegistryKind::Plain);
        let layout_dir = tempfile::tempdir().unwrap();
        let layout = make_base(
            layout_dir.path(),
            TAG,
            false,
            &["linux/amd64", "linux/arm64"],
        );
        push_base(&source, &layout, TAG, "base/img");
        push_base(&target, &layout, TAG, "base/img");
        let index: serde_json::Value = serde_json::from_slice(&layout_blob(
            &layout,
            layout_top(&layout)["digest"].as_str().unwrap(),
        ))
        .unwrap();
        let amd64 = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&layout_blob(&layout, amd64["digest"].as_str().unwrap()))
                .unwrap();
        let mut world = World {
            target,
            source,
            base_config: manifest["config"]["digest"].as_str().unwrap().into(),
            base_layer: manifest["layers"][0]["digest"].as_str().unwrap().into(),
            config: String::new(),
            layers: Vec::new(),
            next_repo: AtomicUsize::new(0),
        };
        // The reference: a run without faults, checked fully by skopeo (which verifies
        // every blob's digest on the way).
        let run = world.run(BaseAt::Remote, |_, _| {});
        assert!(run.out.status.success(), "{}", run.stderr());
        // Parallel requests share one token per scope rather than each fetching it.
        for proxy in [&run.target, &run.source] {
            let tokens: Vec<String> = proxy
                .requests()
                .into_iter()
                .filter(|s| s.kind == Some(Kind::Token))
                .map(|s| s.path)
                .collect();
            let distinct: BTreeSet<&String> = tokens.iter().collect();
            assert_eq!(tokens.len(), distinct.len(), "{tokens:#?}");
        }
        let printed = run.stdout();
        let raw = skopeo_inspect_raw(
            &format!("{}/{}:{TAG}", world.target.host(), run.repo),
            &world.target,
        );
        assert_eq!(sha256_digest(&raw), digest_of(printed.trim()));
        let oci = tempfile::tempdir().unwrap();
        copy_to_oci_dir(
            &format!("{}/{}:{TAG}", world.target.host(), run.repo),
            &world.target,
            &oci.path().join("img"),
            "x",
            None,
        );
        let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        world.config = m["config"]["digest"].as_str().unwrap().into();
        world.layers = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            world.layers[0], world.base_layer,
            "the base layer comes first"
        );
        world
    }

    /// Every request kind kobuild sends, each in a setup that sends it.
    fn slots(&self) -> Vec<Slot> {
        let slot = |name, side, kind, path: Option<&str>, base| Slot {
            name,
            side,
            kind,
            path: path.map(str::to_string),
            base,
        };
        use BaseAt::*;
        use Side::*;
        vec![
            slot("A: GET /v2/ (ping)", Target, Kind::Ping, None, Remote),
            slot("A: GET /token", Target, Kind::Token, None, Remote),
            slot("A: HEAD blob", Target, Kind::HeadBlob, None, Remote),
            slot("A: POST upload", Target, Kind::PostUpload, None, Remote),
            slot("A: PUT upload", Target, Kind::PutUpload, None, Remote),
            slot("A: POST mount", Target, Kind::Mount, None, SameRegistry),
            slot(
                "A: HEAD manifest (tag)",
                Target,
                Kind::HeadManifest,
                None,
                Remote,
            ),
            slot(
                "A: PUT manifest (digest)",
                Target,
                Kind::PutManifestDigest,
                None,
                Remote,
            ),
            slot("A: PUT manifest (tag)", Target, Kind::PutTag, None, Remote),
            slot("B: GET /v2/ (ping)", Base, Kind::Ping, None, Remote),
            slot("B: GET /token", Base, Kind::Token, None, Remote),
            slot(
                "B: GET index (tag)",
                Base,
                Kind::GetManifest,
                Some("/manifests/v1"),
                Remote,
            ),
            slot(
                "B: GET manifest (digest)",
                Base,
                Kind::GetManifest,
                Some("/manifests/sha256:"),
                Remote,
            ),
            slot(
                "B: GET config blob",
                Base,
                Kind::GetBlob,
                Some(&self.base_config),
                Remote,
            ),
            slot(
                "B: GET layer blob",
                Base,
                Kind::GetBlob,
                Some(&self.base_layer),
                Remote,
            ),
        ]
    }

    /// One `kobuild build` through fresh proxies; `setup` adds rules to them (target, base).
    fn run(&self, base: BaseAt, setup: impl FnOnce(&FaultProxy, &FaultProxy)) -> Run {
        self.run_with(base, &[], setup)
    }

    /// [`World::run`] with `extra` arguments for `kobuild build`.
    fn run_with(
        &self,
        base: BaseAt,
        extra: &[&str],
        setup: impl FnOnce(&FaultProxy, &FaultProxy),
    ) -> Run {
        let target = FaultProxy::with_token_server(&self.target, PASSWORD);
        let source = FaultProxy::with_token_server(&self.source, PASSWORD);
        setup(&target, &source);
        let kb = Kobuild::new();
        write_auths(&kb, &[&target, &source]);
        let n = self.next_repo.fetch_add(1, Ordering::SeqCst);
        let base_ref = match base {
            BaseAt::Remote => format!("{}/base/img:{TAG}", source.host()),
            BaseAt::SameRegistry => format!("{}/base/img:{TAG}", target.host()),
        };
        let repo_arg = format!("{}/c{n}", target.host());
        let start = Instant::now();
        let mut args = vec![
            "./hello",
            "--repo",
            &repo_arg,
            "--base",
            &base_ref,
            "--platform",
            "linux/amd64",
            "-t",
            TAG,
        ];
        args.extend(extra);
        let out = kb.run(&args);
        Run {
            out,
            elapsed: start.elapsed(),
            repo: format!("c{n}/hello"),
            target,
            source,
        }
    }

    /// The image behind `run.repo:TAG` in registry A is the one printed, with the reference
    /// config and layers, every blob present. Returns what is wrong.
    fn check_image(&self, run: &Run) -> Result<(), String> {
        let stdout = run.stdout();
        let lines: Vec<&str> = stdout.lines().collect();
        let want_prefix = format!("{}/{}:{TAG}@sha256:", run.target.host(), run.repo);
        if lines.len() != 1 || !lines[0].starts_with(&want_prefix) {
            return Err(format!("stdout {stdout:?}, expected one {want_prefix}..."));
        }
        let host = self.target.host();
        let (status, _, body) =
            oci_request(&host, "GET", &format!("/v2/{}/manifests/{TAG}", run.repo));
        if status != 200 {
            return Err(format!(
                "the tag is missing in the registry (HTTP {status})"
            ));
        }
        if sha256_digest(&body) != digest_of(lines[0]) {
            return Err(format!(
                "the tag points at {}, kobuild printed {}",
                sha256_digest(&body),
                lines[0]
            ));
        }
        let m: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let layers: Vec<String> = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["digest"].as_str().unwrap_or_default().to_string())
            .collect();
        if m["config"]["digest"] != self.config.as_str() || layers != self.layers {
            return Err(format!("not the reference image: {m}"));
        }
        for blob in layers.iter().chain([&self.config]) {
            let (status, _, _) =
                oci_request(&host, "HEAD", &format!("/v2/{}/blobs/{blob}", run.repo));
            if status != 200 {
                return Err(format!(
                    "blob {blob} missing in {} (HTTP {status})",
                    run.repo
                ));
            }
        }
        Ok(())
    }

    fn tag_exists(&self, run: &Run) -> bool {
        let path = format!("/v2/{}/manifests/{TAG}", run.repo);
        oci_request(&self.target.host(), "GET", &path).0 == 200
    }
}

/// A docker config with the token servers' credentials, as `docker login` leaves it.
fn write_auths(kb: &Kobuild, proxies: &[&FaultProxy]) {
    use base64::Engine as _;
    let auths: serde_json::Map<String, serde_json::Value> = proxies
        .iter()
        .map(|p| {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{USERNAME}:{}", p.password()));
            (p.host(), serde_json::json!({ "auth": auth }))
        })
        .collect();
    let dir = kb.dir().join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap(),
    )
    .unwrap();
}

struct Run {
    out: Output,
    elapsed: Duration,
    /// `cN/hello`, the repository in registry A.
    repo: String,
    target: FaultProxy,
    source: FaultProxy,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn proxy(&self, side: Side) -> &FaultProxy {
        match side {
            Side::Target => &self.target,
            Side::Base => &self.source,
        }
    }

    /// The one `error:` line of a failed run, checked for what every such line must have.
    fn error_line(&self, side: Side) -> Result<String, String> {
        let stderr = self.stderr();
        if self.out.status.code() != Some(1) {
            return Err(format!("exit {:?}, expected 1", self.out.status.code()));
        }
        if !self.out.stdout.is_empty() {
            return Err(format!("stdout not empty: {:?}", self.stdout()));
        }
        if stderr.contains("panicked") {
            return Err("panicked".into());
        }
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        let [line] = errors[..] else {
            return Err(format!("{} error lines", errors.len()));
        };
        let (host, repo) = match side {
            Side::Target => (self.target.host(), self.repo.clone()),
            Side::Base => (self.source.host(), "base/img".to_string()),
        };
        if !line.contains(&host) || !line.contains(&repo) {
            return Err(format!("the error does not name {host} and {repo}: {line}"));
        }
        Ok(line.to_string())
    }
}

/// Uploads are retried with a new session, so their PUTs match by the `digest=` parameter.
fn retry_key(seen: &Seen) -> String {
    match seen.path.split_once("digest=") {
        Some((_, digest)) if seen.kind == Some(Kind::PutUpload) => digest.to_string(),
        _ => seen.path.clone(),
    }
}

/// The request rule `rule` faulted and the first later request of the same kind and
/// target: its retry. (For requests that parallel operations share, such as a token or an
/// upload start, that may be another operation's; the `retrying` warning is checked too.)
fn fault_and_retry(proxy: &FaultProxy, rule: usize) -> Option<(Seen, Seen)> {
    let seen = proxy.requests();
    let faulted = seen.iter().position(|s| s.rule == Some(rule))?;
    let retry = seen[faulted + 1..]
        .iter()
        .find(|s| s.kind == seen[faulted].kind && retry_key(s) == retry_key(&seen[faulted]))?;
    Some((seen[faulted].clone(), retry.clone()))
}

/// What a run must end in.
#[derive(Clone, Debug)]
enum Expect {
    /// The correct image, after a retry of each faulted request (and `retrying` warnings).
    Retried,
    /// The correct image, no retry (a delay; a 404 to a HEAD, which means "absent").
    Succeeds,
    /// Exit 1 with one error line naming registry and repository and containing all of
    /// these; no retry, and no tag.
    Fails(Vec<&'static str>),
}

/// Faults for one slot in one run. Transient faults come in groups of up to three, one
/// request each, in order: the request fails, its retry meets the next fault, and so on;
/// the default policy's fourth attempt then succeeds. So one run also shows that kobuild
/// survives the most consecutive failures its policy allows.
struct Case {
    slot: Slot,
    faults: Vec<Fault>,
    /// For each fault; None: forever.
    times: Option<usize>,
    expect: Expect,
}

/// Runs the cases four at a time and returns one report line per case, with the failures.
fn run_cases(world: &World, cases: Vec<Case>) -> (Vec<String>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let (outcome, problem) = run_case(world, case);
                    results.lock().unwrap().push((i, outcome, problem));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (i, outcome, problem) in results {
        let c = &cases[i];
        let faults: Vec<String> = c.faults.iter().map(Fault::label).collect();
        let line = format!("{:<26} {:<30} → {outcome}", c.slot.name, faults.join(", "));
        if let Some(p) = problem {
            failures.push(format!("{line}\n    PROBLEM: {p}"));
        }
        report.push(line);
    }
    (report, failures)
}

/// Runs one case; returns the outcome for the report and what is wrong, if anything.
fn run_case(world: &World, case: &Case) -> (String, Option<String>) {
    let rules: Vec<Rule> = case
        .faults
        .iter()
        .map(|fault| Rule {
            kind: Some(case.slot.kind),
            path: case.slot.path.clone(),
            fault: fault.clone(),
            times: case.times,
        })
        .collect();
    let mut indices = Vec::new();
    let run = world.run(case.slot.base, |target, source| {
        let proxy = match case.slot.side {
            Side::Target => target,
            Side::Base => source,
        };
        indices = rules.into_iter().map(|r| proxy.add(r)).collect();
    });
    let proxy = run.proxy(case.slot.side);
    let stderr = run.stderr();
    let context = || format!("\n    stderr:\n{}", indent(&stderr));
    let secs = run.elapsed.as_secs_f64();
    let retries = stderr.matches("retrying in").count();
    // The truncated answer to /v2/ still has its status and challenge: no retry needed.
    let needs_no_retry = |f: &Fault| {
        matches!(f, Fault::Delay(_))
            || (matches!(f, Fault::Truncate) && case.slot.kind == Kind::Ping)
    };
    for (&i, fault) in indices.iter().zip(&case.faults) {
        if proxy.hits(i) == 0 {
            let problem = format!("fault {} never applied{}", fault.label(), context());
            return ("not reached".into(), Some(problem));
        }
    }
    match &case.expect {
        Expect::Retried | Expect::Succeeds => {
            if !run.out.status.success() {
                return (
                    format!("FAILED ({:?})", run.out.status.code()),
                    Some(format!("the build failed{}", context())),
                );
            }
            if let Err(e) = world.check_image(&run) {
                return ("wrong image".into(), Some(format!("{e}{}", context())));
            }
            if matches!(case.expect, Expect::Succeeds) {
                return if retries > 0 {
                    (
                        "ok, but retried".into(),
                        Some(format!("an unneeded retry{}", context())),
                    )
                } else {
                    (format!("image ok, no retry ({secs:.1} s)"), None)
                };
            }
            let mut gaps = Vec::new();
            for (&i, fault) in indices.iter().zip(&case.faults) {
                match fault_and_retry(proxy, i) {
                    Some((f, r)) => gaps.push(r.at.duration_since(f.at).as_millis().to_string()),
                    None if needs_no_retry(fault) => gaps.push("-".into()),
                    None => {
                        let problem = format!("no retry after {}{}", fault.label(), context());
                        return ("ok, no retry seen".into(), Some(problem));
                    }
                }
            }
            let needed = case.faults.iter().filter(|f| !needs_no_retry(f)).count();
            if retries < needed {
                let problem = format!("{retries} `retrying` warnings, expected {needed}");
                return ("ok".into(), Some(format!("{problem}{}", context())));
            }
            // Retry-After: 1 must give a wait of exactly 1 s (no jitter on the server's ask).
            let asked = case
                .faults
                .iter()
                .any(|f| matches!(f, Fault::Status { retry_after: Some(r), .. } if r == "1"));
            if asked && !stderr.contains("retrying in 1000 ms") {
                let problem = format!("Retry-After: 1 not honoured{}", context());
                return ("ok".into(), Some(problem));
            }
            (
                format!(
                    "image ok, {retries} retries (waits {} ms; {secs:.1} s)",
                    gaps.join("/")
                ),
                None,
            )
        }
        Expect::Fails(markers) => {
            let line = match run.error_line(case.slot.side) {
                Ok(line) => line,
                Err(e) => return ("bad failure".into(), Some(format!("{e}{}", context()))),
            };
            let outcome = format!("exit 1: {}", line.trim_start_matches("error: "));
            if let Some(m) = markers.iter().find(|m| !line.contains(**m)) {
                return (outcome, Some(format!("the error lacks {m:?}")));
            }
            if retries > 0 {
                return (
                    outcome,
                    Some(format!("retried a permanent failure{}", context())),
                );
            }
            if world.tag_exists(&run) {
                return (outcome, Some("a tag was created".into()));
            }
            (outcome, None)
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}

fn finish(title: &str, report: Vec<String>, failures: Vec<String>, started: Instant) {
    eprintln!(
        "{title} ({} runs, {:.1} s):\n{}",
        report.len(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases went wrong:\n{}",
        failures.len(),
        report.len(),
        failures.join("\n")
    );
}

#[test]
fn transient_faults_on_every_request_kind_are_retried() {
    let started = Instant::now();
    let world = World::start();
    let groups: [(Vec<Fault>, Expect); 4] = [
        (
            vec![Fault::status(408), Fault::status(500), Fault::status(502)],
            Expect::Retried,
        ),
        (
            vec![
                Fault::status(503),
                Fault::status(504),
                Fault::retry_after(429, "1"),
            ],
            Expect::Retried,
        ),
        (vec![Fault::Reset, Fault::Truncate], Expect::Retried),
        (
            vec![Fault::Delay(Duration::from_millis(300))],
            Expect::Succeeds,
        ),
    ];
    let mut cases = Vec::new();
    for slot in world.slots() {
        for (faults, expect) in &groups {
            cases.push(Case {
                slot: slot.clone(),
                faults: faults.clone(),
                times: Some(1),
                expect: expect.clone(),
            });
        }
    }
    let (report, failures) = run_cases(&world, cases);
    finish("transient faults", report, failures, started);
}

#[test]
fn permanent_faults_fail_fast_with_one_clear_line() {
    let started = Instant::now();
    let world = World::start();
    let mut cases = Vec::new();
    for slot in world.slots() {
        for code in [400, 401, 403, 404] {
            let expect = match (code, slot.kind) {
                // A 404 to a HEAD means "not there": kobuild uploads or tags it.
                (404, Kind::HeadBlob | Kind::HeadManifest) => Expect::Succeeds,
                (401, Kind::Ping) => Expect::Fails(vec!["401", "WWW-Authenticate"]),
                (401, _) => Expect::Fails(vec!["authentication to", "docker login"]),
                (403, Kind::Ping) => Expect::Fails(vec!["HTTP 403", "denied"]),
                (403, _) => Expect::Fails(vec!["denied", "credentials"]),
                (404, Kind::Ping) => Expect::Fails(vec!["404", "address"]),
                (404, Kind::GetManifest | Kind::GetBlob) => Expect::Fails(vec!["not found"]),
                (404, _) => Expect::Fails(vec!["HTTP 404", "check"]),
                _ => Expect::Fails(vec!["HTTP 400", "refused"]),
            };
            cases.push(Case {
                slot: slot.clone(),
                faults: vec![Fault::status(code)],
                times: None,
                expect,
            });
        }
    }
    let slots = world.slots();
    let slot = |kind: Kind, path: Option<&str>| {
        slots
            .iter()
            .find(|s| s.kind == kind && s.path.as_deref().is_none_or(|p| Some(p) == path))
            .cloned()
            .unwrap()
    };
    let put_manifest = slot(Kind::PutManifestDigest, None);
    cases.push(Case {
        slot: put_manifest.clone(),
        faults: vec![Fault::registry_error(
            400,
            "MANIFEST_INVALID",
            "manifest invalid",
        )],
        times: None,
        expect: Expect::Fails(vec!["MANIFEST_INVALID", "rejects this manifest"]),
    });
    // Registry forgot a blob: kobuild checks every blob again (and re-uploads what is
    // missing) before giving up.
    cases.push(Case {
        slot: put_manifest.clone(),
        faults: vec![Fault::registry_error(
            400,
            "MANIFEST_BLOB_UNKNOWN",
            "blob unknown to registry",
        )],
        times: Some(1),
        expect: Expect::Succeeds,
    });
    cases.push(Case {
        slot: put_manifest,
        faults: vec![Fault::registry_error(
            400,
            "MANIFEST_BLOB_UNKNOWN",
            "blob unknown to registry",
        )],
        times: None,
        expect: Expect::Fails(vec!["MANIFEST_BLOB_UNKNOWN", "blobs"]),
    });
    // Everything pulled is checked against its digest (a manifest pulled by tag against the
    // registry's Docker-Content-Digest). A mismatch is reported at once, not retried: over
    // TLS (every real registry) bytes cannot change on the way unnoticed, so a mismatch
    // means the registry or a proxy serves wrong content, which another try would get
    // again; and a retry would hide a corrupting middlebox. The message says what happened.
    for s in slots
        .iter()
        .filter(|s| matches!(s.kind, Kind::GetManifest | Kind::GetBlob))
    {
        cases.push(Case {
            slot: s.clone(),
            faults: vec![Fault::Corrupt],
            times: None,
            expect: Expect::Fails(vec!["digest mismatch", "expected sha256:", "corrupted"]),
        });
    }
    let (report, failures) = run_cases(&world, cases);
    finish("permanent faults", report, failures, started);
}

/// A fault that does not go away: kobuild gives up after the default policy's 4 attempts,
/// waiting 100-200, 200-400 and 400-800 ms between them (at most 1.4 s in all), and says
/// what kept failing.
#[test]
fn endless_transient_faults_give_up_within_the_retry_bound() {
    let world = World::start();
    let markers_503: &[&str] = &["HTTP 503", "try again later"];
    let markers_reset: &[&str] = &["connection lost", "check the network"];
    let markers_504: &[&str] = &["HTTP 504", "try again later"];
    let cases = [
        (
            Side::Target,
            Rule::always(Kind::PutUpload, Fault::status(503)),
            markers_503,
        ),
        (
            Side::Base,
            Rule::always(Kind::GetBlob, Fault::Reset).path(&world.base_layer),
            markers_reset,
        ),
        (
            Side::Base,
            Rule::always(Kind::Ping, Fault::status(504)),
            markers_504,
        ),
    ];
    for (side, rule, markers) in cases {
        let label = format!("{:?} {}", rule.kind.unwrap(), rule.fault.label());
        let mut index = 0;
        let run = world.run(BaseAt::Remote, |target, source| {
            index = match side {
                Side::Target => target.add(rule),
                Side::Base => source.add(rule),
            };
        });
        let line = run
            .error_line(side)
            .unwrap_or_else(|e| panic!("{label}: {e}\n{}", run.stderr()));
        for m in markers {
            assert!(line.contains(m), "{label}: {line}");
        }
        assert!(!world.tag_exists(&run), "{label}: tagged");
        // The attempts on the request that failed: by retry key, the most any one saw.
        let seen: Vec<Seen> = run
            .proxy(side)
            .requests()
            .into_iter()
            .filter(|s| s.rule == Some(index))
            .collect();
        let keys: BTreeSet<String> = seen.iter().map(retry_key).collect();
        let (key, attempts) = keys
            .iter()
            .map(|k| (k, seen.iter().filter(|s| &retry_key(s) == k).count()))
            .max_by_key(|(_, n)| *n)
            .unwrap();
        assert_eq!(attempts, 4, "{label}: attempts on {key}\n{}", run.stderr());
        let times: Vec<Instant> = seen
            .iter()
            .filter(|s| &retry_key(s) == key)
            .map(|s| s.at)
            .collect();
        for (i, pair) in times.windows(2).enumerate() {
            let gap = pair[1].duration_since(pair[0]);
            let full = Duration::from_millis(200 << i);
            assert!(
                gap + Duration::from_millis(20) >= full / 2
                    && gap <= full + Duration::from_millis(400),
                "{label}: wait {i} was {} ms, expected {}-{} ms",
                gap.as_millis(),
                full.as_millis() / 2,
                full.as_millis()
            );
        }
        let total = times[3].duration_since(times[0]);
        assert!(total <= Duration::from_millis(2_400), "{label}: {total:?}");
        eprintln!(
            "{label}: gave up after 4 attempts in {} ms ({:.1} s run): {line}",
            total.as_millis(),
            run.elapsed.as_secs_f64()
        );
    }
}

/// Both registries behind a 2 MB/s link, both ways: the ~1.9 MB binary layer takes about a
/// second to upload, and nothing times out or retries.
#[test]
fn a_slow_link_finishes_without_spurious_timeouts() {
    let world = World::start();
    const RATE: u64 = 2_000_000;
    let run = world.run(BaseAt::Remote, |target, source| {
        target.add(Rule::every_request(Fault::Throttle(RATE)));
        source.add(Rule::every_request(Fault::Throttle(RATE)));
    });
    assert!(run.out.status.success(), "{}", run.stderr());
    world.check_image(&run).unwrap();
    assert!(!run.stderr().contains("retrying"), "{}", run.stderr());
    let biggest = world.layers.last().unwrap();
    let upload = run
        .target
        .requests()
        .into_iter()
        .filter(|s| {
            s.kind == Some(Kind::PutUpload) && s.path.contains(&biggest.replace(':', "%3A"))
        })
        .count();
    assert_eq!(upload, 1, "one upload of the binary layer");
    assert!(
        run.elapsed >= Duration::from_millis(800),
        "the link was not slow: {:?}",
        run.elapsed
    );
    assert!(run.elapsed < Duration::from_secs(8), "{:?}", run.elapsed);
    eprintln!("slow link: {:.1} s", run.elapsed.as_secs_f64());

    // A registry slow to answer (2 s before the manifest PUT is even read) is waited for.
    let run = world.run(BaseAt::Remote, |target, _| {
        target.add(Rule::once(
            Kind::PutManifestDigest,
            Fault::Delay(Duration::from_secs(2)),
        ));
    });
    assert!(run.out.status.success(), "{}", run.stderr());
    world.check_image(&run).unwrap();
    assert!(!run.stderr().contains("retrying"), "{}", run.stderr());
    // (The SBOM kobuild attaches afterwards is another manifest PUT, to another path.)
    let delayed = run.target.requests();
    let delayed = delayed.iter().find(|s| s.rule.is_some()).unwrap();
    let puts = run
        .target
        .requests()
        .iter()
        .filter(|s| s.path == delayed.path)
        .count();
    assert_eq!(puts, 1, "the delayed manifest PUT was sent once");
}

/// Basic authentication (an htpasswd registry) passes through the proxy: a 503 on every
/// request kind at once is retried; a wrong password is one line.
#[test]
fn basic_auth_registry_retries_and_wrong_password() {
    let registry = Registry::start(RegistryKind::Auth);
    let proxy = FaultProxy::start(&registry);
    for kind in [
        Kind::Ping,
        Kind::HeadBlob,
        Kind::PostUpload,
        Kind::PutUpload,
        Kind::HeadManifest,
        Kind::PutManifestDigest,
        Kind::PutTag,
    ] {
        proxy.add(Rule::once(kind, Fault::status(503)));
    }
    let kb = Kobuild::new();
    let config_dir = kb.dir().join("docker");
    std::fs::create_dir_all(&config_dir).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            registry.username(),
            registry.password()
        ))
    };
    let write = |auth: &str| {
        std::fs::write(
            config_dir.join("config.json"),
            serde_json::to_vec(&serde_json::json!({"auths": {proxy.host(): {"auth": auth}}}))
                .unwrap(),
        )
        .unwrap()
    };
    write(&auth);
    let repo = format!("{}/basic", proxy.host());
    let refs = kb.ok(&["./hello", "--repo", &repo, "--base", "scratch", "-t", TAG]);
    let raw = skopeo_inspect_raw(&format!("{}/basic/hello:{TAG}", registry.host()), &registry);
    assert_eq!(sha256_digest(&raw), digest_of(&refs[0]));
    let seen = proxy.requests();
    for kind in [
        Kind::Ping,
        Kind::PutUpload,
        Kind::PutManifestDigest,
        Kind::PutTag,
    ] {
        let faulted = seen
            .iter()
            .filter(|s| s.kind == Some(kind) && s.rule.is_some())
            .count();
        let all = seen.iter().filter(|s| s.kind == Some(kind)).count();
        assert!(
            faulted == 1 && all >= 2,
            "{kind:?}: {faulted} faulted of {all}"
        );
    }

    {
        use base64::Engine as _;
        write(&base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:wrong")));
    }
    let stderr = kb.fails(
        &["./hello", "--repo", &repo, "--base", "scratch", "-t", "v2"],
        1,
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!(
            "authentication to {} failed for basic/hello",
            proxy.host()
        )) && errors[0].contains("docker login"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    let mut inspect = vec!["inspect".to_string(), "--raw".to_string()];
    inspect.extend(registry.skopeo_flags("--"));
    inspect.push(format!("docker://{}/basic/hello:v2", registry.host()));
    let out = skopeo(&inspect.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("manifest unknown"),
        "no tag v2: {out:?}"
    );
}

#[test]
fn proxy_request_kinds() {
    let cases = [
        ("GET", "/v2/", Some(Kind::Ping)),
        (
            "GET",
            "/token?scope=repository%3Aa%3Apull",
            Some(Kind::Token),
        ),
        ("HEAD", "/v2/a/b/blobs/sha256:00", Some(Kind::HeadBlob)),
        ("GET", "/v2/a/blobs/sha256:00", Some(Kind::GetBlob)),
        ("HEAD", "/v2/a/manifests/v1", Some(Kind::HeadManifest)),
        ("GET", "/v2/a/manifests/sha256:00", Some(Kind::GetManifest)),
        ("POST", "/v2/a/blobs/uploads/", Some(Kind::PostUpload)),
        (
            "POST",
            "/v2/a/blobs/uploads/?mount=sha256%3A00&from=b",
            Some(Kind::Mount),
        ),
        (
            "PATCH",
            "/v2/a/blobs/uploads/u1?_state=x",
            Some(Kind::PatchUpload),
        ),
        (
            "PUT",
            "/v2/a/blobs/uploads/u1?_state=x&digest=sha256%3A00",
            Some(Kind::PutUpload),
        ),
        (
            "PUT",
            "/v2/a/manifests/sha256:00",
            Some(Kind::PutManifestDigest),
        ),
        ("PUT", "/v2/a/manifests/latest", Some(Kind::PutTag)),
        ("DELETE", "/v2/a/blobs/uploads/u1", Some(Kind::DeleteUpload)),
        ("GET", "/v2/_catalog", None),
    ];
    for (method, path, kind) in cases {
        assert_eq!(Kind::of(method, path), kind, "{method} {path}");
    }
}

/// `--registry-timeout 2`: a request on which nothing moves for 2 s fails and is retried.
/// Both stalls here happen once: the binary layer's upload, whose body the proxy stops
/// reading (on Linux the kernel notices, `TCP_USER_TIMEOUT`: the bytes kobuild handed over
/// stay unacknowledged), and a manifest pull whose body stops halfway (kobuild's own timer).
#[test]
fn a_stall_is_retried_after_the_registry_timeout() {
    let world = World::start();
    let biggest = world.layers.last().unwrap().replace(':', "%3A");
    let (mut upload, mut pull) = (0, 0);
    let run = world.run_with(
        BaseAt::Remote,
        &["--registry-timeout", "2"],
        |target, source| {
            upload = target.add(Rule::once(Kind::PutUpload, Fault::Stall).path(&biggest));
            pull = source
                .add(Rule::once(Kind::GetManifest, Fault::StallBody).path("/manifests/sha256:"));
        },
    );
    let stderr = run.stderr();
    assert!(run.out.status.success(), "{stderr}");
    world.check_image(&run).unwrap();
    assert_eq!(
        stderr.matches("no data moved for 2 s").count(),
        2,
        "one retry per stall: {stderr}"
    );
    for (name, proxy, rule) in [
        ("upload", &run.target, upload),
        ("manifest pull", &run.source, pull),
    ] {
        let (stalled, retry) = fault_and_retry(proxy, rule)
            .unwrap_or_else(|| panic!("the stalled {name} was not retried: {stderr}"));
        let gap = retry.at.duration_since(stalled.at);
        assert!(
            gap >= Duration::from_secs(2) && gap < Duration::from_secs(5),
            "{name}: retried {gap:?} after the stall began"
        );
    }
    eprintln!("two stalls retried: {:.1} s", run.elapsed.as_secs_f64());
}

/// A registry that stalls every try of a request: after the policy's 4 tries of 1 s each,
/// one line names the registry, the repository and the timeout, and nothing is tagged.
#[test]
fn a_registry_that_always_stalls_fails_with_the_timeout() {
    let world = World::start();
    let mut rule = 0;
    let run = world.run_with(BaseAt::Remote, &["--registry-timeout", "1"], |target, _| {
        rule = target.add(Rule::always(Kind::PutManifestDigest, Fault::Stall))
    });
    let line = run
        .error_line(Side::Target)
        .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
    for part in [
        "push of manifest",
        "no response within 1 s of the request's last byte going out",
        "--registry-timeout",
    ] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    assert_eq!(run.target.hits(rule), 4, "{}", run.stderr());
    assert!(!world.tag_exists(&run), "tagged");
    let times: Vec<Instant> = run
        .target
        .requests()
        .iter()
        .filter(|s| s.rule == Some(rule))
        .map(|s| s.at)
        .collect();
    let spent = times[3].duration_since(times[0]);
    // Three stalls of 1 s and the waits between (at most 1.4 s) before the last try.
    assert!(
        spent >= Duration::from_millis(3_350) && spent < Duration::from_secs(6),
        "{spent:?}"
    );
    eprintln!(
        "gave up after {:.1} s of stalls ({:.1} s run): {line}",
        spent.as_secs_f64(),
        run.elapsed.as_secs_f64()
    );
}

/// The timeout is for silence, not for the whole request: with `--registry-timeout 2`, the
/// binary layer's upload over a 400 kB/s link takes over 4 s, bytes moving all the time, and
/// nothing times out or retries.
#[test]
fn a_slow_upload_outlasts_the_registry_timeout() {
    let world = World::start();
    let run = world.run_with(BaseAt::Remote, &["--registry-timeout", "2"], |target, _| {
        target.add(Rule::every_request(Fault::Throttle(400_000)));
    });
    let stderr = run.stderr();
    assert!(run.out.status.success(), "{stderr}");
    world.check_image(&run).unwrap();
    assert!(!stderr.contains("retrying"), "{stderr}");
    let seen = run.target.requests();
    let biggest = world.layers.last().unwrap().replace(':', "%3A");
    let uploads: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.kind == Some(Kind::PutUpload) && s.path.contains(&biggest))
        .collect();
    assert_eq!(uploads.len(), 1, "one upload of the binary layer");
    // The image manifest goes up after every blob, so after the upload ended.
    let manifest = seen
        .iter()
        .find(|s| s.kind == Some(Kind::PutManifestDigest))
        .expect("a manifest PUT");
    let took = manifest.at.duration_since(uploads[0].at);
    assert!(took > Duration::from_secs(4), "the upload took {took:?}");
    eprintln!(
        "slow upload: {:.1} s with a 2 s timeout ({:.1} s run)",
        took.as_secs_f64(),
        run.elapsed.as_secs_f64()
    );
}

/// A response body trickling at 1 byte/s never leaves a gap as long as the timeout, so the
/// idle timer alone let a manifest pull take minutes; the minimum body rate cuts it off
/// soon after the timeout, says so, and the retry succeeds.
#[test]
fn a_trickling_response_is_cut_off_and_retried() {
    let world = World::start();
    let run = world.run_with(BaseAt::Remote, &["--registry-timeout", "2"], |_, source| {
        source.add(Rule::once(Kind::GetManifest, Fault::Throttle(1)).path("/manifests/sha256:"));
    });
    let stderr = run.stderr();
    assert!(run.out.status.success(), "{stderr}");
    world.check_image(&run).unwrap();
    assert!(stderr.contains("slower than 1024 B/s"), "{stderr}");
    // Generous: at 1 byte/s the manifest alone took minutes.
    assert!(run.elapsed < Duration::from_secs(90), "{:?}", run.elapsed);
    eprintln!(
        "trickle cut off and retried: {:.1} s",
        run.elapsed.as_secs_f64()
    );
}

/// A registry that reads every byte of a large upload and never answers: everything sent
/// is acknowledged, so only kobuild's timer ends the try. With `--registry-timeout 5` the
/// retry follows about 5 s after the last byte went, not the 2 minutes the operating
/// system's buffers could take to drain at the slowest rate assumed: the allowance for them
/// follows the rate at which the body was taken.
#[test]
fn a_registry_that_swallows_a_large_upload_is_retried_near_the_timeout() {
    let (app, dir) = app_with_noise();
    let kb = Kobuild::new();
    // The layers are reproducible: a layout build names the large one's digest.
    let layout = kb.dir().join("layout");
    let layout_arg = layout.to_str().unwrap();
    let common = [".", "--base", "scratch", "--registry-timeout", "5"];
    let out = kb.run_in(
        &dir,
        &[
            &common[..],
            &["--push=false", "--oci-layout-path", layout_arg],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        layout_top(&layout)["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let largest = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .unwrap();
    assert!(largest["size"].as_u64().unwrap() > 24 << 20, "{largest}");
    let digest = largest["digest"].as_str().unwrap().replace(':', "%3A");

    let registry = Registry::start(RegistryKind::Plain);
    let proxy = FaultProxy::start(&registry);
    let rule = proxy.add(Rule::once(Kind::PutUpload, Fault::Swallow).path(&digest));
    let repo = format!("{}/apps", proxy.host());
    let out = kb.run_in(&dir, &[&common[..], &["--repo", &repo]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no response within 5 s of the request's last byte going out"),
        "{stderr}"
    );
    let (swallowed, retry) = fault_and_retry(&proxy, rule).expect("a retry");
    let gap = retry.at.duration_since(swallowed.at);
    // 5 s, the body's own time and the pause before the retry (under 1 s).
    assert!(
        gap >= Duration::from_secs(5) && gap < Duration::from_secs(10),
        "retried {gap:?} after the upload began: {stderr}"
    );
    eprintln!(
        "swallowed 24 MiB upload retried after {:.1} s",
        gap.as_secs_f64()
    );
    drop(app);
}

/// The hello app with 24 MiB of kodata that gzip cannot shrink: a layer well over what the
/// operating system is assumed to buffer (8 MiB). Returns the copy and the app's directory.
fn app_with_noise() -> (tempfile::TempDir, std::path::PathBuf) {
    let app = app_copy("hello");
    let dir = app.path().join("hello");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::create_dir_all(dir.join("kodata")).unwrap();
    std::fs::write(dir.join("kodata/noise"), noise).unwrap();
    (app, dir)
}

/// The drain allowance that follows a large body's pace must not call a slow one stalled:
/// 24 MiB read by the registry at 4 MB/s (6 s, the loopback buffers filling first) with
/// `--registry-timeout 2` goes up once, with no retry.
#[test]
fn a_large_slow_upload_is_not_called_a_stall() {
    let (_app, dir) = app_with_noise();
    let registry = Registry::start(RegistryKind::Plain);
    let proxy = FaultProxy::start(&registry);
    proxy.add(Rule::always(Kind::PutUpload, Fault::Throttle(4_000_000)));
    proxy.add(Rule::always(Kind::PatchUpload, Fault::Throttle(4_000_000)));
    let kb = Kobuild::new();
    let repo = format!("{}/apps", proxy.host());
    let start = Instant::now();
    let out = kb.run_in(
        &dir,
        &[
            ".",
            "--base",
            "scratch",
            "--registry-timeout",
            "2",
            "--repo",
            &repo,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    let took = start.elapsed();
    assert!(took > Duration::from_secs(6), "{took:?}");
    eprintln!("large slow upload: {:.1} s", took.as_secs_f64());
}

/// The response head's bytes are invisible to kobuild (reqwest parses it), so a head that
/// arrives slowly is timed like a silent one, but named for what happened: a manifest
/// pull's head at 200 B/s (about 2 s) is within `--registry-timeout 8` and not retried;
/// at 1 B/s with `--registry-timeout 2` it is cut off as "no response within 2 s", never as
/// "no data moved", and the retry succeeds.
#[test]
fn a_slow_response_head_is_timed_but_not_called_a_stall() {
    let world = World::start();
    let slow = |secs: &str, rate| {
        world.run_with(
            BaseAt::Remote,
            &["--registry-timeout", secs],
            |_, source| {
                source.add(
                    Rule::once(Kind::GetManifest, Fault::SlowHead(rate)).path("/manifests/sha256:"),
                );
            },
        )
    };
    let run = slow("8", 200);
    let stderr = run.stderr();
    assert!(run.out.status.success(), "{stderr}");
    world.check_image(&run).unwrap();
    assert!(!stderr.contains("retrying"), "{stderr}");

    let run = slow("2", 1);
    let stderr = run.stderr();
    assert!(run.out.status.success(), "{stderr}");
    world.check_image(&run).unwrap();
    assert!(
        stderr.contains("no response within 2 s of the request's last byte going out"),
        "{stderr}"
    );
    assert!(!stderr.contains("no data moved"), "{stderr}");
    eprintln!(
        "slow head cut off and retried: {:.1} s",
        run.elapsed.as_secs_f64()
    );
}
