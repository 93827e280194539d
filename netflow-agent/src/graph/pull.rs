//! The cluster's graph, from every node's agent.
//!
//! The agent pods are found through the API server, and each one's `/graph`
//! is fetched through the API server's port-forward to the pod's loopback
//! (`pods/NAME/portforward`): the graph is never served to the pod network,
//! only who may port-forward into netflow's namespace reads it, and there is
//! no aggregator of our own. `cmd::graph::pull` merges the answers and
//! decides what a missing node means.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
    #[error("port-forward to port {port}: {message}")]
    Forward { port: u16, message: String },
    #[error("the agent answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the agent's answer is not HTTP")]
    NotHttp,
    #[error("the agent's answer is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the agent's compressed graph is not valid gzip")]
    BadGzip(#[source] std::io::Error),
}

/// The largest graph one agent may send (a week of a busy node is far below).
pub const MAX_GRAPH_BYTES: u64 = 1 << 30;

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

/// The graph of agent `pod`, from its `/graph` on `port`.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<CommGraph, PullError> {
    let body = fetch_body(client, namespace, pod, port, "/graph", MAX_GRAPH_BYTES).await?;
    let text = String::from_utf8(body).map_err(|_| PullError::NotHttp)?;
    let shown = format!("pod {pod} port {port} /graph");
    Ok(CommGraph::parse(&text, Path::new(&shown))?)
}

/// The body of agent `pod`'s answer to `GET path` on `port` (through the
/// API server's port-forward), inflated when it came compressed, at most
/// `limit` bytes; an answer other than 200 is an error with its status.
pub async fn fetch_body(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    limit: u64,
) -> Result<Vec<u8>, PullError> {
    let forward = |message: String| PullError::Forward { port, message };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = pods
        .portforward(pod, &[port])
        .await
        .map_err(PullError::Request)?;
    let mut stream = forwarder
        .take_stream(port)
        .ok_or_else(|| forward("no stream".into()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| forward(err.to_string()))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(limit + 64 * 1024)
        .read_to_end(&mut response)
        .await
        .map_err(|err| forward(err.to_string()))?;
    drop(stream);
    if response.is_empty()
        && let Some(error) = forwarder.take_error(port)
        && let Some(message) = error.await
    {
        forwarder.abort();
        return Err(forward(message));
    }
    forwarder.abort();
    let (status, gzip, body) = http_response(&response)?;
    if body.len() as u64 > limit {
        return Err(PullError::TooLarge { limit });
    }
    let inflated;
    let body = if gzip && status == 200 {
        inflated = inflate(body, limit)?;
        inflated.as_slice()
    } else {
        body
    };
    if status != 200 {
        let body = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string();
        return Err(PullError::Status { status, body });
    }
    Ok(body.to_vec())
}

/// A gzip body inflated, at most `limit` bytes of it (a small answer may
/// inflate to a huge one).
fn inflate(body: &[u8], limit: u64) -> Result<Vec<u8>, PullError> {
    use std::io::Read as _;
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit + 1)
        .read_to_end(&mut inflated)
        .map_err(PullError::BadGzip)?;
    if inflated.len() as u64 > limit {
        return Err(PullError::TooLarge { limit });
    }
    Ok(inflated)
}

/// The status, whether the body is gzip-compressed, and the body of a plain
/// HTTP/1.1 response (the agent answers a gzip-taking client with a
/// Content-Length, never chunked).
fn http_response(response: &[u8]) -> Result<(u16, bool, &[u8]), PullError> {
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or(PullError::NotHttp)?;
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| PullError::NotHttp)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(PullError::NotHttp)?;
    let gzip = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("content-encoding")
                && value.trim().eq_ignore_ascii_case("gzip")
        })
    });
    Ok((status, gzip, &response[head_end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_http() {
        let (status, gzip, body) =
            http_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert!(!gzip);
        assert_eq!((status, body), (200, &b"{}"[..]));
        assert!(http_response(b"garbage").is_err());
        assert!(http_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn compressed_answers_are_inflated_within_the_limit() {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[b' '; 100_000]).unwrap();
        let compressed = encoder.finish().unwrap();
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n".to_vec();
        answer.extend_from_slice(&compressed);
        let (_, gzip, body) = http_response(&answer).unwrap();
        assert!(gzip);
        assert_eq!(inflate(body, 100_000).unwrap().len(), 100_000);
        assert!(matches!(
            inflate(body, 99_999),
            Err(PullError::TooLarge { .. })
        ));
        assert!(matches!(
            inflate(b"not gzip", 100),
            Err(PullError::BadGzip(_))
        ));
    }
}
