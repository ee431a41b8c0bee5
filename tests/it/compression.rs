//! Layer compression: reproducible digests for gzip and zstd (whatever the cache, the
//! timing or what else runs), and `--compression zstd`'s OCI `tar+zstd` layers that other
//! tools read.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use crate::common::kobuild::*;
use crate::common::*;

#[test]
fn zstd_layers_push_read_back_and_run() {
    let reg = Registry::start(RegistryKind::Plain);
    let repo = format!("{}/apps", reg.host());
    let kb = Kobuild::new();
    let args = [
        "./hello",
        "--base",
        "scratch",
        "--repo",
        &repo,
        "--compression",
        "zstd",
        "--sbom=none",
    ];
    let refs = kb.ok(&args);
    let manifest: serde_json::Value =
        serde_json::from_slice(&skopeo_inspect_raw(&pinned(&refs[0]), &reg)).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    // skopeo decompresses the layers (recompressing them as gzip) and umoci runs what it gets.
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("oci");
    run_checked(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-compress-format",
                "gzip",
            ])
            .arg(format!("docker://{}", pinned(&refs[0])))
            .arg(format!("oci:{}:x", oci.display())),
    );
    let rootfs = umoci_unpack(&oci, "x", &work.path().join("bundle"));
    let out = run_in_rootfs(
        &rootfs,
        &["/ko-app/hello"],
        &[("KO_DATA_PATH", "/var/run/ko")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from kobuild\nHello there\n"
    );

    // A fresh cache compresses again, to the same bytes; gzip gives other digests.
    let again = Kobuild::new().ok(&args);
    assert_eq!(digest_of(&again[0]), digest_of(&refs[0]));
    let gzip = Kobuild::new().ok(&[
        "./hello",
        "--base",
        "scratch",
        "--repo",
        &repo,
        "--sbom=none",
    ]);
    assert_ne!(digest_of(&gzip[0]), digest_of(&refs[0]));
    let err = kb.fails(
        &[
            "./hello",
            "--base",
            "scratch",
            "--repo",
            &repo,
            "--compression-level",
            "22",
        ],
        2,
    );
    assert!(err.contains("--compression-level"), "{err}");
}

/// The default gzip layers are no bigger than ko's: the `server` app's binary layer against
/// the same tar compressed by Go's gzip at ko's level (`gzip.BestSpeed`, what ggcr uses).
#[test]
fn default_gzip_layers_are_no_bigger_than_kos() {
    let kb = Kobuild::new();
    let layout = kb.dir().join("layout");
    let layout_arg = layout.display().to_string();
    kb.ok_in(
        &app_dir("server"),
        &[
            ".",
            "--base",
            "scratch",
            "--push=false",
            "--sbom=none",
            "--oci-layout-path",
            &layout_arg,
        ],
    );
    let manifest: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        layout_top(&layout)["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let binary = &manifest["layers"].as_array().unwrap().last().unwrap()["digest"];
    let gz = layout_blob(&layout, binary.as_str().unwrap());
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();

    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("layer.tar"), &tar).unwrap();
    std::fs::write(work.path().join("go.mod"), "module gosize\n\ngo 1.22\n").unwrap();
    std::fs::write(
        work.path().join("main.go"),
        r#"package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
)

type count int

func (c *count) Write(p []byte) (int, error) { *c += count(len(p)); return len(p), nil }

func main() {
	in, _ := os.Open(os.Args[1])
	var n count
	w, _ := gzip.NewWriterLevel(&n, gzip.BestSpeed)
	if _, err := io.Copy(w, in); err != nil {
		panic(err)
	}
	w.Close()
	fmt.Println(n)
}
"#,
    )
    .unwrap();
    let out = run_checked(
        Command::new("go")
            .args(["run", ".", "layer.tar"])
            .current_dir(work.path())
            .envs(kb.env.iter().map(|(k, v)| (k, v))),
    );
    let ko: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        gz.len() <= ko,
        "kobuild's layer is {} bytes, Go's level 1 {ko} bytes",
        gz.len()
    );
}

