//! The fuzz target for fuzz/checks/go_shape.rs.
#![no_main]

#[path = "../checks/go_shape.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
