//! `netflow-lab bench` (run by `cargo xtask bench`): what recording costs the
//! traffic it records.
//!
//! Between the two namespaces of a testbed, in one run, it measures TCP
//! request/response rate, new connections per second and stream throughput
//! with no program, with an empty program (the floor: the hook's own cost),
//! with netflow attached, and with a libpcap capture (`tcpdump -w`) running
//! instead, and reports each as a ratio of the no-program figure. The modes
//! are interleaved round by round and the median is taken, so slow drift of
//! the machine hits every mode alike.
//!
//! Rates between namespaces on a small VM move by more than netflow costs,
//! so the cost itself is measured apart: from the kernel's BPF statistics
//! under the same traffic, netflow's programs against the empty one, round
//! by round (ABAB), as a median with a confidence interval; and per packet
//! kind through BPF_PROG_TEST_RUN (`per_run`), with no network at all.

mod cpu;
mod per_run;
pub mod scale;
mod stats;

use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use netflow_common::{EGRESS_PROG, FLOOR_PROG, INGRESS_PROG};
use serde::Deserialize;

use netflow_agent::{
    kernel::loader::{DEFAULT_FOLD_INTERVAL, Probe},
    testbed::{Host, Testbed},
};
use stats::{median, median_interval};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Baseline,
    /// An empty program attached in netflow's place.
    Floor,
    Netflow,
    /// netflow with `--http-heads off` (the programs' cost rounds only).
    NetflowWithoutHttp,
    Tcpdump,
}

const MODES: [Mode; 4] = [Mode::Baseline, Mode::Floor, Mode::Netflow, Mode::Tcpdump];
const WORKLOADS: [(&str, &str, &str, f64); 3] = [
    (
        "rr",
        "TCP request/response (64 B ping-pong), per s",
        "request/response",
        0.97,
    ),
    (
        "crr",
        "new TCP connections (connect, 64 B each way, close), per s",
        "connections/s",
        0.95,
    ),
    ("stream", "TCP stream throughput, MB/s", "throughput", 0.98),
];

#[derive(Debug, Deserialize)]
struct BenchReport {
    operations: u64,
    bytes: u64,
    seconds: f64,
}

/// Which parts of the benchmark to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// What recording costs packets (rates, CPU, the programs' own time).
    Kernel,
    /// The agent's commands on synthetic clusters of the `--scale` sizes.
    Scale,
}

