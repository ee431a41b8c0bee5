//! The registry timeout: a request fails when no data moves for a while, never because it
//! takes long while data does move (`--registry-timeout`).
//!
//! reqwest's own `read_timeout` cannot be used for this: it is per read for response bodies,
//! but from sending a request to its response head it is one timer, so a large upload over
//! a slow link would fail however steadily it moved. So the timer is kept here instead:
//!
//! - Until the response head arrives, [`watch`] fails a request whose body has handed the
//!   connection nothing for the timeout. Bytes handed over may still sit in the operating
//!   system's buffers (several MB on a fast path), so the timer also allows the time they
//!   need at [`DRAIN_RATE`] (at most 128 s), or, for a body larger than the buffers hold,
//!   twice their drain time at the pace the body was taken (so a registry that reads a
//!   large upload and never answers is given up on soon after the timeout, not minutes
//!   later). On Linux the kernel watches that part itself: the transport sets
//!   `TCP_USER_TIMEOUT`, which fails a connection whose sent data stays unacknowledged (or
//!   that the peer stops reading) for the timeout, and which a moving link never trips.
//! - After the head, [`guard`] fails a response body whose next piece does not arrive
//!   within the timeout, or that averages under [`MIN_BODY_RATE`] once the timeout has
//!   passed (a trickle that never quite stalls).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::Response;
use tokio::time::Instant;

/// The slowest link assumed while the operating system still sends what a request body
/// handed it (the time that takes counts as progress): a link at least this fast never
/// times out, whatever the timeout (a slower one may need a timeout over 64 KiB / rate).
pub(crate) const DRAIN_RATE: u64 = 64 * 1024;
/// The most of a request body the operating system and network are assumed to hold.
const MAX_BUFFERED: u64 = 8 * 1024 * 1024;
/// What a file body hands over at once, so a slow link shows progress often.
pub(crate) const CHUNK: usize = 64 * 1024;

/// No data moved for this long: the error a stalled request or response body ends with.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no data moved for {} s", .0.as_secs())]
pub(crate) struct Stalled(pub(crate) Duration);

/// How far one request has got: when its body last handed bytes to the connection, and how
/// many in all.
pub(crate) struct Progress {
    origin: Instant,
    /// Milliseconds after `origin`.
    last_ms: AtomicU64,
    handed: AtomicU64,
    /// What `handed` started at: bytes given at once, whose pace says nothing of the link.
    initial: u64,
}

impl Progress {
    /// A request about to be sent, `handed` bytes of its body already given to the client.
    pub(crate) fn new(handed: u64) -> Arc<Progress> {
        Arc::new(Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            handed: AtomicU64::new(handed),
            initial: handed,
        })
    }

    fn moved(&self, bytes: u64) {
        self.handed.fetch_add(bytes, Ordering::Relaxed);
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the request counts as stalled unless it moves before.
    fn deadline(&self, idle: Duration) -> Instant {
        let last_ms = self.last_ms.load(Ordering::Relaxed);
        let handed = self.handed.load(Ordering::Relaxed);
        let mut drain_ms = handed.min(MAX_BUFFERED) * 1000 / DRAIN_RATE;
        // All but MAX_BUFFERED of a streamed body had left by `last`, so the link carried at
        // least that much in the time: twice the time to drain the buffers at that pace.
        let beyond = (handed - self.initial).saturating_sub(MAX_BUFFERED);
        if let Some(paced) = (2 * MAX_BUFFERED * last_ms).checked_div(beyond) {
            drain_ms = drain_ms.min(paced);
        }
        self.origin + Duration::from_millis(last_ms + drain_ms) + idle
    }

    /// `body` (a request body's chunks), recording each chunk as it is handed over.
    pub(crate) fn count<S, B, E>(
        self: &Arc<Self>,
        body: S,
    ) -> impl Stream<Item = Result<B, E>> + use<S, B, E>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
    {
        let progress = self.clone();
        body.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                progress.moved(chunk.as_ref().len() as u64);
            }
        })
    }
}

