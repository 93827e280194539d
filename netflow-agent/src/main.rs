//! `netflow-agent`: parse, start logging, run the command, report.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _, error::ErrorKind};
use netflow_agent::{
    cli::{Cli, Command},
    cmd, telemetry,
};

/// mimalloc rather than glibc's malloc: the daemon reads an inventory and a
/// graph that interleave what it keeps with what it parses and drops, and
/// glibc could not hand the holes back (at 20 000 pods and no edges, 85 MB
/// resident against 61-63 MB); the commands that build and write large
/// policy sets allocate per edge and run faster with it (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = &cli.command
        && args.state_dir.is_none()
    {
        // A usage error, reported (exit 2) as clap reports its own.
        Cli::command()
            .error(ErrorKind::MissingRequiredArgument, "run needs --state-dir")
            .exit();
    }
    telemetry::init(cli.logging.log_format);
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Each error says its own part; `{:#}` joins the causes.
            eprintln!("netflow-agent: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
