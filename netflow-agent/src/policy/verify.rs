//! `policy verify`: replay every observed edge against a set of policies over
//! the inventory's pods, and measure what stays open.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    evaluate::{End, Evaluator, Policies, Verdict, cidr_contains},
    generate::{never_allowed, proven},
};
use crate::{
    graph::CommGraph,
    inventory::{Inventory, PodEntry, WorkloadRef},
    model::{Endpoint, EndpointKind},
};

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub edges: usize,
    pub allowed: usize,
    /// Observed edges the policies would block, with the reason.
    pub blocked: Vec<BlockedEdge>,
    /// Observed edges to the metadata service: expected to be blocked.
    pub metadata_contacts: Vec<String>,
    /// Observed edges to or from a link-local address: expected to be blocked.
    pub link_local_contacts: Vec<String>,
    /// Edges whose attempts were never answered: never allowed, not checked.
    pub never_connected: Vec<String>,
    /// Edges whose ends have no pod (or address) in the inventory to test.
    pub not_checkable: Vec<String>,
    pub blast_radius: BlastRadius,
}

#[derive(Debug, Serialize)]
pub struct BlockedEdge {
    pub edge: String,
    pub reason: String,
}

/// Reachable (client pod, server pod, port) triples among the inventory's
/// pods and their declared ports.
#[derive(Debug, Default, Serialize)]
pub struct BlastRadius {
    pub pairs_before: usize,
    pub pairs_after: usize,
    /// Open after the policies though no edge of the graph stands for them.
    pub open_beyond_observed: Vec<String>,
}

/// The name policies give the edge's protocol (`TCP`, `UDP`, `SCTP`); a
/// protocol they cannot name keeps its number, which no rule matches.
fn protocol_name(edge_protocol: &crate::model::Protocol) -> String {
    edge_protocol
        .policy_name()
        .map_or_else(|| edge_protocol.to_string(), str::to_string)
}

fn pods_of<'a>(inventory: &'a Inventory, endpoint: &Endpoint) -> Vec<End<'a>> {
    match endpoint.kind {
        EndpointKind::Workload => {
            let workload = WorkloadRef {
                namespace: endpoint.namespace.clone().unwrap_or_default(),
                kind: endpoint.workload_kind.clone().unwrap_or_default(),
                name: endpoint.name.clone(),
            };
            inventory
                .pods_of(&workload)
                .filter(|pod| !pod.host_network)
                .map(End::Pod)
                .collect()
        }
        _ => endpoint
            .addresses
            .iter()
            .filter_map(|address| address.parse().ok())
            .map(End::Address)
            .collect(),
    }
}

pub fn verify(graph: &CommGraph, policies: &Policies, inventory: &Inventory) -> VerifyReport {
    let dns = dns_names(graph);
    let evaluator = Evaluator::for_set(policies, inventory, &dns);
    let mut report = VerifyReport::default();
    let mut observed: BTreeSet<(WorkloadRef, WorkloadRef, u16, String)> = BTreeSet::new();
    for (client, server, edge) in graph.edges() {
        report.edges += 1;
        let protocol = protocol_name(&edge.key.protocol);
        let name = format!(
            "{} -> {} {}/{}",
            client.label(),
            server.label(),
            protocol.to_ascii_lowercase(),
            edge.key.port
        );
        if !proven(edge, false) {
            report.never_connected.push(name);
            continue;
        }
        match never_allowed(server).or_else(|| never_allowed(client)) {
            Some("metadata-service") => {
                report.metadata_contacts.push(name);
                continue;
            }
            Some(_) => {
                report.link_local_contacts.push(name);
                continue;
            }
            None => {}
        }
        let (clients, servers) = (pods_of(inventory, client), pods_of(inventory, server));
        if clients.is_empty() || servers.is_empty() {
            report.not_checkable.push(name);
            continue;
        }
        // Every client pod must reach every server pod (a node or external
        // host passes when any of its addresses does).
        let client_pods = matches!(clients.first(), Some(End::Pod(_)));
        let mut refusal = None;
        for server_end in &servers {
            let mut allowed_any = false;
            let mut first_denial = None;
            for client_end in &clients {
                match evaluator.check(*client_end, *server_end, edge.key.port, &protocol) {
                    Verdict::Allowed => allowed_any = true,
                    Verdict::Denied(reason) => {
                        first_denial.get_or_insert(reason);
                    }
                }
            }
            // Pods: every one must pass. Addresses of one node or host: one is enough.
            let refused = if client_pods {
                first_denial
            } else if allowed_any {
                None
            } else {
                first_denial
            };
            if refused.is_some() {
                refusal = refused;
                break;
            }
        }
        match refusal {
            Some(reason) => report.blocked.push(BlockedEdge { edge: name, reason }),
            None => report.allowed += 1,
        }
        if let (Some(client), Some(server)) = (workload_of(client), workload_of(server)) {
            observed.insert((client, server, edge.key.port, protocol));
        }
    }
    report.blast_radius = blast_radius(&evaluator, policies, inventory, &observed);
    report
}

