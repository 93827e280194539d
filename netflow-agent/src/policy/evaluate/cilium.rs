//! CiliumNetworkPolicy semantics for the subset `policy::cilium` models:
//! endpoint selectors by labels (`k8s:` prefixes as Cilium writes them),
//! CIDRs, entities, FQDNs by the names the cluster's DNS gave, and ports with
//! TCP/UDP/ANY, ranges and named ports.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Direction, End, HttpQuestion, kubernetes::cidr_contains, kubernetes::matches};
use crate::{
    inventory::{Inventory, PodEntry},
    model::LabelMap,
    policy::cilium::{
        CiliumNetworkPolicy, EgressRule, FqdnSelector, IngressRule, NAMESPACE_LABEL, PortRule, Rule,
    },
};

/// The label key as pods carry it: Cilium's `k8s:` source prefix dropped.
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The rules (of policies in `pod`'s namespace) that select `pod` for
/// `direction`, each with its policy's name and namespace.
pub(super) fn selecting<'p>(
    policies: &[&'p CiliumNetworkPolicy],
    pod: &PodEntry,
    direction: Direction,
) -> Vec<(&'p CiliumNetworkPolicy, &'p Rule)> {
    let labels = endpoint_labels(pod);
    policies
        .iter()
        .copied()
        .filter(|policy| {
            policy.metadata.namespace.as_deref().unwrap_or("default") == &*pod.namespace
        })
        .flat_map(|policy| policy.rules().map(move |rule| (policy, rule)))
        .filter(|(_, rule)| match direction {
            Direction::Ingress => rule.ingress.is_some(),
            Direction::Egress => rule.egress.is_some(),
        })
        .filter(|(_, rule)| selects(&rule.endpoint_selector, &labels))
        .collect()
}

/// What one Cilium rule needs to decide a connection.
pub(super) struct Context<'a> {
    pub inventory: &'a Inventory,
    /// Names the DNS gave for external addresses, for `toFQDNs`.
    pub dns: Option<&'a BTreeMap<IpAddr, BTreeSet<String>>>,
    /// The namespace of the policy the rule is in.
    pub namespace: &'a str,
    /// The pod whose named ports name the port (the server).
    pub port_owner: Option<&'a PodEntry>,
}

/// The L3 and L4 parts of one ingress or egress rule.
struct View<'r> {
    endpoints: Option<&'r [LabelSelector]>,
    cidrs: Option<&'r [String]>,
    entities: Option<&'r [String]>,
    fqdns: Option<&'r [FqdnSelector]>,
    ports: Option<&'r [PortRule]>,
}

impl<'r> From<&'r IngressRule> for View<'r> {
    fn from(rule: &'r IngressRule) -> Self {
        Self {
            endpoints: rule.from_endpoints.as_deref(),
            cidrs: rule.from_cidr.as_deref(),
            entities: rule.from_entities.as_deref(),
            fqdns: None,
            ports: rule.to_ports.as_deref(),
        }
    }
}

impl<'r> From<&'r EgressRule> for View<'r> {
    fn from(rule: &'r EgressRule) -> Self {
        Self {
            endpoints: rule.to_endpoints.as_deref(),
            cidrs: rule.to_cidr.as_deref(),
            entities: rule.to_entities.as_deref(),
            fqdns: rule.to_fqdns.as_deref(),
            ports: rule.to_ports.as_deref(),
        }
    }
}

/// Whether one of `rule`'s ingress or egress rules allows `peer` on `port`.
pub(super) fn allows(
    rule: &Rule,
    context: &Context<'_>,
    direction: Direction,
    peer: End<'_>,
    port: u16,
    protocol: &str,
    request: Option<&HttpQuestion<'_>>,
) -> bool {
    let views: Vec<View<'_>> = match direction {
        Direction::Ingress => rule.ingress.iter().flatten().map(View::from).collect(),
        Direction::Egress => rule.egress.iter().flatten().map(View::from).collect(),
    };
    views
        .iter()
        .any(|view| view_allows(view, context, peer, port, protocol, request))
}

