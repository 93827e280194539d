//! NetworkPolicy semantics: which policies isolate a pod, and whether one of
//! their rules allows a peer on a port.

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{Direction, End};
use crate::inventory::{Inventory, NAMESPACE_NAME_LABEL, PodEntry};

/// The policies of `pod`'s namespace that select it for `direction`, out of
/// `policies` (the evaluator hands in those of the pod's namespace).
pub(super) fn selecting<'p>(
    policies: &[&'p NetworkPolicy],
    pod: &PodEntry,
    direction: Direction,
) -> Vec<&'p NetworkPolicy> {
    policies
        .iter()
        .copied()
        .filter(|policy| policy.metadata.namespace.as_deref().unwrap_or("default") == pod.namespace)
        .filter(|policy| has_type(policy, direction))
        .filter(|policy| {
            policy
                .spec
                .as_ref()
                .and_then(|spec| spec.pod_selector.as_ref())
                .is_none_or(|selector| matches(selector, &pod.labels))
        })
        .collect()
}

/// One rule's peers (`from` or `to`) and ports, whichever the direction.
type RuleView<'p> = (
    Option<&'p Vec<NetworkPolicyPeer>>,
    Option<&'p Vec<NetworkPolicyPort>>,
);

/// Whether a rule of `policy` for `direction` allows `peer` on `port`.
/// `port_owner` is the pod whose named ports name `port` (the server).
pub(super) fn allows(
    policy: &NetworkPolicy,
    inventory: &Inventory,
    direction: Direction,
    peer: End<'_>,
    port: u16,
    protocol: &str,
    port_owner: Option<&PodEntry>,
) -> bool {
    let Some(spec) = policy.spec.as_ref() else {
        return false;
    };
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let rules: Vec<RuleView<'_>> = match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    };
    rules.into_iter().any(|(peers, ports)| {
        let peer_ok = match peers {
            None => true,
            Some(peers) if peers.is_empty() => true,
            Some(peers) => peers
                .iter()
                .any(|p| peer_matches(p, inventory, namespace, peer)),
        };
        let port_ok = match ports {
            None => true,
            Some(ports) if ports.is_empty() => true,
            Some(ports) => ports
                .iter()
                .any(|p| port_matches(p, port, protocol, port_owner)),
        };
        peer_ok && port_ok
    })
}

fn peer_matches(
    peer: &NetworkPolicyPeer,
    inventory: &Inventory,
    policy_namespace: &str,
    end: End<'_>,
) -> bool {
    if let Some(block) = &peer.ip_block {
        let Some(ip) = end.ip() else { return false };
        return cidr_contains(&block.cidr, ip)
            && !block
                .except
                .iter()
                .flatten()
                .any(|except| cidr_contains(except, ip));
    }
    let End::Pod(pod) = end else {
        // Selectors name pods only.
        return false;
    };
    let namespace_ok = match &peer.namespace_selector {
        None => pod.namespace == policy_namespace,
        Some(selector) => matches(selector, &namespace_labels(inventory, &pod.namespace)),
    };
    let pod_ok = peer
        .pod_selector
        .as_ref()
        .is_none_or(|selector| matches(selector, &pod.labels));
    namespace_ok && pod_ok
}

/// A namespace's labels as selectors see them: the API server gives every
/// namespace `kubernetes.io/metadata.name` (the inventory adds it to every
/// namespace it has), also to one the inventory has no object for.
pub(super) fn namespace_labels<'i>(
    inventory: &'i Inventory,
    namespace: &str,
) -> Cow<'i, BTreeMap<String, String>> {
    match inventory.namespaces.get(namespace) {
        Some(labels) => Cow::Borrowed(labels),
        None => Cow::Owned(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_string(),
            namespace.to_string(),
        )])),
    }
}

fn has_type(policy: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types.iter().any(|t| {
            t == match direction {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            }
        }),
        // The API server's default for an omitted or empty list: Ingress
        // always, Egress when there is at least one egress rule (`egress:
        // []` is none).
        _ => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
        },
    }
}

/// Label selector semantics; an empty selector matches everything.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
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
            let values = requirement.values.clone().unwrap_or_default();
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

fn port_matches(
    rule: &NetworkPolicyPort,
    port: u16,
    protocol: &str,
    owner: Option<&PodEntry>,
) -> bool {
    let rule_protocol = rule.protocol.as_deref().unwrap_or("TCP");
    if !rule_protocol.eq_ignore_ascii_case(protocol) {
        return false;
    }
    let start = match &rule.port {
        None => return true, // all ports of the protocol
        Some(IntOrString::Int(number)) => *number,
        // A named port is the server's container port of that name and
        // of the rule's protocol.
        Some(IntOrString::String(name)) => {
            match owner.and_then(|pod| pod.named_port(name, Some(rule_protocol))) {
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
