//! The graph of the audit window, saved to `DIR/graph.json` after every
//! interval (atomically) and loaded again at start, so a week of recording
//! survives agent restarts.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::{info, warn};

use super::{
    DaemonError,
    inventory_source::{InventoryOption, InventorySource},
    work_budget::WorkBudget,
};
use crate::{
    graph::{
        CommGraph,
        build::{BuildReport, add_flows},
        file::{GraphFileError, GraphFormat},
    },
    identity::{Identity, dns_servers, names_by_client, trusted_names},
    kernel::reader::Interval,
    model::{DnsAnswer, FlowRecord},
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
    /// Each client holds at most this many edges (its most recent).
    pub max_edges_per_client: usize,
    /// DNS servers trusted besides the cluster's own (see
    /// [`crate::identity::dns_servers`]).
    pub dns_servers: Vec<IpAddr>,
    /// How the graph file is stored.
    pub format: GraphFormat,
}

/// The state file of each format, in the state directory.
fn state_file(dir: &Path, format: GraphFormat) -> PathBuf {
    dir.join(match format {
        GraphFormat::Json => "graph.json",
        GraphFormat::Binary => "graph.bin",
    })
}

pub(super) struct GraphState {
    path: PathBuf,
    format: GraphFormat,
    /// A state file of the other format, read at start: removed once the
    /// graph is saved in this one, so a later start cannot read it again.
    replaced: Option<PathBuf>,
    /// Graph files found unreadable (corrupt, or of a newer layout) and
    /// moved aside at start.
    pub(super) files_set_aside: u64,
    /// Saves that failed (each retried at the next interval).
    pub(super) save_failures: u64,
    pub(super) graph: CommGraph,
    /// Whether the graph differs from its file: it is saved only then.
    /// True at start, so the first interval writes what was loaded.
    unsaved: bool,
    /// Whether no interval has been added yet (the first one renders what
    /// was loaded).
    first_interval: bool,
    /// Saves of a large graph wait their turn (see [`WorkBudget`]).
    save_budget: WorkBudget,
    pub(super) inventory: InventorySource,
    /// Flows read before the inventory was synced.
    pub(super) pending: Vec<FlowRecord>,
    /// Flows dropped from `pending` when it was full.
    pub(super) pending_dropped: u64,
    window: Duration,
    max_edges: usize,
    max_edges_per_client: usize,
    dns_servers: Vec<IpAddr>,
    /// DNS answers not believed: they came from a server that is not the
    /// cluster's DNS.
    pub(super) dns_untrusted: u64,
    /// Answers past a workload's cap of names (of the answers held now).
    pub(super) dns_over_cap: u64,
}

/// What one interval did to the graph.
pub(super) struct Added {
    pub report: BuildReport,
    /// Edges dropped because the graph was full.
    pub evicted: u64,
    /// Edges dropped because their client went over its budget.
    pub over_budget: u64,
    /// Whether the graph changed (or this was the first interval): what is
    /// served from it must be rendered again.
    pub changed: bool,
}

