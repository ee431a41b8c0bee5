//! Conformance: the same project built by the real Skaffold v2.24.0 (ko builder) or ko
//! v0.19.1 and by kobuild, into one local registry on one base image, and the results
//! compared: artifacts.json, `-q` output, tags, image names, layer DiffIDs, config and
//! manifest annotations. What differs on purpose is listed once, in `KEPT`, and each entry
//! is asserted to be the difference it claims. The peers come from `scripts/peers --env`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::kobuild::*;
use crate::common::*;
use serde_json::Value;

/// Differences kept on purpose: (what, why). `compare` removes exactly these before it
/// asserts equality, and checks that each removed part does differ as described.
const KEPT: &[(&str, &str)] = &[
    (
        "config.author",
        "kobuild names itself as the image's author, where ko writes github.com/ko-build/ko",
    ),
    (
        "config.created, config.history",
        "timestamps and history entries are written by each tool; they do not change what runs",
    ),
    (
        "kodata directory entries under Skaffold",
        "Skaffold v2.24.0 embeds ko v0.18.1, whose kodata layer has no entries for kodata's \
         subdirectories; kobuild writes them, as ko v0.19.1 does (same DiffID as ko's)",
    ),
    (
        "digests of manifests and layer blobs",
        "compressed bytes differ between Go's compress/gzip and kobuild's gzip; the DiffIDs \
         (the uncompressed layers) are compared and equal",
    ),
];

fn peer(var: &str) -> PathBuf {
    let path = std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run `eval \"$(scripts/peers --env)\"` (CI always sets it)")
    });
    PathBuf::from(path)
}

/// The environment both peers and kobuild run with: one warm Go cache, no network.
fn go_env(home: &Path) -> Vec<(String, String)> {
    let gocache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache");
    vec![
        ("HOME".into(), home.display().to_string()),
        ("GOCACHE".into(), gocache.display().to_string()),
        ("GOTOOLCHAIN".into(), "local".into()),
        ("GOFLAGS".into(), "-mod=mod".into()),
        ("GOPROXY".into(), "off".into()),
        (
            "DOCKER_CONFIG".into(),
            home.join("docker").display().to_string(),
        ),
        ("GOMODCACHE".into(), gomodcache()),
    ]
}

