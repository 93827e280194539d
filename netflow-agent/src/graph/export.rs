//! The graph for people: JSON (the file format), Graphviz DOT, Mermaid, and
//! a readable table of edges by namespace.

use std::fmt::Write as _;

use super::CommGraph;
use crate::model::{EndpointKind, file_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Dot,
    Mermaid,
}

pub fn render(graph: &CommGraph, format: Format) -> String {
    let mut out = Vec::new();
    // Writing to memory fails only if serializing does, which the graph's
    // own types never do.
    let _ = write(graph, format, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`render`] into `out`. JSON is written as it is serialized: at 1 M edges
/// the pretty text is ~640 MB, which a string would hold beside the graph.
pub fn write(
    graph: &CommGraph,
    format: Format,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &graph.file())?;
            out.write_all(b"\n")
        }
        Format::Dot => out.write_all(dot(graph).as_bytes()),
        Format::Mermaid => out.write_all(mermaid(graph).as_bytes()),
    }
}

fn dot(graph: &CommGraph) -> String {
    let mut out = String::from("digraph netflow {\n  rankdir=LR;\n  node [shape=box];\n");
    let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    for endpoint in graph.endpoints() {
        let shape = match endpoint.kind {
            EndpointKind::Workload => "box",
            EndpointKind::Node => "box3d",
            EndpointKind::External => "ellipse",
            EndpointKind::Metadata => "octagon",
            EndpointKind::Unresolved => "diamond",
        };
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}];",
            quote(&endpoint.id),
            quote(&endpoint.label())
        );
    }
    for (client, server, edge) in graph.edges() {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quote(&client.id),
            quote(&server.id),
            quote(&format!(
                "{}/{} ({} conn){}",
                edge.key.protocol,
                edge.key.port,
                edge.stats.volume().connections,
                http_lines(edge, "\n")
            ))
        );
    }
    out.push_str("}\n");
    out
}

/// An edge's HTTP calls, each after `separator` (empty without calls).
fn http_lines(edge: &crate::graph::Edge, separator: &str) -> String {
    edge.stats
        .http
        .records()
        .iter()
        .map(|call| format!("{separator}{} {}", call.method, call.path))
        .collect()
}

fn mermaid(graph: &CommGraph) -> String {
    let mut out = String::from("flowchart LR\n");
    // Mermaid ids must be plain: number the endpoints in id order (sorted,
    // so an edge's ends are found by binary search, not by a scan per edge).
    let endpoints = graph.endpoints();
    let index_of = |id: &str| {
        endpoints
            .binary_search_by(|endpoint| endpoint.id.as_str().cmp(id))
            .unwrap_or(0)
    };
    let text = |text: &str| text.replace('"', "#quot;");
    for (index, endpoint) in endpoints.iter().enumerate() {
        let name = text(&endpoint.label());
        let node = match endpoint.kind {
            EndpointKind::Workload => format!("n{index}[\"{name}\"]"),
            EndpointKind::Node => format!("n{index}[[\"{name}\"]]"),
            EndpointKind::External => format!("n{index}([\"{name}\"])"),
            EndpointKind::Metadata => format!("n{index}{{{{\"{name}\"}}}}"),
            EndpointKind::Unresolved => format!("n{index}{{\"{name}\"}}"),
        };
        let _ = writeln!(out, "  {node}");
    }
    for (client, server, edge) in graph.edges() {
        let _ = writeln!(
            out,
            "  n{} -->|\"{}/{}{}\"| n{}",
            index_of(&client.id),
            edge.key.protocol,
            edge.key.port,
            text(&http_lines(edge, "<br/>")),
            index_of(&server.id)
        );
    }
    out
}

/// Whether an edge is new: first seen in the last day of a graph that
/// spans more than a day.
pub fn new_edges(graph: &CommGraph) -> impl Fn(&crate::graph::Edge) -> bool + use<> {
    let edges = graph.edges();
    let latest = edges
        .iter()
        .map(|(_, _, e)| e.stats.last_seen)
        .max()
        .unwrap_or(0);
    let earliest = edges
        .iter()
        .map(|(_, _, e)| e.stats.first_seen)
        .min()
        .unwrap_or(0);
    let last_day = latest.saturating_sub(86_400);
    move |edge| earliest < last_day && edge.stats.first_seen >= last_day
}