impl GraphState {
    pub(super) async fn open(options: &StateOptions) -> Result<Self, DaemonError> {
        let inventory = InventorySource::open(&options.inventory).await?;
        create_private_dir(&options.dir).map_err(|source| DaemonError::StateDir {
            path: options.dir.clone(),
            source,
        })?;
        let path = state_file(&options.dir, options.format);
        let other_format = match options.format {
            GraphFormat::Json => GraphFormat::Binary,
            GraphFormat::Binary => GraphFormat::Json,
        };
        let other = state_file(&options.dir, other_format);
        // The format was changed since the last start: its graph goes on.
        let (found, replaced) = if !path.exists() && other.exists() {
            info!(from = %other.display(), to = %path.display(), "the graph's state changes format");
            (other.clone(), Some(other))
        } else {
            (path.clone(), None)
        };
        let mut files_set_aside = 0;
        let graph = if found.exists() {
            match CommGraph::load(&found) {
                Ok(graph) => graph,
                // A graph this agent cannot read (corrupt, or written by a
                // newer version) is kept beside, never overwritten, and
                // recording goes on: a node unrecorded is worse than a
                // fresh start.
                Err(err @ (GraphFileError::Invalid { .. } | GraphFileError::TooNew { .. })) => {
                    let aside = set_aside(&found)?;
                    let err = crate::telemetry::error_chain(&err);
                    warn!(%err, aside = %aside.display(), "graph file set aside; starting an empty graph");
                    files_set_aside += 1;
                    CommGraph::new()
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            CommGraph::new()
        };
        info!(
            graph = %found.display(),
            edges = graph.edge_count(),
            "communication graph loaded"
        );
        super::return_freed_memory();
        Ok(Self {
            path,
            format: options.format,
            replaced,
            files_set_aside,
            save_failures: 0,
            graph,
            unsaved: true,
            first_interval: true,
            save_budget: WorkBudget::default(),
            inventory,
            pending: Vec::new(),
            pending_dropped: 0,
            window: options.window,
            max_edges: options.max_edges,
            max_edges_per_client: options.max_edges_per_client,
            dns_servers: options.dns_servers.clone(),
            dns_untrusted: 0,
            dns_over_cap: 0,
        })
    }

    /// Names the interval's flows into the graph (or holds them while the
    /// inventory is not synced), applies the window and the size bound, and
    /// saves the graph when any of that changed it.
    /// `answers`: the DNS answers the recorded sockets received to their
    /// queries; only the cluster DNS's name external addresses.
    pub(super) fn add(
        &mut self,
        interval: &Interval,
        answers: &[DnsAnswer],
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
                over_budget: 0,
                changed: false,
            });
        };
        let servers = dns_servers(&inventory, &self.dns_servers);
        let (dns, _) = trusted_names(answers, &servers);
        let new_answers: Vec<DnsAnswer> = interval
            .dns
            .iter()
            .map(|name| DnsAnswer {
                name: name.name.clone(),
                ip: name.ip,
                server: name.server,
                client: name.cgroup.clone(),
            })
            .collect();
        let untrusted = trusted_names(&new_answers, &servers).1;
        if untrusted > 0 {
            warn!(
                untrusted,
                "DNS answers from servers that are not the cluster's DNS were not believed"
            );
            self.dns_untrusted += untrusted;
        }
        let (by_client, over_cap) = names_by_client(&inventory, answers, &servers);
        if over_cap > self.dns_over_cap {
            warn!(
                over_cap,
                "a workload holds the most DNS names it may: further answers name nothing for it"
            );
        }
        self.dns_over_cap = over_cap;
        let identity = Identity::new(&inventory, &dns).with_client_names(&by_client);
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
        let aged_out = self.graph.remove_edges_seen_before(cutoff);
        let over_budget = self.graph.cap_per_client(self.max_edges_per_client);
        if over_budget > 0 {
            warn!(
                dropped = over_budget,
                budget = self.max_edges_per_client,
                "a client went over its edge budget: its oldest edges were dropped"
            );
        }
        let evicted = self.graph.keep_most_recent_edges(self.max_edges) as u64;
        if evicted > 0 {
            warn!(
                dropped = evicted,
                max_edges = self.max_edges,
                "graph full: the least recently seen edges were dropped"
            );
        }
        let changed_now = report.flow_records > 0 || aged_out > 0 || over_budget > 0 || evicted > 0;
        self.unsaved |= changed_now;
        let changed = changed_now || std::mem::take(&mut self.first_interval);
        // A large graph is saved at most a twentieth of the time; what is
        // not saved yet is saved at a later interval, and at exit.
        if self.unsaved && self.save_budget.allows(std::time::Instant::now()) {
            self.save();
        }
        Ok(Added {
            report,
            evicted,
            over_budget,
            changed,
        })
    }
}

impl GraphState {
    /// Writes the graph file. A failed save (a full disk) loses nothing
    /// yet: the graph is in memory, and it is saved again later.
    fn save(&mut self) {
        let (graph, path, format) = (&self.graph, &self.path, self.format);
        let saved = self.save_budget.run(|| match format {
            GraphFormat::Json => graph.save_one_thread(path),
            GraphFormat::Binary => graph.save_as(path, format),
        });
        match saved {
            Ok(()) => {
                self.unsaved = false;
                // (Gone already when it was set aside as unreadable.)
                if let Some(replaced) = self.replaced.take()
                    && let Err(err) = std::fs::remove_file(&replaced)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(%err, file = %replaced.display(), "cannot remove the state file of the former format");
                }
            }
            Err(err) => {
                self.save_failures += 1;
                let err = crate::telemetry::error_chain(&err);
                warn!(%err, failures = self.save_failures, "cannot save the graph; retrying at a later interval");
            }
        }
    }

    /// Saves what is not saved yet, whatever the budget (at exit).
    pub(super) fn save_unsaved(&mut self) {
        if self.unsaved {
            self.save();
        }
    }
}

