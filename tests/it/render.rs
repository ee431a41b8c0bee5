//! `kobuild render` end to end: golden manifests, losslessness, inputs, outputs and errors.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kobuild");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render")
}

fn artifacts() -> PathBuf {
    fixtures().join("artifacts.json")
}

/// Runs `kobuild render ARGS` with `stdin`.
fn render(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("render")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A failing run may exit before reading stdin; that is not what is tested.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The exit code and the single line on stderr; nothing may reach stdout.
fn failed(out: Output) -> (i32, String) {
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    (out.status.code().unwrap(), stderr.trim_end().to_string())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The references the fixture artifacts.json maps to.
fn tags() -> Vec<String> {
    let json: serde_json::Value = serde_json::from_slice(&fs::read(artifacts()).unwrap()).unwrap();
    json["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tag"].as_str().unwrap().to_string())
        .collect()
}

/// `line` with every image reference token (a `ko://` string, a name of the fixture images, or
/// an alias) replaced by a NUL.
fn mask_old_refs(line: &str) -> String {
    let delimiter = |c: char| c.is_whitespace() || "\"',[]{}".contains(c);
    let mut out = String::new();
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let lower = token.to_lowercase();
        if lower.contains("ko://") || lower.contains("example.com/app") || token.starts_with('*') {
            out.push('\0');
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in line.chars() {
        if delimiter(c) {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// Every line is byte-identical except for image references: the same line with the old
/// references masked equals the new one with the built references masked.
fn assert_lossless(name: &str, input: &str, output: &str) {
    let tags = tags();
    let old: Vec<&str> = input.split('\n').collect();
    let new: Vec<&str> = output.split('\n').collect();
    assert_eq!(old.len(), new.len(), "{name}: line count");
    let mut changed = 0;
    for (i, (a, b)) in old.iter().zip(&new).enumerate() {
        if a == b {
            continue;
        }
        changed += 1;
        let masked_new = tags
            .iter()
            .fold(b.to_string(), |l, t| l.replace(t.as_str(), "\0"));
        assert_eq!(
            mask_old_refs(a),
            masked_new,
            "{name}:{}: more than image references changed:\n{a}\n{b}",
            i + 1
        );
    }
    assert!(changed > 0, "{name}: nothing changed");
}

fn golden_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures().join("in"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn goldens() {
    let names = golden_names();
    for expected in [
        "anchors.yaml",
        "crd.yaml",
        "cronjob.yaml",
        "deployment.yaml",
        "digest.yaml",
        "flow.yaml",
        "knative-service.yaml",
        "list.yaml",
        "manifest.json",
        "multi.yaml",
        "quoted.yaml",
        "tagged.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing golden {expected}"
        );
    }
    for name in names {
        let input_path = fixtures().join("in").join(&name);
        let input = fs::read_to_string(&input_path).unwrap();
        let want = fs::read_to_string(fixtures().join("want").join(&name)).unwrap();
        let got = ok(render(
            &["-f", p(&input_path), "--build-artifacts", p(&artifacts())],
            b"",
        ));
        assert_eq!(got, want, "{name}");
        assert_lossless(&name, &input, &got);
    }
}

#[test]
fn lossless_check_catches_other_changes() {
    let result = std::panic::catch_unwind(|| {
        assert_lossless("t", "a: 1\nimage: ko://x\n", "a: 2\nimage: ko://x\n")
    });
    assert!(result.is_err());
}

#[test]
fn directory_in_name_order_separated_like_skaffold() {
    let names = golden_names();
    let want: Vec<String> = names
        .iter()
        .map(|n| fs::read_to_string(fixtures().join("want").join(n)).unwrap())
        .collect();
    let got = ok(render(
        &["-f", p(&fixtures().join("in")), "-a", p(&artifacts())],
        b"",
    ));
    assert_eq!(got, want.join("---\n"));
}

#[test]
fn recursive_walk_and_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("b-sub/deeper")).unwrap();
    fs::write(root.join("c.yml"), "c: ko://example.com/c").unwrap();
    fs::write(root.join("a.yaml"), "a: ko://example.com/a\n").unwrap();
    fs::write(
        root.join("b-sub/x.json"),
        "{\"x\": \"ko://example.com/x\"}\n",
    )
    .unwrap();
    fs::write(root.join("b-sub/deeper/y.yaml"), "y: 1\n").unwrap();
    fs::write(root.join("notes.txt"), "ko://example.com/not-a-manifest").unwrap();
    fs::write(root.join("empty.yaml"), "").unwrap();
    std::os::unix::fs::symlink(root, root.join("b-sub/loop")).unwrap();
    let extra = root.join("b-sub/deeper/y.yaml");
    let args = |recursive: bool| {
        let mut a = vec!["-f", p(root), "-f", p(&extra), "--allow-unresolved"];
        if recursive {
            a.push("-R");
        }
        a
    };
    assert_eq!(
        ok(render(&args(false), b"")),
        "a: ko://example.com/a\n---\nc: ko://example.com/c\n---\ny: 1\n"
    );
    assert_eq!(
        ok(render(&args(true), b"")),
        "a: ko://example.com/a\n---\ny: 1\n---\n{\"x\": \"ko://example.com/x\"}\n---\nc: ko://example.com/c\n---\ny: 1\n"
    );
}

#[test]
fn stdin_manifest_and_flags() {
    let input = fs::read(fixtures().join("in/cronjob.yaml")).unwrap();
    let want = fs::read_to_string(fixtures().join("want/cronjob.yaml")).unwrap();
    assert_eq!(
        ok(render(&["-f", "-", "-a", p(&artifacts())], &input)),
        want
    );
    // --images alone, and artifacts.json entries winning over it.
    let flag = "ko://github.com/acme/svc/cmd/migrate=reg.example/migrate:flag";
    let from_flag = want.replace(&tags()[2], "reg.example/migrate:flag");
    assert_eq!(
        ok(render(&["-f", "-", "--images", flag], &input)),
        from_flag
    );
    assert_eq!(
        ok(render(
            &["-f", "-", "-i", flag, "-a", p(&artifacts())],
            &input
        )),
        want
    );
}

#[test]
fn artifacts_on_stdin_in_skaffold_form() {
    let tag = "gcr.io/my-proj/github.com/acme/svc/cmd/api:v1.2.0@sha256:3f0c9a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
    let json = format!(
        r#"{{"builds":[{{"imageName":"ko://github.com/acme/svc/cmd/api","tag":"{tag}"}},{{"imageName":"web","tag":"gcr.io/my-proj/web:v1.2.0@sha256:9a1b0000000000000000000000000000000000000000000000000000000000ff"}}]}}"#
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yaml");
    fs::write(&manifest, "image: ko://github.com/acme/svc/cmd/api\n").unwrap();
    assert_eq!(
        ok(render(&["-a", "-", "-f", p(&manifest)], json.as_bytes())),
        format!("image: {tag}\n")
    );
    let (code, err) = failed(render(&["-a", "-", "-f", "-"], json.as_bytes()));
    assert_eq!(code, 2);
    assert!(err.contains("stdin can be read only once"), "{err}");
}

#[test]
fn keeps_line_endings_bom_and_missing_final_newline() {
    let input = "\u{feff}# c\r\nimage: \"ko://github.com/acme/svc/cmd/api\"\r\nx: 1";
    let got = ok(render(
        &["-f", "-", "-a", p(&artifacts())],
        input.as_bytes(),
    ));
    assert_eq!(
        got,
        input.replace("ko://github.com/acme/svc/cmd/api", &tags()[0])
    );
}

#[test]
fn output_file_is_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/rendered.yaml");
    let input = fixtures().join("in/list.yaml");
    let artifacts = artifacts();
    let args = ["-f", p(&input), "-a", p(&artifacts), "-o", p(&out)];
    assert_eq!(ok(render(&args, b"")), "");
    let want = fs::read_to_string(fixtures().join("want/list.yaml")).unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap(), want);

    // A failing render leaves the previous file as it was, and no temporary file behind.
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "image: ko://example.com/missing\n").unwrap();
    let (code, _) = failed(render(
        &["-f", p(&input), "-f", p(&bad), "-o", p(&out)],
        b"",
    ));
    assert_eq!(code, 2);
    assert_eq!(fs::read_to_string(&out).unwrap(), want);
    assert_eq!(fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
}

#[test]
fn unresolved_placeholder_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    let text = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: x\n    image: \"ko://example.com/x\"\n";
    fs::write(&file, text).unwrap();
    let (code, err) = failed(render(&["-f", p(&file), "-a", p(&artifacts())], b""));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "error: {}:6:12: ko://example.com/x has no built image: build it first or pass --images ko://example.com/x=REF",
            file.display()
        )
    );
    let kept = render(&["-f", p(&file), "--allow-unresolved"], b"");
    assert_eq!(ok(kept), text);
}

