//! The cluster-wide tiers: which Admin or Baseline policy rule decides a
//! connection for a pod, if any. Within a tier, policies are checked by
//! priority (lower first) and each policy's rules in order; the first rule
//! whose peer and port match decides.

use super::{
    Direction, End, Question,
    kubernetes::{cidr_contains, matches, namespace_labels},
};
use crate::{
    inventory::{Inventory, PodEntry},
    policy::cluster_wide::{
        Action, NamespacedPod, Subject, Tier, TierPeer, TierPort, TieredPolicy,
    },
};

/// The deciding rule's action and `kind name/rule` for the reason.
pub(super) fn decide(
    policies: &[TieredPolicy],
    tier: Tier,
    inventory: &Inventory,
    question: &Question<'_>,
) -> Option<(Action, String)> {
    let Question {
        pod,
        direction,
        peer,
        port,
        protocol,
        port_owner,
        ..
    } = *question;
    let mut selecting: Vec<&TieredPolicy> = policies
        .iter()
        .filter(|policy| policy.tier == tier && subject_selects(&policy.subject, inventory, pod))
        .collect();
    selecting.sort_by_key(|policy| policy.priority);
    for policy in selecting {
        let rules = match direction {
            Direction::Ingress => &policy.ingress,
            Direction::Egress => &policy.egress,
        };
        for (index, rule) in rules.iter().enumerate() {
            let peer_ok = rule
                .peers
                .iter()
                .any(|candidate| peer_matches(candidate, inventory, peer));
            let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                ports
                    .iter()
                    .any(|entry| port_matches(entry, port, protocol, port_owner))
            });
            if peer_ok && port_ok {
                let rule_name = if rule.name.is_empty() {
                    format!("rule {index}")
                } else {
                    rule.name.clone()
                };
                return Some((
                    rule.action,
                    format!("{} {}/{rule_name}", policy.kind, policy.name),
                ));
            }
        }
    }
    None
}

/// Host-network pods are never subjects nor pod peers: their traffic is the
/// node's.
fn subject_selects(subject: &Subject, inventory: &Inventory, pod: &PodEntry) -> bool {
    if pod.host_network {
        return false;
    }
    match (&subject.namespaces, &subject.pods) {
        (Some(namespaces), None) => {
            matches(namespaces, &namespace_labels(inventory, &pod.namespace))
        }
        (None, Some(pods)) => namespaced_pod_matches(pods, inventory, pod),
        // Not one field: the CRD refuses it; select nothing.
        _ => false,
    }
}

fn namespaced_pod_matches(selector: &NamespacedPod, inventory: &Inventory, pod: &PodEntry) -> bool {
    matches(
        &selector.namespace_selector,
        &namespace_labels(inventory, &pod.namespace),
    ) && matches(&selector.pod_selector, &pod.labels)
}

fn peer_matches(peer: &TierPeer, inventory: &Inventory, end: End<'_>) -> bool {
    match (peer, end) {
        (TierPeer::Networks(cidrs), end) => end
            .ip()
            .is_some_and(|ip| cidrs.iter().any(|cidr| cidr_contains(cidr, ip))),
        (TierPeer::Namespaces(selector), End::Pod(pod)) => {
            !pod.host_network && matches(selector, &namespace_labels(inventory, &pod.namespace))
        }
        (TierPeer::Pods(selector), End::Pod(pod)) => {
            !pod.host_network && namespaced_pod_matches(selector, inventory, pod)
        }
        (TierPeer::Namespaces(_) | TierPeer::Pods(_), End::Address(_)) => false,
    }
}

fn port_matches(entry: &TierPort, port: u16, protocol: &str, owner: Option<&PodEntry>) -> bool {
    match entry {
        TierPort::Range {
            protocol: wanted,
            start,
            end,
        } => wanted.eq_ignore_ascii_case(protocol) && (*start..=*end).contains(&i32::from(port)),
        TierPort::Named(name) => owner
            .and_then(|pod| pod.named_port(name, Some(protocol)))
            .is_some_and(|number| number == port),
    }
}
