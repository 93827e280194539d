//! Times as netflow writes them: RFC 3339 in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 with milliseconds, UTC, as flow records write their times.
pub fn rfc3339(time: SystemTime) -> String {
    Timestamp::from(time).to_string()
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

/// A time of a flow record, held as Unix milliseconds: a week's flow log
/// is millions of records, each with three times, and a number is what the
/// graph builder reads (it never needs the text). JSON writes it as
/// RFC 3339 with milliseconds, UTC, and reads any RFC 3339 time.
///
/// It lies between the Unix epoch and the end of the year 9999, the times
/// RFC 3339 can write: every constructor keeps it there, so it always
/// writes (a binary log's hostile number is refused where it is read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: u64,
}

/// 10000-01-01T00:00:00Z in Unix milliseconds: the first time RFC 3339
/// cannot write.
const END_OF_RFC3339_MILLIS: u64 = 253_402_300_800_000;

impl Timestamp {
    /// `None` past the year 9999.
    pub const fn from_unix_millis(unix_millis: u64) -> Option<Self> {
        if unix_millis < END_OF_RFC3339_MILLIS {
            Some(Self { unix_millis })
        } else {
            None
        }
    }

    pub const fn unix_millis(self) -> u64 {
        self.unix_millis
    }

    pub const fn unix_seconds(self) -> u64 {
        self.unix_millis / 1000
    }
}

impl From<SystemTime> for Timestamp {
    /// A clock before the epoch reads as the epoch, one past the year 9999
    /// as its last millisecond.
    fn from(time: SystemTime) -> Self {
        let unix_millis = time.duration_since(UNIX_EPOCH).map_or(0, |after| {
            u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
        });
        Self {
            unix_millis: unix_millis.min(END_OF_RFC3339_MILLIS - 1),
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = UNIX_EPOCH + Duration::from_millis(self.unix_millis);
        write!(f, "{}", humantime::format_rfc3339_millis(time))
    }
}

/// A text that is not an RFC 3339 time (from 1970 to 9999).
#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 time from 1970 to 9999: {0:?}")]
pub struct NotATime(String);

impl std::str::FromStr for Timestamp {
    type Err = NotATime;

    fn from_str(text: &str) -> Result<Self, NotATime> {
        humantime::parse_rfc3339_weak(text)
            .map(Timestamp::from)
            .map_err(|_| NotATime(text.chars().take(64).collect()))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_reads_any_rfc3339_time_and_writes_milliseconds() {
        let read = |text: &str| serde_json::from_str::<Timestamp>(text).unwrap();
        let whole = read(r#""2026-11-20T10:00:05Z""#);
        assert_eq!(whole.unix_millis(), 1_795_168_805_000);
        assert_eq!(whole.unix_seconds(), 1_795_168_805);
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            r#""2026-11-20T10:00:05.000Z""#
        );
        // Sub-millisecond digits are cut, as the agent writes its times.
        assert_eq!(
            read(r#""2026-11-20T10:00:05.123456Z""#).unix_millis(),
            1_795_168_805_123
        );
        for bad in [
            r#""yesterday""#,
            r#""""#,
            r#""1969-12-31T23:59:59Z""#,
            "5",
            "null",
        ] {
            assert!(
                serde_json::from_str::<Timestamp>(bad).is_err(),
                "{bad} is no time"
            );
        }
    }

    #[test]
    fn every_timestamp_writes_as_a_time_that_reads_back() {
        let last = Timestamp::from_unix_millis(END_OF_RFC3339_MILLIS - 1).unwrap();
        assert_eq!(last.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(last.to_string().parse::<Timestamp>().unwrap(), last);
        assert_eq!(Timestamp::from_unix_millis(END_OF_RFC3339_MILLIS), None);
        let epoch = Timestamp::from_unix_millis(0).unwrap();
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from(UNIX_EPOCH - Duration::from_secs(1)), epoch);
        assert_eq!(
            Timestamp::from(UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 100)),
            last
        );
    }
}
