//! One YAML document of a policy file, read in one pass where it can be.
//!
//! A NetworkPolicy whose `apiVersion` and `kind` come before its `metadata`
//! and `spec` (as in every file netflow generates and every object kubectl
//! writes) is read straight into its typed form: a generated set holds
//! millions of peers, and building each document as a YAML value first,
//! then converting it, was most of reading it. Any other document (another
//! kind, a `List`, a policy whose kind comes last) is read as a YAML value
//! and judged as before.

use std::{cell::Cell, marker::PhantomData};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicySpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_norway::{Mapping, Value};

use super::{
    network_policy::{CompiledNetworkPolicy, SpecParts},
    selector::{OptionSeed, SelectorInterner},
    spec_reader::SpecSeed,
};

const API_VERSION: &str = "networking.k8s.io/v1";
const KIND: &str = "NetworkPolicy";

/// A document as read.
pub enum Document {
    NetworkPolicy(Box<NetworkPolicy>),
    /// A NetworkPolicy read straight into what the evaluator holds (when
    /// its typed object is not kept, and its spec came after its kind).
    Compiled(Box<CompiledNetworkPolicy>),
    Value(Value),
}

/// Reads a [`Document`]. `typed` is set while a NetworkPolicy's own fields
/// are being read, so that an error then is the policy's (its schema),
/// not the file's. With `compile`, a NetworkPolicy's spec is read straight
/// into its compiled parts, its selectors interned there.
pub struct DocumentSeed<'s> {
    pub typed: &'s Cell<bool>,
    pub compile: Option<&'s mut SelectorInterner>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(DocumentVisitor {
            typed: self.typed,
            compile: self.compile,
        })
    }
}

struct DocumentVisitor<'s> {
    typed: &'s Cell<bool>,
    compile: Option<&'s mut SelectorInterner>,
}

fn is_network_policy(entries: &Mapping) -> bool {
    entries.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
        && entries.get("kind").and_then(Value::as_str) == Some(KIND)
}

/// A typed field's value, read by `seed`, with `typed` set while it is read.
fn typed_value<'de, S: DeserializeSeed<'de>, A: MapAccess<'de>>(
    typed: &Cell<bool>,
    map: &mut A,
    seed: S,
) -> Result<S::Value, A::Error> {
    typed.set(true);
    let value = map.next_value_seed(seed)?;
    typed.set(false);
    Ok(value)
}

/// A field of the policy that came before its kind, converted now.
fn converted_entry<T: serde::de::DeserializeOwned, E: de::Error>(
    typed: &Cell<bool>,
    entries: &mut Mapping,
    field: &str,
) -> Result<Option<T>, E> {
    match entries.remove(field) {
        None => Ok(None),
        Some(value) => {
            typed.set(true);
            let converted = serde_norway::from_value(value).map_err(E::custom)?;
            typed.set(false);
            Ok(converted)
        }
    }
}

