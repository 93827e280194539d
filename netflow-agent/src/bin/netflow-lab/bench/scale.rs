//! Userspace at scale: synthetic clusters of a given size, the agent's own
//! commands run on them as the user runs them (`graph build`, `policy
//! generate`, `policy verify`), each a child process measured for wall time
//! and peak memory (`wait4`'s maximum RSS).
//!
//! A synthetic cluster: `workloads` Deployments of 2 pods each in one
//! namespace per 50 workloads, each with a Service; a tenth of them are hubs
//! that receive half of the edges (as databases and shared APIs do). The flow
//! log holds one record per edge, half through the server's Service and half
//! to a pod directly, repeated up to at least `records` records, so `graph
//! build` rebuilds exactly the intended edges. It is written as JSON lines and
//! converted to the binary format (`flows convert`); `graph build` reads each,
//! and must build the same graph from both. It builds once more from the
//! binary log to a binary graph, which saved as JSON again must be the
//! same bytes.

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{BufWriter, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::proc_usage::{cpu_ticks, rss_kb, ticks_per_second};

/// One size to measure: workloads and distinct edges.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub workloads: usize,
    pub edges: usize,
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (workloads, edges) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected WORKLOADS:EDGES"))?;
        let parse = |what: &str, value: &str| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{text:?}: {what} must be a positive number"))
        };
        let size = Size {
            workloads: parse("workloads", workloads)?,
            edges: parse("edges", edges)?,
        };
        // Each client reaches distinct (server, port) pairs.
        if size.edges > size.workloads * size.workloads {
            return Err(format!(
                "{text:?}: at most workloads^2 edges fit among {} workloads",
                size.workloads
            ));
        }
        Ok(size)
    }
}

/// What one command took.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub seconds: f64,
    /// User and system CPU time of the process and its threads: what a
    /// rate "per core" divides by.
    pub cpu_seconds: f64,
    pub max_rss_bytes: u64,
    /// Stopped at the time limit.
    pub killed: bool,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.max_rss_bytes as f64 / (1024.0 * 1024.0);
        if self.killed {
            write!(f, "> {:.0} s (stopped), {mib:.0} MiB", self.seconds)
        } else {
            write!(f, "{:.2} s, {mib:.0} MiB", self.seconds)
        }
    }
}

/// Each command gets this long before it is stopped and reported as such.
const TIME_LIMIT_SECONDS: f64 = 600.0;

/// The figures of one size.
#[derive(Debug)]
pub struct ScaleRow {
    pub size: Size,
    pub records: usize,
    /// `graph build` from the flow log as JSON lines, and as binary, each
    /// writing a JSON graph; and from the binary log to a binary graph.
    pub build: Measured,
    pub build_binary: Measured,
    pub build_binary_graph: Measured,
    /// The flow log's size as JSON lines, and as binary.
    pub flow_log_bytes: (u64, u64),
    pub generate: Measured,
    pub verify: Measured,
    /// The graph file as JSON, and as binary.
    pub graph_bytes: (u64, u64),
    /// The daemon's resident memory once it serves this graph as its state
    /// with this inventory (`None` when it could not be measured here).
    pub daemon_rss_bytes: Option<u64>,
    /// The share of one core the daemon used meanwhile, at 1 s intervals
    /// without traffic (an interval that changed the graph also saves it
    /// and renders `/graph`).
    pub daemon_cpu_share: Option<f64>,
}

/// Hubs: the first tenth of the workloads.
fn hubs(workloads: usize) -> usize {
    (workloads / 10).max(1)
}

fn namespace_of(workload: usize) -> usize {
    workload / 50
}

/// Port each workload serves on besides 8080 (databases, caches, APIs).
const SERVER_PORTS: [u16; 4] = [8080, 5432, 6379, 9090];

fn port_of(workload: usize) -> u16 {
    SERVER_PORTS[workload % SERVER_PORTS.len()]
}

fn pod_ip(workload: usize, replica: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + (2 * workload + replica) as u32)
}

/// A UUID-shaped uid, as kubelet's cgroup paths carry it.
fn pod_uid(workload: usize, replica: usize) -> String {
    format!("{workload:08x}-0000-4000-8000-{replica:012x}")
}

