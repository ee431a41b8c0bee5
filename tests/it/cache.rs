//! The artifact cache: an unchanged artifact is neither built nor pushed again (Go is not
//! even asked), a new tag is set remotely, and anything that decides the image — a Go
//! file, kodata, the base, the registry no longer having the image — builds it again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::kobuild::*;
use crate::common::*;
use tempfile::TempDir;

/// A `go` that logs its subcommand, so a test can see whether Go ran at all.
struct GoSpy {
    dir: TempDir,
}

impl GoSpy {
    fn new() -> GoSpy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        go_wrapper(
            &dir.path().join("go"),
            &format!("echo \"$1\" >> '{}'\n", log.display()),
        );
        GoSpy { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("go")
    }

    /// The subcommands run since the last call.
    fn take(&self) -> Vec<String> {
        let log = self.dir.path().join("log");
        let runs = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        runs.lines().map(str::to_string).collect()
    }
}

struct Setup {
    reg: Registry,
    go: GoSpy,
    kb: Kobuild,
    app: TempDir,
    base: String,
    _base_dir: TempDir,
}

fn setup() -> Setup {
    let reg = Registry::start(RegistryKind::Plain);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(&base_dir.path().join("base"), "v1", false, &["linux/amd64"]);
    let base = push_base(&reg, &layout, "v1", "base/cache");
    let app = app_copy("hello");
    let go = GoSpy::new();
    let kb = Kobuild::new().env("KO_GO_PATH", &go.path().display().to_string());
    Setup {
        reg,
        go,
        kb,
        app,
        base,
        _base_dir: base_dir,
    }
}

impl Setup {
    fn dir(&self) -> PathBuf {
        self.app.path().join("hello")
    }

    /// The arguments of a build of the app, with `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let repo = format!("{}/cache", self.reg.host());
        let mut args: Vec<String> = ["--repo", &repo, "--base", &self.base]
            .into_iter()
            .chain(["--platform", "linux/amd64"])
            .chain(extra.iter().copied())
            .map(str::to_string)
            .collect();
        args.push(".".into());
        args
    }

    fn build(&self, extra: &[&str]) -> String {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let refs = self.kb.ok_in(&self.dir(), &args);
        assert_eq!(refs.len(), 1, "{refs:?}");
        refs[0].clone()
    }

    /// Rewrites main.go, as an editor would.
    fn edit_main(&self, change: impl FnOnce(&str) -> String) {
        let main = self.dir().join("main.go");
        edit(&main, &change(&fs::read_to_string(&main).unwrap()));
    }

    fn tag_digest(&self, tag: &str) -> String {
        let raw = skopeo_inspect_raw(&format!("{}/cache/hello:{tag}", self.reg.host()), &self.reg);
        sha256_digest(&raw)
    }
}

/// Write a file as an editor did a moment ago: a file changed at the very instant a build
/// starts is (rightly) not recorded, and these tests want the record.
fn edit(path: &Path, content: &str) {
    fs::write(path, content).unwrap();
    run_checked(
        Command::new("touch")
            .args(["-d", "2 seconds ago"])
            .arg(path)
            .arg(path.parent().unwrap()),
    );
}

fn built(go: &[String]) -> bool {
    go.iter().any(|c| c == "build")
}

#[test]
fn an_unchanged_artifact_is_reused_without_running_go_and_retagged_remotely() {
    let s = setup();
    let first = s.build(&[]);
    assert!(built(&s.go.take()));

    let again = s.build(&[]);
    assert_eq!(again, first);
    assert_eq!(
        s.go.take(),
        Vec::<String>::new(),
        "go ran for an unchanged artifact"
    );

    let tagged = s.build(&["-t", "v2"]);
    assert_eq!(digest_of(&tagged), digest_of(&first));
    assert!(tagged.contains(":v2@"), "{tagged}");
    assert_eq!(s.go.take(), Vec::<String>::new());
    assert_eq!(s.tag_digest("v2"), digest_of(&first));

    // --no-cache builds (Go relinks nothing, but runs) and gives the same image.
    let uncached = s.build(&["--no-cache"]);
    assert_eq!(digest_of(&uncached), digest_of(&first));
    assert!(built(&s.go.take()));
}

#[test]
fn a_changed_go_file_or_kodata_file_builds_again() {
    let s = setup();
    let first = s.build(&[]);
    s.go.take();
    s.edit_main(|source| format!("{source}\nvar cacheTest = 1\n"));
    s.build(&[]);
    assert!(built(&s.go.take()), "a Go edit did not build");

    edit(&s.dir().join("kodata/extra.txt"), "new");
    let kodata_changed = s.build(&[]);
    assert_ne!(digest_of(&kodata_changed), digest_of(&first));
    assert!(built(&s.go.take()));
    assert_eq!(s.build(&[]), kodata_changed);
    assert_eq!(s.go.take(), Vec::<String>::new());
}

#[test]
fn a_moved_base_tag_builds_on_the_new_base() {
    let s = setup();
    let first = s.build(&[]);
    s.go.take();
    // Same tag, new content: Docker media types give a different base digest.
    let other = tempfile::tempdir().unwrap();
    let layout = make_base(&other.path().join("base"), "v1", true, &["linux/amd64"]);
    assert_eq!(push_base(&s.reg, &layout, "v1", "base/cache"), s.base);
    let rebuilt = s.build(&[]);
    assert_ne!(digest_of(&rebuilt), digest_of(&first));
    assert!(!s.go.take().is_empty());
}

