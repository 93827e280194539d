//! `graph show`: the edges as a table, by namespace.

use std::path::Path;

use crate::graph::{CommGraph, export::show};

pub fn run(graph: &Path) -> anyhow::Result<()> {
    let table = show(&CommGraph::load(graph)?);
    crate::cmd::to_stdout(|out| out.write_all(table.as_bytes()))
}
