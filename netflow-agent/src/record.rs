//! `netflow-agent record`: attach, poll, write the flow log, detach.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};
use tracing::{info, warn};

use crate::{
    cgroupfs,
    flowlog::FlowLogWriter,
    flowlog::FlowRecord,
    graph::{CommGraph, build::add_flows},
    identity::Identity,
    inventory::{Inventory, live::LiveInventory},
    loader::Probe,
    reader::{FlowReader, Interval},
    serve::{self, Shared},
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
    pub flow_entries: u32,
    pub idle_timeout: Duration,
    /// Keep the communication graph in a state directory.
    pub state: Option<StateOptions>,
    /// Serve /healthz, /readyz, /metrics and /graph here.
    pub listen: Option<std::net::SocketAddr>,
}

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

/// Where workload names come from.
#[derive(Clone, Debug)]
pub enum InventoryOption {
    /// A static dump (`kubectl get ... -o json`): the lab, or no cluster.
    File(PathBuf),
    /// Watch the cluster: in-cluster, or this kubeconfig.
    Cluster { kubeconfig: Option<PathBuf> },
}

/// The inventory as the recording loop uses it.
enum InventorySource {
    /// A file, read again when it changes (a cron job's fresh
    /// `kubectl get`, the lab after it replaced a pod).
    Static(StaticInventory),
    Live(LiveInventory),
}

struct StaticInventory {
    path: PathBuf,
    modified: Option<std::time::SystemTime>,
    inventory: Arc<Inventory>,
}

impl StaticInventory {
    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path: path.to_path_buf(),
            modified,
            inventory: Arc::new(Inventory::load(path)?),
        })
    }

    /// Reads the file again if it changed; a file that no longer reads
    /// keeps the last good inventory (and says so).
    fn refresh(&mut self) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == self.modified {
            return;
        }
        self.modified = modified;
        match Inventory::load(&self.path) {
            Ok(inventory) => {
                info!(inventory = %self.path.display(), pods = inventory.pods.len(), "inventory reloaded");
                self.inventory = Arc::new(inventory);
            }
            Err(err) => warn!(%err, "keeping the previous inventory"),
        }
    }
}

impl InventorySource {
    /// Opens the inventory; a live one starts its watchers on the current
    /// runtime.
    async fn open(option: &InventoryOption) -> anyhow::Result<Self> {
        Ok(match option {
            InventoryOption::File(path) => Self::Static(StaticInventory::load(path)?),
            InventoryOption::Cluster { kubeconfig } => {
                let client = crate::inventory::live::client(kubeconfig.as_deref()).await?;
                info!("inventory: watching the cluster");
                Self::Live(LiveInventory::start(&client))
            }
        })
    }

    /// The index, once it is complete (a live one: every kind listed).
    fn current(&self) -> Option<Arc<Inventory>> {
        match self {
            Self::Static(file) => Some(file.inventory.clone()),
            Self::Live(live) => live.synced().then(|| live.inventory()),
        }
    }

    /// Whether flows can be named now ([`Self::current`] is `Some`),
    /// without building the index.
    fn synced(&self) -> bool {
        match self {
            Self::Static(_) => true,
            Self::Live(live) => live.synced(),
        }
    }

    fn watch_errors(&self) -> u64 {
        match self {
            Self::Static(_) => 0,
            Self::Live(live) => live.watch_errors(),
        }
    }
}

/// Flow records held while a live inventory is still listing, at most this
/// many (older ones are dropped and counted): naming them before the lists
/// are complete would name them wrong for the whole week.
const MAX_PENDING_FLOWS: usize = 200_000;

/// The graph of the audit window, saved to `DIR/graph.json` after every
/// interval (atomically) and loaded again at start, so a week of recording
/// survives agent restarts.
struct GraphState {
    path: PathBuf,
    graph: CommGraph,
    inventory: InventorySource,
    /// Flows read before the inventory was synced.
    pending: Vec<FlowRecord>,
    /// Flows dropped from `pending` when it was full.
    pending_dropped: u64,
    window: Duration,
    max_edges: usize,
    /// Edges dropped because the graph was full.
    edges_evicted: u64,
}

impl GraphState {
    async fn open(options: &StateOptions) -> anyhow::Result<Self> {
        let inventory = InventorySource::open(&options.inventory).await?;
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create state directory {}", options.dir.display()))?;
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
            edges_evicted: 0,
        })
    }

    fn add(
        &mut self,
        interval: &Interval,
        reader: &FlowReader,
    ) -> anyhow::Result<crate::graph::build::BuildReport> {
        if let InventorySource::Static(file) = &mut self.inventory {
            file.refresh();
        }
        let Some(inventory) = self.inventory.current() else {
            self.pending.extend(interval.flows.iter().cloned());
            if self.pending.len() > MAX_PENDING_FLOWS {
                let excess = self.pending.len() - MAX_PENDING_FLOWS;
                self.pending.drain(..excess);
                self.pending_dropped += excess as u64;
            }
            return Ok(Default::default());
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
        if self.graph.edge_count() > self.max_edges {
            let (kept, dropped) = self.graph.most_recent_edges(self.max_edges);
            warn!(
                dropped,
                max_edges = self.max_edges,
                "graph full: the least recently seen edges were dropped"
            );
            self.graph = kept;
            self.edges_evicted += dropped as u64;
        }
        self.graph.save(&self.path)?;
        Ok(report)
    }
}

