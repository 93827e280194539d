//! `policy verify`: replay every observed edge against a set of policies over
//! the inventory's pods, and measure what stays open.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    evaluate::{End, Evaluator, Policies, Verdict},
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
                .pods
                .iter()
                .filter(|pod| pod.workload == workload && !pod.host_network)
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
    report.blast_radius = blast_radius(&evaluator, inventory, &observed);
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

fn blast_radius(
    evaluator: &Evaluator<'_>,
    inventory: &Inventory,
    observed: &BTreeSet<(WorkloadRef, WorkloadRef, u16, String)>,
) -> BlastRadius {
    let pods: Vec<&PodEntry> = inventory
        .pods
        .iter()
        .filter(|pod| !pod.host_network)
        .collect();
    let mut radius = BlastRadius::default();
    let mut beyond: BTreeMap<String, ()> = BTreeMap::new();
    for client in &pods {
        for server in &pods {
            if client.uid == server.uid {
                continue;
            }
            for declared in &server.ports {
                let (port, protocol) = (&declared.number, &declared.protocol);
                radius.pairs_before += 1;
                if evaluator.check(End::Pod(client), End::Pod(server), *port, protocol)
                    == Verdict::Allowed
                {
                    radius.pairs_after += 1;
                    let key = (
                        client.workload.clone(),
                        server.workload.clone(),
                        *port,
                        protocol.to_ascii_uppercase(),
                    );
                    if !observed.contains(&key) {
                        beyond.insert(
                            format!(
                                "{}/{} -> {}/{} {}/{}",
                                client.namespace,
                                client.workload.name,
                                server.namespace,
                                server.workload.name,
                                protocol.to_ascii_lowercase(),
                                port
                            ),
                            (),
                        );
                    }
                }
            }
        }
    }
    radius.open_beyond_observed = beyond.into_keys().collect();
    radius
}
