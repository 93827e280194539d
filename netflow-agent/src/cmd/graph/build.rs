//! `graph build`: a graph from flow logs over an inventory.

use std::path::{Path, PathBuf};

use crate::{
    daemon::flowlog::{LogLine, read_flow_log},
    graph::{CommGraph, build::add_flows},
    identity::{Identity, dns_servers, names_by_client, trusted_names},
    inventory::Inventory,
    model::DnsAnswer,
};

/// Builds a graph from flow logs over an inventory, extending `existing`.
pub fn run(
    flows: &[PathBuf],
    inventory: &Path,
    existing: Option<&Path>,
    output: &Path,
) -> anyhow::Result<()> {
    let inventory = Inventory::load(inventory)?;
    let mut graph = match existing {
        Some(path) => CommGraph::load(path)?,
        None => CommGraph::new(),
    };
    let mut records = Vec::new();
    let mut answers = Vec::new();
    for path in flows {
        for line in read_flow_log(path)? {
            match line {
                LogLine::Flow(flow) => records.push(flow),
                LogLine::Dns(name) => answers.push(DnsAnswer {
                    name: name.name,
                    ip: name.ip,
                    server: name.server,
                    client: name.cgroup,
                }),
                LogLine::Stats(_) => {}
            }
        }
    }
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
    let report = add_flows(&mut graph, &identity, &records);
    graph.save(output)?;
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
