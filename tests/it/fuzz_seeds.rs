//! Every committed fuzz seed (fuzz/corpus/TARGET) through its target's checks
//! (fuzz/checks/TARGET.rs), as ordinary tests: the parsers keep passing them in every test
//! run without building the fuzzer, which scripts/fuzz runs.

use std::fs;
use std::path::Path;

#[path = "../../fuzz/checks/config_koyaml.rs"]
mod config_koyaml;
#[path = "../../fuzz/checks/config_skaffold.rs"]
mod config_skaffold;
#[path = "../../fuzz/checks/go_shape.rs"]
mod go_shape;
#[path = "../../fuzz/checks/platform.rs"]
mod platform;
#[path = "../../fuzz/checks/reference.rs"]
mod reference;
#[path = "../../fuzz/checks/render.rs"]
mod render;
#[path = "../../fuzz/checks/template.rs"]
mod template;

/// Runs `check` on every seed of `target`; there must be some.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: seed {} fails", path.display());
        seeds += 1;
    }
    assert!(seeds > 0, "{target}: no seeds in {}", dir.display());
}

#[test]
fn config_koyaml_seeds() {
    replay("config_koyaml", config_koyaml::run);
}

#[test]
fn config_skaffold_seeds() {
    replay("config_skaffold", config_skaffold::run);
}

#[test]
fn go_shape_seeds() {
    replay("go_shape", go_shape::run);
}

#[test]
fn platform_seeds() {
    replay("platform", platform::run);
}

#[test]
fn reference_seeds() {
    replay("reference", reference::run);
}

#[test]
fn render_seeds() {
    replay("render", render::run);
}

#[test]
fn template_seeds() {
    replay("template", template::run);
}
