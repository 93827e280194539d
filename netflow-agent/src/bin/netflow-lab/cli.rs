//! `netflow-lab`'s command line: the lab, the benchmark and the test peer.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use netflow_agent::cli::{LoggingArgs, parse_duration};

use crate::peer::BenchMode;

#[derive(Debug, Parser)]
#[command(
    name = "netflow-lab",
    version,
    about = "A simulated Kubernetes cluster on this machine, recorded by netflow-agent for real"
)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the scenario's cluster, run its traffic while one
    /// `netflow-agent run` per node records it, and write graph.json,
    /// inventory.json, flows.jsonl and policies/ to --out.
    Run {
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Run each node's agent from this OCI image archive (`cargo xtask
        /// image`) under a containerd of the lab's own, with the DaemonSet's
        /// security context, instead of as a process.
        #[arg(long)]
        agent_image: Option<PathBuf>,
        /// Route Services in this mode instead of the scenario's `kubeProxy`.
        #[arg(long, value_enum)]
        kube_proxy: Option<netflow_agent::testbed::scenario::KubeProxy>,
    },
    /// Measure what recording costs traffic (run by `cargo xtask bench`).
    Bench {
        /// Seconds per workload, mode and round.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Rounds; each mode runs once per round, interleaved.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Synthetic cluster sizes for the userspace part, WORKLOADS:EDGES.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100:1000,1000:10000,10000:100000,10000:1000000"
        )]
        scale: Vec<crate::bench::scale::Size>,
        /// Flow records per graph build (at least one per edge).
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Run only this part.
        #[arg(long, value_enum)]
        only: Option<crate::bench::Part>,
    },
    /// A long run under steady new connections and pod churn (run by
    /// `cargo xtask soak`): the agent's memory, CPU, table and polls every
    /// minute; fails on memory growth or a connection missing from the graph.
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Client workloads whose pods take turns.
        #[arg(long, default_value_t = 50)]
        workloads: usize,
        /// Connections each pod makes before it ends.
        #[arg(long, default_value_t = 20)]
        connections_per_pod: u64,
        /// Pods running at once.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
    },
    /// Test peer: a stand-in for a pod process (used by tests, the lab and the benchmark).
    #[command(hide = true)]
    Peer(PeerArgs),
}

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Join this cgroup (a directory in the cgroup v2 tree) first.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Then enter this network namespace (e.g. /run/netns/NAME).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Connect to Services as socket-level load balancing does: each
    /// ClusterIP address in this table (`socket-lb.json`, written by the
    /// lab) is replaced by a backend's before the socket connects.
    #[arg(long)]
    pub socket_lb: Option<PathBuf>,
    #[command(subcommand)]
    pub action: PeerAction,
}

// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
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
        /// With --resolve: ask for the IPv6 address (AAAA).
        #[arg(long)]
        aaaa: bool,
        /// Payload bytes per TCP connection, or per UDP datagram.
        #[arg(long, default_value_t = 100)]
        bytes: usize,
        /// TCP: each message carries these bytes (hex) instead of --bytes
        /// of a letter pattern.
        #[arg(long, value_parser = parse_hex)]
        payload_hex: Option<HexBytes>,
        /// Datagrams per UDP socket.
        #[arg(long, default_value_t = 1)]
        datagrams: usize,
        /// TCP: messages per connection, each echoed before the next.
        #[arg(long, default_value_t = 1)]
        messages: usize,
        /// TCP: pause between two messages (none by default).
        #[arg(long, value_parser = parse_duration)]
        spacing: Option<Duration>,
        /// TCP: keep each connection open this long after its last echo
        /// (closed at once by default).
        #[arg(long, value_parser = parse_duration)]
        hold: Option<Duration>,
        /// Connections (TCP) or sockets (UDP) to open, one after the other.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// TCP: instead of the echo exchange, make these HTTP/1.1 requests
        /// (`METHOD PATH`, repeatable) in turn on each connection.
        #[arg(long, value_name = "METHOD PATH")]
        http: Vec<crate::http_peer::Request>,
        /// The requests' Host header (default: the address).
        #[arg(long, requires = "http")]
        http_host: Option<String>,
        /// Send each request's first N bytes in a segment of their own.
        #[arg(long, requires = "http")]
        http_split_at: Option<usize>,
    },
    /// TCP relays, as an ingress controller or a mesh sidecar runs them;
    /// prints `ready` once listening.
    Relay {
        /// `LISTEN=TARGET`: TARGET is ADDR:PORT, `original` (where a
        /// redirected connection was going) or `original-port@IP`.
        #[arg(long = "forward", required = true)]
        forwards: Vec<crate::relay::Forward>,
        /// Mark the relay's own connections (SO_MARK), for redirect rules
        /// to let them pass.
        #[arg(long)]
        mark: Option<u32>,
        /// Connect to this address at start and hold the connection open
        /// (a proxy's stream to its control plane); repeatable.
        #[arg(long)]
        hold: Vec<SocketAddr>,
    },
    /// Try each destination once, as a scan does; one JSON line per
    /// destination, whether it connected or not.
    Probe {
        #[arg(long)]
        tcp: Vec<SocketAddr>,
        #[arg(long)]
        udp: Vec<SocketAddr>,
        /// How long each try may take.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        timeout: Duration,
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
    /// Send a forged DNS answer (NAME is IP) from UDP port 53 to --to,
    /// which never asked: what an attacker's pod can do.
    ForgeDns {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        ip: std::net::Ipv4Addr,
    },
}

/// Bytes given as hex digits.
#[derive(Clone, Debug)]
pub struct HexBytes(pub Vec<u8>);

fn parse_hex(text: &str) -> Result<HexBytes, String> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return Err("an even number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|err| err.to_string()))
        .collect::<Result<Vec<u8>, String>>()
        .map(HexBytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
