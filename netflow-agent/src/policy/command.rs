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
) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let inventory = Inventory::load(inventory)?;
    let set = generate(&graph, &inventory, options)?;
    write_policy_set(&set, out)?;
    for finding in &set.findings {
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
    let mut files = Vec::new();
    for (namespace, policies) in &set.by_namespace {
        let yaml =
            to_yaml(policies).with_context(|| format!("rendering the policies of {namespace}"))?;
        files.push((out.join(format!("{namespace}.yaml")), yaml.into_bytes()));
    }
    let mut findings = serde_json::to_vec_pretty(&set.findings)?;
    findings.push(b'\n');
    files.push((out.join("findings.json"), findings));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (path, bytes) in files {
        write_atomically(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
