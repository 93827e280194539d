//! The agent's HTTP ports: `/healthz`, `/readyz` and `/metrics` (the
//! registry of [`Metrics`]: no workload names) on the pod port, and `/graph`
//! (this node's graph as JSON, the whole topology) on loopback only, where
//! `graph pull` reaches it through the API server's port-forward.
//!
//! The port is reachable from pods, so every request is hostile until
//! proven otherwise: hyper on a thread and runtime of its own (a slow poll
//! never delays `/healthz`), headers bounded ([`MAX_HEADER_BYTES`]) and read
//! within [`HEADER_TIMEOUT`], every connection closed after
//! [`CONNECTION_TIMEOUT`] whatever it does (a client that never reads its
//! answer), at most [`MAX_CONNECTIONS`] at once (more are closed at once),
//! and the graph kept compressed, shared between requests, never copied per
//! request ([`super::gzip_body`]).
//!
//! The recording loop publishes a [`Snapshot`] after every interval and moves
//! the metrics as it goes; the server only reads.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{
    Method, Request, Response, StatusCode, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::{
    gzip_body::{GzipJson, Inflate},
    metrics::{self, Metrics},
};

/// A response: whole bytes, or the graph inflated as it is sent.
type ResponseBody = Either<Full<Bytes>, Inflate>;

/// Request headers larger than this get 431 and the connection is closed.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The whole request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; past this, new ones are closed unanswered.
pub const MAX_CONNECTIONS: usize = 1024;

/// What the endpoints report besides the metrics, as of the last interval.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub attached: bool,
    /// The inventory is loaded (a file) or every watch has listed (live).
    pub inventory_loaded: bool,
    /// The graph as gzip-compressed JSON (the graph file's format), shared
    /// by every request.
    pub graph_gzip: GzipJson,
    /// Staged mode's denials as JSON (`None` when not staged).
    pub denials_json: Option<Bytes>,
}

/// What the recording loop shares with the server.
#[derive(Clone, Default)]
pub struct Shared {
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Changes the snapshot (a poisoned lock is taken over: the snapshot is
    /// plain data, rewritten whole every interval).
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut snapshot);
    }

    fn read<T>(&self, read: impl FnOnce(&Snapshot) -> T) -> T {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&snapshot)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What one listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// `/healthz`, `/readyz`, `/metrics`: may face the pod network.
    Health,
    /// `/graph` (and `/healthz`): loopback only.
    Graph,
}

/// Binds `addr` and serves on a thread of its own until the process ends.
pub fn start(addr: SocketAddr, shared: Shared, serves: Serves) -> Result<SocketAddr, ServeError> {
    let listen_error = |source| ServeError::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(listen_error)?;
    thread::Builder::new()
        .name("netflow-http".into())
        .spawn(move || runtime.block_on(serve(listener, shared, serves)))
        .map_err(listen_error)?;
    match serves {
        Serves::Health => info!(%bound, "serving /healthz /readyz /metrics"),
        Serves::Graph => info!(%bound, "serving /graph"),
    }
    Ok(bound)
}

async fn serve(listener: std::net::TcpListener, shared: Shared, serves: Serves) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(%err, "cannot serve HTTP");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, most likely: wait, do not spin.
                warn!(%err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("too many connections: closing a new one");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(TokioIo::new(stream), shared, serves).await;
        });
    }
}

