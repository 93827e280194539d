//! CPU time rather than rate: where rates are noisy, the kernel's CPU time
//! (system, irq and softirq: the network stack, the programs, a capture)
//! per million packets through the testbed's link says what a mode costs.

use std::process::Command;

use anyhow::{Context as _, bail};

/// System + irq + softirq time of all CPUs so far, in seconds.
fn kernel_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    // cpu user nice system idle iowait irq softirq ...
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    if fields.len() < 7 {
        bail!("/proc/stat's cpu line is short: {line}");
    }
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((fields[2] + fields[5] + fields[6]) as f64 / ticks)
}

/// Packets received and sent by `interface` in network namespace `netns`.
fn link_packets(netns: &str, interface: &str) -> anyhow::Result<u64> {
    let output = Command::new("ip")
        .args(["-n", netns, "-s", "-j", "link", "show", interface])
        .output()
        .context("running ip -s link")?;
    let links: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading ip -j output")?;
    let stats = &links[0]["stats64"];
    match (
        stats["rx"]["packets"].as_u64(),
        stats["tx"]["packets"].as_u64(),
    ) {
        (Some(rx), Some(tx)) => Ok(rx + tx),
        _ => bail!("no packet counters for {interface} in {netns}"),
    }
}

/// A reading taken before a measured pass.
pub struct Meter {
    netns: String,
    interface: String,
    cpu: f64,
    packets: u64,
}

impl Meter {
    pub fn start(netns: &str, interface: &str) -> anyhow::Result<Self> {
        Ok(Self {
            netns: netns.into(),
            interface: interface.into(),
            cpu: kernel_cpu_seconds()?,
            packets: link_packets(netns, interface)?,
        })
    }

    /// Kernel CPU seconds per million packets since [`Meter::start`].
    pub fn per_million_packets(&self) -> anyhow::Result<f64> {
        let cpu = kernel_cpu_seconds()? - self.cpu;
        let packets = link_packets(&self.netns, &self.interface)? - self.packets;
        if packets == 0 {
            bail!("no packets went through {}", self.interface);
        }
        Ok(cpu / packets as f64 * 1e6)
    }
}
