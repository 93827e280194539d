//! `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy: one resource
//! for both cluster-wide tiers (`tier: Admin | Baseline`), actions `Accept`,
//! `Deny`, `Pass`. The standard channel's fields only; the experimental
//! `nodes` and `domainNames` peers are refused when read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{Peer, RuleParts, Subject, Tier, TierPort, TieredPolicy, tier_rules};

pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
pub const KIND: &str = "ClusterNetworkPolicy";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: Spec,
    /// Written by the implementation; never read.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// `Admin` or `Baseline`.
    pub tier: String,
    /// 0..=1000; lower is checked first.
    pub priority: i32,
    pub subject: Subject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
}

/// An ingress (`from`) or egress (`to`) rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `Accept`, `Deny` or `Pass`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<Protocol>>,
}

/// Exactly one field set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Protocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolPorts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// `number` or `range`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: i32,
    pub end: i32,
}

impl ClusterNetworkPolicy {
    pub fn new(metadata: ObjectMeta, spec: Spec) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata,
            spec,
            status: None,
        }
    }

    /// The policy in the form the evaluator reads; `Err` names what is
    /// outside the subset netflow can judge.
    pub fn tiered(&self) -> Result<TieredPolicy, String> {
        let tier = match self.spec.tier.as_str() {
            "Admin" => Tier::Admin,
            "Baseline" => Tier::Baseline,
            other => return Err(format!("tier {other:?} (expected Admin or Baseline)")),
        };
        let actions = ["Accept", "Deny", "Pass"];
        Ok(TieredPolicy {
            kind: KIND,
            name: self.metadata.name.clone().unwrap_or_default(),
            tier,
            priority: self.spec.priority,
            subject: self.spec.subject.clone(),
            ingress: tier_rules(&self.spec.ingress, true, &actions)?,
            egress: tier_rules(&self.spec.egress, false, &actions)?,
        })
    }
}

impl RuleParts for Rule {
    fn name(&self) -> &str {
        &self.name
    }

    fn action(&self) -> &str {
        &self.action
    }

    fn peers(&self, ingress: bool) -> Option<&Vec<Peer>> {
        if ingress {
            self.from.as_ref()
        } else {
            self.to.as_ref()
        }
    }

    fn ports(&self) -> Result<Option<Vec<TierPort>>, String> {
        self.protocols
            .as_ref()
            .map(|protocols| protocols.iter().map(Protocol::tiered).collect())
            .transpose()
    }
}

impl Protocol {
    fn tiered(&self) -> Result<TierPort, String> {
        let by_protocol = [("TCP", &self.tcp), ("UDP", &self.udp), ("SCTP", &self.sctp)];
        let mut set = by_protocol
            .iter()
            .filter_map(|(name, ports)| ports.as_ref().map(|ports| (*name, ports)));
        match (set.next(), set.next(), &self.destination_named_port) {
            (Some((protocol, ports)), None, None) => {
                let port = ports.destination_port.as_ref();
                match (
                    port.and_then(|p| p.number),
                    port.and_then(|p| p.range.as_ref()),
                ) {
                    (Some(number), None) => Ok(TierPort::Range {
                        protocol: protocol.into(),
                        start: number,
                        end: number,
                    }),
                    (None, Some(range)) => Ok(TierPort::Range {
                        protocol: protocol.into(),
                        start: range.start,
                        end: range.end,
                    }),
                    (None, None) => Ok(TierPort::Range {
                        protocol: protocol.into(),
                        start: 1,
                        end: 65535,
                    }),
                    _ => Err("a destinationPort sets number or range, not both".into()),
                }
            }
            (None, None, Some(name)) => Ok(TierPort::Named(name.clone())),
            _ => Err(
                "a protocols entry must set exactly one of tcp, udp, sctp, destinationNamedPort"
                    .into(),
            ),
        }
    }
}
