//! How long to wait before the next attempt.
//!
//! Exponential backoff with full jitter (a uniform draw from zero to the exponential
//! ceiling) spreads the retries of many concurrent requests, so a server that just
//! came back is not hit by all of them at the same instant. A server that says when
//! to come back (`Retry-After`) is believed, within a cap.

use std::time::{Duration, SystemTime};

/// The longest exponential backoff step.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` we honour: a server asking for ten minutes would stall
/// a benchmark run; past this we try again anyway (and count it as an attempt).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait before retry number `retry` (1 for the first retry).
pub(crate) fn backoff_delay(retry: u32, base_ms: u64, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(MAX_RETRY_AFTER);
    }
    let ceiling = exponential_ceiling(retry, base_ms);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// `base_ms * 2^(retry-1)`, capped at [`MAX_BACKOFF`].
pub(crate) fn exponential_ceiling(retry: u32, base_ms: u64) -> Duration {
    let shift = retry.saturating_sub(1).min(32);
    let ms = base_ms.saturating_mul(1u64 << shift);
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

/// Parses a `Retry-After` value: delay seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, also the two obsolete formats), relative to `now`.
/// A date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Some servers send fractional seconds; tolerate them.
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // RFC 850 and asctime forms are legal too.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Tue, 20 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert_eq!(exponential_ceiling(1, 100), Duration::from_millis(100));
        assert_eq!(exponential_ceiling(3, 100), Duration::from_millis(400));
        assert_eq!(exponential_ceiling(40, 100), MAX_BACKOFF);
        assert_eq!(exponential_ceiling(2, u64::MAX), MAX_BACKOFF);
        for retry in 1..6 {
            let d = backoff_delay(retry, 100, None);
            assert!(d <= exponential_ceiling(retry, 100));
        }
        assert_eq!(
            backoff_delay(1, 100, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff_delay(1, 100, Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
    }
}
