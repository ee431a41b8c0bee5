//! What a repository or a command line can make kobuild do to the machine it runs on: no
//! program runs through `-toolexec`, wherever build flags come from; output files behave like
//! every Unix tool's (modes, owners, symlinks, FIFOs, devices, no leftovers); kodata walks
//! always end (cycles, FIFOs and devices are refused; legal symlinked trees keep ko's DiffID).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::kobuild::Kobuild;
use crate::common::*;

/// Longer than any of these runs takes; a run past it hangs.
const LIMIT: Duration = Duration::from_secs(180);

/// `cmd` run by `sh` after the shell commands `setup`, keeping its environment and directory.
fn after(setup: &str, cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("{setup} && exec \"$@\""))
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        sh.current_dir(dir);
    }
    sh
}

fn under_umask(cmd: &Command, umask: &str) -> Command {
    after(&format!("umask {umask}"), cmd)
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn apps() -> PathBuf {
    fixtures_dir().join("apps")
}

/// `kobuild build` of the hello app into a layout, with `extra` outputs.
fn build(kb: &Kobuild, layout: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "./hello",
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--push=false",
        "--oci-layout-path",
        s(layout),
    ];
    args.extend(extra);
    kb.command(&apps(), &args)
}

/// `kobuild render` of a pod naming the hello app, with the build's artifacts.json.
fn render(kb: &Kobuild, artifacts: &Path, output: &str) -> Command {
    let pod = kb.dir().join("pod.yaml");
    fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  containers:\n  - name: hello\n    image: ko://example.com/hello\n",
    )
    .unwrap();
    kb.subcommand(
        kb.dir(),
        "render",
        &[
            "-f",
            s(&pod),
            "--build-artifacts",
            s(artifacts),
            "-o",
            output,
        ],
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Every file and directory below `root` whose mode is not `file` or `dir` (Go's linked
/// programs, under `bin/`, are executables: `dir`'s mode).
fn wrong_modes(root: &Path, file: u32, dir: u32, out: &mut Vec<String>) {
    for e in fs::read_dir(root).unwrap() {
        let path = e.unwrap().path();
        let m = fs::symlink_metadata(&path).unwrap();
        // Binaries in the cache's bin/ (their `.layer` records beside them are plain files).
        let executable =
            path.components().any(|c| c.as_os_str() == "bin") && path.extension().is_none();
        let want = if m.is_dir() || executable { dir } else { file };
        if m.mode() & 0o7777 != want {
            out.push(format!(
                "{} {:o}, want {want:o}",
                path.display(),
                m.mode() & 0o7777
            ));
        }
        if m.is_dir() {
            wrong_modes(&path, file, dir, out);
        }
    }
}

/// Names in `dir` that are kobuild's temporary files (or tempfile's default ones).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".kobuild-tmp-") || name.starts_with(".tmp") {
            found.push(e.path().display().to_string());
        }
        if e.file_type().unwrap().is_dir() {
            found.extend(leftovers(&e.path()));
        }
    }
    found
}