/// The DNS names the graph knows for external addresses (for `toFQDNs`).
pub fn dns_names(graph: &CommGraph) -> BTreeMap<std::net::IpAddr, BTreeSet<String>> {
    let mut names: BTreeMap<std::net::IpAddr, BTreeSet<String>> = BTreeMap::new();
    for endpoint in graph.endpoints() {
        for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
            names
                .entry(address)
                .or_default()
                .extend(endpoint.dns_names.iter().cloned());
        }
    }
    names
}

fn workload_of(endpoint: &Endpoint) -> Option<WorkloadRef> {
    (endpoint.kind == EndpointKind::Workload).then(|| WorkloadRef {
        namespace: endpoint.namespace.clone().unwrap_or_default(),
        kind: endpoint.workload_kind.clone().unwrap_or_default(),
        name: endpoint.name.clone(),
    })
}

/// Pods that every check treats alike: same namespace, labels and declared
/// ports, and -- only when some policy names addresses that a pod IP falls
/// in -- the same IPs. One of them stands for all in [`blast_radius`].
#[derive(PartialEq, Eq, Hash)]
struct PodClass<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    ports: Vec<(u16, &'a str, Option<&'a str>)>,
    /// The pod's IPs when an ipBlock or network rule covers one.
    ips: Option<&'a [std::net::IpAddr]>,
}

/// Every address range the policies name (ipBlocks, the tiers' networks),
/// or `None` when they name pods in ways the class key does not capture
/// (any Cilium policy: CIDRs, entities, FQDNs).
fn named_ranges(policies: &Policies) -> Option<Vec<String>> {
    if !policies.cilium.is_empty() {
        return None;
    }
    let mut ranges = Vec::new();
    for policy in &policies.kubernetes {
        let Some(spec) = &policy.spec else { continue };
        let peers = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|rule| rule.from.iter().flatten())
            .chain(
                spec.egress
                    .iter()
                    .flatten()
                    .flat_map(|rule| rule.to.iter().flatten()),
            );
        for peer in peers {
            if let Some(block) = &peer.ip_block {
                ranges.push(block.cidr.clone());
            }
        }
    }
    for policy in &policies.cluster_wide {
        for rule in policy.ingress.iter().chain(&policy.egress) {
            for peer in &rule.peers {
                if let crate::policy::cluster_wide::TierPeer::Networks(networks) = peer {
                    ranges.extend(networks.iter().cloned());
                }
            }
        }
    }
    Some(ranges)
}

/// Reachable (client pod, server pod, port) triples, counted class by
/// class: one check stands for every pod pair of two classes.
fn blast_radius(
    evaluator: &Evaluator<'_>,
    policies: &Policies,
    inventory: &Inventory,
    observed: &BTreeSet<(WorkloadRef, WorkloadRef, u16, String)>,
) -> BlastRadius {
    let pods: Vec<&PodEntry> = inventory
        .pods
        .iter()
        .filter(|pod| !pod.host_network)
        .collect();
    let Some(ranges) = named_ranges(policies) else {
        return blast_radius_per_pod(evaluator, &pods, observed);
    };
    // Pods by class, in inventory order.
    let mut classes: Vec<Vec<&PodEntry>> = Vec::new();
    let mut index: std::collections::HashMap<PodClass<'_>, usize> =
        std::collections::HashMap::new();
    for pod in &pods {
        let ip_named = pod
            .ips
            .iter()
            .any(|ip| ranges.iter().any(|cidr| cidr_contains(cidr, *ip)));
        let key = PodClass {
            namespace: &pod.namespace,
            labels: &pod.labels,
            ports: pod
                .ports
                .iter()
                .map(|port| (port.number, port.protocol.as_str(), port.name.as_deref()))
                .collect(),
            ips: ip_named.then_some(pod.ips.as_slice()),
        };
        let class = *index.entry(key).or_insert_with(|| {
            classes.push(Vec::new());
            classes.len() - 1
        });
        classes[class].push(pod);
    }
    let mut radius = BlastRadius::default();
    let mut beyond: BTreeSet<String> = BTreeSet::new();
    for (client_class, clients) in classes.iter().enumerate() {
        for (server_class, servers) in classes.iter().enumerate() {
            // Pairs of two different pods (a pod is not its own peer).
            let pairs = if client_class == server_class {
                clients
                    .iter()
                    .map(|client| servers.iter().filter(|s| s.uid != client.uid).count())
                    .sum()
            } else {
                clients.len() * servers.len()
            };
            if pairs == 0 {
                continue;
            }
            let (client, server) = (clients[0], servers[0]);
            for declared in &server.ports {
                let (port, protocol) = (declared.number, declared.protocol.as_str());
                radius.pairs_before += pairs;
                if evaluator.check(End::Pod(client), End::Pod(server), port, protocol)
                    != Verdict::Allowed
                {
                    continue;
                }
                radius.pairs_after += pairs;
                for client in clients {
                    for server in servers {
                        if client.uid != server.uid {
                            note_beyond(&mut beyond, observed, client, server, port, protocol);
                        }
                    }
                }
            }
        }
    }
    radius.open_beyond_observed = beyond.into_iter().collect();
    radius
}

