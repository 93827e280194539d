//! Kubernetes NetworkPolicy semantics, for replaying traffic offline.
//!
//! - A pod is isolated for a direction when a policy in its namespace selects
//!   it and has that direction in `policyTypes` (default: Ingress, plus Egress
//!   when the policy has egress rules). A pod no policy isolates allows all.
//! - An isolated pod allows what any selecting policy's rule allows (rules add
//!   up). A rule with no or empty `from`/`to` matches every peer; with no or
//!   empty `ports` every port.
//! - A peer with only `podSelector` means pods in the policy's namespace; only
//!   `namespaceSelector`, every pod in matching namespaces; both in one peer,
//!   matching pods in matching namespaces; `ipBlock`, addresses in the CIDR
//!   and not in `except`.
//! - Ports: protocol defaults to TCP; a named port is looked up in the pod's
//!   container ports; `endPort` makes a range.
//! - Traffic is allowed when the client's egress and the server's ingress
//!   both allow it.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use serde::Deserialize;

use crate::inventory::{Inventory, PodEntry};

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not valid YAML: {message}")]
    Yaml {
        path: String,
        index: usize,
        message: String,
    },
    #[error(
        "{path}: document {index} is a {kind}, which netflow does not evaluate (only networking.k8s.io/v1 NetworkPolicy and cilium.io/v2 CiliumNetworkPolicy)"
    )]
    UnknownKind {
        path: String,
        index: usize,
        kind: String,
    },
    #[error("{path}: document {index} is not a valid NetworkPolicy: {message}")]
    Invalid {
        path: String,
        index: usize,
        message: String,
    },
}

/// Reads every NetworkPolicy in the `.yaml`/`.yml` files of `dir` (or the
/// one file `dir` names, YAML or JSON). A `v1` `List` (what `kubectl get
/// networkpolicies -A -o yaml` prints) is read item by item.
pub fn load_policies(dir: &Path) -> Result<Vec<NetworkPolicy>, PolicyFileError> {
    Ok(load_policy_set(dir)?.kubernetes)
}

/// Like [`load_policies`], with CiliumNetworkPolicies (cilium.io/v2) too.
pub fn load_policy_set(dir: &Path) -> Result<Policies, PolicyFileError> {
    let read_error = |source| PolicyFileError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    } else {
        files.push(dir.to_path_buf());
    }
    files.sort();
    let mut policies = Vec::new();
    let mut cilium = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyFileError::Read {
            path: shown.clone(),
            source,
        })?;
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = serde_norway::Value::deserialize(document).map_err(|err| {
                PolicyFileError::Yaml {
                    path: shown.clone(),
                    index,
                    message: err.to_string(),
                }
            })?;
            if value.is_null() {
                continue;
            }
            let items = if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
                value
                    .get("items")
                    .and_then(|items| items.as_sequence())
                    .cloned()
                    .unwrap_or_default()
            } else {
                vec![value]
            };
            for item in items {
                let kind = item
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("document without a kind");
                let api = item
                    .get("apiVersion")
                    .and_then(|k| k.as_str())
                    .unwrap_or_default();
                if kind == "CiliumNetworkPolicy" && api == "cilium.io/v2" {
                    let value: serde_json::Value =
                        serde_json::to_value(&item).map_err(|err| PolicyFileError::Invalid {
                            path: shown.clone(),
                            index,
                            message: err.to_string(),
                        })?;
                    cilium.push(value);
                    continue;
                }
                if kind != "NetworkPolicy" || api != "networking.k8s.io/v1" {
                    return Err(PolicyFileError::UnknownKind {
                        path: shown.clone(),
                        index,
                        kind: format!("{kind} ({api})"),
                    });
                }
                let policy: NetworkPolicy =
                    serde_norway::from_value(item).map_err(|err| PolicyFileError::Invalid {
                        path: shown.clone(),
                        index,
                        message: err.to_string(),
                    })?;
                policies.push(policy);
            }
        }
    }
    Ok(Policies {
        kubernetes: policies,
        cilium,
    })
}

/// One end of a connection being checked.
#[derive(Clone, Copy, Debug)]
pub enum End<'a> {
    Pod(&'a PodEntry),
    /// An address outside the pod network (a node, an external host).
    Address(IpAddr),
}

