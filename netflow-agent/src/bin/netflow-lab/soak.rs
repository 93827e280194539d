//! `netflow-lab soak --minutes N` (run by `cargo xtask soak`): one agent
//! recording a steady stream of new connections from pods that come and go
//! (kubelet-style cgroups made and removed, the inventory rewritten as pods
//! start and are deleted, pod addresses reused from a small pool), for N
//! minutes. Every minute it prints the agent's memory, CPU, table fill, poll
//! time, edges and drops; at the end it fails if memory grew more than 5%
//! after the warm-up or if any connection is missing from the graph.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::proc_usage::{cpu_ticks, rss_kb, ticks_per_second};
use anyhow::{Context as _, bail};
use netflow_agent::{
    graph::{CommGraph, file::write_atomically},
    testbed::{
        Host, Testbed,
        http_client::{free_loopback_addr, http_get},
        remove_cgroup_tree,
    },
};

pub struct Options {
    pub minutes: f64,
    /// Client workloads (Jobs) whose pods take turns.
    pub workloads: usize,
    /// Connections each pod makes before it ends.
    pub connections_per_pod: u64,
    /// Pods run at once.
    pub parallel: usize,
}

const SERVER: &str = "10.231.0.2:8080";
const INTERVAL: Duration = Duration::from_secs(5);
/// Pods listed in the inventory at once (older ones are deleted from it).
const PODS_LISTED: usize = 1_000;
/// Pod addresses, reused round-robin: a new pod takes an address an older
/// one had.
const ADDRESS_POOL: usize = 64;
/// How often the agent's memory is sampled.
const RSS_SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Memory may grow this much after the warm-up.
const RSS_GROWTH_LIMIT: f64 = 0.05;

/// The cluster as the inventory file shows it.
struct Cluster {
    path: PathBuf,
    pods: VecDeque<String>,
    next: u64,
}

impl Cluster {
    fn write(&self, workloads: usize) -> anyhow::Result<()> {
        let mut items = vec![
            r#"{"kind":"Node","metadata":{"name":"host-a"},"status":{"addresses":[{"type":"InternalIP","address":"10.231.0.1"}]}}"#.to_string(),
            r#"{"kind":"Node","metadata":{"name":"host-b"},"status":{"addresses":[{"type":"InternalIP","address":"10.231.0.2"}]}}"#.to_string(),
        ];
        for workload in 0..workloads {
            items.push(format!(
                r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"soak-{workload}","namespace":"soak","uid":"job-{workload}"}},"spec":{{"selector":{{"matchLabels":{{"job-name":"soak-{workload}"}}}}}}}}"#
            ));
        }
        items.extend(self.pods.iter().cloned());
        let text = format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
            items.join(",")
        );
        write_atomically(&self.path, text.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Lists a new pod of `workload`; returns its uid.
    fn start_pod(&mut self, workload: usize, workloads: usize) -> anyhow::Result<String> {
        let n = self.next;
        self.next += 1;
        let uid = format!("50a60000-0000-4000-8000-{n:012}");
        let address = n as usize % ADDRESS_POOL;
        self.pods.push_back(format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"soak-{workload}-{n}","namespace":"soak","uid":"{uid}","labels":{{"job-name":"soak-{workload}"}},"ownerReferences":[{{"apiVersion":"batch/v1","kind":"Job","name":"soak-{workload}","uid":"job-{workload}","controller":true}}]}},"spec":{{"nodeName":"host-a"}},"status":{{"phase":"Running","podIP":"10.99.0.{address}","podIPs":[{{"ip":"10.99.0.{address}"}}]}}}}"#
        ));
        if self.pods.len() > PODS_LISTED {
            self.pods.pop_front();
        }
        self.write(workloads)?;
        Ok(uid)
    }
}