#[test]
fn invalid_yaml_names_file_line_and_column() {
    let (code, err) = failed(render(&["-f", "-"], b"a: 1\nb: [c, d\n"));
    assert_eq!(code, 2);
    assert_eq!(err, "error: <stdin>:2:4: unclosed bracket '['");
    let (code, err) = failed(render(&["-f", "-"], b"metadata:\n  name: x\n   bad: y\n"));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: <stdin>:3:7: mapping values are not allowed in this context"
    );
}

#[test]
fn malformed_artifacts_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yaml");
    fs::write(&manifest, "a: 1\n").unwrap();
    let json = dir.path().join("artifacts.json");
    for (content, why) in [
        ("", "empty file"),
        (
            "{\"builds\":[{\"imageName\":\"a\",\"tag\":7}]}",
            "invalid type: integer `7`, expected a string",
        ),
        (
            "{\"builds\":[{\"imageName\":\"a\"}]}",
            "no tag provided for image [a]",
        ),
        ("[]", "invalid type: sequence"),
    ] {
        fs::write(&json, content).unwrap();
        let (code, err) = failed(render(&["-f", p(&manifest), "-a", p(&json)], b""));
        assert_eq!(code, 2, "{err}");
        let prefix = format!("error: {}: invalid build artifacts: ", json.display());
        assert!(err.starts_with(&prefix) && err.contains(why), "{err}");
    }
    // `{"builds":null}` (what a failed Skaffold build writes) is an empty map.
    fs::write(&json, "{\"builds\":null}").unwrap();
    assert_eq!(
        ok(render(&["-f", p(&manifest), "-a", p(&json)], b"")),
        "a: 1\n"
    );
}

