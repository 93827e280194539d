//! `policy tests`: netassert (v2) test cases from the graph, to run after
//! every policy change: every observed edge that connected must still
//! connect; attempts that never connected, unobserved pairs, other ports of
//! the same servers and the metadata service must not.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{
    graph::CommGraph,
    identity::METADATA_ADDRESSES,
    inventory::{Inventory, WorkloadRef},
    model::{Endpoint, EndpointKind},
};

/// Kinds netassert can run a test from or to.
const RESOURCE_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Pod"];
/// Unobserved servers tried per client.
const UNOBSERVED_PER_CLIENT: usize = 3;

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TestCase {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol: String,
    pub target_port: u16,
    pub timeout_seconds: u32,
    pub attempts: u32,
    /// 0: must connect; 1: must not.
    pub exit_code: u8,
    pub src: Target,
    pub dst: Target,
}

impl TestCase {
    /// The workload kind a test's `k8sResource.kind` (written in lower
    /// case) names, if netassert runs tests from it.
    pub fn resource_kind(kind: &str) -> Option<&'static str> {
        RESOURCE_KINDS
            .iter()
            .copied()
            .find(|known| known.eq_ignore_ascii_case(kind))
    }
}

/// A test end: a Kubernetes resource or (as destination) a host.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Target {
    #[serde(rename = "k8sResource", skip_serializing_if = "Option::is_none")]
    pub k8s_resource: Option<K8sResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct K8sResource {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Host {
    pub name: String,
}

impl Target {
    fn resource(kind: &str, name: &str, namespace: &str) -> Self {
        Target {
            k8s_resource: Some(K8sResource {
                kind: kind.to_ascii_lowercase(),
                name: name.into(),
                namespace: namespace.into(),
            }),
            host: None,
        }
    }

    fn host(name: &str) -> Self {
        Target {
            k8s_resource: None,
            host: Some(Host { name: name.into() }),
        }
    }
}

/// What could not be turned into a test, and why.
#[derive(Debug, Default)]
pub struct Skipped(pub Vec<String>);

fn resource(endpoint: &Endpoint) -> Option<Target> {
    let kind = endpoint.workload_kind.as_deref()?;
    (endpoint.kind == EndpointKind::Workload && RESOURCE_KINDS.contains(&kind)).then(|| {
        Target::resource(
            kind,
            &endpoint.name,
            endpoint.namespace.as_deref().unwrap_or_default(),
        )
    })
}

fn case(
    name: String,
    protocol: &str,
    port: u16,
    exit_code: u8,
    src: Target,
    dst: Target,
) -> TestCase {
    TestCase {
        name,
        kind: "k8s".into(),
        protocol: protocol.into(),
        target_port: port,
        timeout_seconds: 20,
        attempts: if exit_code == 0 { 3 } else { 2 },
        exit_code,
        src,
        dst,
    }
}

fn slug(endpoint: &Endpoint) -> String {
    endpoint.label().replace(['/', '.', ':'], "-")
}

pub fn test_cases(graph: &CommGraph, inventory: &Inventory) -> (Vec<TestCase>, Skipped) {
    let mut cases = Vec::new();
    let mut skipped = Skipped::default();
    let edges = graph.edges();
    // (client id) -> servers it talks to, with ports.
    let mut talks: BTreeMap<String, BTreeSet<(String, u16)>> = BTreeMap::new();
    for (client, server, edge) in &edges {
        talks
            .entry(client.id.clone())
            .or_default()
            .insert((server.id.clone(), edge.key.port));
    }
    for (client, server, edge) in &edges {
        let protocol = edge.key.protocol.to_string();
        let port = edge.key.port;
        let Some(src) = resource(client) else {
            skipped.0.push(format!("{} -> {}: netassert runs tests from Deployments, StatefulSets, DaemonSets and Pods only", client.id, server.id));
            continue;
        };
        if server.kind == EndpointKind::Metadata {
            continue; // covered by the metadata tests below
        }
        let dst = match resource(server) {
            Some(dst) => dst,
            None if protocol == "tcp" && !server.addresses.is_empty() => {
                Target::host(server.addresses.iter().next().map_or("", String::as_str))
            }
            None => {
                skipped.0.push(format!(
                    "{} -> {} {protocol}/{port}: netassert tests hosts over TCP only",
                    client.id, server.id
                ));
                continue;
            }
        };
        // Never answered: no policy allows it, and it must stay closed (a
        // scan, a broken client). One-way UDP is allowed only on request
        // (`--allow-one-way-udp`), so it is not asserted.
        let connected = super::generate::proven(edge, false);
        if !connected && protocol == "udp" {
            skipped.0.push(format!(
                "{} -> {} udp/{port}: never answered; allowed only with --allow-one-way-udp",
                client.id, server.id
            ));
            continue;
        }
        let (outcome, exit_code) = if connected {
            ("allowed", 0)
        } else {
            ("never-connected-denied", 1)
        };
        cases.push(case(
            format!(
                "{}-to-{}-{protocol}-{port}-{outcome}",
                slug(client),
                slug(server)
            ),
            &protocol,
            port,
            exit_code,
            src,
            dst,
        ));
        if !connected {
            continue;
        }
        // The next port of the same server: policies allow ports, not servers.
        if resource(server).is_some() && protocol == "tcp" {
            let other = port.wrapping_add(1).max(1);
            let observed = talks
                .get(&client.id)
                .is_some_and(|t| t.contains(&(server.id.clone(), other)));
            if !observed && let (Some(src), Some(dst)) = (resource(client), resource(server)) {
                cases.push(case(
                    format!("{}-to-{}-tcp-{other}-denied", slug(client), slug(server)),
                    "tcp",
                    other,
                    1,
                    src,
                    dst,
                ));
            }
        }
    }
    // Per client: the metadata service and a few servers it never talked to.
    let clients: BTreeMap<&str, &Endpoint> =
        edges.iter().map(|(c, _, _)| (c.id.as_str(), *c)).collect();
    // Servers: every workload of the inventory with a declared port, but
    // the cluster DNS, which every pod may reach.
    let dns = super::generate::cluster_dns(inventory);
    let is_dns = |pod: &crate::inventory::PodEntry| {
        dns.as_ref().is_some_and(|dns| {
            *pod.namespace == *dns.namespace
                && dns.labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
        })
    };
    let mut servers: BTreeMap<WorkloadRef, (u16, String)> = BTreeMap::new();
    for pod in &inventory.pods {
        if let Some(port) = pod.ports.first()
            && RESOURCE_KINDS.contains(&pod.workload.kind.as_str())
            && !pod.host_network
            && !is_dns(pod)
        {
            servers
                .entry(WorkloadRef::clone(&pod.workload))
                .or_insert((port.number, port.protocol.to_string()));
        }
    }
    for client in clients.values() {
        let Some(src) = resource(client) else {
            continue;
        };
        for address in METADATA_ADDRESSES.iter().take(1) {
            cases.push(case(
                format!("{}-to-metadata-service-denied", slug(client)),
                "tcp",
                80,
                1,
                src.clone(),
                Target::host(&address.to_string()),
            ));
        }
        let known = talks.get(&client.id).cloned().unwrap_or_default();
        let unobserved = servers
            .iter()
            .filter(|(server, _)| {
                let id = crate::identity::workload_id(server);
                id != client.id && !known.iter().any(|(talked, _)| *talked == id)
            })
            .take(UNOBSERVED_PER_CLIENT);
        for (server, (port, protocol)) in unobserved {
            let dst = Target::resource(&server.kind, &server.name, &server.namespace);
            let name = format!(
                "{}-to-{}-{}-{protocol}-{port}-unobserved-denied",
                slug(client),
                server.namespace,
                server.name
            );
            cases.push(case(name, protocol, *port, 1, src.clone(), dst));
        }
    }
    (cases, skipped)
}

/// The netassert file: a YAML list, with what was skipped as comments.
pub fn to_yaml(cases: &[TestCase], skipped: &Skipped) -> Result<String, serde_norway::Error> {
    let mut out =
        String::from("# netassert v2 tests generated by netflow from the observed graph.\n");
    for line in &skipped.0 {
        out.push_str(&format!("# skipped: {line}\n"));
    }
    out.push_str(&serde_norway::to_string(cases)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::generate::tests::{WEB, flow, graph_of};

    /// A scan during the audit week: web tried db's port 22 and was refused.
    /// The generated policies never allow it, so a test saying it must
    /// connect would contradict them; it must say it stays closed.
    #[test]
    fn an_attempt_that_never_connected_is_asserted_closed() {
        let mut refused = flow(WEB, "10.244.0.5", ("10.244.0.6", 22), 6);
        refused.handshake = crate::model::Handshake::Refused;
        refused.newly_established = false;
        let (graph, inventory) =
            graph_of(&[flow(WEB, "10.244.0.5", ("10.244.0.6", 5432), 6), refused]);
        let (cases, _) = test_cases(&graph, &inventory);
        let to_port = |port: u16| -> Vec<u8> {
            cases
                .iter()
                .filter(|case| case.target_port == port && case.dst.k8s_resource.is_some())
                .map(|case| case.exit_code)
                .collect()
        };
        assert_eq!(to_port(5432), vec![0], "{cases:#?}");
        assert_eq!(to_port(22), vec![1], "{cases:#?}");
    }

    #[test]
    fn resource_kinds_read_back_in_any_case() {
        assert_eq!(TestCase::resource_kind("statefulset"), Some("StatefulSet"));
        assert_eq!(TestCase::resource_kind("Pod"), Some("Pod"));
        assert_eq!(TestCase::resource_kind("job"), None);
    }
}
