//! The names a client resolved an external server by, on the edge to it.
//!
//! Only edges to external addresses have any: every other edge holds one
//! null pointer instead of an empty `BTreeSet` (24 bytes inline in each of a
//! graph's edges).

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
// The box is the point: 8 bytes in every edge, the set's 24 only in the few
// edges that have names.
#[allow(clippy::box_collection)]
pub struct EdgeNames(Option<Box<BTreeSet<String>>>);

impl EdgeNames {
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(BTreeSet::is_empty)
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.as_deref().into_iter().flatten()
    }

    /// Adds the names of `other` not held yet.
    pub fn absorb(&mut self, other: &EdgeNames) {
        for name in other.iter() {
            let held = self.0.get_or_insert_default();
            if !held.contains(name) {
                held.insert(name.clone());
            }
        }
    }
}

impl From<BTreeSet<String>> for EdgeNames {
    fn from(names: BTreeSet<String>) -> Self {
        EdgeNames((!names.is_empty()).then(|| Box::new(names)))
    }
}

impl Serialize for EdgeNames {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for EdgeNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeSet::deserialize(deserializer).map(EdgeNames::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_empty_and_names_merge_in_order() {
        let mut names = EdgeNames::default();
        assert!(names.is_empty());
        assert_eq!(EdgeNames::from(BTreeSet::new()), names, "no names, no set");
        names.absorb(&EdgeNames::from(BTreeSet::from(["b.example".to_string()])));
        names.absorb(&EdgeNames::from(BTreeSet::from([
            "a.example".to_string(),
            "b.example".to_string(),
        ])));
        assert_eq!(
            serde_json::to_string(&names).unwrap(),
            r#"["a.example","b.example"]"#
        );
        let read: EdgeNames = serde_json::from_str(r#"["b.example","a.example"]"#).unwrap();
        assert_eq!(read, names);
    }
}
