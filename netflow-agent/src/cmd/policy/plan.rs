//! `policy plan`: the rollout order, printed.

use std::path::Path;

use crate::{
    graph::CommGraph,
    policy::{
        rollout::{self, ClusterTiers},
        write::{ADMIN_TIER_FILE, BASELINE_TIER_FILE},
    },
};

/// `policies` is where the generated policies are, for the printed commands
/// (and the cluster tier files there, if any, get their steps).
pub fn run(graph: &Path, policies: &str) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let tiers = ClusterTiers {
        admin: Path::new(policies).join(ADMIN_TIER_FILE).exists(),
        baseline: Path::new(policies).join(BASELINE_TIER_FILE).exists(),
    };
    print!(
        "{}",
        rollout::render(&rollout::plan(&graph, tiers), policies)
    );
    Ok(())
}