/// The machine's module cache: HOME is per run, the downloaded modules are not.
fn gomodcache() -> String {
    let out = run_checked(Command::new("go").args(["env", "GOMODCACHE"]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `skaffold ARGS` in `dir` with its own HOME (so its own artifact cache).
fn skaffold(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(peer("KOBUILD_SKAFFOLD"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("SKAFFOLD_DEFAULT_REPO")
        .envs(go_env(home.path()))
        .envs(extra.iter().copied());
    output_within(&mut cmd, std::time::Duration::from_secs(120))
}

fn kobuild(extra: &[(&str, &str)]) -> Kobuild {
    let mut kb = Kobuild::new()
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOMODCACHE", &gomodcache());
    for (k, v) in extra {
        kb = kb.env(k, v);
    }
    kb
}

fn stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A one-package Go app in a git repository, with a skaffold.yaml whose `build:` is `build`.
fn app(root: &Path, base: &str, build: &str) -> PathBuf {
    let dir = root.join("app");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("go.mod"), "module example.com/conf\n\ngo 1.22\n").unwrap();
    fs::write(
        dir.join("main.go"),
        "package main\n\nimport \"fmt\"\n\nvar version = \"dev\"\n\nfunc main() { fmt.Println(\"conf\", version) }\n",
    )
    .unwrap();
    fs::write(
        dir.join("skaffold.yaml"),
        format!(
            "apiVersion: skaffold/v4beta13\nkind: Config\nbuild:\n{build}\n  artifacts:\n    - image: conf\n      ko:\n        fromImage: {base}\n    - image: ko://example.com/conf\n      ko:\n        fromImage: {base}\nprofiles:\n  - name: other\n    activation:\n      - env: CONF_AUTO=1\n    build:\n      artifacts:\n        - image: other\n          ko:\n            fromImage: {base}\n"
        ),
    )
    .unwrap();
    let git = |args: &[&str]| {
        run_checked(
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(&dir),
        );
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "app"]);
    git(&["tag", "v1.2.3"]);
    dir
}

/// The parts of a pushed image to compare: manifest annotations, DiffIDs and config, with
/// `KEPT`'s parts taken out (and returned apart).
fn image(reference: &str, reg: &Registry) -> (Value, Value) {
    let manifest: Value =
        serde_json::from_slice(&skopeo_inspect_raw(&pinned(reference), reg)).unwrap();
    let mut config = skopeo_inspect_config(&pinned(reference), reg);
    let annotations = manifest["annotations"].clone();
    let kept = serde_json::json!({
        "author": config["author"].take(),
        "created": config["created"].take(),
        "history": config["history"].take(),
    });
    (
        serde_json::json!({"annotations": annotations, "config": config}),
        kept,
    )
}

/// Asserts the two images equal but for `KEPT`, and that the kept parts are there.
fn compare(peer_ref: &str, ours: &str, reg: &Registry) {
    let (theirs, their_kept) = image(peer_ref, reg);
    let (mine, kept) = image(ours, reg);
    assert_eq!(theirs, mine, "{peer_ref} vs {ours}; kept apart: {KEPT:?}");
    assert_ne!(peer_ref, ours, "{}", KEPT[3].1);
    assert_eq!(
        their_kept["author"], "github.com/ko-build/ko",
        "{}",
        KEPT[0].1
    );
    assert_eq!(kept["author"], "kobuild", "{}", KEPT[0].1);
}

/// `repo:tag@sha256:…` → `repo:tag`: digests differ (see `KEPT`).
fn undigested(reference: &str) -> &str {
    reference.split('@').next().unwrap()
}

struct Setup {
    reg: Registry,
    _dir: tempfile::TempDir,
    base: String,
    root: PathBuf,
}

fn setup() -> Setup {
    let reg = Registry::start(RegistryKind::Plain);
    let dir = tempfile::tempdir().unwrap();
    let layout = make_base(&dir.path().join("base"), "v1", false, &["linux/amd64"]);
    push_base(&reg, &layout, "v1", "base/static");
    let base = format!("{}/base/static:v1", reg.host());
    let root = dir.path().to_path_buf();
    Setup {
        reg,
        _dir: dir,
        base,
        root,
    }
}

#[test]
fn skaffold_builds_match() {
    let s = setup();
    let policies = [
        ("gitCommit", "  tagPolicy:\n    gitCommit: {}"),
        ("sha256", "  tagPolicy:\n    sha256: {}"),
        (
            "envTemplate",
            "  tagPolicy:\n    envTemplate:\n      template: \"{{.CONF_VERSION}}\"",
        ),
    ];
    // A bare host:port default repo, as scripts pass it.
    let repo = s.reg.host();
    for (i, (name, policy)) in policies.iter().enumerate() {
        let dir = app(&s.root.join(format!("p{i}")), &s.base, policy);
        let env = [("CONF_VERSION", "9.9.9")];
        // Outside the repository: an untracked file would make the next tag `-dirty`.
        let theirs_file = s.root.join(format!("theirs{i}.json"));
        let ours_file = s.root.join(format!("ours{i}.json"));
        let theirs = stdout(
            &skaffold(
                &dir,
                &[
                    "build",
                    "-q",
                    "--push",
                    "-d",
                    &repo,
                    "--file-output",
                    theirs_file.to_str().unwrap(),
                ],
                &env,
            ),
            &format!("skaffold build ({name})"),
        );
        let ours = stdout(
            &kobuild(&env).run_in(
                &dir,
                &[
                    "-q",
                    "-d",
                    &repo,
                    "--file-output",
                    ours_file.to_str().unwrap(),
                ],
            ),
            &format!("kobuild build ({name})"),
        );
        // `-q` prints `{{json .}}` without a trailing newline, as the file holds.
        assert!(!theirs.ends_with('\n') && !ours.ends_with('\n'), "{ours:?}");
        assert_eq!(fs::read_to_string(&theirs_file).unwrap(), theirs);
        assert_eq!(fs::read_to_string(&ours_file).unwrap(), ours);
        let (theirs, ours): (Value, Value) = (
            serde_json::from_str(&theirs).unwrap(),
            serde_json::from_str(&ours).unwrap(),
        );
        let builds = |v: &Value| -> Vec<(String, String)> {
            v["builds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["imageName"].as_str().unwrap().to_string(),
                        b["tag"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let (tb, ob) = (builds(&theirs), builds(&ours));
        assert_eq!(tb.len(), 2, "{theirs}");
        for ((ti, tt), (oi, ot)) in tb.iter().zip(&ob) {
            assert_eq!(ti, oi, "{name}");
            assert_eq!(undigested(tt), undigested(ot), "{name}");
            compare(tt, ot, &s.reg);
        }
        let expected_tag = match *name {
            "gitCommit" => "v1.2.3",
            "sha256" => "latest",
            _ => "9.9.9",
        };
        assert_eq!(undigested(&tb[0].1), format!("{repo}/conf:{expected_tag}"));
    }
}

#[test]
fn skaffold_cli_semantics_match() {
    let s = setup();
    let dir = app(
        &s.root,
        &s.base,
        "  tagPolicy:\n    envTemplate:\n      template: \"{{.CONF_MISSING}}\"",
    );
    let repo = format!("{}/team", s.reg.host());
    let both = |args: &[&str], env: &[(&str, &str)]| -> (Output, Output) {
        let theirs = skaffold(&dir, &[&["build"], args].concat(), env);
        let ours = kobuild(env).run_in(&dir, args);
        (theirs, ours)
    };
    let tags = |out: &Output, what: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(&stdout(out, what)).unwrap();
        let Some(builds) = v["builds"].as_array() else {
            return vec![v.to_string()];
        };
        builds
            .iter()
            .map(|b| {
                format!(
                    "{} {}",
                    b["imageName"].as_str().unwrap(),
                    undigested(b["tag"].as_str().unwrap())
                )
            })
            .collect()
    };

    // A missing envTemplate variable falls back to latest; -t replaces the policy.
    for args in [
        &["-q", "--push", "-d", &repo][..],
        &["-q", "--push", "-d", &repo, "-t", "given"][..],
        // --dry-run computes the tags only; -b keeps images containing the text.
        &["-q", "--dry-run", "-d", &repo, "-b", "conf"][..],
        &["-q", "--dry-run", "-d", &repo, "-b", "ko://"][..],
        &["-q", "--push", "-d", &repo, "-b", "nomatch"][..],
        // A profile auto-activated by the environment, and turned off with -p -NAME.
        &["-q", "--dry-run", "-d", &repo][..],
        &["-q", "--dry-run", "-d", &repo, "-p", "-other"][..],
        &[
            "-q",
            "--dry-run",
            "--cache-artifacts=false",
            "-d",
            &repo,
            "-o",
            "{{range .Builds}}{{.Tag}} {{end}}",
        ][..],
    ] {
        let env: &[(&str, &str)] =
            if args.contains(&"-p") || args.len() == 4 && args[1] == "--dry-run" {
                &[("CONF_AUTO", "1")]
            } else {
                &[]
            };
        let (theirs, ours) = both(args, env);
        if args.contains(&"-o") {
            assert_eq!(
                stdout(&theirs, "skaffold"),
                stdout(&ours, "kobuild"),
                "{args:?}"
            );
            continue;
        }
        assert_eq!(
            tags(&theirs, "skaffold"),
            tags(&ours, "kobuild"),
            "{args:?}"
        );
    }

    // Error cases: the same exit code (both are configuration errors).
    for args in [
        &["-p", "nosuch", "-d", &repo][..],
        &["-f", "missing.yaml"][..],
    ] {
        let (theirs, ours) = both(args, &[]);
        assert!(
            !theirs.status.success() && !ours.status.success(),
            "{args:?}"
        );
        assert_eq!(ours.status.code(), Some(2), "{args:?}");
    }
}

/// inputDigest tags, dry run: an artifact's own files, those of the artifacts it
/// `requires` (named from its own context), a kodata file listed in `dependencies`, and
/// after an edit of a required artifact's file.
#[test]
fn input_digest_tags_match_with_required_artifacts() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let files = [
        ("go.mod", "module example.com/req\n\ngo 1.22\n"),
        ("app/main.go", "package main\n\nfunc main() {}\n"),
        ("app/kodata/index.html", "<p>hi</p>\n"),
        (
            "base/main.go",
            "package main\n\nfunc main() { println(1) }\n",
        ),
        ("lib/lib.go", "package lib\n"),
    ];
    for (f, text) in files {
        fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        fs::write(dir.join(f), text).unwrap();
    }
    fs::write(
        dir.join("skaffold.yaml"),
        "apiVersion: skaffold/v4beta11\nkind: Config\nbuild:\n  tagPolicy:\n    inputDigest: {}\n  artifacts:\n  - image: app\n    context: app\n    requires:\n    - {image: base, alias: BASE}\n    ko:\n      dependencies:\n        paths: ['**/*.go', kodata]\n  - image: base\n    context: base\n    requires:\n    - {image: lib, alias: LIB}\n    ko: {}\n  - image: lib\n    context: lib\n    ko: {}\n",
    )
    .unwrap();
    let tags =
        |out: &Output, what: &str| -> Value { serde_json::from_str(&stdout(out, what)).unwrap() };
    let args = ["-q", "--dry-run", "-d", "localhost:5000"];
    let compare = |when: &str| {
        let theirs = tags(
            &skaffold(dir, &[&["build"][..], &args].concat(), &[]),
            "skaffold",
        );
        let ours = tags(&kobuild(&[]).run_in(dir, &args), "kobuild");
        assert_eq!(theirs, ours, "{when}");
        theirs
    };
    let before = compare("as written");
    fs::write(dir.join("lib/lib.go"), "package lib\n\nvar X = 1\n").unwrap();
    let after = compare("after an edit of lib");
    // The edit reaches every artifact that requires lib, directly or not.
    for i in 0..3 {
        assert_ne!(before["builds"][i]["tag"], after["builds"][i]["tag"], "{i}");
    }
}

/// ko's own test app under `root/ko/test`, in a module made from ko's go.mod (its
/// dependencies are in the module cache).
fn ko_test_module(root: &Path) -> PathBuf {
    let module = root.join("ko");
    let ko_src = Path::new(&gomodcache()).join("github.com/google/ko@v0.19.1");
    fs::create_dir_all(&module).unwrap();
    for f in ["go.mod", "go.sum"] {
        fs::copy(ko_src.join(f), module.join(f)).unwrap();
    }
    run_checked(
        Command::new("cp")
            .arg("-r")
            .arg(peer("KOBUILD_KO_TEST"))
            .arg(module.join("test")),
    );
    run_checked(Command::new("chmod").args(["-R", "u+w"]).arg(&module));
    module
}

/// ko's own test app (kodata with a subdirectory) built from a skaffold.yaml by Skaffold and
/// by kobuild: base and binary layers are the same; the kodata layers differ only by the
/// subdirectory's entry, which Skaffold's embedded ko v0.18.1 leaves out (see `KEPT`).
#[test]
fn skaffold_kodata_layers_differ_only_by_directory_entries() {
    let s = setup();
    let module = ko_test_module(&s.root);
    fs::write(
        module.join("skaffold.yaml"),
        format!(
            "apiVersion: skaffold/v4beta11\nkind: Config\nbuild:\n  tagPolicy:\n    envTemplate:\n      template: kept\n  artifacts:\n  - image: kotest\n    ko:\n      fromImage: {}\n      main: ./test\n",
            s.base
        ),
    )
    .unwrap();
    let repo = s.reg.host();
    let args = ["-q", "-d", repo.as_str()];
    let theirs = stdout(
        &skaffold(&module, &[&["build", "--push"][..], &args].concat(), &[]),
        "skaffold",
    );
    let ours = stdout(&kobuild(&[]).run_in(&module, &args), "kobuild");
    let tag = |out: &str| {
        let v: Value = serde_json::from_str(out).unwrap();
        v["builds"][0]["tag"].as_str().unwrap().to_string()
    };
    let (theirs, ours) = (tag(&theirs), tag(&ours));
    let diff_ids =
        |r: &str| skopeo_inspect_config(&pinned(r), &s.reg)["rootfs"]["diff_ids"].clone();
    let (t, o) = (diff_ids(&theirs), diff_ids(&ours));
    assert_eq!(t[0], o[0], "base");
    assert_eq!(t[2], o[2], "binary");
    assert_ne!(t[1], o[1], "{}", KEPT[2].1);
    // The kodata layers' entries: ours are Skaffold's plus the subdirectory.
    let entries = |r: &str, name: &str| -> Vec<String> {
        let dir = s.root.join(name);
        copy_to_oci_dir(&pinned(r), &s.reg, &dir, "x", None);
        let top = layout_top(&dir);
        let manifest: Value =
            serde_json::from_slice(&layout_blob(&dir, top["digest"].as_str().unwrap())).unwrap();
        let gz = layout_blob(&dir, manifest["layers"][1]["digest"].as_str().unwrap());
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        tar.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    };
    let (mut theirs, ours) = (entries(&theirs, "theirs"), entries(&ours, "ours"));
    let missing: Vec<&String> = ours.iter().filter(|e| !theirs.contains(e)).collect();
    assert_eq!(missing, ["/var/run/ko/subdir"], "{}", KEPT[2].1);
    theirs.insert(
        ours.iter().position(|e| e == "/var/run/ko/subdir").unwrap(),
        "/var/run/ko/subdir".into(),
    );
    assert_eq!(theirs, ours);
}

#[test]
fn ko_builds_match() {
    let s = setup();
    let module = ko_test_module(&s.root);
    let repo = s.reg.host();
    let base_env = [("KO_DEFAULTBASEIMAGE", s.base.as_str())];
    let (theirs, ours) = ko_and_kobuild(&module, "./test", &repo, &base_env);
    compare(&theirs, &ours, &s.reg);

    // An app configured by .ko.yaml: defaultBaseImage, a build's env, flags and templated
    // ldflags (environment and git).
    let dir = app(&s.root.join("koyaml"), &s.base, "");
    fs::write(
        dir.join(".ko.yaml"),
        format!(
            "defaultBaseImage: {}\nbuilds:\n  - id: conf\n    main: .\n    env: [CGO_ENABLED=0]\n    flags: [-tags, netgo]\n    ldflags: [\"-s -w\", \"-X main.version={{{{.Env.CONF_VERSION}}}}-{{{{.Git.ShortCommit}}}}\"]\n",
            s.base
        ),
    )
    .unwrap();
    let (theirs, ours) = ko_and_kobuild(&dir, ".", &repo, &[("CONF_VERSION", "4.5.6")]);
    compare(&theirs, &ours, &s.reg);

    // linux_capabilities: ko's security.capability PAX record on the binary, so the same
    // DiffIDs; both forms (one string, a list), names, `=ep` and a bit number.
    for (i, caps) in [
        "\"net_bind_service CAP_CHOWN=ep 40\"",
        "[net_bind_service, chown]",
    ]
    .iter()
    .enumerate()
    {
        let dir = app(&s.root.join(format!("caps{i}")), &s.base, "");
        fs::write(
            dir.join(".ko.yaml"),
            format!(
                "defaultBaseImage: {}\nbuilds:\n  - id: caps\n    main: .\n    linux_capabilities: {caps}\n",
                s.base
            ),
        )
        .unwrap();
        let (theirs, ours) = ko_and_kobuild(&dir, ".", &repo, &[]);
        compare(&theirs, &ours, &s.reg);
    }
}

/// `ko build -B --sbom=none TARGET` and `kobuild build --sbom=none TARGET` in `dir`, pushing
/// under `repo`: their refs, checked to name the same repository.
fn ko_and_kobuild(dir: &Path, target: &str, repo: &str, env: &[(&str, &str)]) -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(peer("KOBUILD_KO"));
    cmd.args(["build", "-B", "--sbom=none", target])
        .current_dir(dir)
        .envs(go_env(home.path()))
        .env("KO_DOCKER_REPO", repo)
        .envs(env.iter().copied());
    let theirs = stdout(
        &output_within(&mut cmd, std::time::Duration::from_secs(120)),
        "ko build",
    );
    let mut with_repo = env.to_vec();
    with_repo.push(("KO_DOCKER_REPO", repo));
    let ours = stdout(
        &kobuild(&with_repo).run_in(dir, &["--sbom=none", target]),
        "kobuild build",
    );
    let (theirs, ours) = (theirs.trim().to_string(), ours.trim().to_string());
    let repo_of = |r: &str| {
        let name = undigested(r);
        let slash = name.rfind('/').unwrap();
        name[..slash + name[slash..].find(':').unwrap_or(name.len() - slash)].to_string()
    };
    assert_eq!(repo_of(&theirs), repo_of(&ours), "{theirs} vs {ours}");
    (theirs, ours)
}

/// The manifests a skaffold.yaml names, rendered with one artifacts.json by `skaffold render`
/// and by `kobuild render` (no `-f` manifests), compared as parsed YAML: rawYaml globs,
/// kustomize paths, the v2 `deploy:` forms Skaffold upgrades, the default `k8s/*.yaml`, and
/// a profile that swaps the manifests.
#[test]
fn skaffold_render_of_the_manifests_section_matches() {
    let root = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "b".repeat(64));
    let tag = format!("localhost:5000/app:v1@{digest}");
    let artifacts = root.path().join("a.json");
    fs::write(
        &artifacts,
        format!(r#"{{"builds":[{{"imageName":"example.com/app","tag":"{tag}"}}]}}"#),
    )
    .unwrap();
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web # kept\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: example.com/app:dev\n";
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: ko://example.com/app\n"
        )
    };
    let files: Vec<(String, String)> = vec![
        ("k8s/b-deployment.yaml".into(), deployment.into()),
        ("k8s/a-pod.yaml".into(), pod("raw")),
        ("k8s/notes.txt".into(), "not a manifest".into()),
        ("other/one.yaml".into(), pod("other")),
        ("kz/base/pod.yaml".into(), pod("kz")),
        (
            "kz/base/kustomization.yaml".into(),
            "resources: [pod.yaml]\ncommonLabels: {tier: web}\n".into(),
        ),
        (
            "kz/dev/kustomization.yaml".into(),
            "resources: [../base]\nnamePrefix: dev-\n".into(),
        ),
    ];
    let head = "kind: Config\nbuild:\n  artifacts:\n  - image: example.com/app\n    ko: {}\n";
    let cases = [
        (
            "v4 rawYaml and kustomize",
            format!(
                "apiVersion: skaffold/v4beta11\n{head}manifests:\n  rawYaml: ['k8s/*.yaml', other/one.yaml]\n  kustomize:\n    paths: [kz/dev]\n"
            ),
            vec![],
        ),
        (
            "v2 deploy.kubectl and deploy.kustomize",
            format!(
                "apiVersion: skaffold/v2beta28\n{head}deploy:\n  kubectl:\n    manifests: [other/one.yaml]\n  kustomize:\n    paths: [kz/base]\n"
            ),
            vec![],
        ),
        (
            "default k8s/*.yaml",
            format!("apiVersion: skaffold/v3\n{head}"),
            vec![],
        ),
        (
            "a profile's manifests",
            format!(
                "apiVersion: skaffold/v4beta14\n{head}manifests:\n  rawYaml: ['k8s/*.yaml']\nprofiles:\n- name: kz\n  manifests:\n    rawYaml: [other/one.yaml]\n    kustomize:\n      paths: [kz/base]\n"
            ),
            vec!["-p", "kz"],
        ),
    ];
    let kustomize = peer("KOBUILD_KUSTOMIZE");
    let path = format!(
        "{}:{}",
        kustomize.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    for (i, (name, config, extra)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("c{i}"));
        for (f, text) in &files {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        fs::write(dir.join("skaffold.yaml"), config).unwrap();
        let a = artifacts.to_str().unwrap();
        let mut args = vec!["render", "-a", a, "--offline=true", "--digest-source=tag"];
        args.extend(extra);
        let theirs = stdout(
            &skaffold(&dir, &args, &[("PATH", &path)]),
            &format!("skaffold render ({name})"),
        );
        let mut args = vec!["-a", a];
        args.extend(extra);
        let ours = stdout(
            &kobuild(&[("PATH", &path)])
                .subcommand(&dir, "render", &args)
                .output()
                .unwrap(),
            &format!("kobuild render ({name})"),
        );
        let docs = |text: &str| -> Vec<Value> {
            serde_saphyr::from_multiple::<Value>(text)
                .unwrap()
                .into_iter()
                .filter(|d| !d.is_null())
                .collect()
        };
        let (t, o) = (docs(&theirs), docs(&ours));
        assert!(t.len() >= 2, "{name}: {theirs}");
        assert_eq!(t, o, "{name}\nskaffold:\n{theirs}\nkobuild:\n{ours}");
        // Lossless where the input was a file: the comment survives.
        if ours.contains("name: web") {
            assert!(ours.contains("name: web # kept"), "{ours}");
        }
        assert!(ours.contains(&tag), "{ours}");
    }
}