fn service_ip(workload: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 20, 0, 1)) + workload as u32)
}

/// A small deterministic generator (xorshift64*): the same cluster every run.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % bound
    }
}

/// The inventory, as `kubectl get ... -A -o json` prints it.
fn write_inventory(path: &Path, workloads: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    write!(out, r#"{{"apiVersion":"v1","kind":"List","items":["#)?;
    let mut first = true;
    let mut item = |out: &mut BufWriter<File>, value: serde_json::Value| -> anyhow::Result<()> {
        if !std::mem::take(&mut first) {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &value)?;
        Ok(())
    };
    for namespace in 0..=namespace_of(workloads - 1) {
        item(
            &mut out,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{namespace}")}}),
        )?;
    }
    // The cluster DNS, which every namespace's policies allow.
    item(
        &mut out,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    )?;
    item(
        &mut out,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
    )?;
    for replica in 0..2 {
        item(
            &mut out,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("coredns-{replica}"), "namespace": "kube-system",
                    "uid": format!("c0de0000-0000-4000-8000-{replica:012x}"), "labels": {"k8s-app": "kube-dns"}},
                "spec": {"nodeName": "node0", "containers": [{"name": "coredns", "image": "coredns",
                    "ports": [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "protocol": "TCP"}]}]},
                "status": {"phase": "Running", "podIP": format!("10.255.0.{}", replica + 1)}}),
        )?;
    }
    for node in 0..10 {
        item(
            &mut out,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node{node}")},
                "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", node + 1)}]}}),
        )?;
    }
    for workload in 0..workloads {
        let namespace = format!("ns{}", namespace_of(workload));
        let name = format!("w{workload}");
        let labels = json!({"app": name, "tier": format!("t{}", workload % 5)});
        let ports: Vec<_> = [8080, port_of(workload)]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|port| json!({"containerPort": port, "protocol": "TCP"}))
            .collect();
        item(
            &mut out,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "uid": format!("d{workload}")},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": labels}}}}),
        )?;
        item(
            &mut out,
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-rs"), "namespace": namespace, "uid": format!("rs{workload}"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": format!("d{workload}"), "controller": true}]},
                "spec": {"selector": {"matchLabels": {"app": name}}}}),
        )?;
        for replica in 0..2 {
            item(
                &mut out,
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{name}-{replica}"), "namespace": namespace,
                        "uid": pod_uid(workload, replica), "labels": labels,
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": format!("{name}-rs"), "uid": format!("rs{workload}"), "controller": true}]},
                    "spec": {"nodeName": format!("node{}", workload % 10),
                        "containers": [{"name": "app", "image": "app", "ports": ports}]},
                    "status": {"phase": "Running", "podIP": pod_ip(workload, replica).to_string(),
                        "podIPs": [{"ip": pod_ip(workload, replica).to_string()}]}}),
            )?;
        }
        item(
            &mut out,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"clusterIP": service_ip(workload).to_string(), "selector": {"app": name},
                    "ports": [{"name": "main", "port": 80, "targetPort": port_of(workload), "protocol": "TCP"}]}}),
        )?;
    }
    out.write_all(b"]}")?;
    out.flush()?;
    Ok(())
}

/// The edges: distinct (client, server) pairs, half of them to a hub.
fn edges(size: Size) -> Vec<(usize, usize)> {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let hubs = hubs(size.workloads);
    let mut seen = HashSet::with_capacity(size.edges);
    let mut edges = Vec::with_capacity(size.edges);
    let mut client = 0;
    while edges.len() < size.edges {
        let server = if random.below(2) == 0 {
            random.below(hubs)
        } else {
            random.below(size.workloads)
        };
        if seen.insert((client, server)) {
            edges.push((client, server));
            client = (client + 1) % size.workloads;
        }
    }
    edges
}