pub struct Options {
    pub seconds: f64,
    pub rounds: usize,
    pub scale: Vec<scale::Size>,
    pub records: usize,
    pub only: Option<Part>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if options.only != Some(Part::Scale) {
        run_kernel(options.seconds, options.rounds)?;
    }
    if options.only != Some(Part::Kernel) {
        let agent = crate::agent_binary()?;
        let dir = tempfile_dir("netflow-scale")?;
        let mut rows = Vec::new();
        for size in &options.scale {
            match scale::measure_size(&agent, &dir, *size, options.records) {
                Ok(row) => {
                    eprintln!("scale {}:{} done", size.workloads, size.edges);
                    rows.push(row);
                }
                Err(err) => eprintln!(
                    "scale {}:{} not measured: {err:#}",
                    size.workloads, size.edges
                ),
            }
        }
        if std::env::var_os("NETFLOW_SCALE_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            eprintln!("kept the synthetic clusters in {}", dir.display());
        }
        scale::print(&rows);
    }
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn run_kernel(seconds: f64, rounds: usize) -> anyhow::Result<()> {
    let lab = std::env::current_exe().context("cannot find the netflow-lab binary")?;
    let agent = crate::agent_binary()?;
    if Command::new("tcpdump").arg("--version").output().is_err() {
        bail!("tcpdump is not installed: run `cargo xtask setup`");
    }
    let mut testbed = Testbed::two_hosts("nfbench")?;
    // The connection-rate client opens tens of thousands of connections:
    // let TIME_WAIT ports be reused as on a busy node.
    testbed.exec_in(Host::A, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    let server = |port: u16| format!("{}:{port}", Host::B.ipv4());
    // Server on the last CPU, clients on the first (children inherit the
    // affinity they are spawned with): fewer migrations, less noise. The agent
    // and tcpdump run unpinned, as they would on a node.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (client_cpu, server_cpu) = (0, cpus.saturating_sub(1));
    pin_to(&[server_cpu]);
    testbed.start_server(
        &lab,
        Host::B,
        &["--tcp", &server(7000), "--sink", &server(7001)],
    )?;
    let all_cpus: Vec<usize> = (0..cpus).collect();

    let run_workload = |workload: &str| -> anyhow::Result<BenchReport> {
        let port = if workload == "stream" { 7001 } else { 7000 };
        let output = testbed.run_peer(
            &lab,
            Host::A,
            &[
                "bench",
                workload,
                "--to",
                &server(port),
                "--duration",
                &seconds.to_string(),
            ],
        )?;
        serde_json::from_slice(&output.stdout).context("reading the bench client's report")
    };

    // results[workload][mode][round]. Within a round the three modes of a
    // workload run back to back, in an order that rotates from round to
    // round, so each ratio compares measurements taken moments apart.
    let mut results = vec![vec![Vec::new(); MODES.len()]; WORKLOADS.len()];
    // The same, as kernel CPU seconds per million packets.
    let mut cpu_cost = vec![vec![Vec::new(); MODES.len()]; WORKLOADS.len()];
    for round in 0..rounds {
        for (workload_index, (workload, ..)) in WORKLOADS.iter().enumerate() {
            for step in 0..MODES.len() {
                let mode_index = (step + round) % MODES.len();
                pin_to(&all_cpus);
                let guard = ModeGuard::start(MODES[mode_index], &testbed, &agent)?;
                pin_to(&[client_cpu]);
                let meter =
                    cpu::Meter::start(&testbed.netns_name(Host::A), &testbed.link_name(Host::A))?;
                let report = run_workload(workload)?;
                cpu_cost[workload_index][mode_index].push(meter.per_million_packets()?);
                drop(guard);
                let rate = if *workload == "stream" {
                    report.bytes as f64 / report.seconds / 1e6
                } else {
                    report.operations as f64 / report.seconds
                };
                results[workload_index][mode_index].push(rate);
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    pin_to(&all_cpus);

    // The programs' own cost, in passes of their own (the kernel's run-time
    // statistics time every run, which would slow the measured passes): the
    // request/response traffic with the empty program, then with netflow,
    // alternating round by round.
    //
    // Each round runs the client on the server's CPU and on another one: a
    // socket's two directions are counted on the CPUs its two processes run
    // on, so where the client lands decides whether the socket's storage
    // moves between CPUs on every packet. Left to the scheduler, that choice
    // changed from run to run and moved the egress body by 2x.
    let placements: Vec<(Placement, usize)> = if cpus > 1 {
        vec![
            (Placement::ServerCpu, server_cpu),
            (Placement::OtherCpu, client_cpu),
        ]
    } else {
        vec![(Placement::ServerCpu, server_cpu)]
    };
    let mut cost: Vec<(Placement, CostRounds)> = placements
        .iter()
        .map(|&(placement, _)| (placement, CostRounds::default()))
        .collect();
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(stats_fd) => {
            // The floor, netflow, and netflow without HTTP heads, in an
            // order that rotates round by round.
            let modes = [Mode::Floor, Mode::Netflow, Mode::NetflowWithoutHttp];
            for round in 0..rounds {
                for (placement_index, &(_, cpu)) in placements.iter().enumerate() {
                    for step in 0..modes.len() {
                        let mode = modes[(step + round) % modes.len()];
                        let guard = ModeGuard::start(mode, &testbed, &agent)?;
                        pin_to(&[cpu]);
                        run_workload("rr")?;
                        pin_to(&all_cpus);
                        cost[placement_index].1.add(mode);
                        drop(guard);
                    }
                }
            }
            drop::<OwnedFd>(stats_fd);
        }
        Err(err) => eprintln!("kernel BPF statistics unavailable: {err}"),
    }
    drop(testbed);
    let per_run = per_run::measure().context("measuring per-run costs with BPF_PROG_TEST_RUN")?;

    println!(
        "netflow benchmark: {rounds} rounds of {seconds} s per workload and mode; medians of rates, medians of per-round ratios"
    );
    println!(
        "{:<62} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}  goal",
        "workload", "no program", "empty prog", "netflow", "tcpdump", "netflow×", "tcpdump×"
    );
    let mut all_met = true;
    for (workload_index, (_, label, _, goal)) in WORKLOADS.iter().enumerate() {
        let rates = &results[workload_index];
        let medians: Vec<f64> = rates.iter().map(|rates| median(rates)).collect();
        // Ratios are taken round by round (paired), then their median.
        let ratio = |mode: usize| {
            let per_round: Vec<f64> = rates[mode]
                .iter()
                .zip(&rates[0])
                .map(|(m, b)| m / b)
                .collect();
            median(&per_round)
        };
        let (netflow_ratio, tcpdump_ratio) = (ratio(2), ratio(3));
        let met = netflow_ratio >= *goal && netflow_ratio > tcpdump_ratio;
        all_met &= met;
        println!(
            "{label:<62} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {netflow_ratio:>9.3} {tcpdump_ratio:>9.3}  ≥{goal} and > tcpdump: {}",
            medians[0],
            medians[1],
            medians[2],
            medians[3],
            if met { "met" } else { "NOT met" }
        );
    }
    println!(
        "kernel CPU (system + irq + softirq) per million packets on the link, s: median [95% interval]"
    );
    for (workload_index, (_, label, ..)) in WORKLOADS.iter().enumerate() {
        let cells: Vec<String> = cpu_cost[workload_index]
            .iter()
            .map(|values| {
                let (low, high) = median_interval(values);
                format!("{:.2} [{low:.2}, {high:.2}]", median(values))
            })
            .collect();
        println!("  {label:<62} {}", cells.join("  "));
    }
    println!("  (columns: no program, empty program, netflow, tcpdump)");
    for (placement, costs) in &cost {
        costs.report(*placement);
    }
    println!("per run through BPF_PROG_TEST_RUN (no network; mean of the kernel's timing):");
    let floor = per_run.first().map_or(0.0, |case| case.ns_per_run);
    for case in &per_run {
        println!(
            "  {:<48} {:>7.1} ns  body {:>7.1} ns",
            case.name,
            case.ns_per_run,
            case.ns_per_run - floor
        );
    }
    println!(
        "{}",
        if all_met {
            "all goals met"
        } else {
            "some goals not met (see above)"
        }
    );
    Ok(())
}

/// What runs beside the traffic in one mode; stopped on drop.
struct ModeGuard {
    /// The real agent (`netflow-agent record`), polling and removing idle
    /// connections as it would on a node.
    agent: Option<Child>,
    /// The empty program, attached in-process (detached on drop).
    floor: Option<Probe>,
    tcpdump: Option<(Child, PathBuf)>,
}

impl ModeGuard {
    fn start(mode: Mode, testbed: &Testbed, agent: &std::path::Path) -> anyhow::Result<Self> {
        let mut guard = Self {
            agent: None,
            floor: None,
            tcpdump: None,
        };
        match mode {
            Mode::Baseline => {}
            Mode::Floor => {
                let mut probe = Probe::load(64, DEFAULT_FOLD_INTERVAL)?;
                probe.load_floor()?;
                probe.attach_floor(testbed.cgroup_parent())?;
                guard.floor = Some(probe);
            }
            Mode::Netflow | Mode::NetflowWithoutHttp => {
                let http_heads = if mode == Mode::Netflow { "on" } else { "off" };
                let mut child = Command::new(agent)
                    .arg("record")
                    .arg("--cgroup")
                    .arg(testbed.cgroup_parent())
                    .args([
                        "--interval",
                        "1",
                        "--idle-timeout",
                        "2",
                        "--output",
                        "/dev/null",
                        "--http-heads",
                        http_heads,
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting netflow-agent record")?;
                let stderr = child.stderr.take().context("agent stderr")?;
                guard.agent = Some(child);
                wait_for_attach(stderr)?;
            }
            Mode::Tcpdump => {
                let capture = std::env::temp_dir().join("netflow-bench.pcap");
                let child = Command::new("ip")
                    .args(["netns", "exec", &testbed.netns_name(Host::B)])
                    // Headers only (-s 128): all a flow recorder needs from a capture.
                    .args(["tcpdump", "-q", "-n", "-s", "128", "-i", "any", "-w"])
                    .arg(&capture)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting tcpdump")?;
                guard.tcpdump = Some((child, capture));
                // tcpdump needs a moment to open its capture socket.
                thread::sleep(Duration::from_millis(700));
            }
        }
        Ok(guard)
    }
}

/// Reads the agent's log until it says it attached (it logs to stderr).
fn wait_for_attach(stderr: std::process::ChildStderr) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.context("reading the agent's log")?;
        if line.contains("attached") {
            // Keep draining so the agent never blocks on a full pipe.
            thread::spawn(move || lines.for_each(drop));
            return Ok(());
        }
        if line.contains("error") {
            bail!("netflow-agent record failed: {line}");
        }
    }
    bail!("netflow-agent record exited before attaching")
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        if let Some(agent) = &mut self.agent {
            // SIGTERM: the agent detaches and exits on its own.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
        }
        if let Some((child, capture)) = &mut self.tcpdump {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(capture);
        }
    }
}

/// Where the request/response client runs during the programs' cost rounds
/// (the server is pinned to the last CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Both processes on one CPU: every packet of a socket is handled there.
    ServerCpu,
    /// The client on another CPU: a socket's egress is counted on its own
    /// process's CPU, its ingress on the peer's.
    OtherCpu,
}

impl Placement {
    fn describe(self) -> &'static str {
        match self {
            Placement::ServerCpu => "client and server on one CPU",
            Placement::OtherCpu => "client and server on two CPUs",
        }
    }
}

/// Ns per run of each program, one value per round.
#[derive(Default)]
struct CostRounds {
    floor: Vec<f64>,
    egress: Vec<f64>,
    ingress: Vec<f64>,
    /// The same build with HTTP heads off (`--http-heads off`).
    egress_without_http: Vec<f64>,
    ingress_without_http: Vec<f64>,
}

impl CostRounds {
    /// Reads the run statistics of the programs `mode` loaded (while they
    /// are loaded: the counters go with them).
    fn add(&mut self, mode: Mode) {
        let per_run = |name: &str| {
            let (mut runs, mut nanos) = (0u64, 0u64);
            for info in aya::programs::loaded_programs().flatten() {
                if info.name_as_str() == Some(name) {
                    runs += info.run_count();
                    nanos += info.run_time().as_nanos() as u64;
                }
            }
            (runs > 0).then(|| nanos as f64 / runs as f64)
        };
        match mode {
            Mode::Floor => self.floor.extend(per_run(FLOOR_PROG)),
            Mode::Netflow => {
                self.egress.extend(per_run(EGRESS_PROG));
                self.ingress.extend(per_run(INGRESS_PROG));
            }
            Mode::NetflowWithoutHttp => {
                self.egress_without_http.extend(per_run(EGRESS_PROG));
                self.ingress_without_http.extend(per_run(INGRESS_PROG));
            }
            Mode::Baseline | Mode::Tcpdump => {}
        }
    }

