//! When to try a remote call again, and how long to wait first.
//!
//! Rate limits (429), transient server failures (500, 502, 503, 504), connection failures and
//! timeouts are retried a bounded number of times. A `Retry-After` the server sends is honoured
//! up to a cap; otherwise the wait is exponential backoff with full jitter, so many concurrent
//! callers hitting the same overloaded registry do not come back in lockstep.

use std::error::Error as StdError;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::time::{Duration, SystemTime};

/// How many times and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff ceiling of the first retry; it doubles with each further attempt.
    pub base_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// The longest a `Retry-After` is waited for.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Whether another attempt may follow attempt number `attempt` (counted from 1).
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait before the attempt after attempt number `attempt` (counted from 1).
    ///
    /// `retry_after` is what the server asked for; `unit` is a uniform random number in
    /// `[0, 1)` that spreads the backoff (full jitter).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_retry_after);
        }
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Whether an HTTP status is worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Whether a transport failure is worth retrying: the connection could not be made, timed out,
/// or was closed under a request (a server dropping an idle pooled connection does that).
pub fn is_retryable_error(err: &reqwest::Error) -> bool {
    if err.is_connect() || err.is_timeout() {
        return true;
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_timeout())
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && is_transient_io(io.kind())
        {
            return true;
        }
        source = cause.source();
    }
    false
}

fn is_transient_io(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::TimedOut
    )
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate, or the obsolete
/// RFC 850 and asctime forms) taken relative to `now`. A date in the past means no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_http_date(value: &str) -> Option<SystemTime> {
    use chrono::{DateTime, NaiveDateTime};
    let utc = if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        date.to_utc()
    } else {
        // `Sunday, 06-Nov-94 08:49:37 GMT` and `Sun Nov  6 08:49:37 1994`.
        let naive = NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT")
            .or_else(|_| NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y"))
            .ok()?;
        naive.and_utc()
    };
    let seconds = u64::try_from(utc.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// A uniform random number in `[0, 1)` for jitter. Hash keys are seeded from the operating
/// system's randomness, which is plenty for spreading retries.
pub fn jitter_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // The top 53 bits fill an f64 mantissa exactly.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH_1994: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn retries_rate_limits_and_transient_server_errors_only() {
        for status in [429, 500, 502, 503, 504] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [200, 202, 301, 400, 401, 403, 404, 405, 409, 413, 501, 505] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = at(0);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_as_http_date_in_every_form() {
        let now = at(EPOCH_1994 - 30);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form, now),
                Some(Duration::from_secs(30)),
                "{form}"
            );
        }
    }

    #[test]
    fn retry_after_in_the_past_means_now() {
        let now = at(EPOCH_1994 + 5);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(1)), 0.5),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600)), 0.5),
            policy.max_retry_after
        );
        assert_eq!(
            policy.delay(4, Some(Duration::MAX), 0.0),
            policy.max_retry_after
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling_with_full_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        // Just below 1, the delay is (almost) the ceiling itself.
        let top = |attempt| policy.delay(attempt, None, 0.999_999).as_millis();
        assert_eq!([1, 2, 3, 4, 5, 6].map(top), [99, 199, 399, 799, 999, 999]);
        assert_eq!(policy.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(policy.delay(3, None, 0.5), Duration::from_millis(200));
        // Out-of-range randomness and huge attempt numbers stay bounded.
        assert_eq!(policy.delay(3, None, 7.0), Duration::from_millis(400));
        assert_eq!(policy.delay(u32::MAX, None, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 5);
        assert!((1..5).all(|a| policy.allows_another(a)));
        assert!(!policy.allows_another(5));
        assert!(!RetryPolicy::never().allows_another(1));
    }

    #[test]
    fn jitter_is_a_unit_fraction() {
        let draws: Vec<f64> = (0..200).map(|_| jitter_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|u| *u != draws[0]), "jitter never varies");
    }
}
