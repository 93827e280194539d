//! `graph build`: a graph from flow logs over an inventory.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{
    daemon::flowlog::{LogLine, for_each_line_of},
    graph::{CommGraph, build::Builder, file::GraphFormat},
    identity::{Identity, dns_servers, is_believed, names_by_client, trusted_names},
    inventory::Inventory,
    model::DnsAnswer,
};

/// The distinct DNS answers of every log, in the order first seen, and how
/// many times the logs hold each. An agent logs a name again after it
/// restarts or forgets it, and every node logs its own: held once, a week
/// of logs costs the build memory for what was answered, not for how often.
#[derive(Debug, Default, PartialEq)]
struct Answers {
    distinct: Vec<DnsAnswer>,
    times: Vec<u64>,
    /// The flow records of every log, counted as the pass went by them.
    flow_records: u64,
}

impl Answers {
    /// How many answers (repeats too) came from servers not in `trusted`.
    fn untrusted(&self, trusted: &BTreeSet<IpAddr>) -> u64 {
        self.distinct
            .iter()
            .zip(&self.times)
            .filter(|(answer, _)| !is_believed(answer, trusted))
            .map(|(_, times)| times)
            .sum()
    }
}

/// The DNS answers of every log.
fn dns_answers(flows: &[PathBuf]) -> anyhow::Result<Answers> {
    // Each answer with when it was first seen and how many times.
    let mut seen: HashMap<DnsAnswer, (usize, u64)> = HashMap::new();
    let flow_records = AtomicU64::new(0);
    for path in flows {
        for_each_line_of(
            path,
            |kind| {
                if kind == "flow" {
                    flow_records.fetch_add(1, Ordering::Relaxed);
                }
                kind == "dns"
            },
            |line| {
                if let LogLine::Dns(name) = line {
                    let answer = DnsAnswer {
                        name: name.name.clone(),
                        ip: name.ip,
                        server: name.server,
                        client: name.cgroup.clone(),
                    };
                    let order = seen.len();
                    seen.entry(answer).or_insert((order, 0)).1 += 1;
                }
                Ok(())
            },
        )?;
    }
    let mut held: Vec<(DnsAnswer, (usize, u64))> = seen.into_iter().collect();
    held.sort_unstable_by_key(|(_, (order, _))| *order);
    let (distinct, times) = held
        .into_iter()
        .map(|(answer, (_, times))| (answer, times))
        .unzip();
    Ok(Answers {
        distinct,
        times,
        flow_records: flow_records.into_inner(),
    })
}

/// Builds a graph from flow logs over an inventory, extending `existing`.
pub fn run(
    flows: &[PathBuf],
    inventory: &Path,
    existing: Option<&Path>,
    output: &Path,
    format: GraphFormat,
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
    let (dns, _) = trusted_names(&answers.distinct, &servers);
    let untrusted = answers.untrusted(&servers);
    if untrusted > 0 {
        eprintln!(
            "{untrusted} DNS answers from servers that are not the cluster's DNS were not believed"
        );
    }
    let (by_client, _) = names_by_client(&inventory, &answers.distinct, &servers);
    let identity = Identity::new(&inventory, &dns).with_client_names(&by_client);
    // Every record may make an edge: room for them is set aside before.
    graph.expect_edges(answers.flow_records);
    let mut builder = Builder::new(&mut graph, &identity);
    for path in flows {
        for_each_line_of(
            path,
            |kind| kind == "flow",
            |line| {
                if let LogLine::Flow(flow) = line {
                    builder.add(flow);
                }
                Ok(())
            },
        )?;
    }
    let report = builder.report;
    tracing::debug!(elapsed = ?started.elapsed(), "flows added");
    graph.save_as(output, format)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_answers_are_held_once_and_counted() {
        let path = std::env::temp_dir().join(format!(
            "netflow-build-answers-{}.jsonl",
            std::process::id()
        ));
        let line = |name: &str, server: &str| {
            format!(
                r#"{{"type":"dns","ts":"2026-11-20T10:00:00Z","name":"{name}","ip":"192.0.2.1","server":"{server}","cgroup":"/kubepods/pod1/c"}}"#
            )
        };
        // Two answers from the cluster's DNS and one from elsewhere, each
        // logged three times (restarts, days), a flow line and a
        // statistics line between.
        let mut text = String::new();
        for _ in 0..3 {
            text.push_str(&line("api.example.com", "10.96.0.10"));
            text.push('\n');
            text.push_str(r#"{"type":"stats","ts":"2026-11-20T10:00:00Z"}"#);
            text.push('\n');
            // Counted, not read.
            text.push_str(r#"{"type":"flow","ts":"2026-11-20T10:00:00Z"}"#);
            text.push('\n');
            text.push_str(&line("db.example.com", "10.96.0.10"));
            text.push('\n');
            text.push_str(&line("api.example.com", "203.0.113.9"));
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        let answers = dns_answers(std::slice::from_ref(&path));
        std::fs::remove_file(&path).unwrap();
        let answers = answers.unwrap();
        let names: Vec<(&str, Option<IpAddr>)> = answers
            .distinct
            .iter()
            .map(|answer| (answer.name.as_str(), answer.server))
            .collect();
        let (cluster_dns, elsewhere) = ("10.96.0.10".parse().ok(), "203.0.113.9".parse().ok());
        assert_eq!(
            names,
            [
                ("api.example.com", cluster_dns),
                ("db.example.com", cluster_dns),
                ("api.example.com", elsewhere),
            ],
            "each answer once, in the order first seen"
        );
        assert_eq!(answers.times, [3, 3, 3]);
        assert_eq!(answers.flow_records, 3);
        let trusted = BTreeSet::from(["10.96.0.10".parse().unwrap()]);
        assert_eq!(
            answers.untrusted(&trusted),
            3,
            "every line from elsewhere is counted, repeats too"
        );
    }
}
