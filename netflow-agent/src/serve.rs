//! The agent's one HTTP port: `/healthz`, `/readyz`, `/metrics` (Prometheus
//! text format) and `/graph` (this node's graph as JSON).
//!
//! The recording loop publishes a [`Snapshot`] after every interval; the
//! server only reads the latest one, so a slow scrape never slows recording.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use tiny_http::{Header, Response, Server};
use tracing::{info, warn};

/// What the endpoints report, as of the last interval.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub attached: bool,
    /// The inventory is loaded (a file) or every watch has listed (live).
    pub inventory_loaded: bool,
    /// Failed watch requests of the live inventory (each retried).
    pub inventory_watch_errors: u64,
    /// Flow records held until the live inventory has listed.
    pub pending_flow_records: u64,
    pub pending_flow_records_dropped: u64,
    /// Edges dropped because the graph reached --max-edges.
    pub edges_evicted: u64,
    pub flow_records: u64,
    pub edges: usize,
    pub table_entries: u64,
    pub table_capacity: u32,
    pub overflowed_connections: u64,
    pub drops: BTreeMap<String, u64>,
    pub unresolved_local: u64,
    pub unresolved_service: u64,
    pub undecided_direction: u64,
    pub unnamed_remote: u64,
    pub poll_seconds: f64,
    /// The graph as JSON (the graph file's format).
    pub graph_json: String,
}

pub type Shared = Arc<Mutex<Snapshot>>;

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
            let snapshot = shared.lock().map(|s| s.clone()).unwrap_or_default();
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let (status, content_type, body) = respond(&path, &snapshot);
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

fn respond(path: &str, snapshot: &Snapshot) -> (u16, &'static str, String) {
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" if snapshot.attached && snapshot.inventory_loaded => {
            (200, "text/plain", "ready\n".into())
        }
        "/readyz" => (
            503,
            "text/plain",
            format!(
                "not ready: attached={} inventory={}\n",
                snapshot.attached, snapshot.inventory_loaded
            ),
        ),
        "/metrics" => (200, "text/plain; version=0.0.4", metrics(snapshot)),
        "/graph" if snapshot.graph_json.is_empty() => (503, "text/plain", "no graph yet\n".into()),
        "/graph" => (200, "application/json", snapshot.graph_json.clone()),
        _ => (
            404,
            "text/plain",
            "not found: /healthz /readyz /metrics /graph\n".into(),
        ),
    }
}

/// A plain HTTP GET of an agent's port (the lab, the tests): (status, body);
/// status 0 when the answer has no status line.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: netflow\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A loopback address nothing listens on, for an agent's `--listen`.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The Prometheus text exposition of a snapshot.
pub fn metrics(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |value: String| vec![(String::new(), value)];
    metric(
        "netflow_attached",
        "gauge",
        "1 while the programs are attached.",
        &one(u8::from(snapshot.attached).to_string()),
    );
    metric(
        "netflow_flow_records_total",
        "counter",
        "Flow records read from the kernel.",
        &one(snapshot.flow_records.to_string()),
    );
    metric(
        "netflow_graph_edges",
        "gauge",
        "Edges in this node's graph.",
        &one(snapshot.edges.to_string()),
    );
    metric(
        "netflow_table_entries",
        "gauge",
        "Connections in the kernel table.",
        &one(snapshot.table_entries.to_string()),
    );
    metric(
        "netflow_table_capacity",
        "gauge",
        "Connections the kernel table holds.",
        &one(snapshot.table_capacity.to_string()),
    );
    let fill = if snapshot.table_capacity == 0 {
        0.0
    } else {
        snapshot.table_entries as f64 / f64::from(snapshot.table_capacity)
    };
    metric(
        "netflow_table_fill_ratio",
        "gauge",
        "Kernel table fill, 0 to 1.",
        &one(format!("{fill:.4}")),
    );
    metric(
        "netflow_overflowed_connections_total",
        "counter",
        "Connections seen only through the overflow ring.",
        &one(snapshot.overflowed_connections.to_string()),
    );
    let drops: Vec<(String, String)> = snapshot
        .drops
        .iter()
        .map(|(reason, count)| (format!("{{reason=\"{reason}\"}}"), count.to_string()))
        .collect();
    metric(
        "netflow_packets_not_recorded_total",
        "counter",
        "Packets the kernel could not record, by reason.",
        &drops,
    );
    metric(
        "netflow_unresolved_total",
        "counter",
        "Flow records whose ends could not be named, by which end (remote_ip: an external address with no DNS name).",
        &[
            (
                "{end=\"local\"}".into(),
                snapshot.unresolved_local.to_string(),
            ),
            (
                "{end=\"service\"}".into(),
                snapshot.unresolved_service.to_string(),
            ),
            (
                "{end=\"direction\"}".into(),
                snapshot.undecided_direction.to_string(),
            ),
            (
                "{end=\"remote_ip\"}".into(),
                snapshot.unnamed_remote.to_string(),
            ),
        ],
    );
    metric(
        "netflow_graph_edges_evicted_total",
        "counter",
        "Edges dropped because the graph reached --max-edges (least recently seen first).",
        &one(snapshot.edges_evicted.to_string()),
    );
    metric(
        "netflow_inventory_synced",
        "gauge",
        "1 once the inventory is loaded or every watch has listed.",
        &one(u8::from(snapshot.inventory_loaded).to_string()),
    );
    metric(
        "netflow_inventory_watch_errors_total",
        "counter",
        "Failed watch requests of the live inventory (each is retried).",
        &one(snapshot.inventory_watch_errors.to_string()),
    );
    metric(
        "netflow_pending_flow_records",
        "gauge",
        "Flow records held until the inventory has synced.",
        &one(snapshot.pending_flow_records.to_string()),
    );
    metric(
        "netflow_pending_flow_records_dropped_total",
        "counter",
        "Flow records dropped while waiting for the inventory (the hold was full).",
        &one(snapshot.pending_flow_records_dropped.to_string()),
    );
    metric(
        "netflow_poll_duration_seconds",
        "gauge",
        "Time the last poll of the kernel table took.",
        &one(format!("{:.6}", snapshot.poll_seconds)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_programs_and_the_inventory() {
        let mut snapshot = Snapshot::default();
        assert_eq!(respond("/readyz", &snapshot).0, 503);
        assert_eq!(respond("/healthz", &snapshot).0, 200);
        snapshot.attached = true;
        snapshot.inventory_loaded = true;
        assert_eq!(respond("/readyz", &snapshot).0, 200);
        assert_eq!(respond("/nope", &snapshot).0, 404);
    }

    #[test]
    fn metrics_are_in_the_text_format() {
        let snapshot = Snapshot {
            attached: true,
            table_entries: 5,
            table_capacity: 10,
            drops: BTreeMap::from([("map_full".to_string(), 3)]),
            ..Snapshot::default()
        };
        let text = metrics(&snapshot);
        assert!(text.contains("# TYPE netflow_packets_not_recorded_total counter\n"));
        assert!(text.contains("netflow_packets_not_recorded_total{reason=\"map_full\"} 3\n"));
        assert!(text.contains("netflow_table_fill_ratio 0.5000\n"));
        assert!(text.contains("netflow_attached 1\n"));
    }
}