/// Runs `send` (a request up to its response head) until it finishes, or fails with
/// [`Stalled`] once `progress` has not moved for `idle` (plus the drain allowance).
pub(crate) async fn watch<T>(
    send: impl Future<Output = T>,
    progress: &Progress,
    idle: Duration,
) -> Result<T, Stalled> {
    let mut send = std::pin::pin!(send);
    loop {
        let deadline = progress.deadline(idle);
        tokio::select! {
            biased;
            out = &mut send => return Ok(out),
            () = tokio::time::sleep_until(deadline) => {
                if progress.deadline(idle) <= Instant::now() {
                    return Err(Stalled(idle));
                }
            }
        }
    }
}

/// `resp` with a body that fails with [`Stalled`] when its next piece does not arrive within
/// `idle`. (Only status, version and headers are kept; the registry code needs no more.)
pub(crate) fn guard(resp: Response, idle: Duration) -> Response {
    let mut head = http::Response::new(());
    *head.status_mut() = resp.status();
    *head.version_mut() = resp.version();
    *head.headers_mut() = resp.headers().clone();
    let body = reqwest::Body::wrap_stream(within(resp.bytes_stream(), idle));
    Response::from(head.map(|()| body))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The slowest a response body may average once the timeout has passed: a trickle (a byte a
/// second keeps every piece within the timeout) fails instead of taking minutes.
pub(crate) const MIN_BODY_RATE: u64 = 1024;

/// A response body averaging under [`MIN_BODY_RATE`] after its first `idle`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "response body slower than {} B/s ({got} bytes in {} s; the minimum applies after the \
     {} s registry timeout)",
    MIN_BODY_RATE,
    .elapsed.as_secs(),
    .idle.as_secs()
)]
pub(crate) struct Trickle {
    pub(crate) got: u64,
    pub(crate) elapsed: Duration,
    pub(crate) idle: Duration,
}