/// A table of edges grouped by the client's namespace; edges seen on a
/// single day are marked `rare` (a nightly job looks like this), and edges
/// that first appeared in the graph's last day `new`.
pub fn show(graph: &CommGraph) -> String {
    let mut out = String::new();
    let mut current: Option<String> = None;
    let is_new = new_edges(graph);
    for (client, server, edge) in graph.edges_by_namespace() {
        let namespace = client
            .namespace
            .clone()
            .unwrap_or_else(|| "(outside the cluster)".into());
        if current.as_ref() != Some(&namespace) {
            let _ = writeln!(out, "\n{namespace}");
            let _ = writeln!(
                out,
                "  {:<40} {:<40} {:<10} {:>6} {:>5} {:<20} {:<20} note",
                "client", "server", "port", "conns", "days", "first seen", "last seen"
            );
            current = Some(namespace);
        }
        let first = file_time(edge.stats.first_seen);
        let last = file_time(edge.stats.last_seen);
        let new = is_new(edge);
        let rare = edge.stats.days_seen.len() <= 1;
        let note = match (new, rare) {
            (true, true) => "new, rare",
            (true, false) => "new",
            (false, true) => "rare",
            (false, false) => "",
        };
        let _ = writeln!(
            out,
            "  {:<40} {:<40} {:<10} {:>6} {:>5} {:<20} {:<20} {note}",
            client.label(),
            server.label(),
            format!("{}/{}", edge.key.protocol, edge.key.port),
            edge.stats.volume().connections,
            edge.stats.days_seen.len(),
            first,
            last,
        );
        for call in edge.stats.http.records() {
            let _ = writeln!(
                out,
                "      http {:<7} {:<60} {:>6} requests",
                call.method, call.path, call.requests
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{} endpoints, {} edges",
        graph.node_count(),
        graph.edge_count()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::sample;

    #[test]
    fn dot_names_both_ends_and_the_port() {
        let dot = render(&sample(), Format::Dot);
        assert!(dot.starts_with("digraph netflow {"));
        assert!(dot.contains("\"workload:shop/Deployment/frontend\" -> \"workload:shop/Deployment/cart\" [label=\"tcp/7070 (3 conn)\"];"), "{dot}");
    }

    #[test]
    fn mermaid_uses_plain_ids_and_readable_labels() {
        let mermaid = render(&sample(), Format::Mermaid);
        assert_eq!(
            mermaid,
            "flowchart LR\n  n0[\"shop/cart\"]\n  n1[\"shop/frontend\"]\n  n1 -->|\"tcp/7070\"| n0\n"
        );
    }

    #[test]
    fn mermaid_edges_join_the_numbers_of_their_ends() {
        use crate::graph::{
            EdgeKey,
            tests::{stats, workload},
        };
        let mut graph = CommGraph::new();
        let names: Vec<String> = (0..40).map(|n| format!("w{n}")).collect();
        let nodes: Vec<_> = names
            .iter()
            .map(|name| graph.upsert_endpoint(workload("shop", name)))
            .collect();
        let key = EdgeKey {
            protocol: crate::model::Protocol(6),
            port: 80,
        };
        let mut expected = std::collections::BTreeSet::new();
        for client in 0..names.len() {
            let server = (client * 7 + 3) % names.len();
            graph.observe(nodes[client], nodes[server], key, &stats(1, 2, 1));
            expected.insert((
                format!("shop/{}", names[client]),
                format!("shop/{}", names[server]),
            ));
        }
        let mermaid = render(&graph, Format::Mermaid);
        // n<number>["label"] lines, then n<a> -->|"..."| n<b> lines.
        let mut labels: std::collections::BTreeMap<String, String> = Default::default();
        let mut found = std::collections::BTreeSet::new();
        for line in mermaid.lines().skip(1).map(str::trim) {
            if let Some((client, rest)) = line.split_once(" -->|") {
                let server = rest.rsplit_once("| ").unwrap().1;
                found.insert((labels[client].clone(), labels[server].clone()));
            } else {
                let (number, label) = line.split_once("[\"").unwrap();
                labels.insert(
                    number.to_string(),
                    label.trim_end_matches("\"]").to_string(),
                );
            }
        }
        assert_eq!(labels.len(), names.len());
        assert_eq!(found, expected, "{mermaid}");
    }

    #[test]
    fn json_export_is_the_file_format() {
        let json = render(&sample(), Format::Json);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["version"], crate::graph::file::GRAPH_VERSION);
        assert_eq!(value["edges"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn edges_of_the_last_day_are_marked_new() {
        use crate::graph::{
            EdgeKey,
            tests::{stats, workload},
        };
        let mut graph = sample();
        let frontend = graph.upsert_endpoint(workload("shop", "frontend"));
        let search = graph.upsert_endpoint(workload("shop", "search"));
        let key = EdgeKey {
            protocol: crate::model::Protocol(6),
            port: 9200,
        };
        graph.observe(
            frontend,
            search,
            key,
            &stats(1_764_090_000, 1_764_090_000, 1),
        );
        let table = show(&graph);
        let line = table
            .lines()
            .find(|line| line.contains("shop/search"))
            .unwrap();
        assert!(line.ends_with("new, rare"), "{table}");
        let old = table
            .lines()
            .find(|line| line.contains("shop/cart"))
            .unwrap();
        assert!(!old.contains("new"), "{table}");
    }

    #[test]
    fn show_groups_by_namespace_and_marks_rare_edges() {
        let table = show(&sample());
        assert!(table.contains("\nshop\n"), "{table}");
        assert!(table.contains("shop/frontend"), "{table}");
        assert!(table.contains("2 endpoints, 1 edges"), "{table}");
    }
}