/// The flow log: each edge's connection as its client's node recorded it.
fn write_flow_log(path: &Path, edges: &[(usize, usize)], records: usize) -> anyhow::Result<usize> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut written = 0;
    let mut round = 0u32;
    while written < records.max(edges.len()) {
        for (index, &(client, server)) in edges.iter().enumerate() {
            // Every other edge through its Service, the others to a pod.
            let (remote_ip, remote_port) = if index % 2 == 0 {
                (service_ip(server), 80)
            } else {
                (pod_ip(server, index % 4 / 2), port_of(server))
            };
            let local_port = 32768 + ((index as u32 + round * 7919) % 28000) as u16;
            let replica = round as usize % 2;
            writeln!(
                out,
                r#"{{"type":"flow","ts":"2026-11-20T10:00:00Z","cgroup_id":0,"cgroup":"/kubepods/besteffort/pod{}/c0ffee","protocol":"TCP","local":{{"ip":"{}","port":{local_port}}},"remote":{{"ip":"{remote_ip}","port":{remote_port}}},"initiator":"local","client":"local","client_basis":"tcp_syn","packets_in":5,"packets_out":6,"bytes_in":900,"bytes_out":700,"first_seen":"2026-11-20T09:59:58Z","last_seen":"2026-11-20T09:59:59Z","handshake":"established","newly_established":true,"new":true,"ended":true}}"#,
                pod_uid(client, replica),
                pod_ip(client, replica),
            )?;
            written += 1;
            if written >= records.max(edges.len()) {
                break;
            }
        }
        round += 1;
    }
    out.flush()?;
    Ok(written)
}

/// Whether two files hold the same bytes, read a piece at a time: this
/// process must stay small, since a child's peak RSS (`wait4`) counts the
/// memory of the process that spawned it (Linux carries the spawning
/// process's high-water mark over the `exec`), and reading two 400 MB
/// graphs whole put 800 MB into every figure after it.
fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::io::Read as _;
    let open = |path: &Path| {
        File::open(path)
            .map(|file| std::io::BufReader::with_capacity(1 << 20, file))
            .with_context(|| format!("cannot read {}", path.display()))
    };
    if fs::metadata(a)?.len() != fs::metadata(b)?.len() {
        return Ok(false);
    }
    let (mut a, mut b) = (open(a)?, open(b)?);
    let (mut piece_a, mut piece_b) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let read = a.read(&mut piece_a)?;
        if read == 0 {
            return Ok(true);
        }
        b.read_exact(&mut piece_b[..read])?;
        if piece_a[..read] != piece_b[..read] {
            return Ok(false);
        }
    }
}

