//! `graph.json`: the graph on disk.
//!
//! Top level: `version`, `nodes` (`id`, `kind`, `namespace`, `name`, ...) and
//! `edges` (`from`, `to`, `protocol`, `port`, `first_seen`, `last_seen`,
//! `days_seen`, `connections`, `packets`, `bytes`), times in RFC 3339. The
//! same graph may be stored in a compact binary layout ([`binary`]); reading
//! tells the two apart. Files are written to a temporary name, synced and
//! renamed, so a crash leaves the old file or the new one, never half of one.

pub mod binary;

use std::{
    cell::RefCell,
    collections::BTreeSet,
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeSeed as _};

use super::{
    CommGraph, Days, Edge, EdgeKey, EdgeNames, EdgeStats, HttpCalls, Volume,
    http_calls::{CallRecord, HttpCallsFile},
};
use crate::{
    model::{Endpoint, Protocol, Timestamp, file_time},
    parallel::map_in_order,
};

/// The layout version this build writes and the newest it reads.
/// Version 2 added the edges' `http` calls and `http_connections`.
pub const GRAPH_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum GraphFileError {
    #[error("cannot read graph {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("graph {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "graph {path} has layout version {found}, newer than this netflow-agent reads ({GRAPH_VERSION}): upgrade netflow-agent"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot write graph {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How a graph file is stored: JSON (the layout people and tools read), or
/// binary (the same graph in a tenth of the bytes, several times cheaper to
/// write and read; `graph export --format json` prints it as JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    #[default]
    Json,
    Binary,
}

/// One edge as a graph file holds it (the file's top level, `version`,
/// `nodes`, `edges` and `over_budget`, is read by `FileSeed`).
#[derive(Debug, Deserialize)]
pub struct EdgeRecord {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(default)]
    pub days_seen: Days,
    /// The edge's volume (the larger of the two sides' counts).
    pub connections: u64,
    /// Of them, those answered. Absent in files of earlier versions, which
    /// counted every connection as answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established: Option<u64>,
    #[serde(default)]
    pub packets: u64,
    pub bytes: u64,
    /// Each side's own count; absent in hand-written files (then the
    /// totals above are taken as the client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_by_client: Option<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_by_server: Option<Volume>,
    /// The names the client resolved the (external) server by.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dns_names: BTreeSet<String>,
    /// Plaintext HTTP calls (version 2 on).
    #[serde(default)]
    pub http: Vec<CallRecord>,
    /// Connections that carried them, as each end saw them.
    #[serde(default)]
    pub http_connections: Option<HttpConnections>,
}

/// An edge's connections that carried HTTP, by the end that saw them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct HttpConnections {
    pub seen_by_client: u64,
    pub seen_by_server: u64,
}

impl HttpConnections {
    /// What a graph file lists of `calls`' connections: nothing when none
    /// carried HTTP.
    fn of(calls: &HttpCalls) -> Option<Self> {
        (calls.connections() > 0).then_some(HttpConnections {
            seen_by_client: calls.connections_by_client,
            seen_by_server: calls.connections_by_server,
        })
    }
}

/// An edge's HTTP calls from what a graph file lists (either layout).
fn http_calls(calls: Vec<CallRecord>, connections: Option<HttpConnections>) -> HttpCalls {
    let connections = connections.unwrap_or_default();
    HttpCallsFile {
        calls,
        connections_by_client: connections.seen_by_client,
        connections_by_server: connections.seen_by_server,
    }
    .into()
}

/// The graph as its file's JSON, serialized straight from the graph: the
/// daemon writes its state and renders `/graph` every interval, and a copy of
/// every id and stat per write would double its memory.
pub struct FileView<'a>(&'a CommGraph);

/// One edge of [`FileView`]: the fields of [`EdgeRecord`], borrowed.
#[derive(Serialize)]
struct EdgeView<'a> {
    from: &'a str,
    to: &'a str,
    protocol: Protocol,
    port: u16,
    first_seen: String,
    last_seen: String,
    days_seen: &'a Days,
    connections: u64,
    established: u64,
    packets: u64,
    bytes: u64,
    seen_by_client: &'a Volume,
    seen_by_server: &'a Volume,
    #[serde(skip_serializing_if = "EdgeNames::is_empty")]
    dns_names: &'a EdgeNames,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    http: Vec<CallRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_connections: Option<HttpConnections>,
}

