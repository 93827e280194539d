//! A NetworkPolicy's `spec` read straight into the parts the evaluator
//! compiles ([`SpecParts`]), its selectors interned as they are read.
//!
//! A generated set holds millions of peers: building each as a typed
//! k8s-openapi object (a `LabelSelector` is a `BTreeMap` and two strings
//! per label), only to compile and drop it, was a fifth of reading it.
//! The fields and their types are the typed object's: what it refuses is
//! refused here, and unknown fields are ignored as it ignores them
//! (`document`'s tests hold the two readings to each other).

use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPort};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};

use super::{
    network_policy::{Peer, Port, RuleParts, SpecParts},
    selector::{OptionSeed, SelectorInterner, SelectorSeed},
};

/// Reads a `NetworkPolicySpec`.
pub struct SpecSeed<'i> {
    pub selectors: &'i mut SelectorInterner,
}

impl<'de> DeserializeSeed<'de> for SpecSeed<'_> {
    type Value = SpecParts;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SpecParts, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SpecSeed<'_> {
    type Value = SpecParts;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a NetworkPolicySpec")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecParts, A::Error> {
        let selectors = self.selectors;
        let mut spec = SpecParts::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::PodSelector => {
                    spec.pod_selector = map.next_value_seed(OptionSeed(SelectorSeed {
                        selectors: &mut *selectors,
                    }))?;
                }
                Field::PolicyTypes => spec.policy_types = map.next_value()?,
                Field::Ingress | Field::Egress => {
                    let (side, peers) = match field {
                        Field::Ingress => (0, Field::From),
                        _ => (1, Field::To),
                    };
                    let rules = RulesSeed {
                        selectors: &mut *selectors,
                        peers,
                    };
                    spec.rules[side] = map.next_value_seed(OptionSeed(rules))?.unwrap_or_default();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(spec)
    }
}

/// Reads `ingress` or `egress`: rules whose peers are under `peers`
/// (`from` or `to`).
struct RulesSeed<'i> {
    selectors: &'i mut SelectorInterner,
    peers: Field,
}

impl<'de> DeserializeSeed<'de> for RulesSeed<'_> {
    type Value = Vec<RuleParts>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RulesSeed<'_> {
    type Value = Vec<RuleParts>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of rules")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rules = Vec::new();
        while let Some(rule) = seq.next_element_seed(RuleSeed {
            selectors: &mut *self.selectors,
            peers: self.peers,
        })? {
            rules.push(rule);
        }
        Ok(rules)
    }
}

struct RuleSeed<'i> {
    selectors: &'i mut SelectorInterner,
    peers: Field,
}

impl<'de> DeserializeSeed<'de> for RuleSeed<'_> {
    type Value = RuleParts;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RuleParts, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RuleSeed<'_> {
    type Value = RuleParts;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a NetworkPolicy rule")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RuleParts, A::Error> {
        let mut rule = RuleParts::default();
        while let Some(field) = map.next_key::<Field>()? {
            if field == self.peers {
                let peers = PeersSeed {
                    selectors: &mut *self.selectors,
                };
                rule.peers = map.next_value_seed(OptionSeed(peers))?;
            } else if field == Field::Ports {
                let ports: Option<Vec<NetworkPolicyPort>> = map.next_value()?;
                rule.ports = ports.map(|ports| ports.iter().map(Port::compile).collect());
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(rule)
    }
}

struct PeersSeed<'i> {
    selectors: &'i mut SelectorInterner,
}

impl<'de> DeserializeSeed<'de> for PeersSeed<'_> {
    type Value = Vec<Peer>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PeersSeed<'_> {
    type Value = Vec<Peer>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of peers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut peers = Vec::with_capacity(seq.size_hint().unwrap_or_default());
        while let Some(peer) = seq.next_element_seed(PeerSeed {
            selectors: &mut *self.selectors,
        })? {
            peers.push(peer);
        }
        Ok(peers)
    }
}

struct PeerSeed<'i> {
    selectors: &'i mut SelectorInterner,
}

impl<'de> DeserializeSeed<'de> for PeerSeed<'_> {
    type Value = Peer;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Peer, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PeerSeed<'_> {
    type Value = Peer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a NetworkPolicyPeer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Peer, A::Error> {
        let (mut namespaces, mut pods, mut block) = (None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            let selector = OptionSeed(SelectorSeed {
                selectors: &mut *self.selectors,
            });
            match field {
                Field::NamespaceSelector => namespaces = map.next_value_seed(selector)?,
                Field::PodSelector => pods = map.next_value_seed(selector)?,
                Field::IpBlock => block = map.next_value::<Option<IPBlock>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match block {
            Some(block) => Peer::addresses(block),
            None => Peer::Pods { namespaces, pods },
        })
    }
}

/// The fields of a spec, its rules, their peers and label selectors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    PodSelector,
    NamespaceSelector,
    IpBlock,
    PolicyTypes,
    Ingress,
    Egress,
    From,
    To,
    Ports,
    MatchLabels,
    MatchExpressions,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "podSelector" => Field::PodSelector,
                    "namespaceSelector" => Field::NamespaceSelector,
                    "ipBlock" => Field::IpBlock,
                    "policyTypes" => Field::PolicyTypes,
                    "ingress" => Field::Ingress,
                    "egress" => Field::Egress,
                    "from" => Field::From,
                    "to" => Field::To,
                    "ports" => Field::Ports,
                    "matchLabels" => Field::MatchLabels,
                    "matchExpressions" => Field::MatchExpressions,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}
