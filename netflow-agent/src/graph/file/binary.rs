//! The binary graph file: the graph of `graph.json`, stored compactly for
//! the agent's state and for builds that feed `policy`, where the JSON's
//! ~400 bytes per edge (keys, ids and two RFC 3339 times written out for
//! every edge) cost a million-edge build more than adding the edges did.
//! `graph export --format json` turns one into the JSON layout; every
//! command that reads a graph reads both, told apart by the first bytes.
//!
//! The file opens with [`MAGIC`] (`NFGRAPH` and the layout version, the
//! same number as the JSON's `version`), then, in postcard: the nodes as
//! one JSON text (a few thousand, each with its labels: the JSON layout is
//! theirs), the clients over their edge budget, the number of edges, and
//! each edge as [`EdgeWire`], its ends by their position among the nodes.
//! Nothing may follow. A file cut short, an edge naming no node, a time
//! past the year 9999 or bytes left over are refused, naming the edge and
//! its byte offset.

use std::{borrow::Cow, collections::BTreeMap, io, path::Path};

use petgraph::{graph::NodeIndex, visit::EdgeRef as _};
use serde::{Deserialize, Serialize};

use super::{GRAPH_VERSION, GraphFileError, HttpConnections, http_calls, invalid};
use crate::{
    graph::{CommGraph, Days, EdgeKey, EdgeStats, Volume, http_calls::CallRecord},
    model::{Endpoint, Protocol, Timestamp},
};

/// The first bytes of a binary graph file: the name, then the version.
pub const MAGIC: &[u8; 8] = b"NFGRAPH\x02";
/// [`MAGIC`] without its version byte.
pub const NAME: &[u8; 7] = b"NFGRAPH";
// The layout's version is the JSON's: a change to either is a new one.
const _: () = assert!(MAGIC[7] as u32 == GRAPH_VERSION);

/// The fewest bytes an edge takes (ends, protocol, port, times, days,
/// volumes, no extras): bounds what a file's edge count may reserve.
const MIN_EDGE_BYTES: usize = 16;

/// One edge as the binary file stores it. The order of the fields is the
/// format: postcard writes no names (a test pins the bytes).
#[derive(Debug, Serialize, Deserialize)]
struct EdgeWire<'a> {
    /// The client's and the server's position among the file's nodes.
    from: u32,
    to: u32,
    protocol: u8,
    port: u16,
    /// Unix seconds.
    first_seen: u64,
    last_seen: u64,
    /// Days since the Unix epoch, ascending.
    days_seen: Cow<'a, [u32]>,
    seen_by_client: VolumeWire,
    seen_by_server: VolumeWire,
    /// What few edges have (DNS names, HTTP calls), as JSON.
    #[serde(borrow)]
    extras: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct VolumeWire {
    connections: u64,
    established: u64,
    packets: u64,
    bytes: u64,
}

impl From<&Volume> for VolumeWire {
    fn from(volume: &Volume) -> Self {
        VolumeWire {
            connections: volume.connections,
            established: volume.established,
            packets: volume.packets,
            bytes: volume.bytes,
        }
    }
}

impl From<VolumeWire> for Volume {
    fn from(volume: VolumeWire) -> Self {
        Volume {
            connections: volume.connections,
            established: volume.established,
            packets: volume.packets,
            bytes: volume.bytes,
        }
    }
}

/// An edge's rarely present parts, named as in the JSON layout.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extras {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    http: Vec<CallRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_connections: Option<HttpConnections>,
}

