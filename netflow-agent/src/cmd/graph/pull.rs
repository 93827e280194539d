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
        file::write_atomically,
        pull::{Agent, PullError, agents, fetch, fetch_body},
    },
    policy::staged::Denials,
};

/// The largest denials list one agent may send (10 000 entries are ~5 MB).
const MAX_DENIALS_BYTES: u64 = 64 << 20;

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
    let mut answered_pods = Vec::new();
    while let Some((Agent { pod, node }, graph)) = answers.next().await {
        match graph {
            Ok(graph) => {
                progress.step(&node, &format!("{} edges", graph.edge_count()));
                merged.merge(&graph);
                answered.push(node);
                answered_pods.push(pod);
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
    merged.save_as(&args.output, args.format)?;
    if let Some(path) = &args.denials {
        let denials = pull_denials(&client, args, &answered_pods).await?;
        let text = serde_json::to_vec_pretty(&denials)?;
        write_atomically(path, &text)
            .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
        eprintln!(
            "{}: {} edges the staged policies would break",
            path.display(),
            denials.denials.len()
        );
    }
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

/// Every answering agent's staged denials, merged; an agent not in staged
/// mode (404) has none.
async fn pull_denials(
    client: &kube::Client,
    args: &PullArgs,
    pods: &[String],
) -> anyhow::Result<Denials> {
    let mut merged = Denials::new();
    let mut staged = 0;
    for pod in pods {
        let fetched = tokio::time::timeout(
            args.timeout,
            fetch_body(
                client,
                &args.namespace,
                pod,
                args.port,
                "/denials",
                MAX_DENIALS_BYTES,
            ),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "pod {pod}: no answer for /denials within {:?}",
                args.timeout
            )
        })?;
        let body = match fetched {
            Ok(body) => body,
            Err(PullError::Status { status: 404, .. }) => continue,
            Err(err) => bail!("pod {pod}: /denials: {err}"),
        };
        let text = String::from_utf8_lossy(&body);
        merged.merge(&Denials::parse(&text, &format!("pod {pod} /denials"))?);
        staged += 1;
    }
    if staged == 0 {
        eprintln!("netflow-agent: no agent runs in staged mode (run --staged): no denials");
    }
    Ok(merged)
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
