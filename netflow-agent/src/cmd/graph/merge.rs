//! `graph merge`: graphs of several nodes or weeks into one.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::graph::{CommGraph, file::GraphFormat};

pub fn run(inputs: &[PathBuf], output: &Path, format: GraphFormat) -> anyhow::Result<()> {
    if inputs.is_empty() {
        bail!("graph merge needs at least one input graph");
    }
    let mut merged = CommGraph::new();
    for input in inputs {
        merged.merge(&CommGraph::load(input)?);
    }
    merged.save_as(output, format)?;
    eprintln!(
        "merged {} graphs into {}: {} endpoints, {} edges",
        inputs.len(),
        output.display(),
        merged.node_count(),
        merged.edge_count()
    );
    Ok(())
}