/// Writes `graph` in the binary layout, as it is encoded.
pub fn write(graph: &CommGraph, out: &mut impl io::Write) -> io::Result<()> {
    out.write_all(MAGIC)?;
    let mut encoded = Vec::with_capacity(WRITE_BYTES);
    // A `Graph` numbers its nodes 0..count: a node's index is its position.
    let nodes: Vec<&Endpoint> = graph.graph.node_weights().collect();
    let nodes = serde_json::to_string(&nodes)?;
    append(&nodes, &mut encoded)?;
    append(graph.over_budget(), &mut encoded)?;
    append(&(graph.graph.edge_count() as u64), &mut encoded)?;
    let mut extras_json = String::new();
    for edge in graph.graph.edge_references() {
        let stats = &edge.weight().stats;
        extras_json.clear();
        let has_extras = !stats.dns_names.is_empty() || !stats.http.is_empty();
        if has_extras {
            let extras = Extras {
                dns_names: stats.dns_names.iter().cloned().collect(),
                http: stats.http.records(),
                http_connections: HttpConnections::of(&stats.http),
            };
            extras_json = serde_json::to_string(&extras)?;
        }
        let days_seen = stats.days_seen.numbers();
        let wire = EdgeWire {
            from: edge.source().index() as u32,
            to: edge.target().index() as u32,
            protocol: edge.weight().key.protocol.0,
            port: edge.weight().key.port,
            first_seen: stats.first_seen,
            last_seen: stats.last_seen,
            days_seen: Cow::Borrowed(&days_seen),
            seen_by_client: (&stats.seen_by_client).into(),
            seen_by_server: (&stats.seen_by_server).into(),
            extras: has_extras.then_some(extras_json.as_str()),
        };
        append(&wire, &mut encoded)?;
        if encoded.len() >= WRITE_BYTES {
            out.write_all(&encoded)?;
            encoded.clear();
        }
    }
    out.write_all(&encoded)
}

/// Edges are encoded into a buffer this large, then written: one copy of
/// each edge's few dozen bytes rather than one more per edge.
const WRITE_BYTES: usize = 64 << 10;

/// Appends `value` in postcard to `buffer`.
fn append<T: Serialize + ?Sized>(value: &T, buffer: &mut Vec<u8>) -> io::Result<()> {
    postcard::serialize_with_flavor(value, Appending(buffer)).map_err(io::Error::other)
}

/// postcard's output into the end of a `Vec`. postcard hands its output
/// over a field at a time, most of them a varint of a few bytes: copied
/// byte by byte, where its own `Vec` output called `memcpy` for each (3-4%
/// of `graph build`'s CPU at 1 M edges, with the graph written in binary).
struct Appending<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Appending<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= 16 {
            bytes.iter().for_each(|&byte| self.0.push(byte));
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Reads a binary graph file's bytes (they open with [`NAME`]); `path`
/// names it in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<CommGraph, GraphFileError> {
    let Some(&version) = bytes.get(NAME.len()) else {
        let at = bytes.len();
        return Err(invalid(
            path,
            format!("the file is cut short (at byte {at})"),
        ));
    };
    if u32::from(version) > GRAPH_VERSION {
        return Err(GraphFileError::TooNew {
            path: path.to_path_buf(),
            found: version.into(),
        });
    }
    if version != GRAPH_VERSION as u8 {
        return Err(invalid(
            path,
            format!("binary layout version {version} is not one this netflow-agent reads"),
        ));
    }
    let mut reader = Reader {
        bytes,
        rest: &bytes[MAGIC.len()..],
        path,
    };
    let nodes: &str = reader.take("the nodes")?;
    let nodes: Vec<Endpoint> = serde_json::from_str(nodes)
        .map_err(|error| invalid(path, format!("the nodes are not valid: {error}")))?;
    let mut graph = CommGraph::new();
    graph.add_file_nodes(nodes, path)?;
    let node_count = graph.node_count();
    let over_budget: BTreeMap<String, u64> = reader.take("the clients over budget")?;
    let edge_count: u64 = reader.take("the edge count")?;
    // Never more than the bytes left could hold: the count is the file's word.
    let fits = reader.rest.len() / MIN_EDGE_BYTES;
    graph.reserve_edges(usize::try_from(edge_count).unwrap_or(usize::MAX).min(fits));
    for index in 0..edge_count {
        let at = reader.offset();
        let what = || format!("edge {index} (at byte {at})");
        let edge: EdgeWire = reader.take_named(what)?;
        let (stats, key) =
            edge_stats(&edge).map_err(|why| invalid(path, format!("{}: {why}", what())))?;
        // The nodes were added in the file's order: a position is an index.
        let node = |position: u32| match position as usize {
            index if index < node_count => Ok(NodeIndex::new(index)),
            _ => Err(invalid(
                path,
                format!("{}: names node {position} of {node_count}", what()),
            )),
        };
        let (client, server) = (node(edge.from)?, node(edge.to)?);
        graph.observe(client, server, key, &stats);
    }
    if !reader.rest.is_empty() {
        return Err(invalid(
            path,
            format!(
                "{} bytes follow the last edge (at byte {})",
                reader.rest.len(),
                reader.offset()
            ),
        ));
    }
    graph.set_over_budget(over_budget);
    Ok(graph)
}

