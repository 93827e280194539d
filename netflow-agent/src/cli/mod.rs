//! The agent's command line: clap types only. `cmd` runs each command.

mod flows;
mod graph;
mod policy;
mod record;

use std::time::Duration;

use clap::{Parser, Subcommand};
pub use flows::FlowsCommand;
pub use graph::{ExportFormat, GraphCommand, PullArgs};
pub use policy::{ClusterBaselineArg, Flavor, GenerateArgs, L7Arg, PolicyCommand};
pub use record::{OnOff, RecordArgs};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "netflow-agent",
    version,
    about = "Record pod-to-pod flows with eBPF and turn them into network policies"
)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How the binaries log (`netflow-lab` shares it).
#[derive(Debug, clap::Args)]
pub struct LoggingArgs {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a cgroup and write a flow log (JSON lines or binary) of every connection.
    Record(RecordArgs),
    /// The audit daemon: record into --state-dir, naming workloads from the
    /// cluster (in-cluster or --kubeconfig) or a static --inventory; serve on
    /// --listen (default 0.0.0.0:9090), until SIGTERM.
    Run(RecordArgs),
    /// Work with flow logs: convert between JSON lines and binary.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Work with communication graph files: merge, export, show.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Network policies from the graph.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Bare numbers are seconds; otherwise humantime (`30s`, `5m`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds > 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
        return Err(format!("{text:?} is not a positive duration"));
    }
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(format!("{text:?} is not a positive duration")),
        Err(err) => Err(format!("{text:?}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
