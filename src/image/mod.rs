//! Image assembly: deterministic layers, config edits and manifests, as ko makes them.

pub mod assemble;
pub mod kodata;
pub mod layer;
pub mod oci;
pub(crate) mod pgzip;
pub(crate) mod tar;