/// An index file: 64-bit little-endian numbers, zeros, small counts and large offsets
/// mixed. Many compression blocks start right after zero bytes, where a compressor that
/// kept its last block's window used to emit bytes depending on that block (on which
/// worker got which block).
fn index_file(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = match x % 3 {
            0 => 0,
            1 => 1 + (x >> 8) % (1 << 16),
            _ => 1 + (x >> 8) % (1 << 40),
        };
        v.extend_from_slice(&n.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Builds of the `server` app (a 9 MiB binary and a 6 MiB kodata index file: several
/// compression blocks per layer) with fresh caches: side by side, one after another, on
/// all cores and pinned to one (another number of compression workers), with `--no-cache`,
/// and through `kobuild resolve`. Every image written to an OCI layout has the same digest.
fn one_digest_from_fresh_caches(compression: &str, side_by_side: usize, in_turn: usize) {
    let copy = app_copy("server");
    let app = copy.path().join("server");
    std::fs::create_dir(app.join("kodata")).unwrap();
    std::fs::write(app.join("kodata/index.db"), index_file(6 << 20)).unwrap();
    let args = |kb: &Kobuild| {
        let layout = kb.dir().join("layout").display().to_string();
        [
            ".",
            "--base",
            "scratch",
            "--push=false",
            "--sbom=none",
            "--compression",
            compression,
            "--oci-layout-path",
            &layout,
        ]
        .map(String::from)
        .to_vec()
    };
    // `taskset -c 0 kobuild ...`: one core, so one compression worker.
    let one_core = |cmd: &Command| {
        let mut pinned = Command::new("taskset");
        pinned
            .args(["-c", "0"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .current_dir(cmd.get_current_dir().unwrap());
        pinned
    };
    let mut digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut record = |kb: &Kobuild, run: String, out: std::process::Output| {
        assert!(
            out.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = layout_top(&kb.dir().join("layout"))["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&digest), "{run}: printed {stdout}");
        digests.entry(digest).or_default().push(run);
    };
    let build = |kb: &Kobuild, extra: &[&str]| {
        let mut args = args(kb);
        args.extend(extra.iter().map(|a| a.to_string()));
        kb.command(&app, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let running: Vec<_> = (0..side_by_side)
        .map(|_| {
            let kb = Kobuild::new();
            let child = build(&kb, &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (kb, child)
        })
        .collect();
    for (i, (kb, child)) in running.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        record(&kb, format!("side by side #{i}"), out);
    }
    for i in 0..in_turn {
        let kb = Kobuild::new();
        let (run, out) = if i % 2 == 0 {
            (format!("in turn #{i}"), build(&kb, &[]).output())
        } else {
            (
                format!("in turn #{i}, one core"),
                one_core(&build(&kb, &[])).output(),
            )
        };
        record(&kb, run, out.unwrap());
    }
    let kb = Kobuild::new();
    let out = build(&kb, &["--no-cache"]).output().unwrap();
    record(&kb, "--no-cache".into(), out);

    let kb = Kobuild::new();
    let manifest = kb.dir().join("server.yaml");
    std::fs::write(&manifest, "image: ko://example.com/server\n").unwrap();
    let mut resolve = Command::new(env!("CARGO_BIN_EXE_kobuild"));
    resolve
        .args(["resolve", "-f"])
        .arg(&manifest)
        .args(&args(&kb)[1..])
        .envs(kb.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&app);
    let out = resolve.output().unwrap();
    record(&kb, "resolve".into(), out);

    assert_eq!(digests.len(), 1, "{compression}: {digests:#?}");
}

#[test]
fn gzip_images_have_one_digest_whatever_the_cache_or_timing() {
    one_digest_from_fresh_caches("gzip", 4, 6);
}

#[test]
fn zstd_images_have_one_digest_whatever_the_cache_or_timing() {
    one_digest_from_fresh_caches("zstd", 3, 2);
}
