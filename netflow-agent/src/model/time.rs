//! Times as netflow writes them: RFC 3339 in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 with milliseconds, UTC (flow records).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// RFC 3339 (UTC, seconds) of a Unix time, as graph files store times.
pub fn file_time(unix_seconds: u64) -> String {
    file_time_display(unix_seconds).to_string()
}

/// [`file_time`], written where it is formatted (no string of its own).
pub fn file_time_display(unix_seconds: u64) -> impl std::fmt::Display {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_seconds))
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub fn utc_day(unix_seconds: u64) -> String {
    file_time(unix_seconds)[..10].to_string()
}
