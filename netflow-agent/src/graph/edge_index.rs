//! The graph's edges found by their ends and key.
//!
//! Every flow record a build or the daemon adds looks up its edge, and a
//! week of a large cluster holds a million. The index holds only each
//! edge's number (4 bytes a slot, not the 16 of a key and number beside
//! it): a lookup reads the edge itself to compare, which adding the
//! record's counts to it reads anyway, and the index, a quarter of the
//! size, stays in cache far longer (docs/performance.md, "The edge index").

use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};

use super::{Edge, EdgeKey, Hashing};
use crate::model::Endpoint;

/// What identifies an edge: client, server, protocol and server port.
pub type EdgeEnds = (NodeIndex, NodeIndex, EdgeKey);

/// Every edge of one graph by its ends (the graph is handed to each call:
/// the index holds numbers into it, nothing more).
#[derive(Clone, Debug, Default)]
pub struct EdgeIndexTable {
    edges: HashTable<EdgeIndex>,
    hashing: Hashing,
}

type Graph = DiGraph<Endpoint, Edge>;

/// The ends and key of an edge the graph holds.
fn ends_of(graph: &Graph, edge: EdgeIndex) -> EdgeEnds {
    let raw = &graph.raw_edges()[edge.index()];
    (raw.source(), raw.target(), raw.weight.key)
}

impl EdgeIndexTable {
    fn hash_of(&self, graph: &Graph, edge: EdgeIndex) -> u64 {
        self.hashing.hash_one(ends_of(graph, edge))
    }

    /// The edge of `graph` with these ends and key.
    pub fn find(&self, graph: &Graph, ends: EdgeEnds) -> Option<EdgeIndex> {
        self.edges
            .find(self.hashing.hash_one(ends), |&edge| {
                ends_of(graph, edge) == ends
            })
            .copied()
    }

    /// Indexes `edge`, just added to `graph` (no edge of its ends and key
    /// indexed).
    pub fn insert_new(&mut self, graph: &Graph, edge: EdgeIndex) {
        if self.edges.len() == self.edges.capacity() {
            // The new edge is in the graph: indexed with the others.
            self.rebuild_with_room(graph, 2 * graph.edge_count());
            return;
        }
        let hash = self.hash_of(graph, edge);
        let hashing = &self.hashing;
        self.edges
            .insert_unique(hash, edge, |&edge| hashing.hash_one(ends_of(graph, edge)));
    }

    /// Room for `additional` more edges of `graph`.
    pub fn reserve(&mut self, graph: &Graph, additional: usize) {
        let room = self.edges.len().saturating_add(additional);
        if room > self.edges.capacity() {
            self.rebuild_with_room(graph, room);
        }
    }

    /// Every edge of `graph` indexed anew (its edge numbers moved).
    pub fn rebuild(&mut self, graph: &Graph) {
        self.rebuild_with_room(graph, graph.edge_count());
    }

    /// Indexes every edge of `graph` in a table with room for `room`. The
    /// edges are read in their order, not the table's: growing the table
    /// of a million edges by moving its slots would read each edge's ends
    /// again at random (a cache miss each), where this reads them as they
    /// lie.
    fn rebuild_with_room(&mut self, graph: &Graph, room: usize) {
        let mut edges = HashTable::with_capacity(room.max(graph.edge_count()));
        let hashing = &self.hashing;
        for edge in graph.edge_indices() {
            let hash = hashing.hash_one(ends_of(graph, edge));
            edges.insert_unique(hash, edge, |&edge| hashing.hash_one(ends_of(graph, edge)));
        }
        self.edges = edges;
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        graph::{
            CommGraph, EdgeKey,
            tests::{stats, workload},
        },
        model::Protocol,
    };

    #[test]
    fn every_edge_is_found_once_as_the_index_grows_and_after_a_prune() {
        let mut graph = CommGraph::new();
        // Room expected for more edges than will come, and for more than
        // any graph is given: neither changes what is found.
        graph.expect_edges(u64::MAX);
        graph.expect_edges(20_000);
        let clients: Vec<_> = (0..20)
            .map(|n| graph.upsert_endpoint(workload("a", &format!("client{n}"))))
            .collect();
        let servers: Vec<_> = (0..50)
            .map(|n| graph.upsert_endpoint(workload("b", &format!("server{n}"))))
            .collect();
        let key = |port| EdgeKey {
            protocol: Protocol(if port % 2 == 0 { 6 } else { 17 }),
            port,
        };
        // Every edge twice, the second time once the index has grown past
        // it many times over: 10 000 edges, each seen twice.
        for round in 0..2 {
            for (c, &client) in clients.iter().enumerate() {
                for (s, &server) in servers.iter().enumerate() {
                    for port in 0..10 {
                        let seen = 1_764_000_000 + (c * 500 + s * 10 + port) as u64;
                        graph.observe(client, server, key(port as u16), &stats(seen, seen, 1));
                    }
                }
            }
            assert_eq!(graph.edge_count(), 10_000, "round {round}");
        }
        assert!(
            graph
                .edges()
                .iter()
                .all(|(_, _, edge)| edge.stats.volume().connections == 2)
        );
        // Pruned, the edges left move to new numbers: each is found again.
        graph.keep_most_recent_edges(5_000);
        assert_eq!(graph.edge_count(), 5_000);
        let kept = graph.edges().len();
        for c in 10..20 {
            let client = graph.upsert_endpoint(workload("a", &format!("client{c}")));
            for s in 0..50 {
                let server = graph.upsert_endpoint(workload("b", &format!("server{s}")));
                for port in 0..10 {
                    let seen = 1_764_000_000 + (c * 500 + s * 10 + port) as u64;
                    graph.observe(client, server, key(port as u16), &stats(seen, seen, 1));
                }
            }
        }
        assert_eq!(graph.edge_count(), kept, "no edge made twice");
        assert!(
            graph
                .edges()
                .iter()
                .all(|(_, _, edge)| edge.stats.volume().connections == 3)
        );
    }
}
