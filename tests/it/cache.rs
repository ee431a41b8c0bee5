//! The artifact cache: an unchanged artifact is neither built nor pushed again (Go is not
//! even asked), a new tag is set remotely, and anything that decides the image — a Go
//! file, kodata, the base, the registry no longer having the image — builds it again.
//! A damaged cache (binaries, layers, records, base blobs, leftovers of killed runs) never
//! ships a wrong image: the entry is evicted with a warning and made again.

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
    platforms: String,
    _base_dir: TempDir,
}

fn setup() -> Setup {
    setup_for(&["linux/amd64"])
}

/// The hello app on a registry base offering `platforms`, built for all of them.
fn setup_for(platforms: &[&str]) -> Setup {
    let reg = Registry::start(RegistryKind::Plain);
    let base_dir = tempfile::tempdir().unwrap();
    let layout = make_base(&base_dir.path().join("base"), "v1", false, platforms);
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
        platforms: platforms.join(","),
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
            .chain(["--platform", &self.platforms])
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
        self.image_tag_digest("hello", tag)
    }

    fn image_tag_digest(&self, image: &str, tag: &str) -> String {
        let raw = skopeo_inspect_raw(
            &format!("{}/cache/{image}:{tag}", self.reg.host()),
            &self.reg,
        );
        sha256_digest(&raw)
    }

    fn cache(&self) -> PathBuf {
        self.kb.dir().join("cache")
    }

    /// A build that must succeed: the one ref printed, and what was logged.
    fn build_logged(&self, extra: &[&str]) -> (String, String) {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.kb.run_in(&self.dir(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kobuild {args:?} failed:\n{stderr}");
        let refs = String::from_utf8(out.stdout).unwrap();
        let refs: Vec<&str> = refs.lines().collect();
        assert_eq!(refs.len(), 1, "{refs:?}");
        (refs[0].to_string(), stderr)
    }

    /// A push under an image name no run used before: nothing is in that repository, so
    /// every blob of the image is read from the cache and uploaded. (ref, log)
    fn push_new(&self, image: &str) -> (String, String) {
        let (reference, stderr) = self.build_logged(&["--image", image]);
        assert_eq!(
            self.image_tag_digest(image, "latest"),
            digest_of(&reference)
        );
        (reference, stderr)
    }

    /// A build into a new OCI layout (the artifact cache is off for local outputs), whose
    /// every blob must hold what its name says. (layout, digest, log)
    fn layout(&self) -> (TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let oci = dir.path().join("oci");
        let oci_arg = oci.display().to_string();
        let (reference, stderr) =
            self.build_logged(&["--push=false", "--oci-layout-path", &oci_arg]);
        for blob in fs::read_dir(oci.join("blobs/sha256")).unwrap() {
            let blob = blob.unwrap();
            let name = blob.file_name().into_string().unwrap();
            assert_eq!(
                sha256_digest(&fs::read(blob.path()).unwrap()),
                format!("sha256:{name}"),
                "the layout's blob {name} does not hold what its name says\n{stderr}"
            );
        }
        (dir, digest_of(&reference).to_string(), stderr)
    }

    /// kobuild's binary for `platform` (`linux-amd64`), kept between runs.
    fn binary(&self, platform: &str) -> PathBuf {
        let found: Vec<PathBuf> = fs::read_dir(self.cache().join("bin"))
            .unwrap()
            .map(|e| e.unwrap().path().join(platform).join("hello"))
            .filter(|p| p.is_file())
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].clone()
    }

    /// A blob (`sha256:<hex>`) in the cache.
    fn cached_blob(&self, digest: &str) -> PathBuf {
        self.cache()
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..])
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

