//! The fuzz target for fuzz/checks/platform.rs.
#![no_main]

#[path = "../checks/platform.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