#[test]
fn new_outputs_get_the_umask_mode_and_replaced_ones_keep_mode_and_owner() {
    for (umask, file, dir) in [("022", 0o644, 0o755), ("077", 0o600, 0o700)] {
        let kb = Kobuild::new();
        let out = kb.dir().join("out");
        let o = |name: &str| out.join(name).display().to_string();
        let outputs = [
            "--oci-archive",
            &o("image.tar"),
            "--file-output",
            &o("artifacts.json"),
            "--sbom-dir",
            &o("sboms"),
        ];
        ok(output_within(
            &mut under_umask(&build(&kb, &out.join("layout"), &outputs), umask),
            LIMIT,
        ));
        let rendered = out.join("rendered.yaml");
        ok(output_within(
            &mut under_umask(
                &render(&kb, &out.join("artifacts.json"), s(&rendered)),
                umask,
            ),
            LIMIT,
        ));
        let mut wrong = Vec::new();
        wrong_modes(&out, file, dir, &mut wrong);
        wrong_modes(&kb.dir().join("cache"), file, dir, &mut wrong);
        assert!(wrong.is_empty(), "umask {umask}:\n{}", wrong.join("\n"));
        assert!(out.join("layout/blobs/sha256").is_dir());
        assert!(fs::read_dir(out.join("sboms")).unwrap().count() > 0);

        if umask != "077" {
            continue;
        }
        // Run again over files of mode 0640 (owned by another user, where root can arrange
        // it): they stay 0640, and that user's.
        let replaced = [
            out.join("image.tar"),
            out.join("artifacts.json"),
            rendered.clone(),
        ];
        for f in &replaced {
            fs::set_permissions(f, fs::Permissions::from_mode(0o640)).unwrap();
            if is_root() {
                std::os::unix::fs::chown(f, Some(10001), Some(10001)).unwrap();
            }
        }
        ok(output_within(
            &mut under_umask(&build(&kb, &out.join("layout"), &outputs), umask),
            LIMIT,
        ));
        ok(output_within(
            &mut under_umask(
                &render(&kb, &out.join("artifacts.json"), s(&rendered)),
                umask,
            ),
            LIMIT,
        ));
        for f in &replaced {
            assert_eq!(mode(f), 0o640, "{}", f.display());
            if is_root() {
                assert_eq!(fs::metadata(f).unwrap().uid(), 10001, "{}", f.display());
            }
        }
    }
}

#[test]
fn a_symlinked_output_stays_a_link_and_its_target_is_replaced() {
    let kb = Kobuild::new();
    let out = kb.dir().join("out");
    let real = out.join("real");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("artifacts.json"), "old").unwrap();
    fs::set_permissions(
        real.join("artifacts.json"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    // One link to an existing file, one dangling (its target is created), one through two links.
    symlink("real/artifacts.json", out.join("artifacts.json")).unwrap();
    symlink("real/image.tar", out.join("image.tar")).unwrap();
    symlink(real.join("rendered.yaml"), real.join("via")).unwrap();
    symlink("real/via", out.join("rendered.yaml")).unwrap();
    ok(output_within(
        &mut build(
            &kb,
            &out.join("layout"),
            &[
                "--file-output",
                s(&out.join("artifacts.json")),
                "--oci-archive",
                s(&out.join("image.tar")),
            ],
        ),
        LIMIT,
    ));
    ok(output_within(
        &mut render(
            &kb,
            &out.join("artifacts.json"),
            s(&out.join("rendered.yaml")),
        ),
        LIMIT,
    ));
    for link in ["artifacts.json", "image.tar", "rendered.yaml", "real/via"] {
        let m = fs::symlink_metadata(out.join(link)).unwrap();
        assert!(m.file_type().is_symlink(), "{link} is no longer a symlink");
    }
    let artifacts = fs::read_to_string(real.join("artifacts.json")).unwrap();
    assert!(artifacts.starts_with("{\"builds\":"), "{artifacts}");
    assert_eq!(mode(&real.join("artifacts.json")), 0o640);
    assert_eq!(
        &fs::read(real.join("image.tar")).unwrap()[..10],
        b"oci-layout"
    );
    let rendered = fs::read_to_string(real.join("rendered.yaml")).unwrap();
    assert!(rendered.contains("image: oci-layout:"), "{rendered}");
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

/// A reader of `fifo` on its own thread; its bytes arrive on the channel.
fn read_fifo(fifo: &Path) -> mpsc::Receiver<Vec<u8>> {
    run_checked(Command::new("mkfifo").arg(fifo));
    let (tx, rx) = mpsc::channel();
    let fifo = fifo.to_path_buf();
    // Blocks in open until a writer comes; if none ever does, the thread is left behind.
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(fifo).unwrap());
    });
    rx
}

