//! `graph build`: a graph from flow logs over an inventory.

use std::path::{Path, PathBuf};

use crate::{
    daemon::flowlog::{LogLine, for_each_line_of},
    graph::{CommGraph, build::Builder},
    identity::{Identity, dns_servers, names_by_client, trusted_names},
    inventory::Inventory,
    model::DnsAnswer,
};

/// The DNS answers of every log, in log order.
fn dns_answers(flows: &[PathBuf]) -> anyhow::Result<Vec<DnsAnswer>> {
    let mut answers = Vec::new();
    for path in flows {
        for_each_line_of(
            path,
            |kind| kind == "dns",
            |line| {
                if let LogLine::Dns(name) = line {
                    answers.push(DnsAnswer {
                        name: name.name,
                        ip: name.ip,
                        server: name.server,
                        client: name.cgroup,
                    });
                }
                Ok(())
            },
        )?;
    }
    Ok(answers)
}

/// Builds a graph from flow logs over an inventory, extending `existing`.
pub fn run(
    flows: &[PathBuf],
    inventory: &Path,
    existing: Option<&Path>,
    output: &Path,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Two passes over the logs, neither holding them: names first (a flow
    // is named by every answer its client got, also later ones), then flows.
    // The names are read while the inventory and the graph are.
    let (answers, (inventory, graph)) = crate::cmd::alongside(
        || dns_answers(flows),
        || {
            let inventory = Inventory::load(inventory);
            let graph = existing.map_or_else(|| Ok(CommGraph::new()), CommGraph::load);
            (inventory, graph)
        },
    );
    // The errors in the order the steps were once taken one by one.
    let (inventory, mut graph) = (inventory?, graph?);
    let answers = answers?;
    tracing::debug!(elapsed = ?started.elapsed(), "DNS answers, inventory and graph read");
    // Only the cluster's DNS names addresses, for the workload that asked.
    let servers = dns_servers(&inventory, &[]);
    let (dns, untrusted) = trusted_names(&answers, &servers);
    if untrusted > 0 {
        eprintln!(
            "{untrusted} DNS answers from servers that are not the cluster's DNS were not believed"
        );
    }
    let (by_client, _) = names_by_client(&inventory, &answers, &servers);
    let identity = Identity::new(&inventory, &dns).with_client_names(&by_client);
    let mut builder = Builder::new(&mut graph, &identity);
    for path in flows {
        for_each_line_of(
            path,
            |kind| kind == "flow",
            |line| {
                if let LogLine::Flow(flow) = line {
                    builder.add(&flow);
                }
                Ok(())
            },
        )?;
    }
    let report = builder.report;
    tracing::debug!(elapsed = ?started.elapsed(), "flows added");
    graph.save(output)?;
    tracing::debug!(elapsed = ?started.elapsed(), "graph saved");
    eprintln!(
        "{}: {} endpoints, {} edges from {} flow records ({} without a decided client, {} with an unnamed local end, {} to a Service port without backends)",
        output.display(),
        graph.node_count(),
        graph.edge_count(),
        report.flow_records,
        report.undecided_direction,
        report.unresolved_local,
        report.unresolved_service,
    );
    Ok(())
}
