//! Staged mode (`run --staged DIR|cluster`): after each interval, the edges
//! that carried traffic are judged against the staged policy set (files,
//! read again when they change; or the cluster's objects labelled staged,
//! listed every [`CLUSTER_LIST_EVERY`] by a task of the daemon's runtime);
//! those it would
//! refuse are counted in the metrics, logged (once per edge per hour, with
//! the reason), and kept as denials in the state directory
//! (`staged-denials.json`, read again at start), served at `/denials` on
//! the graph port for `graph pull --denials`.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use tracing::{info, warn};

use super::{DaemonError, StagedSource, metrics::Metrics};
use crate::{
    graph::{CommGraph, file::write_atomically_with_mode},
    inventory::Inventory,
    model::{Endpoint, EndpointKind},
    policy::{
        evaluate::Policies,
        from_cluster,
        staged::{Denials, StagedSet, edge_name, is_staged},
    },
};

/// How often the cluster's staged objects are listed.
pub const CLUSTER_LIST_EVERY: Duration = Duration::from_secs(30);

/// A denied edge is logged at most once in this long.
const LOG_EVERY: Duration = Duration::from_secs(3600);
/// The denials file in the state directory.
pub const DENIALS_FILE: &str = "staged-denials.json";

pub(super) struct StagedMode {
    set: StagedSet,
    denials: Denials,
    path: PathBuf,
    /// Each judged edge's connections when last judged.
    connections: HashMap<String, u64>,
    /// When each denied edge was last logged.
    logged: HashMap<String, Instant>,
    /// Edges last seen before this (Unix seconds) were judged already.
    judged_until: u64,
    /// The denials changed since the last save.
    dirty: bool,
    /// The cluster's staged objects when listed anew (`--staged cluster`):
    /// the lister puts each list here, the judge takes it.
    listed: Option<Listed>,
}

impl StagedMode {
    /// Reads the staged set (a bad file is an error naming it; the
    /// cluster's objects are listed by a task started here) and the denials
    /// kept in `state_dir` by an earlier run.
    pub(super) async fn open(source: &StagedSource, state_dir: &Path) -> Result<Self, DaemonError> {
        let (set, listed) = match source {
            StagedSource::Files(path) => (StagedSet::load(path)?, None),
            StagedSource::Cluster { kubeconfig } => {
                let client = crate::kube::client(kubeconfig.as_deref()).await?;
                (StagedSet::from_cluster(), Some(list_staged(client)))
            }
        };
        info!(
            policies = set.len(),
            source = %set.source(),
            "staged mode: judging live traffic against these policies"
        );
        let path = state_dir.join(DENIALS_FILE);
        let denials = match std::fs::read_to_string(&path) {
            Ok(text) => match Denials::parse(&text, &path.display().to_string()) {
                Ok(denials) => denials,
                Err(err) => {
                    warn!(error = %err, "staged denials unreadable: starting an empty list");
                    Denials::new()
                }
            },
            Err(_) => Denials::new(),
        };
        Ok(Self {
            set,
            denials,
            path,
            connections: HashMap::new(),
            logged: HashMap::new(),
            // What the loaded graph held was recorded before the set was
            // staged: judged when it carries traffic again.
            judged_until: unix_now(),
            dirty: false,
            listed,
        })
    }

    /// Notes what each edge of the graph the agent starts with carried
    /// already: recorded before, judged by an earlier run.
    pub(super) fn baseline(&mut self, graph: &CommGraph) {
        for (client, server, edge) in graph.edges() {
            self.connections.insert(
                edge_name(client, server, edge),
                edge.stats.volume().connections,
            );
        }
    }