/// An edge's stats and key as the graph holds them, or why it cannot be.
fn edge_stats(edge: &EdgeWire) -> Result<(EdgeStats, EdgeKey), String> {
    let seconds = |value: u64, field: &str| {
        value
            .checked_mul(1000)
            .and_then(Timestamp::from_unix_millis)
            .map(|_| value)
            .ok_or_else(|| format!("{field} {value} is past the year 9999"))
    };
    let (first_seen, last_seen) = (
        seconds(edge.first_seen, "first_seen")?,
        seconds(edge.last_seen, "last_seen")?,
    );
    if first_seen > last_seen {
        return Err("first_seen is after last_seen".into());
    }
    let days_seen = Days::from_numbers(edge.days_seen.iter().copied())
        .ok_or_else(|| "a day of days_seen is past the year 9999".to_string())?;
    let extras: Extras = match edge.extras {
        Some(json) => serde_json::from_str(json).map_err(|error| format!("extras: {error}"))?,
        None => Extras::default(),
    };
    let stats = EdgeStats {
        first_seen,
        last_seen,
        days_seen,
        seen_by_client: edge.seen_by_client.into(),
        seen_by_server: edge.seen_by_server.into(),
        dns_names: extras
            .dns_names
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into(),
        http: http_calls(extras.http, extras.http_connections),
    };
    let key = EdgeKey {
        protocol: Protocol(edge.protocol),
        port: edge.port,
    };
    Ok((stats, key))
}

/// The file's bytes, read front to back.
struct Reader<'b> {
    bytes: &'b [u8],
    rest: &'b [u8],
    path: &'b Path,
}

impl<'b> Reader<'b> {
    fn offset(&self) -> usize {
        self.bytes.len() - self.rest.len()
    }

