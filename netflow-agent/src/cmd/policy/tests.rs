//! `policy tests`: netassert (v2) tests from the graph.

use std::path::Path;

use anyhow::Context as _;

use crate::{
    graph::{CommGraph, file::write_atomically},
    inventory::Inventory,
    policy::netassert::{test_cases, to_yaml},
};

/// Writes netassert (v2) tests for the graph to `DIR/netassert.yaml`.
pub fn run(graph: &Path, inventory: &Path, out: &Path) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let inventory = Inventory::load(inventory)?;
    let (cases, skipped) = test_cases(&graph, &inventory);
    let yaml = to_yaml(&cases, &skipped).context("rendering the netassert tests")?;
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
