//! `graph build|pull|merge|export|show`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand};

use super::parse_duration;
use crate::graph::file::GraphFormat;

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Build (or extend) a graph from flow logs and an inventory.
    Build {
        /// Flow logs written by `record` (JSON lines or binary).
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
        /// How to store the output graph: `binary` is compact and fast to
        /// read and write (`graph export --format json` prints it as JSON).
        #[arg(long, value_enum, default_value = "json")]
        format: GraphFormat,
    },
    /// Fetch every node's graph from its agent (through the API server's
    /// port-forward to the agent's loopback) and merge them into one cluster
    /// graph.
    Pull(PullArgs),
    /// Merge graphs of several nodes or weeks into one.
    Merge {
        /// Input graph files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output graph file (written atomically).
        #[arg(long, short)]
        output: PathBuf,
        /// How to store the output graph: `binary` is compact and fast to
        /// read and write (`graph export --format json` prints it as JSON).
        #[arg(long, value_enum, default_value = "json")]
        format: GraphFormat,
    },
    /// Print a graph as JSON, Graphviz DOT or Mermaid.
    Export {
        #[arg(long)]
        graph: PathBuf,
        /// `html`: one self-contained page (the picture and the lists;
        /// nothing fetched when opened).
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// html: replicas per workload, and with --policies the review.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// html: judge every edge against these policies (a directory or a
        /// file): what allows it or why it is blocked, the blast radius and
        /// the rollout plan. Needs --inventory.
        #[arg(long, requires = "inventory")]
        policies: Option<PathBuf>,
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
    /// The agents' graph port, on their loopback (`run --graph-listen`),
    /// reached through the API server's port-forward.
    #[arg(long, default_value_t = 9091)]
    pub port: u16,
    /// Output graph file (written atomically).
    #[arg(long, short)]
    pub output: PathBuf,
    /// How to store the output graph (see `graph build --format`).
    #[arg(long, value_enum, default_value = "json")]
    pub format: GraphFormat,
    /// Write the graph of the nodes that answered even when some did not.
    #[arg(long)]
    pub allow_missing: bool,
    /// How long one agent may take to answer.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Also fetch each agent's staged denials (`run --staged`: the edges
    /// the staged policies would refuse) and write them merged to this
    /// file; agents not in staged mode are skipped.
    #[arg(long)]
    pub denials: Option<PathBuf>,
}

/// `graph export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Json,
    Dot,
    Mermaid,
    Html,
}