    /// The denials as `/denials` serves them.
    pub(super) fn denials_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.denials).unwrap_or_default()
    }

    /// Judges the edges that carried traffic since the last call.
    pub(super) fn judge(
        &mut self,
        graph: &CommGraph,
        inventory: &Inventory,
        metrics: Option<&Metrics>,
    ) {
        let new_list = self.listed.as_ref().and_then(|listed| {
            listed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
        });
        if let Some(policies) = new_list {
            self.set.replace(policies);
            tracing::debug!(
                policies = self.set.len(),
                "staged objects listed: judging again"
            );
            self.rejudge_denials(graph, inventory);
        }
        match self.set.reload_if_changed() {
            Ok(true) => {
                info!(
                    policies = self.set.len(),
                    "staged policies changed: judging again"
                );
                self.rejudge_denials(graph, inventory);
            }
            Ok(false) => {}
            Err(err) => {
                let err = crate::telemetry::error_chain(&err);
                warn!(%err, "staged policies unreadable: keeping the set read before");
            }
        }
        let now = unix_now();
        let since = self.judged_until;
        self.judged_until = now;
        let touched = graph
            .edges()
            .into_iter()
            .filter(|(_, _, edge)| edge.stats.last_seen >= since);
        for blocked in self.set.would_block(graph, inventory, touched) {
            let total = blocked.connections;
            // Edges of the graph this agent started with are baselined
            // (`baseline`): only what they add from now on counts.
            let before = self.connections.get(&blocked.edge).copied().unwrap_or(0);
            let new = total.saturating_sub(before);
            self.connections.insert(blocked.edge.clone(), total);
            self.denials.note(&blocked, new, blocked.last_seen);
            self.dirty = true;
            let refusal = &blocked.refusal;
            let (namespace, workload) = workload_labels(graph, &refusal.client);
            if let Some(metrics) = metrics {
                metrics.add_staged_denied(&namespace, &workload, &refusal.policy_namespace, new);
            }
            let due = self
                .logged
                .get(&blocked.edge)
                .is_none_or(|at| at.elapsed() >= LOG_EVERY);
            if due {
                self.logged.insert(blocked.edge.clone(), Instant::now());
                warn!(
                    edge = %blocked.edge,
                    reason = %refusal.reason,
                    policy_namespace = %refusal.policy_namespace,
                    "the staged policies would refuse this connection"
                );
            }
        }
    }

    /// After the set changed: the denials of edges it now allows go.
    fn rejudge_denials(&mut self, graph: &CommGraph, inventory: &Inventory) {
        let named: Vec<_> = graph
            .edges()
            .into_iter()
            .filter(|(client, server, edge)| {
                self.denials
                    .denials
                    .contains_key(&edge_name(client, server, edge))
            })
            .collect();
        let still: BTreeSet<String> = self
            .set
            .would_block(graph, inventory, named)
            .into_iter()
            .map(|blocked| blocked.edge)
            .collect();
        self.denials.keep_only(&still);
        self.logged.clear();
        self.dirty = true;
    }

    /// Writes the denials when they changed (atomically, private).
    pub(super) fn save(&mut self) {
        if !self.dirty {
            return;
        }
        match write_atomically_with_mode(&self.path, &self.denials_json(), 0o600) {
            Ok(()) => self.dirty = false,
            Err(err) => warn!(%err, path = %self.path.display(), "cannot save the staged denials"),
        }
    }
}

/// Lists the cluster's staged objects now and every [`CLUSTER_LIST_EVERY`]
/// on a task of the runtime; a failed list is logged and the last one kept.
fn list_staged(client: kube::Client) -> Listed {
    let listed = Listed::default();
    let slot = std::sync::Arc::downgrade(&listed);
    tokio::spawn(async move {
        // Kinds the cluster has no API for, as last said (said again only
        // when that changes: a CRD installed or removed).
        let mut missing_said: Option<Vec<&str>> = None;
        loop {
            match from_cluster::read_matching(&client, is_staged).await {
                Ok(found) => {
                    if missing_said.as_ref() != Some(&found.not_installed) {
                        if !found.not_installed.is_empty() {
                            info!(kinds = ?found.not_installed, "the cluster has no API for these policy kinds: none of them is staged");
                        }
                        missing_said = Some(found.not_installed.clone());
                    }
                    // The daemon is gone: so is the lister.
                    let Some(slot) = slot.upgrade() else {
                        return;
                    };
                    *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(found.policies);
                }
                Err(err) => {
                    let err = crate::telemetry::error_chain(&err);
                    warn!(%err, "cannot list the staged policies: keeping the last list");
                }
            }
            tokio::time::sleep(CLUSTER_LIST_EVERY).await;
        }
    });
    listed
}

/// The slot a new list of the cluster's staged objects waits in.
type Listed = std::sync::Arc<std::sync::Mutex<Option<Policies>>>;

/// The client's namespace and workload for the metric's labels.
fn workload_labels(graph: &CommGraph, client: &str) -> (String, String) {
    match graph.endpoint(client) {
        Some(Endpoint {
            kind: EndpointKind::Workload,
            namespace,
            name,
            ..
        }) => (namespace.clone().unwrap_or_default(), name.clone()),
        Some(endpoint) => (String::new(), endpoint.label()),
        None => (String::new(), client.to_string()),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