/// One pair left open that no observed edge stands for, by workload.
fn note_beyond(
    beyond: &mut BTreeSet<String>,
    observed: &BTreeSet<(WorkloadRef, WorkloadRef, u16, String)>,
    client: &PodEntry,
    server: &PodEntry,
    port: u16,
    protocol: &str,
) {
    let key = (
        client.workload.clone(),
        server.workload.clone(),
        port,
        protocol.to_ascii_uppercase(),
    );
    if !observed.contains(&key) {
        beyond.insert(format!(
            "{}/{} -> {}/{} {}/{}",
            client.namespace,
            client.workload.name,
            server.namespace,
            server.workload.name,
            protocol.to_ascii_lowercase(),
            port
        ));
    }
}

/// The blast radius pod by pod: for sets the class key cannot describe,
/// and as the tests' reference.
fn blast_radius_per_pod(
    evaluator: &Evaluator<'_>,
    pods: &[&PodEntry],
    observed: &BTreeSet<(WorkloadRef, WorkloadRef, u16, String)>,
) -> BlastRadius {
    let mut radius = BlastRadius::default();
    let mut beyond: BTreeSet<String> = BTreeSet::new();
    for client in pods {
        for server in pods {
            if client.uid == server.uid {
                continue;
            }
            for declared in &server.ports {
                let (port, protocol) = (declared.number, declared.protocol.as_str());
                radius.pairs_before += 1;
                if evaluator.check(End::Pod(client), End::Pod(server), port, protocol)
                    == Verdict::Allowed
                {
                    radius.pairs_after += 1;
                    note_beyond(&mut beyond, observed, client, server, port, protocol);
                }
            }
        }
    }
    radius.open_beyond_observed = beyond.into_iter().collect();
    radius
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::evaluate::load_policy_set;

    /// Pods of one class (same namespace, labels, ports) counted once must
    /// give what pod-by-pod counting gives, ipBlocks on pod IPs included.
    #[test]
    fn classes_count_as_pods_do() {
        let inventory = Inventory::parse(r#"{"kind":"List","items":[
          {"kind":"Namespace","metadata":{"name":"a"}},
          {"kind":"Namespace","metadata":{"name":"b"}},
          {"kind":"Pod","metadata":{"name":"web-1","namespace":"a","uid":"1","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.0.1"}},
          {"kind":"Pod","metadata":{"name":"web-2","namespace":"a","uid":"2","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.0.2"}},
          {"kind":"Pod","metadata":{"name":"web-3","namespace":"a","uid":"3","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.9.3"}},
          {"kind":"Pod","metadata":{"name":"api-1","namespace":"b","uid":"4","labels":{"app":"api"}},"spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080},{"containerPort":53,"protocol":"UDP"}]}]},"status":{"podIP":"10.0.1.4"}},
          {"kind":"Pod","metadata":{"name":"api-2","namespace":"b","uid":"5","labels":{"app":"api"}},"spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080},{"containerPort":53,"protocol":"UDP"}]}]},"status":{"podIP":"10.0.1.5"}}
        ]}"#).unwrap();
        let dir = std::env::temp_dir().join(format!("netflow-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("p.yaml"),
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: b}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/24}}]\n    ports: [{port: http}]\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: a}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}]}, {to: [{namespaceSelector: {}}], ports: [{port: 8080}]}]}\n",
        )
        .unwrap();
        let policies = load_policy_set(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let dns = BTreeMap::new();
        let evaluator = Evaluator::for_set(&policies, &inventory, &dns);
        let observed = BTreeSet::new();
        let pods: Vec<&PodEntry> = inventory.pods.iter().collect();
        let by_class = blast_radius(&evaluator, &policies, &inventory, &observed);
        let by_pod = blast_radius_per_pod(&evaluator, &pods, &observed);
        assert_eq!(by_class.pairs_before, by_pod.pairs_before);
        assert_eq!(by_class.pairs_after, by_pod.pairs_after);
        assert_eq!(by_class.open_beyond_observed, by_pod.open_beyond_observed);
        // web-3 (outside the ipBlock) reaches less of api than web-1 and web-2.
        assert!(by_pod.pairs_after > 0 && by_pod.pairs_after < by_pod.pairs_before);
    }
}
