use std::{net::SocketAddr, process::ExitCode};

use clap::Parser as _;
use netflow_agent::{
    bench,
    cli::{Cli, Command, GraphCommand, LabCommand, PeerAction, PeerArgs, PolicyCommand},
    graph::command as graph_command,
    lab, peer, policy, record, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A peer joins its cgroup and network namespace before anything else runs
    // (setns must happen while the process has a single thread).
    if let Command::Peer(args) = &cli.command {
        return report(run_peer(args));
    }
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Record(args) => record::run(&record_options(args)),
        Command::Run(mut args) => {
            if args.state_dir.is_none() {
                eprintln!("netflow-agent: error: run needs --state-dir");
                return ExitCode::from(2);
            }
            args.listen.get_or_insert(([0, 0, 0, 0], 9090).into());
            record::run(&record_options(args))
        }
        Command::Graph(GraphCommand::Build {
            flows,
            inventory,
            graph,
            output,
        }) => graph_command::build(&flows, &inventory, graph.as_deref(), &output),
        Command::Graph(GraphCommand::Pull(args)) => netflow_agent::graph::pull::pull(&args),
        Command::Graph(GraphCommand::Merge { inputs, output }) => {
            graph_command::merge(&inputs, &output)
        }
        Command::Graph(GraphCommand::Export {
            graph,
            format,
            output,
        }) => graph_command::export(&graph, format, output.as_deref()),
        Command::Graph(GraphCommand::Show { graph }) => graph_command::show(&graph),
        Command::Lab(LabCommand::Run { scenario, out }) => {
            lab::run::run(&scenario, &out).map(|_| ())
        }
        Command::Policy(PolicyCommand::Generate {
            graph,
            inventory,
            flavor,
            out,
            namespaces,
            include_system,
            min_connections,
            seen_after,
            ingress_only,
        }) => seen_after_seconds(seen_after.as_deref()).and_then(|seen_after| {
            policy::command::generate_to_dir(
                &graph,
                &inventory,
                &out,
                &policy::generate::GenerateOptions {
                    namespaces: namespaces.into_iter().collect(),
                    include_system,
                    min_connections,
                    seen_after,
                    ingress_only,
                },
                matches!(flavor, netflow_agent::cli::Flavor::Cilium),
            )
        }),
        Command::Policy(PolicyCommand::Verify {
            graph,
            policies,
            inventory,
            json,
        }) => policy::command::verify_command(&graph, &policies, &inventory, json),
        Command::Policy(PolicyCommand::Apply {
            dir,
            kubeconfig,
            dry_run,
            force,
        }) => policy::apply::apply(
            &dir,
            &policy::apply::ApplyOptions {
                kubeconfig,
                dry_run,
                force,
            },
        ),
        Command::Policy(PolicyCommand::Tests {
            graph,
            inventory,
            out,
        }) => policy::command::tests_command(&graph, &inventory, &out),
        Command::Policy(PolicyCommand::Plan { graph, policies }) => {
            netflow_agent::graph::CommGraph::load(&graph)
                .map_err(anyhow::Error::from)
                .map(|graph| {
                    print!(
                        "{}",
                        policy::plan::render(&policy::plan::plan(&graph), &policies)
                    )
                })
        }
        Command::Bench { seconds, rounds } => bench::run(seconds, rounds),
        Command::Peer(_) => unreachable!("handled above"),
    };
    report(result)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netflow-agent: error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

fn record_options(args: netflow_agent::cli::RecordArgs) -> record::RecordOptions {
    record::RecordOptions {
        cgroup: args.cgroup,
        duration: args.duration,
        interval: args.interval,
        output: match (&args.output, &args.state_dir) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(_)) => None,
            (None, None) => Some("-".into()),
        },
        flow_entries: args.flow_entries,
        idle_timeout: args.idle_timeout,
        state: args.state_dir.map(|dir| record::StateOptions {
            dir,
            inventory: match args.inventory {
                Some(path) => record::InventoryOption::File(path),
                None => record::InventoryOption::Cluster {
                    kubeconfig: args.kubeconfig,
                },
            },
            window: args.window,
            max_edges: usize::try_from(args.max_edges).unwrap_or(usize::MAX),
        }),
        listen: args.listen,
    }
}

/// `--seen-after` as Unix seconds (0 when absent).
fn seen_after_seconds(text: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = text else { return Ok(0) };
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|err| anyhow::anyhow!("--seen-after {text:?} is not an RFC 3339 time: {err}"))?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs()))
}

/// The error and its causes, each cause once: module errors already quote
/// their source in their message, and anyhow's chain would repeat it.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

fn run_peer(args: &PeerArgs) -> anyhow::Result<()> {
    peer::enter(args.cgroup.as_deref(), args.netns.as_deref())?;
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
            bytes,
            datagrams,
            count,
        } => {
            let resolved = match (resolve, dns, port) {
                (Some(name), Some(server), Some(port)) => Some(SocketAddr::new(
                    netflow_agent::dns::resolve(name, *server)?.into(),
                    *port,
                )),
                _ => None,
            };
            let (tcp, udp) = match resolved {
                Some(addr) if *resolved_udp => (None, Some(addr)),
                Some(addr) => (Some(addr), None),
                None => (*tcp, *udp),
            };
            let reports = match (tcp, udp) {
                (Some(addr), _) => peer::connect_tcp(addr, *bytes, *count)?,
                (None, Some(addr)) => peer::connect_udp(addr, *bytes, *datagrams, *count)?,
                (None, None) => anyhow::bail!("connect needs --tcp, --udp or --resolve"),
            };
            for report in reports {
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