pub fn run(options: &RecordOptions) -> anyhow::Result<()> {
    let (mount, cgroup) = cgroupfs::locate(options.cgroup.as_deref())?;
    let mut writer = match &options.output {
        Some(path) => Some(
            FlowLogWriter::create(path)
                .with_context(|| format!("cannot create flow log {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = crate::runtime()?;
    let mut state = match &options.state {
        Some(state) => Some(runtime.block_on(GraphState::open(state))?),
        None => None,
    };
    let shared: Option<Shared> = match options.listen {
        Some(addr) => {
            let shared = Shared::default();
            if let Ok(mut snapshot) = shared.lock() {
                // Without --state-dir there is no inventory to wait for.
                snapshot.inventory_loaded =
                    state.as_ref().is_none_or(|state| state.inventory.synced());
            }
            serve::start(addr, shared.clone())?;
            Some(shared)
        }
        None => None,
    };

    // Signal handlers go in before anything is attached: a SIGTERM that
    // arrives right after the attach must still detach cleanly.
    let signals = {
        let _context = runtime.enter();
        Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        }
    };

    let mut probe = Probe::load(options.flow_entries)?;
    let maps = probe.take_maps()?;
    probe.attach(&cgroup)?;
    if let Some(mut snapshot) = shared.as_ref().and_then(|s| s.lock().ok()) {
        snapshot.attached = true;
        snapshot.table_capacity = options.flow_entries;
        if let Some(state) = &state {
            snapshot.edges = state.graph.edge_count();
            snapshot.graph_json = serde_json::to_string(&state.graph.to_file()).unwrap_or_default();
        }
    }
    // Said once /readyz can say it too: whoever waits for this line may ask.
    info!(
        cgroup = %cgroup.display(),
        flow_entries = options.flow_entries,
        "attached: recording connections"
    );
    let reader = FlowReader::new(maps, options.idle_timeout).with_cgroup_mount(&mount);

    let mut sinks = Sinks {
        writer: writer.as_mut(),
        state: state.as_mut(),
        last_drops: Default::default(),
        shared: shared.clone(),
        poll_seconds: 0.0,
    };
    let result = runtime.block_on(poll_loop(reader, &mut sinks, options, signals));

    // Dropping the probe detaches both programs: nothing stays in the kernel.
    drop(probe);
    if let Some(mut snapshot) = shared.as_ref().and_then(|s| s.lock().ok()) {
        snapshot.attached = false;
    }
    info!(cgroup = %cgroup.display(), "detached");
    result
}

/// Where each interval goes.
struct Sinks<'a> {
    writer: Option<&'a mut FlowLogWriter>,
    state: Option<&'a mut GraphState>,
    last_drops: std::collections::BTreeMap<String, u64>,
    /// What the HTTP endpoints show.
    shared: Option<Shared>,
    /// How long the last poll took.
    poll_seconds: f64,
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
) -> anyhow::Result<()> {
    // A duplicate of the ring's fd, for readiness only (the reader owns the map).
    let ring_fd = reader
        .overflow_fd()
        .try_clone_to_owned()
        .context("cannot duplicate the overflow ring's fd")?;
    // SAFETY: the OwnedFd is owned by the AsyncFd and stays open as long as it.
    let ring = unsafe { AsyncFd::register_with_interest(ring_fd, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("cannot watch the overflow ring buffer: {err}"))?;
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
            }
            guard = ring.readable() => {
                // The kernel wakes us when a connection did not fit in the
                // table: take its packets now so the ring does not fill up.
                let mut guard = guard.context("waiting on the overflow ring")?;
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
    info!(
        overflowed_connections = interval.stats.overflowed_connections,
        drops = ?interval.stats.drops,
        "kernel counters at exit"
    );
    Ok(())
}

impl Sinks<'_> {
    fn report(&mut self, interval: &Interval, reader: &FlowReader) -> anyhow::Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            writer
                .write_interval(&interval.flows, &interval.dns, &interval.stats)
                .with_context(|| format!("cannot write flow log {}", writer.path().display()))?;
        }
        let report = match self.state.as_mut() {
            Some(state) => Some(state.add(interval, reader)?),
            None => None,
        };
        if let Some(mut snapshot) = self.shared.as_ref().and_then(|s| s.lock().ok()) {
            snapshot.flow_records += interval.flows.len() as u64;
            snapshot.table_entries = interval.stats.table_entries;
            snapshot.overflowed_connections = interval.stats.overflowed_connections;
            snapshot.drops.clone_from(&interval.stats.drops);
            snapshot.poll_seconds = self.poll_seconds;
            if let Some(state) = self.state.as_ref() {
                snapshot.inventory_loaded = state.inventory.synced();
                snapshot.inventory_watch_errors = state.inventory.watch_errors();
                snapshot.pending_flow_records = state.pending.len() as u64;
                snapshot.pending_flow_records_dropped = state.pending_dropped;
                snapshot.edges_evicted = state.edges_evicted;
            }
            if let (Some(report), Some(state)) = (report, self.state.as_ref()) {
                snapshot.unresolved_local += report.unresolved_local;
                snapshot.unresolved_service += report.unresolved_service;
                snapshot.undecided_direction += report.undecided_direction;
                snapshot.unnamed_remote += report.unnamed_remote;
                snapshot.edges = state.graph.edge_count();
                snapshot.graph_json =
                    serde_json::to_string(&state.graph.to_file()).unwrap_or_default();
            }
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
}
