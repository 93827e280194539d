//! The cluster admin's layer: the network-policy-api resources
//! (`policy.networking.k8s.io`) that namespace owners cannot edit away.
//!
//! Two API versions, one meaning:
//! - `v1alpha2` ClusterNetworkPolicy, `tier: Admin` or `Baseline`;
//! - `v1alpha1` AdminNetworkPolicy (Admin tier) and
//!   BaselineAdminNetworkPolicy (Baseline tier), which OpenShift ships.
//!
//! Both read into [`TieredPolicy`], which `evaluate` judges by the API's
//! precedence: Admin tier (by priority, rules in order; Accept/Allow and
//! Deny are final, Pass goes on to NetworkPolicy), then NetworkPolicy (final
//! for the pods it selects), then Baseline tier, then allow.
//! `generate::baseline` writes them.

pub mod v1alpha1;
pub mod v1alpha2;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

/// The pods a cluster-wide policy applies to: exactly one field set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods matching `pod_selector` in namespaces matching `namespace_selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Admin,
    Baseline,
}

/// What a matching rule does: `Accept` (v1alpha1: `Allow`) and `Deny` end
/// the evaluation of the direction; `Pass` skips the rest of the tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

impl Action {
    fn parse(text: &str, allowed: &[&str]) -> Result<Self, String> {
        if !allowed.contains(&text) {
            return Err(format!(
                "action {text:?} (expected one of {})",
                allowed.join(", ")
            ));
        }
        Ok(match text {
            "Accept" | "Allow" => Action::Accept,
            "Deny" => Action::Deny,
            _ => Action::Pass,
        })
    }
}

/// A rule's peer, the same in both versions: exactly one field set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Egress only: CIDRs, pod IPs included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
}

impl Peer {
    fn tiered(&self) -> Result<TierPeer, String> {
        match (&self.namespaces, &self.pods, &self.networks) {
            (Some(namespaces), None, None) => Ok(TierPeer::Namespaces(namespaces.clone())),
            (None, Some(pods), None) => Ok(TierPeer::Pods(pods.clone())),
            (None, None, Some(networks)) => Ok(TierPeer::Networks(networks.clone())),
            _ => Err("a peer must set exactly one of namespaces, pods, networks".into()),
        }
    }
}

/// What both versions' rules have, for [`tier_rules`].
trait RuleParts {
    fn name(&self) -> &str;
    fn action(&self) -> &str;
    /// `from` for ingress, `to` for egress.
    fn peers(&self, ingress: bool) -> Option<&Vec<Peer>>;
    /// `None`: every port.
    fn ports(&self) -> Result<Option<Vec<TierPort>>, String>;
}

/// Either version's rules in the tiered form; `actions` are the version's
/// action names.
fn tier_rules<R: RuleParts>(
    rules: &[R],
    ingress: bool,
    actions: &[&str],
) -> Result<Vec<TierRule>, String> {
    rules
        .iter()
        .map(|rule| {
            Ok(TierRule {
                name: rule.name().to_string(),
                action: Action::parse(rule.action(), actions)?,
                peers: rule
                    .peers(ingress)
                    .into_iter()
                    .flatten()
                    .map(Peer::tiered)
                    .collect::<Result<_, _>>()?,
                ports: rule.ports()?,
            })
        })
        .collect()
}

/// A cluster-wide policy of either API version, as the evaluator reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct TieredPolicy {
    pub kind: &'static str,
    pub name: String,
    pub tier: Tier,
    pub priority: i32,
    pub subject: Subject,
    pub ingress: Vec<TierRule>,
    pub egress: Vec<TierRule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TierRule {
    pub name: String,
    pub action: Action,
    /// Any of them (the API requires at least one).
    pub peers: Vec<TierPeer>,
    /// `None`: every protocol and port.
    pub ports: Option<Vec<TierPort>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TierPeer {
    /// Every pod of the matching namespaces.
    Namespaces(LabelSelector),
    Pods(NamespacedPod),
    /// Addresses in the CIDRs, pod IPs included (egress only).
    Networks(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum TierPort {
    /// An inclusive range (one port: start == end) of `TCP`, `UDP`, `SCTP`.
    Range {
        protocol: String,
        start: i32,
        end: i32,
    },
    /// The destination pod's container port of that name, any protocol.
    Named(String),
}

/// A cluster-wide object as written: either API version.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ClusterWideObject {
    Cluster(v1alpha2::ClusterNetworkPolicy),
    Admin(v1alpha1::AdminNetworkPolicy),
}

impl ClusterWideObject {
    pub fn tiered(&self) -> Result<TieredPolicy, String> {
        match self {
            ClusterWideObject::Cluster(policy) => policy.tiered(),
            ClusterWideObject::Admin(policy) => policy.tiered(),
        }
    }
}
