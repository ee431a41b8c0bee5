//! Acceptance tables from the Skaffold/ko references (skaffold-ko-builder.md, ko-image-format.md
//! §3, rust-crates-and-actions.md §5) for configuration, naming and templating.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kobuild::config::{
    ActivationContext, Artifact, BaseImageSource, Builder, GitVariant, ImportTarget, KoArtifact,
    KoConfig, NamingError, Origin, SkaffoldConfig, TagPolicy, effective_ko_build,
    image_template_vars, import_target, load_skaffold, parse_reference, registry_repository,
    sanitize_image_name, substitute_default_repo,
};
use kobuild::plan::Env;
use kobuild::template::{
    GitInfo, KoTemplateData, TemplateError, ko_expand, output_template, skaffold_expand,
    skaffold_expand_label,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Templates: Skaffold semantics (reference §2.6, §8.1, §8.7 env_template_test)

#[test]
fn skaffold_templates() {
    let env = map(&[
        ("GITHUB_SHA", "abc123"),
        ("VERSION", "1.2.3"),
        ("TEST_KO_BUILDER_IMAGE_LABEL_ENV_VAR", "baz"),
        ("X", "xyzzy"),
        ("IMAGE_TAG", "from-os"),
    ]);
    let extra = map(&[
        ("IMAGE_REPO", "ghcr.io/acme"),
        ("IMAGE_NAME", "name"),
        ("IMAGE_TAG", "tag"),
    ]);
    let cases = [
        ("{{.GITHUB_SHA}}", "abc123"),
        ("{{.Env.VERSION}}", "1.2.3"),
        // Only the exact text `{{.Env.` is rewritten.
        ("{{ .Env.VERSION }}", "<no value>"),
        (r#"{{ default "dev" .VERSION }}"#, "1.2.3"),
        (r#"{{ default "dev" .UNSET }}"#, "dev"),
        (r#"{{default "a" .FOO}}:{{.BAR}}"#, "a:<no value>"),
        ("{{.MISSING}}", "<no value>"),
        ("{{.Git.ShortCommit}}", "<no value>"),
        ("{{.Date}}", "<no value>"),
        (r#"{{index . "NOPE"}}"#, ""),
        ("{{if .MISSING}}y{{else}}n{{end}}", "n"),
        ("{{.version}}", "<no value>"),
        // The custom map beats the OS environment.
        ("{{.IMAGE_TAG}}", "tag"),
        ("-flag-{{.IMAGE_NAME}}", "-flag-name"),
        (
            "{{.IMAGE_REPO}}/{{.IMAGE_NAME}}:{{.IMAGE_TAG}}",
            "ghcr.io/acme/name:tag",
        ),
        ("frob={{.TEST_KO_BUILDER_IMAGE_LABEL_ENV_VAR}}", "frob=baz"),
        (
            "-flag2-{{.Env.TEST_KO_BUILDER_IMAGE_LABEL_ENV_VAR}}",
            "-flag2-baz",
        ),
        ("-ldflag-{{.Env.X}}", "-ldflag-xyzzy"),
        (
            "{{.VERSION | upper}} {{lower \"AbC\"}} {{trim \"  x \"}}",
            "1.2.3 abc x",
        ),
        (
            r#"{{trimPrefix "v" "v1.0"}}{{trimSuffix "-rc" "-x-rc"}}"#,
            "1.0-x",
        ),
        (r#"{{replace "." "_" .VERSION}}"#, "1_2_3"),
        (r#"{{quote .VERSION}} {{squote "a"}}"#, r#""1.2.3" 'a'"#),
        (
            r#"{{contains "2" .VERSION}} {{hasPrefix "1." .VERSION}} {{hasSuffix "x" .VERSION}}"#,
            "true true false",
        ),
        (r#"{{join "-" (splitList "." .VERSION)}}"#, "1-2-3"),
        (r#"{{(split "." .VERSION)._1}}"#, "2"),
        (r#"{{title "hello world"}}"#, "Hello World"),
        (
            r#"{{substr 0 7 .GITHUB_SHA}}|{{substr 2 99 .GITHUB_SHA}}"#,
            "abc123|c123",
        ),
        (
            r#"{{trunc 3 .GITHUB_SHA}}{{trunc -2 .GITHUB_SHA}}"#,
            "abc23",
        ),
        (
            r#"{{repeat 3 "ab"}}|{{nospace "a b c"}}|{{cat "a" "b"}}"#,
            "ababab|abc|a b",
        ),
        (r#"{{env "VERSION"}}{{env "IMAGE_NAME"}}"#, "1.2.3"),
        (
            r#"{{empty .UNSET}} {{coalesce .UNSET "" "x"}} {{ternary "y" "n" true}}"#,
            "true x y",
        ),
        (r#"{{b64enc "hi"}} {{b64dec "aGk="}}"#, "aGk= hi"),
        (r#"{{sha256sum "abc" | trunc 8}}"#, "ba7816bf"),
        (
            r#"{{date "2006-01-02T15:04:05Z07:00" 1257894000}}"#,
            "2009-11-10T23:00:00Z",
        ),
        (r#"{{unixEpoch 42}}"#, "42"),
        (
            r#"{{json (list .VERSION "<b>")}} {{toJson "x"}}"#,
            r#"["1.2.3","<b>"] "x""#,
        ),
        (r#"{{toString 7}}"#, "7"),
    ];
    for (template, want) in cases {
        assert_eq!(
            skaffold_expand(template, &env, &extra).as_deref(),
            Ok(want),
            "{template}"
        );
    }
}

#[test]
fn skaffold_label_templates_see_only_the_environment() {
    let env = map(&[("GITHUB_SHA", "abc123"), ("X", "1")]);
    let cases = [
        ("{{.GITHUB_SHA}}", "abc123"),
        ("{{.Env.X}}", "<no value>"),
        ("{{.IMAGE_TAG}}", "<no value>"),
        ("bar", "bar"),
    ];
    for (template, want) in cases {
        assert_eq!(
            skaffold_expand_label(template, &env).as_deref(),
            Ok(want),
            "{template}"
        );
    }
}

#[test]
fn skaffold_template_errors() {
    let env = map(&[]);
    let parse = |t: &str| match skaffold_expand(t, &env, &env) {
        Err(TemplateError::Parse {
            position, message, ..
        }) => (position, message),
        other => panic!("{t}: {other:?}"),
    };
    assert_eq!(
        parse("{{.VERSION"),
        (Some((1, 11)), "unclosed action".into())
    );
    // Columns refer to the text as written, before the `.Env.` rewrite.
    assert_eq!(
        parse("{{.Env.A}}{{.B"),
        (Some((1, 15)), "unclosed action".into())
    );
    assert_eq!(
        parse("x\n {{.A}} {{nope .A}}"),
        (Some((2, 11)), r#"function "nope" not defined"#.into())
    );
    let err = skaffold_expand("{{.VERSION", &env, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unable to parse template "{{.VERSION": line 1, column 11: unclosed action"#
    );

    let exec = |t: &str| match skaffold_expand(t, &env, &env) {
        Err(TemplateError::Execute { message, .. }) => message,
        other => panic!("{t}: {other:?}"),
    };
    assert_eq!(exec("{{with $x := nil}}{{end}}"), "nil is not a command");
    assert_eq!(exec("{{upper .MISSING}}"), "invalid value; expected string");
    assert!(exec(r#"{{cmd "git" "rev-parse" "HEAD"}}"#).starts_with("cmd is not supported"));
    assert!(exec(r#"{{substr 1 0 "abc"}}"#).contains("out of range"));
}

// ---------------------------------------------------------------------------------------
// Templates: ko semantics (ko-image-format §3, rust-crates §5)

#[test]
fn ko_templates() {
    let data = KoTemplateData {
        env: map(&[("GOOS", "linux"), ("VERSION", "1.2.3")]),
        go_env: map(&[("GOOS", "darwin"), ("GOARCH", "arm64")]),
        git: GitInfo {
            branch: "main".into(),
            tag: "v1.2.3".into(),
            short_commit: "abc1234".into(),
            full_commit: "abc1234def".into(),
            commit_timestamp: 1_257_894_000,
            dirty: true,
        },
        timestamp: 1_700_000_000,
    };
    let cases = [
        ("{{.Env.VERSION}}", "1.2.3"),
        ("-X main.ldflags={{.Env.LDFLAGS}}", "-X main.ldflags="),
        ("{{.GoEnv.GOOS}}/{{.GoEnv.GOARCH}}", "linux/arm64"),
        (
            "{{.Git.Branch}} {{.Git.Tag}} {{.Git.ShortCommit}} {{.Git.FullCommit}}",
            "main v1.2.3 abc1234 abc1234def",
        ),
        (
            "{{.Git.CommitDate}} {{.Git.CommitTimestamp}}",
            "2009-11-10T23:00:00Z 1257894000",
        ),
        (
            "{{.Git.IsDirty}} {{.Git.IsClean}} {{.Git.TreeState}}",
            "true false dirty",
        ),
        (
            "{{.Date}} {{.Timestamp}}",
            "2023-11-14T22:13:20Z 1700000000",
        ),
        (r#"{{index .Env "NOPE"}}"#, ""),
    ];
    for (template, want) in cases {
        assert_eq!(
            ko_expand(template, &data).as_deref(),
            Ok(want),
            "{template}"
        );
    }

    let missing = ko_expand("{{.Env.NOPE}}", &data).unwrap_err();
    assert_eq!(
        missing.to_string(),
        r#"unable to execute template "{{.Env.NOPE}}": map has no entry for key "NOPE""#
    );
    assert!(ko_expand("{{.Nope}}", &data).is_err());
    // ko has no Sprig functions.
    assert!(matches!(
        ko_expand(r#"{{default "a" .Env.X}}"#, &data),
        Err(TemplateError::Parse { .. })
    ));

    // Outside a git repository.
    let none = KoTemplateData::default();
    assert_eq!(
        ko_expand(
            "{{.Git.ShortCommit}}|{{.Git.CommitDate}}|{{.Git.CommitTimestamp}}|{{.Git.TreeState}}|{{.Git.IsClean}}",
            &none
        )
        .as_deref(),
        Ok("|0001-01-01T00:00:00Z|-62135596800|clean|true")
    );
}

// ---------------------------------------------------------------------------------------
// --output / artifacts.json (reference §3.1)

#[test]
fn output_templates() {
    let builds = vec![
        (
            "ko://github.com/acme/svc/cmd/api".to_string(),
            "gcr.io/my-proj/github.com/acme/svc/cmd/api:v1.2.0@sha256:3f0c".to_string(),
        ),
        (
            "web".to_string(),
            "gcr.io/my-proj/web:v1.2.0@sha256:9a1b".to_string(),
        ),
    ];
    let out = |t: &str| output_template(t, Some(&builds)).unwrap();
    assert_eq!(
        out("{{json .}}"),
        r#"{"builds":[{"imageName":"ko://github.com/acme/svc/cmd/api","tag":"gcr.io/my-proj/github.com/acme/svc/cmd/api:v1.2.0@sha256:3f0c"},{"imageName":"web","tag":"gcr.io/my-proj/web:v1.2.0@sha256:9a1b"}]}"#
    );
    assert_eq!(
        output_template("{{json .}}", None).unwrap(),
        r#"{"builds":null}"#
    );
    assert_eq!(
        output_template("{{json .}}", Some(&[])).unwrap(),
        r#"{"builds":[]}"#
    );
    assert_eq!(
        out("{{range .Builds}}{{.Tag}}{{end}}"),
        "gcr.io/my-proj/github.com/acme/svc/cmd/api:v1.2.0@sha256:3f0cgcr.io/my-proj/web:v1.2.0@sha256:9a1b"
    );
    assert_eq!(
        out(r#"{{range .Builds}}{{.Tag}}{{"\n"}}{{end}}"#)
            .lines()
            .count(),
        2
    );
    assert_eq!(
        out("{{range .Builds}}{{.ImageName}} {{end}}"),
        "ko://github.com/acme/svc/cmd/api web "
    );
    assert_eq!(
        out(r#"{{range .Builds}}{{upper .ImageName}}{{title " x"}}{{lower "Y"}}{{end}}"#),
        "KO://GITHUB.COM/ACME/SVC/CMD/API XyWEB Xy"
    );
    assert_eq!(
        out(r#"{{json (index .Builds 1)}}"#),
        r#"{"imageName":"web","tag":"gcr.io/my-proj/web:v1.2.0@sha256:9a1b"}"#
    );
    // Only json, join, title, lower and upper are defined for --output.
    assert!(output_template(r#"{{join (list "a") ","}}"#, Some(&builds)).is_err());
    assert!(output_template("{{.Nope}}", Some(&builds)).is_err());
}

// ---------------------------------------------------------------------------------------
// skaffold.yaml

fn load(name: &str, profiles: &[&str]) -> SkaffoldConfig {
    load_skaffold(&fixture(name), &names(profiles), None).unwrap()
}

fn ko(a: &Artifact) -> &KoArtifact {
    match &a.builder {
        Builder::Ko(k) => k,
        other => panic!("{} is {other:?}", a.image),
    }
}

#[test]
fn skaffold_fixture_without_profiles() {
    let c = load("skaffold.yaml", &[]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.artifacts.len(), 3);
    assert_eq!(c.concurrency, 2);
    let p = &c.pipelines[0];
    assert_eq!(p.name, "shop");
    assert_eq!(p.platforms, ["linux/amd64", "linux/arm64"]);
    assert!(matches!(
        p.tag_policy,
        TagPolicy::GitCommit {
            variant: GitVariant::AbbrevCommitSha,
            ..
        }
    ));

    let api = &c.artifacts[0];
    assert_eq!(api.image, "ko://github.com/acme/shop/cmd/api");
    assert_eq!((api.position.line, api.position.column), (14, 5));
    assert_eq!(api.file, fixture("skaffold.yaml"));
    let k = ko(api);
    assert_eq!(k.from_image, "gcr.io/distroless/static:nonroot");
    assert_eq!(k.env, ["GOPRIVATE=git.example.com"]);
    assert_eq!(k.ldflags, ["-s", "-X main.version={{.VERSION}}"]);
    assert_eq!(
        k.labels["org.opencontainers.image.revision"],
        "{{.GITHUB_SHA}}"
    );
    assert_eq!(
        k.dependency_patterns(),
        (names(&["**/*.go", "go.*"]), names(&["**/*_test.go"]))
    );
    assert!(k.specifies_build_config());

    let worker = &c.artifacts[1];
    assert_eq!(worker.context, "services/worker");
    assert!(!ko(worker).specifies_build_config());
    assert_eq!(c.platforms(worker), ["linux/amd64"]);
    assert_eq!(c.platforms(api), ["linux/amd64", "linux/arm64"]);
    assert_eq!(c.artifacts[2].builder, Builder::Other("docker"));
    assert!(c.profiles.iter().all(|p| !p.applied));
}

#[test]
fn skaffold_profiles() {
    let c = load("skaffold.yaml", &["release"]);
    assert_eq!(
        c.artifacts.len(),
        2,
        "the patch removed the docker artifact"
    );
    assert_eq!(
        ko(&c.artifacts[0]).from_image,
        "cgr.dev/chainguard/static:latest"
    );
    assert_eq!(ko(&c.artifacts[1]).ldflags, ["-s", "-w"]);
    assert!(ko(&c.artifacts[1]).specifies_build_config());
    assert_eq!(
        c.pipelines[0].tag_policy,
        TagPolicy::EnvTemplate {
            template: "{{.VERSION}}".into()
        }
    );
    // `local` is replaced as a whole: concurrency falls back to the default.
    assert_eq!(c.concurrency, 1);
    assert_eq!(c.pipelines[0].platforms, ["linux/amd64", "linux/arm64"]);
    assert!(c.profiles.iter().any(|p| p.name == "release" && p.applied));

    let c = load("skaffold.yaml", &["ci", "dev"]);
    assert_eq!(c.pipelines[0].platforms, ["linux/amd64"]);
    assert_eq!(c.artifacts.len(), 3);

    let err = load_skaffold(&fixture("skaffold.yaml"), &names(&["prod"]), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unknown profile \"prod\" (available: ci, dev, release)",
            fixture("skaffold.yaml").display()
        )
    );
}

#[test]
fn skaffold_profile_activation() {
    let env = Env::from_pairs(&[("CI", "true")]);
    let ctx = ActivationContext {
        env: &env,
        command: "build",
        kube_context: None,
    };
    let applied = |profiles: &[&str], ctx: &ActivationContext| {
        let c = load_skaffold(&fixture("skaffold.yaml"), &names(profiles), Some(ctx)).unwrap();
        c.profiles
            .iter()
            .filter(|p| p.applied)
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(applied(&[], &ctx), ["ci"]);
    assert_eq!(applied(&["-ci"], &ctx), Vec::<String>::new());
    let dev = ActivationContext {
        command: "dev",
        ..ctx
    };
    assert_eq!(applied(&["release"], &dev), ["release", "ci", "dev"]);
    let no_ci = Env::from_pairs(&[]);
    let quiet = ActivationContext { env: &no_ci, ..ctx };
    assert!(applied(&[], &quiet).is_empty());
}

#[test]
fn skaffold_multiple_configurations() {
    let c = load("multi.yaml", &["fast"]);
    assert_eq!(c.pipelines.len(), 2);
    assert_eq!(
        c.artifacts
            .iter()
            .map(|a| (a.image.as_str(), a.pipeline))
            .collect::<Vec<_>>(),
        [
            ("ko://example.com/backend", 0),
            ("ko://example.com/tool", 1)
        ]
    );
    assert_eq!(c.pipelines[1].tag_policy, TagPolicy::Sha256);
    // 0 (no limit) and 8: the smallest non-zero value wins.
    assert_eq!(c.concurrency, 8);
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].ends_with("multi.yaml:16:1: requires: kobuild does not load other configurations; their artifacts are not built"), "{}", c.warnings[0]);
}

#[test]
fn skaffold_errors_name_file_line_column_and_path() {
    let cases: [(&str, &[&str], &str); 16] = [
        (
            "unknown-field.yaml",
            &[],
            r#"7:7: unknown field "fromImg" in build.artifacts[0].ko (expected one of: fromImage, dependencies, dir, env, flags, labels, ldflags, main)"#,
        ),
        (
            "unknown-top.yaml",
            &[],
            r#"3:1: unknown field "biuld" at the top level (expected one of: apiVersion, kind, metadata, requires, build, test, manifests, deploy, portForward, resourceSelector, verify, customActions, profiles)"#,
        ),
        (
            "old-version.yaml",
            &[],
            r#"1:13: apiVersion "skaffold/v2beta25" is not supported: the ko builder needs skaffold/v2beta26 to skaffold/v4beta14 (`skaffold fix --version skaffold/v4beta14` upgrades older files)"#,
        ),
        (
            "wrong-type.yaml",
            &[],
            "7:12: build.artifacts[0].ko.env: expected a list of strings, found a scalar",
        ),
        (
            "duplicate-key.yaml",
            &[],
            r#"5:1: invalid YAML: mapping key "build" already defined at line 3"#,
        ),
        (
            "two-builders.yaml",
            &[],
            "5:5: build.artifacts[0]: only one builder may be set, found docker and ko",
        ),
        (
            "null-ko.yaml",
            &[],
            "6:5: build.artifacts[0].ko: is null, which Skaffold reads as no builder (docker); write `ko: {}`",
        ),
        (
            "two-taggers.yaml",
            &[],
            "5:5: build.tagPolicy: only one tagger may be set, found gitCommit and sha256",
        ),
        (
            "missing-image.yaml",
            &[],
            "5:5: build.artifacts[0]: image is required",
        ),
        (
            "bad-patch.yaml",
            &["broken"],
            r#"10:5: profile "broken": patches[0]: invalid path "/build/artifacts/3/ko": no such element"#,
        ),
        (
            "patched-unknown.yaml",
            &["typo"],
            r#"12:12: unknown field "mian" in build.artifacts[0].ko (expected one of: fromImage, dependencies, dir, env, flags, labels, ldflags, main)"#,
        ),
        (
            "patched-unknown.yaml",
            &["top"],
            r#"17:13: unknown field "nmae" in metadata (expected one of: name, labels, annotations)"#,
        ),
        (
            // A broken profile is an error even when not selected, as in Skaffold.
            "profile-unknown-field.yaml",
            &[],
            r#"8:9: unknown field "varaint" in profiles[0].build.tagPolicy.gitCommit (expected one of: variant, prefix, ignoreChanges)"#,
        ),
        (
            "bad-variant.yaml",
            &[],
            r#"6:16: build.tagPolicy.gitCommit.variant: "Latest" is not one of Tags, CommitSha, AbbrevCommitSha, TreeSha, AbbrevTreeSha, Branches"#,
        ),
        (
            "syntax.yaml",
            &[],
            "4:14: invalid YAML: unclosed bracket '['",
        ),
        ("missing.yaml", &[], "cannot read: "),
    ];
    for (name, profiles, want) in cases {
        let path = fixture("bad").join(name);
        let err = load_skaffold(&path, &names(profiles), None).unwrap_err();
        let got = err.to_string();
        let prefix = format!("{}:", path.display());
        let rest = got.strip_prefix(&prefix).unwrap_or(&got).trim_start();
        assert!(rest.starts_with(want), "{name}: {got}");
    }
}

// ---------------------------------------------------------------------------------------
// .ko.yaml (ko-image-format §3)

#[test]
fn ko_yaml_fixture() {
    let dir = fixture("ko");
    let c = KoConfig::load(&dir, None, &Env::from_pairs(&[])).unwrap();
    assert_eq!(c.file, Some(dir.join(".ko.yaml")));
    assert_eq!(
        c.default_base_image.as_deref(),
        Some("cgr.dev/chainguard/static:latest-glibc")
    );
    assert_eq!(
        c.base_image_override("ko://github.com/acme/shop/cmd/api"),
        Some("gcr.io/distroless/base:nonroot")
    );
    assert_eq!(c.default_platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(c.default_env, ["CGO_ENABLED=0"]);
    assert_eq!(c.default_ldflags, ["-s", "-w"]);
    let api = &c.builds[0];
    assert_eq!(
        (api.id.as_str(), api.dir.as_str(), api.main.as_str()),
        ("api", ".", "./cmd/api")
    );
    assert_eq!(api.flags, ["-tags", "netgo"]);
    assert_eq!(api.ldflags, ["-X main.version={{.Git.Tag}}"]);
    assert_eq!(api.linux_capabilities, ["net_bind_service"]);
    assert_eq!(c.builds[1].main, "cmd/tool");
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[0].contains(".ko.yaml:16:3: unknown key \"hooks\""));
    assert!(c.warnings[1].contains(".ko.yaml:19:1: unknown key \"unknownKey\""));

    // KO_CONFIG_PATH: a directory holding .ko.yaml, or the file itself; the env wins.
    let env = Env::from_pairs(&[
        ("KO_DEFAULTBASEIMAGE", "alpine"),
        ("KO_DEFAULTLDFLAGS", "-w"),
    ]);
    for path in [dir.clone(), dir.join(".ko.yaml")] {
        let c = KoConfig::load(Path::new("/nonexistent"), Some(&path), &env).unwrap();
        assert_eq!(c.default_base_image.as_deref(), Some("alpine"));
        assert_eq!(c.default_ldflags, ["-w"]);
    }
    // No file: only the environment.
    let c = KoConfig::load(&fixture("bad"), None, &env).unwrap();
    assert_eq!(
        (c.file, c.default_base_image.as_deref()),
        (None, Some("alpine"))
    );
    assert!(KoConfig::load(&dir, Some(&dir.join("missing")), &env).is_err());
    assert!(
        KoConfig::load(&dir, Some(&fixture("skaffold.yaml")), &env).is_ok(),
        "unknown keys are only warnings"
    );
    let err = KoConfig::load(&dir, Some(&fixture("bad/bad-ko.yaml")), &env).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("bad-ko.yaml:1:19: defaultBaseImage: expected a string, found a list"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Precedence of skaffold.yaml and .ko.yaml (reference §0.2, §2.2, §2.3, §8.1, §8.2)

fn artifact(image: &str, context: &str, ko: KoArtifact) -> Artifact {
    Artifact {
        image: image.into(),
        context: context.into(),
        platforms: vec![],
        runtime_type: None,
        requires: vec![],
        builder: Builder::Ko(ko),
        pipeline: 0,
        file: PathBuf::from("skaffold.yaml"),
        position: Default::default(),
    }
}

fn ko_yaml() -> KoConfig {
    KoConfig::load(&fixture("ko"), None, &Env::from_pairs(&[])).unwrap()
}

/// `go list` stand-in: directory + pattern → import path.
fn resolver(dir: &Path, pattern: &str) -> Result<String, String> {
    let dir = dir.to_string_lossy().replace("/./", "/");
    match (dir.trim_end_matches("/."), pattern) {
        ("shop", "./cmd/api") => Ok("github.com/acme/shop/cmd/api".into()),
        ("shop", "./cmd/tool") => Ok("github.com/acme/shop/cmd/tool".into()),
        ("shop", ".") => Ok("github.com/acme/shop".into()),
        other => Err(format!("no package for {other:?}")),
    }
}

#[test]
fn import_targets() {
    let k = |dir: &str, main: &str| KoArtifact {
        dir: dir.into(),
        main: main.into(),
        ..KoArtifact::default()
    };
    let cases = [
        (
            artifact(
                "ko://git.example.com/org/foo",
                ".",
                k("", "./main-should-be-ignored"),
            ),
            ImportTarget::ImportPath("git.example.com/org/foo".into()),
        ),
        (
            artifact("ko://github.com/Org/Foo", ".", k("", "")),
            ImportTarget::ImportPath("github.com/Org/Foo".into()),
        ),
        (
            artifact("any-image-name-1", ".", k("", "")),
            ImportTarget::Package {
                dir: ".".into(),
                pattern: ".".into(),
            },
        ),
        (
            artifact("x", "./testdata/package-main-in-root", k("", "")),
            ImportTarget::Package {
                dir: "./testdata/package-main-in-root".into(),
                pattern: ".".into(),
            },
        ),
        (
            artifact("x", "./testdata/package-main-not-in-root", k("", "./baz")),
            ImportTarget::Package {
                dir: "./testdata/package-main-not-in-root".into(),
                pattern: "./baz".into(),
            },
        ),
        (
            artifact("x", "./testdata", k("package-main-not-in-root", "./baz")),
            ImportTarget::Package {
                dir: "./testdata/package-main-not-in-root".into(),
                pattern: "./baz".into(),
            },
        ),
    ];
    for (a, want) in cases {
        let Builder::Ko(k) = &a.builder else {
            unreachable!()
        };
        assert_eq!(import_target(&a, k), want, "{}", a.image);
    }
}

#[test]
fn precedence_all_options_case() {
    // §8.1 "all options": the artifact specifies the build config, so .ko.yaml builds are
    // ignored; fromImage is used; the working directory is context/dir.
    let k = KoArtifact {
        from_image: "gcr.io/distroless/base:nonroot".into(),
        dir: "gomoddir".into(),
        env: names(&["FOO=BAR", "frob={{.TEST_KO_BUILDER_IMAGE_LABEL_ENV_VAR}}"]),
        flags: names(&["-v", "-flag-{{.X}}"]),
        ldflags: names(&["-s"]),
        main: "cmd/app".into(),
        ..KoArtifact::default()
    };
    let a = artifact("ko://example.com/foo", "workdir", k.clone());
    let plats = names(&["linux/amd64", "linux/arm64"]);
    let b = effective_ko_build(&a, &k, &plats, &ko_yaml(), resolver).unwrap();
    assert_eq!(b.import_path, "example.com/foo");
    assert_eq!(b.working_dir, PathBuf::from("workdir/gomoddir"));
    assert_eq!(
        (b.base_image.as_str(), b.base_image_source),
        ("gcr.io/distroless/base:nonroot", BaseImageSource::FromImage)
    );
    assert_eq!(b.platforms, plats);
    assert_eq!(
        (b.env.values.clone(), b.env.origin),
        (k.env.clone(), Origin::Skaffold)
    );
    assert_eq!(b.flags.values, k.flags);
    assert_eq!(b.ko_build, None);
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains(".ko.yaml builds are not used"))
    );

    // §8.1 "all zero value": nothing set, no .ko.yaml: ko's defaults.
    let zero = KoArtifact::default();
    let a = artifact("ko://example.com/foo", ".", zero.clone());
    let b = effective_ko_build(&a, &zero, &[], &KoConfig::default(), resolver).unwrap();
    assert_eq!(
        (b.base_image.as_str(), b.base_image_source),
        ("cgr.dev/chainguard/static:latest", BaseImageSource::BuiltIn)
    );
    assert!(b.platforms.is_empty() && b.env.values.is_empty() && b.ldflags.values.is_empty());
    assert_eq!(b.working_dir, PathBuf::from("."));
}

#[test]
fn precedence_table() {
    let ko = ko_yaml();
    let run = |image: &str, k: KoArtifact, platforms: &[&str], config: &KoConfig| {
        let a = artifact(image, "shop", k.clone());
        effective_ko_build(&a, &k, &names(platforms), config, resolver).unwrap()
    };

    // Nothing in the artifact: the matching .ko.yaml build applies (by import path).
    let b = run(
        "ko://github.com/acme/shop/cmd/api",
        KoArtifact::default(),
        &[],
        &ko,
    );
    assert_eq!(b.ko_build, Some(0));
    assert_eq!(b.working_dir, PathBuf::from("shop/."));
    assert_eq!(
        (b.env.values.clone(), b.env.origin),
        (names(&["GOFLAGS=-mod=vendor"]), Origin::KoYaml)
    );
    assert_eq!(b.flags.values, ["-tags", "netgo"]);
    assert_eq!(b.ldflags.values, ["-X main.version={{.Git.Tag}}"]);
    assert_eq!(b.linux_capabilities, ["net_bind_service"]);
    // baseImageOverrides (keys lower-cased) beat defaultBaseImage…
    assert_eq!(
        (b.base_image.as_str(), b.base_image_source),
        ("gcr.io/distroless/base:nonroot", BaseImageSource::Override)
    );
    // …and fromImage: labels and fromImage do not count as a build config.
    let with_from = KoArtifact {
        from_image: "alpine".into(),
        labels: map(&[("a", "b")]),
        ..KoArtifact::default()
    };
    let b = run(
        "ko://github.com/acme/shop/cmd/api",
        with_from.clone(),
        &[],
        &ko,
    );
    assert_eq!(
        (b.base_image.as_str(), b.ko_build),
        ("gcr.io/distroless/base:nonroot", Some(0))
    );
    // Without an override, fromImage beats defaultBaseImage.
    let b = run("ko://github.com/acme/shop", with_from, &[], &ko);
    assert_eq!(
        (b.base_image.as_str(), b.base_image_source),
        ("alpine", BaseImageSource::FromImage)
    );
    // No build matches this import path: the defaults apply, per field.
    assert_eq!(b.ko_build, None);
    assert_eq!(b.env.values, ["CGO_ENABLED=0"]);
    assert_eq!(b.ldflags.values, ["-s", "-w"]);
    assert!(
        b.flags.values.is_empty(),
        "defaultFlags are shadowed by -trimpath in Skaffold"
    );
    assert!(b.warnings.iter().any(|w| w.contains("defaultFlags")));
    // Neither: defaultBaseImage; defaultPlatforms when Skaffold passes none.
    let b = run("worker", KoArtifact::default(), &[], &ko);
    assert_eq!(b.import_path, "github.com/acme/shop");
    assert_eq!(
        (b.base_image.as_str(), b.base_image_source),
        (
            "cgr.dev/chainguard/static:latest-glibc",
            BaseImageSource::KoDefault
        )
    );
    assert_eq!(b.platforms, ["linux/amd64", "linux/arm64"]);
    let b = run("worker", KoArtifact::default(), &["linux/s390x"], &ko);
    assert_eq!(b.platforms, ["linux/s390x"]);
    let b = run(
        "worker",
        KoArtifact::default(),
        &["linux/amd64,linux/arm64"],
        &ko,
    );
    assert_eq!(b.platforms, ["linux/amd64", "linux/arm64"]);
    // KO_DEFAULTBASEIMAGE replaces the file's defaultBaseImage.
    let env_ko = KoConfig::load(
        &fixture("ko"),
        None,
        &Env::from_pairs(&[("KO_DEFAULTBASEIMAGE", "busybox")]),
    )
    .unwrap();
    assert_eq!(
        run("worker", KoArtifact::default(), &[], &env_ko).base_image,
        "busybox"
    );

    // Any of dir/main (other than ""/"."), env, flags, ldflags: .ko.yaml builds are ignored.
    let specifying = [
        KoArtifact {
            dir: "sub".into(),
            ..KoArtifact::default()
        },
        KoArtifact {
            main: "./cmd/api".into(),
            ..KoArtifact::default()
        },
        KoArtifact {
            env: names(&["A=1"]),
            ..KoArtifact::default()
        },
        KoArtifact {
            flags: names(&["-v"]),
            ..KoArtifact::default()
        },
        KoArtifact {
            ldflags: names(&["-s"]),
            ..KoArtifact::default()
        },
    ];
    for k in specifying {
        assert!(k.specifies_build_config(), "{k:?}");
    }
    for k in [
        KoArtifact {
            dir: ".".into(),
            main: ".".into(),
            ..KoArtifact::default()
        },
        KoArtifact::default(),
    ] {
        assert!(!k.specifies_build_config());
    }
    let b = run(
        "ko://github.com/acme/shop/cmd/api",
        KoArtifact {
            ldflags: names(&["-s"]),
            ..KoArtifact::default()
        },
        &[],
        &ko,
    );
    assert_eq!(b.ko_build, None);
    assert_eq!(
        (b.ldflags.values.clone(), b.ldflags.origin),
        (names(&["-s"]), Origin::Skaffold)
    );
    assert_eq!(
        (b.env.values.clone(), b.env.origin),
        (names(&["CGO_ENABLED=0"]), Origin::KoYaml)
    );

    // go list failures propagate.
    let a = artifact("nothing-here", "elsewhere", KoArtifact::default());
    assert!(effective_ko_build(&a, &KoArtifact::default(), &[], &ko, resolver).is_err());
}

// ---------------------------------------------------------------------------------------
// Naming (reference §5, §8.2, §8.3, §8.7)

#[test]
fn default_repo_table() {
    const D: &str = "sha256:81daf011d63b68cfa514ddab7741a1adddd59d3264118dfb0fd9266328bb8883";
    let long = "gcr.io/herewehaveanincrediblylongregistryname/herewealsohaveanabnormallylongimagename/doubtyouveseenanimagethislong/butyouneverknowdoyouimeanpeopledosomecrazystuffoutthere/goodluckpushingthistoanyregistrymyfriend";
    let long_want = "aws_account_id.dkr.ecr.region.amazonaws.com/gcr_io_herewehaveanincrediblylongregistryname_herewealsohaveanabnormallylongimagename_doubtyouveseenanimagethislong_butyouneverknowdoyouimeanpeopledosomecrazystuffoutthere_goodluckpushingthistoanyregistrymyfrien";
    let with_digest = format!("img@{D}");
    let with_both = format!("img:tag@{D}");
    let cases: Vec<(&str, &str, bool, String)> = vec![
        (
            "ko://example.com/cmd/app",
            "gcr.io/default",
            false,
            "gcr.io/default/example.com/cmd/app".into(),
        ),
        (
            "ko://example.com/cmd/app",
            "myrepo",
            false,
            "myrepo/example_com_cmd_app".into(),
        ),
        (
            "ko://example.com/cmd/app",
            "myrepo",
            true,
            "myrepo/example.com/cmd/app".into(),
        ),
        (
            "gcr.io/some/registry",
            "gcr.io/default",
            false,
            "gcr.io/default/gcr.io/some/registry".into(),
        ),
        (
            "gcr.io/some/registry",
            "",
            false,
            "gcr.io/some/registry".into(),
        ),
        (
            "gcr.io/default/registry",
            "gcr.io/default",
            false,
            "gcr.io/default/registry".into(),
        ),
        (
            "eu.gcr.io/project/registry",
            "eu.gcr.io/project",
            false,
            "eu.gcr.io/project/registry".into(),
        ),
        (
            "gcr.io/default/example/registry",
            "gcr.io/default/repository",
            false,
            "gcr.io/default/repository/example/registry".into(),
        ),
        (
            "gcr.io/some/registry",
            "aws_account_id.dkr.ecr.region.amazonaws.com",
            false,
            "aws_account_id.dkr.ecr.region.amazonaws.com/gcr_io_some_registry".into(),
        ),
        (
            long,
            "aws_account_id.dkr.ecr.region.amazonaws.com",
            false,
            long_want.into(),
        ),
        (
            "gcr.io/k8s-skaffold/skaffold-example",
            "gcr.io/k8s-skaffold",
            false,
            "gcr.io/k8s-skaffold/skaffold-example".into(),
        ),
        (
            "img:tag",
            "gcr.io/default",
            false,
            "gcr.io/default/img:tag".into(),
        ),
        (
            &with_digest,
            "gcr.io/default",
            false,
            format!("gcr.io/default/img@{D}"),
        ),
        (
            &with_both,
            "gcr.io/default",
            false,
            format!("gcr.io/default/img:tag@{D}"),
        ),
        (
            "ko://github.com/acme/svc/cmd/api",
            "ghcr.io/acme",
            false,
            "ghcr.io/acme/github_com_acme_svc_cmd_api".into(),
        ),
        (
            "ko://github.com/acme/svc/cmd/api",
            "ghcr.io/acme",
            true,
            "ghcr.io/acme/github.com/acme/svc/cmd/api".into(),
        ),
        (
            "ko://github.com/acme/svc/cmd/api",
            "us-docker.pkg.dev/my-proj/repo",
            false,
            "us-docker.pkg.dev/my-proj/repo/github.com/acme/svc/cmd/api".into(),
        ),
        (
            "us-docker.pkg.dev/my-proj/other/app",
            "us-docker.pkg.dev/my-proj/repo",
            false,
            "us-docker.pkg.dev/my-proj/repo/other/app".into(),
        ),
        (
            // A project id under 6 characters does not match Skaffold's regex: flattened.
            "ko://github.com/acme/svc/cmd/api",
            "us-docker.pkg.dev/proj/repo",
            false,
            "us-docker.pkg.dev/proj/repo/github_com_acme_svc_cmd_api".into(),
        ),
        (
            "ko://github.com/Acme/App:v1.0-RC",
            "ghcr.io/acme",
            true,
            "ghcr.io/acme/github.com/acme/app:v1.0-RC".into(),
        ),
    ];
    for (image, repo, multi, want) in cases {
        assert_eq!(
            substitute_default_repo(repo, multi, image).as_deref(),
            Ok(want.as_str()),
            "{image} under {repo}"
        );
    }
    assert!(substitute_default_repo("gcr.io/default", false, "!!invalid!!").is_err());
    assert!(substitute_default_repo("gcr.io/default", false, "img@sha256:abc").is_err());
}

#[test]
fn references_and_repositories() {
    let r = parse_reference("ko://host/user/container").unwrap();
    assert_eq!(r.base_name, "host/user/container");
    let r = parse_reference("ko://github.com/GoogleContainerTools/skaffold").unwrap();
    assert_eq!(r.base_name, "github.com/googlecontainertools/skaffold");
    let r = parse_reference("gcr.io/k8s-skaffold/Example:Tag").unwrap();
    assert_eq!(
        (r.base_name.as_str(), r.tag.as_str()),
        ("gcr.io/k8s-skaffold/example", "Tag")
    );
    assert!(r.fully_qualified);
    let r = parse_reference("registry.example.com/repository/myapp1:tag1").unwrap();
    assert_eq!(
        (
            r.base_name.as_str(),
            r.domain.as_str(),
            r.path.as_str(),
            r.tag.as_str()
        ),
        (
            "registry.example.com/repository/myapp1",
            "registry.example.com",
            "repository/myapp1",
            "tag1"
        )
    );
    let r = parse_reference("localhost:5000/app:latest").unwrap();
    assert_eq!(
        (r.domain.as_str(), r.name.as_str()),
        ("localhost:5000", "app")
    );
    assert!(!r.fully_qualified);
    assert!(parse_reference("").is_err());
    assert!(parse_reference(&format!("a/{}", "b".repeat(260))).is_err());

    // Render matches manifests on the sanitized name (reference §4).
    let key = sanitize_image_name("ko://github.com/org/app");
    for v in [
        "ko://github.com/Org/App",
        "ko://github.com/org/app",
        "github.com/org/app",
    ] {
        assert_eq!(sanitize_image_name(v), key, "{v}");
    }
    assert_eq!(sanitize_image_name("not valid"), "not valid");

    // IMAGE_REPO / IMAGE_NAME split at the last `/`; both empty for a single-segment name.
    assert_eq!(
        image_template_vars("ghcr.io/acme/app:v1.2.0").unwrap(),
        map(&[
            ("IMAGE_NAME", "app"),
            ("IMAGE_REPO", "ghcr.io/acme"),
            ("IMAGE_TAG", "v1.2.0")
        ])
    );
    assert_eq!(
        image_template_vars("app:v1").unwrap(),
        map(&[("IMAGE_NAME", ""), ("IMAGE_REPO", ""), ("IMAGE_TAG", "v1")])
    );

    // §8.2 TestBuild: pushing ko:// without a default repo is an error.
    assert_eq!(
        registry_repository("ko://github.com/google/ko", None, false),
        Err(NamingError::DefaultRepoRequired(
            "ko://github.com/google/ko".into()
        ))
    );
    assert_eq!(
        registry_repository("ko://github.com/google/ko", None, false)
            .unwrap_err()
            .to_string(),
        "default repo must be set when using the 'ko://' prefix and pushing to a registry: ko://github.com/google/ko, see https://skaffold.dev/docs/environment/image-registries/"
    );
    assert_eq!(
        registry_repository("ko://github.com/Google/KO", Some("ghcr.io/me"), false).as_deref(),
        Ok("ghcr.io/me/github_com_google_ko")
    );
    assert_eq!(
        registry_repository("registry.example.com/repo/image1", None, false).as_deref(),
        Ok("registry.example.com/repo/image1")
    );
}
