//! The exact files a build reads, as `go list -deps` names them, and a check that none of
//! them changed. Packages from the module cache are immutable (go.mod and go.sum pin them)
//! and the standard library belongs to the toolchain, so only local files are recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::digest::{Digest, HashingWriter};
use crate::fsutil::open_regular;
use crate::image::kodata::{self, Node};

/// Every local input: file contents by path, and the names in every directory that holds
/// one (a new file in a package or an embedded directory changes what Go reads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    files: BTreeMap<PathBuf, Option<Digest>>,
    /// Each Go file's [`shape`](super::shape::shape), where it has one.
    shapes: BTreeMap<PathBuf, Digest>,
    dirs: BTreeMap<PathBuf, Vec<String>>,
    /// Where Go runs, and the `go.work` it finds walking up from there.
    start: PathBuf,
    workspace: Option<PathBuf>,
}

/// One `go list -deps` run: a directory, a pattern, and the environment and flags of one
/// platform's build (they decide which files and packages take part).
pub struct Listing<'a> {
    pub go: &'a str,
    pub dir: &'a Path,
    pub pattern: &'a str,
    pub env: Vec<(String, String)>,
    pub flags: &'a [String],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    dir: PathBuf,
    #[serde(default)]
    standard: bool,
    module: Option<Module>,
    #[serde(flatten)]
    files: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Module {
    #[serde(default)]
    main: bool,
    #[serde(default)]
    dir: PathBuf,
    #[serde(default)]
    go_mod: PathBuf,
}

/// The file lists `go list` gives per package; the ignored ones too, so that a build tag
/// edit or another platform's files are covered.
const FILE_FIELDS: &[&str] = &[
    "GoFiles",
    "CgoFiles",
    "CFiles",
    "CXXFiles",
    "MFiles",
    "HFiles",
    "FFiles",
    "SFiles",
    "SwigFiles",
    "SwigCXXFiles",
    "SysoFiles",
    "EmbedFiles",
    "IgnoredGoFiles",
    "IgnoredOtherFiles",
];

impl Listed {
    /// From the module cache: a versioned, read-only directory (`path@version`).
    fn immutable(&self) -> bool {
        self.standard
            || self.module.as_ref().is_some_and(|m| {
                !m.main
                    && m.dir
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().contains('@'))
                    && self.dir.starts_with(&m.dir)
            })
    }
}