impl<'a> EdgeView<'a> {
    fn of(from: &'a Endpoint, to: &'a Endpoint, edge: &'a Edge) -> Self {
        let volume = edge.stats.volume();
        EdgeView {
            from: &from.id,
            to: &to.id,
            protocol: edge.key.protocol,
            port: edge.key.port,
            first_seen: file_time(edge.stats.first_seen),
            last_seen: file_time(edge.stats.last_seen),
            days_seen: &edge.stats.days_seen,
            connections: volume.connections,
            established: volume.established,
            packets: volume.packets,
            bytes: volume.bytes,
            seen_by_client: &edge.stats.seen_by_client,
            seen_by_server: &edge.stats.seen_by_server,
            dns_names: &edge.stats.dns_names,
            http: edge.stats.http.records(),
            http_connections: HttpConnections::of(&edge.stats.http),
        }
    }
}

/// Edges serialized together on one thread when a graph is saved: enough
/// to outweigh handing them over, few enough that the pieces in flight
/// stay a few MB.
const EDGES_PER_PIECE: usize = 4096;

impl FileView<'_> {
    /// The JSON that `serde_json::to_writer` writes of this view, the
    /// edges (nearly all of a large graph's bytes) serialized on every
    /// core, a few pieces at a time so memory stays flat.
    fn write_to(
        &self,
        out: &mut impl std::io::Write,
        edges_per_piece: usize,
    ) -> std::io::Result<()> {
        let graph = self.0;
        out.write_all(format!("{{\"version\":{GRAPH_VERSION},\"nodes\":").as_bytes())?;
        serde_json::to_writer(&mut *out, &graph.endpoints())?;
        out.write_all(b",\"edges\":[")?;
        let edges = graph.edges();
        let pieces: Vec<_> = edges.chunks(edges_per_piece.max(1)).collect();
        let pieces_at_once =
            4 * std::thread::available_parallelism().map_or(1, |cores| cores.get());
        for (window, at_once) in pieces.chunks(pieces_at_once).enumerate() {
            let (written, _) = map_in_order(
                at_once,
                || (),
                |_, piece| -> Result<Vec<u8>, serde_json::Error> {
                    let mut bytes = Vec::with_capacity(piece.len() * 512);
                    for (from, to, edge) in piece.iter() {
                        bytes.push(b',');
                        serde_json::to_writer(&mut bytes, &EdgeView::of(from, to, edge))?;
                    }
                    Ok(bytes)
                },
            );
            for (index, bytes) in written.into_iter().enumerate() {
                let bytes = bytes?;
                // Every piece starts with a comma but the file's first.
                let first = window == 0 && index == 0;
                out.write_all(if first { &bytes[1..] } else { &bytes })?;
            }
        }
        out.write_all(b"]")?;
        let over_budget = graph.over_budget();
        if !over_budget.is_empty() {
            out.write_all(b",\"over_budget\":")?;
            serde_json::to_writer(&mut *out, over_budget)?;
        }
        out.write_all(b"}")
    }
}

impl Serialize for FileView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        struct Nodes<'a>(&'a CommGraph);
        impl Serialize for Nodes<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.endpoints())
            }
        }
        struct Edges<'a>(&'a CommGraph);
        impl Serialize for Edges<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(
                    self.0
                        .edges()
                        .into_iter()
                        .map(|(from, to, edge)| EdgeView::of(from, to, edge)),
                )
            }
        }
        let graph = self.0;
        let over_budget = graph.over_budget();
        let fields = if over_budget.is_empty() { 3 } else { 4 };
        let mut file = serializer.serialize_struct("GraphFile", fields)?;
        file.serialize_field("version", &GRAPH_VERSION)?;
        file.serialize_field("nodes", &Nodes(graph))?;
        file.serialize_field("edges", &Edges(graph))?;
        if !over_budget.is_empty() {
            file.serialize_field("over_budget", over_budget)?;
        }
        file.end()
    }
}

