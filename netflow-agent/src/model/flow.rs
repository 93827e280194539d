//! What the kernel stage hands on: one connection's activity in one poll
//! interval, the kernel's counters, and the DNS names it saw.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use serde::{Deserialize, Serialize};

use super::{Protocol, Timestamp};

/// How a flow log is stored: JSON lines (for reading with the eye or
/// `jq`), or binary (the same records, several times cheaper to read in
/// bulk, as `graph build` does with a week of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowLogFormat {
    #[default]
    Json,
    Binary,
}

/// Which end of a connection, from the local socket's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Local,
    Remote,
    Unknown,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
            Side::Unknown => "unknown",
        })
    }
}

/// How the client side was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    TcpSyn,
    EphemeralPort,
    WellKnownPort,
    FirstPacket,
    Undecided,
    /// It sent an HTTP request.
    HttpRequest,
}

/// How far a connection got, as the local socket saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    /// TCP: the handshake completed (or, for a connection older than the
    /// recording, packets went both ways); UDP and others: a reply came back.
    Established,
    /// TCP: the peer answered with a reset.
    Refused,
    /// TCP: no answer (yet).
    Unanswered,
    /// UDP and others: packets one way only.
    OneWay,
    /// Not recorded: a flow log written before netflow recorded it.
    #[default]
    Unknown,
}

/// One end of a connection as the socket saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub ip: IpAddr,
    pub port: u16,
}

/// One connection's activity during one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// End of the interval.
    pub ts: Timestamp,
    pub cgroup_id: u64,
    /// The cgroup's path below the cgroup v2 mount, when it could be found.
    /// Shared: an interval's flows of one container, and a log's millions
    /// of records of a few thousand, hold one copy of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Arc<str>>,
    pub protocol: Protocol,
    pub local: Address,
    pub remote: Address,
    /// Who opened the connection as the kernel saw it (TCP SYN), else `unknown`.
    pub initiator: Side,
    /// The client side after the stated rule (see `kernel::initiator`), and why.
    pub client: Side,
    pub client_basis: Basis,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// First and last packet of the connection so far.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// TCP flags seen so far, e.g. `SYN|ACK|FIN`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_flags: String,
    /// How far the connection got, as of this report.
    #[serde(default)]
    pub handshake: Handshake,
    /// This report is the first in which the connection is established
    /// (counts it once as established in the graph).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub newly_established: bool,
    /// First report of this connection (counts it once in the graph).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
    /// The connection did not fit in the kernel table; counted from the overflow ring.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    /// The connection went idle and was removed from the kernel table.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// Plaintext HTTP requests seen on the connection since the last report
    /// (their heads are sampled: see the `http_unsampled` drop counter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRequest>,
    /// This report holds the connection's first HTTP request (counts it
    /// once as a connection that carried HTTP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_connection: bool,
}

/// One HTTP/1.x request as its head said it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// The path, without query string or fragment.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The kernel's counters and the table's state at the end of an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalStats {
    pub ts: String,
    /// Connections in the kernel table.
    pub table_entries: u64,
    pub table_capacity: u32,
    /// Connections seen only through the overflow ring, since the start.
    pub overflowed_connections: u64,
    /// Packets not (fully) recorded since the start, by reason.
    pub drops: BTreeMap<String, u64>,
    /// DNS responses not believed since the start, by reason (`unsolicited`:
    /// no query of that socket asked it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dns_refused: BTreeMap<String, u64>,
}

/// An answer a recorded socket received to a query it sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsAnswer {
    pub name: String,
    pub ip: IpAddr,
    /// The server that answered; `None` from flow logs of earlier versions.
    pub server: Option<IpAddr>,
    /// The cgroup of the socket that asked (its path); `None` when unknown.
    pub client: Option<String>,
}

/// A name the cluster's DNS gave for an address (from a response a
/// recorded socket received).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsName {
    pub ts: String,
    pub name: String,
    pub ip: IpAddr,
    /// The server that answered (absent in flow logs of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<IpAddr>,
    /// The cgroup of the socket that asked (its path below the cgroup v2
    /// mount): names belong to the workload that resolved them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}