#[test]
fn a_fifo_output_is_written_in_place() {
    let kb = Kobuild::new();
    let out = kb.dir().join("out");
    fs::create_dir_all(&out).unwrap();
    let archive = read_fifo(&out.join("image.tar"));
    let artifacts = read_fifo(&out.join("artifacts.json"));
    ok(output_within(
        &mut build(
            &kb,
            &out.join("layout"),
            &[
                "--oci-archive",
                s(&out.join("image.tar")),
                "--file-output",
                s(&out.join("artifacts.json")),
            ],
        ),
        LIMIT,
    ));
    let wait = Duration::from_secs(30);
    let tar = archive
        .recv_timeout(wait)
        .expect("no bytes came through the FIFO");
    assert_eq!(&tar[..10], b"oci-layout");
    assert!(tar.len() > 100_000, "{} bytes", tar.len());
    let json = artifacts
        .recv_timeout(wait)
        .expect("no bytes came through the FIFO");
    fs::write(out.join("saved.json"), &json).unwrap();
    assert!(json.starts_with(b"{\"builds\":"));

    let rendered = read_fifo(&out.join("rendered.yaml"));
    ok(output_within(
        &mut render(&kb, &out.join("saved.json"), s(&out.join("rendered.yaml"))),
        LIMIT,
    ));
    let yaml = rendered
        .recv_timeout(wait)
        .expect("no bytes came through the FIFO");
    assert!(
        String::from_utf8(yaml)
            .unwrap()
            .contains("image: oci-layout:")
    );
    for f in ["image.tar", "artifacts.json", "rendered.yaml"] {
        let m = fs::symlink_metadata(out.join(f)).unwrap();
        assert!(m.file_type().is_fifo(), "{f} is no longer a FIFO");
    }
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn stdout_named_as_a_file_is_written_in_place() {
    let kb = Kobuild::new();
    let out = kb.dir().join("out");
    fs::create_dir_all(&out).unwrap();
    // What /dev/stdout is, in a directory of the test's own.
    let link = out.join("stdout");
    symlink("/proc/self/fd/1", &link).unwrap();
    let built = ok(output_within(
        &mut build(&kb, &out.join("layout"), &["--file-output", s(&link)]),
        LIMIT,
    ));
    let stdout = String::from_utf8(built.stdout).unwrap();
    assert!(stdout.starts_with("{\"builds\":"), "{stdout}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // artifacts.json (no newline at its end), then the ref line.
    let json = &stdout[..stdout.find("}]}").unwrap() + 3];
    assert!(stdout[json.len()..].starts_with("oci-layout:"), "{stdout}");
    fs::write(out.join("artifacts.json"), json).unwrap();

    for target in ["-", "/proc/self/fd/1", s(&link)] {
        let rendered = ok(output_within(
            &mut render(&kb, &out.join("artifacts.json"), target),
            LIMIT,
        ));
        let yaml = String::from_utf8(rendered.stdout).unwrap();
        assert!(yaml.contains("image: oci-layout:"), "-o {target}: {yaml}");
    }
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn a_device_output_stays_a_device_and_a_failed_write_is_one_clear_line() {
    if !is_root() {
        eprintln!("skipped: making a device node (mknod) needs root");
        return;
    }
    let kb = Kobuild::new();
    let out = kb.dir().join("out");
    fs::create_dir_all(&out).unwrap();
    // A node of the test's own for /dev/full (1, 7): every write fails with ENOSPC.
    let full = out.join("full");
    run_checked(Command::new("mknod").arg(&full).args(["c", "1", "7"]));
    let full_s = s(&full);
    let artifacts = out.join("artifacts.json");
    ok(output_within(
        &mut build(&kb, &out.join("layout"), &["--file-output", s(&artifacts)]),
        LIMIT,
    ));
    let runs = [
        build(&kb, &out.join("layout"), &["--oci-archive", full_s]),
        build(&kb, &out.join("layout"), &["--file-output", full_s]),
        render(&kb, &artifacts, full_s),
    ];
    for mut cmd in runs {
        let run = output_within(&mut cmd, LIMIT);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{cmd:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(&format!("{full_s:?}")) && errors[0].contains("No space left"),
            "{}",
            errors[0]
        );
        let m = fs::symlink_metadata(&full).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "{cmd:?} replaced the device"
        );
        assert_eq!(m.rdev(), fs::metadata("/dev/full").unwrap().rdev());
    }
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

#[test]
fn a_write_that_fails_halfway_leaves_no_temporary_file() {
    let kb = Kobuild::new();
    let out = kb.dir().join("out");
    fs::create_dir_all(&out).unwrap();
    // A warm cache first, so that the limited run below writes nothing but its outputs.
    ok(output_within(
        &mut build(&kb, &out.join("layout"), &[]),
        LIMIT,
    ));
    let artifacts = out.join("artifacts.json");
    ok(output_within(
        &mut build(&kb, &out.join("layout"), &["--file-output", s(&artifacts)]),
        LIMIT,
    ));
    let big = kb.dir().join("big.yaml");
    let mut manifest = String::new();
    while manifest.len() < 200_000 {
        manifest.push_str("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  containers:\n  - name: hello\n    image: ko://example.com/hello\n");
    }
    fs::write(&big, manifest).unwrap();
    let rendering = kb.subcommand(
        kb.dir(),
        "render",
        &[
            "-f",
            s(&big),
            "--build-artifacts",
            s(&artifacts),
            "-o",
            s(&out.join("rendered.yaml")),
        ],
    );
    let runs = [
        build(&kb, &out.join("layout2"), &[]),
        build(
            &kb,
            &out.join("layout"),
            &["--oci-archive", s(&out.join("image.tar"))],
        ),
        rendering,
    ];
    for cmd in &runs {
        // 64 KiB per file (RLIMIT_FSIZE in 512-byte blocks, SIGXFSZ ignored): larger writes
        // fail with EFBIG.
        let run = output_within(&mut after("trap '' XFSZ; ulimit -f 128", cmd), LIMIT);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{cmd:?}: {stderr}");
        assert!(stderr.contains("File too large"), "{stderr}");
    }
    assert!(!out.join("rendered.yaml").exists());
    assert!(!out.join("image.tar").exists());
    let mut left = leftovers(&out);
    left.extend(leftovers(&kb.dir().join("cache")));
    assert!(left.is_empty(), "{left:?}");
}

/// A copy of the hello app whose kodata `edit` changes; returns the temp dir and the app.
fn hello_with(edit: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let copy = app_copy("hello");
    let app = copy.path().join("hello");
    edit(&app.join("kodata"));
    (copy, app)
}

/// `kobuild build .` of `app` into a layout under `kb`'s directory, within a minute.
fn build_app(kb: &Kobuild, app: &Path, extra: &[&str]) -> Output {
    let layout = kb.dir().join("layout");
    let mut args = vec![
        ".",
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--push=false",
        "--oci-layout-path",
        s(&layout),
    ];
    args.extend(extra);
    output_within(&mut kb.command(app, &args), Duration::from_secs(60))
}

/// Exit 2 and one `error:` line, which names `path`; returns that line.
fn refused(out: &Output, path: &Path) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("{:?}", s(path))),
        "{}",
        errors[0]
    );
    assert!(out.stdout.is_empty());
    errors[0].to_string()
}