impl CommGraph {
    /// The graph in its file's layout, ready to serialize.
    pub fn file(&self) -> FileView<'_> {
        FileView(self)
    }

    fn add_file_nodes(&mut self, nodes: Vec<Endpoint>, path: &Path) -> Result<(), GraphFileError> {
        for node in nodes {
            if node.id.is_empty() {
                return Err(invalid(path, "a node has an empty id".into()));
            }
            if self.endpoint(&node.id).is_some() {
                return Err(invalid(path, format!("node {:?} appears twice", node.id)));
            }
            self.upsert_endpoint(node);
        }
        Ok(())
    }

    /// Adds edge `index` of a file, whose nodes are in the graph.
    fn add_file_edge(
        &mut self,
        index: usize,
        edge: EdgeRecord,
        path: &Path,
    ) -> Result<(), GraphFileError> {
        let node = |id: &str| {
            self.by_id
                .get(id)
                .copied()
                .ok_or_else(|| invalid(path, format!("edge {index} names unknown node {id:?}")))
        };
        let (client, server) = (node(&edge.from)?, node(&edge.to)?);
        let time = |text: &str, field: &str| {
            text.parse().map(Timestamp::unix_seconds).map_err(|_| {
                invalid(
                    path,
                    format!("edge {index}: {field} {text:?} is not an RFC 3339 time"),
                )
            })
        };
        // A file without handshake counts (an earlier version) took
        // every connection as answered.
        let legacy = |mut volume: Volume| {
            if edge.established.is_none() {
                volume.established = volume.connections;
            }
            volume
        };
        let stats = EdgeStats {
            first_seen: time(&edge.first_seen, "first_seen")?,
            last_seen: time(&edge.last_seen, "last_seen")?,
            days_seen: edge.days_seen,
            seen_by_client: legacy(edge.seen_by_client.unwrap_or(Volume {
                connections: edge.connections,
                established: edge.established.unwrap_or(edge.connections),
                packets: edge.packets,
                bytes: edge.bytes,
            })),
            seen_by_server: legacy(edge.seen_by_server.unwrap_or_default()),
            dns_names: edge.dns_names.into(),
            http: http_calls(edge.http, edge.http_connections),
        };
        if stats.first_seen > stats.last_seen {
            return Err(invalid(
                path,
                format!("edge {index}: first_seen is after last_seen"),
            ));
        }
        self.observe(
            client,
            server,
            EdgeKey {
                protocol: edge.protocol,
                port: edge.port,
            },
            &stats,
        );
        Ok(())
    }

    /// Reads a graph file, JSON or binary; errors name the file.
    pub fn load(path: &Path) -> Result<Self, GraphFileError> {
        let bytes = fs::read(path).map_err(|source| GraphFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_bytes(bytes, path)
    }

    /// Reads a graph from a file's bytes, JSON or binary; `path` names
    /// where they came from in errors.
    pub fn parse_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self, GraphFileError> {
        if bytes.starts_with(binary::NAME) {
            return binary::parse(&bytes, path);
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            invalid(
                path,
                "neither JSON (not UTF-8) nor a binary graph file".into(),
            )
        })?;
        Self::parse(&text, path)
    }

    /// Reads a graph from its JSON; `path` names where it came from (a file,
    /// or a node's agent) in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, GraphFileError> {
        // The file is read in one pass (it may be hundreds of MB), each
        // edge added as it is read; only when the layout does not fit is
        // the version looked at, so a newer file gets the "upgrade" message
        // rather than a confusing field error.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<u32>,
        }
        let found = RefCell::new(None);
        let mut json = serde_json::Deserializer::from_str(text);
        let read = FileSeed {
            path,
            found: &found,
        }
        .deserialize(&mut json)
        .and_then(|graph| {
            // Only whitespace may follow, as `from_str` would require.
            json.end()?;
            Ok(graph)
        });
        match read {
            Ok(graph) => Ok(graph),
            Err(layout) => match found.into_inner() {
                Some(found) => Err(found),
                None => match serde_json::from_str::<VersionOnly>(text) {
                    Ok(VersionOnly { version: None }) => {
                        Err(invalid(path, "no \"version\" field".into()))
                    }
                    Ok(VersionOnly {
                        version: Some(found),
                    }) if found > GRAPH_VERSION => Err(GraphFileError::TooNew {
                        path: path.to_path_buf(),
                        found,
                    }),
                    _ => Err(invalid(path, layout.to_string())),
                },
            },
        }
    }

    /// Writes the graph atomically (temporary file, fsync, rename), readable
    /// by its owner only: a map of who talks to whom is worth protecting.
    /// Compact JSON, its edges serialized on every core (`graph show` and
    /// `graph export --format json` print it for reading).
    pub fn save(&self, path: &Path) -> Result<(), GraphFileError> {
        self.save_with(path, |graph, writer| {
            graph.file().write_to(writer, EDGES_PER_PIECE)
        })
    }

    /// [`CommGraph::save`] on the calling thread, written as it is
    /// serialized: the daemon saves its state every interval, where a few
    /// MB of pieces in flight would be resident memory kept for nothing.
    pub fn save_one_thread(&self, path: &Path) -> Result<(), GraphFileError> {
        self.save_with(path, |graph, writer| {
            serde_json::to_writer(writer, &graph.file()).map_err(std::io::Error::from)
        })
    }

    /// [`CommGraph::save`] in `format`.
    pub fn save_as(&self, path: &Path, format: GraphFormat) -> Result<(), GraphFileError> {
        match format {
            GraphFormat::Json => self.save(path),
            GraphFormat::Binary => {
                self.save_with(path, |graph, writer| binary::write(graph, writer))
            }
        }
    }

    fn save_with(
        &self,
        path: &Path,
        write: impl FnOnce(&Self, &mut std::io::BufWriter<&mut fs::File>) -> std::io::Result<()>,
    ) -> Result<(), GraphFileError> {
        write_atomically_buffered(path, 0o600, |writer| write(self, writer)).map_err(|source| {
            GraphFileError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// Replaces `path` with `bytes` so that readers see the old or the new
/// content, never a mix, even after a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with_mode(path, bytes, 0o644)
}

/// [`write_atomically`], the file created with `mode` (before the umask).
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomically_with(path, mode, |file| file.write_all(bytes))
}

/// [`write_atomically_with_mode`], the content written by `write` through a
/// buffer as it is produced (a large graph or export is never held whole).
pub fn write_atomically_buffered(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut std::io::BufWriter<&mut fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_atomically_with(path, mode, |file| {
        let mut writer = std::io::BufWriter::with_capacity(1 << 16, file);
        write(&mut writer)?;
        writer.flush()
    })
}

/// [`write_atomically_with_mode`], the content written by `write`.
fn write_atomically_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        write(&mut file)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        // The rename itself is durable once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn invalid(path: &Path, message: String) -> GraphFileError {
    GraphFileError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads a graph file's JSON straight into a graph, each edge added as it
/// is read: a million-edge file is never held as a million records. What
/// the file says that cannot be (a dangling edge, a newer version) is left
/// in `found` and the read stopped.
struct FileSeed<'a> {
    path: &'a Path,
    found: &'a RefCell<Option<GraphFileError>>,
}

