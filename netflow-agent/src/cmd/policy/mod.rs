//! `policy generate|verify|plan|tests|apply`.

pub mod apply;
pub mod generate;
pub mod plan;
pub mod tests;
pub mod verify;

use std::path::Path;

use crate::graph::CommGraph;

/// Reads the graph file on a thread of its own while `other` reads what
/// else the command needs (the inventory, policy files): a large graph's
/// JSON is parsed on one core, and the others would wait for it.
fn with_graph<T>(
    graph: &Path,
    other: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(CommGraph, T)> {
    std::thread::scope(|scope| {
        let reading = scope.spawn(|| CommGraph::load(graph));
        let other = other();
        let graph = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((graph, other?))
    })
}
