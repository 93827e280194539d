//! The flow log: one JSON object per line.
//!
//! Each poll interval writes one `"type":"flow"` line per connection that
//! moved during the interval (counters are that interval's deltas), then one
//! `"type":"stats"` line with the kernel's "could not record" counters.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::initiator::{Basis, Side};

/// An IP protocol: `tcp`, `udp`, or its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            netflow_common::PROTO_TCP => f.write_str("tcp"),
            netflow_common::PROTO_UDP => f.write_str("udp"),
            other => write!(f, "{other}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            netflow_common::PROTO_TCP => serializer.serialize_str("tcp"),
            netflow_common::PROTO_UDP => serializer.serialize_str("udp"),
            other => serializer.serialize_u8(other),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(u8),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(number) => Ok(Protocol(number)),
            Raw::Name(name) => match name.to_ascii_lowercase().as_str() {
                "tcp" => Ok(Protocol(netflow_common::PROTO_TCP)),
                "udp" => Ok(Protocol(netflow_common::PROTO_UDP)),
                other => Err(serde::de::Error::custom(format!(
                    "unknown protocol {other:?} (expected tcp, udp or a number)"
                ))),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// One connection's activity during one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// End of the interval (RFC 3339, UTC).
    pub ts: String,
    pub cgroup_id: u64,
    /// The cgroup's path below the cgroup v2 mount, when it could be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub protocol: Protocol,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// Who opened the connection as the kernel saw it (TCP SYN), else `unknown`.
    pub initiator: Side,
    /// The client side after the stated rule (see `initiator.rs`), and why.
    pub client: Side,
    pub client_basis: Basis,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// First and last packet of the connection so far (RFC 3339, UTC).
    pub first_seen: String,
    pub last_seen: String,
    /// TCP flags seen so far, e.g. `SYN|ACK|FIN`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_flags: String,
    /// First report of this connection (counts it once in the graph).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
    /// The connection did not fit in the kernel table; counted from the overflow ring.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
    /// The connection went idle and was removed from the kernel table.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
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
}

/// A name the cluster's DNS gave for an address (from a response a
/// recorded socket received).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsName {
    pub ts: String,
    pub name: String,
    pub ip: IpAddr,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Flow(&'a FlowRecord),
    Dns(&'a DnsName),
    Stats(&'a IntervalStats),
}

/// Writes flow log lines to stdout (`-`) or a file.
pub struct FlowLogWriter {
    out: Box<dyn Write + Send>,
    path: PathBuf,
}

impl FlowLogWriter {
    pub fn create(path: &Path) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            Box::new(BufWriter::new(File::create(path)?))
        };
        Ok(Self {
            out,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_interval(
        &mut self,
        flows: &[FlowRecord],
        dns: &[DnsName],
        stats: &IntervalStats,
    ) -> io::Result<()> {
        for flow in flows {
            serde_json::to_writer(&mut self.out, &Line::Flow(flow))?;
            self.out.write_all(b"\n")?;
        }
        for name in dns {
            serde_json::to_writer(&mut self.out, &Line::Dns(name))?;
            self.out.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut self.out, &Line::Stats(stats))?;
        self.out.write_all(b"\n")?;
        // A reader tailing the log sees whole intervals.
        self.out.flush()
    }
}

/// A parsed flow log line (for tests and offline tools).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogLine {
    Flow(FlowRecord),
    Dns(DnsName),
    Stats(IntervalStats),
}

/// Reads a whole flow log; the error names the file and line.
pub fn read_flow_log(path: &Path) -> Result<Vec<LogLine>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read flow log {}: {err}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .map_err(|err| format!("{}:{}: {err}", path.display(), index + 1))
        })
        .collect()
}

/// `SYN|ACK|...` for a TCP flag byte.
pub fn tcp_flag_names(flags: u32) -> String {
    const NAMES: [(u32, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x08, "PSH"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x20, "URG"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_read_back_as_written() {
        for protocol in [Protocol(6), Protocol(17), Protocol(1), Protocol(132)] {
            let json = serde_json::to_string(&protocol).unwrap();
            assert_eq!(serde_json::from_str::<Protocol>(&json).unwrap(), protocol);
        }
        assert_eq!(serde_json::to_string(&Protocol(6)).unwrap(), "\"tcp\"");
        assert_eq!(serde_json::to_string(&Protocol(1)).unwrap(), "1");
    }

    #[test]
    fn flag_names_follow_the_bits() {
        assert_eq!(tcp_flag_names(0x12), "SYN|ACK");
        assert_eq!(tcp_flag_names(0), "");
    }
}
