//! The UTC days an edge carried traffic on.
//!
//! Kept as day numbers (days since the Unix epoch), sorted: a week of days
//! fits in the value itself, where a set of date strings cost an allocation
//! of some 300 bytes per edge. Written and read as `YYYY-MM-DD` strings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use smallvec::SmallVec;

use crate::model::utc_day;

const SECONDS_PER_DAY: u64 = 86_400;
/// 9999-12-31, the last day RFC 3339 can write.
const LAST_DAY: u32 = 2_932_896;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Days(SmallVec<[u32; 4]>);

impl Days {
    /// The days from `first` to `last` (Unix seconds) touch: one or two
    /// (an observation spans one poll interval, never more than a day).
    pub fn of_span(first: u64, last: u64) -> Self {
        let mut days = Days::default();
        days.insert(day_number(first));
        days.insert(day_number(last));
        days
    }

    fn insert(&mut self, day: u32) {
        if let Err(at) = self.0.binary_search(&day) {
            self.0.insert(at, day);
        }
    }

    /// Adds every day of `other`.
    pub fn extend(&mut self, other: &Days) {
        for &day in &other.0 {
            self.insert(day);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The day numbers (days since the Unix epoch), earliest first.
    pub(super) fn numbers(&self) -> &[u32] {
        &self.0
    }

    /// The days numbered `days` (in any order, repeats once); `None` if one
    /// is past the year 9999, which no date can write.
    pub(super) fn from_numbers(numbers: impl IntoIterator<Item = u32>) -> Option<Self> {
        let mut days = Days::default();
        for day in numbers {
            if day > LAST_DAY {
                return None;
            }
            days.insert(day);
        }
        Some(days)
    }

    /// The days as `YYYY-MM-DD`, earliest first.
    pub fn dates(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .map(|&day| utc_day(u64::from(day) * SECONDS_PER_DAY))
    }
}

fn day_number(unix_seconds: u64) -> u32 {
    u32::try_from(unix_seconds / SECONDS_PER_DAY).unwrap_or(u32::MAX)
}

/// The day number of a `YYYY-MM-DD` date, if it is one.
fn parse_date(text: &str) -> Option<u32> {
    if text.len() != 10 {
        return None;
    }
    let midnight = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
    let seconds = midnight
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(day_number(seconds))
}

impl Serialize for Days {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.dates())
    }
}

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DatesVisitor;
        impl<'de> de::Visitor<'de> for DatesVisitor {
            type Value = Days;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a list of YYYY-MM-DD dates")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Days, A::Error> {
                let mut days = Days::default();
                while let Some(date) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    let day = parse_date(&date).ok_or_else(|| {
                        de::Error::invalid_value(de::Unexpected::Str(&date), &"a YYYY-MM-DD date")
                    })?;
                    days.insert(day);
                }
                Ok(days)
            }
        }
        deserializer.deserialize_seq(DatesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_written_and_read_as_dates() {
        // 2025-11-25T23:59:59Z and the next second: two days.
        let days = Days::of_span(1_764_115_199, 1_764_115_200);
        let json = serde_json::to_string(&days).unwrap();
        assert_eq!(json, r#"["2025-11-25","2025-11-26"]"#);
        assert_eq!(serde_json::from_str::<Days>(&json).unwrap(), days);
        assert_eq!(
            Days::of_span(0, 0).dates().collect::<Vec<_>>(),
            ["1970-01-01"]
        );
    }

    #[test]
    fn days_stay_sorted_and_unique() {
        let mut days = Days::of_span(5 * SECONDS_PER_DAY, 5 * SECONDS_PER_DAY);
        days.extend(&Days::of_span(SECONDS_PER_DAY, 9 * SECONDS_PER_DAY));
        days.extend(&Days::of_span(5 * SECONDS_PER_DAY, 5 * SECONDS_PER_DAY));
        assert_eq!(days.0.as_slice(), &[1, 5, 9]);
        let read: Days =
            serde_json::from_str(r#"["1970-01-10","1970-01-02","1970-01-10"]"#).unwrap();
        assert_eq!(read.0.as_slice(), &[1, 9]);
    }

    #[test]
    fn anything_but_a_date_is_refused() {
        for bad in [
            r#"["2025-13-01"]"#,
            r#"["2025-11-25T00:00:00Z"]"#,
            r#"["yesterday"]"#,
            r#"[20251125]"#,
            r#""2025-11-25""#,
        ] {
            assert!(serde_json::from_str::<Days>(bad).is_err(), "{bad}");
        }
    }
}
