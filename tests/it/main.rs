//! The integration tests: one binary, one module per concern, sharing the harness in
//! `common` (registries, fixtures, the kobuild runner). One binary links the crate once.

mod common;

mod action;
mod bad_input;
mod build;
mod cache;
mod compression;
mod config;
mod debug_cover;
mod faults;
mod harness;
mod init_deps;
mod merge;
mod metadata;
mod platforms;
mod registry_client;
mod reliability;
mod render;
mod resolve;
mod safety;
mod sbom;
mod skaffold;
mod template_budget;
mod workflows;
