//! kobuild: Go apps into reproducible, ko-compatible OCI images, for CI.
//!
//! The pipeline, one module per stage: [`plan`] (what to build, the only reader of the
//! environment) → [`gobuild`] → [`image`] (layers, config, manifest) → [`publish`]
//! (registry, OCI layout, OCI archive) → [`report`].

pub mod digest;
pub mod gojson;
pub mod image;
pub mod registry;
pub mod time;