/// One rule: L3 peers (endpoints, CIDRs, entities, FQDNs) and L4 ports. A
/// rule with neither (`{}`) allows nothing: it only turns on default deny.
fn view_allows(
    view: &View<'_>,
    context: &Context<'_>,
    peer: End<'_>,
    port: u16,
    protocol: &str,
    request: Option<&HttpQuestion<'_>>,
) -> bool {
    let mut has_l3 = false;
    let mut peer_ok = false;
    if let Some(selectors) = view.endpoints {
        has_l3 = true;
        peer_ok |= selectors.iter().any(|selector| match peer {
            End::Pod(pod) => {
                // A selector without a namespace label means the policy's own.
                let wanted_namespace = selector
                    .match_labels
                    .as_ref()
                    .and_then(|labels| labels.get(NAMESPACE_LABEL))
                    .map_or(context.namespace, String::as_str);
                &*pod.namespace == wanted_namespace && selects(selector, &endpoint_labels(pod))
            }
            End::Address(_) => false,
        });
    }
    if let Some(blocks) = view.cidrs {
        has_l3 = true;
        peer_ok |= peer
            .ip()
            .is_some_and(|ip| blocks.iter().any(|block| cidr_contains(block, ip)));
    }
    if let Some(entities) = view.entities {
        has_l3 = true;
        let is_node =
            matches!(peer, End::Address(ip) if context.inventory.node_by_ip(ip).is_some());
        peer_ok |= entities.iter().any(|entity| match entity.as_str() {
            "all" => true,
            "host" | "remote-node" => is_node,
            "cluster" => is_node || matches!(peer, End::Pod(_)),
            "world" => !is_node && matches!(peer, End::Address(_)),
            _ => false,
        });
    }
    if let Some(fqdns) = view.fqdns {
        has_l3 = true;
        let names = peer
            .ip()
            .and_then(|ip| context.dns.and_then(|dns| dns.get(&ip)));
        peer_ok |= fqdns.iter().any(|fqdn| {
            fqdn.match_name
                .as_ref()
                .is_some_and(|wanted| names.is_some_and(|names| names.contains(wanted)))
        });
    }
    if !has_l3 && view.ports.is_none() {
        return false;
    }
    if has_l3 && !peer_ok {
        return false;
    }
    view.ports.is_none_or(|rules| {
        rules.is_empty()
            || rules.iter().any(|rule| {
                port_rule_allows(rule, port, protocol, context.port_owner)
                    && request.is_none_or(|request| http_rules_allow(rule, request))
            })
    })
}

/// Whether a port rule's HTTP rules let `request` through: none listed
/// (an L4 allow) lets every request through.
fn http_rules_allow(rule: &PortRule, request: &HttpQuestion<'_>) -> bool {
    let Some(http) = rule.rules.as_ref().and_then(|rules| rules.http.as_deref()) else {
        return true;
    };
    http.iter().any(|allowed| {
        allowed.headers.as_ref().is_none_or(Vec::is_empty)
            && allowed.host.is_none()
            && allowed
                .method
                .as_deref()
                .is_none_or(|method| whole_match(method, request.method))
            && allowed
                .path
                .as_deref()
                .is_none_or(|path| whole_match(path, request.path))
    })
}

/// Whether `pattern` (an extended regular expression) matches all of
/// `text`, as Cilium's proxy matches methods and paths; a pattern that does
/// not compile matches nothing.
fn whole_match(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|regex| regex.is_match(text))
}

fn port_rule_allows(rule: &PortRule, port: u16, protocol: &str, owner: Option<&PodEntry>) -> bool {
    let Some(ports) = rule.ports.as_deref().filter(|ports| !ports.is_empty()) else {
        return true;
    };
    ports.iter().any(|entry| {
        let wanted = entry.protocol.as_deref().unwrap_or("ANY");
        if !(wanted.eq_ignore_ascii_case("ANY") || wanted.eq_ignore_ascii_case(protocol)) {
            return false;
        }
        let start = match entry.port.parse::<u16>() {
            Ok(0) => return true, // every port
            Ok(number) => number,
            // A named port: the server's container port of that name (and
            // protocol, unless the rule says ANY).
            Err(_) => {
                let protocol = (!wanted.eq_ignore_ascii_case("ANY")).then_some(wanted);
                match owner.and_then(|pod| pod.named_port(&entry.port, protocol)) {
                    Some(number) => number,
                    None => return false,
                }
            }
        };
        let end = entry
            .end_port
            .and_then(|end| u16::try_from(end).ok())
            .unwrap_or(start);
        (start..=end.max(start)).contains(&port)
    })
}

/// A pod's labels as Cilium's selectors see them: its own, plus its namespace.
fn endpoint_labels(pod: &PodEntry) -> LabelMap {
    let mut labels = LabelMap::clone(&pod.labels);
    labels.insert(POD_NAMESPACE_LABEL.into(), pod.namespace.to_string());
    labels
}

/// A Cilium selector against pod labels, with the `k8s:` source prefix of
/// its keys dropped (Cilium reads `k8s:app` and `app` alike for pods).
fn selects(selector: &LabelSelector, labels: &LabelMap) -> bool {
    let strip = |key: &str| key.strip_prefix("k8s:").unwrap_or(key).to_string();
    let plain = LabelSelector {
        match_labels: selector.match_labels.as_ref().map(|labels| {
            labels
                .iter()
                .map(|(key, value)| (strip(key), value.clone()))
                .collect()
        }),
        match_expressions: selector.match_expressions.as_ref().map(|expressions| {
            expressions
                .iter()
                .cloned()
                .map(|mut requirement| {
                    requirement.key = strip(&requirement.key);
                    requirement
                })
                .collect()
        }),
    };
    matches(&plain, labels)
}
