//! One YAML document of a policy file, read in one pass where it can be.
//!
//! A NetworkPolicy whose `apiVersion` and `kind` come before its `metadata`
//! and `spec` (as in every file netflow generates and every object kubectl
//! writes) is read straight into its typed form: a generated set holds
//! millions of peers, and building each document as a YAML value first,
//! then converting it, was most of reading it. Any other document (another
//! kind, a `List`, a policy whose kind comes last) is read as a YAML value
//! and judged as before.

use std::cell::Cell;

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicySpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_norway::{Mapping, Value};

const API_VERSION: &str = "networking.k8s.io/v1";
const KIND: &str = "NetworkPolicy";

/// A document as read.
pub enum Document {
    NetworkPolicy(Box<NetworkPolicy>),
    Value(Value),
}

/// Reads a [`Document`]. `typed` is set while a NetworkPolicy's own fields
/// are being read, so that an error then is the policy's (its schema),
/// not the file's.
pub struct DocumentSeed<'s> {
    pub typed: &'s Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(DocumentVisitor { typed: self.typed })
    }
}

struct DocumentVisitor<'s> {
    typed: &'s Cell<bool>,
}

fn is_network_policy(entries: &Mapping) -> bool {
    entries.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
        && entries.get("kind").and_then(Value::as_str) == Some(KIND)
}

impl DocumentVisitor<'_> {
    /// A typed field's value, with `typed` set while it is read.
    fn typed_value<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(
        &self,
        map: &mut A,
    ) -> Result<T, A::Error> {
        self.typed.set(true);
        let value = map.next_value()?;
        self.typed.set(false);
        Ok(value)
    }

    /// A field of the policy that came before its kind, converted now.
    fn converted_entry<T: serde::de::DeserializeOwned, E: de::Error>(
        &self,
        entries: &mut Mapping,
        field: &str,
    ) -> Result<Option<T>, E> {
        match entries.remove(field) {
            None => Ok(None),
            Some(value) => {
                self.typed.set(true);
                let converted = serde_norway::from_value(value).map_err(E::custom)?;
                self.typed.set(false);
                Ok(converted)
            }
        }
    }
}

impl<'de> Visitor<'de> for DocumentVisitor<'_> {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut entries = Mapping::new();
        let mut metadata: Option<Option<ObjectMeta>> = None;
        let mut spec: Option<Option<NetworkPolicySpec>> = None;
        while let Some(key) = map.next_key::<Value>()? {
            let typed_field = match key.as_str() {
                Some("metadata") if metadata.is_none() => is_network_policy(&entries),
                Some("spec") if spec.is_none() => is_network_policy(&entries),
                _ => false,
            };
            if !typed_field {
                let value = map.next_value::<Value>()?;
                entries.insert(key, value);
            } else if key.as_str() == Some("metadata") {
                metadata = Some(self.typed_value(&mut map)?);
            } else {
                spec = Some(self.typed_value(&mut map)?);
            }
        }
        if metadata.is_none() && spec.is_none() {
            return Ok(Document::Value(Value::Mapping(entries)));
        }
        let metadata = match metadata {
            Some(metadata) => metadata,
            None => self.converted_entry(&mut entries, "metadata")?,
        };
        let spec = match spec {
            Some(spec) => spec,
            None => self.converted_entry(&mut entries, "spec")?,
        };
        Ok(Document::NetworkPolicy(Box::new(NetworkPolicy {
            metadata: metadata.unwrap_or_default(),
            spec,
        })))
    }

    // Any other document is a value, judged (and refused) as one.

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Value(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Value(Value::Null))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Document, E> {
        Ok(Document::Value(Value::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Document, E> {
        Ok(Document::Value(Value::Number(value.into())))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Document, E> {
        Ok(Document::Value(Value::Number(value.into())))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Document, E> {
        Ok(Document::Value(Value::Number(value.into())))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Document, E> {
        Ok(Document::Value(Value::String(value.to_string())))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Document, A::Error> {
        de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))
            .map(Document::Value)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Document, A::Error> {
        de::Deserialize::deserialize(de::value::EnumAccessDeserializer::new(data))
            .map(Document::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Document, (bool, String)> {
        let document = serde_norway::Deserializer::from_str(text).next().unwrap();
        let typed = Cell::new(false);
        DocumentSeed { typed: &typed }
            .deserialize(document)
            .map_err(|err| (typed.get(), err.to_string()))
    }

    /// The policy as the typed object reads the same text.
    fn as_typed(text: &str) -> NetworkPolicy {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn a_policy_reads_as_its_typed_object_whatever_its_field_order() {
        let fields = [
            "apiVersion: networking.k8s.io/v1",
            "kind: NetworkPolicy",
            "metadata: {name: web, namespace: shop, annotations: {note: x}}",
            "spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {}}]}]}",
            "status: {}",
        ];
        let orders: [[usize; 5]; 4] = [
            [0, 1, 2, 3, 4],
            [2, 3, 0, 1, 4],
            [1, 0, 3, 2, 4],
            [0, 2, 1, 4, 3],
        ];
        for order in orders {
            let text: String = order.iter().map(|&i| format!("{}\n", fields[i])).collect();
            match read(&text) {
                Ok(Document::NetworkPolicy(policy)) => {
                    assert_eq!(*policy, as_typed(&text), "{text}")
                }
                Ok(Document::Value(_)) if order[0] >= 2 => {}
                _ => panic!("not read as a policy:\n{text}"),
            }
        }
        let without = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: null\n";
        let Ok(Document::NetworkPolicy(policy)) = read(without) else {
            panic!("a policy without metadata")
        };
        assert_eq!(*policy, as_typed(without));
    }

    #[test]
    fn other_documents_are_values() {
        for text in [
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec: {}\n",
            "kind: List\nitems: []\n",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec: {}\n",
            "just text",
            "[1, 2]",
            "",
            "!tagged {a: 1}",
        ] {
            let Ok(Document::Value(value)) = read(text) else {
                panic!("{text:?} is not read as a value")
            };
            let expected: Value = serde_norway::from_str(text).unwrap();
            assert_eq!(value, expected, "{text:?}");
        }
    }

    #[test]
    fn a_policy_that_does_not_fit_its_schema_says_so() {
        for text in [
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: {podSelector: 7}\n",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: [1]\n",
            "apiVersion: networking.k8s.io/v1\nmetadata: [1]\nkind: NetworkPolicy\nspec: {}\n",
        ] {
            let Err((typed, message)) = read(text) else {
                panic!("{text:?} was read")
            };
            assert!(typed, "{text:?}: {message}");
        }
    }
}