#[test]
fn an_image_gone_from_the_registry_is_pushed_again() {
    let s = setup();
    let first = s.build(&[]);
    s.go.take();
    let repos = s
        .reg
        .storage_dir()
        .join("docker/registry/v2/repositories/cache");
    fs::remove_dir_all(&repos).unwrap();
    let again = s.build(&[]);
    assert_eq!(digest_of(&again), digest_of(&first));
    assert_eq!(s.tag_digest("latest"), digest_of(&first));
    assert!(
        !s.go.take().is_empty(),
        "reused an image the registry no longer has"
    );
}

#[test]
fn artifact_records_are_keyed_apart_by_settings() {
    let s = setup();
    let plain = s.build(&[]);
    s.go.take();
    let labelled = s.build(&["--label", "team=cache"]);
    assert_ne!(digest_of(&labelled), digest_of(&plain));
    assert!(!s.go.take().is_empty());
    // Both are remembered.
    assert_eq!(s.build(&[]), plain);
    assert_eq!(s.build(&["--label", "team=cache"]), labelled);
    assert_eq!(s.go.take(), Vec::<String>::new());
    assert!(records(s.kb.dir()) >= 2);
}

fn records(home: &Path) -> usize {
    fs::read_dir(home.join("cache/artifacts")).map_or(0, |d| d.count())
}

#[test]
fn gocache_names_the_go_build_cache() {
    let work = tempfile::tempdir().unwrap();
    let gocache = work.path().join("gocache");
    let layout = work.path().join("oci");
    let kb = Kobuild::new();
    kb.ok_in(
        &app_dir("hello"),
        &[
            "--push=false",
            "--oci-layout-path",
            &layout.display().to_string(),
            "--base",
            "scratch",
            "--platform",
            "linux/amd64",
            "--gocache",
            &gocache.display().to_string(),
            ".",
        ],
    );
    // Go marks a cache directory it uses with a README and fills 256 subdirectories.
    assert!(
        gocache.join("README").is_file(),
        "go build did not use --gocache"
    );
    assert!(gocache.join("00").is_dir());
}

/// The second build of a changed directory takes the package from the record, without the
/// target's `go list`, while its go.mod is unchanged, and the inputs from the record while
/// no edit touched an import; a new module path lists both again.
#[test]
fn a_known_package_is_not_listed_again_until_its_go_mod_changes() {
    let lists = |go: &[String]| go.iter().filter(|c| *c == "list").count();
    let s = setup();
    s.build(&[]);
    assert_eq!(lists(&s.go.take()), 2, "the target, and the inputs");

    s.edit_main(|source| format!("{source}\nvar cacheTest = 1\n"));
    s.build(&[]);
    let go = s.go.take();
    assert!(built(&go));
    assert_eq!(lists(&go), 0, "a body edit needs no listing: {go:?}");

    let go_mod = s.dir().join("go.mod");
    let module = fs::read_to_string(&go_mod).unwrap();
    edit(
        &go_mod,
        &module.replace("module example.com/hello", "module example.com/renamed"),
    );
    let renamed = s.build(&[]);
    assert_eq!(lists(&s.go.take()), 2);
    assert!(renamed.contains("/cache/renamed:"), "{renamed}");
}

/// Without `go list`, a directory that stopped being a package main is still refused with
/// `go list`'s own words, and nothing is pushed.
#[test]
fn a_known_package_turned_library_is_refused() {
    let s = setup();
    s.build(&[]);
    s.edit_main(|source| {
        source
            .replace("package main", "package hello")
            .replace("func main()", "func Main()")
    });
    let args = s.args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = s.kb.fails_in(&s.dir(), &args, 2);
    assert!(stderr.contains("a library"), "{stderr}");
}

/// An edit that adds an import of a local package the build did not read before lists the
/// inputs again, so a later edit of that package is seen (not an old image reused).
#[test]
fn a_new_import_is_followed_into_its_package() {
    let lists = |go: &[String]| go.iter().filter(|c| *c == "list").count();
    let s = setup();
    let greet = s.dir().join("greet");
    fs::create_dir(&greet).unwrap();
    edit(
        &greet.join("greet.go"),
        "package greet\n\nconst Word = \"one\"\n",
    );
    // Unchanged, but dated before the build like the new directory beside it.
    s.edit_main(str::to_string);
    s.build(&[]);
    s.go.take();

    s.edit_main(|source| {
        source.replace("import (", "import (\n\t\"example.com/hello/greet\"")
            + "\nfunc init() {\n\tif os.Getenv(\"GREET\") == greet.Word {\n\t\tprintln(greet.Word)\n\t}\n}\n"
    });
    let importing = s.build(&[]);
    let go = s.go.take();
    assert!(built(&go));
    assert_eq!(lists(&go), 1, "a new import lists the inputs: {go:?}");

    edit(
        &greet.join("greet.go"),
        "package greet\n\nconst Word = \"two\"\n",
    );
    let edited = s.build(&[]);
    let go = s.go.take();
    assert!(
        built(&go),
        "an edit of the newly imported package was missed"
    );
    assert_eq!(lists(&go), 0, "{go:?}");
    assert_ne!(digest_of(&edited), digest_of(&importing));
}

/// A binary relinked with a string of the same length (a version stamp, say) copies its
/// unchanged gzip blocks from the last layer, and the image is byte for byte the one a
/// build without the cache makes.
#[test]
fn a_same_length_edit_copies_unchanged_blocks_and_changes_no_digest() {
    let s = setup();
    s.build(&[]);
    s.edit_main(|source| source.replace("hello from kobuild", "hallo from kobuild"));
    let args = s.args(&["-v"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.kb.run_in(&s.dir(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let copied = stderr
        .lines()
        .find_map(|l| l.split("gzip: ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(copied.is_some_and(|n| n > 0), "no block copied: {stderr}");
    let with_blocks = String::from_utf8(out.stdout).unwrap();
    let without = s.build(&["--no-cache"]);
    assert_eq!(digest_of(with_blocks.trim()), digest_of(&without));
}
