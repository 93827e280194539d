//! NetworkPolicy semantics: which policies isolate a pod, and whether one of
//! their rules allows a peer on a port.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

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

/// A peer list's peers by the one namespace each can name. A generated
/// policy for a busy server lists a peer per client workload, thousands of
/// them: a check looks only at those of the client's namespace.
pub(super) struct PeerIndex<'p> {
    /// Peers that name pods of one namespace only: without a
    /// namespaceSelector (the policy's own) or with exactly
    /// `kubernetes.io/metadata.name: NAME`.
    by_namespace: HashMap<&'p str, Vec<&'p NetworkPolicyPeer>>,
    /// Every other peer (ipBlocks, other namespace selectors).
    others: Vec<&'p NetworkPolicyPeer>,
}

/// Peer lists shorter than this are scanned as they are.
const INDEXED_PEER_LISTS: usize = 8;

/// The peer indexes of `policies`' long peer lists, by the list's address.
pub(super) type PeerIndexes<'p> = HashMap<*const NetworkPolicyPeer, PeerIndex<'p>>;

pub(super) fn index_peers(policies: &[NetworkPolicy]) -> PeerIndexes<'_> {
    let mut indexes = HashMap::new();
    for policy in policies {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
        let Some(spec) = policy.spec.as_ref() else {
            continue;
        };
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .filter_map(|r| r.from.as_ref());
        let egress = spec.egress.iter().flatten().filter_map(|r| r.to.as_ref());
        for peers in ingress.chain(egress) {
            if peers.len() >= INDEXED_PEER_LISTS {
                indexes.insert(peers.as_ptr(), PeerIndex::new(peers, namespace));
            }
        }
    }
    indexes
}

impl<'p> PeerIndex<'p> {
    fn new(peers: &'p [NetworkPolicyPeer], policy_namespace: &'p str) -> Self {
        let mut index = PeerIndex {
            by_namespace: HashMap::new(),
            others: Vec::new(),
        };
        for peer in peers {
            match one_namespace(peer, policy_namespace) {
                Some(namespace) => index.by_namespace.entry(namespace).or_default().push(peer),
                None => index.others.push(peer),
            }
        }
        index
    }

    /// The peers that may match `end`: no other can.
    fn candidates<'s>(&'s self, end: End<'_>) -> impl Iterator<Item = &'p NetworkPolicyPeer> + 's {
        let of_namespace = match end {
            End::Pod(pod) => self.by_namespace.get(pod.namespace.as_str()),
            // Selectors name pods only.
            End::Address(_) => None,
        };
        of_namespace
            .into_iter()
            .flatten()
            .chain(self.others.iter())
            .copied()
    }
}

/// The only namespace whose pods `peer` can name, when it is one by name.
fn one_namespace<'p>(peer: &'p NetworkPolicyPeer, policy_namespace: &'p str) -> Option<&'p str> {
    if peer.ip_block.is_some() {
        return None;
    }
    let Some(selector) = &peer.namespace_selector else {
        return Some(policy_namespace);
    };
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|expressions| !expressions.is_empty())
    {
        return None;
    }
    // Every namespace carries its name in this label (the inventory sees to
    // it): a selector of that label alone names that namespace only.
    let labels = selector.match_labels.as_ref()?;
    match labels.get(NAMESPACE_NAME_LABEL) {
        Some(name) if labels.len() == 1 => Some(name.as_str()),
        _ => None,
    }
}

/// Whether a rule of `policy` for `direction` allows `peer` on `port`.
/// `port_owner` is the pod whose named ports name `port` (the server);
/// `indexes` are the long peer lists' indexes ([`index_peers`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn allows(
    policy: &NetworkPolicy,
    inventory: &Inventory,
    indexes: &PeerIndexes<'_>,
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
            Some(peers) => match indexes.get(&peers.as_ptr()) {
                Some(index) => index
                    .candidates(peer)
                    .any(|p| peer_matches(p, inventory, namespace, peer)),
                None => peers
                    .iter()
                    .any(|p| peer_matches(p, inventory, namespace, peer)),
            },
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
