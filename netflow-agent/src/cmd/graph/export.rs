//! `graph export`: the graph as JSON, DOT, Mermaid, or one HTML page (with
//! policies, their review beside it).

use std::{io::Write, path::Path};

use anyhow::Context as _;

use crate::{
    cli::ExportFormat,
    graph::{
        CommGraph,
        export::{Format, write},
        file::write_atomically_buffered,
    },
    inventory::Inventory,
    policy::{
        evaluate::load_policy_set,
        rollout::{self, ClusterTiers},
        verify::verify_explained,
        write::{ADMIN_TIER_FILE, BASELINE_TIER_FILE},
    },
    report::{self, PolicyReview, ReportInputs},
};

pub fn run(
    graph_path: &Path,
    format: ExportFormat,
    output: Option<&Path>,
    inventory: Option<&Path>,
    policies: Option<&Path>,
) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph_path)?;
    let format = match format {
        ExportFormat::Json => Format::Json,
        ExportFormat::Dot => Format::Dot,
        ExportFormat::Mermaid => Format::Mermaid,
        ExportFormat::Html => {
            let page = html(&graph, graph_path, inventory, policies)?;
            return emit(output, |out| out.write_all(page.as_bytes()));
        }
    };
    emit(output, |out| write(&graph, format, out))
}

/// Writes an export to `output` (whole or not at all) or to stdout.
fn emit(
    output: Option<&Path>,
    content: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    match output {
        Some(path) => write_atomically_buffered(path, 0o644, |writer| content(writer))
            .with_context(|| format!("cannot write {}", path.display())),
        None => crate::cmd::to_stdout(content),
    }
}

/// The report page: the graph, and with policies their review.
pub fn html(
    graph: &CommGraph,
    graph_path: &Path,
    inventory: Option<&Path>,
    policies: Option<&Path>,
) -> anyhow::Result<String> {
    let inventory = inventory.map(Inventory::load).transpose()?;
    let title = format!("netflow: {}", graph_path.display());
    let review = match (policies, &inventory) {
        (Some(dir), Some(inventory)) => {
            let set = load_policy_set(dir)?;
            let report = verify_explained(graph, &set, inventory);
            let tiers = ClusterTiers {
                admin: dir.join(ADMIN_TIER_FILE).exists(),
                baseline: dir.join(BASELINE_TIER_FILE).exists(),
            };
            let source = dir.display().to_string();
            let plan = rollout::render(&rollout::plan(graph, tiers), &source);
            Some((source, report, plan))
        }
        _ => None,
    };
    let page = report::render(&ReportInputs {
        title: &title,
        graph,
        inventory: inventory.as_ref(),
        review: review.as_ref().map(|(source, report, plan)| PolicyReview {
            source,
            report,
            plan,
        }),
    })
    .context("rendering the report")?;
    Ok(page)
}
