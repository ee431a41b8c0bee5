//! ko's `.ko.yaml`, then the lookups the build makes on it.
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use std::path::Path;

use kobuild::config::{KoConfig, split_platforms};
use kobuild::plan::Env;

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // No KO_* variables: they would mask the file's values.
    let Ok(config) = KoConfig::parse(Path::new(".ko.yaml"), text, &Env::from_pairs(&[])) else {
        return;
    };
    let _ = config.base_image_override("ko://github.com/Acme/Shop/cmd/API");
    let _ = split_platforms(config.default_platforms);
}
