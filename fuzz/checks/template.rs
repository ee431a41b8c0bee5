//! Go templates as each tool expands them: Skaffold's env and label templates (Sprig),
//! ko's `.ko.yaml` templates and Skaffold's `--output` template, all on the same text.
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use std::collections::BTreeMap;

use kobuild::template::{
    GitInfo, KoTemplateData, ko_expand, output_template, skaffold_expand, skaffold_expand_label,
};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let env = map(&[
        ("VERSION", "1.2.3"),
        ("GITHUB_SHA", "abc123"),
        ("EMPTY", ""),
    ]);
    let extra = map(&[
        ("IMAGE_REPO", "gcr.io/proj"),
        ("IMAGE_NAME", "app"),
        ("IMAGE_TAG", "v1"),
    ]);
    let _ = skaffold_expand(template, &env, &extra);
    let _ = skaffold_expand_label(template, &env);

    let ko_data = KoTemplateData {
        env: env.clone(),
        go_env: map(&[("GOOS", "linux"), ("GOARCH", "arm64")]),
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
    let _ = ko_expand(template, &ko_data);

    // A failed build (no results) and two results: both shapes Skaffold renders.
    let builds = [
        (
            "ko://github.com/acme/api".to_string(),
            "gcr.io/p/api:v1@sha256:3f0c".to_string(),
        ),
        ("web".to_string(), "gcr.io/p/web:v1".to_string()),
    ];
    let _ = output_template(template, None);
    let _ = output_template(template, Some(&builds));
}
