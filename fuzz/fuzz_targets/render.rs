//! The fuzz target for fuzz/checks/render.rs.
#![no_main]

#[path = "../checks/render.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
