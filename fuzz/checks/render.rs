//! Kubernetes manifests through `render`: placeholders and `image:` values replaced by the
//! built references, the rest kept byte for byte.
//!
//! Checked besides "no panic": with no built images and unresolved placeholders allowed,
//! render returns its input unchanged (it is lossless); and whatever render writes still
//! parses, so splicing a reference in never breaks the YAML.
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use std::sync::LazyLock;

use kobuild::render::{ImageMap, find_ko_references, render_text};

/// The images of the render fixtures (the seeds use them), plus references that cannot be
/// written as plain scalars.
static IMAGES: LazyLock<ImageMap> = LazyLock::new(|| {
    let mut images = ImageMap::new();
    images
        .insert_artifacts_json(include_bytes!("../../tests/fixtures/render/artifacts.json"))
        .unwrap();
    images.insert("ko://example.com/bool", "true").unwrap();
    images
        .insert("ko://example.com/odd", r#"#a,b'c"d\e:"#)
        .unwrap();
    images
        .insert("app", "registry.example.com/team/app:1")
        .unwrap();
    images
});

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = find_ko_references(text);
    if let Ok(same) = render_text("in.yaml", text, &ImageMap::new(), true) {
        assert_eq!(same, text, "render with no images changed its input");
    }
    // Where this succeeds, its output is the one below: no need to parse it twice.
    let _ = render_text("in.yaml", text, &IMAGES, false);
    if let Ok(out) = render_text("in.yaml", text, &IMAGES, true)
        && let Err(e) = find_ko_references(&out)
    {
        panic!("rendered output does not parse: {e}\n--- output:\n{out}");
    }
}
