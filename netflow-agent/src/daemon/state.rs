//! The graph of the audit window, saved to `DIR/graph.json` after every
//! interval (atomically) and loaded again at start, so a week of recording
//! survives agent restarts.

use std::{path::PathBuf, time::Duration};

use tracing::{info, warn};

use super::{
    DaemonError,
    inventory_source::{InventoryOption, InventorySource},
};
use crate::{
    graph::{
        CommGraph,
        build::{BuildReport, add_flows},
    },
    identity::Identity,
    kernel::reader::{FlowReader, Interval},
    model::FlowRecord,
};

/// Flow records held while a live inventory is still listing, at most this
/// many (older ones are dropped and counted): naming them before the lists
/// are complete would name them wrong for the whole week.
const MAX_PENDING_FLOWS: usize = 200_000;

#[derive(Clone, Debug)]
pub struct StateOptions {
    pub dir: PathBuf,
    pub inventory: InventoryOption,
    /// Edges last seen longer ago than this leave the graph.
    pub window: Duration,
    /// The graph holds at most this many edges (memory stays bounded over
    /// a week whatever the traffic): past it, the least recently seen go.
    pub max_edges: usize,
}

pub(super) struct GraphState {
    path: PathBuf,
    pub(super) graph: CommGraph,
    pub(super) inventory: InventorySource,
    /// Flows read before the inventory was synced.
    pub(super) pending: Vec<FlowRecord>,
    /// Flows dropped from `pending` when it was full.
    pub(super) pending_dropped: u64,
    window: Duration,
    max_edges: usize,
}

/// What one interval did to the graph.
pub(super) struct Added {
    pub report: BuildReport,
    /// Edges dropped because the graph was full.
    pub evicted: u64,
}

impl GraphState {
    pub(super) async fn open(options: &StateOptions) -> Result<Self, DaemonError> {
        let inventory = InventorySource::open(&options.inventory).await?;
        std::fs::create_dir_all(&options.dir).map_err(|source| DaemonError::StateDir {
            path: options.dir.clone(),
            source,
        })?;
        let path = options.dir.join("graph.json");
        // A graph that cannot be read stops the agent: overwriting it would
        // lose the week recorded so far.
        let graph = if path.exists() {
            CommGraph::load(&path)?
        } else {
            CommGraph::new()
        };
        info!(
            graph = %path.display(),
            edges = graph.edge_count(),
            "communication graph loaded"
        );
        Ok(Self {
            path,
            graph,
            inventory,
            pending: Vec::new(),
            pending_dropped: 0,
            window: options.window,
            max_edges: options.max_edges,
        })
    }

    /// Names the interval's flows into the graph (or holds them while the
    /// inventory is not synced), applies the window and the size bound, and
    /// saves the graph.
    pub(super) fn add(
        &mut self,
        interval: &Interval,
        reader: &FlowReader,
    ) -> Result<Added, DaemonError> {
        self.inventory.refresh();
        let Some(inventory) = self.inventory.current() else {
            self.pending.extend(interval.flows.iter().cloned());
            if self.pending.len() > MAX_PENDING_FLOWS {
                let excess = self.pending.len() - MAX_PENDING_FLOWS;
                self.pending.drain(..excess);
                self.pending_dropped += excess as u64;
            }
            return Ok(Added {
                report: BuildReport::default(),
                evicted: 0,
            });
        };
        let dns = reader.dns_names();
        let identity = Identity::new(&inventory, &dns);
        let report = if self.pending.is_empty() {
            add_flows(&mut self.graph, &identity, &interval.flows)
        } else {
            let mut flows = std::mem::take(&mut self.pending);
            flows.extend(interval.flows.iter().cloned());
            info!(
                flows = flows.len(),
                "inventory synced: naming the flows held so far"
            );
            add_flows(&mut self.graph, &identity, &flows)
        };
        if report.undecided_direction + report.unresolved_local + report.unresolved_service > 0 {
            warn!(?report, "flows not fully named");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let cutoff = now.saturating_sub(self.window.as_secs());
        self.graph = self.graph.edges_seen_since(cutoff);
        let mut evicted = 0;
        if self.graph.edge_count() > self.max_edges {
            let (kept, dropped) = self.graph.most_recent_edges(self.max_edges);
            warn!(
                dropped,
                max_edges = self.max_edges,
                "graph full: the least recently seen edges were dropped"
            );
            self.graph = kept;
            evicted = dropped as u64;
        }
        self.graph.save(&self.path)?;
        Ok(Added { report, evicted })
    }
}
