//! What workflows feed the action: docker/metadata-action's `tags` and `labels` outputs as the
//! runner passes them (multi-line INPUT_* values), and `kobuild plan --matrix` for fanning a
//! build out across jobs.

use std::path::Path;
use std::process::Output;

use crate::common::kobuild::*;
use crate::common::*;
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kobuild action` in tests/fixtures/action with `inputs` as the runner sets them.
fn action(kb: &Kobuild, outputs: &Path, inputs: &[(&str, &str)]) -> Output {
    let mut cmd = kb.subcommand(&fixtures_dir().join("action"), "action", &[]);
    cmd.env("GITHUB_OUTPUT", outputs)
        .env("RUNNER_TEMP", outputs.parent().unwrap());
    for (name, value) in inputs {
        cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    cmd.output().expect("run kobuild action")
}

fn list_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let mut args = vec!["list-tags".to_string()];
    args.extend(reg.skopeo_flags("--"));
    args.push(format!("docker://{repo}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = skopeo(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut tags: Vec<String> = json(&out.stdout)["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    tags.sort();
    tags
}

/// The `images` output: the heredoc value after `images<<DELIMITER`.
fn images_output(outputs: &Path) -> String {
    let content = std::fs::read_to_string(outputs).unwrap();
    let mut lines = content.lines();
    let header = lines
        .find(|l| l.starts_with("images<<"))
        .expect("images output");
    let delimiter = header.trim_start_matches("images<<");
    lines
        .take_while(|l| *l != delimiter)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn metadata_action_tags_and_labels_are_taken_as_they_come() {
    let reg = Registry::start(RegistryKind::Plain);
    let work = tempfile::tempdir().unwrap();
    let layout = make_base(&work.path().join("base"), "v1", false, &["linux/amd64"]);
    let base = push_base(&reg, &layout, "v1", "base/static");
    let repo = format!("{}/acme/one", reg.host());
    // docker/metadata-action's outputs for a v1.2.3 tag push: one item per line, a trailing
    // newline, and a build-time `created` label.
    let tags = format!("{repo}:1.2.3\n{repo}:1.2\n{repo}:sha-0123456\n");
    let labels = |created: &str| {
        format!(
            "org.opencontainers.image.created={created}\n\
             org.opencontainers.image.description=The one app\n\
             org.opencontainers.image.licenses=MIT\n\
             org.opencontainers.image.revision=0123456789abcdef0123456789abcdef01234567\n\
             org.opencontainers.image.source=https://github.com/acme/one\n\
             org.opencontainers.image.title=one\n\
             org.opencontainers.image.url=https://github.com/acme/one\n\
             org.opencontainers.image.version=1.2.3\n"
        )
    };
    let outputs = work.path().join("out").join("github_output");
    std::fs::create_dir_all(outputs.parent().unwrap()).unwrap();
    let common = |created: &str, extra: &[(&str, &str)]| {
        let mut inputs: Vec<(String, String)> = vec![
            ("targets".into(), "./cmd/one".into()),
            ("working-directory".into(), "app".into()),
            ("from-image".into(), base.clone()),
            ("tags".into(), tags.clone()),
            ("labels".into(), labels(created)),
            ("repository-labels".into(), "false".into()),
        ];
        inputs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        inputs
    };
    let run = |inputs: &[(String, String)]| {
        std::fs::write(&outputs, "").unwrap();
        let kb = Kobuild::new().env("SOURCE_DATE_EPOCH", "1700000000");
        let pairs: Vec<(&str, &str)> = inputs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        action(&kb, &outputs, &pairs)
    };

    // No default-repo: the tags' repository is the image's.
    let out = run(&common("2026-12-04T20:00:00.000Z", &[]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let warning = stdout
        .lines()
        .find(|l| l.starts_with("::warning"))
        .unwrap_or_else(|| panic!("no warning about the created label: {stdout}"));
    assert!(
        warning.contains("org.opencontainers.image.created")
            && warning.contains("drop-labels: org.opencontainers.image.created"),
        "{warning}"
    );
    let first = images_output(&outputs);
    assert!(
        first.starts_with(&format!("{repo}:1.2.3@sha256:")),
        "{first}"
    );
    assert_eq!(list_tags(&reg, &repo), ["1.2", "1.2.3", "sha-0123456"]);
    let config = skopeo_inspect_config(&pinned(&first), &reg);
    let got = &config["config"]["Labels"];
    assert_eq!(got["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(got["org.opencontainers.image.description"], "The one app");
    assert_eq!(
        got["org.opencontainers.image.created"],
        "2026-12-04T20:00:00.000Z"
    );

    // Dropping the label makes two runs at different times give one digest.
    let drop = [("drop-labels", "org.opencontainers.image.created")];
    let mut digests = Vec::new();
    for created in ["2026-12-04T20:00:00.000Z", "2026-12-05T08:30:00.000Z"] {
        let out = run(&common(created, &drop));
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        assert!(!stdout.contains("::warning"), "{stdout}");
        digests.push(digest_of(&images_output(&outputs)).to_string());
    }
    assert_eq!(digests[0], digests[1], "same source, same digest");
    assert_ne!(digests[0], digest_of(&first));
    let config = skopeo_inspect_config(&format!("{repo}@{}", digests[0]), &reg);
    assert!(config["config"]["Labels"]["org.opencontainers.image.created"].is_null());

    // A default-repo that sends the image elsewhere: one error naming both, nothing pushed.
    let other = format!("{}/elsewhere", reg.host());
    let out = run(&common("x", &[("default-repo", other.as_str())]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].contains("input tags: ")
            && errors[0].contains(&format!("{repo}:1.2.3"))
            && errors[0].contains("/elsewhere/"),
        "{}",
        errors[0]
    );

    // Tags in two repositories: refused, naming both.
    let mixed = format!("{repo}:v1\n{}/acme/two:v1\n", reg.host());
    let mut inputs = common("x", &[]);
    inputs.retain(|(k, _)| k != "tags");
    inputs.push(("tags".into(), mixed));
    let out = run(&inputs);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("name different repositories"), "{stdout}");
    assert!(stdout.contains("/acme/two:v1"), "{stdout}");
}

/// The value of output `name` in a GITHUB_OUTPUT file (heredoc form).
fn output_value(outputs: &Path, name: &str) -> String {
    let content = std::fs::read_to_string(outputs).unwrap();
    let mut lines = content.lines();
    let prefix = format!("{name}<<");
    let header = lines
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} output: {content}"));
    let delimiter = &header[prefix.len()..];
    lines
        .take_while(|l| *l != delimiter)
        .collect::<Vec<_>>()
        .join("\n")
}

fn entry(name: &str, targets: &str, file: &str, image: &str, platform: &str) -> Value {
    serde_json::json!({
        "name": name,
        "targets": targets,
        "skaffold-file": file,
        "build-image": image,
        "platforms": platform,
    })
}

#[test]
fn plan_matrix_from_targets_and_from_the_action() {
    let kb = Kobuild::new();
    let app = fixtures_dir().join("action/app");
    let args = [
        "--matrix",
        "./cmd/one",
        "./cmd/two",
        "--platform",
        "linux/amd64,linux/arm/v7",
        "--repo",
        "registry.example/team",
    ];
    let out = kb.subcommand(&app, "plan", &args).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = serde_json::json!({"include": [
        entry("one-linux-amd64", "./cmd/one", "", "", "linux/amd64"),
        entry("one-linux-arm-v7", "./cmd/one", "", "", "linux/arm/v7"),
        entry("two-linux-amd64", "./cmd/two", "", "", "linux/amd64"),
        entry("two-linux-arm-v7", "./cmd/two", "", "", "linux/arm/v7"),
    ]});
    assert_eq!(json(&out.stdout), want);

    // The action's plan-only step gives the same JSON as its matrix output, and builds nothing.
    let work = tempfile::tempdir().unwrap();
    let outputs = work.path().join("github_output");
    std::fs::write(&outputs, "").unwrap();
    let out = action(
        &kb,
        &outputs,
        &[
            ("targets", "./cmd/one\n./cmd/two\n"),
            ("working-directory", "app"),
            ("platforms", "linux/amd64,linux/arm/v7"),
            ("default-repo", "registry.example/team"),
            ("plan-only", "true"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(json(output_value(&outputs, "matrix").as_bytes()), want);
    assert!(
        !std::fs::read_to_string(&outputs)
            .unwrap()
            .contains("images<<")
    );

    // `all` needs the base's platforms: refused with the flag named, exit 2.
    let out = kb
        .subcommand(
            &app,
            "plan",
            &["--matrix", "./cmd/one", "--platform", "all"],
        )
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.starts_with("error: --platform: "), "{stderr}");
}

#[test]
fn plan_matrix_from_skaffold_yaml_selects_with_build_image() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("shop");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixtures_dir().join("skaffold"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    for file in ["skaffold.yaml", ".ko.yaml"] {
        let path = root.join(file);
        if let Ok(text) = std::fs::read_to_string(&path) {
            std::fs::write(&path, text.replace("REGISTRY", "registry.example")).unwrap();
        }
    }
    let kb = Kobuild::new().env("VERSION", "1.0");
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "--matrix",
            "--platform",
            "linux/amd64,linux/arm64",
            "--repo",
            "registry.example/shop",
        ];
        args.extend(extra);
        kb.subcommand(&root, "plan", &args).output().unwrap()
    };
    let out = plan(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let api = "ko://example.com/shop/cmd/api";
    assert_eq!(
        json(&out.stdout),
        serde_json::json!({"include": [
            entry("api-linux-amd64", "", "skaffold.yaml", api, "linux/amd64"),
            entry("api-linux-arm64", "", "skaffold.yaml", api, "linux/arm64"),
            entry("web-linux-amd64", "", "skaffold.yaml", "web", "linux/amd64"),
            entry("web-linux-arm64", "", "skaffold.yaml", "web", "linux/arm64"),
        ]})
    );

    // A matrix entry's build-image, fed back, keeps only that image.
    let out = plan(&["--build-image", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let include = json(&out.stdout)["include"].as_array().unwrap().clone();
    assert_eq!(include.len(), 2);
    assert!(include.iter().all(|e| e["build-image"] == "web"));

    // As Skaffold's -b: a text no image name contains selects nothing (and a workflow's
    // matrix with no entry fails there, visibly).
    let out = plan(&["-b", "nope"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out.stdout)["include"], serde_json::json!([]));
}
