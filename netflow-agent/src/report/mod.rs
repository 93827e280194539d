//! `graph export --format html`: the graph, and with policies their review,
//! as one self-contained HTML page: the data as JSON, the script and the
//! styles inlined (`report/assets`, embedded at compile time), nothing
//! fetched when it is opened, so it works air-gapped and as a CI artifact.
//!
//! The page draws namespaces as groups, workloads and the ends outside the
//! cluster as nodes and the edges between them, and lists the same as text
//! (tables any reader and search can use). With policies each edge carries
//! its verdict: what allows it, or why it is blocked.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::{
    graph::CommGraph,
    inventory::{Inventory, WorkloadRef},
    model::{EndpointKind, file_time},
    policy::{
        generate::{SCAN_ATTEMPTS, proven},
        staged::edge_name,
        verify::{NamespaceRadius, VerifyReport},
    },
};

const SCRIPT: &str = include_str!("assets/report.js");
const STYLE: &str = include_str!("assets/report.css");

/// What the page is made from.
pub struct ReportInputs<'a> {
    pub title: &'a str,
    pub graph: &'a CommGraph,
    /// Replicas (pods per workload) come from it.
    pub inventory: Option<&'a Inventory>,
    /// `policy verify` of the graph against a policy set, and the set's
    /// name (its directory) and rollout plan.
    pub review: Option<PolicyReview<'a>>,
}

pub struct PolicyReview<'a> {
    pub source: &'a str,
    pub report: &'a VerifyReport,
    /// `policy plan`'s text.
    pub plan: &'a str,
}

#[derive(Serialize)]
struct Data<'a> {
    title: &'a str,
    generated: String,
    nodes: Vec<NodeView<'a>>,
    edges: Vec<EdgeView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<ReviewView<'a>>,
}

#[derive(Serialize)]
struct NodeView<'a> {
    id: &'a str,
    kind: &'static str,
    /// The group it is drawn in: its namespace, or `outside the cluster`.
    group: String,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    workload_kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<usize>,
    /// Findings about it: `metadata` (it reached the metadata service),
    /// `scan` (its attempts to many ports or peers went unanswered),
    /// `unlabeled` (no labels: no policy can select it alone).
    flags: Vec<&'static str>,
}

#[derive(Serialize)]
struct EdgeView {
    from: usize,
    to: usize,
    protocol: String,
    port: u16,
    connections: u64,
    established: u64,
    first_seen: String,
    last_seen: String,
    days: usize,
    new: bool,
    rare: bool,
    calls: Vec<CallView>,
    /// With policies: `allowed`, `blocked`, `never-connected`, `metadata`,
    /// `link-local` or `not-checkable`; else `observed` or `never-connected`.
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    why: String,
}

#[derive(Serialize)]
struct CallView {
    method: String,
    path: String,
    requests: u64,
}

#[derive(Serialize)]
struct ReviewView<'a> {
    source: &'a str,
    edges: usize,
    allowed: usize,
    blocked: usize,
    radius_before: usize,
    radius_after: usize,
    open_beyond_observed: &'a [String],
    by_namespace: &'a BTreeMap<String, NamespaceRadius>,
    plan: &'a str,
}

/// The page.
pub fn render(inputs: &ReportInputs<'_>) -> Result<String, serde_json::Error> {
    let data = data(inputs);
    // Inside a <script> element: `<` escaped, so no `</script>` in a name
    // ends it (JSON reads `\u003c` as `<`).
    let json = serde_json::to_string(&data)?.replace('<', "\\u003c");
    let title = escape_html(inputs.title);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <script type=\"application/json\" id=\"netflow-data\">{json}</script>\n\
         <script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    ))
}

