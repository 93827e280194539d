//! `record` (a flow log) and `run` (the audit daemon): both are the daemon's
//! one loop with different sinks.

use crate::{
    cli::RecordArgs,
    daemon::{self, InventoryOption, RecordOptions, StagedSource, StateOptions},
};

/// Where `run` serves health and metrics unless told: the pod port.
const DEFAULT_LISTEN: ([u8; 4], u16) = ([0, 0, 0, 0], 9090);
/// Where `run` serves the graph unless told: loopback inside the pod.
const DEFAULT_GRAPH_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9091);

pub fn record(args: RecordArgs) -> anyhow::Result<()> {
    Ok(daemon::run(&options(args))?)
}

/// `main` has refused a `run` without `--state-dir`.
pub fn run(mut args: RecordArgs) -> anyhow::Result<()> {
    args.listen.get_or_insert(DEFAULT_LISTEN.into());
    args.graph_listen.get_or_insert(DEFAULT_GRAPH_LISTEN.into());
    Ok(daemon::run(&options(args))?)
}

fn options(args: RecordArgs) -> RecordOptions {
    RecordOptions {
        cgroup: args.cgroup,
        duration: args.duration,
        interval: args.interval,
        output: match (&args.output, &args.state_dir) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(_)) => None,
            (None, None) => Some("-".into()),
        },
        flow_log_format: args.flow_log_format,
        flow_entries: args.flow_entries,
        idle_timeout: args.idle_timeout,
        http_heads: args.http_heads == crate::cli::OnOff::On,
        pin_maps: args.pin_maps,
        staged: args.staged.map(|source| {
            if source == std::path::Path::new("cluster") {
                StagedSource::Cluster {
                    kubeconfig: args.kubeconfig.clone(),
                }
            } else {
                StagedSource::Files(source)
            }
        }),
        state: args.state_dir.map(|dir| StateOptions {
            dir,
            inventory: match args.inventory {
                Some(path) => InventoryOption::File(path),
                None => InventoryOption::Cluster {
                    kubeconfig: args.kubeconfig,
                },
            },
            window: args.window,
            max_edges: usize::try_from(args.max_edges).unwrap_or(usize::MAX),
            max_edges_per_client: usize::try_from(args.max_edges_per_client).unwrap_or(usize::MAX),
            dns_servers: args.dns_servers,
            format: args.state_format,
        }),
        listen: args.listen,
        graph_listen: args.graph_listen,
    }
}
