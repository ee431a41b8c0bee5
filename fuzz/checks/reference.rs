//! Image references as kobuild reads them (registry references, repositories, `--base`) and
//! as Skaffold does (`config::parse_reference`). A parsed reference or repository must parse
//! back from its printed form to the same value: kobuild prints them, then reads them again
//! (`--base` from an earlier build's output, artifacts.json, the repository to push to).
//!
//! Shared by the fuzz target and the seed replay in the tests (tests/it/fuzz_seeds.rs).

use kobuild::base::BaseSpec;
use kobuild::config::parse_reference;
use kobuild::registry::{Reference, Repository};

/// One input: returns when it does not apply, panics when a property fails.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = Reference::parse(text) {
        let printed = reference.to_string();
        // The printed form drops the tag when there is a digest.
        let expected = Reference {
            tag: if reference.digest.is_some() {
                None
            } else {
                reference.tag.clone()
            },
            ..reference.clone()
        };
        assert_eq!(
            Reference::parse(&printed),
            Ok(expected),
            "{text:?} printed as {printed:?}"
        );
        let repository = reference.repository();
        assert_eq!(
            Repository::parse(&repository.to_string()).as_ref(),
            Ok(&repository),
            "the repository of {text:?}"
        );
    }
    if let Ok(repository) = Repository::parse(text) {
        let printed = repository.to_string();
        assert_eq!(
            Repository::parse(&printed).as_ref(),
            Ok(&repository),
            "{text:?} printed as {printed:?}"
        );
    }
    let _ = BaseSpec::parse(text);
    let _ = parse_reference(text);
}
