//! The Go file header lexer behind the artifact cache's "same files as recorded" check.
//! Any bytes: no panic, no hang. And a declaration added after the imports (what a body
//! edit looks like from the header) never changes a shape that exists.
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use kobuild::cache::shape::shape;

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Some(before) = shape(data) else {
        return;
    };
    if data.windows(10).any(|w| w == b"//go:embed") {
        return;
    }
    let mut edited = data.to_vec();
    edited.extend_from_slice(b"\nfunc kobuildFuzz() { println(1) }\n");
    assert_eq!(
        shape(&edited),
        Some(before),
        "a declaration changed the shape"
    );
}