impl End<'_> {
    fn ip(&self) -> Option<IpAddr> {
        match self {
            End::Pod(pod) => pod.ips.first().copied(),
            End::Address(ip) => Some(*ip),
        }
    }
}

/// Why a connection is refused, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied(String),
}

pub struct Evaluator<'a> {
    policies: &'a [NetworkPolicy],
    /// CiliumNetworkPolicies (the subset netflow writes; see `cilium_allows`).
    cilium: &'a [serde_json::Value],
    /// Names the DNS gave for external addresses, for `toFQDNs`.
    dns: Option<&'a BTreeMap<IpAddr, std::collections::BTreeSet<String>>>,
    inventory: &'a Inventory,
}

/// Every policy of a set of files, by flavor.
#[derive(Debug, Default)]
pub struct Policies {
    pub kubernetes: Vec<NetworkPolicy>,
    pub cilium: Vec<serde_json::Value>,
}

impl Policies {
    pub fn len(&self) -> usize {
        self.kubernetes.len() + self.cilium.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One rule's peers (`from` or `to`) and ports, whichever the direction.
type RuleView<'p> = (
    Option<&'p Vec<NetworkPolicyPeer>>,
    Option<&'p Vec<NetworkPolicyPort>>,
);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl<'a> Evaluator<'a> {
    pub fn new(policies: &'a [NetworkPolicy], inventory: &'a Inventory) -> Self {
        Self {
            policies,
            cilium: &[],
            dns: None,
            inventory,
        }
    }

    /// Both flavors; `dns` names external addresses for `toFQDNs`.
    pub fn for_set(
        policies: &'a Policies,
        inventory: &'a Inventory,
        dns: &'a BTreeMap<IpAddr, std::collections::BTreeSet<String>>,
    ) -> Self {
        Self {
            policies: &policies.kubernetes,
            cilium: &policies.cilium,
            dns: Some(dns),
            inventory,
        }
    }

    /// Whether `client` may open a connection to `server` on `port`/`protocol`.
    pub fn check(&self, client: End<'_>, server: End<'_>, port: u16, protocol: &str) -> Verdict {
        if let End::Pod(pod) = client
            && let Some(reason) = self.refused(pod, Direction::Egress, server, port, protocol)
        {
            return Verdict::Denied(reason);
        }
        if let End::Pod(pod) = server
            && let Some(reason) = self.refused(pod, Direction::Ingress, client, port, protocol)
        {
            return Verdict::Denied(reason);
        }
        Verdict::Allowed
    }

    /// `None` when `pod` allows `peer` in `direction`, else the reason.
    fn refused(
        &self,
        pod: &PodEntry,
        direction: Direction,
        peer: End<'_>,
        port: u16,
        protocol: &str,
    ) -> Option<String> {
        let selecting: Vec<&NetworkPolicy> = self
            .policies
            .iter()
            .filter(|policy| {
                policy.metadata.namespace.as_deref().unwrap_or("default") == pod.namespace
            })
            .filter(|policy| has_type(policy, direction))
            .filter(|policy| {
                let selector = policy
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.pod_selector.clone())
                    .unwrap_or_default();
                matches(&selector, &pod.labels)
            })
            .collect();
        let cilium_selecting: Vec<&serde_json::Value> = self
            .cilium
            .iter()
            .filter(|policy| {
                policy["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    == pod.namespace
            })
            .filter(|policy| !policy["spec"][direction_key(direction)].is_null())
            .filter(|policy| cilium_selects(&policy["spec"]["endpointSelector"], &pod.labels))
            .collect();
        if selecting.is_empty() && cilium_selecting.is_empty() {
            return None; // not isolated
        }
        if cilium_selecting.iter().any(|policy| {
            let namespace = policy["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            policy["spec"][direction_key(direction)]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| self.cilium_allows(rule, direction, namespace, peer, port, protocol))
        }) {
            return None;
        }
        // For ingress the port is the pod's own; for egress the peer's.
        let port_owner = match direction {
            Direction::Ingress => Some(pod),
            Direction::Egress => match peer {
                End::Pod(peer) => Some(peer),
                End::Address(_) => None,
            },
        };
        for policy in &selecting {
            let spec = policy.spec.as_ref()?;
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
            for (peers, ports) in rules {
                let peer_ok = match peers {
                    None => true,
                    Some(peers) if peers.is_empty() => true,
                    Some(peers) => peers.iter().any(|p| self.peer_matches(p, namespace, peer)),
                };
                let port_ok = match ports {
                    None => true,
                    Some(ports) if ports.is_empty() => true,
                    Some(ports) => ports
                        .iter()
                        .any(|p| port_matches(p, port, protocol, port_owner)),
                };
                if peer_ok && port_ok {
                    return None;
                }
            }
        }
        let names: Vec<String> = selecting
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .chain(cilium_selecting.iter().map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }))
            .collect();
        Some(format!(
            "{} of {}/{} is isolated by {} and no rule allows {}/{} {} {}",
            match direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            },
            pod.namespace,
            pod.name,
            names.join(", "),
            protocol.to_ascii_lowercase(),
            port,
            match direction {
                Direction::Ingress => "from",
                Direction::Egress => "to",
            },
            describe(peer)
        ))
    }

    fn peer_matches(&self, peer: &NetworkPolicyPeer, policy_namespace: &str, end: End<'_>) -> bool {
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
            Some(selector) => {
                let labels = self
                    .inventory
                    .namespaces
                    .get(&pod.namespace)
                    .cloned()
                    .unwrap_or_else(|| {
                        BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_string(),
                            pod.namespace.clone(),
                        )])
                    });
                matches(selector, &labels)
            }
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|selector| matches(selector, &pod.labels));
        namespace_ok && pod_ok
    }
}

