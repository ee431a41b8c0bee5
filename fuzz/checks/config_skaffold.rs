//! `skaffold.yaml`: parsing, profiles (named and activated) and patches, then the
//! per-artifact helpers the build runs on the result.
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use std::path::Path;

use kobuild::config::{ActivationContext, Builder, import_target, parse_skaffold};
use kobuild::plan::Env;

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Profiles to apply come from a first line `# profiles: a,-b`, a YAML comment, so the
    // fuzzer reaches named and deselected profiles while the text stays one document.
    let profiles: Vec<String> = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# profiles:"))
        .map(|list| list.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let env = Env::from_pairs(&[("CI", "true"), ("HOME", "/root")]);
    let activation = ActivationContext {
        env: &env,
        command: "build",
        kube_context: Some("kind-kind"),
    };
    let Ok(config) = parse_skaffold(
        Path::new("skaffold.yaml"),
        text,
        &profiles,
        Some(&activation),
    ) else {
        return;
    };
    for artifact in &config.artifacts {
        let _ = config.platforms(artifact);
        if let Builder::Ko(ko) = &artifact.builder {
            let _ = ko.dependency_patterns();
            let _ = import_target(artifact, ko);
        }
    }
}