    fn take<T: Deserialize<'b>>(&mut self, what: &str) -> Result<T, GraphFileError> {
        let at = self.offset();
        self.take_named(|| format!("{what} (at byte {at})"))
    }

    fn take_named<T: Deserialize<'b>>(
        &mut self,
        what: impl Fn() -> String,
    ) -> Result<T, GraphFileError> {
        let (value, rest) = postcard::take_from_bytes(self.rest).map_err(|error| {
            let why = match error {
                postcard::Error::DeserializeUnexpectedEnd => "the file is cut short".to_string(),
                other => other.to_string(),
            };
            invalid(self.path, format!("{}: {why}", what()))
        })?;
        self.rest = rest;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        graph::{
            EdgeNames,
            http_calls::SeenBy,
            tests::{stats, workload},
        },
        model::EndpointKind,
    };

    fn encoded(graph: &CommGraph) -> Vec<u8> {
        let mut bytes = Vec::new();
        write(graph, &mut bytes).unwrap();
        bytes
    }

    fn json(graph: &CommGraph) -> String {
        serde_json::to_string(&graph.file()).unwrap()
    }

    /// Every part a graph file holds: workloads and an external host with
    /// names, an edge over two days with both ends' counts, DNS names, HTTP
    /// calls and their connections, and a client over its edge budget.
    fn everything() -> CommGraph {
        let mut graph = CommGraph::new();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let cart = graph.upsert_endpoint(workload("shop", "cart"));
        let mut api = workload("", "api.example.com");
        api.id = "external:203.0.113.7".into();
        api.kind = EndpointKind::External;
        api.namespace = None;
        api.labels.clear();
        api.addresses.insert("203.0.113.7".into());
        api.dns_names.insert("api.example.com".into());
        let api = graph.upsert_endpoint(api);
        let mut rich = stats(1_764_115_100, 1_764_115_300, 4);
        rich.seen_by_server.connections = 5;
        rich.seen_by_server.bytes = 1 << 40;
        rich.http
            .add_request("GET", "/cart/42", 1_764_115_200, SeenBy::Client);
        rich.http.add_connection(SeenBy::Client);
        rich.http.add_connection(SeenBy::Server);
        graph.observe(
            frontend,
            cart,
            EdgeKey {
                protocol: Protocol(6),
                port: 7070,
            },
            &rich,
        );
        let mut named = stats(1_764_000_000, 1_764_000_000, 1);
        named.dns_names = EdgeNames::from(std::collections::BTreeSet::from([
            "api.example.com".to_string()
        ]));
        graph.observe(
            cart,
            api,
            EdgeKey {
                protocol: Protocol(17),
                port: 53,
            },
            &named,
        );
        for port in 0..3 {
            let key = EdgeKey {
                protocol: Protocol(6),
                port: 9000 + port,
            };
            graph.observe(
                frontend,
                api,
                key,
                &stats(
                    1_764_000_000 + u64::from(port),
                    1_764_000_000 + u64::from(port),
                    1,
                ),
            );
        }
        graph.cap_per_client(2);
        graph
    }

    #[test]
    fn a_graph_reads_back_as_the_same_graph() {
        let graph = everything();
        assert!(
            !graph.over_budget().is_empty(),
            "the sample keeps a client over budget"
        );
        let bytes = encoded(&graph);
        assert!(bytes.starts_with(MAGIC));
        let read = parse(&bytes, Path::new("g.bin")).unwrap();
        assert_eq!(json(&read), json(&graph));
        // The graph read from its JSON (nodes in another order) too.
        let from_json = CommGraph::parse(&json(&graph), Path::new("g.json")).unwrap();
        let again = parse(&encoded(&from_json), Path::new("g.bin")).unwrap();
        assert_eq!(json(&again), json(&graph));
    }

    #[test]
    fn an_edge_is_stored_as_pinned() {
        // A field reordered, a width changed or a volume dropped fails this.
        let mut graph = CommGraph::new();
        let a = graph.upsert_endpoint(workload("n", "a"));
        let b = graph.upsert_endpoint(workload("n", "b"));
        let key = EdgeKey {
            protocol: Protocol(6),
            port: 443,
        };
        graph.observe(a, b, key, &stats(86_400, 2 * 86_400, 3));
        let bytes = encoded(&graph);
        let nodes_json = serde_json::to_string(&[workload("n", "a"), workload("n", "b")]).unwrap();
        // Magic, the nodes' JSON (its length a two-byte varint), no client
        // over budget, one edge.
        let mut expected = b"NFGRAPH\x02".to_vec();
        assert!((128..16_384).contains(&nodes_json.len()));
        expected.extend([nodes_json.len() as u8 | 0x80, (nodes_json.len() >> 7) as u8]);
        expected.extend(nodes_json.as_bytes());
        expected.extend([0, 1]);
        expected.extend([
            0, 1, // from, to
            6, 0xbb, 0x03, // TCP, port 443
            0x80, 0xa3, 0x05, // first_seen 86 400
            0x80, 0xc6, 0x0a, // last_seen 172 800
            2, 1, 2, // days 1 and 2
            3, 3, 30, 0xb8, 0x17, // seen by the client
            0, 0, 0, 0, // seen by the server
            0, // no extras
        ]);
        assert_eq!(bytes, expected);
    }

    /// The error reading `bytes` gives, as text.
    fn refusal(bytes: &[u8]) -> String {
        parse(bytes, Path::new("state/graph.bin"))
            .map(|_| "read".to_string())
            .unwrap_or_else(|error| error.to_string())
    }

    #[test]
    fn a_file_cut_anywhere_is_refused_naming_where() {
        let bytes = encoded(&everything());
        for end in NAME.len()..bytes.len() {
            let why = refusal(&bytes[..end]);
            assert!(
                why.starts_with("graph state/graph.bin is not valid") && why.contains("at byte"),
                "cut at {end}: {why}"
            );
        }
        let last_edge = refusal(&bytes[..bytes.len() - 1]);
        assert!(last_edge.contains("edge 2 (at byte"), "{last_edge}");
        assert!(last_edge.contains("cut short"), "{last_edge}");
    }

    #[test]
    fn bytes_after_the_last_edge_are_refused() {
        let mut bytes = encoded(&everything());
        let end = bytes.len();
        bytes.push(0);
        assert!(
            refusal(&bytes).contains(&format!("1 bytes follow the last edge (at byte {end})")),
            "{}",
            refusal(&bytes)
        );
    }

    /// A graph of one edge, its stats and ends as given.
    fn one_edge(from: u32, first: u64, last: u64, days: &[u32]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        let nodes = serde_json::to_string(&[workload("n", "a")]).unwrap();
        append(&nodes, &mut bytes).unwrap();
        append(&BTreeMap::<String, u64>::new(), &mut bytes).unwrap();
        append(&1u64, &mut bytes).unwrap();
        let volume = VolumeWire {
            connections: 1,
            established: 1,
            packets: 1,
            bytes: 1,
        };
        let edge = EdgeWire {
            from,
            to: 0,
            protocol: 6,
            port: 80,
            first_seen: first,
            last_seen: last,
            days_seen: Cow::Borrowed(days),
            seen_by_client: volume,
            seen_by_server: volume,
            extras: None,
        };
        append(&edge, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn what_a_graph_cannot_hold_is_refused_naming_the_edge() {
        assert_eq!(refusal(&one_edge(0, 10, 20, &[0])), "read");
        for (bytes, why) in [
            (one_edge(1, 10, 20, &[0]), "edge 0 (at byte"),
            (one_edge(1, 10, 20, &[0]), "names node 1 of 1"),
            (one_edge(0, 20, 10, &[0]), "first_seen is after last_seen"),
            (
                one_edge(0, 10, 253_402_300_800, &[0]),
                "last_seen 253402300800 is past the year 9999",
            ),
            (one_edge(0, 10, 20, &[2_932_897]), "past the year 9999"),
        ] {
            let refused = refusal(&bytes);
            assert!(refused.contains(why), "{why}: {refused}");
        }
    }

    #[test]
    fn a_newer_or_unknown_version_is_named() {
        let mut bytes = encoded(&everything());
        bytes[7] = GRAPH_VERSION as u8 + 1;
        assert!(
            refusal(&bytes).contains("newer than this netflow-agent reads"),
            "{}",
            refusal(&bytes)
        );
        bytes[7] = 1;
        assert!(
            refusal(&bytes).contains("binary layout version 1"),
            "{}",
            refusal(&bytes)
        );
    }

    #[test]
    fn loading_tells_the_layouts_apart() {
        let dir = std::env::temp_dir().join(format!("netflow-graph-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let graph = everything();
        for format in [
            super::super::GraphFormat::Json,
            super::super::GraphFormat::Binary,
        ] {
            let path = dir.join(format!("{format:?}"));
            graph.save_as(&path, format).unwrap();
            assert_eq!(
                json(&CommGraph::load(&path).unwrap()),
                json(&graph),
                "{format:?}"
            );
        }
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, [0xff, 0xfe, 0x00]).unwrap();
        let refused = CommGraph::load(&garbage).unwrap_err().to_string();
        assert!(
            refused.contains("garbage") && refused.contains("nor a binary graph"),
            "{refused}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