fn direction_key(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// A Cilium endpoint selector (matchLabels; `k8s:` prefixes ignored) against pod labels.
fn cilium_selects(selector: &serde_json::Value, labels: &BTreeMap<String, String>) -> bool {
    if !selector.is_object() {
        return false;
    }
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| {
            let key = key.strip_prefix("k8s:").unwrap_or(key);
            labels.get(key).map(String::as_str) == value.as_str()
        })
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty())
}

impl Evaluator<'_> {
    /// One Cilium rule: L3 peers (endpoints, CIDRs, entities, FQDNs) and
    /// L4 ports. A rule with neither (`{}`) allows nothing: it only turns on
    /// default deny.
    fn cilium_allows(
        &self,
        rule: &serde_json::Value,
        direction: Direction,
        namespace: &str,
        peer: End<'_>,
        port: u16,
        protocol: &str,
    ) -> bool {
        let (endpoints, cidrs, entities) = match direction {
            Direction::Ingress => ("fromEndpoints", "fromCIDR", "fromEntities"),
            Direction::Egress => ("toEndpoints", "toCIDR", "toEntities"),
        };
        let mut has_l3 = false;
        let mut peer_ok = false;
        if let Some(selectors) = rule[endpoints].as_array() {
            has_l3 = true;
            peer_ok |= selectors.iter().any(|selector| match peer {
                End::Pod(pod) => {
                    let wanted_namespace = selector["matchLabels"][super::cilium::NAMESPACE_LABEL]
                        .as_str()
                        .unwrap_or(namespace);
                    let mut labels = pod.labels.clone();
                    labels.insert("io.kubernetes.pod.namespace".into(), pod.namespace.clone());
                    pod.namespace == wanted_namespace && cilium_selects(selector, &labels)
                }
                End::Address(_) => false,
            });
        }
        if let Some(blocks) = rule[cidrs].as_array() {
            has_l3 = true;
            peer_ok |= peer.ip().is_some_and(|ip| {
                blocks
                    .iter()
                    .any(|b| b.as_str().is_some_and(|b| cidr_contains(b, ip)))
            });
        }
        if let Some(names) = rule[entities].as_array() {
            has_l3 = true;
            let is_node =
                matches!(peer, End::Address(ip) if self.inventory.node_by_ip(ip).is_some());
            peer_ok |= names
                .iter()
                .filter_map(|n| n.as_str())
                .any(|entity| match entity {
                    "all" => true,
                    "host" | "remote-node" => is_node,
                    "cluster" => is_node || matches!(peer, End::Pod(_)),
                    "world" => !is_node && matches!(peer, End::Address(_)),
                    _ => false,
                });
        }
        if direction == Direction::Egress
            && let Some(fqdns) = rule["toFQDNs"].as_array()
        {
            has_l3 = true;
            let names = peer
                .ip()
                .and_then(|ip| self.dns.and_then(|dns| dns.get(&ip)));
            peer_ok |= fqdns.iter().any(|fqdn| {
                fqdn["matchName"]
                    .as_str()
                    .is_some_and(|wanted| names.is_some_and(|names| names.contains(wanted)))
            });
        }
        let ports = rule["toPorts"].as_array();
        if !has_l3 && ports.is_none() {
            return false;
        }
        if has_l3 && !peer_ok {
            return false;
        }
        ports.is_none_or(|ports| {
            ports.is_empty()
                || ports.iter().any(|entry| {
                    entry["ports"].as_array().is_none_or(|list| list.is_empty())
                        || entry["ports"].as_array().into_iter().flatten().any(|p| {
                            let wanted = p["protocol"].as_str().unwrap_or("ANY");
                            let number = p["port"]
                                .as_str()
                                .and_then(|n| n.parse::<u16>().ok())
                                .or_else(|| p["port"].as_u64().and_then(|n| u16::try_from(n).ok()));
                            (wanted.eq_ignore_ascii_case("ANY")
                                || wanted.eq_ignore_ascii_case(protocol))
                                && number.is_none_or(|n| n == 0 || n == port)
                        })
                })
        })
    }
}

