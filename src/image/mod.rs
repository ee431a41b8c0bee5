//! Image assembly: deterministic layers, config edits and manifests, as ko makes them.

pub mod layer;
pub mod oci;
mod tar;