    fn report(&self, placement: Placement) {
        if self.floor.is_empty() || self.egress.is_empty() {
            println!("program cost: the kernel's BPF statistics were not available");
            return;
        }
        println!(
            "program cost under request/response traffic, {}, ns per run (kernel.bpf_stats, {} rounds, empty, netflow and netflow with --http-heads off rotating): median [95% interval]",
            placement.describe(),
            self.floor.len()
        );
        let show = |label: &str, values: &[f64]| {
            let (low, high) = median_interval(values);
            println!(
                "  {label:<40} {:>7.1} [{low:.1}, {high:.1}]",
                median(values)
            );
        };
        show("empty program (the floor)", &self.floor);
        show("netflow egress", &self.egress);
        show("netflow ingress", &self.ingress);
        for (label, values) in [("egress", &self.egress), ("ingress", &self.ingress)] {
            // Paired by round: each round's netflow minus the same round's floor.
            let body: Vec<f64> = values.iter().zip(&self.floor).map(|(n, f)| n - f).collect();
            let (low, high) = median_interval(&body);
            let note = if high - low > median(&body).abs() {
                "  (the interval is wider than the effect: more rounds)"
            } else {
                ""
            };
            let label = format!("netflow {label} body (minus the floor)");
            println!(
                "  {label:<40} {:>7.1} [{low:.1}, {high:.1}]{note}",
                median(&body)
            );
        }
        // What reading HTTP heads costs this traffic (not HTTP): paired by
        // round, netflow minus the same build with the heads off.
        for (label, with, without) in [
            ("egress", &self.egress, &self.egress_without_http),
            ("ingress", &self.ingress, &self.ingress_without_http),
        ] {
            if without.is_empty() {
                continue;
            }
            let cost: Vec<f64> = with.iter().zip(without).map(|(w, o)| w - o).collect();
            let (low, high) = median_interval(&cost);
            let label = format!("HTTP heads' cost, {label}");
            println!("  {label:<40} {:>7.1} [{low:.1}, {high:.1}]", median(&cost));
        }
    }
}

/// Restricts this process (and the children it spawns next) to `cpus`.
fn pin_to(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it and
    // sched_setaffinity reads it. Failure only means more noise.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
