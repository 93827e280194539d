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

/// Within a month of its first day (what a week's audit and a month's
/// window hold), a set is that day and a bit for each of the [`SPAN`] days
/// after it: 16 bytes in every edge, where a list of days inline took 24.
/// A set that reaches further, or gains a day before its first (a merge of
/// graphs), holds all its days in a list of their own.
#[derive(Clone, Debug, Default)]
pub struct Days {
    /// The first day's number plus one; 0 when there are no days (or when
    /// `listed` holds them).
    first_plus_one: u32,
    /// Bit `i`: the day `first + 1 + i` is in the set.
    after_first: u32,
    /// Every day, ascending, once the set left the span of its first day.
    // The box keeps an unused list to one pointer in every edge.
    #[allow(clippy::box_collection)]
    listed: Option<Box<Vec<u32>>>,
}

/// How many days after its first a set holds in bits.
const SPAN: u32 = u32::BITS;

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
        if let Some(listed) = &mut self.listed {
            if let Err(at) = listed.binary_search(&day) {
                listed.insert(at, day);
            }
            return;
        }
        let Some(first) = self.first_plus_one.checked_sub(1) else {
            match day.checked_add(1) {
                Some(first_plus_one) => self.first_plus_one = first_plus_one,
                None => self.listed = Some(Box::new(vec![day])),
            }
            return;
        };
        match day.checked_sub(first) {
            Some(0) => {}
            Some(offset) if offset <= SPAN => self.after_first |= 1 << (offset - 1),
            // Before the first day, or beyond the bits: the days are laid
            // out again from the earliest, in bits while they still fit.
            _ => {
                let mut days: Vec<u32> = self.iter().collect();
                days.push(day);
                days.sort_unstable();
                let (earliest, latest) = (days[0], days[days.len() - 1]);
                *self = Days::default();
                if latest - earliest <= SPAN && latest < u32::MAX {
                    days.into_iter().for_each(|day| self.insert(day));
                } else {
                    self.listed = Some(Box::new(days));
                }
            }
        }
    }

    /// The day numbers (days since the Unix epoch), earliest first.
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let listed = self.listed.as_deref().into_iter().flatten().copied();
        let first = self.first_plus_one.checked_sub(1);
        let mut bits = self.after_first;
        let after = std::iter::from_fn(move || {
            let first = first?;
            let bit = (bits != 0).then(|| bits.trailing_zeros())?;
            bits &= bits - 1;
            Some(first + 1 + bit)
        });
        listed.chain(first).chain(after)
    }

    /// Adds every day of `other`.
    pub fn extend(&mut self, other: &Days) {
        // Two sets from the same first day (every record of an edge on the
        // day it was first seen): their bits.
        if self.listed.is_none()
            && other.listed.is_none()
            && self.first_plus_one == other.first_plus_one
        {
            self.after_first |= other.after_first;
            return;
        }
        for day in other.iter() {
            self.insert(day);
        }
    }

    pub fn len(&self) -> usize {
        match &self.listed {
            Some(listed) => listed.len(),
            None => usize::from(self.first_plus_one != 0) + self.after_first.count_ones() as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The day numbers (days since the Unix epoch), earliest first; a
    /// week's without an allocation.
    pub(super) fn numbers(&self) -> SmallVec<[u32; 8]> {
        self.iter().collect()
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
        self.iter()
            .map(|day| utc_day(u64::from(day) * SECONDS_PER_DAY))
    }
}

/// The same days, however each set holds them.
impl PartialEq for Days {
    fn eq(&self, other: &Days) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Days {}

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
        assert_eq!(days.numbers().as_slice(), &[1, 5, 9]);
        let read: Days =
            serde_json::from_str(r#"["1970-01-10","1970-01-02","1970-01-10"]"#).unwrap();
        assert_eq!(read.numbers().as_slice(), &[1, 9]);
    }

    #[test]
    fn days_beyond_the_bits_or_before_the_first_are_kept() {
        // Inserted in every order the graph meets them: a day, the month
        // after it, the day before it (a merge), the edge of the bits.
        let cases: [&[u32]; 5] = [
            &[100, 101, 107, 132],
            &[100, 133],
            &[100, 99, 131],
            &[100, 50, 100, 400, 51],
            &[LAST_DAY, 0, u32::MAX - 1, u32::MAX],
        ];
        for case in cases {
            let mut expected = case.to_vec();
            expected.sort_unstable();
            expected.dedup();
            let mut days = Days::default();
            for &day in case {
                days.insert(day);
            }
            assert_eq!(days.numbers().as_slice(), expected, "{case:?}");
            assert_eq!(days.len(), expected.len(), "{case:?}");
            let mut reversed = Days::default();
            for &day in case.iter().rev() {
                reversed.insert(day);
            }
            assert_eq!(reversed, days, "{case:?} inserted backwards");
        }
        let mut within = Days::default();
        [100, 99, 131]
            .into_iter()
            .for_each(|day| within.insert(day));
        assert!(
            within.listed.is_none(),
            "33 days from the first fit the bits"
        );
        assert_ne!(within, Days::from_numbers([99, 131]).unwrap());
        // Merged from a set with the same first day, and from an empty one.
        let mut merged = Days::from_numbers([99, 100]).unwrap();
        merged.extend(&Days::from_numbers([99, 131]).unwrap());
        merged.extend(&Days::default());
        assert_eq!(merged, within);
        let mut from_empty = Days::default();
        from_empty.extend(&within);
        assert_eq!(from_empty.numbers().as_slice(), &[99, 100, 131]);
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
