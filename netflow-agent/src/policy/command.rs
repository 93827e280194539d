//! `netflow-agent policy generate`.

use std::path::Path;

use anyhow::Context as _;

use super::generate::{GenerateOptions, PolicySet, generate, to_yaml};
use crate::{graph::CommGraph, graph::file::write_atomically, inventory::Inventory};

/// Generates the policies for `graph` over `inventory` into `out`: one
/// `NAMESPACE.yaml` per namespace and `findings.json`.
pub fn generate_to_dir(
    graph: &Path,
    inventory: &Path,
    out: &Path,
    options: &GenerateOptions,
    cilium: bool,
) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let inventory = Inventory::load(inventory)?;
    let findings = if cilium {
        let set = super::cilium::generate(&graph, &inventory, options)?;
        let files = set
            .by_namespace
            .iter()
            .map(|(namespace, policies)| Ok((namespace.clone(), to_yaml(policies)?)))
            .collect::<Result<Vec<_>, serde_norway::Error>>()
            .context("rendering the policies")?;
        write_files(&files, &set.findings, out)?;
        set.findings
    } else {
        let set = generate(&graph, &inventory, options)?;
        write_policy_set(&set, out)?;
        set.findings
    };
    for finding in &findings {
        eprintln!(
            "finding: {} {}: {}",
            finding.kind, finding.workload, finding.detail
        );
    }
    Ok(())
}

/// Writes a policy set; everything is rendered before the first file is
/// written, and each file is written atomically.
pub fn write_policy_set(set: &PolicySet, out: &Path) -> anyhow::Result<()> {
    let files = set
        .by_namespace
        .iter()
        .map(|(namespace, policies)| Ok((namespace.clone(), to_yaml(policies)?)))
        .collect::<Result<Vec<_>, serde_norway::Error>>()
        .context("rendering the policies")?;
    write_files(&files, &set.findings, out)
}

fn write_files(
    files: &[(String, String)],
    findings: &[super::generate::Finding],
    out: &Path,
) -> anyhow::Result<()> {
    let mut findings = serde_json::to_vec_pretty(findings)?;
    findings.push(b'\n');
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (namespace, yaml) in files {
        let path = out.join(format!("{namespace}.yaml"));
        write_atomically(&path, yaml.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let path = out.join("findings.json");
    write_atomically(&path, &findings)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Replays the graph against the policies in `policies`; fails when an
/// observed edge would be blocked.
pub fn verify_command(
    graph: &Path,
    policies: &Path,
    inventory: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let inventory = Inventory::load(inventory)?;
    let policies = super::evaluate::load_policy_set(policies)?;
    let report = super::verify::verify(&graph, &policies, &inventory);
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

/// Writes netassert (v2) tests for the graph to `DIR/netassert.yaml`.
pub fn tests_command(graph: &Path, inventory: &Path, out: &Path) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let inventory = Inventory::load(inventory)?;
    let (cases, skipped) = super::netassert::test_cases(&graph, &inventory);
    let yaml =
        super::netassert::to_yaml(&cases, &skipped).context("rendering the netassert tests")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("netassert.yaml");
    write_atomically(&path, yaml.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let allowed = cases.iter().filter(|c| c.exit_code == 0).count();
    eprintln!(
        "{}: {} tests ({} must connect, {} must not); {} edges skipped (see the file's comments)",
        path.display(),
        cases.len(),
        allowed,
        cases.len() - allowed,
        skipped.0.len()
    );
    Ok(())
}
