//! Label maps: a pod's labels, a selector's `matchLabels`, an endpoint's
//! selector labels.
//!
//! Held as one sorted list rather than a `BTreeMap`: a map holds a few
//! labels, and a `BTreeMap` node is ~540 bytes even for one. At 20 000 pods
//! and 10 000 workloads the inventory's and the graph's label maps were a
//! third of the daemon's memory (docs/performance.md). Iteration is in key
//! order, as with a `BTreeMap`, so files and policies come out the same.

/// A label map, in key order.
pub type LabelMap = litemap::LiteMap<String, String>;

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
}
