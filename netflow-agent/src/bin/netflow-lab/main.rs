//! `netflow-lab`: the simulated cluster (`run`), the overhead benchmark
//! (`bench`), the long run under churn (`soak`) and the test peer that stands in for a pod's process (`peer`).
//! It drives the real `netflow-agent` built next to it; none of this is in
//! the DaemonSet's image.

mod bench;
mod cli;
mod http_peer;
mod lab;
mod peer;
mod proc_usage;
mod relay;
mod soak;
mod socket_lb;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use cli::{Cli, Command, PeerAction, PeerArgs};
use netflow_agent::{telemetry, testbed::dns_client};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A peer joins its cgroup and network namespace before anything else runs
    // (setns must happen while the process has a single thread).
    let result = match cli.command {
        Command::Peer(args) => run_peer(&args),
        command => {
            telemetry::init(cli.logging.log_format);
            match command {
                Command::Run {
                    scenario,
                    out,
                    agent_image,
                    kube_proxy,
                } => lab::run::run(&scenario, &out, agent_image.as_deref(), kube_proxy).map(|_| ()),
                Command::Bench {
                    seconds,
                    rounds,
                    scale,
                    records,
                    only,
                } => bench::run(&bench::Options {
                    seconds,
                    rounds,
                    scale,
                    records,
                    only,
                }),
                Command::Soak {
                    minutes,
                    workloads,
                    connections_per_pod,
                    parallel,
                } => soak::run(&soak::Options {
                    minutes,
                    workloads,
                    connections_per_pod,
                    parallel,
                }),
                Command::Peer(_) => unreachable!("matched above"),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netflow-lab: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `netflow-agent` binary the lab and the benchmark run: the one built
/// next to this binary.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let lab = std::env::current_exe().context("cannot find the netflow-lab binary")?;
    let agent = lab.with_file_name("netflow-agent");
    if !agent.is_file() {
        anyhow::bail!(
            "{} is missing: build it next to netflow-lab (cargo build -p netflow-agent --features lab)",
            agent.display()
        );
    }
    Ok(agent)
}

fn run_peer(args: &PeerArgs) -> anyhow::Result<()> {
    peer::enter(args.cgroup.as_deref(), args.netns.as_deref())?;
    let lb = match &args.socket_lb {
        Some(path) => socket_lb::SocketLb::load(path)?,
        None => socket_lb::SocketLb::default(),
    };
    match &args.action {
        PeerAction::Serve { tcp, udp, sink } => peer::serve(tcp, udp, sink)?,
        PeerAction::Exec { command } => {
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            anyhow::bail!("cannot run {}: {err}", command[0]);
        }
        PeerAction::Connect {
            tcp,
            udp,
            resolve,
            dns,
            port,
            resolved_udp,
            aaaa,
            bytes,
            payload_hex,
            datagrams,
            messages,
            spacing,
            hold,
            count,
            http,
            http_host,
            http_split_at,
        } => {
            let resolved = match (resolve, dns, port) {
                (Some(name), Some(server), Some(port)) => {
                    let server = lb.translate(*server, true);
                    let ip: std::net::IpAddr = if *aaaa {
                        dns_client::resolve_v6(name, server)?.into()
                    } else {
                        dns_client::resolve(name, server)?.into()
                    };
                    Some(SocketAddr::new(ip, *port))
                }
                _ => None,
            };
            let (tcp, udp) = match resolved {
                Some(addr) if *resolved_udp => (None, Some(addr)),
                Some(addr) => (Some(addr), None),
                None => (*tcp, *udp),
            };
            let tcp = tcp.map(|addr| lb.translate(addr, false));
            let udp = udp.map(|addr| lb.translate(addr, true));
            if let (Some(addr), false) = (tcp, http.is_empty()) {
                let host = http_host.clone().unwrap_or_else(|| addr.to_string());
                for _ in 0..*count {
                    let statuses = http_peer::requests(addr, &host, http, *http_split_at)
                        .with_context(|| format!("HTTP requests to {addr}"))?;
                    println!(
                        "{}",
                        serde_json::json!({"protocol": "tcp", "remote": addr, "http_statuses": statuses})
                    );
                }
                return Ok(());
            }
            let reports = match (tcp, udp) {
                (Some(addr), _) => peer::connect_tcp(
                    addr,
                    peer::TcpExchange {
                        bytes: *bytes,
                        payload: payload_hex.as_ref().map(|hex| hex.0.clone()),
                        messages: *messages,
                        spacing: spacing.unwrap_or_default(),
                        hold: hold.unwrap_or_default(),
                    },
                    *count,
                )?,
                (None, Some(addr)) => peer::connect_udp(addr, *bytes, *datagrams, *count)?,
                (None, None) => anyhow::bail!("connect needs --tcp, --udp or --resolve"),
            };
            for report in reports {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        PeerAction::ForgeDns { to, name, ip } => {
            peer::forge_dns(lb.translate(*to, true), name, *ip)?;
        }
        PeerAction::Relay {
            forwards,
            mark,
            hold,
        } => {
            // A fixed target is connected to as any client connects.
            let forwards: Vec<relay::Forward> = forwards
                .iter()
                .map(|forward| match forward.target {
                    relay::Target::Fixed(address) => relay::Forward {
                        listen: forward.listen,
                        target: relay::Target::Fixed(lb.translate(address, false)),
                    },
                    _ => forward.clone(),
                })
                .collect();
            let hold: Vec<SocketAddr> = hold.iter().map(|a| lb.translate(*a, false)).collect();
            relay::run(&forwards, &hold, *mark)?;
        }
        PeerAction::Probe { tcp, udp, timeout } => {
            let route = |addr, udp| lb.translate(addr, udp);
            for report in peer::probe(tcp, udp, *timeout, &route) {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        PeerAction::Bench { mode, to, duration } => {
            println!(
                "{}",
                serde_json::to_string(&peer::bench(*mode, *to, *duration)?)?
            );
        }
    }
    Ok(())
}
