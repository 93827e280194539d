//! `policy plan`: the rollout order, printed.

use std::path::Path;

use anyhow::Context as _;

use crate::{
    graph::CommGraph,
    policy::{
        rollout::{self, ClusterTiers},
        staged::Denials,
        write::{ADMIN_TIER_FILE, BASELINE_TIER_FILE},
    },
};

/// `policies` is where the generated policies are, for the printed commands
/// (and the cluster tier files there, if any, get their steps).
/// With `denials` (`graph pull --denials`), each step lists the edges its
/// policies would break.
pub fn run(graph: &Path, policies: &str, denials: Option<&Path>) -> anyhow::Result<()> {
    let graph = CommGraph::load(graph)?;
    let denials = match denials {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(Denials::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    let tiers = ClusterTiers {
        admin: Path::new(policies).join(ADMIN_TIER_FILE).exists(),
        baseline: Path::new(policies).join(BASELINE_TIER_FILE).exists(),
    };
    let plan =
        rollout::render_with_denials(&rollout::plan(&graph, tiers), policies, denials.as_ref());
    crate::cmd::to_stdout(|out| out.write_all(plan.as_bytes()))
}
