//! `netflow-agent demo`: records real traffic between two network namespaces
//! through the real eBPF path and prints the connections it saw.

use std::{path::Path, thread, time::Duration};

use anyhow::Context as _;

use crate::{
    flowlog::{FlowLogWriter, FlowRecord},
    loader::Probe,
    reader::FlowReader,
    testbed::{Host, Testbed},
};

pub fn run(output: Option<&Path>) -> anyhow::Result<()> {
    let agent = std::env::current_exe().context("cannot find the netflow-agent binary")?;
    let mut testbed = Testbed::two_hosts("nfdemo")?;
    println!(
        "testbed: pod a = {} / {} (cgroup {}), pod b = {} / {} (cgroup {})",
        Host::A.ipv4(),
        Host::A.ipv6(),
        testbed.cgroup(Host::A).display(),
        Host::B.ipv4(),
        Host::B.ipv6(),
        testbed.cgroup(Host::B).display(),
    );

    let mut probe = Probe::load(1024)?;
    let maps = probe.take_maps()?;
    probe.attach(testbed.cgroup_parent())?;
    let mut reader = FlowReader::new(maps, Duration::from_secs(60));
    println!("attached netflow to {}", testbed.cgroup_parent().display());

    let v4 = |port: u16| format!("{}:{port}", Host::B.ipv4());
    let v6 = |port: u16| format!("[{}]:{port}", Host::B.ipv6());
    testbed.start_server(
        &agent,
        Host::B,
        &[
            "--tcp",
            &v4(8080),
            "--tcp",
            &v6(8080),
            "--udp",
            &v4(5353),
            "--udp",
            &v6(5353),
        ],
    )?;
    let traffic: [(&str, String, &[&str]); 4] = [
        (
            "3 TCP connections over IPv4, 1000 bytes each",
            v4(8080),
            &["--bytes", "1000", "--count", "3"],
        ),
        (
            "1 TCP connection over IPv6, 4000 bytes",
            v6(8080),
            &["--bytes", "4000"],
        ),
        (
            "UDP over IPv4, 5 datagrams of 200 bytes",
            v4(5353),
            &["--bytes", "200", "--datagrams", "5"],
        ),
        (
            "UDP over IPv6, 2 datagrams of 64 bytes",
            v6(5353),
            &["--bytes", "64", "--datagrams", "2"],
        ),
    ];
    for (what, target, extra) in &traffic {
        let protocol = if target.contains("5353") {
            "--udp"
        } else {
            "--tcp"
        };
        let mut args = vec!["connect", protocol, target.as_str()];
        args.extend_from_slice(extra);
        testbed.run_peer(&agent, Host::A, &args)?;
        println!("sent: pod a -> pod b, {what}");
    }
    // Let the last FIN/ACKs pass before the table is read.
    thread::sleep(Duration::from_millis(200));

    let interval = reader.poll()?;
    let names = [
        (testbed.cgroup_id(Host::A)?, "pod a"),
        (testbed.cgroup_id(Host::B)?, "pod b"),
    ];
    println!();
    print_table(&interval.flows, &names);
    let lost: u64 = interval.stats.drops.values().sum();
    println!(
        "\nkernel counters: {} connections in the table; packets not fully recorded: {lost} {:?}",
        interval.stats.table_entries, interval.stats.drops
    );
    if let Some(path) = output {
        let mut writer = FlowLogWriter::create(path)
            .with_context(|| format!("cannot create flow log {}", path.display()))?;
        writer
            .write_interval(&interval.flows, &interval.dns, &interval.stats)
            .with_context(|| format!("cannot write flow log {}", path.display()))?;
        println!("flow log written to {}", path.display());
    }
    drop(probe);
    drop(testbed);
    println!("detached and cleaned up");
    Ok(())
}

fn print_table(flows: &[FlowRecord], names: &[(u64, &str)]) {
    println!(
        "{:<6} {:<5} {:<28} {:<28} {:<7} {:>8} {:>9} {:>8} {:>9}",
        "cgroup",
        "proto",
        "local",
        "remote",
        "client",
        "pkts_in",
        "bytes_in",
        "pkts_out",
        "bytes_out"
    );
    for flow in flows {
        let who = names
            .iter()
            .find(|(id, _)| *id == flow.cgroup_id)
            .map(|(_, name)| *name)
            .unwrap_or("other");
        let endpoint = |ip: &std::net::IpAddr, port: u16| match ip {
            std::net::IpAddr::V6(_) => format!("[{ip}]:{port}"),
            std::net::IpAddr::V4(_) => format!("{ip}:{port}"),
        };
        println!(
            "{:<6} {:<5} {:<28} {:<28} {:<7} {:>8} {:>9} {:>8} {:>9}",
            who,
            flow.protocol.to_string(),
            endpoint(&flow.local.ip, flow.local.port),
            endpoint(&flow.remote.ip, flow.remote.port),
            flow.client.to_string(),
            flow.packets_in,
            flow.bytes_in,
            flow.packets_out,
            flow.bytes_out,
        );
    }
}
