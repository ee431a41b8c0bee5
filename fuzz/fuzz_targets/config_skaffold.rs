//! The fuzz target for fuzz/checks/config_skaffold.rs.
#![no_main]

#[path = "../checks/config_skaffold.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