/// Runs the agent with `args`, measuring its wall time and peak RSS.
fn measure(agent: &Path, args: &[&str], expect_success: bool) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let child = Command::new(agent)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", agent.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: waiting for our own child, with valid out-pointers.
        let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if waited == pid {
            break;
        }
        if waited < 0 {
            bail!(
                "wait4 on {}: {}",
                agent.display(),
                std::io::Error::last_os_error()
            );
        }
        if !killed && started.elapsed().as_secs_f64() > TIME_LIMIT_SECONDS {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let timeval_seconds =
        |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1_000_000.0;
    let cpu_seconds = timeval_seconds(usage.ru_utime) + timeval_seconds(usage.ru_stime);
    if killed {
        return Ok(Measured {
            seconds: TIME_LIMIT_SECONDS,
            cpu_seconds,
            max_rss_bytes: usage.ru_maxrss as u64 * 1024,
            killed: true,
        });
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if expect_success && !ok {
        bail!(
            "netflow-agent {} failed (status {status}; its error is above)",
            args.join(" ")
        );
    }
    Ok(Measured {
        seconds,
        cpu_seconds,
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        killed: false,
    })
}

/// Builds, generates and verifies one synthetic cluster of `size`, its flow
/// log holding at least `records` records.
pub fn measure_size(
    agent: &Path,
    dir: &Path,
    size: Size,
    records: usize,
) -> anyhow::Result<ScaleRow> {
    fs::create_dir_all(dir)?;
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let text = |path: &PathBuf| path.to_string_lossy().into_owned();
    let (inventory, flows, graph, policies) = (
        path("inventory.json"),
        path("flows.jsonl"),
        path("graph.json"),
        path("policies"),
    );
    write_inventory(&inventory, size.workloads)?;
    let edges = edges(size);
    let records = write_flow_log(&flows, &edges, records)?;
    drop(edges);
    // `graph build` from a log to a graph file in a format.
    let graph_build = |log: &PathBuf, output: &PathBuf, format: &str| {
        measure(
            agent,
            &[
                "graph",
                "build",
                "--flows",
                &text(log),
                "--inventory",
                &text(&inventory),
                "-o",
                &text(output),
                "--format",
                format,
            ],
            true,
        )
    };
    let build = graph_build(&flows, &graph, "json")?;
    let binary_flows = path("flows.bin");
    measure(
        agent,
        &[
            "flows",
            "convert",
            &text(&flows),
            "--to",
            "binary",
            "-o",
            &text(&binary_flows),
        ],
        true,
    )?;
    let graph_from_binary = path("graph-from-binary.json");
    let build_binary = graph_build(&binary_flows, &graph_from_binary, "json")?;
    if !same_bytes(&graph, &graph_from_binary)? {
        bail!(
            "graph build made {} from the binary log, unlike {} from its JSON lines",
            graph_from_binary.display(),
            graph.display()
        );
    }
    fs::remove_file(&graph_from_binary)?;
    let binary_graph = path("graph.bin");
    let build_binary_graph = graph_build(&binary_flows, &binary_graph, "binary")?;
    // Saved as JSON again (a merge of one graph), the binary graph must be
    // the JSON build's, byte for byte.
    let graph_again = path("graph-from-binary-graph.json");
    measure(
        agent,
        &[
            "graph",
            "merge",
            &text(&binary_graph),
            "-o",
            &text(&graph_again),
        ],
        true,
    )?;
    if !same_bytes(&graph, &graph_again)? {
        bail!(
            "the binary graph {} saved as JSON ({}) is not the JSON build's {}",
            binary_graph.display(),
            graph_again.display(),
            graph.display()
        );
    }
    fs::remove_file(&graph_again)?;
    let flow_log_bytes = (
        fs::metadata(&flows)?.len(),
        fs::metadata(&binary_flows)?.len(),
    );
    let generate = measure(
        agent,
        &[
            "policy",
            "generate",
            "--graph",
            &text(&graph),
            "--inventory",
            &text(&inventory),
            "--out",
            &text(&policies),
        ],
        true,
    )?;
    if generate.killed {
        bail!("policy generate did not finish within {TIME_LIMIT_SECONDS} s ({generate})");
    }
    // Exit 0 only when every edge is allowed: the policies must cover them all.
    let verify = measure(
        agent,
        &[
            "policy",
            "verify",
            "--graph",
            &text(&graph),
            "--policies",
            &text(&policies),
            "--inventory",
            &text(&inventory),
        ],
        true,
    )?;
    let graph_bytes = (
        fs::metadata(&graph)?.len(),
        fs::metadata(&binary_graph)?.len(),
    );
    let (daemon_rss_bytes, daemon_cpu_share) = match daemon_costs(agent, dir, &graph, &inventory) {
        Ok(costs) => (Some(costs.rss_bytes), Some(costs.cpu_share)),
        Err(err) => {
            eprintln!("daemon memory and CPU not measured: {err:#}");
            (None, None)
        }
    };
    Ok(ScaleRow {
        size,
        records,
        build,
        build_binary,
        build_binary_graph,
        flow_log_bytes,
        generate,
        verify,
        graph_bytes,
        daemon_rss_bytes,
        daemon_cpu_share,
    })
}

/// What the daemon costs while it runs on a graph.
struct DaemonCosts {
    rss_bytes: u64,
    cpu_share: f64,
}

/// Starts `run` with `graph` as its state and `inventory` as its static
/// inventory, attached to an empty cgroup of its own, and reads its CPU over
/// a few polls once it is ready, and its resident memory after them.
fn daemon_costs(
    agent: &Path,
    dir: &Path,
    graph: &Path,
    inventory: &Path,
) -> anyhow::Result<DaemonCosts> {
    let state = dir.join("state");
    let _ = fs::remove_dir_all(&state);
    fs::create_dir_all(&state)?;
    fs::copy(graph, state.join("graph.json"))?;
    let cgroup = netflow_agent::kernel::cgroup_mount::cgroup2_mount()?
        .join(format!("netflow-bench-rss-{}", std::process::id()));
    fs::create_dir_all(&cgroup).with_context(|| format!("cannot create {}", cgroup.display()))?;
    let listen: std::net::SocketAddr = "127.0.0.1:19190".parse()?;
    let mut child = Command::new(agent)
        .args(["run", "--cgroup"])
        .arg(&cgroup)
        .arg("--state-dir")
        .arg(&state)
        .arg("--inventory")
        .arg(inventory)
        // Keep every synthetic edge: the window and budgets are the user's.
        .args([
            "--window",
            "3650d",
            "--max-edges",
            "10000000",
            "--max-edges-per-client",
            "10000000",
            "--interval",
            "1s",
            "--listen",
            "127.0.0.1:19190",
            "--graph-listen",
            "127.0.0.1:19191",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", agent.display()))?;
    let result = (|| -> anyhow::Result<DaemonCosts> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = netflow_agent::testbed::http_client::http_get(listen, "/readyz") {
                break;
            }
            if started.elapsed().as_secs() > 300 || child.try_wait()?.is_some() {
                bail!("the daemon did not become ready");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // A few polls and saves: memory and CPU as it runs, not as it starts.
        std::thread::sleep(std::time::Duration::from_secs(1));
        let (cpu_before, measuring) = (cpu_ticks(child.id())?, Instant::now());
        std::thread::sleep(std::time::Duration::from_secs(5));
        let cpu_seconds = (cpu_ticks(child.id())? - cpu_before) as f64 / ticks_per_second();
        let cpu_share = cpu_seconds / measuring.elapsed().as_secs_f64();
        Ok(DaemonCosts {
            rss_bytes: rss_kb(child.id())? * 1024,
            cpu_share,
        })
    })();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = fs::remove_dir(&cgroup);
    result
}

pub fn print(rows: &[ScaleRow]) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!();
    println!("Userspace at scale (synthetic clusters, 2 pods per workload, hub services):");
    println!();
    println!(
        "| workloads, edges | graph build, JSON lines log | records per CPU second | graph build, binary log | records per CPU second | graph build, binary log and graph | records per CPU second | generate | verify | graph per edge, JSON / binary | daemon RSS | daemon CPU, idle (1 s intervals) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // Per core: the build reads, parses and adds on threads of its own.
    let per_core =
        |row: &ScaleRow, build: &Measured| row.records as f64 / build.cpu_seconds.max(f64::EPSILON);
    for row in rows {
        let (json_bytes, binary_bytes) = row.flow_log_bytes;
        let per_record = |bytes: u64| bytes as f64 / row.records.max(1) as f64;
        println!(
            "| {}, {} | {} ({} records, {:.0} B each) | {:.0} | {} ({:.0} B each) | {:.0} | {} | {:.0} | {} | {} | {:.0} B / {:.0} B | {} | {} |",
            row.size.workloads,
            row.size.edges,
            row.build,
            row.records,
            per_record(json_bytes),
            per_core(row, &row.build),
            row.build_binary,
            per_record(binary_bytes),
            per_core(row, &row.build_binary),
            row.build_binary_graph,
            per_core(row, &row.build_binary_graph),
            row.generate,
            row.verify,
            row.graph_bytes.0 as f64 / row.size.edges as f64,
            row.graph_bytes.1 as f64 / row.size.edges as f64,
            row.daemon_rss_bytes
                .map_or_else(|| "-".to_string(), |rss| format!("{:.0} MiB", mib(rss))),
            row.daemon_cpu_share.map_or_else(
                || "-".to_string(),
                |share| format!("{:.0}% of a core", share * 100.0)
            ),
        );
    }
    // The daemon's cost of one more edge, between two sizes of one inventory.
    for pair in rows.windows(2) {
        let (small, large) = (&pair[0], &pair[1]);
        if let (Some(a), Some(b)) = (small.daemon_rss_bytes, large.daemon_rss_bytes)
            && small.size.workloads == large.size.workloads
            && large.size.edges > small.size.edges
        {
            println!(
                "daemon memory per extra edge ({} -> {} edges, {} workloads): {:.0} B",
                small.size.edges,
                large.size.edges,
                large.size.workloads,
                (b as f64 - a as f64) / (large.size.edges - small.size.edges) as f64
            );
        }
    }
}
