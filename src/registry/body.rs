//! Response bodies read into memory, with a cap: a registry (or anything answering in its
//! place) cannot make kobuild hold an unbounded body.

use futures_util::StreamExt;
use reqwest::Response;

/// Manifests, indexes and configs (small blobs): go-containerregistry's manifest limit.
pub(crate) const MANIFEST_LIMIT: usize = 100 << 20;
/// A token response is a few KiB of JSON.
pub(crate) const TOKEN_LIMIT: usize = 1 << 20;
/// An error body is only described by its start (see `describe_body`).
pub(crate) const ERROR_LIMIT: usize = 64 << 10;

pub(crate) enum BodyError {
    Read(reqwest::Error),
    /// Longer than the limit: nothing past it was read.
    TooLarge,
}

/// `resp`'s body, refused as soon as it is known to be longer than `limit` bytes (from
/// Content-Length before reading, else while reading).
pub(crate) async fn read(resp: Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most the first `limit` bytes of `resp`'s body; what arrived when reading fails.
pub(crate) async fn prefix(resp: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    body
}

/// A limit in the unit it is written in.
pub(crate) fn describe_limit(limit: usize) -> String {
    if limit >= 1 << 20 {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{} KiB", limit >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static [u8], content_length: bool) -> Response {
        let mut builder = http::Response::builder();
        if content_length {
            builder = builder.header("content-length", body.len());
        }
        // A stream has no known length: the cap is then checked while reading.
        let body = if content_length {
            reqwest::Body::from(body)
        } else {
            reqwest::Body::wrap_stream(futures_util::stream::iter(
                body.chunks(3).map(Ok::<_, std::io::Error>),
            ))
        };
        Response::from(builder.body(body).unwrap())
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_and_longer_ones_refused() {
        for known in [true, false] {
            let ok = read(response(b"0123456789", known), 10).await;
            assert!(
                matches!(ok, Ok(b) if b == b"0123456789"),
                "length known: {known}"
            );
            let long = read(response(b"0123456789a", known), 10).await;
            assert!(
                matches!(long, Err(BodyError::TooLarge)),
                "length known: {known}"
            );
        }
    }

    #[tokio::test]
    async fn a_prefix_stops_at_the_limit() {
        assert_eq!(prefix(response(b"0123456789", false), 4).await, b"0123");
        assert_eq!(prefix(response(b"01", true), 4).await, b"01");
    }

    #[test]
    fn limits_are_described_in_their_unit() {
        assert_eq!(describe_limit(MANIFEST_LIMIT), "100 MiB");
        assert_eq!(describe_limit(ERROR_LIMIT), "64 KiB");
    }
}
