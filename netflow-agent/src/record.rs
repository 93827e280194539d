//! `netflow-agent record`: attach, poll, write the flow log, detach.

use std::{path::PathBuf, time::Duration};

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
    loader::Probe,
    reader::{FlowReader, Interval},
};

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Cgroup to attach to; the cgroup v2 root when `None`.
    pub cgroup: Option<PathBuf>,
    /// Stop after this long; run until SIGINT/SIGTERM when `None`.
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub output: PathBuf,
    pub flow_entries: u32,
    pub idle_timeout: Duration,
}

pub fn run(options: &RecordOptions) -> anyhow::Result<()> {
    let mount = cgroupfs::cgroup2_mount()?;
    let cgroup = cgroupfs::resolve(&mount, options.cgroup.as_deref())?;
    let mut writer = FlowLogWriter::create(&options.output)
        .with_context(|| format!("cannot create flow log {}", options.output.display()))?;

    let mut probe = Probe::load(options.flow_entries)?;
    let maps = probe.take_maps()?;
    probe.attach(&cgroup)?;
    info!(
        cgroup = %cgroup.display(),
        flow_entries = options.flow_entries,
        "attached: recording connections"
    );

    let reader = FlowReader::new(maps, options.idle_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(poll_loop(reader, &mut writer, options));

    // Dropping the probe detaches both programs: nothing stays in the kernel.
    drop(probe);
    info!(cgroup = %cgroup.display(), "detached");
    result
}

async fn poll_loop(
    mut reader: FlowReader,
    writer: &mut FlowLogWriter,
    options: &RecordOptions,
) -> anyhow::Result<()> {
    // A duplicate of the ring's fd, for readiness only (the reader owns the map).
    let ring_fd = reader
        .overflow_fd()
        .try_clone_to_owned()
        .context("cannot duplicate the overflow ring's fd")?;
    // SAFETY: the OwnedFd is owned by the AsyncFd and stays open as long as it.
    let ring = unsafe { AsyncFd::register_with_interest(ring_fd, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("cannot watch the overflow ring buffer: {err}"))?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
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

    let mut last_drops = std::collections::BTreeMap::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let interval = reader.poll()?;
                report(writer, &interval, &mut last_drops)?;
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
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
        }
    }
    let interval = reader.poll()?;
    report(writer, &interval, &mut last_drops)?;
    info!(
        overflowed_connections = interval.stats.overflowed_connections,
        drops = ?interval.stats.drops,
        "kernel counters at exit"
    );
    Ok(())
}

fn report(
    writer: &mut FlowLogWriter,
    interval: &Interval,
    last_drops: &mut std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    writer
        .write_interval(&interval.flows, &interval.dns, &interval.stats)
        .with_context(|| format!("cannot write flow log {}", writer.path().display()))?;
    for (reason, count) in &interval.stats.drops {
        let before = last_drops.get(reason).copied().unwrap_or(0);
        if *count > before {
            warn!(
                reason,
                new = count - before,
                total = count,
                "packets not fully recorded"
            );
        }
    }
    last_drops.clone_from(&interval.stats.drops);
    Ok(())
}
