//! `netflow-agent graph merge|export|show`: the graph commands that need
//! only graph files (no kernel, no cluster).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::{
    CommGraph,
    export::{self, Format},
    file::write_atomically,
};

/// Merges graphs (of several nodes or weeks) into `output`.
pub fn merge(inputs: &[PathBuf], output: &Path) -> anyhow::Result<()> {
    if inputs.is_empty() {
        bail!("graph merge needs at least one input graph");
    }
    let mut merged = CommGraph::new();
    for input in inputs {
        merged.merge(&CommGraph::load(input)?);
    }
    merged.save(output)?;
    eprintln!(
        "merged {} graphs into {}: {} endpoints, {} edges",
        inputs.len(),
        output.display(),
        merged.node_count(),
        merged.edge_count()
    );
    Ok(())
}

/// Prints (or writes) the graph as JSON, DOT or Mermaid.
pub fn export(graph: &Path, format: Format, output: Option<&Path>) -> anyhow::Result<()> {
    let rendered = export::render(&CommGraph::load(graph)?, format);
    match output {
        Some(path) => write_atomically(path, rendered.as_bytes())
            .with_context(|| format!("cannot write {}", path.display())),
        None => {
            print!("{rendered}");
            Ok(())
        }
    }
}

/// Prints the readable table of edges.
pub fn show(graph: &Path) -> anyhow::Result<()> {
    print!("{}", export::show(&CommGraph::load(graph)?));
    Ok(())
}
