//! `policy verify`: replay every observed edge against a policy set; exit 0
//! only when all are allowed.

use std::path::{Path, PathBuf};

use crate::{
    inventory::Inventory,
    policy::{
        evaluate::{Policies, load_policy_set},
        from_cluster,
        verify::verify,
    },
};

/// Where the policies come from.
pub enum Source {
    /// A directory of policy files, or one file.
    Files(PathBuf),
    /// The cluster's own, through the API (this kubeconfig, or the default).
    Cluster(Option<PathBuf>),
}

/// Replays the graph against the policies; fails when an observed edge
/// would be blocked.
pub fn run(graph: &Path, source: &Source, inventory: &Path, json: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (graph, (inventory, policies)) = super::with_graph(graph, || {
        let inventory = Inventory::load(inventory)?;
        tracing::debug!(elapsed = ?started.elapsed(), "inventory read");
        let policies = match source {
            Source::Files(path) => load_policy_set(path)?,
            Source::Cluster(kubeconfig) => cluster_policies(kubeconfig.as_deref())?,
        };
        tracing::debug!(elapsed = ?started.elapsed(), "policies read");
        Ok((inventory, policies))
    })?;
    tracing::debug!(elapsed = ?started.elapsed(), "graph read");
    let report = verify(&graph, &policies, &inventory);
    crate::cmd::to_stdout(|out| {
        if json {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            return writeln!(out);
        }
        writeln!(
            out,
            "{} policies, {} observed edges: {} allowed, {} blocked",
            policies.len(),
            report.edges,
            report.allowed,
            report.blocked.len()
        )?;
        for blocked in &report.blocked {
            writeln!(out, "  BLOCKED {}: {}", blocked.edge, blocked.reason)?;
        }
        for contact in &report.metadata_contacts {
            writeln!(out, "  metadata service (never allowed): {contact}")?;
        }
        for contact in &report.link_local_contacts {
            writeln!(out, "  link-local address (never allowed): {contact}")?;
        }
        for edge in &report.never_connected {
            writeln!(out, "  never answered (never allowed, not checked): {edge}")?;
        }
        for edge in &report.not_checkable {
            writeln!(
                out,
                "  not checkable (no pod or address in the inventory): {edge}"
            )?;
        }
        let radius = &report.blast_radius;
        writeln!(
            out,
            "blast radius: {} (pod, pod, port) pairs reachable without policies, {} with them; {} open beyond the observed edges",
            radius.pairs_before,
            radius.pairs_after,
            radius.open_beyond_observed.len()
        )?;
        for pair in &radius.open_beyond_observed {
            writeln!(out, "  open: {pair}")?;
        }
        Ok(())
    })?;
    crate::cmd::keep_until_exit(policies);
    if !report.blocked.is_empty() {
        anyhow::bail!("{} observed edges would be blocked", report.blocked.len());
    }
    Ok(())
}

/// The cluster's policies, with what was read (and what the cluster does
/// not serve) on stderr.
fn cluster_policies(kubeconfig: Option<&Path>) -> anyhow::Result<Policies> {
    let found = crate::cmd::runtime()?.block_on(async {
        let client = crate::kube::client(kubeconfig).await?;
        anyhow::Ok(from_cluster::read(&client).await?)
    })?;
    let read: Vec<String> = found
        .read
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    eprintln!("read from the cluster: {}", read.join(", "));
    if !found.not_installed.is_empty() {
        eprintln!(
            "not served by this cluster (no CRD): {}",
            found.not_installed.join(", ")
        );
    }
    Ok(found.policies)
}
