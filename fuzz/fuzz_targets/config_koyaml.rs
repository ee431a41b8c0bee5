//! The fuzz target for fuzz/checks/config_koyaml.rs.
#![no_main]

#[path = "../checks/config_koyaml.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
