//! `netflow-agent graph merge|export|show`: the graph commands that need
//! only graph files (no kernel, no cluster).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{
    flowlog::{LogLine, read_flow_log},
    identity::Identity,
    inventory::Inventory,
};

use super::{
    CommGraph,
    export::{self, Format},
    file::write_atomically,
};

/// Builds a graph from flow logs over an inventory, extending `existing`.
pub fn build(
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
    let mut dns: BTreeMap<std::net::IpAddr, std::collections::BTreeSet<String>> = BTreeMap::new();
    for path in flows {
        for line in read_flow_log(path).map_err(anyhow::Error::msg)? {
            match line {
                LogLine::Flow(flow) => records.push(flow),
                LogLine::Dns(name) => {
                    dns.entry(name.ip).or_default().insert(name.name);
                }
                LogLine::Stats(_) => {}
            }
        }
    }
    let identity = Identity::new(&inventory, &dns);
    let report = super::build::add_flows(&mut graph, &identity, &records);
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

/// Merges graphs (of several nodes or weeks) into `output`.
pub fn merge(inputs: &[PathBuf], output: &Path) -> anyhow::Result<()> {
    if inputs.is_empty() {
        bail!("graph merge needs at least one input graph");
    }
    let mut merged = CommGraph::new();
    for input in inputs {
        merged.merge(&CommGraph::load(input)?);
    }
    merged.save(output)?;
    eprintln!(
        "merged {} graphs into {}: {} endpoints, {} edges",
        inputs.len(),
        output.display(),
        merged.node_count(),
        merged.edge_count()
    );
    Ok(())
}

/// Prints (or writes) the graph as JSON, DOT or Mermaid.
pub fn export(graph: &Path, format: Format, output: Option<&Path>) -> anyhow::Result<()> {
    let rendered = export::render(&CommGraph::load(graph)?, format);
    match output {
        Some(path) => write_atomically(path, rendered.as_bytes())
            .with_context(|| format!("cannot write {}", path.display())),
        None => {
            print!("{rendered}");
            Ok(())
        }
    }
}

/// Prints the readable table of edges.
pub fn show(graph: &Path) -> anyhow::Result<()> {
    print!("{}", export::show(&CommGraph::load(graph)?));
    Ok(())
}
