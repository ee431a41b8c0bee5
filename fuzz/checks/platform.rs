//! Platform strings: one `--platform` value, and lines as repeated `--platform` flags.
//! Parsed lists must print back to themselves, since kobuild logs and re-reads them.
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use kobuild::platform::{Platform, Platforms};

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(platform) = Platform::parse(text) {
        let _ = platform.go_env();
        let _ = platform.matches(&platform.to_oci());
    }
    let flags: Vec<&str> = text.lines().collect();
    if let Ok(platforms) = Platforms::parse(&flags) {
        let printed = platforms.to_string();
        assert_eq!(
            Platforms::parse(&[printed.as_str()]).as_ref(),
            Ok(&platforms),
            "{printed:?} does not parse back"
        );
    }
}
