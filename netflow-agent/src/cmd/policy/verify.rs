//! `policy verify`: replay every observed edge against a policy set; exit 0
//! only when all are allowed.

use std::path::Path;

use crate::{
    graph::CommGraph,
    inventory::Inventory,
    policy::{evaluate::load_policy_set, verify::verify},
};

/// Replays the graph against the policies in `policies`; fails when an
/// observed edge would be blocked.
pub fn run(graph: &Path, policies: &Path, inventory: &Path, json: bool) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let inventory = Inventory::load(inventory)?;
    let policies = load_policy_set(policies)?;
    let report = verify(&graph, &policies, &inventory);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} policies, {} observed edges: {} allowed, {} blocked",
            policies.len(),
            report.edges,
            report.allowed,
            report.blocked.len()
        );
        for blocked in &report.blocked {
            println!("  BLOCKED {}: {}", blocked.edge, blocked.reason);
        }
        for contact in &report.metadata_contacts {
            println!("  metadata service (never allowed): {contact}");
        }
        for contact in &report.link_local_contacts {
            println!("  link-local address (never allowed): {contact}");
        }
        for edge in &report.never_connected {
            println!("  never answered (never allowed, not checked): {edge}");
        }
        for edge in &report.not_checkable {
            println!("  not checkable (no pod or address in the inventory): {edge}");
        }
        let radius = &report.blast_radius;
        println!(
            "blast radius: {} (pod, pod, port) pairs reachable without policies, {} with them; {} open beyond the observed edges",
            radius.pairs_before,
            radius.pairs_after,
            radius.open_beyond_observed.len()
        );
        for pair in &radius.open_beyond_observed {
            println!("  open: {pair}");
        }
    }
    if !report.blocked.is_empty() {
        anyhow::bail!("{} observed edges would be blocked", report.blocked.len());
    }
    Ok(())
}
