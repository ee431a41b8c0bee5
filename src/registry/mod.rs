//! Registry access: image references, credentials, and an OCI distribution client.
//!
//! The client is kobuild's own rather than oci-client's, for what pushing in CI needs:
//! retries with backoff (honouring `Retry-After`), uploads streamed from files in one PUT,
//! cross-repository mounts that may be declined (202), bearer tokens with several scopes,
//! identity tokens, and errors that say what to do. It never panics on what a registry
//! answers and never logs credentials.

mod auth;
mod body;
mod challenge;
mod client;
mod error;
mod idle;
mod reference;
mod retry;
mod transport;

pub use auth::{AuthError, Credential, Keychain, RegistryCredential};
pub use client::{Client, ClientOptions, Fetched, StreamedUpload};
pub use error::{BLOB_UNKNOWN_ATTEMPTS, ErrorKind, RegistryError};
pub use reference::{DOCKER_HUB, Reference, ReferenceError, Repository, valid_tag};
pub use retry::RetryPolicy;
pub use transport::BodyStream;
