//! Retries with exponential backoff and jitter for transient registry failures.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::RegistryError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least one is always made).
    pub attempts: u32,
    /// Wait before the second try; doubled for each further one.
    pub base_delay: Duration,
    /// Cap for the wait, including one asked for with `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based).
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let backoff = self.base_delay.saturating_mul(factor).min(self.max_delay);
        // Between half and all of the backoff, so parallel uploads do not retry in step.
        backoff.mul_f64(0.5 + jitter() / 2.0)
    }
}

/// A number in [0, 1) that differs between calls; good enough to spread retries.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Runs `op` until it succeeds, fails for good, or the attempts are used up. `method`
/// and `target` (registry/repository) only label the log lines.
pub(crate) async fn retrying<T, F, Fut>(
    policy: &RetryPolicy,
    method: &str,
    target: &str,
    mut op: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && attempt < policy.attempts => {
                let delay = policy.delay(attempt, e.retry_after());
                tracing::warn!(
                    "{method} {target}: {e}; retrying in {} ms (attempt {} of {})",
                    delay.as_millis(),
                    attempt + 1,
                    policy.attempts
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// `Retry-After` in seconds; the HTTP-date form is left to the normal backoff.
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::ErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for (attempt, full_ms) in [
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1600),
            (6, 5000),
            (40, 5000),
        ] {
            let d = p.delay(attempt, None).as_millis();
            assert!(
                d >= full_ms / 2 && d <= full_ms,
                "attempt {attempt}: {d} ms"
            );
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn parses_retry_after_seconds() {
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    fn unavailable() -> RegistryError {
        ErrorKind::Status {
            registry: "r".into(),
            repository: "a".into(),
            action: "x".into(),
            status: 503,
            detail: String::new(),
            retry_after: None,
        }
        .into()
    }

    #[tokio::test]
    async fn retries_transient_failures_only() {
        let calls = AtomicU32::new(0);
        let result = retrying(&policy(), "GET", "r/a", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(unavailable()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = retrying(&policy(), "GET", "r/a", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(unavailable())
        })
        .await;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "gives up after `attempts` tries"
        );

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = retrying(&policy(), "GET", "r/a", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ErrorKind::NotFound {
                name: "r/a:x".into(),
            }
            .into())
        })
        .await;
        assert!(result.unwrap_err().is_not_found());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 404 is final");
    }
}