/// A CI job on a fresh runner: the checkout at another path with new mtimes, an empty cache
/// but for the artifact records (what the action persists), GOCACHE warm.
#[test]
fn restored_records_skip_the_build_on_a_fresh_runner_at_another_path() {
    let s = setup();
    let first = s.build(&[]);
    assert!(built(&s.go.take()));

    let runner = tempfile::tempdir().unwrap();
    let checkout = runner.path().join("work/hello");
    fs::create_dir_all(checkout.parent().unwrap()).unwrap();
    // cp without -p: every file is new, as a fresh checkout's are.
    run_checked(Command::new("cp").arg("-r").arg(s.dir()).arg(&checkout));
    let kb = Kobuild::new().env("KO_GO_PATH", &s.go.path().display().to_string());
    let restored = kb.dir().join("cache/artifacts");
    fs::create_dir_all(restored.parent().unwrap()).unwrap();
    run_checked(
        Command::new("cp")
            .arg("-r")
            .arg(s.cache().join("artifacts"))
            .arg(&restored),
    );
    let args = s.args(&["-t", "fresh"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = kb.ok_in(&checkout, &args);
    assert_eq!(digest_of(&again[0]), digest_of(&first));
    assert_eq!(
        s.go.take(),
        Vec::<String>::new(),
        "go ran on a fresh runner with the records restored"
    );
    assert_eq!(s.tag_digest("fresh"), digest_of(&first));

    // An edit in the new checkout is seen there.
    let main = checkout.join("main.go");
    edit(
        &main,
        &fs::read_to_string(&main).unwrap().replace("hello", "hullo"),
    );
    let edited = kb.ok_in(&checkout, &args);
    assert_ne!(digest_of(&edited[0]), digest_of(&first));
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

// ---------------------------------------------------------------------------
// A damaged cache: whatever is corrupted between two runs, the next run notices, evicts
// the entry with one warning naming it, and makes the image a clean cache makes.

/// Each platform's image manifest and config in an OCI layout, in index order.
fn layout_images(layout: &Path) -> Vec<(serde_json::Value, serde_json::Value)> {
    let json = |digest: &serde_json::Value| -> serde_json::Value {
        serde_json::from_slice(&layout_blob(layout, digest.as_str().unwrap())).unwrap()
    };
    let top = json(&layout_top(layout)["digest"]);
    let manifests = match top["manifests"].as_array() {
        Some(children) => children.iter().map(|c| json(&c["digest"])).collect(),
        None => vec![top],
    };
    manifests
        .into_iter()
        .map(|m| {
            let config = json(&m["config"]["digest"]);
            (m, config)
        })
        .collect()
}

/// The binary layer (the last) of each platform: (digest, DiffID).
fn binary_layers(layout: &Path) -> Vec<(String, String)> {
    layout_images(layout)
        .iter()
        .map(|(m, c)| {
            let last = |v: &serde_json::Value| {
                v.as_array()
                    .unwrap()
                    .last()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            let digest = m["layers"].as_array().unwrap().last().unwrap()["digest"]
                .as_str()
                .unwrap()
                .to_string();
            (digest, last(&c["rootfs"]["diff_ids"]))
        })
        .collect()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

fn flip_middle(path: &Path) {
    flip_byte(path, fs::metadata(path).unwrap().len() as usize / 2);
}

/// The run warned once about `entry` (a path, or part of one).
fn assert_warned(stderr: &str, entry: &str) {
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(entry))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning naming {entry}:\n{stderr}");
}

/// Every file under `dir` named `name`.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_flipped_byte_in_a_cached_layer_is_evicted_and_the_layer_made_again() {
    let s = setup();
    let (first, clean, _) = s.layout();
    let (layer, _) = binary_layers(first.path().join("oci").as_path())[0].clone();
    let cached = s.cached_blob(&layer);

    flip_middle(&cached);
    let (_, digest, stderr) = s.layout();
    assert_eq!(digest, clean);
    assert_warned(&stderr, &layer["sha256:".len()..]);

    // A push reads it too (to upload it where the registry lacks it).
    flip_middle(&cached);
    let (pushed, stderr) = s.push_new("flipped-layer");
    assert_eq!(digest_of(&pushed), clean);
    assert_warned(&stderr, &layer["sha256:".len()..]);
    assert_eq!(
        sha256_digest(&fs::read(&cached).unwrap()),
        layer,
        "the cache holds the layer again"
    );
}

#[test]
fn a_flipped_byte_in_a_cached_binary_relinks_it() {
    let s = setup();
    let (_first, clean, _) = s.layout();
    let binary = s.binary("linux-amd64");
    let name = binary.display().to_string();

    flip_middle(&binary);
    let (_, digest, stderr) = s.layout();
    assert_eq!(digest, clean);
    assert_warned(&stderr, &name);

    flip_middle(&binary);
    let (pushed, stderr) = s.push_new("flipped-binary");
    assert_eq!(digest_of(&pushed), clean);
    assert_warned(&stderr, &name);
}

#[test]
fn a_truncated_cached_binary_relinks_it() {
    let s = setup();
    let (_first, clean, _) = s.layout();
    let binary = s.binary("linux-amd64");
    let name = binary.display().to_string();
    let truncate = || {
        let len = fs::metadata(&binary).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&binary)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    };

    truncate();
    let (pushed, stderr) = s.push_new("truncated");
    assert_eq!(digest_of(&pushed), clean);
    assert_warned(&stderr, &name);

    truncate();
    let (_, digest, stderr) = s.layout();
    assert_eq!(digest, clean);
    assert_warned(&stderr, &name);
}

#[test]
fn layer_records_swapped_between_platforms_are_evicted() {
    let s = setup_for(&["linux/amd64", "linux/arm64"]);
    let (first, clean, _) = s.layout();
    let layers = binary_layers(&first.path().join("oci"));
    assert_eq!(layers.len(), 2);
    let record = |diff_id: &str| {
        let found = files_named(&s.cache().join("layers"), &diff_id["sha256:".len()..]);
        assert_eq!(found.len(), 1, "the layer record of {diff_id}: {found:?}");
        found[0].clone()
    };
    let (amd64, arm64) = (record(&layers[0].1), record(&layers[1].1));
    let swap = || {
        let (a, b) = (fs::read(&amd64).unwrap(), fs::read(&arm64).unwrap());
        assert_ne!(a, b);
        fs::write(&amd64, b).unwrap();
        fs::write(&arm64, a).unwrap();
    };

    swap();
    let (_, digest, stderr) = s.layout();
    assert_eq!(digest, clean);
    for r in [&amd64, &arm64] {
        assert_warned(&stderr, &r.display().to_string());
    }

    swap();
    let (pushed, stderr) = s.push_new("swapped");
    assert_eq!(digest_of(&pushed), clean);
    for r in [&amd64, &arm64] {
        assert_warned(&stderr, &r.display().to_string());
    }
}

/// The only artifact record, or all of them.
fn artifact_records(s: &Setup) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(s.cache().join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

#[test]
fn an_artifact_record_whose_manifest_changed_is_evicted() {
    let s = setup();
    let first = s.build(&[]);
    let records = artifact_records(&s);
    assert_eq!(records.len(), 1);
    // Same length, still JSON, still naming blobs the registry has: only an annotation
    // changed, so a registry would take it.
    let text = fs::read_to_string(&records[0]).unwrap();
    let at = text
        .find("base.name")
        .expect("the record holds the manifest")
        + 20;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
    fs::write(&records[0], bytes).unwrap();

    let (again, stderr) = s.build_logged(&["-t", "v2"]);
    assert_eq!(digest_of(&again), digest_of(&first));
    assert_eq!(s.tag_digest("v2"), digest_of(&first));
    assert_warned(&stderr, &records[0].display().to_string());
}

#[test]
fn artifact_records_swapped_between_settings_are_evicted() {
    let s = setup();
    let plain = s.build(&[]);
    let labelled = s.build(&["--label", "team=cache"]);
    let records = artifact_records(&s);
    assert_eq!(records.len(), 2);
    let (a, b) = (
        fs::read(&records[0]).unwrap(),
        fs::read(&records[1]).unwrap(),
    );
    fs::write(&records[0], b).unwrap();
    fs::write(&records[1], a).unwrap();

    let (again, stderr) = s.build_logged(&["-t", "v2"]);
    assert_eq!(digest_of(&again), digest_of(&plain));
    assert_eq!(s.tag_digest("v2"), digest_of(&plain));
    let (again, _) = s.build_logged(&["--label", "team=cache", "-t", "v3"]);
    assert_eq!(digest_of(&again), digest_of(&labelled));
    assert_eq!(s.tag_digest("v3"), digest_of(&labelled));
    assert!(
        records
            .iter()
            .any(|r| stderr.contains(&r.display().to_string())),
        "{stderr}"
    );
}

/// A relinked binary copies gzip blocks from its last layer only where their bytes are
/// intact; a damaged layer is evicted.
#[test]
fn a_damaged_layer_lends_no_gzip_blocks_and_is_evicted() {
    let s = setup();
    let (first, _, _) = s.layout();
    let (layer, _) = binary_layers(&first.path().join("oci"))[0].clone();
    let cached = s.cached_blob(&layer);
    flip_middle(&cached);
    s.edit_main(|source| source.replace("hello from kobuild", "hallo from kobuild"));

    let (_, digest, stderr) = s.layout();
    assert_warned(&stderr, &layer["sha256:".len()..]);
    assert!(!cached.exists(), "the damaged layer is still in the cache");
    let (uncached, _) = s.build_logged(&["--no-cache", "--image", "uncached"]);
    assert_eq!(digest, digest_of(&uncached));
}

#[test]
fn damaged_base_blobs_in_the_cache_are_fetched_again() {
    let s = setup();
    let (first, clean, _) = s.layout();
    let (manifest, _) = layout_images(&first.path().join("oci")).remove(0);
    let base_digest = manifest["annotations"]["org.opencontainers.image.base.digest"]
        .as_str()
        .unwrap()
        .to_string();
    let base_manifest = s.cached_blob(&base_digest);
    let base: serde_json::Value =
        serde_json::from_slice(&fs::read(&base_manifest).unwrap()).unwrap();
    let base_config = base["config"]["digest"].as_str().unwrap().to_string();
    let base_layer = base["layers"][0]["digest"].as_str().unwrap().to_string();

    for digest in [&base_digest, &base_config, &base_layer] {
        flip_middle(&s.cached_blob(digest));
    }
    let (_, digest, stderr) = s.layout();
    assert_eq!(digest, clean);
    for digest in [&base_digest, &base_config, &base_layer] {
        assert_warned(&stderr, &digest["sha256:".len()..]);
        assert_eq!(
            &sha256_digest(&fs::read(s.cached_blob(digest)).unwrap()),
            digest,
            "fetched again"
        );
    }
}

/// Temporary files of a killed run are removed by the next run, unless another run that
/// shares the cache is still going (they may be its own).
#[test]
fn leftover_temporary_files_of_a_killed_run_are_removed_when_no_other_run_shares_the_cache() {
    let s = setup();
    s.layout();
    let cache = s.cache();
    let leftovers = [
        cache.join("blobs/sha256/.kobuild-tmp-Xa1b2c"),
        cache.join("blobs/sha256/.kobuild-tmp-Yd3e4f"),
        cache.join("blobs/sha256/.tmp-Zg5h6i"),
        cache.join("artifacts/.tmp-Wj7k8l"),
        cache.join(".tmpM9n0o"),
    ];

    // A run sharing the cache, stopped in `go` (which gives up once that run is gone): the
    // test kills it there.
    let gate = tempfile::tempdir().unwrap();
    let started = gate.path().join("started");
    let waiting = gate.path().join("go");
    go_wrapper(
        &waiting,
        &format!(
            "touch '{}'\nwhile kill -0 $PPID 2>/dev/null; do sleep 0.05; done\nexit 1\n",
            started.display()
        ),
    );
    let other_layout = gate.path().join("oci").display().to_string();
    let args = ["--push=false", "--oci-layout-path", &other_layout];
    let mut other = Killed(
        s.kb.command(&s.dir(), &[&args[..], &["--base", "scratch", "."]].concat())
            .env("KO_GO_PATH", &waiting)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let since = std::time::Instant::now();
    while !started.exists() {
        assert!(since.elapsed().as_secs() < 60, "the other run never ran go");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What a killed run leaves, found while it still runs: it may be writing them.
    for f in &leftovers {
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, "partial").unwrap();
    }
    s.layout();
    for f in &leftovers {
        assert!(
            f.exists(),
            "removed while another run shares the cache: {}",
            f.display()
        );
    }

    other.kill();
    s.layout();
    for f in &leftovers {
        assert!(!f.exists(), "left behind: {}", f.display());
    }
}

/// A child process killed (SIGKILL) when asked, or at the latest when dropped, so a failing
/// test leaves nothing running.
struct Killed(std::process::Child);

impl Killed {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}