fn data<'a>(inputs: &'a ReportInputs<'a>) -> Data<'a> {
    let graph = inputs.graph;
    let endpoints = graph.endpoints();
    let index: HashMap<&str, usize> = endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| (endpoint.id.as_str(), index))
        .collect();
    let edges = graph.edges();
    // Findings by client: the metadata service reached; attempts never
    // answered to many (peer, port) pairs.
    let mut metadata_clients = BTreeSet::new();
    let mut unanswered: BTreeMap<&str, usize> = BTreeMap::new();
    for (client, server, edge) in &edges {
        if server.kind == EndpointKind::Metadata {
            metadata_clients.insert(client.id.as_str());
        }
        if !proven(edge, false) {
            *unanswered.entry(client.id.as_str()).or_default() += 1;
        }
    }
    let nodes = endpoints
        .iter()
        .map(|endpoint| {
            let mut flags = Vec::new();
            if metadata_clients.contains(endpoint.id.as_str()) {
                flags.push("metadata");
            }
            if unanswered
                .get(endpoint.id.as_str())
                .is_some_and(|count| *count >= SCAN_ATTEMPTS)
            {
                flags.push("scan");
            }
            if endpoint.kind == EndpointKind::Workload && endpoint.labels.is_empty() {
                flags.push("unlabeled");
            }
            let replicas = inputs.inventory.and_then(|inventory| {
                (endpoint.kind == EndpointKind::Workload).then(|| {
                    let workload = WorkloadRef {
                        namespace: endpoint.namespace.clone().unwrap_or_default(),
                        kind: endpoint.workload_kind.clone().unwrap_or_default(),
                        name: endpoint.name.clone(),
                    };
                    inventory.pods_of(&workload).count()
                })
            });
            NodeView {
                id: &endpoint.id,
                kind: kind_name(endpoint.kind),
                group: match (endpoint.kind, &endpoint.namespace) {
                    (EndpointKind::Workload, Some(namespace)) => namespace.clone(),
                    _ => "outside the cluster".into(),
                },
                label: endpoint.label(),
                workload_kind: endpoint.workload_kind.as_deref(),
                replicas,
                flags,
            }
        })
        .collect();
    let is_new = crate::graph::export::new_edges(graph);
    let verdicts: HashMap<&str, (&'static str, &str)> = inputs
        .review
        .iter()
        .flat_map(|review| review.report.verdicts.iter())
        .map(|verdict| {
            (
                verdict.edge.as_str(),
                (verdict.status, verdict.why.as_str()),
            )
        })
        .collect();
    let edge_views = edges
        .iter()
        .map(|(client, server, edge)| {
            let volume = edge.stats.volume();
            let (status, why) = match verdicts.get(edge_name(client, server, edge).as_str()) {
                Some((status, why)) => (*status, why.to_string()),
                None if !proven(edge, false) => ("never-connected", String::new()),
                None => ("observed", String::new()),
            };
            EdgeView {
                from: index[client.id.as_str()],
                to: index[server.id.as_str()],
                protocol: edge.key.protocol.to_string(),
                port: edge.key.port,
                connections: volume.connections,
                established: volume.established,
                first_seen: file_time(edge.stats.first_seen),
                last_seen: file_time(edge.stats.last_seen),
                days: edge.stats.days_seen.len(),
                new: is_new(edge),
                rare: edge.stats.days_seen.len() <= 1,
                calls: edge
                    .stats
                    .http
                    .records()
                    .into_iter()
                    .map(|call| CallView {
                        method: call.method,
                        path: call.path,
                        requests: call.requests,
                    })
                    .collect(),
                status,
                why,
            }
        })
        .collect();
    Data {
        title: inputs.title,
        generated: file_time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        ),
        nodes,
        edges: edge_views,
        review: inputs.review.as_ref().map(|review| ReviewView {
            source: review.source,
            edges: review.report.edges,
            allowed: review.report.allowed,
            blocked: review.report.blocked.len(),
            radius_before: review.report.blast_radius.pairs_before,
            radius_after: review.report.blast_radius.pairs_after,
            open_beyond_observed: &review.report.blast_radius.open_beyond_observed,
            by_namespace: &review.report.blast_radius.by_namespace,
            plan: review.plan,
        }),
    }
}

fn kind_name(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Workload => "workload",
        EndpointKind::Node => "node",
        EndpointKind::External => "external",
        EndpointKind::Metadata => "metadata",
        EndpointKind::Unresolved => "unresolved",
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::{stats, workload};

    #[test]
    fn names_cannot_break_out_of_the_page() {
        let mut graph = CommGraph::new();
        let client = graph.upsert_endpoint(workload("a", "</script><script>alert(1)</script>"));
        let server = graph.upsert_endpoint(workload("a", "db"));
        graph.observe(
            client,
            server,
            crate::graph::EdgeKey {
                protocol: crate::model::Protocol(6),
                port: 5432,
            },
            &stats(1, 2, 3),
        );
        let page = render(&ReportInputs {
            title: "<b>x</b>",
            graph: &graph,
            inventory: None,
            review: None,
        })
        .unwrap();
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"));
        let start = page.find("id=\"netflow-data\">").unwrap() + "id=\"netflow-data\">".len();
        let end = start + page[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(data["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(data["edges"][0]["port"], 5432);
    }
}
