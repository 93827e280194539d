//! The communication graph: who talks to whom, over the audit window.
//!
//! Nodes are endpoints (workloads, nodes/hosts, external addresses, the
//! metadata service); edges are client -> server on one protocol and server
//! port, with when they were first and last seen, the days they were seen on,
//! and how much went over them. The graph is a petgraph `DiGraph` in memory
//! and a versioned JSON file on disk ([`file`](mod@file)), saved atomically.

pub mod build;
mod days;
mod edge_index;
mod edge_names;
pub mod export;
pub mod file;
pub mod http_calls;
pub mod pull;

use std::collections::{BTreeMap, HashMap, HashSet};

use petgraph::{
    graph::{DiGraph, EdgeIndex, NodeIndex},
    visit::EdgeRef as _,
};
use serde::{Deserialize, Serialize};

use self::edge_index::EdgeIndexTable;
pub use self::{days::Days, edge_names::EdgeNames};

use crate::model::{Endpoint, Protocol};
pub use http_calls::HttpCalls;

/// How much went over an edge, as one side of it counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub connections: u64,
    /// Of `connections`, those that were answered (TCP handshake done, UDP
    /// reply seen). Only these prove the edge: an attempt that was refused
    /// or never answered (a scan) never becomes an allow.
    #[serde(default)]
    pub established: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Volume {
    fn add(&mut self, other: &Volume) {
        self.connections += other.connections;
        self.established += other.established;
        self.packets += other.packets;
        self.bytes += other.bytes;
    }

    fn max(&self, other: &Volume) -> Volume {
        Volume {
            connections: self.connections.max(other.connections),
            established: self.established.max(other.established),
            packets: self.packets.max(other.packets),
            bytes: self.bytes.max(other.bytes),
        }
    }
}

/// Traffic seen on one client -> server edge. Times are Unix seconds.
///
/// A connection between two recorded pods is seen twice: by the client's
/// egress and by the server's ingress, possibly on two nodes. Each side's
/// count is kept apart and the edge's volume is the larger of the two, so
/// merging the graphs of both nodes does not count it twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeStats {
    pub first_seen: u64,
    pub last_seen: u64,
    /// UTC days on which the edge carried traffic.
    pub days_seen: Days,
    pub seen_by_client: Volume,
    pub seen_by_server: Volume,
    /// For an edge to an external address: the names the client workload
    /// itself resolved it by (what its policy may name it by).
    #[serde(default, skip_serializing_if = "EdgeNames::is_empty")]
    pub dns_names: EdgeNames,
    /// Plaintext HTTP calls seen on the edge.
    #[serde(default, skip_serializing_if = "HttpCalls::is_empty")]
    pub http: HttpCalls,
}

impl EdgeStats {
    fn absorb(&mut self, other: &EdgeStats) {
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, theirs) => theirs,
            (ours, 0) => ours,
            (ours, theirs) => ours.min(theirs),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.days_seen.extend(&other.days_seen);
        self.seen_by_client.add(&other.seen_by_client);
        self.seen_by_server.add(&other.seen_by_server);
        self.dns_names.absorb(&other.dns_names);
        if !other.http.is_empty() {
            self.http.absorb(&other.http);
        }
    }

    /// The edge's volume: the larger of the two sides' counts.
    pub fn volume(&self) -> Volume {
        self.seen_by_client.max(&self.seen_by_server)
    }
}

/// What identifies an edge between two endpoints: the server's port, never
/// the client's ephemeral one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub key: EdgeKey,
    pub stats: EdgeStats,
}

/// The graph's indexes' hashing: every flow record a build or the daemon
/// adds looks up its edge, and SipHash was a fifth of that. Seeded at random
/// per process; the keys are node indexes, a protocol and a port.
type Hashing = foldhash::fast::RandomState;

/// The most edges [`CommGraph::expect_edges`] sets room aside for: 4 M
/// edges are 544 MB of address space.
const MOST_EXPECTED_EDGES: usize = 1 << 22;

/// The graph in memory.
#[derive(Clone, Debug, Default)]
pub struct CommGraph {
    graph: DiGraph<Endpoint, Edge>,
    by_id: HashMap<String, NodeIndex, Hashing>,
    by_edge: EdgeIndexTable,
    /// Client id -> edges dropped because that client went over its edge
    /// budget (a scan, a client spraying connections): kept so the policy
    /// review can name it.
    over_budget: BTreeMap<String, u64>,
}

