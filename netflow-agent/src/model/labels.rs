//! Label maps: a pod's labels, a selector's `matchLabels`, an endpoint's
//! selector labels.
//!
//! Held as one sorted list rather than a `BTreeMap`: a map holds a few
//! labels, and a `BTreeMap` node is ~540 bytes even for one. At 20 000 pods
//! and 10 000 workloads the inventory's and the graph's label maps were a
//! third of the daemon's memory (docs/performance.md). Iteration is in key
//! order, as with a `BTreeMap`, so files and policies come out the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A label map, in key order.
pub type LabelMap = litemap::LiteMap<String, String>;

/// A Kubernetes object's label map (`metadata.labels`, a `matchLabels`, a
/// Service's selector), as netflow holds it.
pub fn labels_from_kubernetes(labels: Option<&BTreeMap<String, String>>) -> LabelMap {
    labels
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Labels as Kubernetes' types hold them.
pub fn labels_to_kubernetes(labels: &LabelMap) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Reads labels from a map only, as a `BTreeMap` field did: litemap's own
/// reader also takes a list of pairs, which no file netflow reads holds.
pub fn deserialize_labels<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<LabelMap, D::Error> {
    BTreeMap::<String, String>::deserialize(deserializer).map(|labels| labels.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_any_order_and_keeps_key_order_as_a_btree_map_did() {
        let read: LabelMap =
            serde_json::from_str(r#"{"tier":"web","app":"shop","b":"1","app":"cart"}"#).unwrap();
        let keys: Vec<&str> = read.keys().map(String::as_str).collect();
        assert_eq!(keys, ["app", "b", "tier"], "sorted, each key once");
        assert_eq!(
            read.get("app").map(String::as_str),
            Some("cart"),
            "the last value of a repeated key, as serde's BTreeMap"
        );
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"app":"cart","b":"1","tier":"web"}"#
        );
        let same: LabelMap =
            serde_json::from_str(r#"{"b":"1","tier":"web","app":"cart"}"#).unwrap();
        assert_eq!(read, same, "equal whatever order they were read in");
        let built = LabelMap::from_iter([
            ("tier".to_string(), "web".to_string()),
            ("app".to_string(), "cart".to_string()),
            ("b".to_string(), "1".to_string()),
        ]);
        assert_eq!(built, same);
    }

    #[test]
    fn an_endpoints_labels_are_a_map_and_nothing_else() {
        let endpoint = |labels: &str| {
            serde_json::from_str::<crate::model::Endpoint>(&format!(
                r#"{{"id":"shop/Deployment/web","kind":"workload","name":"web","labels":{labels}}}"#
            ))
        };
        let read = endpoint(r#"{"app":"web"}"#).unwrap();
        assert_eq!(read.labels.get("app").map(String::as_str), Some("web"));
        assert!(
            endpoint(r#"[["app","web"]]"#).is_err(),
            "a list of pairs is no label map"
        );
    }
}
