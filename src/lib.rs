//! kobuild: Go apps into reproducible, ko-compatible OCI images, for CI.
//!
//! The pipeline ([`pipeline`]), one module per stage: [`plan`] (what to build, the only
//! reader of the environment) → `gobuild` → [`image`] (layers, config, manifest) → `publish`
//! (registry, OCI layout, OCI archive), [`sbom`], [`cache`] (reuse and records) → [`report`].

pub mod base;
pub(crate) mod blobs;
pub mod cache;
pub mod cli;
pub mod config;
pub mod deps;
pub mod digest;
pub mod env;
pub mod error;
pub(crate) mod fsutil;
pub mod gha;
pub(crate) mod gobuild;
pub(crate) mod gojson;
pub mod image;
pub mod init;
pub(crate) mod integrity;
pub mod interrupt;
pub mod merge;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod progress;
pub(crate) mod publish;
pub mod registry;
pub mod render;
pub mod report;
pub mod resolve;
pub mod sbom;
pub mod template;
pub(crate) mod time;

pub use error::Error;