impl CommGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `endpoint`, or merges it into the node with the same id.
    pub fn upsert_endpoint(&mut self, endpoint: Endpoint) -> NodeIndex {
        if let Some(&index) = self.by_id.get(&endpoint.id) {
            self.graph[index].absorb(&endpoint);
            return index;
        }
        let id = endpoint.id.clone();
        let index = self.graph.add_node(endpoint);
        self.by_id.insert(id, index);
        index
    }

    /// Records traffic from `client` to `server` (both already added).
    pub fn observe(
        &mut self,
        client: NodeIndex,
        server: NodeIndex,
        key: EdgeKey,
        stats: &EdgeStats,
    ) {
        // One probe of the index whether the edge is new or not: a week's
        // log of a large cluster adds a million edges.
        match self.by_edge.find(&self.graph, (client, server, key)) {
            Some(known) => self.graph[known].stats.absorb(stats),
            None => {
                let edge = self.graph.add_edge(
                    client,
                    server,
                    Edge {
                        key,
                        stats: stats.clone(),
                    },
                );
                self.by_edge.insert_new(&self.graph, edge);
            }
        }
    }

    /// Room for `edges` more edges, so a graph read from a file does not
    /// copy its edges as they outgrow their storage.
    pub fn reserve_edges(&mut self, edges: usize) {
        self.graph.reserve_edges(edges);
        self.by_edge.reserve(&self.graph, edges);
    }

    /// Address space for about `edges` more edges, when it can be had: a
    /// build whose records each make a new edge otherwise copies its edges
    /// every time their storage doubles (at 1 M edges 140 MB copied, and
    /// as many pages touched twice). Pages are touched only as edges fill
    /// them, so room set aside for records that make no new edge costs
    /// no memory; at most [`MOST_EXPECTED_EDGES`], and none when the
    /// system would not give it (a hint is never worth an abort).
    pub fn expect_edges(&mut self, edges: u64) {
        let edges = usize::try_from(edges)
            .unwrap_or(usize::MAX)
            .min(MOST_EXPECTED_EDGES)
            .saturating_sub(self.graph.edge_count());
        let bytes = edges * std::mem::size_of::<petgraph::graph::Edge<Edge>>();
        let mut probe: Vec<u8> = Vec::new();
        if probe.try_reserve_exact(bytes).is_ok() {
            drop(probe);
            self.graph.reserve_edges(edges);
        }
    }

    /// Adds every node and edge of `other` (graphs of several nodes or weeks).
    pub fn merge(&mut self, other: &CommGraph) {
        for edge in other.graph.edge_indices() {
            let Some((from, to)) = other.graph.edge_endpoints(edge) else {
                continue;
            };
            let client = self.upsert_endpoint(other.graph[from].clone());
            let server = self.upsert_endpoint(other.graph[to].clone());
            let Edge { key, stats } = &other.graph[edge];
            self.observe(client, server, *key, stats);
        }
        for node in other.graph.node_weights() {
            self.upsert_endpoint(node.clone());
        }
        for (client, dropped) in &other.over_budget {
            *self.over_budget.entry(client.clone()).or_default() += dropped;
        }
    }

    fn set_over_budget(&mut self, over_budget: BTreeMap<String, u64>) {
        self.over_budget = over_budget;
    }

    /// Client id -> edges dropped over its budget (see [`Self::cap_per_client`]).
    pub fn over_budget(&self) -> &BTreeMap<String, u64> {
        &self.over_budget
    }

    /// At most `budget` edges per client, its most recently seen: one
    /// client spraying connections (a scan) cannot push the rest of the
    /// cluster's edges out of a bounded graph. What a client loses is
    /// added to [`Self::over_budget`]. Returns how many edges were dropped.
    pub fn cap_per_client(&mut self, budget: usize) -> u64 {
        let mut by_client: HashMap<NodeIndex, Vec<(u64, EdgeIndex)>> = HashMap::new();
        for edge in self.graph.edge_indices() {
            if let Some((from, _)) = self.graph.edge_endpoints(edge) {
                by_client
                    .entry(from)
                    .or_default()
                    .push((self.graph[edge].stats.last_seen, edge));
            }
        }
        let mut dropped_edges = HashSet::new();
        for (client, mut edges) in by_client {
            if edges.len() <= budget {
                continue;
            }
            // Most recent first; ties in a stable order (by edge index).
            edges.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let lost = edges.split_off(budget);
            *self
                .over_budget
                .entry(self.graph[client].id.clone())
                .or_default() += lost.len() as u64;
            dropped_edges.extend(lost.into_iter().map(|(_, edge)| edge));
        }
        self.remove_edges(|edge, _| dropped_edges.contains(&edge)) as u64
    }

    /// Removes the edges `drop` names and the endpoints left without edges
    /// (in place: the daemon prunes its graph every interval, and most
    /// intervals prune nothing). Returns how many edges went.
    fn remove_edges(&mut self, drop: impl Fn(EdgeIndex, &Edge) -> bool) -> usize {
        let dropped: HashSet<EdgeIndex> = self
            .graph
            .edge_indices()
            .filter(|&edge| drop(edge, &self.graph[edge]))
            .collect();
        if dropped.is_empty() {
            return 0;
        }
        let mut left = HashSet::new();
        for &edge in &dropped {
            if let Some((from, to)) = self.graph.edge_endpoints(edge) {
                left.extend([from, to]);
            }
        }
        self.graph.retain_edges(|_, edge| !dropped.contains(&edge));
        // Indices move as elements go: endpoints are found again by id.
        let left: HashSet<String> = left
            .into_iter()
            .filter(|&node| self.graph.neighbors_undirected(node).next().is_none())
            .map(|node| self.graph[node].id.clone())
            .collect();
        self.graph
            .retain_nodes(|graph, node| !left.contains(&graph[node].id));
        self.by_id = self
            .graph
            .node_indices()
            .map(|node| (self.graph[node].id.clone(), node))
            .collect();
        self.by_edge.rebuild(&self.graph);
        dropped.len()
    }

    /// The endpoint at a node this graph handed out.
    pub fn node(&self, index: NodeIndex) -> &Endpoint {
        &self.graph[index]
    }

    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.by_id.get(id).map(|&index| &self.graph[index])
    }

    /// Endpoints sorted by id.
    pub fn endpoints(&self) -> Vec<&Endpoint> {
        let mut endpoints: Vec<_> = self.graph.node_weights().collect();
        endpoints.sort_by(|a, b| a.id.cmp(&b.id));
        endpoints
    }

    /// Edges as (client, server, edge), sorted for deterministic output:
    /// by client id, server id, then protocol and port.
    pub fn edges(&self) -> Vec<(&Endpoint, &Endpoint, &Edge)> {
        // Ids are unique: edges sort by their ends' ranks among the sorted
        // ids, in the same order as by the ids themselves, without
        // comparing strings a million edges times twenty.
        let mut nodes: Vec<NodeIndex> = self.graph.node_indices().collect();
        nodes.sort_unstable_by(|a, b| self.graph[*a].id.cmp(&self.graph[*b].id));
        // A `Graph` numbers its nodes 0..count.
        let mut rank = vec![0u32; self.graph.node_count()];
        for (position, node) in nodes.iter().enumerate() {
            rank[node.index()] = position as u32;
        }
        let mut edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|edge| {
                let order = (
                    rank[edge.source().index()],
                    rank[edge.target().index()],
                    edge.weight().key,
                );
                (order, edge)
            })
            .collect();
        edges.sort_by_key(|(order, _)| *order);
        edges
            .into_iter()
            .map(|(_, edge)| {
                (
                    &self.graph[edge.source()],
                    &self.graph[edge.target()],
                    edge.weight(),
                )
            })
            .collect()
    }

    /// Edges sorted by the client's namespace, then client and server names.
    pub fn edges_by_namespace(&self) -> Vec<(&Endpoint, &Endpoint, &Edge)> {
        let mut edges = self.edges();
        edges.sort_by(|a, b| {
            (
                &a.0.namespace,
                &a.0.name,
                &a.1.namespace,
                &a.1.name,
                a.2.key,
            )
                .cmp(&(
                    &b.0.namespace,
                    &b.0.name,
                    &b.1.namespace,
                    &b.1.name,
                    b.2.key,
                ))
        });
        edges
    }

    /// Removes the edges last seen before `cutoff` (Unix seconds), and the
    /// endpoints they leave without edges. Returns how many edges went.
    pub fn remove_edges_seen_before(&mut self, cutoff: u64) -> usize {
        self.remove_edges(|_, edge| edge.stats.last_seen < cutoff)
    }

    /// Keeps at most `max` edges: the ones seen most recently (ties at the
    /// cutoff stay). Returns how many edges were dropped.
    pub fn keep_most_recent_edges(&mut self, max: usize) -> usize {
        let count = self.edge_count();
        if count <= max {
            return 0;
        }
        let mut last_seen: Vec<u64> = self
            .graph
            .edge_weights()
            .map(|edge| edge.stats.last_seen)
            .collect();
        let (_, cutoff, _) = last_seen.select_nth_unstable(count - max);
        self.remove_edges_seen_before(*cutoff)
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use std::collections::BTreeSet;

    use super::*;
    use crate::model::{EndpointKind, LabelMap, utc_day};

    pub fn workload(namespace: &str, name: &str) -> Endpoint {
        Endpoint {
            id: format!("workload:{namespace}/Deployment/{name}"),
            kind: EndpointKind::Workload,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
            workload_kind: Some("Deployment".to_string()),
            labels: LabelMap::from_iter([("app".to_string(), name.to_string())]),
            addresses: BTreeSet::new(),
            dns_names: BTreeSet::new(),
            host_workloads: BTreeSet::new(),
        }
    }

    pub fn stats(first: u64, last: u64, connections: u64) -> EdgeStats {
        EdgeStats {
            first_seen: first,
            last_seen: last,
            days_seen: Days::of_span(first, last),
            seen_by_client: Volume {
                connections,
                established: connections,
                packets: connections * 10,
                bytes: connections * 1000,
            },
            seen_by_server: Volume::default(),
            dns_names: EdgeNames::default(),
            http: HttpCalls::default(),
        }
    }

    pub fn sample() -> CommGraph {
        let mut graph = CommGraph::new();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let cart = graph.upsert_endpoint(workload("shop", "cart"));
        let tcp = |port| EdgeKey {
            protocol: Protocol(6),
            port,
        };
        graph.observe(
            frontend,
            cart,
            tcp(7070),
            &stats(1_764_000_000, 1_764_100_000, 3),
        );
        graph
    }

    #[test]
    fn a_full_graph_keeps_the_most_recently_seen_edges() {
        let mut graph = CommGraph::new();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        for port in 0..10u16 {
            let peer = graph.upsert_endpoint(workload("shop", &format!("peer{port}")));
            let key = EdgeKey {
                protocol: Protocol(6),
                port,
            };
            let seen = 1_764_000_000 + u64::from(port) * 60;
            graph.observe(frontend, peer, key, &stats(seen, seen, 1));
        }
        assert_eq!(graph.keep_most_recent_edges(20), 0);
        let dropped = graph.keep_most_recent_edges(4);
        assert_eq!((graph.edge_count(), dropped), (4, 6));
        let mut ports: Vec<u16> = graph.edges().iter().map(|(_, _, e)| e.key.port).collect();
        ports.sort();
        assert_eq!(ports, vec![6, 7, 8, 9]);
        // Endpoints left without edges go with them, and the rest are
        // still found by id and by edge.
        assert_eq!(graph.node_count(), 5);
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let peer = graph.upsert_endpoint(workload("shop", "peer9"));
        assert_eq!(graph.node_count(), 5);
        let key = EdgeKey {
            protocol: Protocol(6),
            port: 9,
        };
        graph.observe(frontend, peer, key, &stats(1, 1, 1));
        assert_eq!(graph.edge_count(), 4);
    }

    #[test]
    fn the_same_edge_is_aggregated_not_duplicated() {
        let mut graph = sample();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let cart = graph.upsert_endpoint(workload("shop", "cart"));
        let key = EdgeKey {
            protocol: Protocol(6),
            port: 7070,
        };
        graph.observe(frontend, cart, key, &stats(1_763_000_000, 1_764_500_000, 2));
        assert_eq!(graph.node_count(), 2);
        assert_eq!(graph.edge_count(), 1);
        let (_, _, edge) = graph.edges()[0];
        assert_eq!(edge.stats.volume().connections, 5);
        assert_eq!(edge.stats.first_seen, 1_763_000_000);
        assert_eq!(edge.stats.last_seen, 1_764_500_000);
        assert_eq!(edge.stats.days_seen.len(), 4);
    }

    #[test]
    fn another_port_is_another_edge() {
        let mut graph = sample();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let cart = graph.upsert_endpoint(workload("shop", "cart"));
        graph.observe(
            frontend,
            cart,
            EdgeKey {
                protocol: Protocol(17),
                port: 7070,
            },
            &stats(1, 2, 1),
        );
        assert_eq!(graph.edge_count(), 2);
    }

    #[test]
    fn merging_adds_up_edges_and_keeps_every_node() {
        let mut merged = sample();
        let mut other = sample();
        other.upsert_endpoint(workload("shop", "idle"));
        merged.merge(&other);
        assert_eq!(merged.node_count(), 3);
        assert_eq!(merged.edge_count(), 1);
        assert_eq!(merged.edges()[0].2.stats.volume().connections, 6);
    }

    #[test]
    fn both_sides_of_one_connection_count_once() {
        let mut graph = sample();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let cart = graph.upsert_endpoint(workload("shop", "cart"));
        let key = EdgeKey {
            protocol: Protocol(6),
            port: 7070,
        };
        let mut server_side = stats(1_764_000_000, 1_764_100_000, 0);
        server_side.seen_by_server = Volume {
            connections: 3,
            established: 3,
            packets: 30,
            bytes: 3000,
        };
        graph.observe(frontend, cart, key, &server_side);
        assert_eq!(graph.edges()[0].2.stats.volume().connections, 3);
    }

    #[test]
    fn edges_older_than_the_window_leave() {
        let mut graph = sample();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let old = graph.upsert_endpoint(workload("shop", "old"));
        graph.observe(
            frontend,
            old,
            EdgeKey {
                protocol: Protocol(6),
                port: 1,
            },
            &stats(1_000, 2_000, 1),
        );
        assert_eq!(graph.remove_edges_seen_before(1_764_000_000), 1);
        assert_eq!(graph.edge_count(), 1);
        assert!(graph.endpoint("workload:shop/Deployment/old").is_none());
        assert!(
            graph
                .endpoint("workload:shop/Deployment/frontend")
                .is_some()
        );
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_764_028_800), "2025-11-25");
    }

    #[test]
    fn the_per_client_budget_keeps_each_clients_newest_edges() {
        let mut graph = CommGraph::new();
        let sprayer = graph.upsert_endpoint(workload("shop", "scanner"));
        let quiet = graph.upsert_endpoint(workload("shop", "web"));
        let db = graph.upsert_endpoint(workload("data", "db"));
        for port in 0..20u16 {
            graph.observe(
                sprayer,
                db,
                EdgeKey {
                    protocol: Protocol(6),
                    port: 1000 + port,
                },
                &stats(100 + u64::from(port), 100 + u64::from(port), 1),
            );
        }
        graph.observe(
            quiet,
            db,
            EdgeKey {
                protocol: Protocol(6),
                port: 5432,
            },
            &stats(1, 1, 1),
        );
        let mut capped = graph.clone();
        let dropped = capped.cap_per_client(5);
        assert_eq!(dropped, 15);
        assert_eq!(capped.edge_count(), 6);
        let ports: BTreeSet<u16> = capped
            .edges()
            .iter()
            .filter(|(client, _, _)| client.name == "scanner")
            .map(|(_, _, edge)| edge.key.port)
            .collect();
        assert_eq!(ports, (1015..1020).collect());
        let scanner = "workload:shop/Deployment/scanner";
        assert_eq!(capped.over_budget()[scanner], 15);
        // Kept through the file and added up by a merge.
        let path = std::path::Path::new("graph.json");
        let reread =
            CommGraph::parse(&serde_json::to_string(&capped.file()).unwrap(), path).unwrap();
        assert_eq!(reread.over_budget()[scanner], 15);
        let mut merged = reread.clone();
        merged.merge(&capped);
        assert_eq!(merged.over_budget()[scanner], 30);
    }
}