#[test]
fn a_kodata_symlink_cycle_is_refused() {
    let kb = Kobuild::new();
    for (link, target) in [("self", "."), ("sub/deeper/up", "../..")] {
        let (_copy, app) = hello_with(|k| {
            fs::create_dir_all(k.join("sub/deeper")).unwrap();
            symlink(target, k.join(link)).unwrap();
        });
        let out = build_app(&kb, &app, &[]);
        let error = refused(&out, &app.join("kodata").join(link));
        assert!(error.contains("cycle"), "{error}");
    }
}

#[test]
fn a_kodata_fifo_is_refused_without_waiting_for_a_writer() {
    let kb = Kobuild::new();
    let (_copy, app) = hello_with(|k| {
        run_checked(Command::new("mkfifo").arg(k.join("sub/pipe")));
    });
    let error = refused(&build_app(&kb, &app, &[]), &app.join("kodata/sub/pipe"));
    assert!(error.contains("FIFO"), "{error}");

    // A kodata file replaced by a FIFO after a cached build: the cache's check of the
    // recorded files must not wait on it either.
    let reg = Registry::start(RegistryKind::Plain);
    let (_copy, app) = hello_with(|_| {});
    let repo = format!("{}/apps", reg.host());
    let push = |kb: &Kobuild| {
        output_within(
            &mut kb.command(
                &app,
                &[".", "--base", "scratch", "--repo", &repo, "--sbom=none"],
            ),
            Duration::from_secs(60),
        )
    };
    ok(push(&kb));
    let greeting = app.join("kodata/greeting.txt");
    fs::remove_file(&greeting).unwrap();
    run_checked(Command::new("mkfifo").arg(&greeting));
    refused(&push(&kb), &greeting);
}

