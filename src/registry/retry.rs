//! Retries with exponential backoff and jitter for transient registry failures.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::RegistryError;

/// How often and how patiently a registry request is retried after a transient failure
/// (408, 429, 500, 502, 503, 504, a lost connection, a timeout, a truncated body).
///
/// The total is bounded: at most `attempts` tries per request, and between them waits of
/// `base_delay`, doubled each time (each a random 50-100 % of that, so parallel uploads do
/// not retry in step), capped at `max_delay`; a `Retry-After` from the registry replaces
/// the backoff but is capped at `max_delay` too. The default policy thus makes 4 tries with
/// 0.1-0.2 s, 0.2-0.4 s and 0.4-0.8 s between them (at most 1.4 s of waiting), or at most
/// 3 x 5 s = 15 s when the registry keeps asking for more with `Retry-After`.
///
/// Each try can itself take long only while data moves: a try on which nothing moves for the
/// registry timeout (`ClientOptions::idle_timeout`, `--registry-timeout`, 300 s by default)
/// fails and counts as transient, so a registry that stalls every try costs at most
/// `attempts` x that timeout plus the waits above (`--registry-timeout 2`: about 9.5 s).
/// A request body still in the operating system's buffers adds its drain time at 64 KiB/s
/// (at most 128 s) to the timeout on kobuild's side; on Linux the kernel enforces the
/// timeout for it as well. A slow link that keeps moving is never cut off.
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
///
/// Not the clock's nanoseconds alone: where the clock counts microseconds (macOS), their
/// last three digits are always zero, which made every retry wait exactly half its
/// backoff, in step with all the others. std's `RandomState` is randomly keyed per thread
/// and changes with every call, so hashing the time with it is spread enough.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(nanos);
    (hasher.finish() % 1_000_000) as f64 / 1_000_000.0
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

/// `Retry-After` as seconds or as an HTTP date (RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`),
/// the time from now; a date in the past means no wait. Other forms are left to the backoff.
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Unix seconds of an IMF-fixdate, the form HTTP servers send (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(value: &str) -> Option<u64> {
    let mut parts = value.split_ascii_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || hms.next().is_some() {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
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
    fn parses_retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        // A date in the past: retry at once.
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let soon = crate::time::format_unix(now as i64 + 30);
        // format_unix gives RFC 3339; rebuild it as an HTTP date.
        let (date, time) = soon.trim_end_matches('Z').split_once('T').unwrap();
        let mut ymd = date.split('-');
        let (y, m, d) = (
            ymd.next().unwrap(),
            ymd.next().unwrap(),
            ymd.next().unwrap(),
        );
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][m.parse::<usize>().unwrap() - 1];
        let wait = parse_retry_after(Some(&format!("Mon, {d} {month} {y} {time} GMT"))).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
        for bad in [
            "soon",
            "Wed, 21 Oct 2015 07:28:00 CET",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "-1",
            "",
        ] {
            assert_eq!(parse_retry_after(Some(bad)), None, "{bad}");
        }
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn jitter_spreads() {
        let values: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let distinct: std::collections::BTreeSet<u64> =
            values.iter().map(|v| (v * 1e6) as u64).collect();
        assert!(distinct.len() > 190, "{} distinct of 200", distinct.len());
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((40..=160).contains(&low), "{low} of 200 below 0.5");
    }

    #[test]
    fn total_wait_is_bounded() {
        let p = RetryPolicy::default();
        let waits: Duration = (1..p.attempts).map(|a| p.delay(a, None)).sum();
        assert!(waits <= Duration::from_millis(1400), "{waits:?}");
        assert!(waits >= Duration::from_millis(700), "{waits:?}");
        let asked: Duration = (1..p.attempts)
            .map(|a| p.delay(a, Some(Duration::from_secs(3600))))
            .sum();
        assert_eq!(asked, Duration::from_secs(15));
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
