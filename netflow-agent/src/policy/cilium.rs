//! CiliumNetworkPolicy (`cilium.io/v2`) as typed structs: the subset of the
//! CRD that netflow writes and evaluates. `generate::cilium` builds these,
//! `evaluate::cilium` decides what they allow, and a policy file that uses a
//! field outside the subset (`ingressDeny`, `toServices`, `fromCIDRSet`,
//! `enableDefaultDeny`, ...) is refused when read: its meaning would be
//! guessed, and a guess could report traffic as allowed that is not.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{LabelMap, labels_to_kubernetes};

pub const API_VERSION: &str = "cilium.io/v2";
pub const KIND: &str = "CiliumNetworkPolicy";

/// The label Cilium gives every endpoint for its namespace.
pub const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";

/// The entities a node's address belongs to (this node, other nodes).
pub const NODE_ENTITIES: [&str; 2] = ["host", "remote-node"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Rule>,
    /// More rules of the same policy (the CRD allows `spec` and `specs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<Vec<Rule>>,
}

impl CiliumNetworkPolicy {
    pub fn new(metadata: ObjectMeta, spec: Rule) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata,
            spec: Some(spec),
            specs: None,
        }
    }

    /// Every rule of the policy: `spec`, then `specs`.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.spec.iter().chain(self.specs.iter().flatten())
    }
}

/// One policy rule: which endpoints it selects and what they may do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub endpoint_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels of the rule itself (no effect on what it allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<serde_json::Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<String>>,
    #[serde(default, rename = "toFQDNs", skip_serializing_if = "Option::is_none")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FqdnSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// Ports (L4) and, optionally, what the proxy checks on them (L7).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    /// A number (as a string in the CRD) or the name of a container port.
    #[serde(deserialize_with = "number_or_string")]
    pub port: String,
    /// TCP, UDP, SCTP or ANY (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

/// L7 rules on a port: DNS (netflow writes it so Cilium's proxy sees the
/// answers `toFQDNs` needs; it does not change which connections are
/// allowed) and HTTP (which requests are: the rest are answered 403).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L7Rules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<FqdnSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRule>>,
}

/// One allowed kind of HTTP request: each field set must match (method and
/// path are extended regular expressions matched against the whole method
/// and path; an unset field matches anything).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Headers the request must carry (`Name` or `Name: value`); netflow
    /// does not see headers, so a rule with them matches no call it judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

/// `port: 53` and `port: '53'` both mean port 53.
fn number_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::Number(number) => number.to_string(),
        Raw::Text(text) => text,
    })
}

/// A selector of exactly these labels.
pub fn match_labels(labels: &LabelMap) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels_to_kubernetes(labels)),
        match_expressions: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_back_as_written() {
        let policy = CiliumNetworkPolicy::new(
            ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            Rule {
                endpoint_selector: LabelSelector::default(),
                egress: Some(vec![EgressRule {
                    to_fqdns: Some(vec![FqdnSelector {
                        match_name: Some("api.example".into()),
                        match_pattern: None,
                    }]),
                    to_ports: Some(vec![PortRule {
                        ports: Some(vec![PortProtocol {
                            port: "443".into(),
                            protocol: Some("TCP".into()),
                            end_port: None,
                        }]),
                        rules: None,
                    }]),
                    ..EgressRule::default()
                }]),
                ..Rule::default()
            },
        );
        let yaml = serde_norway::to_string(&policy).unwrap();
        assert!(yaml.contains("toFQDNs:"), "{yaml}");
        assert!(yaml.contains("endpointSelector: {}"), "{yaml}");
        let back: CiliumNetworkPolicy = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, policy);
    }

    #[test]
    fn fields_outside_the_subset_are_refused() {
        let err = serde_norway::from_str::<CiliumNetworkPolicy>(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {}\n  ingressDeny: [{fromEntities: [world]}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ingressDeny"), "{err}");
        let number: PortProtocol = serde_norway::from_str("{port: 53}").unwrap();
        assert_eq!(number.port, "53");
    }
}