fn describe(end: End<'_>) -> String {
    match end {
        End::Pod(pod) => format!("{}/{}", pod.namespace, pod.name),
        End::Address(ip) => ip.to_string(),
    }
}

fn has_type(policy: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| {
            t == match direction {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            }
        }),
        // The API server's default: Ingress always, Egress when there are egress rules.
        None => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.is_some(),
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
        Some(IntOrString::String(name)) => match owner.and_then(|pod| pod.named_ports.get(name)) {
            Some(number) => i32::from(*number),
            None => return false,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pods: shop/web (app=web, named port http=8080), shop/api (app=api,
    /// port 9000), data/db (app=db, 5432), other/tool (app=tool).
    const INVENTORY: &str = r#"{"kind":"List","items":[
      {"kind":"Namespace","metadata":{"name":"shop","labels":{"team":"web"}}},
      {"kind":"Namespace","metadata":{"name":"data","labels":{"team":"data"}}},
      {"kind":"Namespace","metadata":{"name":"other"}},
      {"kind":"Pod","metadata":{"name":"web","namespace":"shop","uid":"1","labels":{"app":"web"}},
        "spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080}]}]},"status":{"podIP":"10.0.0.1"}},
      {"kind":"Pod","metadata":{"name":"api","namespace":"shop","uid":"2","labels":{"app":"api"}},
        "spec":{"containers":[{"name":"c","ports":[{"containerPort":9000}]}]},"status":{"podIP":"10.0.0.2"}},
      {"kind":"Pod","metadata":{"name":"db","namespace":"data","uid":"3","labels":{"app":"db"}},
        "spec":{"containers":[{"name":"c","ports":[{"containerPort":5432}]}]},"status":{"podIP":"10.0.1.3"}},
      {"kind":"Pod","metadata":{"name":"tool","namespace":"other","uid":"4","labels":{"app":"tool"}},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.0.2.4"}}
    ]}"#;

    fn inventory() -> Inventory {
        Inventory::parse(INVENTORY).unwrap()
    }

    fn policies(yaml: &str) -> Vec<NetworkPolicy> {
        let dir = std::env::temp_dir().join(format!(
            "netflow-eval-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), yaml).unwrap();
        let loaded = load_policies(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        loaded
    }

    fn allowed(
        policies: &[NetworkPolicy],
        from: End<'_>,
        to: End<'_>,
        port: u16,
        protocol: &str,
    ) -> bool {
        Evaluator::new(policies, &inventory()).check(from, to, port, protocol) == Verdict::Allowed
    }

    fn pod<'a>(inventory: &'a Inventory, name: &str) -> End<'a> {
        End::Pod(inventory.pods.iter().find(|p| p.name == name).unwrap())
    }

    const HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n";

    #[test]
    fn no_policy_allows_everything_and_an_empty_selector_isolates_all() {
        let inv = inventory();
        assert!(allowed(
            &[],
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        let deny = policies(&format!("{HEAD}spec: {{podSelector: {{}}}}\n"));
        assert!(!allowed(
            &deny,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &deny,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // policyTypes defaults to Ingress only: egress from web stays open.
        assert!(allowed(
            &deny,
            pod(&inv, "web"),
            pod(&inv, "db"),
            5432,
            "TCP"
        ));
    }

    #[test]
    fn an_empty_from_list_allows_all_and_no_from_too_but_no_rule_denies() {
        let inv = inventory();
        let empty_from = policies(&format!(
            "{HEAD}spec: {{podSelector: {{}}, ingress: [{{from: []}}]}}\n"
        ));
        assert!(allowed(
            &empty_from,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        let no_from = policies(&format!(
            "{HEAD}spec: {{podSelector: {{}}, ingress: [{{}}]}}\n"
        ));
        assert!(allowed(
            &no_from,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            1,
            "UDP"
        ));
        let no_rules = policies(&format!("{HEAD}spec: {{podSelector: {{}}, ingress: []}}\n"));
        assert!(!allowed(
            &no_rules,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
    }

    #[test]
    fn namespace_and_pod_selector_in_one_peer_is_and_in_two_peers_is_or() {
        let inv = inventory();
        let and = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: data}}}}\n      podSelector: {{matchLabels: {{app: tool}}}}\n"
        ));
        assert!(
            !allowed(&and, pod(&inv, "db"), pod(&inv, "web"), 8080, "TCP"),
            "db is in data but not app=tool"
        );
        assert!(
            !allowed(&and, pod(&inv, "tool"), pod(&inv, "web"), 8080, "TCP"),
            "tool is app=tool but not in data"
        );
        let or = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: data}}}}\n    - podSelector: {{matchLabels: {{app: api}}}}\n"
        ));
        assert!(allowed(&or, pod(&inv, "db"), pod(&inv, "web"), 8080, "TCP"));
        assert!(allowed(
            &or,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &or,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // A podSelector alone means the policy's own namespace.
        let same_ns = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: db}}}}}}]\n"
        ));
        assert!(!allowed(
            &same_ns,
            pod(&inv, "db"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // matchExpressions.
        let expressions = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchExpressions: [{{key: team, operator: Exists}}]}}}}]\n"
        ));
        assert!(allowed(
            &expressions,
            pod(&inv, "db"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &expressions,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
    }

    #[test]
    fn ip_blocks_honour_except() {
        let inv = inventory();
        let egress = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}}}]\n"
        ));
        let web = pod(&inv, "web");
        assert!(allowed(
            &egress,
            web,
            End::Address("203.0.113.10".parse().unwrap()),
            443,
            "TCP"
        ));
        assert!(!allowed(
            &egress,
            web,
            End::Address("169.254.169.254".parse().unwrap()),
            80,
            "TCP"
        ));
        assert!(
            !allowed(
                &egress,
                web,
                End::Address("fd00::1".parse().unwrap()),
                80,
                "TCP"
            ),
            "an IPv4 block is not IPv6"
        );
    }

    #[test]
    fn named_ports_end_ports_and_protocols() {
        let inv = inventory();
        let named = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - ports: [{{port: http}}]\n"
        ));
        assert!(allowed(
            &named,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &named,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8081,
            "TCP"
        ));
        assert!(
            !allowed(&named, pod(&inv, "api"), pod(&inv, "web"), 8080, "UDP"),
            "protocol defaults to TCP"
        );
        let range = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - ports: [{{port: 8000, endPort: 8100, protocol: TCP}}]\n"
        ));
        assert!(allowed(
            &range,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &range,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8101,
            "TCP"
        ));
    }

    #[test]
    fn egress_needs_its_type_or_rules_and_both_sides_must_allow() {
        let inv = inventory();
        // egress rules without policyTypes: Egress is implied.
        let implied = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  egress:\n  - to: [{{podSelector: {{matchLabels: {{app: api}}}}}}]\n"
        ));
        assert!(allowed(
            &implied,
            pod(&inv, "web"),
            pod(&inv, "api"),
            9000,
            "TCP"
        ));
        assert!(!allowed(
            &implied,
            pod(&inv, "web"),
            pod(&inv, "db"),
            5432,
            "TCP"
        ));
        // The server's namespace isolates ingress: the client's egress is not enough.
        let both = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  egress: [{{}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: d, namespace: data}}\nspec: {{podSelector: {{}}}}\n"
        ));
        assert!(!allowed(
            &both,
            pod(&inv, "web"),
            pod(&inv, "db"),
            5432,
            "TCP"
        ));
    }

    fn cilium(yaml: &str) -> Policies {
        let dir = std::env::temp_dir().join(format!(
            "netflow-eval-cilium-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), yaml).unwrap();
        let loaded = load_policy_set(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        assert!(loaded.kubernetes.is_empty() && !loaded.cilium.is_empty());
        loaded
    }

    const CILIUM: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: shop}\n";

    #[test]
    fn cilium_rules_in_the_subset_netflow_writes() {
        let inv = inventory();
        let names = BTreeMap::from([(
            "203.0.113.10".parse::<IpAddr>().unwrap(),
            std::collections::BTreeSet::from(["api.example".to_string()]),
        )]);
        let check = |set: &Policies, from: End<'_>, to: End<'_>, port: u16, protocol: &str| {
            Evaluator::for_set(set, &inv, &names).check(from, to, port, protocol)
                == Verdict::Allowed
        };
        // `{}` only turns on default deny.
        let deny = cilium(&format!(
            "{CILIUM}spec: {{endpointSelector: {{}}, ingress: [{{}}]}}\n"
        ));
        assert!(!check(
            &deny,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(
            check(&deny, pod(&inv, "web"), pod(&inv, "db"), 5432, "TCP"),
            "egress untouched"
        );
        // Ports only: any peer on those ports.
        let ports = cilium(&format!(
            "{CILIUM}spec: {{endpointSelector: {{matchLabels: {{app: web}}}}, ingress: [{{toPorts: [{{ports: [{{port: '8080', protocol: TCP}}]}}]}}]}}\n"
        ));
        assert!(check(
            &ports,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!check(
            &ports,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8081,
            "TCP"
        ));
        // fromEndpoints: the policy's namespace unless the namespace label says otherwise.
        let endpoints = cilium(&format!(
            "{CILIUM}spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: api}}}}, {{matchLabels: {{app: db, k8s:io.kubernetes.pod.namespace: data}}}}]\n"
        ));
        assert!(check(
            &endpoints,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(check(
            &endpoints,
            pod(&inv, "db"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!check(
            &endpoints,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // toFQDNs by the names the DNS gave; toCIDR; ANY protocol.
        let egress = cilium(&format!(
            "{CILIUM}spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  egress:\n  - toFQDNs: [{{matchName: api.example}}]\n    toPorts: [{{ports: [{{port: '443', protocol: ANY}}]}}]\n  - toCIDR: [198.51.100.0/24]\n"
        ));
        let web = pod(&inv, "web");
        assert!(check(
            &egress,
            web,
            End::Address("203.0.113.10".parse().unwrap()),
            443,
            "UDP"
        ));
        assert!(!check(
            &egress,
            web,
            End::Address("203.0.113.11".parse().unwrap()),
            443,
            "TCP"
        ));
        assert!(check(
            &egress,
            web,
            End::Address("198.51.100.7".parse().unwrap()),
            80,
            "TCP"
        ));
        assert!(!check(&egress, web, pod(&inv, "api"), 9000, "TCP"));
    }

    #[test]
    fn bad_policy_files_are_named() {
        let dir = std::env::temp_dir().join(format!("netflow-eval-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text, expected) in [
            ("broken.yaml", "kind: [", "is not valid YAML"),
            (
                "cilium.yaml",
                "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n",
                "CiliumClusterwideNetworkPolicy",
            ),
            (
                "wrong.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: {podSelector: 7}\n",
                "not a valid NetworkPolicy",
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let err = load_policies(&path).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains(expected),
                "{name}: {err}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