impl<'de> Visitor<'de> for DocumentVisitor<'_> {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let DocumentVisitor { typed, mut compile } = self;
        let mut entries = Mapping::new();
        let mut metadata: Option<Option<ObjectMeta>> = None;
        let mut spec: Option<Option<NetworkPolicySpec>> = None;
        let mut spec_parts: Option<Option<SpecParts>> = None;
        while let Some(key) = map.next_key::<Value>()? {
            let typed_field = match key.as_str() {
                Some("metadata") if metadata.is_none() => is_network_policy(&entries),
                Some("spec") if spec.is_none() && spec_parts.is_none() => {
                    is_network_policy(&entries)
                }
                _ => false,
            };
            if !typed_field {
                let value = map.next_value::<Value>()?;
                entries.insert(key, value);
            } else if key.as_str() == Some("metadata") {
                metadata = Some(typed_value(typed, &mut map, PhantomData)?);
            } else if let Some(selectors) = compile.as_deref_mut() {
                let seed = OptionSeed(SpecSeed { selectors });
                spec_parts = Some(typed_value(typed, &mut map, seed)?);
            } else {
                spec = Some(typed_value(typed, &mut map, PhantomData)?);
            }
        }
        if metadata.is_none() && spec.is_none() && spec_parts.is_none() {
            return Ok(Document::Value(Value::Mapping(entries)));
        }
        let metadata: ObjectMeta = match metadata {
            Some(metadata) => metadata,
            None => converted_entry(typed, &mut entries, "metadata")?,
        }
        .unwrap_or_default();
        if let Some(parts) = spec_parts {
            return Ok(Document::Compiled(Box::new(
                CompiledNetworkPolicy::from_parts(metadata.namespace, metadata.name, parts),
            )));
        }
        let spec = match spec {
            Some(spec) => spec,
            None => converted_entry(typed, &mut entries, "spec")?,
        };
        Ok(Document::NetworkPolicy(Box::new(NetworkPolicy {
            metadata,
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
        DocumentSeed {
            typed: &typed,
            compile: None,
        }
        .deserialize(document)
        .map_err(|err| (typed.get(), err.to_string()))
    }

    /// The policy of `text` read straight into its compiled form, or the
    /// error and whether it was the policy's own.
    fn compiled(text: &str) -> Result<CompiledNetworkPolicy, (bool, String)> {
        let document = serde_norway::Deserializer::from_str(text).next().unwrap();
        let typed = Cell::new(false);
        let mut selectors = SelectorInterner::default();
        let read = DocumentSeed {
            typed: &typed,
            compile: Some(&mut selectors),
        }
        .deserialize(document);
        match read {
            Ok(Document::Compiled(policy)) => Ok(*policy),
            Ok(_) => panic!("not read straight into a compiled policy:\n{text}"),
            Err(err) => Err((typed.get(), err.to_string())),
        }
    }

    /// What the evaluator holds, shown whole (peer indexes aside: their
    /// maps show in no fixed order).
    fn shown(mut policy: CompiledNetworkPolicy) -> String {
        policy.unindexed();
        format!("{policy:?}")
    }

    /// Read straight or through the typed object, a spec compiles to the
    /// same policy; what the typed object refuses is refused.
    #[test]
    fn a_spec_read_straight_is_the_typed_spec_compiled() {
        let many: Vec<String> = (0..10)
            .map(|n| format!("{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: ns{n}}}}}, podSelector: {{matchLabels: {{app: a{n}, tier: t}}}}}}"))
            .collect();
        let many = format!(
            "{{podSelector: {{}}, ingress: [{{from: [{}], ports: [{{port: 80}}]}}]}}",
            many.join(", ")
        );
        let specs = [
            "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {}}]}]}",
            "{podSelector: {matchLabels: {tier: front, app: web}, matchExpressions: [{key: zone, operator: In, values: [a, b]}, {key: x, operator: Exists}]}, policyTypes: [Ingress, Egress], ingress: [{from: [{namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: api}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80}, {port: http, protocol: TCP}, {port: 5000, endPort: 5010, protocol: UDP}, {protocol: SCTP}]}], egress: [{to: [{namespaceSelector: {}}], ports: [{port: 53, protocol: UDP}]}, {}]}",
            "{podSelector: {matchLabels: {b: '1', a: '2'}}}",
            "{podSelector: {matchLabels: {a: '1', b: '2', a: '3'}}}",
            "{podSelector: {matchLabels: {app: 123, on: true, version: 1.5}}}",
            "{podSelector: {matchLabels: {app: ~}}}",
            "{podSelector: {matchLabels: {app: web}}, ingress: [], egress: []}",
            "{podSelector: {}, ingress: [{from: [], ports: []}], egress: [{to: null, ports: null}]}",
            "{podSelector: null, ingress: null, egress: null, policyTypes: null}",
            "{podSelector: {matchLabels: null, matchExpressions: null}}",
            "{podSelector: {}, policyTypes: []}",
            "{podSelector: {}, extra: 1, ingress: [{from: [{podSelector: {}, extra: [1]}], to: [{podSelector: {matchLabels: {a: b}}}]}], egress: [{from: [{podSelector: {}}]}]}",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24}, podSelector: {matchLabels: {app: x}}}]}]}",
            "{podSelector: {matchLabels: {app: web}, matchLabels: {app: api}}}",
            "{podSelector: {matchExpressions: [{key: a, operator: Gt, values: ['1']}]}}",
            &many,
            // What the typed object refuses:
            "{podSelector: 7}",
            "{podSelector: [a]}",
            "{podSelector: {}, ingress: {a: 1}}",
            "{podSelector: {}, ingress: [{from: [7]}]}",
            "{podSelector: {}, ingress: [7]}",
            "{podSelector: {matchLabels: [a]}}",
            "{podSelector: {matchLabels: {a: [1]}}}",
            "{podSelector: {matchLabels: {a: {b: c}}}}",
            "{podSelector: {}, ingress: [{ports: [{port: [1]}]}]}",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {}}]}]}",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: [1]}}]}]}",
            "{podSelector: {}, policyTypes: 7}",
            "{podSelector: {matchExpressions: [{key: a}]}}",
            "{podSelector: {matchExpressions: [{operator: Exists}]}}",
        ];
        for spec in specs {
            for metadata in ["metadata: {name: p, namespace: shop}\n", ""] {
                let text = format!(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{metadata}spec: {spec}\n"
                );
                let typed_read: Result<NetworkPolicy, _> = serde_norway::from_str(&text);
                match (typed_read, compiled(&text)) {
                    (Ok(policy), Ok(straight)) => {
                        let mut selectors = SelectorInterner::default();
                        let through_typed = CompiledNetworkPolicy::compile(&policy, &mut selectors);
                        assert_eq!(shown(straight), shown(through_typed), "{text}");
                    }
                    (Err(_), Err((typed, _))) => assert!(typed, "{text}"),
                    (typed, straight) => panic!(
                        "{text}: the typed object read {:?}, straight {:?}",
                        typed.map(|_| ()),
                        straight.map(|_| ())
                    ),
                }
            }
        }
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
