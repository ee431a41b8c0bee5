//! The integration tests: one binary, one module per concern, sharing the harness in
//! `common` (registries, fixtures, the kobuild runner). One binary links the crate once.

mod common;

mod act;
mod action;
mod bad_input;
mod build;
mod cache;
mod compression;
mod concurrent;
mod config;
mod conformance;
mod debug_cover;
mod faults;
mod fuzz_seeds;
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
mod signals;
mod skaffold;
mod skaffold_parity;
mod template_budget;
mod terminal;
mod workflows;