/// One minute's figures.
struct Sample {
    minute: u64,
    rss_mb: f64,
    cpu_percent: f64,
    fill: f64,
    poll_seconds: f64,
    edges: f64,
    drops: f64,
    connections: u64,
    pods: u64,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let lab = std::env::current_exe().context("cannot find the netflow-lab binary")?;
    let mut testbed = Testbed::two_hosts("nfsoak")?;
    // Closed connections wait in TIME_WAIT for a minute: at thousands of
    // new connections a second the clients reuse ports whose wait is over
    // (the port range stays the kernel's default, as in a pod).
    testbed.exec_in(Host::A, &["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])?;
    testbed.start_server(&lab, Host::B, &["--tcp", SERVER])?;
    let dir = std::env::temp_dir().join(format!("netflow-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cluster = Arc::new(Mutex::new(Cluster {
        path: dir.join("inventory.json"),
        pods: VecDeque::new(),
        next: 0,
    }));
    cluster
        .lock()
        .expect("not poisoned")
        .write(options.workloads)?;
    let listen = free_loopback_addr()?;
    let mut agent = Command::new(crate::agent_binary()?)
        .arg("record")
        .arg("--cgroup")
        .arg(testbed.cgroup_parent())
        .arg("--interval")
        .arg(format!("{}s", INTERVAL.as_secs()))
        .arg("--inventory")
        .arg(dir.join("inventory.json"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--listen")
        .arg(listen.to_string())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let result = soak(options, &testbed, &lab, &cluster, &mut agent, listen, &dir);
    let _ = agent.kill();
    let _ = agent.wait();
    drop(testbed);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn soak(
    options: &Options,
    testbed: &Testbed,
    lab: &Path,
    cluster: &Arc<Mutex<Cluster>>,
    agent: &mut Child,
    listen: std::net::SocketAddr,
    dir: &Path,
) -> anyhow::Result<()> {
    let ready = Instant::now();
    while !http_get(listen, "/readyz").is_ok_and(|(status, _)| status == 200) {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the agent is not ready after 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let made: Arc<Mutex<BTreeMap<usize, u64>>> = Arc::default();
    let connections = Arc::new(AtomicU64::new(0));
    let pods = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..options.parallel {
        let (made, connections, pods, stop, cluster) = (
            made.clone(),
            connections.clone(),
            pods.clone(),
            stop.clone(),
            cluster.clone(),
        );
        let kubepods = testbed.cgroup_parent().join("kubepods/besteffort");
        let netns = testbed.netns_path(Host::A);
        let lab = lab.to_path_buf();
        let (workloads, count) = (options.workloads, options.connections_per_pod);
        workers.push(thread::spawn(move || -> anyhow::Result<()> {
            let mut turn = worker;
            while !stop.load(Ordering::Relaxed) {
                let workload = turn % workloads;
                turn += 1;
                let uid = cluster
                    .lock()
                    .expect("not poisoned")
                    .start_pod(workload, workloads)?;
                let pod = kubepods.join(format!("pod{uid}"));
                let container = pod.join(format!("{:0>64}", uid.replace('-', "")));
                std::fs::create_dir_all(&container)?;
                let status = Command::new(&lab)
                    .arg("peer")
                    .arg("--cgroup")
                    .arg(&container)
                    .arg("--netns")
                    .arg(&netns)
                    .args(["connect", "--tcp", SERVER, "--count", &count.to_string()])
                    .stdout(Stdio::null())
                    .status()?;
                remove_cgroup_tree(&pod);
                if !status.success() {
                    bail!("a client pod failed ({status})");
                }
                *made
                    .lock()
                    .expect("not poisoned")
                    .entry(workload)
                    .or_default() += count;
                connections.fetch_add(count, Ordering::Relaxed);
                pods.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }

    let started = Instant::now();
    let duration = Duration::from_secs_f64(options.minutes * 60.0);
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_cpu = cpu_ticks(agent.id())?;
    let mut last_at = Instant::now();
    let mut minute = 0;
    while started.elapsed() < duration {
        let next = Duration::from_secs(60 * (minute + 1)).min(duration);
        // Memory moves within a poll (the inventory read again, the graph
        // compressed): sampled every few seconds, a minute's median.
        let mut rss = Vec::new();
        while started.elapsed() < next {
            thread::sleep(RSS_SAMPLE_EVERY.min(next.saturating_sub(started.elapsed())));
            rss.push(rss_kb(agent.id())? as f64 / 1024.0);
        }
        minute += 1;
        if let Some(status) = agent.try_wait()? {
            bail!("the agent ended ({status})");
        }
        let cpu = cpu_ticks(agent.id())?;
        let elapsed = last_at.elapsed().as_secs_f64();
        let metrics = http_get(listen, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let sample = Sample {
            minute,
            rss_mb: median(&mut rss),
            cpu_percent: (cpu - last_cpu) as f64 / ticks_per_second() / elapsed * 100.0,
            fill: metric(&metrics, "netflow_table_fill_ratio"),
            poll_seconds: metric(&metrics, "netflow_poll_duration_seconds"),
            edges: metric(&metrics, "netflow_graph_edges"),
            drops: metric(&metrics, "netflow_packets_not_recorded_total"),
            connections: connections.load(Ordering::Relaxed),
            pods: pods.load(Ordering::Relaxed),
        };
        last_cpu = cpu;
        last_at = Instant::now();
        println!(
            "minute {:>3}: rss {:.1} MB, cpu {:.1}%, table fill {:.3}, poll {:.3} s, edges {}, drops {}, connections {} ({:.0}/s), pods {}",
            sample.minute,
            sample.rss_mb,
            sample.cpu_percent,
            sample.fill,
            sample.poll_seconds,
            sample.edges,
            sample.drops,
            sample.connections,
            sample.connections as f64 / started.elapsed().as_secs_f64(),
            sample.pods
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a worker panicked")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Two polls report what the last pods did; then a clean stop saves it.
    thread::sleep(INTERVAL * 2 + Duration::from_secs(1));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait()?;
    if !status.success() {
        bail!("the agent did not stop cleanly ({status})");
    }

    let graph = CommGraph::load(&dir.join("state/graph.json"))?;
    let made = made.lock().expect("not poisoned").clone();
    let mut missing = Vec::new();
    let mut in_graph = 0;
    for (workload, count) in &made {
        let id = format!("workload:soak/Job/soak-{workload}");
        let recorded: u64 = graph
            .edges()
            .iter()
            .filter(|(from, to, edge)| {
                from.id == id && to.id == "node:host-b" && edge.key.port == 8080
            })
            .map(|(_, _, edge)| edge.stats.seen_by_client.connections)
            .sum();
        in_graph += recorded.min(*count);
        if recorded != *count {
            missing.push(format!("{id}: {recorded} recorded of {count}"));
        }
    }
    let total: u64 = made.values().sum();
    let pods = pods.load(Ordering::Relaxed);
    // Warm-up: the first third (gone cgroups' paths, maps and indexes
    // reach their size). Then the three minutes after it against the last
    // three.
    let after: Vec<f64> = samples
        .iter()
        .filter(|sample| sample.minute as f64 > (options.minutes / 3.0).max(1.0))
        .map(|sample| sample.rss_mb)
        .collect();
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let window = after.len().min(3);
    let (warm_rss, last_rss) = (mean(&after[..window]), mean(&after[after.len() - window..]));
    let growth = if warm_rss > 0.0 {
        last_rss / warm_rss - 1.0
    } else {
        0.0
    };
    let cpu =
        samples.iter().map(|sample| sample.cpu_percent).sum::<f64>() / samples.len().max(1) as f64;
    println!(
        "soak: {:.0} min, {:.0} new connections/s from {pods} pods ({:.1} pods/s, {ADDRESS_POOL} addresses reused), agent RSS {warm_rss:.1} MB after warm-up -> {last_rss:.1} MB at the end ({:+.1}%, medians), CPU {cpu:.1}%, drops {}, {} of {total} connections in the graph",
        seconds / 60.0,
        total as f64 / seconds,
        pods as f64 / seconds,
        growth * 100.0,
        samples.last().map_or(0.0, |sample| sample.drops),
        in_graph,
    );
    if !missing.is_empty() {
        bail!(
            "connections missing from the graph:\n{}",
            missing.join("\n")
        );
    }
    if growth > RSS_GROWTH_LIMIT {
        bail!(
            "the agent's memory grew {:.1}% after the warm-up (limit {:.0}%)",
            growth * 100.0,
            RSS_GROWTH_LIMIT * 100.0
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// A metric's value (summed over its labels) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
