//! ko's `.ko.yaml`, then the lookups the build makes on it.
#![no_main]

use std::path::Path;

use kobuild::config::{KoConfig, split_platforms};
use kobuild::plan::Env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // No KO_* variables: they would mask the file's values.
    let Ok(config) = KoConfig::parse(Path::new(".ko.yaml"), text, &Env::from_pairs(&[])) else {
        return;
    };
    let _ = config.base_image_override("ko://github.com/Acme/Shop/cmd/API");
    let _ = split_platforms(config.default_platforms);
});
