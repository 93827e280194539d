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

/// No transparent huge pages for this process. A 2 MiB page stays resident
/// while any object in it lives, and is zeroed whole when first touched:
/// netflow's heaps are many small objects, kept among many dropped. The
/// daemon at 20 000 pods and 100 000 edges held 114-122 MB with them and
/// 98 MB without; `policy verify` at 1 M edges spent 3.7-3.9 s of system
/// time with them and 1.3-1.6 s without, and took 11.9-12.0 s instead of
/// 12.1-14.2 s (docs/performance.md).
fn without_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes no pointers; it only
    // changes how this process's later page faults are served. Where it
    // fails (an old kernel), huge pages stay as the system has them.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> ExitCode {
    without_huge_pages();
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