/// The state directory, made readable by its owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Moves an unreadable graph file to `<name>.unreadable-<unix seconds>`
/// beside it, and says where.
fn set_aside(path: &Path) -> Result<PathBuf, DaemonError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let aside = path.with_file_name(format!("{name}.unreadable-{now}"));
    std::fs::rename(path, &aside).map_err(|source| DaemonError::SetAside {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn options(dir: &Path) -> StateOptions {
        let inventory = dir.join("inventory.json");
        std::fs::write(&inventory, r#"{"kind":"List","items":[]}"#).unwrap();
        StateOptions {
            dir: dir.join("state"),
            inventory: InventoryOption::File(inventory),
            window: Duration::from_secs(7 * 86400),
            max_edges: 100,
            max_edges_per_client: 10,
            dns_servers: Vec::new(),
            format: GraphFormat::Json,
        }
    }

    fn open(options: &StateOptions) -> Result<GraphState, DaemonError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(GraphState::open(options))
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netflow-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn unreadable_graphs_are_set_aside_and_recording_goes_on() {
        for (tag, text) in [
            ("corrupt", "{\"version\": 1, \"nodes\": ["),
            ("newer", "{\"version\": 99, \"nodes\": [], \"edges\": []}"),
        ] {
            let dir = scratch(tag);
            let options = options(&dir);
            std::fs::create_dir_all(&options.dir).unwrap();
            std::fs::write(options.dir.join("graph.json"), text).unwrap();
            let state = open(&options).unwrap();
            assert_eq!(state.files_set_aside, 1, "{tag}");
            assert_eq!(state.graph.edge_count(), 0);
            let kept: Vec<PathBuf> = std::fs::read_dir(&options.dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.to_string_lossy().contains("graph.json.unreadable-"))
                .collect();
            assert_eq!(kept.len(), 1, "{tag}: {kept:?}");
            assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), text, "{tag}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    fn flow_from(cgroup: &str, remote: &str, last_seen: &str) -> crate::model::FlowRecord {
        use crate::model::{Address, Basis, FlowRecord, Protocol, Side};
        FlowRecord {
            ts: last_seen.parse().unwrap(),
            cgroup_id: 1,
            cgroup: Some(cgroup.into()),
            protocol: Protocol(6),
            local: Address {
                ip: "10.244.0.5".parse().unwrap(),
                port: 40000,
            },
            remote: Address {
                ip: remote.parse().unwrap(),
                port: 443,
            },
            initiator: Side::Local,
            client: Side::Local,
            client_basis: Basis::TcpSyn,
            packets_in: 1,
            packets_out: 1,
            bytes_in: 60,
            bytes_out: 60,
            first_seen: last_seen.parse().unwrap(),
            last_seen: last_seen.parse().unwrap(),
            tcp_flags: "SYN|ACK".into(),
            handshake: crate::model::Handshake::Established,
            newly_established: true,
            new: true,
            overflow: false,
            ended: false,
            http: Vec::new(),
            http_connection: false,
        }
    }

    #[test]
    fn a_client_spraying_connections_cannot_push_other_edges_out() {
        let dir = scratch("flood");
        let options = options(&dir);
        let mut state = open(&options).unwrap();
        let dns: Vec<DnsAnswer> = Vec::new();
        let ago = |hours: u64| {
            crate::model::rfc3339(std::time::SystemTime::now() - Duration::from_secs(hours * 3600))
        };
        // A quiet week: 30 clients, one edge each, seen days ago.
        let quiet: Vec<_> = (0..30)
            .map(|n| flow_from(&format!("/quiet/{n}"), &format!("203.0.113.{n}"), &ago(72)))
            .collect();
        state
            .add(
                &Interval {
                    flows: quiet,
                    ..Interval::default()
                },
                &dns,
            )
            .unwrap();
        // Then one client sprays 500 addresses (the graph holds 100 edges,
        // a client 10).
        let spray: Vec<_> = (0..500)
            .map(|n| {
                flow_from(
                    "/sprayer",
                    &format!("198.51.{}.{}", n / 250, n % 250),
                    &ago(0),
                )
            })
            .collect();
        let added = state
            .add(
                &Interval {
                    flows: spray,
                    ..Interval::default()
                },
                &dns,
            )
            .unwrap();
        assert_eq!(added.over_budget, 490);
        assert_eq!(added.evicted, 0, "the quiet clients' edges stay");
        assert_eq!(state.graph.edge_count(), 40);
        assert_eq!(
            state
                .graph
                .over_budget()
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![490]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A state kept as JSON goes on as binary and back, nothing lost, one
    /// state file left each time.
    #[test]
    fn the_state_changes_format_and_keeps_the_graph() {
        let dir = scratch("format");
        let mut options = options(&dir);
        let dns: Vec<DnsAnswer> = Vec::new();
        let now = crate::model::rfc3339(std::time::SystemTime::now());
        let busy = Interval {
            flows: vec![flow_from("/busy", "203.0.113.9", &now)],
            ..Interval::default()
        };
        let mut state = open(&options).unwrap();
        state.add(&busy, &dns).unwrap();
        let files = || {
            let mut names: Vec<String> = std::fs::read_dir(&options.dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(files(), ["graph.json"]);
        let json = state.graph.file();
        let json = serde_json::to_string(&json).unwrap();
        drop(state);
        for (format, file, former) in [
            (GraphFormat::Binary, "graph.bin", "graph.json"),
            (GraphFormat::Json, "graph.json", "graph.bin"),
        ] {
            options.format = format;
            let mut state = open(&options).unwrap();
            assert_eq!(
                serde_json::to_string(&state.graph.file()).unwrap(),
                json,
                "{format:?}"
            );
            // The former file stays until the graph is saved in the new format.
            assert_eq!(files(), [former], "{format:?}");
            state.add(&Interval::default(), &dns).unwrap();
            assert_eq!(files(), [file], "{format:?}");
            assert_eq!(
                serde_json::to_string(&CommGraph::load(&options.dir.join(file)).unwrap().file())
                    .unwrap(),
                json
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// An interval that changed nothing writes nothing: on a quiet node a
    /// large graph was written out whole (and /graph compressed again)
    /// every few seconds for nothing.
    #[test]
    fn only_a_changed_graph_is_saved() {
        let dir = scratch("unchanged");
        let options = options(&dir);
        let mut state = open(&options).unwrap();
        let graph = options.dir.join("graph.json");
        let dns: Vec<DnsAnswer> = Vec::new();
        // The first interval writes what was loaded (here: a new graph).
        assert!(state.add(&Interval::default(), &dns).unwrap().changed);
        assert!(graph.exists());
        std::fs::remove_file(&graph).unwrap();
        assert!(!state.add(&Interval::default(), &dns).unwrap().changed);
        assert!(!graph.exists(), "a quiet interval wrote the graph again");
        let now = crate::model::rfc3339(std::time::SystemTime::now());
        let busy = Interval {
            flows: vec![flow_from("/busy", "203.0.113.9", &now)],
            ..Interval::default()
        };
        assert!(state.add(&busy, &dns).unwrap().changed);
        assert!(graph.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// After a long save the next waits its turn, the graph still marked
    /// unsaved; at exit it is saved whatever the budget.
    #[test]
    fn a_long_save_makes_the_next_wait_and_exit_saves_what_waited() {
        let dir = scratch("budget");
        let options = options(&dir);
        let mut state = open(&options).unwrap();
        let graph = options.dir.join("graph.json");
        let dns: Vec<DnsAnswer> = Vec::new();
        state.add(&Interval::default(), &dns).unwrap();
        std::fs::remove_file(&graph).unwrap();
        // As if that save had taken two seconds.
        let now = std::time::Instant::now();
        state
            .save_budget
            .spent(now, now + std::time::Duration::from_secs(2));
        let stamp = crate::model::rfc3339(std::time::SystemTime::now());
        let busy = Interval {
            flows: vec![flow_from("/busy", "203.0.113.9", &stamp)],
            ..Interval::default()
        };
        assert!(state.add(&busy, &dns).unwrap().changed);
        assert!(!graph.exists(), "saved before its turn");
        state.save_unsaved();
        assert!(graph.exists());
        assert_eq!(CommGraph::load(&graph).unwrap().edge_count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_save_is_counted_and_retried_and_state_is_private() {
        let dir = scratch("save");
        let options = options(&dir);
        let mut state = open(&options).unwrap();
        let graph = options.dir.join("graph.json");
        // Nothing can be renamed over a directory that holds a file: the
        // save fails as a full disk would make it fail.
        std::fs::create_dir_all(graph.join("blocker")).unwrap();
        let dns: Vec<DnsAnswer> = Vec::new();
        state.add(&Interval::default(), &dns).unwrap();
        state.add(&Interval::default(), &dns).unwrap();
        assert_eq!(state.save_failures, 2);
        std::fs::remove_dir_all(&graph).unwrap();
        state.add(&Interval::default(), &dns).unwrap();
        assert_eq!(state.save_failures, 2);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&graph), 0o600);
        assert_eq!(mode(&options.dir), 0o700);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
