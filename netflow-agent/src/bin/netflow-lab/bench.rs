//! `netflow-lab bench` (run by `cargo xtask bench`): what recording costs the
//! traffic it records.
//!
//! Between the two namespaces of a testbed, in one run, it measures TCP
//! request/response rate, new connections per second and stream throughput
//! with no program, with netflow attached, and with a libpcap capture
//! (`tcpdump -w`) running instead, and reports each as a ratio of the
//! no-program figure. The modes are interleaved round by round and the median
//! is taken, so slow drift of the machine hits every mode alike. It also reads
//! the programs' own cost per packet from the kernel's BPF statistics.

use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use netflow_common::{EGRESS_PROG, INGRESS_PROG};
use serde::Deserialize;

use netflow_agent::testbed::{Host, Testbed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Baseline,
    Netflow,
    Tcpdump,
}

const MODES: [Mode; 3] = [Mode::Baseline, Mode::Netflow, Mode::Tcpdump];
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

pub fn run(seconds: f64, rounds: usize) -> anyhow::Result<()> {
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
    for round in 0..rounds {
        for (workload_index, (workload, ..)) in WORKLOADS.iter().enumerate() {
            for step in 0..MODES.len() {
                let mode_index = (step + round) % MODES.len();
                pin_to(&all_cpus);
                let guard = ModeGuard::start(MODES[mode_index], &testbed, &agent)?;
                pin_to(&[client_cpu]);
                let report = run_workload(workload)?;
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

    // The programs' own cost, in a pass of its own: the kernel's run-time
    // statistics time every run, which would slow the measured passes.
    let mut program_cost = ProgramCost::default();
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(stats_fd) => {
            let guard = ModeGuard::start(Mode::Netflow, &testbed, &agent)?;
            for (workload, ..) in WORKLOADS {
                run_workload(workload)?;
            }
            program_cost.add_loaded();
            drop(guard);
            drop::<OwnedFd>(stats_fd);
        }
        Err(err) => eprintln!("kernel BPF statistics unavailable: {err}"),
    }

    println!(
        "netflow benchmark: {rounds} rounds of {seconds} s per workload and mode; medians of rates, medians of per-round ratios"
    );
    println!(
        "{:<62} {:>12} {:>12} {:>12} {:>9} {:>9}  goal",
        "workload", "no program", "netflow", "tcpdump", "netflow×", "tcpdump×"
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
        let (netflow_ratio, tcpdump_ratio) = (ratio(1), ratio(2));
        let met = netflow_ratio >= *goal && netflow_ratio > tcpdump_ratio;
        all_met &= met;
        println!(
            "{label:<62} {:>12.1} {:>12.1} {:>12.1} {netflow_ratio:>9.3} {tcpdump_ratio:>9.3}  ≥{goal} and > tcpdump: {}",
            medians[0],
            medians[1],
            medians[2],
            if met { "met" } else { "NOT met" }
        );
    }
    match program_cost.per_run_ns() {
        Some(ns) => println!(
            "netflow programs: {:.0} ns per packet on average ({} runs, from kernel.bpf_stats)",
            ns, program_cost.runs
        ),
        None => println!("netflow programs: the kernel's BPF statistics were not available"),
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
    tcpdump: Option<(Child, PathBuf)>,
}

impl ModeGuard {
    fn start(mode: Mode, testbed: &Testbed, agent: &std::path::Path) -> anyhow::Result<Self> {
        let mut guard = Self {
            agent: None,
            tcpdump: None,
        };
        match mode {
            Mode::Baseline => {}
            Mode::Netflow => {
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

#[derive(Default)]
struct ProgramCost {
    runs: u64,
    nanos: u64,
}

impl ProgramCost {
    /// Adds the run statistics of every loaded netflow program (the agent's).
    fn add_loaded(&mut self) {
        for info in aya::programs::loaded_programs().flatten() {
            let name = info.name_as_str().unwrap_or_default();
            if name == EGRESS_PROG || name == INGRESS_PROG {
                self.runs += info.run_count();
                self.nanos += info.run_time().as_nanos() as u64;
            }
        }
    }

    fn per_run_ns(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.nanos as f64 / self.runs as f64)
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

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
