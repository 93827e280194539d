//! The recording daemon (`record`, `run`): every stage wired in one place.
//!
//! ```text
//! kernel::loader (attach) -> kernel::reader (poll every interval)
//!     -> flowlog (JSON lines, optional)
//!     -> state: identity names both ends -> graph of the window -> DIR/graph.json
//!     -> http: /healthz /readyz /metrics /graph
//! ```
//!
//! [`run`] attaches, polls until the duration is over or a signal comes, and
//! detaches: dropping the probe removes both programs from the kernel.

pub mod flowlog;
pub mod gzip_body;
pub mod http;
mod inventory_source;
pub mod metrics;
mod staged;
mod state;
mod work_budget;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use inventory_source::InventoryOption;
pub use state::StateOptions;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};
use tracing::{info, warn};

use self::{
    flowlog::FlowLogWriter,
    http::Shared,
    metrics::{Unnamed, gauge_value},
    state::GraphState,
};
use crate::{
    graph::file::GraphFileError,
    inventory::InventoryError,
    kernel::{
        cgroup_mount::{self, CgroupError},
        loader::{LoadError, Probe},
        pins::PinDir,
        reader::{FlowReader, Interval, ReadError},
    },
    kube::KubeError,
};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Cgroup to attach to; the cgroup v2 root when `None`.
    pub cgroup: Option<PathBuf>,
    /// Stop after this long; run until SIGINT/SIGTERM when `None`.
    pub duration: Option<Duration>,
    pub interval: Duration,
    /// Flow log (`-` for stdout); none when `None`.
    pub output: Option<PathBuf>,
    pub flow_log_format: crate::model::FlowLogFormat,
    pub flow_entries: u32,
    pub idle_timeout: Duration,
    /// Read the heads of plaintext HTTP requests (the calls on edges).
    pub http_heads: bool,
    /// Staged mode (needs `state`): judge live traffic against these
    /// policies.
    pub staged: Option<StagedSource>,
    /// Pin the kernel's maps below this bpffs directory (see
    /// [`crate::kernel::pins`]).
    pub pin_maps: Option<PathBuf>,
    /// Keep the communication graph in a state directory.
    pub state: Option<StateOptions>,
    /// Serve /healthz, /readyz and /metrics here.
    pub listen: Option<SocketAddr>,
    /// Serve /graph here: a loopback address only.
    pub graph_listen: Option<SocketAddr>,
}

