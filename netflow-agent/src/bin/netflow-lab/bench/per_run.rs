//! The programs' cost per run without a network: BPF_PROG_TEST_RUN runs one
//! program on one crafted packet `repeat` times and the kernel reports the
//! mean time per run. No scheduler, no softirq, no other traffic: the
//! numbers move little from run to run, unlike rates between namespaces.
//!
//! The kernel gives a test run a socket of its own that is never
//! ESTABLISHED, so these runs take the table path (what a connection's first
//! packets, UDP and socketless packets cost); the per-socket path of
//! established TCP is measured under real traffic (`CostRounds`).

use aya::programs::{TestRun, TestRunOptions};
use netflow_agent::{
    kernel::loader::{DEFAULT_FOLD_INTERVAL, Probe},
    testbed::packets::{frame, ipv4, ipv6, tcp, test_run_context, udp},
};
use netflow_common::{EGRESS_PROG, FLOOR_PROG, INGRESS_PROG};

use anyhow::{Context as _, ensure};

/// Runs of one packet for a mean.
const REPEAT: u32 = 200_000;
/// Distinct packets for the paths a repeated packet cannot take twice (a
/// new connection, a full table).
const DISTINCT: u16 = 20_000;

pub struct Case {
    pub name: &'static str,
    pub ns_per_run: f64,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ACK: u8 = 0x10;
const SYN: u8 = 0x02;

/// Mean ns per run of `program` on `ip_packet`, `repeat` times.
fn mean_ns(
    probe: &Probe,
    program: &'static str,
    ip_packet: &[u8],
    repeat: u32,
) -> anyhow::Result<f64> {
    let frame = frame(ip_packet);
    let context = test_run_context(0).context("a test run's context")?;
    let result = probe
        .program(program)?
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&context),
            repeat,
            ..TestRunOptions::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
    ensure!(result.return_value == 1, "{program} did not allow a packet");
    Ok(result.duration.as_nanos() as f64)
}

/// Mean ns of one run each over `DISTINCT` packets that differ in the
/// client port.
fn distinct_mean_ns(probe: &Probe, packet: impl Fn(u16) -> Vec<u8>) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for n in 0..DISTINCT {
        total += mean_ns(probe, INGRESS_PROG, &packet(20_000 + n), 1)?;
    }
    Ok(total / f64::from(DISTINCT))
}

pub fn measure() -> anyhow::Result<Vec<Case>> {
    let mut probe = Probe::load(65_536, DEFAULT_FOLD_INTERVAL)?;
    probe.load_floor()?;
    let established4 = ipv4(TCP, 0, &tcp(40_000, 8080, ACK, 64));
    let established6 = ipv6(TCP, &tcp(40_000, 8080, ACK, 64));
    let dns_response = ipv4(UDP, 0, &udp(53, 40_001, 96));
    // The first run makes the entry; the repeated ones find it.
    for packet in [&established4, &established6] {
        mean_ns(&probe, INGRESS_PROG, packet, 1)?;
    }
    let mut cases = vec![
        Case {
            name: "floor: an empty program (return 1)",
            ns_per_run: mean_ns(&probe, FLOOR_PROG, &established4, REPEAT)?,
        },
        Case {
            name: "IPv4 TCP, known connection, table path, ingress",
            ns_per_run: mean_ns(&probe, INGRESS_PROG, &established4, REPEAT)?,
        },
        Case {
            name: "IPv4 TCP, known connection, table path, egress",
            ns_per_run: mean_ns(&probe, EGRESS_PROG, &established4, REPEAT)?,
        },
        Case {
            name: "IPv6 TCP, known connection, table path, ingress",
            ns_per_run: mean_ns(&probe, INGRESS_PROG, &established6, REPEAT)?,
        },
        Case {
            name: "UDP DNS response (passed up to the agent)",
            ns_per_run: mean_ns(&probe, INGRESS_PROG, &dns_response, REPEAT)?,
        },
        Case {
            name: "IPv4 TCP SYN, new connection",
            ns_per_run: distinct_mean_ns(&probe, |port| ipv4(TCP, 0, &tcp(port, 8081, SYN, 0)))?,
        },
    ];
    // A table of 4 entries, full: every new connection takes the counted
    // overflow path.
    let full = Probe::load(4, DEFAULT_FOLD_INTERVAL)?;
    for port in 1..=4 {
        mean_ns(
            &full,
            INGRESS_PROG,
            &ipv4(TCP, 0, &tcp(port, 9000, SYN, 0)),
            1,
        )?;
    }
    cases.push(Case {
        name: "IPv4 TCP SYN, full table (overflow path)",
        ns_per_run: distinct_mean_ns(&full, |port| ipv4(TCP, 0, &tcp(port, 9001, SYN, 0)))?,
    });
    Ok(cases)
}
