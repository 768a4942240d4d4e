//! Value parsers the flags share (durations such as `--shutdown-grace 10s`).
use std::time::Duration;

/// Parses `10s`, `500ms`, `2m`, `6h`, `7d` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (num, unit) = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((raw, "s"), |i| raw.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{raw:?}: unit must be ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{raw:?}: {e}"))
}

/// Parses `--watch-history`: a count of changes (`10000`) or an age (`1h`, `7d`).
pub fn parse_watch_history(raw: &str) -> Result<crate::store::WatchHistory, String> {
    use crate::store::WatchHistory;
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw
            .parse()
            .map(WatchHistory::Changes)
            .map_err(|_| format!("{raw:?}: too many changes"));
    }
    parse_duration(raw)
        .map(WatchHistory::Age)
        .map_err(|_| format!("{raw:?} is neither a number of changes (10000) nor an age (1h, 7d)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn watch_history_is_a_count_or_an_age() {
        use crate::store::WatchHistory;
        assert_eq!(
            parse_watch_history("10000"),
            Ok(WatchHistory::Changes(10000))
        );
        assert_eq!(
            parse_watch_history("1h"),
            Ok(WatchHistory::Age(Duration::from_secs(3600)))
        );
        assert!(parse_watch_history("").is_err());
        assert!(parse_watch_history("lots").is_err());
    }
}