/// Where staged mode's policies come from.
#[derive(Clone, Debug)]
pub enum StagedSource {
    /// A directory of policy files (or one file).
    Files(PathBuf),
    /// The cluster's policy objects labelled staged, listed again and again.
    Cluster { kubeconfig: Option<PathBuf> },
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("staged policies")]
    Staged(#[from] crate::policy::evaluate::PolicyFileError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Graph(#[from] GraphFileError),
    #[error(transparent)]
    Serve(#[from] http::ServeError),
    #[error("cannot move the unreadable graph {path} aside")]
    SetAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--graph-listen {0} is not a loopback address: the graph names every workload of the node and is served on loopback only (graph pull reaches it through port-forward)"
    )]
    GraphNotLoopback(SocketAddr),
    #[error("cannot create state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create flow log {path}")]
    CreateFlowLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write flow log {path}")]
    WriteFlowLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The async runtime, the signal handlers or the ring's readiness.
    #[error("{what}")]
    Runtime {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn runtime_error(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Runtime { what, source }
}

/// Records until the duration is over or SIGINT/SIGTERM.
pub fn run(options: &RecordOptions) -> Result<(), DaemonError> {
    hold_little_memory();
    if let Some(addr) = options.graph_listen
        && !addr.ip().is_loopback()
    {
        return Err(DaemonError::GraphNotLoopback(addr));
    }
    let (mount, cgroup) = cgroup_mount::locate(options.cgroup.as_deref())?;
    let mut writer = match &options.output {
        Some(path) => Some(
            FlowLogWriter::create(path, options.flow_log_format).map_err(|source| {
                DaemonError::CreateFlowLog {
                    path: path.clone(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    // One thread is enough: the kernel work is synchronous, the runtime
    // carries the watches, the signals and the ring's readiness.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_error("cannot start the async runtime"))?;
    let mut state = match &options.state {
        Some(state) => Some(runtime.block_on(GraphState::open(state))?),
        None => None,
    };
    let staged = match (&options.staged, &options.state, &state) {
        (Some(source), Some(options), Some(state)) => {
            let mut staged = runtime.block_on(staged::StagedMode::open(source, &options.dir))?;
            staged.baseline(&state.graph);
            Some(staged)
        }
        _ => None,
    };
    let shared: Option<Shared> = if options.listen.is_some() || options.graph_listen.is_some() {
        let shared = Shared::default();
        // Without --state-dir there is no inventory to wait for.
        let loaded = state.as_ref().is_none_or(|state| state.inventory.synced());
        shared.update(|snapshot| snapshot.inventory_loaded = loaded);
        shared.metrics.inventory_synced.set(i64::from(loaded));
        if let Some(addr) = options.listen {
            http::start(addr, shared.clone(), http::Serves::Health)?;
        }
        if let Some(addr) = options.graph_listen {
            http::start(addr, shared.clone(), http::Serves::Graph)?;
        }
        Some(shared)
    } else {
        None
    };

    // Signal handlers go in before anything is attached: a SIGTERM that
    // arrives right after the attach must still detach cleanly.
    let signals = {
        let _context = runtime.enter();
        Signals {
            term: signal(SignalKind::terminate())
                .map_err(runtime_error("cannot handle SIGTERM"))?,
            int: signal(SignalKind::interrupt()).map_err(runtime_error("cannot handle SIGINT"))?,
        }
    };

    // Pinning is worth having, not worth failing for: without it a restart
    // starts the kernel's table afresh.
    let pins = options.pin_maps.as_ref().and_then(|base| {
        let pinned = cgroup_mount::cgroup_id(&cgroup)
            .map_err(|err| err.to_string())
            .and_then(|id| PinDir::new(base, id).map_err(|err| err.to_string()));
        match pinned {
            Ok(pins) => {
                info!(dir = %pins.dir().display(), "the kernel's maps are pinned");
                Some(pins)
            }
            Err(err) => {
                warn!(error = %err, "cannot pin the kernel's maps: an agent restart starts the connection table afresh");
                None
            }
        }
    });
    let mut probe = Probe::load_pinned(
        options.flow_entries,
        options.interval,
        pins.as_ref(),
        options.http_heads,
    )?;
    let maps = probe.take_maps()?;
    probe.attach(&cgroup)?;
    // Before saying it is attached: the reader's first walk of the cgroup
    // tree names what was there before the kernel recorded cgroups made.
    let reader = FlowReader::new(maps, options.idle_timeout).with_cgroup_mount(&mount);
    if let Some(shared) = &shared {
        shared.metrics.attached.set(1);
        shared.metrics.set_table(0, options.flow_entries);
        let graph = state.as_ref().map(|state| &state.graph);
        shared.metrics.graph_edges.set(gauge_value(
            graph.map_or(0, crate::graph::CommGraph::edge_count),
        ));
        let graph_gzip = graph.map(graph_gzip).unwrap_or_default();
        shared.update(|snapshot| {
            snapshot.attached = true;
            snapshot.graph_gzip = graph_gzip;
        });
    }
    // Said once /readyz can say it too: whoever waits for this line may ask.
    info!(
        cgroup = %cgroup.display(),
        flow_entries = options.flow_entries,
        "attached: recording connections"
    );
    // Pinned counters are totals since they were made: the metrics count
    // what moves from here on.
    let last_drops = reader.drop_counters().unwrap_or_default();

    let mut sinks = Sinks {
        writer: writer.as_mut(),
        state: state.as_mut(),
        last_drops,
        staged,
        shared: shared.clone(),
        poll_seconds: 0.0,
        graph_stale: std::cell::Cell::new(false),
        render_budget: work_budget::WorkBudget::default(),
    };
    let result = runtime.block_on(poll_loop(reader, &mut sinks, options, signals));

    // Dropping the probe detaches both programs: nothing stays in the kernel.
    drop(probe);
    if let Some(shared) = &shared {
        shared.metrics.attached.set(0);
        shared.update(|snapshot| snapshot.attached = false);
    }
    info!(cgroup = %cgroup.display(), "detached");
    result
}

/// Where each interval goes.
struct Sinks<'a> {
    writer: Option<&'a mut FlowLogWriter>,
    state: Option<&'a mut GraphState>,
    last_drops: std::collections::BTreeMap<String, u64>,
    /// Staged mode's judge, when on.
    staged: Option<staged::StagedMode>,
    /// What the HTTP endpoints show.
    shared: Option<Shared>,
    /// How long the last poll took.
    poll_seconds: f64,
    /// Whether the graph changed since `/graph` was last rendered.
    graph_stale: std::cell::Cell<bool>,
    /// Rendering a large graph waits its turn (see [`work_budget::WorkBudget`]).
    render_budget: work_budget::WorkBudget,
}

/// The signals that stop recording.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

async fn poll_loop(
    mut reader: FlowReader,
    sinks: &mut Sinks<'_>,
    options: &RecordOptions,
    mut signals: Signals,
) -> Result<(), DaemonError> {
    // A duplicate of the ring's fd, for readiness only (the reader owns the map).
    let ring_fd = reader
        .overflow_fd()
        .try_clone_to_owned()
        .map_err(runtime_error("cannot duplicate the overflow ring's fd"))?;
    // SAFETY: the OwnedFd is owned by the AsyncFd and stays open as long as it.
    let ring =
        unsafe { AsyncFd::register_with_interest(ring_fd, Interest::READABLE) }.map_err(|err| {
            DaemonError::Runtime {
                what: "cannot watch the overflow ring buffer",
                source: err.into(),
            }
        })?;
    let mut ticks = tokio::time::interval_at(Instant::now() + options.interval, options.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = options.duration.map(|duration| Instant::now() + duration);
    let stop_at = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_at);

    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let started = std::time::Instant::now();
                let interval = reader.poll()?;
                sinks.poll_seconds = started.elapsed().as_secs_f64();
                sinks.report(&interval, &reader)?;
                // An interval's transient peak (a table read, an inventory
                // read again, the graph compressed) goes back to the system:
                // the agent's RSS stays what it holds.
                return_freed_memory();
            }
            guard = ring.readable() => {
                // The kernel wakes us when a connection did not fit in the
                // table: take its packets now so the ring does not fill up.
                let mut guard = guard.map_err(runtime_error("waiting on the overflow ring"))?;
                reader.drain_overflow();
                guard.clear_ready();
            }
            _ = &mut stop_at => {
                info!("recording time is over");
                break;
            }
            _ = signals.term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = signals.int.recv() => { info!("SIGINT: stopping"); break; }
        }
    }
    let interval = reader.poll()?;
    sinks.report(&interval, &reader)?;
    // What waited for its turn is saved now, whatever it costs.
    if let Some(state) = sinks.state.as_mut() {
        state.save_unsaved();
    }
    info!(
        overflowed_connections = interval.stats.overflowed_connections,
        drops = ?interval.stats.drops,
        "kernel counters at exit"
    );
    Ok(())
}

impl Sinks<'_> {
    fn report(&mut self, interval: &Interval, reader: &FlowReader) -> Result<(), DaemonError> {
        if let Some(writer) = self.writer.as_mut() {
            writer
                .write_interval(&interval.flows, &interval.dns, &interval.stats)
                .map_err(|source| DaemonError::WriteFlowLog {
                    path: writer.path().to_path_buf(),
                    source,
                })?;
        }
        let added = match self.state.as_mut() {
            Some(state) => Some(state.add(interval, &reader.dns_answers())?),
            None => None,
        };
        if let (Some(staged), Some(state)) = (self.staged.as_mut(), self.state.as_ref())
            && let Some(inventory) = state.inventory.current()
        {
            let metrics = self.shared.as_ref().map(|shared| shared.metrics.clone());
            staged.judge(&state.graph, &inventory, metrics.as_deref());
            staged.save();
        }
        if let Some(shared) = &self.shared {
            self.publish(shared, interval, added.as_ref());
        }
        for (reason, count) in &interval.stats.drops {
            let before = self.last_drops.get(reason).copied().unwrap_or(0);
            if *count > before {
                warn!(
                    reason,
                    new = count - before,
                    total = count,
                    "packets not fully recorded"
                );
            }
        }
        self.last_drops.clone_from(&interval.stats.drops);
        Ok(())
    }

    /// Moves the metrics and the snapshot the HTTP endpoints serve.
    fn publish(&self, shared: &Shared, interval: &Interval, added: Option<&state::Added>) {
        let metrics = &shared.metrics;
        metrics.flow_records.inc_by(interval.flows.len() as u64);
        metrics.set_table(interval.stats.table_entries, interval.stats.table_capacity);
        metrics.set_kernel_totals(interval.stats.overflowed_connections, &interval.stats.drops);
        metrics.poll_duration_seconds.set(self.poll_seconds);
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let synced = state.inventory.synced();
        metrics.inventory_synced.set(i64::from(synced));
        metrics.set_inventory_totals(state.inventory.watch_errors(), state.pending_dropped);
        metrics.set_graph_file_totals(state.files_set_aside, state.save_failures);
        metrics.set_dns_refused(
            &interval.stats.dns_refused,
            state.dns_untrusted,
            state.dns_over_cap,
        );
        metrics
            .pending_flow_records
            .set(gauge_value(state.pending.len()));
        let mut graph_gzip = None;
        if let Some(added) = added {
            let report = &added.report;
            metrics.add_unnamed(Unnamed {
                local: report.unresolved_local,
                service: report.unresolved_service,
                direction: report.undecided_direction,
                remote_ip: report.unnamed_remote,
            });
            metrics.loopback_flow_records.inc_by(report.loopback);
            metrics
                .mesh_unattributed_flow_records
                .inc_by(report.mesh_unattributed);
            metrics.edges_evicted.inc_by(added.evicted);
            metrics.edges_over_budget.inc_by(added.over_budget);
            metrics
                .graph_edges
                .set(gauge_value(state.graph.edge_count()));
            if added.changed {
                self.graph_stale.set(true);
            }
            // A large graph is rendered at most a twentieth of the time;
            // `/graph` serves the last rendering until its turn.
            if self.graph_stale.get() && self.render_budget.allows(std::time::Instant::now()) {
                graph_gzip = Some(self.render_budget.run(|| self::graph_gzip(&state.graph)));
                self.graph_stale.set(false);
            }
        }
        let denials = self.staged.as_ref().map(staged::StagedMode::denials_json);
        shared.update(|snapshot| {
            snapshot.inventory_loaded = synced;
            if let Some(denials) = denials {
                snapshot.denials_json = Some(denials.into());
            }
            if let Some(graph_gzip) = graph_gzip {
                snapshot.graph_gzip = graph_gzip;
            }
        });
    }
}

/// The graph as `/graph` serves it: rendered and compressed once per
/// interval that changed it (a large graph less often, see `WorkBudget`),
/// shared by every request.
pub fn graph_gzip(graph: &crate::graph::CommGraph) -> gzip_body::GzipJson {
    gzip_body::gzip_json(&graph.file()).unwrap_or_default()
}

/// Sets the agent up to hold only what it uses, for weeks on every node:
/// freed pages go back to the system at once rather than after a delay
/// (with huge pages off for every command, see `main.rs`: 114-122 MB ->
/// 86-94 MB resident at 20 000 pods and 100 000 edges, docs/performance.md).
/// The commands that run once keep the delay: they end soon anyway.
fn hold_little_memory() {
    // mimalloc.h's `mi_option_purge_delay` (the same in mimalloc 2 and 3),
    // which libmimalloc-sys does not name.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option only changes when freed pages are purged.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

/// Hands the heap's free pages back to the system after a load's transient
/// peak (reading an inventory or a graph parses far more than it keeps):
/// the allocator would otherwise hold them for the life of the agent.
fn return_freed_memory() {
    // SAFETY: mi_collect only releases memory mimalloc holds free; with
    // another allocator (the tests) its heap is empty.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
