//! The Cilium flavor: CiliumNetworkPolicy (cilium.io/v2) with the same
//! coverage as the Kubernetes flavor, in Cilium's terms:
//!
//! - default deny: `endpointSelector: {}` with `ingress: [{}]`, `egress: [{}]`;
//! - DNS: egress to the DNS pods on port 53 (any protocol) with a DNS rule,
//!   which is what makes Cilium's proxy see the answers `toFQDNs` needs;
//! - peers: `fromEndpoints`/`toEndpoints` by workload labels (other
//!   namespaces through `k8s:io.kubernetes.pod.namespace`), nodes as the
//!   `host` and `remote-node` entities, externals as `toFQDNs` when their DNS
//!   name is known, else as a /32 (/128) CIDR.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::generate::{
    Direction, GenerateError, GenerateOptions, PolicySet, Rule, cluster_dns, scope, workload_rules,
};
use crate::{
    graph::CommGraph,
    inventory::Inventory,
    model::{Endpoint, EndpointKind},
};

/// The label Cilium gives every endpoint for its namespace.
pub const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";

/// How a Cilium rule names one peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CiliumPeer {
    Endpoints(BTreeMap<String, String>),
    Cidr(String),
    Entities,
    Fqdn(String),
}

fn peer(peer: &Endpoint, workload: &Endpoint) -> Option<Vec<CiliumPeer>> {
    match peer.kind {
        EndpointKind::Workload => {
            if peer.labels.is_empty() {
                return None;
            }
            let mut labels = peer.labels.clone();
            let theirs = peer.namespace.as_ref()?;
            if Some(theirs) != workload.namespace.as_ref() {
                labels.insert(NAMESPACE_LABEL.into(), theirs.clone());
            }
            Some(vec![CiliumPeer::Endpoints(labels)])
        }
        EndpointKind::Node => Some(vec![CiliumPeer::Entities]),
        EndpointKind::External => {
            if !peer.dns_names.is_empty() {
                return Some(
                    peer.dns_names
                        .iter()
                        .map(|name| CiliumPeer::Fqdn(name.clone()))
                        .collect(),
                );
            }
            let peers: Vec<CiliumPeer> = peer
                .addresses
                .iter()
                .filter_map(|address| address.parse::<std::net::IpAddr>().ok())
                .map(|ip| match ip {
                    std::net::IpAddr::V4(_) => CiliumPeer::Cidr(format!("{ip}/32")),
                    std::net::IpAddr::V6(_) => CiliumPeer::Cidr(format!("{ip}/128")),
                })
                .collect();
            (!peers.is_empty()).then_some(peers)
        }
        EndpointKind::Metadata | EndpointKind::Unresolved => None,
    }
}

fn meta(name: &str, namespace: &str, evidence: Option<String>) -> Value {
    let mut meta = json!({"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "netflow"}});
    if let Some(evidence) = evidence {
        meta["annotations"] = json!({"netflow.io/evidence": evidence});
    }
    meta
}

fn policy(name: &str, namespace: &str, evidence: Option<String>, spec: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta(name, namespace, evidence), "spec": spec})
}

fn to_ports(rule: &Rule<CiliumPeer>) -> Value {
    let ports: Vec<Value> = rule
        .ports
        .iter()
        .map(|(protocol, port)| json!({"port": port.to_string(), "protocol": protocol}))
        .collect();
    json!([{"ports": ports}])
}

/// Cilium rules for one direction: one rule per kind of peer selection.
fn cilium_rules(rules: &[Rule<CiliumPeer>], direction: Direction) -> Vec<Value> {
    let (endpoints_key, cidr_key, entities_key) = match direction {
        Direction::Ingress => ("fromEndpoints", "fromCIDR", "fromEntities"),
        Direction::Egress => ("toEndpoints", "toCIDR", "toEntities"),
    };
    let mut out = Vec::new();
    for rule in rules {
        let mut endpoints = Vec::new();
        let mut cidrs = Vec::new();
        let mut fqdns = Vec::new();
        let mut entities = false;
        for peer in &rule.peers {
            match peer {
                CiliumPeer::Endpoints(labels) => endpoints.push(json!({"matchLabels": labels})),
                CiliumPeer::Cidr(cidr) => cidrs.push(json!(cidr)),
                CiliumPeer::Fqdn(name) => fqdns.push(json!({"matchName": name})),
                CiliumPeer::Entities => entities = true,
            }
        }
        let ports = to_ports(rule);
        if !endpoints.is_empty() {
            out.push(json!({endpoints_key: endpoints, "toPorts": ports}));
        }
        if !cidrs.is_empty() {
            out.push(json!({cidr_key: cidrs, "toPorts": ports}));
        }
        if entities {
            out.push(json!({entities_key: ["host", "remote-node"], "toPorts": ports}));
        }
        if !fqdns.is_empty() && direction == Direction::Egress {
            out.push(json!({"toFQDNs": fqdns, "toPorts": ports}));
        }
    }
    out
}

pub fn generate(
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
) -> Result<PolicySet<Value>, GenerateError> {
    let (dns_namespace, dns_labels) = cluster_dns(inventory).ok_or(GenerateError::NoClusterDns)?;
    let (edges, workloads) = scope(graph, options);
    let mut set = PolicySet::default();
    let mut dns_selector = dns_labels.clone();
    dns_selector.insert(NAMESPACE_LABEL.into(), dns_namespace.clone());
    for (namespace, members) in &workloads {
        let mut deny = json!({"endpointSelector": {}, "ingress": [{}]});
        if !options.ingress_only {
            deny["egress"] = json!([{}]);
        }
        let mut policies = vec![policy("default-deny", namespace, None, deny)];
        if !options.ingress_only {
            policies.push(policy(
                "allow-dns",
                namespace,
                None,
                json!({"endpointSelector": {}, "egress": [{
                    "toEndpoints": [{"matchLabels": dns_selector}],
                    "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}]
                }]}),
            ));
        }
        if options.include_system && *namespace == dns_namespace {
            policies.push(policy(
                "allow-dns-from-everywhere",
                namespace,
                None,
                json!({"endpointSelector": {"matchLabels": dns_labels}, "ingress": [{
                    "fromEntities": ["cluster"],
                    "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}]}]
                }]}),
            ));
        }
        for workload in members.values() {
            let dns = (dns_namespace.as_str(), &dns_labels);
            let Some(rules) =
                workload_rules(&edges, workload, dns, options, &mut set.findings, peer)
            else {
                continue;
            };
            let evidence = rules.evidence();
            let (ingress, egress) = (rules.ingress, rules.egress);
            let kind = workload
                .workload_kind
                .clone()
                .unwrap_or_else(|| "workload".into())
                .to_ascii_lowercase();
            let mut spec = json!({"endpointSelector": {"matchLabels": workload.labels}});
            let ingress_rules = cilium_rules(&ingress, Direction::Ingress);
            if !ingress_rules.is_empty() {
                spec["ingress"] = json!(ingress_rules);
            }
            let egress_rules = cilium_rules(&egress, Direction::Egress);
            if !egress_rules.is_empty() {
                spec["egress"] = json!(egress_rules);
            }
            policies.push(policy(
                &format!("allow-{kind}-{}", workload.name),
                namespace,
                Some(evidence),
                spec,
            ));
        }
        set.by_namespace.insert(namespace.clone(), policies);
    }
    set.findings.sort();
    set.findings.dedup();
    Ok(set)
}