/// What `go list -deps` named, before anything is read: started with the build, as it
/// needs only the target and the platforms.
#[derive(Debug, Default)]
pub struct Inputs {
    start: PathBuf,
    files: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Inputs {
    /// List every platform's dependencies: the first environment's, and the others' only
    /// when a local package there leaves a Go file out. Otherwise every local file already
    /// took part, so no other platform can import a local package or read a local file that
    /// the first listing missed (an excluded file is the only way imports differ).
    pub async fn list(listings: &[Listing<'_>]) -> Result<Inputs, String> {
        let Some((first, others)) = listings.split_first() else {
            return Ok(Inputs::default());
        };
        let mut outputs = vec![list(first).await?];
        let excludes = |p: &Listed| {
            p.files
                .get("IgnoredGoFiles")
                .and_then(|v| v.as_array())
                .is_some_and(|names| !names.is_empty())
        };
        if outputs[0].iter().any(|p| !p.immutable() && excludes(p)) {
            outputs.extend(futures_util::future::try_join_all(others.iter().map(list)).await?);
        }
        let mut inputs = Inputs {
            start: first.dir.to_path_buf(),
            ..Inputs::default()
        };
        for p in outputs.iter().flatten().filter(|p| !p.immutable()) {
            inputs.dirs.insert(p.dir.clone());
            if let Some(m) = p
                .module
                .as_ref()
                .filter(|m| !m.go_mod.as_os_str().is_empty())
            {
                inputs.files.insert(m.go_mod.clone());
                inputs.files.insert(m.go_mod.with_file_name("go.sum"));
            }
            for field in FILE_FIELDS {
                let Some(names) = p.files.get(*field).and_then(|v| v.as_array()) else {
                    continue;
                };
                for name in names.iter().filter_map(|n| n.as_str()) {
                    let path = p.dir.join(name);
                    // Embedded files may sit in subdirectories: each one's listing counts.
                    let mut parent = path.parent();
                    while let Some(d) = parent.filter(|d| d.starts_with(&p.dir)) {
                        inputs.dirs.insert(d.to_path_buf());
                        parent = d.parent();
                    }
                    inputs.files.insert(path);
                }
            }
        }
        Ok(inputs)
    }
}

impl Snapshot {
    /// Read and hash the listed files, plus `extra` files and every file under `trees`
    /// (kodata). Anything modified at or after `since` (the build's start, on the file
    /// system's clock) may not be what the build read: then there is no snapshot.
    pub fn take(
        inputs: Inputs,
        extra: &[PathBuf],
        trees: &[PathBuf],
        since: SystemTime,
    ) -> Result<Snapshot, String> {
        let Inputs {
            start,
            mut files,
            mut dirs,
        } = inputs;
        files.extend(extra.iter().cloned());
        for tree in trees {
            if tree.is_dir() {
                dirs.insert(tree.clone());
            }
            // The kodata layer's walk, which followed the same links when the image was made.
            for node in kodata::walk(tree).map_err(|e| e.to_string())? {
                match node {
                    Node::Dir { host, .. } => dirs.insert(host),
                    Node::File { host, .. } => files.insert(host),
                };
            }
        }
        let workspace = find_workspace(&start);
        if let Some(w) = &workspace {
            files.insert(w.clone());
            files.insert(w.with_file_name("go.work.sum"));
        }
        let changed = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        };
        if let Some(p) = files.iter().chain(&dirs).find(|p| changed(p)) {
            return Err(format!("{} changed during the build", p.display()));
        }
        let mut shapes = BTreeMap::new();
        let files = files
            .into_iter()
            .map(|f| {
                let (digest, shape) = read(&f);
                if let Some(shape) = shape {
                    shapes.insert(f.clone(), shape);
                }
                (f, digest)
            })
            .collect();
        Ok(Snapshot {
            files,
            shapes,
            dirs: dirs.into_iter().map(|d| (d.clone(), listing(&d))).collect(),
            start,
            workspace,
        })
    }

    /// Every path passed through `f`, for records kept relative to the checkout.
    pub fn map_paths(self, f: &dyn Fn(PathBuf) -> PathBuf) -> Snapshot {
        Snapshot {
            files: self.files.into_iter().map(|(p, d)| (f(p), d)).collect(),
            shapes: self.shapes.into_iter().map(|(p, d)| (f(p), d)).collect(),
            dirs: self.dirs.into_iter().map(|(p, n)| (f(p), n)).collect(),
            start: f(self.start),
            workspace: self.workspace.map(f),
        }
    }

    /// Whether the go.mod that governs `dir` (the nearest one above it) is a recorded file
    /// that reads as it did: then a package there still has the import path it had.
    pub fn module_unchanged(&self, dir: &Path) -> bool {
        let Some(go_mod) = dir
            .ancestors()
            .map(|d| d.join("go.mod"))
            .find(|f| f.is_file())
        else {
            return false;
        };
        self.files
            .get(&go_mod)
            .is_some_and(|recorded| recorded.is_some() && *recorded == hash(&go_mod))
    }

    /// What listing the inputs again would name, without running `go list`: the recorded
    /// files, when no directory gained or lost a name, no module file changed, and every
    /// changed Go file kept its shape (other files' contents do not decide what Go reads).
    pub fn relisted(&self) -> Option<Inputs> {
        if find_workspace(&self.start) != self.workspace
            || self.dirs.iter().any(|(d, names)| listing(d) != *names)
        {
            return None;
        }
        for (f, recorded) in &self.files {
            let (digest, shape) = read(f);
            if digest == *recorded {
                continue;
            }
            let module_file = f
                .file_name()
                .is_some_and(|n| MODULE_FILES.iter().any(|m| n == *m));
            let go_file = f.extension().is_some_and(|e| e == "go");
            if digest.is_none()
                || recorded.is_none()
                || module_file
                || (go_file && (shape.is_none() || shape.as_ref() != self.shapes.get(f)))
            {
                return None;
            }
        }
        Some(Inputs {
            start: self.start.clone(),
            files: self.files.keys().cloned().collect(),
            dirs: self.dirs.keys().cloned().collect(),
        })
    }

    /// Whether every recorded file and directory reads as it did.
    pub fn unchanged(&self) -> bool {
        find_workspace(&self.start) == self.workspace
            && self.dirs.iter().all(|(d, names)| listing(d) == *names)
            && self.files.iter().all(|(f, digest)| hash_once(f) == *digest)
    }
}

/// [`hash`], once per run for each file as it is now: the images of a monorepo share
/// go.mod, go.sum and common packages, and each image's check would read them again (the
/// toolchain's identity too). Keyed by the file's identity and mtime (nanoseconds), so an
/// edit during the run is read.
pub(super) fn hash_once(path: &Path) -> Option<Digest> {
    use std::os::unix::fs::MetadataExt;
    type Key = (PathBuf, u64, u64, i64, i64);
    static SEEN: std::sync::Mutex<BTreeMap<Key, Option<Digest>>> =
        std::sync::Mutex::new(BTreeMap::new());
    let Ok(meta) = fs::metadata(path) else {
        return hash(path);
    };
    let key = (
        path.to_path_buf(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
    );
    let seen = |m: &BTreeMap<Key, Option<Digest>>| m.get(&key).cloned();
    if let Some(d) = seen(&SEEN.lock().unwrap_or_else(|e| e.into_inner())) {
        return d;
    }
    let digest = hash(path);
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, digest.clone());
    digest
}

async fn list(l: &Listing<'_>) -> Result<Vec<Listed>, String> {
    let fields = format!("-json=Dir,Standard,Module,{}", FILE_FIELDS.join(","));
    let mut cmd = Command::new(l.go);
    crate::gobuild::in_background(&mut cmd);
    cmd.arg("list")
        .arg("-deps")
        .arg(fields)
        .args(l.flags)
        .arg("--")
        .arg(l.pattern)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(l.dir)
        .stdin(Stdio::null());
    let out = crate::interrupt::output(&mut cmd)
        .await
        .map_err(|e| format!("cannot run {}: {e}", l.go))?;
    if !out.status.success() {
        return Err(format!(
            "go list -deps failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("unreadable go list output: {e}"))
}

/// Files whose edits can change the modules, so the packages, a build reads.
const MODULE_FILES: &[&str] = &["go.mod", "go.sum", "go.work", "go.work.sum", "modules.txt"];

/// A file's digest and, for a Go file, its shape.
fn read(path: &Path) -> (Option<Digest>, Option<Digest>) {
    if path.extension().is_none_or(|e| e != "go") {
        return (hash(path), None);
    }
    let mut bytes = Vec::new();
    match open_regular(path).and_then(|mut f| io::Read::read_to_end(&mut f, &mut bytes)) {
        Ok(_) => (Some(Digest::of(&bytes)), super::shape::shape(&bytes)),
        Err(_) => (None, None),
    }
}

/// A missing file is recorded as missing: its appearance is a change too. So is anything
/// but a regular file, which is not read (a FIFO would block the check forever).
fn hash(path: &Path) -> Option<Digest> {
    let mut file = open_regular(path).ok()?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut w).ok()?;
    Some(w.finish().1)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn find_workspace(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join("go.work"))
        .find(|w| w.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_once_per_run_until_it_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("go.mod");
        fs::write(&f, "module a\n").unwrap();
        let first = hash_once(&f);
        assert_eq!(first, hash(&f));
        // An edit (other bytes, another mtime) is read again.
        fs::write(&f, "module b\n").unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert_ne!(hash_once(&f), first);
        assert_eq!(hash_once(&f), hash(&f));
    }

    fn app(dir: &Path) {
        fs::create_dir_all(dir.join("kodata/sub")).unwrap();
        fs::create_dir_all(dir.join("internal/greet/static")).unwrap();
        fs::write(dir.join("go.mod"), "module example.com/app\n\ngo 1.22\n").unwrap();
        fs::write(
            dir.join("main.go"),
            "package main\n\nimport \"example.com/app/internal/greet\"\n\nfunc main() { println(greet.Hello) }\n",
        )
        .unwrap();
        fs::write(
            dir.join("internal/greet/greet.go"),
            "package greet\n\nimport _ \"embed\"\n\n//go:embed static/hello.txt\nvar Hello string\n",
        )
        .unwrap();
        fs::write(dir.join("internal/greet/static/hello.txt"), "hi").unwrap();
        fs::write(dir.join("kodata/sub/page.html"), "<p>").unwrap();
    }

    fn listing(dir: &Path) -> Listing<'_> {
        Listing {
            go: "go",
            dir,
            pattern: ".",
            env: vec![("GOFLAGS".into(), "-mod=mod".into())],
            flags: &[],
        }
    }

    async fn snapshot(dir: &Path) -> Snapshot {
        let since = SystemTime::now() + std::time::Duration::from_secs(1);
        let inputs = Inputs::list(&[listing(dir)]).await.unwrap();
        Snapshot::take(inputs, &[], &[dir.join("kodata")], since).unwrap()
    }

    #[tokio::test]
    async fn every_local_input_is_recorded_and_any_change_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        app(dir);
        let s = snapshot(dir).await;
        for f in [
            "go.mod",
            "main.go",
            "internal/greet/greet.go",
            "internal/greet/static/hello.txt",
            "kodata/sub/page.html",
        ] {
            assert!(
                s.files.contains_key(&dir.join(f)),
                "{f} not recorded: {s:?}"
            );
        }
        assert!(s.unchanged());
        assert!(
            !s.files
                .keys()
                .any(|f| f.starts_with(std::env::var("HOME").unwrap_or_default() + "/go"))
        );

        type Edit = fn(&Path);
        let edits: &[(&str, Edit)] = &[
            ("a Go file", |d| {
                fs::write(d.join("main.go"), "package main\n\nfunc main() {}\n").unwrap()
            }),
            ("an embedded file", |d| {
                fs::write(d.join("internal/greet/static/hello.txt"), "ho").unwrap()
            }),
            ("a new file in a package", |d| {
                fs::write(d.join("internal/greet/extra.go"), "package greet\n").unwrap()
            }),
            ("a kodata file", |d| {
                fs::write(d.join("kodata/sub/page.html"), "<b>").unwrap()
            }),
            ("a new kodata file", |d| {
                fs::write(d.join("kodata/new.txt"), "").unwrap()
            }),
            ("go.sum appearing", |d| {
                fs::write(d.join("go.sum"), "").unwrap()
            }),
            ("a workspace", |d| {
                fs::write(d.join("go.work"), "go 1.22\n").unwrap()
            }),
        ];
        for (what, edit) in edits {
            let tmp = tempfile::tempdir().unwrap();
            let d = tmp.path();
            app(d);
            let s = snapshot(d).await;
            edit(d);
            assert!(!s.unchanged(), "{what}: change not seen");
        }
    }

    #[tokio::test]
    async fn the_recorded_files_stand_until_an_edit_can_change_what_go_reads() {
        type Edit = fn(&Path);
        fn main_go(d: &Path) -> String {
            fs::read_to_string(d.join("main.go")).unwrap()
        }
        let same: &[(&str, Edit)] = &[
            ("a function body", |d| {
                let s = main_go(d).replace("println(greet.Hello)", "println(greet.Hello, 1)");
                fs::write(d.join("main.go"), s).unwrap()
            }),
            ("an embedded file", |d| {
                fs::write(d.join("internal/greet/static/hello.txt"), "ho").unwrap()
            }),
            ("a kodata file", |d| {
                fs::write(d.join("kodata/sub/page.html"), "<b>").unwrap()
            }),
        ];
        let different: &[(&str, Edit)] = &[
            ("an import", |d| {
                let s = main_go(d).replace("import ", "import _ \"os\"\nimport ");
                fs::write(d.join("main.go"), s).unwrap()
            }),
            ("an embed directive", |d| {
                let f = d.join("internal/greet/greet.go");
                let s = fs::read_to_string(&f)
                    .unwrap()
                    .replace("hello.txt", "*.txt");
                fs::write(f, s).unwrap()
            }),
            ("a new file in a package", |d| {
                fs::write(d.join("internal/greet/extra.go"), "package greet\n").unwrap()
            }),
            ("go.mod", |d| {
                fs::write(d.join("go.mod"), "module example.com/app\n\ngo 1.23\n").unwrap()
            }),
            ("go.sum appearing", |d| {
                fs::write(d.join("go.sum"), "").unwrap()
            }),
            ("a workspace", |d| {
                fs::write(d.join("go.work"), "go 1.22\n").unwrap()
            }),
        ];
        for (expected, cases) in [(true, same), (false, different)] {
            for (what, edit) in cases {
                let tmp = tempfile::tempdir().unwrap();
                let d = tmp.path();
                app(d);
                let s = snapshot(d).await;
                edit(d);
                let relisted = s.relisted();
                assert_eq!(relisted.is_some(), expected, "{what}");
                if let Some(relisted) = relisted {
                    let listed = Inputs::list(&[listing(d)]).await.unwrap();
                    assert!(listed.files.is_subset(&relisted.files), "{what}");
                    assert!(listed.dirs.is_subset(&relisted.dirs), "{what}");
                }
            }
        }
    }

    #[tokio::test]
    async fn other_platforms_are_listed_only_when_a_local_go_file_is_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        app(dir);
        let listing = |go, arch: &str| Listing {
            go,
            dir,
            pattern: ".",
            env: vec![
                ("GOOS".into(), "linux".into()),
                ("GOARCH".into(), arch.into()),
                ("CGO_ENABLED".into(), "0".into()),
            ],
            flags: &[],
        };
        let missing_go = "/nonexistent/go";
        // Every local file builds for amd64: the arm64 listing (whose go is missing) is not run.
        let inputs = Inputs::list(&[listing("go", "amd64"), listing(missing_go, "arm64")])
            .await
            .unwrap();
        assert!(inputs.files.contains(&dir.join("internal/greet/greet.go")));

        // A file only arm64 builds imports a package only arm64 needs.
        fs::create_dir_all(dir.join("armonly")).unwrap();
        fs::write(dir.join("armonly/armonly.go"), "package armonly\n").unwrap();
        fs::write(
            dir.join("main_arm64.go"),
            "package main\n\nimport _ \"example.com/app/armonly\"\n",
        )
        .unwrap();
        let armonly = dir.join("armonly/armonly.go");
        let amd64 = Inputs::list(&[listing("go", "amd64")]).await.unwrap();
        assert!(!amd64.files.contains(&armonly));
        let err = Inputs::list(&[listing("go", "amd64"), listing(missing_go, "arm64")])
            .await
            .unwrap_err();
        assert!(err.contains("cannot run /nonexistent/go"), "{err}");
        let both = Inputs::list(&[listing("go", "amd64"), listing("go", "arm64")])
            .await
            .unwrap();
        assert!(both.files.contains(&armonly), "{both:?}");
    }

    #[tokio::test]
    async fn nothing_is_recorded_when_an_input_changed_during_the_build() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        app(dir);
        let since = SystemTime::now() - std::time::Duration::from_secs(3600);
        let inputs = Inputs::list(&[listing(dir)]).await.unwrap();
        let err = Snapshot::take(inputs, &[], &[], since).unwrap_err();
        assert!(err.contains("changed during the build"), "{err}");
    }
}