/// The items of `stream`, each within `idle` of the one before, and all of them at
/// [`MIN_BODY_RATE`] on average after the first `idle`; either failing ends it with an
/// error.
fn within<T: AsRef<[u8]>, E: Into<BoxError>>(
    stream: impl Stream<Item = Result<T, E>>,
    idle: Duration,
) -> impl Stream<Item = Result<T, BoxError>> {
    let start = Instant::now();
    let state = Some((Box::pin(stream), 0u64));
    futures_util::stream::unfold(state, move |state| async move {
        let (mut stream, got) = state?;
        let stalled = Instant::now() + idle;
        // When `got` bytes stop being enough.
        let slow = start + idle + Duration::from_millis(got.saturating_mul(1000) / MIN_BODY_RATE);
        match tokio::time::timeout_at(stalled.min(slow), stream.next()).await {
            Ok(Some(Ok(item))) => {
                let got = got + item.as_ref().len() as u64;
                Some((Ok(item), Some((stream, got))))
            }
            Ok(Some(Err(e))) => Some((Err(e.into()), Some((stream, got)))),
            Ok(None) => None,
            Err(_) if slow < stalled => {
                let elapsed = start.elapsed();
                Some((Err(Trickle { got, elapsed, idle }.into()), None))
            }
            Err(_) => Some((Err(Stalled(idle).into()), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(2);

    /// A request that hands over one 64 KiB chunk a second, four times, then gets its
    /// answer 2.5 s after the last one (1 s of which the drain allowance covers).
    #[tokio::test(start_paused = true)]
    async fn moving_requests_never_time_out() {
        let progress = Progress::new(0);
        let start = Instant::now();
        let body = futures_util::stream::iter(0..4).then(|_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, std::io::Error>(vec![0u8; CHUNK])
        });
        let send = async {
            let chunks: Vec<_> = progress.count(body).collect().await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            chunks.len()
        };
        assert_eq!(watch(send, &progress, IDLE).await.unwrap(), 4);
        assert_eq!(start.elapsed(), Duration::from_millis(6500));
        // 256 KiB handed over: 4 s of draining at 64 KiB/s, on top of the 2 s.
        assert_eq!(
            progress.deadline(IDLE) - start,
            Duration::from_secs(4 + 2 + 4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_request_stalls_after_the_timeout() {
        let start = Instant::now();
        let progress = Progress::new(0);
        let e = watch(std::future::pending::<()>(), &progress, IDLE)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), IDLE);
        assert_eq!(e.to_string(), "no data moved for 2 s");

        // A small body (a manifest) barely extends it; a large one by its drain time at
        // most, however large it is.
        let start = Instant::now();
        let progress = Progress::new(6_554);
        watch(std::future::pending::<()>(), &progress, IDLE)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(2100));
        let progress = Progress::new(1 << 40);
        assert_eq!(
            progress.deadline(IDLE) - progress.origin,
            Duration::from_secs(2 + 128)
        );
    }

    /// Past the 8 MiB the buffers may hold, the pace a body was taken at bounds the drain
    /// allowance: 40 MiB in 2 s leaves at most 8 MiB, gone in 0.5 s at 16 MiB/s (twice that
    /// allowed), not in the 128 s of the slowest link assumed. A slow link keeps its 128 s.
    #[tokio::test(start_paused = true)]
    async fn a_large_body_allows_for_its_drain_at_its_own_pace() {
        let progress = Progress::new(0);
        tokio::time::advance(Duration::from_secs(2)).await;
        progress.moved(40 << 20);
        assert_eq!(
            progress.deadline(IDLE) - progress.origin,
            Duration::from_secs(2) + IDLE + Duration::from_secs(1)
        );
        let slow = Progress::new(0);
        tokio::time::advance(Duration::from_secs(60)).await;
        slow.moved(12 << 20);
        assert_eq!(
            slow.deadline(IDLE) - slow.origin,
            Duration::from_secs(60) + IDLE + Duration::from_secs(128)
        );
        // Bytes given at once (a manifest) tell no pace.
        let given = Progress::new(40 << 20);
        assert_eq!(
            given.deadline(IDLE) - given.origin,
            IDLE + Duration::from_secs(128)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_stalls_when_its_next_piece_is_late() {
        let start = Instant::now();
        let pieces = futures_util::stream::iter(0..3)
            .then(|i| async move {
                tokio::time::sleep(Duration::from_millis(1900)).await;
                Ok::<_, std::io::Error>(vec![i; 4096])
            })
            .chain(futures_util::stream::pending());
        let got: Vec<Result<Vec<u8>, BoxError>> = within(pieces, IDLE).collect().await;
        assert_eq!(got.len(), 4, "three pieces and the stall, then the end");
        assert!(got[..3].iter().all(Result::is_ok));
        let e = got[3].as_ref().unwrap_err();
        assert!(e.downcast_ref::<Stalled>().is_some(), "{e}");
        assert_eq!(start.elapsed(), Duration::from_millis(3 * 1900 + 2000));
    }

    /// A byte a second never leaves a gap as long as the timeout, but is cut off just after
    /// it, by the minimum rate.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_soon_after_the_timeout() {
        let start = Instant::now();
        let trickle = futures_util::stream::iter(0..491).then(|_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, std::io::Error>(vec![b'x'])
        });
        let got: Vec<Result<Vec<u8>, BoxError>> = within(trickle, IDLE).collect().await;
        let e = got.last().unwrap().as_ref().unwrap_err();
        assert!(e.downcast_ref::<Trickle>().is_some(), "{e}");
        assert!(e.to_string().contains("slower than 1024 B/s"), "{e}");
        assert!(start.elapsed() < IDLE * 2, "{:?}", start.elapsed());
    }
}
