//! `graph pull`: every node's graph from its agent, merged. A node that does
//! not answer is named, and without `--allow-missing` no file is written (a
//! map with a node missing would look complete).

use std::io::{IsTerminal as _, Write as _};

use anyhow::bail;
use futures::StreamExt as _;

use crate::{
    cli::PullArgs,
    graph::{
        CommGraph,
        pull::{Agent, agents, fetch},
    },
};

pub fn run(args: &PullArgs) -> anyhow::Result<()> {
    crate::cmd::runtime()?.block_on(pull(args))
}

async fn pull(args: &PullArgs) -> anyhow::Result<()> {
    // No retries: a failed port-forward means "that pod does not answer".
    let client = crate::kube::client_without_retries(args.kubeconfig.as_deref()).await?;
    let agents = agents(&client, &args.namespace, &args.selector).await?;
    let progress = Progress::new(agents.len());
    let mut answers = futures::stream::iter(agents.into_iter().map(|agent| {
        let client = client.clone();
        async move {
            let graph = tokio::time::timeout(
                args.timeout,
                fetch(&client, &args.namespace, &agent.pod, args.port),
            )
            .await
            .map_err(|_| format!("no answer within {:?}", args.timeout))
            .and_then(|fetched| fetched.map_err(|err| err.to_string()));
            (agent, graph)
        }
    }))
    .buffer_unordered(8);

    let mut merged = CommGraph::new();
    let (mut answered, mut missing) = (Vec::new(), Vec::new());
    while let Some((Agent { pod, node }, graph)) = answers.next().await {
        match graph {
            Ok(graph) => {
                progress.step(&node, &format!("{} edges", graph.edge_count()));
                merged.merge(&graph);
                answered.push(node);
            }
            Err(err) => {
                progress.step(&node, &format!("did not answer: {err}"));
                missing.push(format!("{node} (pod {pod}): {err}"));
            }
        }
    }
    progress.finish();
    missing.sort();
    for line in &missing {
        eprintln!("netflow-agent: node did not answer: {line}");
    }
    if !missing.is_empty() && !args.allow_missing {
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
    merged.save(&args.output)?;
    eprintln!(
        "{}: {} endpoints, {} edges from {} of {} nodes",
        args.output.display(),
        merged.node_count(),
        merged.edge_count(),
        answered.len(),
        answered.len() + missing.len()
    );
    Ok(())
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
