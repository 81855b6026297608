//! When to try again, and how long to wait first.
//!
//! Hand-written rather than taken from reqwest-retry, which cannot honour `Retry-After`
//! (reqwest-middleware #146); the policy is a pure function, so it is tested without a clock.

use std::time::{Duration, SystemTime};

/// Exponential backoff with full jitter, bounded in attempts, in any single wait, and in the
/// time a lookup may keep retrying.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `0` means one attempt only.
    pub retries: u32,
    /// The backoff ceiling for the first retry; it doubles with each further retry.
    pub base: Duration,
    /// The longest the program will ever sleep between two attempts, whatever the backoff
    /// or the server's `Retry-After` says.
    pub max_wait: Duration,
    /// No retry starts later than this after the lookup's first attempt started. Attempts
    /// alone do not bound a lookup's time once `--retries` is raised for a flaky API.
    pub max_time: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base: Duration::from_millis(200),
            max_wait: Duration::from_secs(30),
            max_time: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Total attempts allowed.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The wait before the next attempt after attempt number `failed` (1-based) failed.
    /// A server's `Retry-After` wins over the backoff (it knows its own load), but is capped
    /// like everything else. `unit` is a uniform random number in `[0, 1)`: full jitter spreads
    /// retries from many clients so they don't arrive together (AWS architecture blog,
    /// "Exponential Backoff And Jitter").
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_wait);
        }
        let exp = failed.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.max_wait);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`RetryPolicy::delay`] after an answer asking for a slower pace (429, 503) that does not
    /// say for how long (no `Retry-After`, or one that cannot be read): at least half the
    /// backoff ("equal jitter"), so a server already shedding load is not asked again at once.
    pub fn delay_pushed_back(
        &self,
        failed: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Duration {
        if retry_after.is_some() {
            return self.delay(failed, retry_after, unit);
        }
        let ceiling = self.delay(failed, None, 1.0);
        ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// Whether a retry after waiting `delay` still starts within `max_time` of the first
    /// attempt, `elapsed` ago.
    pub fn in_time(&self, elapsed: Duration, delay: Duration) -> bool {
        elapsed.saturating_add(delay) <= self.max_time
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in
/// the past means "now". Anything else is ignored rather than trusted.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many seconds to count is still "wait a long time" (capped by the caller).
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 5,
            base: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
            max_time: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay(1, None, 0.999_999),
            Duration::from_millis(100).mul_f64(0.999_999)
        );
        assert_eq!(p.delay(2, None, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(4, None, 0.5), Duration::from_millis(400));
        assert_eq!(p.delay(5, None, 0.5), Duration::from_millis(500));
        assert_eq!(p.delay(40, None, 0.5), Duration::from_millis(500));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let p = policy();
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert!(p.delay(3, None, 0.99) > Duration::from_millis(390));
    }

    #[test]
    fn pushed_back_without_retry_after_waits_at_least_half_the_backoff() {
        let p = policy();
        assert_eq!(p.delay_pushed_back(1, None, 0.0), Duration::from_millis(50));
        assert_eq!(
            p.delay_pushed_back(3, None, 0.0),
            Duration::from_millis(200)
        );
        assert!(p.delay_pushed_back(3, None, 0.99) > Duration::from_millis(390));
        assert!(p.delay_pushed_back(40, None, 1.0) <= p.max_wait);
        let asked = Some(Duration::from_millis(700));
        assert_eq!(p.delay_pushed_back(1, asked, 0.0), p.delay(1, asked, 0.0));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(700)), 0.0),
            Duration::from_millis(700)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_retry_must_start_within_the_time_limit() {
        let p = policy();
        let s = Duration::from_secs;
        assert!(p.in_time(s(0), s(1)));
        assert!(
            p.in_time(s(9), s(1)),
            "starting exactly at the limit is in time"
        );
        assert!(!p.in_time(s(9), s(2)));
        assert!(!p.in_time(s(11), Duration::ZERO));
        assert!(!p.in_time(Duration::MAX, s(1)), "no overflow");
    }

    #[test]
    fn attempts_are_retries_plus_one() {
        assert_eq!(
            RetryPolicy {
                retries: 0,
                ..policy()
            }
            .max_attempts(),
            1
        );
        assert_eq!(policy().max_attempts(), 6);
    }

    #[test]
    fn parses_both_retry_after_formats() {
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(Duration::MAX),
            "past u64: as long as can be, for the cap to cut"
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 12:00:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
