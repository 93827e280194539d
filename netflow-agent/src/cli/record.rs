//! `record` and `run`.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::parse_duration;

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
    /// The flow log's format: JSON lines, or binary (the same records,
    /// several times cheaper for `graph build` to read; `flows convert`
    /// turns either into the other).
    #[arg(long, value_enum, default_value = "json")]
    pub flow_log_format: crate::model::FlowLogFormat,
    /// Keep the communication graph of the audit window in DIR/graph.json,
    /// saved when an interval changed it (a large graph at most a twentieth of the
    /// time, and at exit) and reloaded at start. Workloads are named from
    /// the cluster's API (in-cluster, or --kubeconfig) unless --inventory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How the graph is kept in --state-dir: `json` (DIR/graph.json) or
    /// `binary` (DIR/graph.bin: ~13 times smaller, several times cheaper to
    /// save; `graph export --format json` prints it). A state of the other
    /// format found there at start is read and replaced.
    #[arg(long, value_enum, default_value = "json", requires = "state_dir")]
    pub state_format: crate::graph::file::GraphFormat,
    /// A static cluster inventory (`kubectl get ... -A -o json`) instead of
    /// watching the cluster.
    #[arg(long, requires = "state_dir")]
    pub inventory: Option<PathBuf>,
    /// Watch the cluster of this kubeconfig (default: in-cluster, then
    /// ~/.kube/config): its inventory unless --inventory, and its staged
    /// policies with --staged cluster.
    #[arg(long, requires = "state_dir")]
    pub kubeconfig: Option<PathBuf>,
    /// The audit window: edges last seen longer ago leave the graph.
    #[arg(long, value_parser = parse_duration, default_value = "7d")]
    pub window: Duration,
    /// At most this many edges in the graph (memory stays bounded over the
    /// window): past it the least recently seen edges are dropped, and counted.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_edges: u64,
    /// At most this many edges per client workload, within --max-edges: a
    /// client spraying connections (a scan) loses its own oldest edges, not
    /// the rest of the cluster's; what it loses is counted and reported.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_edges_per_client: u64,
    /// Trust DNS answers from this server too (repeatable). The cluster's
    /// own are always trusted: the kube-dns Service and its pods, and
    /// NodeLocal DNSCache (169.254.20.10).
    #[arg(long = "dns-server")]
    pub dns_servers: Vec<std::net::IpAddr>,
    /// Serve /healthz, /readyz and /metrics on this address (no workload
    /// names: it may face the pod network).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve /graph (the node's topology) on this address, which must be
    /// a loopback one: `graph pull` reaches it through the API server's
    /// port-forward, so only who may port-forward into the agent's pods can
    /// read it. `run` serves it on 127.0.0.1:9091 unless told otherwise.
    #[arg(long)]
    pub graph_listen: Option<std::net::SocketAddr>,
    /// Connections the kernel table holds; more go through the overflow ring.
    #[arg(long, default_value_t = netflow_common::DEFAULT_FLOW_ENTRIES, value_parser = clap::value_parser!(u32).range(1..))]
    pub flow_entries: u32,
    /// A connection idle this long is reported as ended and removed from the table.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Read the method, path and Host of plaintext HTTP/1.x requests (the
    /// calls on each edge, for L7 policies). `off` looks at no payload:
    /// for clusters whose request paths carry what must not be recorded.
    #[arg(long, value_enum, default_value = "on")]
    pub http_heads: OnOff,
    /// Staged mode: judge every connection recorded against the policies in
    /// this directory (or file), or with `cluster` against the cluster's
    /// NetworkPolicies, CiliumNetworkPolicies and admin tiers labelled or
    /// annotated netflow.io/staged=true (listed every 30 s; the ClusterRole
    /// netflow-agent-staged grants it), with `policy verify`'s evaluator,
    /// without enforcing anything. What they would refuse is counted in /metrics
    /// (`netflow_staged_denied_total`, by client workload), logged once per
    /// edge per hour, and kept in the state directory (`/denials` on the
    /// graph port, merged by `graph pull --denials`).
    #[arg(long, requires = "state_dir")]
    pub staged: Option<PathBuf>,
    /// Pin the connection table, the sockets' counts and the drop counters
    /// below this bpffs directory (e.g. /sys/fs/bpf/netflow), so that a
    /// restarted agent takes them over: connections keep who opened them,
    /// and at most one interval is lost. The DaemonSet sets it.
    #[arg(long)]
    pub pin_maps: Option<PathBuf>,
}

/// A switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}