#[test]
fn missing_inputs_and_bad_flags() {
    let (code, err) = failed(render(&["-f", "/nonexistent/m.yaml"], b""));
    assert_eq!(
        (code, err.as_str()),
        (2, "error: /nonexistent/m.yaml: no such file or directory")
    );
    let (code, err) = failed(render(&["-f", "-", "-a", "/nonexistent/a.json"], b""));
    assert_eq!(
        (code, err.as_str()),
        (2, "error: /nonexistent/a.json: no such file or directory")
    );
    let (code, err) = failed(render(&["-f", "-", "--images", "ko://x="], b""));
    assert_eq!(code, 2);
    assert!(
        err.contains("--images ko://x=: reference \"\" for ko://x is empty"),
        "{err}"
    );
    let (code, err) = failed(render(&["-f", "-"], b"a: \xff\n"));
    assert_eq!((code, err.as_str()), (2, "error: <stdin>: not UTF-8 text"));
}

/// `kobuild render ARGS` in `dir` with `PATH` as given (for kustomize lookups).
fn render_in(dir: &Path, path: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("render")
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn skaffold_manifests_that_cannot_be_rendered_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: ko://example.com/app}\n";
    fs::create_dir_all(dir.join("k8s")).unwrap();
    fs::write(dir.join("k8s/pod.yaml"), pod).unwrap();
    let config = |manifests: &str| {
        fs::write(
            dir.join("skaffold.yaml"),
            format!("apiVersion: skaffold/v4beta11\nkind: Config\n{manifests}"),
        )
        .unwrap();
    };
    let images = ["--images", "example.com/app=r.example/app:v1"];

    // No -f and no skaffold.yaml here.
    let empty = tempfile::tempdir().unwrap();
    let (code, err) = failed(render_in(empty.path(), "/nonexistent", &images));
    assert_eq!(code, 2);
    assert!(
        err.contains("no manifests: give them with -f PATH"),
        "{err}"
    );

    // Helm is not run: refused at its line, not left out.
    config("manifests:\n  rawYaml: [k8s/pod.yaml]\n  helm:\n    releases: [{name: x}]\n");
    let (code, err) = failed(render_in(dir, "/nonexistent", &images));
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "skaffold.yaml:5:3: manifests.helm: kobuild render reads rawYaml and kustomize only"
        ),
        "{err}"
    );

    // A kustomization with neither kustomize nor kubectl to build it.
    fs::create_dir_all(dir.join("kz")).unwrap();
    fs::write(dir.join("kz/kustomization.yaml"), "resources: []\n").unwrap();
    config("manifests:\n  kustomize:\n    paths: [kz]\n");
    let (code, err) = failed(render_in(dir, "/nonexistent", &images));
    assert_eq!(code, 2);
    assert!(
        err.contains("manifests.kustomize needs kustomize or kubectl on PATH"),
        "{err}"
    );

    // A kustomize that fails: its last line, quoted.
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("kustomize");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'Error: accumulating resources' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, err) = failed(render_in(dir, bin.to_str().unwrap(), &images));
    assert_eq!(code, 2);
    assert!(
        err.contains("build failed: \"Error: accumulating resources\""),
        "{err}"
    );

    // A glob that matches nothing warns, as Skaffold does, and the rest renders.
    config("manifests:\n  rawYaml: ['none/*.yaml', k8s/pod.yaml]\n");
    let out = render_in(dir, "/nonexistent", &images);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"none/*.yaml\" matched no file"),
        "{stderr}"
    );
    assert_eq!(
        ok(out),
        pod.replace("ko://example.com/app", "r.example/app:v1")
    );

    // Given with -f, a skaffold.yaml stands for its manifests, next to other files.
    let other = dir.join("other.yaml");
    fs::write(&other, "a: 1\n").unwrap();
    let out = render_in(
        dir,
        "/nonexistent",
        &[
            "-f",
            "skaffold.yaml",
            "-f",
            other.to_str().unwrap(),
            images[0],
            images[1],
        ],
    );
    assert_eq!(
        ok(out),
        format!(
            "{}---\na: 1\n",
            pod.replace("ko://example.com/app", "r.example/app:v1")
        )
    );
}
