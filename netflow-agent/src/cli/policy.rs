//! `policy generate|plan|tests|apply|verify`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Generate the smallest allow set that covers every observed edge.
    Generate(GenerateArgs),
    /// The rollout order: audit, a pilot namespace, staging, the rest, cluster-wide.
    Plan {
        #[arg(long)]
        graph: PathBuf,
        /// Where the generated policies are (for the printed commands).
        #[arg(long, default_value = "policies")]
        policies: String,
        /// Staged denials (`graph pull --denials`): each step lists the
        /// edges its namespaces' policies would break.
        #[arg(long)]
        denials: Option<PathBuf>,
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
        #[arg(
            long,
            required_unless_present = "against_cluster",
            conflicts_with = "against_cluster"
        )]
        policies: Option<PathBuf>,
        /// Instead of files: the policies the cluster has now (NetworkPolicies,
        /// and CiliumNetworkPolicies and the cluster-wide tiers where their
        /// CRDs are installed), read through the API.
        #[arg(long)]
        against_cluster: bool,
        /// With --against-cluster. Default: in-cluster, then ~/.kube/config.
        #[arg(long, requires = "against_cluster")]
        kubeconfig: Option<PathBuf>,
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

/// `policy generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub graph: PathBuf,
    #[arg(long)]
    pub inventory: PathBuf,
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub flavor: Flavor,
    /// Output directory: NAMESPACE.yaml per namespace, findings.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these namespaces (repeatable). Default: every namespace in the graph.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Also write policies for kube-system, kube-public, kube-node-lease and netflow.
    #[arg(long)]
    pub include_system: bool,
    /// Ignore edges seen fewer times than this.
    #[arg(long, default_value_t = 1)]
    pub min_connections: u64,
    /// Ignore edges last seen before this time (RFC 3339).
    #[arg(long)]
    pub seen_after: Option<String>,
    /// Ingress allows only (and an ingress-only default-deny).
    #[arg(long)]
    pub ingress_only: bool,
    /// Also allow UDP edges that never saw a reply (fire-and-forget such as
    /// statsd or syslog). Without it only answered traffic is allowed.
    #[arg(long)]
    pub allow_one_way_udp: bool,
    /// Write the default-deny, the DNS allow and the metadata deny as the
    /// cluster admin's tiers (network-policy-api), which namespace owners
    /// cannot edit away: `cnp` (ClusterNetworkPolicy v1alpha2), `anp`
    /// (AdminNetworkPolicy and BaselineAdminNetworkPolicy v1alpha1), or
    /// `none` (each namespace carries its own).
    #[arg(long, value_enum, default_value = "none")]
    pub cluster_baseline: ClusterBaselineArg,
    /// `http`: on ports whose every connection was plaintext HTTP, allow
    /// only the calls seen (Cilium's `toPorts[].rules.http`: method and
    /// path template); other ports keep L4 rules. Needs --flavor cilium.
    #[arg(long, value_enum, default_value = "none")]
    pub l7: L7Arg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum L7Arg {
    None,
    Http,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ClusterBaselineArg {
    None,
    Cnp,
    Anp,
}
