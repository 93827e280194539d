//! `graph export`: the graph as JSON, DOT or Mermaid.

use std::path::Path;

use anyhow::Context as _;

use crate::graph::{
    CommGraph,
    export::{Format, render},
    file::write_atomically,
};

pub fn run(graph: &Path, format: Format, output: Option<&Path>) -> anyhow::Result<()> {
    let rendered = render(&CommGraph::load(graph)?, format);
    match output {
        Some(path) => write_atomically(path, rendered.as_bytes())
            .with_context(|| format!("cannot write {}", path.display())),
        None => {
            print!("{rendered}");
            Ok(())
        }
    }
}
