//! The cluster's graph, from every node's agent.
//!
//! The agent pods are found through the API server, and each one's `/graph`
//! is fetched through the API server's pod proxy
//! (`/api/v1/namespaces/NS/pods/NAME:PORT/proxy/graph`): no extra network
//! path into the cluster, no aggregator of our own. `cmd::graph::pull`
//! merges the answers and decides what a missing node means.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use super::{CommGraph, file::GraphFileError};

/// One agent pod and the node it runs on.
#[derive(Clone, Debug)]
pub struct Agent {
    pub pod: String,
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot list the agent pods ({selector}) in namespace {namespace}")]
    List {
        selector: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no agent pods match {selector} in namespace {namespace}: is netflow deployed (kubectl apply -k deploy/)?"
    )]
    NoAgents { selector: String, namespace: String },
    #[error("{}", crate::kube::describe(.0))]
    Request(kube::Error),
    #[error(transparent)]
    Graph(#[from] GraphFileError),
    #[error("cannot make the request: {0}")]
    BadRequest(String),
}

/// The agent pods that `selector` matches in `namespace`.
pub async fn agents(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<Agent>, PullError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| PullError::List {
            selector: selector.to_string(),
            namespace: namespace.to_string(),
            source,
        })?;
    let agents: Vec<Agent> = list
        .items
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let node = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .unwrap_or_else(|| "(unscheduled)".into());
            Some(Agent { pod: name, node })
        })
        .collect();
    if agents.is_empty() {
        return Err(PullError::NoAgents {
            selector: selector.to_string(),
            namespace: namespace.to_string(),
        });
    }
    Ok(agents)
}

/// GET `/graph` of one agent pod through the API server's pod proxy.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<CommGraph, PullError> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/graph");
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|err| PullError::BadRequest(err.to_string()))?;
    let text = client
        .request_text(request)
        .await
        .map_err(PullError::Request)?;
    Ok(CommGraph::parse(&text, Path::new(&path))?)
}
