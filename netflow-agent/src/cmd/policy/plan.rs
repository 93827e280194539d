//! `policy plan`: the rollout order, printed.

use std::path::Path;

use crate::{graph::CommGraph, policy::rollout};

/// `policies` is where the generated policies are, for the printed commands.
pub fn run(graph: &Path, policies: &str) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    print!("{}", rollout::render(&rollout::plan(&graph), policies));
    Ok(())
}