/// Serves one connection (a socket, or any byte stream) within the limits
/// above, until the client is done or [`CONNECTION_TIMEOUT`].
pub async fn serve_connection<IO>(io: IO, shared: Shared, serves: Serves)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let service = service_fn(move |request| {
        let response = respond(&request, &shared, serves);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(io, service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => debug!(%err, "connection ended with an error"),
        Err(_) => debug!("connection closed after the timeout"),
    }
}

fn respond<B>(request: &Request<B>, shared: &Shared, serves: Serves) -> Response<ResponseBody> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut response = Response::new(Either::Left(Full::new(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    let text = |status: StatusCode, body: String| reply(status, "text/plain", Bytes::from(body));
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match (serves, request.uri().path()) {
        (_, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (Serves::Health, "/readyz") => shared.read(|snapshot| {
            if snapshot.attached && snapshot.inventory_loaded {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "not ready: attached={} inventory={}\n",
                        snapshot.attached, snapshot.inventory_loaded
                    ),
                )
            }
        }),
        (Serves::Health, "/metrics") => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            Bytes::from(shared.metrics.encode()),
        ),
        (Serves::Graph, "/graph") => {
            let graph = shared.read(|snapshot| snapshot.graph_gzip.clone());
            if graph.is_empty() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "no graph yet\n".into());
            }
            if accepts_gzip(request) {
                let mut response = reply(StatusCode::OK, "application/json", graph.gzip);
                response.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
                response
            } else {
                // Sent with its Content-Length: clients need not read chunks.
                let mut response = Response::new(Either::Right(Inflate::new(&graph)));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                headers.insert(
                    header::CONTENT_LENGTH,
                    header::HeaderValue::from(graph.json_bytes),
                );
                response
            }
        }
        (Serves::Graph, "/denials") => {
            match shared.read(|snapshot| snapshot.denials_json.clone()) {
                Some(denials) => reply(StatusCode::OK, "application/json", denials),
                None => text(
                    StatusCode::NOT_FOUND,
                    "not in staged mode (run --staged)\n".into(),
                ),
            }
        }
        (Serves::Health, _) => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz /readyz /metrics (the graph is served on loopback only)\n".into(),
        ),
        (Serves::Graph, _) => text(StatusCode::NOT_FOUND, "not found: /graph /denials\n".into()),
    }
}

/// The client said it takes gzip (`Accept-Encoding: gzip`, not with q=0).
fn accepts_gzip<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn readiness_needs_the_programs_and_the_inventory() {
        let shared = Shared::default();
        let status = |path: &str| {
            respond(&get(path), &shared, Serves::Health)
                .status()
                .as_u16()
        };
        assert_eq!(status("/readyz"), 503);
        assert_eq!(status("/healthz"), 200);
        shared.update(|snapshot| {
            snapshot.attached = true;
            snapshot.inventory_loaded = true;
        });
        assert_eq!(status("/readyz"), 200);
        assert_eq!(status("/nope"), 404);
        let post = Request::post("/healthz").body(()).unwrap();
        assert_eq!(
            respond(&post, &shared, Serves::Health).status().as_u16(),
            405
        );
    }

    #[test]
    fn the_graph_is_served_apart_from_health_and_metrics() {
        let shared = Shared::default();
        let status =
            |serves: Serves, path: &str| respond(&get(path), &shared, serves).status().as_u16();
        assert_eq!(status(Serves::Health, "/graph"), 404);
        assert_eq!(status(Serves::Graph, "/graph"), 503, "no graph yet");
        let graph = crate::graph::CommGraph::new();
        let json = serde_json::to_vec(&graph.file()).unwrap();
        let graph_gzip = super::super::gzip_body::gzip_json(&graph.file()).unwrap();
        let compressed = graph_gzip.gzip.clone();
        shared.update(|snapshot| snapshot.graph_gzip = graph_gzip.clone());
        assert_eq!(status(Serves::Graph, "/graph"), 200);
        // Sent compressed to whoever takes gzip, inflated for the others.
        let body = |request: Request<()>| {
            let response = respond(&request, &shared, Serves::Graph);
            let encoding = response.headers().get(header::CONTENT_ENCODING).cloned();
            if encoding.is_none() {
                assert_eq!(
                    response.headers()[header::CONTENT_LENGTH],
                    json.len().to_string().as_str()
                );
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let bytes = runtime
                .block_on(http_body_util::BodyExt::collect(response.into_body()))
                .unwrap()
                .to_bytes();
            (encoding, bytes)
        };
        let gzip = |accept: &str| {
            Request::get("/graph")
                .header(header::ACCEPT_ENCODING, accept)
                .body(())
                .unwrap()
        };
        assert_eq!(body(get("/graph")), (None, Bytes::from(json.clone())));
        assert_eq!(
            body(gzip("deflate, gzip;q=0.8")),
            (Some(header::HeaderValue::from_static("gzip")), compressed)
        );
        assert_eq!(body(gzip("gzip;q=0")).0, None);
        assert_eq!(status(Serves::Graph, "/metrics"), 404);
        assert_eq!(status(Serves::Health, "/metrics"), 200);
    }
}
