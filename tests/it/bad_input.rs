//! Malformed input of every kind: each case must exit non-zero with exactly one `error:` line
//! that contains the expected words, print nothing on stdout, never panic, and leave no
//! output behind.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::kobuild::Kobuild;
use crate::common::*;

struct Case {
    name: &'static str,
    /// Arguments after the subcommand; `{dir}` is the case's scratch directory.
    args: Vec<String>,
    subcommand: &'static str,
    env: Vec<(&'static str, String)>,
    code: i32,
    needle: &'static str,
}

fn case(name: &'static str, args: &[&str], code: i32, needle: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        subcommand: "build",
        env: Vec::new(),
        code,
        needle,
    }
}

impl Case {
    fn env(mut self, k: &'static str, v: impl Into<String>) -> Case {
        self.env.push((k, v.into()));
        self
    }

    fn sub(mut self, subcommand: &'static str) -> Case {
        self.subcommand = subcommand;
        self
    }
}

/// Scratch files several cases point at.
fn prepare(dir: &Path) {
    let escape = dir.join("escape");
    fs::create_dir_all(escape.join("kodata")).unwrap();
    fs::write(
        escape.join("go.mod"),
        "module example.com/escape\n\ngo 1.22\n",
    )
    .unwrap();
    fs::write(escape.join("main.go"), "package main\n\nfunc main() {}\n").unwrap();
    fs::write(dir.join("secret.txt"), "do not ship").unwrap();
    symlink(dir.join("secret.txt"), escape.join("kodata/leak")).unwrap();

    fs::create_dir_all(dir.join("not-a-layout")).unwrap();
    fs::write(dir.join("not-a-layout/file"), "x").unwrap();
    fs::write(dir.join("not-pem.crt"), "this is not a certificate").unwrap();
    fs::create_dir_all(dir.join("badconfig")).unwrap();
    fs::write(dir.join("badconfig/config.json"), "{ not json").unwrap();
    fs::create_dir_all(dir.join("nohelper")).unwrap();
    fs::write(
        dir.join("nohelper/config.json"),
        r#"{"credsStore":"kobuild-test-missing"}"#,
    )
    .unwrap();
    fs::create_dir_all(dir.join("a-directory")).unwrap();
    let two = dir.join("two");
    for cmd in ["a", "b"] {
        fs::create_dir_all(two.join("cmd").join(cmd)).unwrap();
        fs::write(
            two.join("cmd").join(cmd).join("main.go"),
            "package main\n\nfunc main() {}\n",
        )
        .unwrap();
    }
    fs::write(two.join("go.mod"), "module example.com/two\n\ngo 1.22\n").unwrap();

    fs::write(dir.join("bad.yaml"), "kind: Pod\nspec: [unclosed\n").unwrap();
    fs::write(
        dir.join("pod.yaml"),
        "kind: Pod\nspec:\n  containers:\n  - image: ko://example.com/none\n",
    )
    .unwrap();
    let caps = dir.join("caps");
    fs::create_dir_all(&caps).unwrap();
    fs::write(caps.join("go.mod"), "module example.com/caps\n\ngo 1.22\n").unwrap();
    fs::write(caps.join("main.go"), "package main\n\nfunc main() {}\n").unwrap();
    fs::write(
        caps.join(".ko.yaml"),
        format!(
            "builds:\n- id: caps\n  dir: {}\n  linux_capabilities: net_bind_service+q\n",
            caps.display()
        ),
    )
    .unwrap();
    let kustomized = dir.join("kustomized");
    fs::create_dir_all(&kustomized).unwrap();
    fs::write(
        kustomized.join("kustomization.yaml"),
        "resources: [../pod.yaml]\npatches: [{path: patch.yaml}]\n",
    )
    .unwrap();
    fs::write(
        kustomized.join("patch.yaml"),
        "kind: Pod\nmetadata: {name: p}\n",
    )
    .unwrap();
    // Configured platforms and names that are wrong, each in the file that must be named.
    let app = |d: &Path| {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("go.mod"), "module example.com/app\n\ngo 1.22\n").unwrap();
        fs::write(d.join("main.go"), "package main\n\nfunc main() {}\n").unwrap();
    };
    app(&dir.join("koplat"));
    fs::write(dir.join("koplat/.ko.yaml"), "defaultPlatforms: [bogus]\n").unwrap();
    app(&dir.join("koenv"));
    fs::write(
        dir.join("koenv/.ko.yaml"),
        format!(
            "builds:\n- id: app\n  dir: {}\n  env: [\"A\\nB=1\"]\n",
            dir.join("koenv").display()
        ),
    )
    .unwrap();
    let skaffold = |name: &str, build: &str, ko: &str| {
        app(&dir.join(name).join("app"));
        fs::write(
            dir.join(name).join("skaffold.yaml"),
            format!(
                "apiVersion: skaffold/v4beta11\nkind: Config\nbuild:\n{build}  artifacts:\n  \
                 - image: app\n    context: app\n    ko:\n      fromImage: scratch\n{ko}"
            ),
        )
        .unwrap();
    };
    skaffold("skplat", "  platforms: [bogus]\n", "");
    skaffold("skartplat", "", "    platforms: [linux/bogus]\n");
    skaffold("sklabel", "", "      labels: {\"a\\nb\": x}\n");
    skaffold("skenv", "", "      env: [\"A=B=C\", \"A\\u0007=1\"]\n");
    fs::write(
        dir.join("artifacts.json"),
        format!(
            r#"{{"builds":[{{"imageName":"app","tag":"127.0.0.1:1/app:v1@sha256:{}"}}]}}"#,
            "a".repeat(64)
        ),
    )
    .unwrap();
    fs::write(dir.join("empty.json"), "").unwrap();
    fs::write(dir.join("garbage.json"), "{\"builds\": 3}").unwrap();
    make_base(&dir.join("base"), "v1", false, &["linux/amd64"]);
}

