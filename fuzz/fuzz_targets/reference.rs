//! The fuzz target for fuzz/checks/reference.rs.
#![no_main]

#[path = "../checks/reference.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
