//! Command-line interface.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{peer::BenchMode, telemetry::LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "netflow-agent",
    version,
    about = "Record pod-to-pod flows with eBPF and turn them into network policies"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a cgroup and write a flow log (JSON lines) of every connection.
    Record(RecordArgs),
    /// The audit daemon: record into --state-dir, naming workloads from the
    /// cluster (in-cluster or --kubeconfig) or a static --inventory; serve on
    /// --listen (default 0.0.0.0:9090), until SIGTERM.
    Run(RecordArgs),
    /// Work with communication graph files: merge, export, show.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Network policies from the graph.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The lab: a simulated cluster on this machine, recorded for real.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Measure what recording costs traffic (run by `cargo xtask bench`).
    Bench {
        /// Seconds per workload, mode and round.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Rounds; each mode runs once per round, interleaved.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Test peer: a stand-in for a pod process (used by tests, the lab and the benchmark).
    #[command(hide = true)]
    Peer(PeerArgs),
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Cgroup v2 directory to attach to (absolute, or relative to the cgroup v2 mount).
    /// Default: the root of the hierarchy, i.e. every process on the host.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Stop after this long (`90`, `30s`, `2h`). Default: until SIGINT or SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often the connection table is read and the flow log written.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub interval: Duration,
    /// Flow log path, `-` for stdout. Default: stdout, or none with --state-dir.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Keep the communication graph of the audit window in DIR/graph.json,
    /// saved every interval and reloaded at start. Workloads are named from
    /// the cluster's API (in-cluster, or --kubeconfig) unless --inventory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A static cluster inventory (`kubectl get ... -A -o json`) instead of
    /// watching the cluster.
    #[arg(long, requires = "state_dir", conflicts_with = "kubeconfig")]
    pub inventory: Option<PathBuf>,
    /// Watch the cluster of this kubeconfig (default: in-cluster, then
    /// ~/.kube/config).
    #[arg(long, requires = "state_dir")]
    pub kubeconfig: Option<PathBuf>,
    /// The audit window: edges last seen longer ago leave the graph.
    #[arg(long, value_parser = parse_duration, default_value = "7d")]
    pub window: Duration,
    /// At most this many edges in the graph (memory stays bounded over the
    /// window): past it the least recently seen edges are dropped, and counted.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_edges: u64,
    /// Serve /healthz, /readyz, /metrics and /graph on this address.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Connections the kernel table holds; more go through the overflow ring.
    #[arg(long, default_value_t = netflow_common::DEFAULT_FLOW_ENTRIES, value_parser = clap::value_parser!(u32).range(1..))]
    pub flow_entries: u32,
    /// A connection idle this long is reported as ended and removed from the table.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Generate the smallest allow set that covers every observed edge.
    Generate {
        #[arg(long)]
        graph: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long, value_enum, default_value = "kubernetes")]
        flavor: Flavor,
        /// Output directory: NAMESPACE.yaml per namespace, findings.json.
        #[arg(long)]
        out: PathBuf,
        /// Only these namespaces (repeatable). Default: every namespace in the graph.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Also write policies for kube-system, kube-public, kube-node-lease and netflow.
        #[arg(long)]
        include_system: bool,
        /// Ignore edges seen fewer times than this.
        #[arg(long, default_value_t = 1)]
        min_connections: u64,
        /// Ignore edges last seen before this time (RFC 3339).
        #[arg(long)]
        seen_after: Option<String>,
        /// Ingress allows only (and an ingress-only default-deny).
        #[arg(long)]
        ingress_only: bool,
    },
    /// The rollout order: audit, a pilot namespace, staging, the rest, cluster-wide.
    Plan {
        #[arg(long)]
        graph: PathBuf,
        /// Where the generated policies are (for the printed commands).
        #[arg(long, default_value = "policies")]
        policies: String,
    },
    /// Write netassert (v2) tests: observed edges connect; unobserved pairs,
    /// other ports and the metadata service do not.
    Tests {
        #[arg(long)]
        graph: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Server-side apply the policies of DIR (field manager netflow).
    Apply {
        /// A directory of policy YAML files (as `generate` wrote), or one file.
        dir: PathBuf,
        /// Default: in-cluster, then ~/.kube/config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Let the API server check everything, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Take over fields another field manager owns (a hand edit).
        #[arg(long)]
        force: bool,
    },
    /// Replay every edge of the graph against policies: exit 0 only when all are allowed.
    Verify {
        #[arg(long)]
        graph: PathBuf,
        /// A directory of policy YAML files, or one file.
        #[arg(long)]
        policies: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Flavor {
    /// networking.k8s.io/v1 NetworkPolicy.
    Kubernetes,
    /// cilium.io/v2 CiliumNetworkPolicy (with toFQDNs for named externals).
    Cilium,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the scenario's cluster, run its traffic while recording, and
    /// write graph.json, inventory.json and flows.jsonl to --out.
    Run {
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Build (or extend) a graph from flow logs and an inventory.
    Build {
        /// Flow logs written by `record`.
        #[arg(long = "flows", required = true)]
        flows: Vec<PathBuf>,
        /// The cluster inventory (`kubectl get ... -A -o json`).
        #[arg(long)]
        inventory: PathBuf,
        /// An existing graph to extend (e.g. the week so far).
        #[arg(long)]
        graph: Option<PathBuf>,
        /// Output graph file (written atomically).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Fetch every node's graph from its agent (through the API server's pod
    /// proxy) and merge them into one cluster graph.
    Pull(PullArgs),
    /// Merge graphs of several nodes or weeks into one.
    Merge {
        /// Input graph files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output graph file (written atomically).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Print a graph as JSON, Graphviz DOT or Mermaid.
    Export {
        #[arg(long)]
        graph: PathBuf,
        #[arg(long, value_enum, default_value = "json")]
        format: crate::graph::export::Format,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the edges as a table, by namespace, with rare edges marked.
    Show {
        #[arg(long)]
        graph: PathBuf,
    },
}

/// `graph pull`.
#[derive(Clone, Debug, Args)]
pub struct PullArgs {
    /// Default: in-cluster, then ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the agent DaemonSet.
    #[arg(long, default_value = "netflow")]
    pub namespace: String,
    /// Label selector of the agent pods.
    #[arg(long, default_value = "app.kubernetes.io/name=netflow-agent")]
    pub selector: String,
    /// The agents' HTTP port.
    #[arg(long, default_value_t = 9090)]
    pub port: u16,
    /// Output graph file (written atomically).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Write the graph of the nodes that answered even when some did not.
    #[arg(long)]
    pub allow_missing: bool,
    /// How long one agent may take to answer.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Join this cgroup (a directory in the cgroup v2 tree) first.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Then enter this network namespace (e.g. /run/netns/NAME).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    #[command(subcommand)]
    pub action: PeerAction,
}

#[derive(Debug, Subcommand)]
pub enum PeerAction {
    /// Echo servers; prints `ready` once listening.
    Serve {
        #[arg(long)]
        tcp: Vec<SocketAddr>,
        #[arg(long)]
        udp: Vec<SocketAddr>,
        /// TCP servers that read and discard (for throughput).
        #[arg(long)]
        sink: Vec<SocketAddr>,
    },
    /// Replace this process with COMMAND (after joining cgroup and namespace).
    Exec {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Connect, send, read the echo; one JSON line per connection.
    Connect {
        #[arg(long, conflicts_with = "udp", required_unless_present_any = ["udp", "resolve"])]
        tcp: Option<SocketAddr>,
        #[arg(long)]
        udp: Option<SocketAddr>,
        /// Resolve this name through --dns first and connect to its address.
        #[arg(long, requires_all = ["dns", "port"])]
        resolve: Option<String>,
        /// DNS server for --resolve.
        #[arg(long)]
        dns: Option<SocketAddr>,
        /// Port for --resolve.
        #[arg(long)]
        port: Option<u16>,
        /// With --resolve: use UDP instead of TCP.
        #[arg(long)]
        resolved_udp: bool,
        /// Payload bytes per TCP connection, or per UDP datagram.
        #[arg(long, default_value_t = 100)]
        bytes: usize,
        /// Datagrams per UDP socket.
        #[arg(long, default_value_t = 1)]
        datagrams: usize,
        /// Connections (TCP) or sockets (UDP) to open, one after the other.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Benchmark client; prints one JSON line.
    Bench {
        #[arg(value_enum)]
        mode: BenchMode,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        duration: Duration,
    },
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