impl FileSeed<'_> {
    /// Keeps `found` and stops the read.
    fn stop<E: serde::de::Error>(&self, found: GraphFileError) -> E {
        let message = found.to_string();
        *self.found.borrow_mut() = Some(found);
        E::custom(message)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FileSeed<'_> {
    type Value = CommGraph;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<CommGraph, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FileSeed<'_> {
    type Value = CommGraph;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a graph file (an object with version, nodes and edges)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CommGraph, A::Error> {
        use serde::de::Error as _;
        let mut graph = CommGraph::new();
        let (mut version, mut nodes_read, mut edges_read) = (None, false, false);
        // Edges written before the nodes (by hand) wait for them.
        let mut early_edges: Option<Vec<EdgeRecord>> = None;
        let mut over_budget = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "version" if version.is_none() => {
                    let found: u32 = map.next_value()?;
                    if found > GRAPH_VERSION {
                        return Err(self.stop(GraphFileError::TooNew {
                            path: self.path.to_path_buf(),
                            found,
                        }));
                    }
                    version = Some(found);
                }
                "nodes" if !nodes_read => {
                    let nodes: Vec<Endpoint> = map.next_value()?;
                    graph
                        .add_file_nodes(nodes, self.path)
                        .map_err(|found| self.stop(found))?;
                    nodes_read = true;
                }
                "edges" if !edges_read && nodes_read => {
                    map.next_value_seed(EdgesSeed {
                        graph: &mut graph,
                        file: &self,
                    })?;
                    edges_read = true;
                }
                "edges" if !edges_read => {
                    early_edges = Some(map.next_value()?);
                    edges_read = true;
                }
                "over_budget" if over_budget.is_none() => over_budget = Some(map.next_value()?),
                "version" | "nodes" | "edges" | "over_budget" => {
                    let field = ["version", "nodes", "edges", "over_budget"]
                        .into_iter()
                        .find(|field| *field == &*key)
                        .unwrap_or_default();
                    return Err(A::Error::duplicate_field(field));
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        if version.is_none() {
            return Err(A::Error::missing_field("version"));
        }
        if !nodes_read {
            return Err(A::Error::missing_field("nodes"));
        }
        if !edges_read {
            return Err(A::Error::missing_field("edges"));
        }
        for (index, edge) in early_edges.into_iter().flatten().enumerate() {
            graph
                .add_file_edge(index, edge, self.path)
                .map_err(|found| self.stop(found))?;
        }
        graph.set_over_budget(over_budget.unwrap_or_default());
        Ok(graph)
    }
}

/// A graph file's `edges`, each added to the graph as it is read.
struct EdgesSeed<'g, 'f> {
    graph: &'g mut CommGraph,
    file: &'f FileSeed<'f>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EdgesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EdgesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of edges")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut edges: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(edge) = edges.next_element::<EdgeRecord>()? {
            self.graph
                .add_file_edge(index, edge, self.file.path)
                .map_err(|found| self.file.stop(found))?;
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::sample;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netflow-graph-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_saved_graph_loads_back_identical() {
        let dir = scratch("roundtrip");
        let path = dir.join("graph.json");
        let graph = sample();
        graph.save(&path).unwrap();
        let loaded = CommGraph::load(&path).unwrap();
        assert_eq!(
            serde_json::to_string(&loaded.file()).unwrap(),
            serde_json::to_string(&graph.file()).unwrap()
        );
        // Both ways of saving write the same bytes.
        let saved = fs::read(&path).unwrap();
        graph.save_one_thread(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), saved);
        // Only the file itself is left, no temporary.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    /// Workloads added in an order unlike their ids' (a hash of the
    /// position), each calling a few others on a few ports.
    fn shuffled(workloads: u64) -> CommGraph {
        use crate::graph::tests::{stats, workload};
        let mut graph = CommGraph::new();
        let name = |n: u64| format!("w{}", n.wrapping_mul(2_654_435_761) % 1_000_003);
        let nodes: Vec<_> = (0..workloads)
            .map(|n| graph.upsert_endpoint(workload("ns", &name(n))))
            .collect();
        for (n, &client) in nodes.iter().enumerate() {
            for step in [7, 3, 1] {
                let server = nodes[(n + step) % nodes.len()];
                for port in [443u16, 80] {
                    let key = EdgeKey {
                        protocol: Protocol(6),
                        port: port + step as u16,
                    };
                    graph.observe(
                        client,
                        server,
                        key,
                        &stats(1_764_000_000, 1_764_000_000 + n as u64, 1),
                    );
                }
            }
        }
        graph
    }

    #[test]
    fn a_file_reads_the_same_whatever_its_fields_order() {
        let mut graph = shuffled(20);
        graph.set_over_budget([("workload:ns/Deployment/w1".to_string(), 3)].into());
        let value = serde_json::to_value(graph.file()).unwrap();
        let written = serde_json::to_string(&value).unwrap();
        let field = |name: &str| format!("\"{name}\":{}", value[name]);
        let backwards = format!(
            "{{{},{},{},{}}}",
            field("over_budget"),
            field("edges"),
            field("nodes"),
            field("version")
        );
        for text in [written.as_str(), backwards.as_str()] {
            let read = CommGraph::parse(text, Path::new("g.json")).unwrap();
            assert_eq!(serde_json::to_value(read.file()).unwrap(), value);
        }
    }

    #[test]
    fn edges_come_sorted_by_client_server_and_port() {
        let graph = shuffled(50);
        let edges = graph.edges();
        assert_eq!(edges.len(), 300);
        let order: Vec<_> = edges
            .iter()
            .map(|(from, to, edge)| (&from.id, &to.id, edge.key))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    #[test]
    fn a_saved_file_is_the_views_json_however_its_edges_are_cut() {
        let mut graph = shuffled(40);
        let whole = serde_json::to_vec(&graph.file()).unwrap();
        for edges_per_piece in [1, 7, 240, 10_000] {
            let mut written = Vec::new();
            graph
                .file()
                .write_to(&mut written, edges_per_piece)
                .unwrap();
            assert!(written == whole, "{edges_per_piece} edges per piece");
        }
        graph.set_over_budget([("workload:ns/Deployment/w1".to_string(), 3)].into());
        let empty = CommGraph::new();
        for graph in [&graph, &empty] {
            let mut written = Vec::new();
            graph.file().write_to(&mut written, 5).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&graph.file()).unwrap()
            );
        }
    }

    #[test]
    fn the_file_has_the_documented_fields() {
        let value = serde_json::to_value(sample().file()).unwrap();
        for field in ["id", "kind", "namespace", "name"] {
            assert!(value["nodes"][0].get(field).is_some(), "node field {field}");
        }
        for field in [
            "from",
            "to",
            "protocol",
            "port",
            "first_seen",
            "last_seen",
            "connections",
            "bytes",
        ] {
            assert!(value["edges"][0].get(field).is_some(), "edge field {field}");
        }
        assert_eq!(value["edges"][0]["protocol"], "tcp");
    }

    #[test]
    fn bad_files_are_refused_with_their_name() {
        let dir = scratch("bad");
        let cases = [
            (
                "broken.json",
                "{\"version\": 1, \"nodes\": [",
                "is not valid",
            ),
            (
                "newer.json",
                "{\"version\": 99, \"nodes\": [], \"edges\": []}",
                "newer than this netflow-agent reads",
            ),
            (
                "noversion.json",
                "{\"nodes\": [], \"edges\": []}",
                "no \"version\" field",
            ),
            (
                "dangling.json",
                "{\"version\": 1, \"nodes\": [], \"edges\": [{\"from\": \"a\", \"to\": \"b\", \"protocol\": \"tcp\", \"port\": 1, \"first_seen\": \"2026-01-01T00:00:00Z\", \"last_seen\": \"2026-01-01T00:00:00Z\", \"connections\": 1, \"bytes\": 1}]}",
                "unknown node \"a\"",
            ),
            (
                "newer-layout.json",
                "{\"version\": 99, \"nodes\": {\"a\": 1}, \"edges\": 7}",
                "newer than this netflow-agent reads",
            ),
            (
                "version-last.json",
                "{\"nodes\": {\"a\": 1}, \"edges\": 7, \"version\": 99}",
                "newer than this netflow-agent reads",
            ),
            (
                "noedges.json",
                "{\"version\": 2, \"nodes\": []}",
                "missing field `edges`",
            ),
            (
                "twice.json",
                "{\"version\": 2, \"nodes\": [], \"edges\": [], \"nodes\": []}",
                "duplicate field `nodes`",
            ),
            (
                "twice-version.json",
                "{\"version\": 2, \"nodes\": [], \"edges\": [], \"version\": 1}",
                "duplicate field `version`",
            ),
            (
                "trailing.json",
                "{\"version\": 2, \"nodes\": [], \"edges\": []} {}",
                "trailing characters",
            ),
            (
                "late-dangling.json",
                "{\"version\": 1, \"edges\": [{\"from\": \"a\", \"to\": \"b\", \"protocol\": \"tcp\", \"port\": 1, \"first_seen\": \"2026-01-01T00:00:00Z\", \"last_seen\": \"2026-01-01T00:00:00Z\", \"connections\": 1, \"bytes\": 1}], \"nodes\": []}",
                "edge 0 names unknown node \"a\"",
            ),
            (
                "backwards.json",
                "{\"version\": 2, \"nodes\": [{\"id\": \"a\", \"kind\": \"external\", \"name\": \"a\"}], \"edges\": [{\"from\": \"a\", \"to\": \"a\", \"protocol\": \"tcp\", \"port\": 1, \"first_seen\": \"2026-01-02T00:00:00Z\", \"last_seen\": \"2026-01-01T00:00:00Z\", \"connections\": 1, \"bytes\": 1}]}",
                "edge 0: first_seen is after last_seen",
            ),
        ];
        for (name, text, expected) in cases {
            let path = dir.join(name);
            fs::write(&path, text).unwrap();
            let err = CommGraph::load(&path).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains(expected),
                "{name}: {err}"
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
