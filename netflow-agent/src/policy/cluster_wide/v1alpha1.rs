//! `policy.networking.k8s.io/v1alpha1` AdminNetworkPolicy (Admin tier:
//! `Allow`, `Deny`, `Pass`) and BaselineAdminNetworkPolicy (Baseline tier,
//! one per cluster named `default`: `Allow`, `Deny`), for platforms that
//! ship these (OpenShift). The standard channel's fields only; the
//! experimental `nodes` and `domainNames` peers are refused when read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{Peer, RuleParts, Subject, Tier, TierPort, TieredPolicy, tier_rules};

pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha1";
pub const ADMIN_KIND: &str = "AdminNetworkPolicy";
pub const BASELINE_KIND: &str = "BaselineAdminNetworkPolicy";
/// The only name the API accepts for the BaselineAdminNetworkPolicy.
pub const BASELINE_NAME: &str = "default";

/// Either kind: a BaselineAdminNetworkPolicy has no `priority`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicy {
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
    /// AdminNetworkPolicy only: 0..=1000, lower is checked first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    pub subject: Subject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
}

/// Exactly one field set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<PortNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortNumber {
    pub protocol: String,
    pub port: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    /// TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub start: i32,
    pub end: i32,
}

impl AdminNetworkPolicy {
    pub fn admin(metadata: ObjectMeta, spec: Spec) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: ADMIN_KIND.into(),
            metadata,
            spec,
            status: None,
        }
    }

    pub fn baseline(metadata: ObjectMeta, spec: Spec) -> Self {
        Self {
            kind: BASELINE_KIND.into(),
            ..Self::admin(metadata, spec)
        }
    }

    /// The policy in the form the evaluator reads; `Err` names what is
    /// outside the subset netflow can judge.
    pub fn tiered(&self) -> Result<TieredPolicy, String> {
        let (kind, tier, actions): (&'static str, Tier, &[&str]) = match self.kind.as_str() {
            ADMIN_KIND => (ADMIN_KIND, Tier::Admin, &["Allow", "Deny", "Pass"]),
            BASELINE_KIND => (BASELINE_KIND, Tier::Baseline, &["Allow", "Deny"]),
            other => return Err(format!("kind {other}")),
        };
        Ok(TieredPolicy {
            kind,
            name: self.metadata.name.clone().unwrap_or_default(),
            tier,
            priority: self.spec.priority.unwrap_or_default(),
            subject: self.spec.subject.clone(),
            ingress: tier_rules(&self.spec.ingress, true, actions)?,
            egress: tier_rules(&self.spec.egress, false, actions)?,
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
        self.ports
            .as_ref()
            .map(|ports| ports.iter().map(Port::tiered).collect())
            .transpose()
    }
}

impl Port {
    fn tiered(&self) -> Result<TierPort, String> {
        match (&self.port_number, &self.named_port, &self.port_range) {
            (Some(number), None, None) => Ok(TierPort::Range {
                protocol: number.protocol.clone(),
                start: number.port,
                end: number.port,
            }),
            (None, Some(name), None) => Ok(TierPort::Named(name.clone())),
            (None, None, Some(range)) => Ok(TierPort::Range {
                protocol: range.protocol.clone().unwrap_or_else(|| "TCP".into()),
                start: range.start,
                end: range.end,
            }),
            _ => {
                Err("a ports entry must set exactly one of portNumber, namedPort, portRange".into())
            }
        }
    }
}
