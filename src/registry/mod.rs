//! Registry access: references, credentials, and an HTTP client with retries.
