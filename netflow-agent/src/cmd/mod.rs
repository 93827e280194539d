//! One small file per subcommand: each parses nothing (clap did), calls the
//! library and reports. `anyhow` lives here and in `main.rs` only.

mod flows;
mod graph;
mod policy;
mod record;

use anyhow::Context as _;

use crate::cli::{Command, FlowsCommand, GraphCommand, PolicyCommand};

/// Leaves `data` for the process's exit to take back, instead of freeing
/// it piece by piece: a one-shot command ends right after, and freeing a
/// million-peer policy set (an atomic count per selector it shares) took a
/// fifth of a second.
fn keep_until_exit<T>(data: T) {
    std::mem::forget(data);
}

/// Writes a command's result to stdout, buffered. A write that fails (a
/// closed pipe, as `| head` leaves; a full disk) is an error naming stdout,
/// where `print!` would panic.
fn to_stdout(
    content: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    content(&mut stdout)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// `beside` run on a thread of its own while `here` runs on this one: a
/// large file is read and parsed on one core, and the others would wait.
fn alongside<A: Send, B>(beside: impl FnOnce() -> A + Send, here: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|scope| {
        let beside = scope.spawn(beside);
        let here = here();
        let beside = beside
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (beside, here)
    })
}

/// Runs one command of the agent's command line.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Record(args) => record::record(args),
        Command::Run(args) => record::run(args),
        Command::Flows(FlowsCommand::Convert { inputs, to, output }) => {
            flows::convert(&inputs, to, &output)
        }
        Command::Graph(GraphCommand::Build {
            flows,
            inventory,
            graph,
            output,
            format,
        }) => graph::build::run(&flows, &inventory, graph.as_deref(), &output, format),
        Command::Graph(GraphCommand::Pull(args)) => graph::pull::run(&args),
        Command::Graph(GraphCommand::Merge {
            inputs,
            output,
            format,
        }) => graph::merge::run(&inputs, &output, format),
        Command::Graph(GraphCommand::Export {
            graph,
            format,
            output,
            inventory,
            policies,
        }) => graph::export::run(
            &graph,
            format,
            output.as_deref(),
            inventory.as_deref(),
            policies.as_deref(),
        ),
        Command::Graph(GraphCommand::Show { graph }) => graph::show::run(&graph),
        Command::Policy(PolicyCommand::Generate(args)) => policy::generate::run(args),
        Command::Policy(PolicyCommand::Verify {
            graph,
            policies,
            against_cluster: _,
            kubeconfig,
            inventory,
            json,
        }) => {
            let source = match policies {
                Some(path) => policy::verify::Source::Files(path),
                None => policy::verify::Source::Cluster(kubeconfig),
            };
            policy::verify::run(&graph, &source, &inventory, json)
        }
        Command::Policy(PolicyCommand::Apply {
            dir,
            kubeconfig,
            dry_run,
            force,
        }) => policy::apply::run(&dir, kubeconfig.as_deref(), dry_run, force),
        Command::Policy(PolicyCommand::Tests {
            graph,
            inventory,
            out,
        }) => policy::tests::run(&graph, &inventory, &out),
        Command::Policy(PolicyCommand::Plan {
            graph,
            policies,
            denials,
        }) => policy::plan::run(&graph, &policies, denials.as_deref()),
    }
}

/// The single-threaded runtime the cluster commands run their requests on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
