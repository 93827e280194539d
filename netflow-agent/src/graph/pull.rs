//! `netflow-agent graph pull`: the cluster's graph, from every node's agent.
//!
//! The agent pods are found through the API server, and each one's `/graph`
//! is fetched through the API server's pod proxy
//! (`/api/v1/namespaces/NS/pods/NAME:PORT/proxy/graph`): no extra network
//! path into the cluster, no aggregator of our own. The graphs are merged;
//! a node that does not answer is named, and without `--allow-missing` no
//! file is written (a map with a node missing would look complete).

use std::{
    io::{IsTerminal as _, Write as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use super::CommGraph;

use crate::cli::PullArgs;

/// One agent's answer.
struct Pulled {
    pod: String,
    node: String,
    graph: Result<CommGraph, String>,
}

pub fn pull(options: &PullArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime()?;
    runtime.block_on(pull_async(options))
}

async fn pull_async(options: &PullArgs) -> anyhow::Result<()> {
    let client =
        crate::inventory::live::client_without_retries(options.kubeconfig.as_deref()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &options.namespace);
    let list = pods
        .list(&ListParams::default().labels(&options.selector))
        .await
        .with_context(|| {
            format!(
                "cannot list the agent pods ({}) in namespace {}",
                options.selector, options.namespace
            )
        })?;
    let agents: Vec<(String, String)> = list
        .items
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let node = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .unwrap_or_else(|| "(unscheduled)".into());
            Some((name, node))
        })
        .collect();
    if agents.is_empty() {
        bail!(
            "no agent pods match {} in namespace {}: is netflow deployed (kubectl apply -k deploy/)?",
            options.selector,
            options.namespace
        );
    }
    let progress = Progress::new(agents.len());
    let mut answers = futures::stream::iter(agents.into_iter().map(|(pod, node)| {
        let client = client.clone();
        async move {
            let graph = tokio::time::timeout(
                options.timeout,
                fetch(&client, &options.namespace, &pod, options.port),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", options.timeout)));
            Pulled { pod, node, graph }
        }
    }))
    .buffer_unordered(8);

    let mut merged = CommGraph::new();
    let (mut answered, mut missing) = (Vec::new(), Vec::new());
    while let Some(pulled) = answers.next().await {
        match pulled.graph {
            Ok(graph) => {
                progress.step(&pulled.node, &format!("{} edges", graph.edge_count()));
                merged.merge(&graph);
                answered.push(pulled.node);
            }
            Err(err) => {
                progress.step(&pulled.node, &format!("did not answer: {err}"));
                missing.push(format!("{} (pod {}): {err}", pulled.node, pulled.pod));
            }
        }
    }
    progress.finish();
    missing.sort();
    for line in &missing {
        eprintln!("netflow-agent: node did not answer: {line}");
    }
    if !missing.is_empty() && !options.allow_missing {
        bail!(
            "{} of {} nodes did not answer; nothing written (--allow-missing writes the graph of the {} that did)",
            missing.len(),
            missing.len() + answered.len(),
            answered.len()
        );
    }
    if answered.is_empty() {
        bail!("no node answered; nothing written");
    }
    merged.save(&options.output)?;
    eprintln!(
        "{}: {} endpoints, {} edges from {} of {} nodes",
        options.output.display(),
        merged.node_count(),
        merged.edge_count(),
        answered.len(),
        answered.len() + missing.len()
    );
    Ok(())
}

/// GET `/graph` of one agent pod through the API server's pod proxy.
async fn fetch(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<CommGraph, String> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/graph");
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|err| err.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|err| crate::inventory::live::describe(&err))?;
    CommGraph::parse(&text, Path::new(&path)).map_err(|err| err.to_string())
}

/// "[3/10] node-a: 42 edges" on a terminal; quiet otherwise (the summary
/// and the missing nodes are always printed).
struct Progress {
    total: usize,
    done: std::cell::Cell<usize>,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: std::cell::Cell::new(0),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn step(&self, node: &str, what: &str) {
        self.done.set(self.done.get() + 1);
        if self.terminal {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[K[{}/{}] {node}: {what}",
                self.done.get(),
                self.total
            );
            let _ = err.flush();
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
