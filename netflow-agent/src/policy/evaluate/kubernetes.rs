//! NetworkPolicy semantics: which policies isolate a pod, and whether one of
//! their rules allows a peer on a port.

use std::{borrow::Cow, net::IpAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    Direction, End,
    network_policy::{CompiledNetworkPolicy, Peer, Port, PortRef, Rule},
};
use crate::{
    inventory::{Inventory, NAMESPACE_NAME_LABEL, PodEntry},
    model::LabelMap,
};

/// The policies of `pod`'s namespace that select it for `direction`, out of
/// `policies` (the evaluator hands in those of the pod's namespace).
pub(super) fn selecting<'p>(
    policies: &[&'p CompiledNetworkPolicy],
    pod: &PodEntry,
    direction: Direction,
) -> Vec<&'p CompiledNetworkPolicy> {
    policies
        .iter()
        .copied()
        .filter(|policy| policy.namespace == *pod.namespace)
        .filter(|policy| policy.isolates(direction))
        .filter(|policy| {
            policy
                .pod_selector
                .as_ref()
                .is_none_or(|selector| selector.matches(&pod.labels))
        })
        .collect()
}

/// Whether a rule of `policy` for `direction` allows `peer` on `port`.
/// `port_owner` is the pod whose named ports name `port` (the server).
pub(super) fn allows(
    policy: &CompiledNetworkPolicy,
    inventory: &Inventory,
    direction: Direction,
    peer: End<'_>,
    port: u16,
    protocol: &str,
    port_owner: Option<&PodEntry>,
) -> bool {
    let peer_pod = match peer {
        End::Pod(pod) => Some(pod),
        End::Address(_) => None,
    };
    // Ports first: they are a few numbers to compare, and a generated
    // policy has a rule per port, each naming many peers.
    policy.rules(direction).iter().any(|rule| {
        rule_admits_port(rule, port, protocol, port_owner)
            && (rule.peers.is_none()
                || rule.any_candidate(peer_pod, |candidate| {
                    peer_matches(candidate, inventory, &policy.namespace, peer)
                }))
    })
}

/// Whether `rule` admits `port`/`protocol` (of `port_owner`, whose named
/// ports name it), whatever the peer.
pub(super) fn rule_admits_port(
    rule: &Rule,
    port: u16,
    protocol: &str,
    port_owner: Option<&PodEntry>,
) -> bool {
    rule.ports.as_deref().is_none_or(|ports| {
        ports
            .iter()
            .any(|p| port_matches(p, port, protocol, port_owner))
    })
}

fn peer_matches(peer: &Peer, inventory: &Inventory, policy_namespace: &str, end: End<'_>) -> bool {
    match peer {
        Peer::Addresses(block) => {
            let Some(ip) = end.ip() else { return false };
            cidr_contains(&block.cidr, ip)
                && !block.except.iter().any(|except| cidr_contains(except, ip))
        }
        Peer::Pods { namespaces, pods } => {
            let End::Pod(pod) = end else {
                // Selectors name pods only.
                return false;
            };
            let namespace_ok = match namespaces {
                None => &*pod.namespace == policy_namespace,
                Some(selector) => selector.matches(&namespace_labels(inventory, &pod.namespace)),
            };
            namespace_ok
                && pods
                    .as_ref()
                    .is_none_or(|selector| selector.matches(&pod.labels))
        }
    }
}

/// A namespace's labels as selectors see them: the API server gives every
/// namespace `kubernetes.io/metadata.name` (the inventory adds it to every
/// namespace it has), also to one the inventory has no object for.
pub(super) fn namespace_labels<'i>(inventory: &'i Inventory, namespace: &str) -> Cow<'i, LabelMap> {
    match inventory.namespaces.get(namespace) {
        Some(labels) => Cow::Borrowed(labels),
        None => Cow::Owned(LabelMap::from_iter([(
            NAMESPACE_NAME_LABEL.to_string(),
            namespace.to_string(),
        )])),
    }
}

/// Label selector semantics; an empty selector matches everything.
pub fn matches(selector: &LabelSelector, labels: &LabelMap) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_ok = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|requirement| {
            let values = requirement.values.as_deref().unwrap_or_default();
            let value = labels.get(&requirement.key);
            match requirement.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
    labels_ok && expressions_ok
}

fn port_matches(rule: &Port, port: u16, protocol: &str, owner: Option<&PodEntry>) -> bool {
    if !rule.protocol.eq_ignore_ascii_case(protocol) {
        return false;
    }
    let start = match &rule.port {
        None => return true, // all ports of the protocol
        Some(PortRef::Number(number)) => *number,
        // A named port is the server's container port of that name and
        // of the rule's protocol.
        Some(PortRef::Name(name)) => {
            match owner.and_then(|pod| pod.named_port(name, Some(&rule.protocol))) {
                Some(number) => i32::from(number),
                None => return false,
            }
        }
    };
    let end = rule.end_port.unwrap_or(start);
    (start..=end).contains(&i32::from(port))
}

/// Whether `cidr` (`a.b.c.d/n` or IPv6) contains `ip`.
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((base, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(bits)) = (base.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (base, ip) {
        (IpAddr::V4(base), IpAddr::V4(ip)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(base) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(base), IpAddr::V6(ip)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(base) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}