fn cases() -> Vec<Case> {
    let layout_out = ["--push=false", "--oci-layout-path", "{dir}/out"];
    let with_out = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(layout_out.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let build = |name, args: &[&str], code, needle| Case {
        args: with_out(args),
        ..case(name, &[], code, needle)
    };
    vec![
        // ko's capability syntax, checked before anything builds.
        build(
            "linux_capabilities",
            &["{dir}/caps", "--base", "scratch"],
            2,
            "caps/.ko.yaml:2:3: linux_capabilities: \"net_bind_service+q\": unknown flag 'q'",
        )
        .env("KO_CONFIG_PATH", "{dir}/caps"),
        // Platforms.
        build(
            "empty platform",
            &["./hello", "--base", "scratch", "--platform", ""],
            2,
            "--platform",
        ),
        build(
            "platform without arch",
            &["./hello", "--base", "scratch", "--platform", "linux"],
            2,
            "no architecture",
        ),
        build(
            "platform with four parts",
            &[
                "./hello",
                "--base",
                "scratch",
                "--platform",
                "linux/arm/v7/x",
            ],
            2,
            "os/arch[/variant]",
        ),
        build(
            "all with others",
            &[
                "./hello",
                "--base",
                "scratch",
                "--platform",
                "all,linux/amd64",
            ],
            2,
            "all cannot be combined",
        ),
        build(
            "all on scratch",
            &["./hello", "--base", "scratch", "--platform", "all"],
            2,
            "multi-platform base",
        ),
        build(
            "bad arm variant",
            &["./hello", "--base", "scratch", "--platform", "linux/arm/x7"],
            2,
            "--platform",
        ),
        build(
            "platform Go does not build for",
            &["./hello", "--base", "scratch", "--platform", "linux/nope"],
            2,
            "--platform: \"linux/nope\" is not a platform Go builds for",
        ),
        build(
            "upper-case platform",
            &["./hello", "--base", "scratch", "--platform", "LINUX/AMD64"],
            2,
            "lower case",
        ),
        build(
            "unknown os",
            &["./hello", "--base", "scratch", "--platform", "plan9x/386"],
            2,
            "\"plan9x/386\" is not a platform Go builds for",
        ),
        build(
            "arm variant out of range",
            &[
                "./hello",
                "--base",
                "scratch",
                "--platform",
                "linux/arm/v99",
            ],
            2,
            "unknown variant for arm",
        ),
        build(
            "platform with spaces",
            &["./hello", "--base", "scratch", "--platform", "linux/am d64"],
            2,
            "--platform",
        ),
        build(
            "platform missing from base",
            &[
                "./hello",
                "--base",
                "oci-layout:{dir}/base:v1",
                "--platform",
                "linux/arm64",
            ],
            2,
            "not linux/arm64",
        ),
        build(
            ".ko.yaml platform",
            &["{dir}/koplat", "--base", "scratch"],
            2,
            "koplat/.ko.yaml: defaultPlatforms: \"bogus\" has no architecture",
        )
        .env("KO_CONFIG_PATH", "{dir}/koplat"),
        build(
            "KO_DEFAULTPLATFORMS platform",
            &["./hello", "--base", "scratch"],
            2,
            "KO_DEFAULTPLATFORMS: \"linux/nope\" is not a platform",
        )
        .env("KO_DEFAULTPLATFORMS", "linux/nope"),
        build(
            "skaffold.yaml build platform",
            &["-f", "{dir}/skplat/skaffold.yaml"],
            2,
            "skplat/skaffold.yaml: build.platforms: \"bogus\" has no architecture",
        ),
        build(
            "skaffold.yaml artifact platform",
            &["-f", "{dir}/skartplat/skaffold.yaml"],
            2,
            "skartplat/skaffold.yaml:5:5: platforms: \"linux/bogus\" is not a platform",
        ),
        Case {
            env: vec![("GOARCH", "arm64".into())],
            ..build(
                "GOARCH with --platform",
                &["./hello", "--base", "scratch", "--platform", "linux/amd64"],
                2,
                "GOARCH is set",
            )
        },
        // Tags, labels, annotations, env.
        build(
            "empty tag",
            &["./hello", "--base", "scratch", "-t", ""],
            2,
            "--tag",
        ),
        build(
            "tag starting with a dot",
            &["./hello", "--base", "scratch", "-t", ".v1"],
            2,
            "not a valid tag",
        ),
        build(
            "tag with a slash",
            &["./hello", "--base", "scratch", "-t", "a/b"],
            2,
            "a full reference needs a tag",
        ),
        build(
            "tag too long",
            &["./hello", "--base", "scratch", "-t", &"x".repeat(129)],
            2,
            "not a valid tag",
        ),
        build(
            "label without value",
            &["./hello", "--base", "scratch", "--label", "novalue"],
            2,
            "--label",
        ),
        build(
            "label without key",
            &["./hello", "--base", "scratch", "--label", "=v"],
            2,
            "--label",
        ),
        build(
            "annotation without value",
            &["./hello", "--base", "scratch", "--annotation", "x"],
            2,
            "--annotation",
        ),
        build(
            "env without equals",
            &["./hello", "--base", "scratch", "--env", "NOEQ"],
            2,
            "--env",
        ),
        build(
            "env without name",
            &["./hello", "--base", "scratch", "--env", "=1"],
            2,
            "--env",
        ),
        build(
            "label name with a newline",
            &["./hello", "--base", "scratch", "--label", "a\nb=c"],
            2,
            "--label: the name \"a\\nb\" holds '\\n': remove it",
        ),
        build(
            "annotation name with an escape",
            &[
                "./hello",
                "--base",
                "scratch",
                "--annotation",
                "a\u{1b}[31m=c",
            ],
            2,
            "--annotation: the name \"a\\u{1b}[31m\" holds",
        ),
        build(
            "env name with a tab",
            &["./hello", "--base", "scratch", "--env", "A\tB=1"],
            2,
            "--env: the name \"A\\tB\" holds '\\t'",
        ),
        build(
            ".ko.yaml env name with a newline",
            &["{dir}/koenv", "--base", "scratch"],
            2,
            "koenv/.ko.yaml:2:3: env: the name \"A\\nB\" holds",
        )
        .env("KO_CONFIG_PATH", "{dir}/koenv"),
        build(
            "skaffold.yaml label name with a newline",
            &["-f", "{dir}/sklabel/skaffold.yaml"],
            2,
            "sklabel/skaffold.yaml:5:5: ko.labels: the name \"a\\nb\" holds",
        ),
        build(
            "skaffold.yaml env name with a control character",
            &["-f", "{dir}/skenv/skaffold.yaml"],
            2,
            "skenv/skaffold.yaml:5:5: ko.env: the name \"A\\u{7}\" holds",
        ),
        case(
            "action label name with a tab",
            &[],
            2,
            "input labels: the name \"a\\tb\"",
        )
        .sub("action")
        .env("INPUT_LABELS", "a\tb=c")
        .env("INPUT_TARGETS", "./hello"),
        // Numbers and booleans.
        build(
            "zero jobs",
            &["./hello", "--base", "scratch", "-j", "0"],
            2,
            "--jobs",
        ),
        build(
            "jobs not a number",
            &["./hello", "--base", "scratch", "-j", "many"],
            2,
            "--jobs: invalid value \"many\": not a whole number: give 1 or more",
        ),
        build(
            "negative jobs",
            &["./hello", "--base", "scratch", "--jobs", "-1"],
            2,
            "--jobs: invalid value \"-1\": not a whole number: give 1 or more",
        ),
        build(
            "negative short jobs",
            &["./hello", "--base", "scratch", "-j", "-3"],
            2,
            "--jobs: invalid value \"-3\"",
        ),
        build(
            "negative compression level",
            &["./hello", "--base", "scratch", "--compression-level", "-1"],
            2,
            "--compression-level: -1 is out of range for gzip (1-9)",
        ),
        build(
            "compression level not a number",
            &["./hello", "--base", "scratch", "--compression-level", "max"],
            2,
            "--compression-level: invalid value \"max\": not a whole number: give 1-9 for gzip",
        ),
        case(
            "negative build concurrency",
            &[
                "-f",
                "{dir}/skplat/skaffold.yaml",
                "--build-concurrency",
                "-1",
            ],
            2,
            "--build-concurrency: invalid value \"-1\": not a whole number: give 0 or more",
        ),
        build(
            "unknown compression",
            &["./hello", "--base", "scratch", "--compression", "lz4"],
            2,
            "--compression: invalid value \"lz4\": give one of gzip, zstd",
        ),
        build(
            "zero registry timeout",
            &["./hello", "--base", "scratch", "--registry-timeout", "0"],
            2,
            "--registry-timeout: \"0\" is not a whole number of seconds from 1",
        ),
        build(
            "negative registry timeout",
            &["./hello", "--base", "scratch", "--registry-timeout", "-5"],
            2,
            "--registry-timeout: \"-5\" is not a whole number of seconds from 1",
        ),
        build(
            "registry timeout not a number",
            &["./hello", "--base", "scratch", "--registry-timeout", "5m"],
            2,
            "--registry-timeout: \"5m\" is not a whole number of seconds from 1",
        ),
        build(
            "zero run timeout",
            &["./hello", "--base", "scratch", "--timeout", "0"],
            2,
            "--timeout: invalid value \"0\": not a whole number of seconds: give 1 or more",
        ),
        build(
            "negative run timeout",
            &["./hello", "--base", "scratch", "--timeout", "-5"],
            2,
            "--timeout: invalid value \"-5\"",
        ),
        build(
            "bad KOBUILD_REGISTRY_TIMEOUT",
            &["./hello", "--base", "scratch"],
            2,
            "KOBUILD_REGISTRY_TIMEOUT: \"0.5\" is not a whole number",
        )
        .env("KOBUILD_REGISTRY_TIMEOUT", "0.5"),
        case("action registry timeout", &[], 2, "input registry-timeout")
            .sub("action")
            .env("INPUT_REGISTRY-TIMEOUT", "never")
            .env("INPUT_TARGETS", "./hello"),
        build(
            "push not a boolean",
            &["./hello", "--base", "scratch", "--push=maybe"],
            2,
            "--push: invalid value \"maybe\": give one of true, false",
        ),
        case(
            "push=false with nowhere to write",
            &["./hello", "--base", "scratch", "--push=false"],
            2,
            "nothing to write",
        ),
        build(
            "unknown flag",
            &["./hello", "--frobnicate"],
            2,
            "unexpected argument",
        ),
        // Repositories and names.
        case(
            "upper-case repo",
            &[
                "./hello",
                "--base",
                "scratch",
                "--repo",
                "Registry.example/Apps",
            ],
            2,
            "--default-repo",
        ),
        case(
            "repo with a space",
            &["./hello", "--base", "scratch", "--repo", "a b"],
            2,
            "--default-repo",
        ),
        case(
            "repo with a tag",
            &[
                "./hello",
                "--base",
                "scratch",
                "--repo",
                "127.0.0.1:5000/apps:v1",
            ],
            2,
            "--default-repo",
        ),
        Case {
            env: vec![("KOBUILD_DEFAULT_REPO", "Bad Repo".into())],
            ..case(
                "bad repo from the environment",
                &["./hello", "--base", "scratch"],
                2,
                "KOBUILD_DEFAULT_REPO: ",
            )
        },
        build(
            "bad image name",
            &["./hello", "--base", "scratch", "--image", "Bad Name"],
            2,
            "--image",
        ),
        build(
            "image name for two targets",
            &["./hello", "./hello", "--base", "scratch", "--image", "x"],
            2,
            "--image names one image",
        ),
        // Base references.
        build("empty base", &["./hello", "--base", ""], 2, "--base"),
        build(
            "upper-case base",
            &["./hello", "--base", "UPPER/base"],
            2,
            "must be lowercase",
        ),
        build(
            "base with a bad digest",
            &["./hello", "--base", "example.com/base@sha256:abc"],
            2,
            "--base",
        ),
        build(
            "empty layout base",
            &["./hello", "--base", "oci-layout:"],
            2,
            "oci-layout:PATH",
        ),
        build(
            "layout base with a bad digest",
            &["./hello", "--base", "oci-layout:{dir}/base@sha256:zz"],
            2,
            "invalid digest",
        ),
        build(
            "layout base that does not exist",
            &["./hello", "--base", "oci-layout:{dir}/nothing:v1"],
            1,
            "nothing/index.json",
        ),
        build(
            "layout base without that tag",
            &["./hello", "--base", "oci-layout:{dir}/base:v9"],
            1,
            "no such image in the layout",
        ),
        build(
            "unreachable base registry",
            &["./hello", "--base", "127.0.0.1:1/base:v1"],
            1,
            "cannot reach registry 127.0.0.1:1",
        ),
        // Targets.
        build(
            "missing directory",
            &["./nope", "--base", "scratch"],
            2,
            "no such directory",
        ),
        build(
            "library package",
            &["./lib", "--base", "scratch"],
            2,
            "a library",
        ),
        build(
            "compile error",
            &["./broken", "--base", "scratch"],
            1,
            "undefined: nope",
        ),
        build(
            "empty import path",
            &["ko://", "--base", "scratch"],
            2,
            "empty import path",
        ),
        build(
            "unknown import path",
            &["ko://example.com/hello/nothere", "--base", "scratch"],
            2,
            "go list",
        ),
        build(
            "several main packages",
            &["{dir}/two/...", "--base", "scratch"],
            2,
            "matched 2 main packages",
        ),
        build(
            "kodata symlink out of the tree",
            &["{dir}/escape", "--base", "scratch"],
            2,
            "outside",
        ),
        // Templates.
        build(
            "template over the work limit",
            &[
                "./hello",
                "--base",
                "scratch",
                "--ldflags",
                r#"{{$x := "ab"}}{{range 40}}{{$x = printf "%s%s" $x $x}}{{end}}{{$x}}"#,
            ],
            2,
            "exceeds kobuild's work limit",
        ),
        // Environment.
        Case {
            env: vec![("SOURCE_DATE_EPOCH", "yesterday".into())],
            ..build(
                "bad SOURCE_DATE_EPOCH",
                &["./hello", "--base", "scratch"],
                2,
                "SOURCE_DATE_EPOCH",
            )
        },
        Case {
            env: vec![("KO_DATA_DATE_EPOCH", "1.5".into())],
            ..build(
                "bad KO_DATA_DATE_EPOCH",
                &["./hello", "--base", "scratch"],
                2,
                "KO_DATA_DATE_EPOCH",
            )
        },
        // Credentials and TLS.
        Case {
            env: vec![("DOCKER_CONFIG", "{dir}/badconfig".into())],
            ..case(
                "malformed docker config",
                &["./hello", "--base", "scratch", "--repo", "127.0.0.1:1/apps"],
                1,
                "config.json",
            )
        },
        Case {
            env: vec![("DOCKER_CONFIG", "{dir}/nohelper".into())],
            ..case(
                "missing credential helper",
                &["./hello", "--base", "scratch", "--repo", "127.0.0.1:1/apps"],
                1,
                "docker-credential-kobuild-test-missing",
            )
        },
        case(
            "CA file that does not exist",
            &[
                "./hello",
                "--base",
                "scratch",
                "--repo",
                "127.0.0.1:1/apps",
                "--registry-ca",
                "{dir}/none.crt",
            ],
            2,
            "none.crt\": cannot read it: No such file or directory",
        ),
        case(
            "CA path that is a directory",
            &[
                "./hello",
                "--base",
                "scratch",
                "--repo",
                "127.0.0.1:1/apps",
                "--registry-ca",
                "{dir}/a-directory",
            ],
            2,
            "a-directory\": cannot read it: Is a directory",
        ),
        case(
            "CA file that is not PEM",
            &[
                "./hello",
                "--base",
                "scratch",
                "--repo",
                "127.0.0.1:1/apps",
                "--registry-ca",
                "{dir}/not-pem.crt",
            ],
            2,
            "not-pem.crt\": no PEM certificate in it",
        ),
        case(
            "merge with a CA file that does not exist",
            &[
                "--artifacts",
                "{dir}/artifacts.json",
                "--registry-ca",
                "{dir}/none.crt",
            ],
            2,
            "--registry-ca: \"",
        )
        .sub("merge"),
        case("action CA file", &[], 2, "input registry-ca: \"")
            .sub("action")
            .env("INPUT_REGISTRY-CA", "{dir}/not-pem.crt")
            .env("INPUT_TARGETS", "./hello"),
        build(
            "cache directory that is a file",
            &[
                "./hello",
                "--base",
                "scratch",
                "--cache-dir",
                "{dir}/secret.txt",
            ],
            2,
            "secret.txt\": a file is there: give a directory",
        ),
        build(
            "cache directory under a file",
            &[
                "./hello",
                "--base",
                "scratch",
                "--cache-dir",
                "{dir}/secret.txt/c",
            ],
            2,
            "secret.txt/c\": \"",
        ),
        build(
            "KOBUILD_CACHE_DIR that is a file",
            &["./hello", "--base", "scratch"],
            2,
            "KOBUILD_CACHE_DIR: \"",
        )
        .env("KOBUILD_CACHE_DIR", "{dir}/secret.txt"),
        case("action cache directory", &[], 2, "input cache-dir: \"")
            .sub("action")
            .env("INPUT_CACHE-DIR", "{dir}/secret.txt")
            .env("INPUT_TARGETS", "./hello"),
        // Outputs.
        case(
            "layout path that is not a layout",
            &[
                "./hello",
                "--base",
                "scratch",
                "--push=false",
                "--oci-layout-path",
                "{dir}/not-a-layout",
            ],
            1,
            "not an OCI image layout",
        ),
        build(
            "artifacts file that is a directory",
            &[
                "./hello",
                "--base",
                "scratch",
                "--file-output",
                "{dir}/a-directory",
            ],
            2,
            "--file-output",
        ),
        // render.
        case(
            "render a kustomization directory",
            &["-f", "{dir}/kustomized"],
            2,
            "kustomized/kustomization.yaml: a kustomization, which kobuild render does not build",
        )
        .sub("render"),
        case(
            "render a missing file",
            &["-f", "{dir}/missing.yaml"],
            2,
            "missing.yaml",
        )
        .sub("render"),
        case(
            "render invalid YAML",
            &["-f", "{dir}/bad.yaml"],
            2,
            "bad.yaml:2:",
        ),
        case(
            "render an unresolved placeholder",
            &["-f", "{dir}/pod.yaml"],
            2,
            "pod.yaml:4:",
        )
        .sub("render"),
        case(
            "render with empty artifacts",
            &[
                "-f",
                "{dir}/pod.yaml",
                "--build-artifacts",
                "{dir}/empty.json",
            ],
            2,
            "empty.json",
        )
        .sub("render"),
        case(
            "render with malformed artifacts",
            &[
                "-f",
                "{dir}/pod.yaml",
                "--build-artifacts",
                "{dir}/garbage.json",
            ],
            2,
            "garbage.json",
        )
        .sub("render"),
        case(
            "render with a bad --images",
            &["-f", "{dir}/pod.yaml", "--images", "=x"],
            2,
            "--images",
        )
        .sub("render"),
        case(
            "render without -f or skaffold.yaml",
            &[],
            2,
            "no manifests: give them with -f PATH",
        )
        .sub("render"),
        // Endless inputs stop at the size limit.
        case("endless skaffold.yaml", &["-f", "/dev/zero"], 2, "16 MiB"),
        case("endless manifest", &["-f", "/dev/urandom"], 2, "64 MiB").sub("render"),
        case(
            "endless build artifacts",
            &["-f", "{dir}/pod.yaml", "-a", "/dev/zero"],
            2,
            "16 MiB",
        )
        .sub("render"),
        case(
            "endless merge artifacts",
            &["--artifacts", "/dev/zero"],
            2,
            "16 MiB",
        )
        .sub("merge"),
        // Action inputs.
        case("action boolean", &[], 2, "input push")
            .sub("action")
            .env("INPUT_PUSH", "yes"),
        case("action platform", &[], 2, "input platforms")
            .sub("action")
            .env("INPUT_PLATFORMS", "linux")
            .env("INPUT_TARGETS", "./hello"),
        case(
            "action unknown platform",
            &[],
            2,
            "input platforms: \"linux/nope\"",
        )
        .sub("action")
        .env("INPUT_PLATFORMS", "linux/nope")
        .env("INPUT_FROM-IMAGE", "scratch")
        .env("INPUT_PUSH", "false")
        .env("INPUT_TARGETS", "./hello"),
        case("action tag", &[], 2, "input tags")
            .sub("action")
            .env("INPUT_TAGS", "a b")
            .env("INPUT_TARGETS", "./hello"),
    ]
    .into_iter()
    .map(|c| {
        if c.name == "render invalid YAML" {
            c.sub("render")
        } else {
            c
        }
    })
    .collect()
}

#[test]
fn every_malformed_input_fails_with_one_clear_line() {
    let kb = Kobuild::new();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    prepare(dir);
    let apps = fixtures_dir().join("apps");
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| a.replace("{dir}", &dir.display().to_string()))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kobuild"));
        for k in [
            "KOBUILD_DEFAULT_REPO",
            "SOURCE_DATE_EPOCH",
            "KO_DATA_DATE_EPOCH",
            "GOOS",
            "GOARCH",
            "GOARM",
        ] {
            cmd.env_remove(k);
        }
        let out = cmd
            .arg(c.subcommand)
            .args(&args)
            .envs(kb.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(
                c.env
                    .iter()
                    .map(|(k, v)| (*k, v.replace("{dir}", &dir.display().to_string()))),
            )
            .env("GITHUB_WORKSPACE", &apps)
            .current_dir(&apps)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Action mode reports through workflow commands on stdout; everything else keeps it empty.
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        let problems = [
            (out.status.code() != Some(c.code))
                .then(|| format!("exit {:?}, want {}", out.status.code(), c.code)),
            (error_lines.len() != 1).then(|| format!("{} error lines", error_lines.len())),
            // A compile error's first line names the failure; the compiler's own words follow.
            (!stderr.contains(c.needle)).then(|| format!("no {:?} in the error", c.needle)),
            (stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE"))
                .then(|| "panicked".to_string()),
            (c.subcommand != "action" && !stdout.is_empty()).then(|| format!("stdout: {stdout}")),
            dir.join("out")
                .exists()
                .then(|| "left an output layout".to_string()),
        ];
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {}",
                c.name,
                problems.join("; "),
                stderr.trim()
            ));
        }
        let _ = fs::remove_dir_all(dir.join("out"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A user value that would inject a workflow command if printed raw at a line start.
const INJECTED: &str = "x\n::warning::pwned";

/// Every place a user value or go's output reaches an error: none may print a line the
/// Actions runner would execute (it reads commands on stderr too).
#[test]
fn no_user_value_starts_a_workflow_command() {
    let kb = Kobuild::new();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    prepare(dir);
    let go = dir.join("go");
    go_wrapper(
        &go,
        "case \"$1\" in build) echo '::warning::pwned' >&2; exit 1;; esac\n",
    );
    let go = go.display().to_string();
    // Under a regular file, so nothing is ever created at these paths.
    let bad = format!("{}/secret.txt/{INJECTED}", dir.display());
    let missing = format!("{}/{INJECTED}", dir.display());
    let out = ["--push=false", "--oci-layout-path", "{dir}/out"];
    let build = |flag: &str, value: &str| -> Vec<String> {
        ["./hello", "--base", "scratch", flag, value]
            .into_iter()
            .chain(out)
            .map(str::to_string)
            .collect()
    };
    let action = |input: &'static str, value: &str| {
        case(input, &[], 2, "")
            .sub("action")
            .env("INPUT_TARGETS", "./hello")
            .env("INPUT_BASE", "scratch")
            .env("INPUT_PUSH", "false")
            .env(input, value)
    };
    let with = |name: &'static str, sub: &'static str, args: Vec<String>| Case {
        args,
        ..case(name, &[], 2, "").sub(sub)
    };
    let base = format!("oci-layout:{missing}");
    let cases = vec![
        with("-f", "build", vec!["-f".into(), missing.clone()]),
        with("--registry-ca", "build", build("--registry-ca", &missing)),
        with("--cache-dir", "build", build("--cache-dir", &bad)),
        with("--gocache", "build", build("--gocache", &bad)),
        with("--sbom-dir", "build", build("--sbom-dir", &bad)),
        with("--dlv", "build", build("--dlv", &missing)),
        with("--base", "build", build("--base", &base)),
        with("go build", "build", build("--platform", "linux/amd64")).env("KO_GO_PATH", &go),
        with("render -f", "render", vec!["-f".into(), missing.clone()]),
        with(
            "render --images",
            "render",
            vec![
                "-f".into(),
                "{dir}/pod.yaml".into(),
                "--images".into(),
                INJECTED.into(),
            ],
        ),
        with(
            "render -a",
            "render",
            vec!["-f".into(), "-".into(), "-a".into(), missing.clone()],
        ),
        with(
            "merge --artifacts",
            "merge",
            vec!["--artifacts".into(), missing.clone()],
        ),
        with("--jobs", "build", build("--jobs", INJECTED)),
        with("--compression", "build", build("--compression", INJECTED)),
        with(
            "--label",
            "build",
            build("--label", &format!("{INJECTED}=v")),
        ),
        action("INPUT_CACHE-DIR", &bad),
        action("INPUT_SKAFFOLD-FILE", &missing),
        action("INPUT_WORKING-DIRECTORY", &missing),
        action("INPUT_GOCACHE", &bad),
        action("INPUT_TARGETS", "./hello").env("KO_GO_PATH", &go),
    ];
    let apps = fixtures_dir().join("apps");
    let mut failures = Vec::new();
    for c in &cases {
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| a.replace("{dir}", &dir.display().to_string()))
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_kobuild"))
            .arg(c.subcommand)
            .args(&args)
            .envs(kb.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(c.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("GITHUB_WORKSPACE", &apps)
            .current_dir(&apps)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let executed = stderr
            .lines()
            .chain(stdout.lines())
            .any(|l| l.trim_start().starts_with("::warning::pwned"));
        if output.status.success() || executed {
            failures.push(format!(
                "{} ({:?}): stderr:\n{stderr}stdout:\n{stdout}",
                c.name,
                output.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
