//! `policy generate|verify|plan|tests|apply`.

pub mod apply;
pub mod generate;
pub mod plan;
pub mod tests;
pub mod verify;

use std::path::Path;

use crate::graph::CommGraph;

/// Reads the graph file on a thread of its own while `other` reads what
/// else the command needs (the inventory, policy files).
fn with_graph<T>(
    graph: &Path,
    other: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(CommGraph, T)> {
    let (graph, other) = crate::cmd::alongside(|| CommGraph::load(graph), other);
    Ok((graph?, other?))
}
