//! The agent's one HTTP port: `/healthz`, `/readyz`, `/metrics` (the
//! registry of [`Metrics`]) and `/graph` (this node's graph as JSON).
//!
//! The recording loop publishes a [`Snapshot`] after every interval and moves
//! the metrics as it goes; the server only reads, so a slow scrape never
//! slows recording.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread,
};

use tiny_http::{Header, Response, Server};
use tracing::{info, warn};

use super::metrics::{self, Metrics};

/// What the endpoints report besides the metrics, as of the last interval.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub attached: bool,
    /// The inventory is loaded (a file) or every watch has listed (live).
    pub inventory_loaded: bool,
    /// The graph as JSON (the graph file's format).
    pub graph_json: String,
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
#[error("cannot listen on {addr}: {message}")]
pub struct ServeError {
    addr: SocketAddr,
    message: String,
}

/// Starts the server on its own thread; it runs until the process ends.
pub fn start(addr: SocketAddr, shared: Shared) -> Result<SocketAddr, ServeError> {
    let server = Server::http(addr).map_err(|err| ServeError {
        addr,
        message: err.to_string(),
    })?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    info!(%bound, "serving /healthz /readyz /metrics /graph");
    thread::spawn(move || {
        for request in server.incoming_requests() {
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let (status, content_type, body) = respond(&path, &shared);
            let response = Response::from_string(body)
                .with_status_code(status)
                .with_header(
                    Header::from_bytes("Content-Type", content_type).expect("static header"),
                );
            if let Err(err) = request.respond(response) {
                warn!(%err, "could not answer a request");
            }
        }
    });
    Ok(bound)
}

fn respond(path: &str, shared: &Shared) -> (u16, &'static str, String) {
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" => shared.read(|snapshot| {
            if snapshot.attached && snapshot.inventory_loaded {
                (200, "text/plain", "ready\n".into())
            } else {
                (
                    503,
                    "text/plain",
                    format!(
                        "not ready: attached={} inventory={}\n",
                        snapshot.attached, snapshot.inventory_loaded
                    ),
                )
            }
        }),
        "/metrics" => (200, metrics::CONTENT_TYPE, shared.metrics.encode()),
        "/graph" => shared.read(|snapshot| {
            if snapshot.graph_json.is_empty() {
                (503, "text/plain", "no graph yet\n".into())
            } else {
                (200, "application/json", snapshot.graph_json.clone())
            }
        }),
        _ => (
            404,
            "text/plain",
            "not found: /healthz /readyz /metrics /graph\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_programs_and_the_inventory() {
        let shared = Shared::default();
        assert_eq!(respond("/readyz", &shared).0, 503);
        assert_eq!(respond("/healthz", &shared).0, 200);
        shared.update(|snapshot| {
            snapshot.attached = true;
            snapshot.inventory_loaded = true;
        });
        assert_eq!(respond("/readyz", &shared).0, 200);
        assert_eq!(respond("/nope", &shared).0, 404);
        assert_eq!(respond("/graph", &shared).0, 503);
    }
}