#[test]
fn a_kodata_device_is_refused() {
    if !is_root() {
        eprintln!("skipped: making a device node (mknod) needs root");
        return;
    }
    let kb = Kobuild::new();
    let (_copy, app) = hello_with(|k| {
        run_checked(
            Command::new("mknod")
                .arg(k.join("null"))
                .args(["c", "1", "3"]),
        );
    });
    let error = refused(&build_app(&kb, &app, &[]), &app.join("kodata/null"));
    assert!(error.contains("character device"), "{error}");
}

/// The kodata layer's DiffID, from the config of the image in `kb`'s layout.
fn kodata_diff_id(kb: &Kobuild) -> String {
    let layout = kb.dir().join("layout");
    let manifest: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        layout_top(&layout)["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    // scratch has no layers: the kodata layer is the first.
    config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn legal_symlinked_kodata_trees_keep_kos_diff_ids() {
    // ko's own test tree (a symlink to a file), whose DiffID ko computes.
    let kb = Kobuild::new();
    let (_copy, app) = hello_with(|k| {
        fs::remove_dir_all(k).unwrap();
        fs::create_dir_all(k.join("subdir")).unwrap();
        fs::write(k.join("a"), "hello\n").unwrap();
        symlink("a", k.join("b")).unwrap();
        fs::write(k.join("kenobi"), "Hello there\n").unwrap();
        fs::write(k.join("subdir/file.txt"), "subdir file content\n").unwrap();
    });
    ok(build_app(&kb, &app, &[]));
    assert_eq!(
        kodata_diff_id(&kb),
        "sha256:b8efb7f2d64dc1a4876e559d489a4711505279c134c1e254fa1164e3d59e3b66"
    );

    // Symlinks to a sibling directory, through a parent, and chained: stored as copies of
    // what they point to, so the same tree with real copies has the same DiffID.
    let linked = Kobuild::new();
    let (_copy, app) = hello_with(|k| {
        fs::create_dir_all(k.join("x/y")).unwrap();
        fs::write(k.join("x/y/z.txt"), "zed").unwrap();
        symlink("../sub", k.join("x/sub-link")).unwrap();
        symlink("x/y", k.join("y-link")).unwrap();
        symlink("y-link/z.txt", k.join("z-link")).unwrap();
    });
    ok(build_app(&linked, &app, &[]));
    let copied = Kobuild::new();
    let (_copy, app) = hello_with(|k| {
        fs::create_dir_all(k.join("x/y")).unwrap();
        fs::write(k.join("x/y/z.txt"), "zed").unwrap();
        run_checked(
            Command::new("cp")
                .arg("-r")
                .arg(k.join("sub"))
                .arg(k.join("x/sub-link")),
        );
        run_checked(
            Command::new("cp")
                .arg("-r")
                .arg(k.join("x/y"))
                .arg(k.join("y-link")),
        );
        fs::write(k.join("z-link"), "zed").unwrap();
    });
    ok(build_app(&copied, &app, &[]));
    assert_eq!(kodata_diff_id(&linked), kodata_diff_id(&copied));
}

/// One way `-toolexec` can reach a build: files to write in the app, the subcommand and its
/// arguments, environment variables, and what the error line must name.
struct Source {
    files: Vec<(&'static str, String)>,
    subcommand: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    names: &'static str,
}

fn skaffold_yaml(ko: &str) -> (&'static str, String) {
    (
        "skaffold.yaml",
        format!(
            "apiVersion: skaffold/v4beta14\nkind: Config\nbuild:\n  tagPolicy: {{sha256: {{}}}}\n  artifacts:\n    - image: hello\n      ko: {ko}\n"
        ),
    )
}

fn sources(marker: &str) -> Vec<Source> {
    let build = |files: Vec<(&'static str, String)>, args: &[&str], names| Source {
        files,
        subcommand: "build",
        args: args.iter().map(|a| a.replace("M", marker)).collect(),
        env: Vec::new(),
        names,
    };
    let env = |mut s: Source, vars: &[(&'static str, &str)]| {
        s.env = vars
            .iter()
            .map(|(k, v)| (*k, v.replace("M", marker)))
            .collect();
        s
    };
    let yaml = |text: &str| text.replace("M", marker);
    let skaffold = |ko: &str| vec![skaffold_yaml(&yaml(ko))];
    let ko_yaml = |text: &str| vec![(".ko.yaml", yaml(text))];
    let build_entry = |field: &str| format!("builds:\n- id: hello\n  main: .\n  {field}\n");
    let scratch = ["--base", "scratch"];
    let with_scratch = |args: &[&'static str]| -> Vec<&'static str> {
        args.iter().chain(scratch.iter()).copied().collect()
    };
    let action = |vars: &[(&'static str, &str)], names| {
        let mut s = env(
            build(Vec::new(), &[], names),
            &[("INPUT_TARGETS", "."), ("INPUT_FROM-IMAGE", "scratch")],
        );
        s.subcommand = "action";
        s.env
            .extend(vars.iter().map(|(k, v)| (*k, v.replace("M", marker))));
        s
    };
    vec![
        // skaffold.yaml
        build(
            skaffold("{flags: [-toolexec=M]}"),
            &scratch,
            "skaffold.yaml:6:7: ko.flags",
        ),
        build(
            skaffold("{flags: [-toolexec, M]}"),
            &scratch,
            "skaffold.yaml:6:7: ko.flags",
        ),
        build(
            skaffold("{ldflags: [--toolexec=M]}"),
            &scratch,
            "skaffold.yaml:6:7: ko.ldflags",
        ),
        build(
            skaffold("{env: [GOFLAGS=-toolexec=M]}"),
            &scratch,
            "skaffold.yaml:6:7: ko.env",
        ),
        // .ko.yaml, from command-line targets and from a skaffold.yaml artifact
        build(
            ko_yaml(&build_entry("flags: [--toolexec, M]")),
            &with_scratch(&["."]),
            ".ko.yaml:2:3: flags",
        ),
        build(
            ko_yaml(&build_entry("ldflags: [--toolexec=M]")),
            &with_scratch(&["."]),
            ".ko.yaml:2:3: ldflags",
        ),
        build(
            ko_yaml(&build_entry("env: [GOFLAGS=--toolexec=M]")),
            &with_scratch(&["."]),
            ".ko.yaml:2:3: env",
        ),
        build(
            ko_yaml("defaultFlags: [-toolexec=M]\n"),
            &with_scratch(&["."]),
            ".ko.yaml: defaultFlags",
        ),
        build(
            ko_yaml("defaultEnv: [\"GOFLAGS=-v -toolexec M\"]\n"),
            &with_scratch(&["."]),
            ".ko.yaml: defaultEnv",
        ),
        build(
            [
                skaffold("{}"),
                ko_yaml(&build_entry("flags: [-toolexec=M]")),
            ]
            .concat(),
            &scratch,
            ".ko.yaml:2:3: flags",
        ),
        // The command line
        build(
            Vec::new(),
            &with_scratch(&[".", "--flags=-toolexec=M"]),
            "--flags",
        ),
        build(
            Vec::new(),
            &with_scratch(&[".", "--flags", "-toolexec", "--flags", "M"]),
            "--flags",
        ),
        build(
            Vec::new(),
            &with_scratch(&[".", "--ldflags=--toolexec=M"]),
            "--ldflags",
        ),
        build(
            Vec::new(),
            &with_scratch(&[".", "--env", "GOFLAGS=-toolexec=M"]),
            "--env",
        ),
        build(
            skaffold("{}"),
            &with_scratch(&["--flags=-toolexec=M"]),
            "--flags",
        ),
        // The environment, before any go command runs (go list runs toolexec too)
        env(
            build(Vec::new(), &with_scratch(&["."]), "GOFLAGS"),
            &[("GOFLAGS", "-mod=mod '-toolexec=M'")],
        ),
        env(
            build(skaffold("{}"), &scratch, "GOFLAGS"),
            &[("GOFLAGS", "--toolexec=M")],
        ),
        env(
            build(Vec::new(), &with_scratch(&["."]), "KO_DEFAULTFLAGS"),
            &[("KO_DEFAULTFLAGS", "-toolexec=M")],
        ),
        Source {
            subcommand: "init",
            ..env(
                build(Vec::new(), &[], "GOFLAGS"),
                &[("GOFLAGS", "-toolexec=M")],
            )
        },
        // Action inputs
        action(&[("INPUT_FLAGS", "-toolexec=M")], "input flags"),
        action(&[("INPUT_LDFLAGS", "-toolexec=M")], "input ldflags"),
        action(&[("INPUT_ENV", "GOFLAGS=-toolexec=M")], "input env"),
    ]
}

#[test]
fn toolexec_never_runs_from_any_source() {
    let kb = Kobuild::new();
    let ran = kb.dir().join("ran");
    let marker = kb.dir().join("marker");
    fs::write(
        &marker,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec \"$@\"\n",
            ran.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&marker, fs::Permissions::from_mode(0o755)).unwrap();
    let mut failures = Vec::new();
    for source in sources(s(&marker)) {
        let copy = app_copy("hello");
        let app = copy.path().join("hello");
        for (name, text) in &source.files {
            fs::write(app.join(name), text).unwrap();
        }
        let args: Vec<&str> = source.args.iter().map(String::as_str).collect();
        let mut cmd = kb.subcommand(&app, source.subcommand, &args);
        cmd.env("GITHUB_WORKSPACE", &app)
            .envs(source.env.iter().map(|(k, v)| (k, v)));
        let out = output_within(&mut cmd, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        let problems = [
            (out.status.code() != Some(2)).then(|| format!("exit {:?}", out.status.code())),
            (errors.len() != 1).then(|| format!("{} error lines", errors.len())),
            errors
                .first()
                .filter(|e| !(e.contains(source.names) && e.contains("toolexec")))
                .map(|e| format!("the error does not name {:?}: {e}", source.names)),
            ran.exists().then(|| {
                format!(
                    "the marker ran: {}",
                    fs::read_to_string(&ran)
                        .unwrap()
                        .lines()
                        .next()
                        .unwrap_or("")
                )
            }),
        ];
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        if !problems.is_empty() {
            failures.push(format!(
                "{} {:?} {:?} {:?}: {}\n  {}",
                source.subcommand,
                source.files,
                source.args,
                source.env,
                problems.join("; "),
                stderr.trim().replace('\n', "\n  ")
            ));
        }
        let _ = fs::remove_file(&ran);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
