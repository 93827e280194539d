//! `graph show`: the edges as a table, by namespace.

use std::path::Path;

use crate::graph::{CommGraph, export::show};

pub fn run(graph: &Path) -> anyhow::Result<()> {
    print!("{}", show(&CommGraph::load(graph)?));
    Ok(())
}
