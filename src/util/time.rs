//! Timestamps as the workbench writes them: RFC 3339 in UTC. One place, on jiff, so
//! run journals, manifests, verdicts and knowledge versions agree on the format.

use jiff::Timestamp;

/// Now, with milliseconds (`2026-11-22T08:00:00.123Z`): run records and manifests,
/// where the order of events within a second matters.
pub fn now_millis() -> String {
    millis(Timestamp::now())
}

/// Now, in whole seconds (`2026-11-22T08:00:00Z`): what people read in lists.
pub fn now_seconds() -> String {
    let now = Timestamp::now();
    seconds(now.as_second())
}

/// Seconds since 1970 in UTC, in whole seconds.
pub fn seconds(unix: i64) -> String {
    Timestamp::from_second(unix).map_or_else(|_| format!("@{unix}"), |t| t.to_string())
}

fn millis(t: Timestamp) -> String {
    let ms = t.as_millisecond();
    Timestamp::from_millisecond(ms).map_or_else(|_| t.to_string(), |t| format!("{t:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_as_rfc3339() {
        assert_eq!(seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(seconds(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(seconds(4_102_444_800), "2100-01-01T00:00:00Z");
        let t = Timestamp::from_millisecond(1_709_210_096_007).unwrap();
        assert_eq!(millis(t), "2024-02-29T12:34:56.007Z");
        let t = Timestamp::from_millisecond(0).unwrap();
        assert_eq!(millis(t), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn now_has_the_fixed_widths_readers_compare_as_text() {
        assert_eq!(now_millis().len(), 24, "{}", now_millis());
        assert_eq!(now_seconds().len(), 20, "{}", now_seconds());
    }
}
