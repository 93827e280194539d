//! The binary flow log: the records of the JSON lines, stored for reading
//! in bulk. A week of a node's flows is millions of records, and reading
//! JSON (its ~40 strings per line, keys included, and three RFC 3339 times)
//! cost `graph build` more than everything else it does per record.
//!
//! The file opens with [`MAGIC`] (`NETFLOW` and the format's version), then
//! one frame per record: its kind (`f` flow, `d` DNS answer, `s` interval
//! statistics), its length (4 bytes, little-endian) and its body. A flow's
//! body is [`FlowWire`] in postcard (varints, strings as length and bytes;
//! times as Unix milliseconds), read back field by field (`wire.rs`). The
//! rare DNS and statistics records hold their JSON, as their lines do. A
//! reader skips the kinds it does not want unread, and refuses a frame
//! longer than [`MAX_RECORD_BYTES`], a body with bytes left over, a time
//! past the year 9999, and a kind or flag it does not know (a newer
//! writer's), naming the record.

use std::{io, path::Path};

use serde::Serialize;

use super::{
    FlowLogError, LogLine, LogLineRef,
    wire::{BASES, HANDSHAKES, SIDES, SharedTexts, WireError, WireReader},
};
use crate::model::{Address, Basis, FlowRecord, Handshake, HttpRequest, Protocol, Side, Timestamp};

/// The first bytes of a binary flow log: the name, then the version.
pub const MAGIC: &[u8; 8] = b"NETFLOW\x01";
/// [`MAGIC`] without its version byte.
pub const NAME: &[u8; 7] = b"NETFLOW";

/// The longest record read: the agent writes a few hundred bytes at most
/// (a flow's HTTP requests, each head capped, make the longest).
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// A frame's kind and length.
const FRAME_HEAD_BYTES: usize = 5;

const KIND_FLOW: u8 = b'f';
const KIND_DNS: u8 = b'd';
const KIND_STATS: u8 = b's';

/// A flow's yes/no fields, one bit each.
const NEWLY_ESTABLISHED: u8 = 1;
const NEW: u8 = 1 << 1;
const OVERFLOW: u8 = 1 << 2;
const ENDED: u8 = 1 << 3;
const HTTP_CONNECTION: u8 = 1 << 4;
const KNOWN_MARKS: u8 = NEWLY_ESTABLISHED | NEW | OVERFLOW | ENDED | HTTP_CONNECTION;

/// A flow record as the binary log stores it. The order of the fields, and
/// of the variants of `Side`, `Basis` and `Handshake`, is the format:
/// postcard writes neither names nor tags (a test pins the bytes), and
/// [`decode_flow`] reads the fields in this order.
#[derive(Debug, Serialize)]
struct FlowWire<'a> {
    ts: u64,
    cgroup_id: u64,
    cgroup: Option<&'a str>,
    protocol: u8,
    local: Address,
    remote: Address,
    initiator: Side,
    client: Side,
    client_basis: Basis,
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    first_seen: u64,
    last_seen: u64,
    tcp_flags: &'a str,
    handshake: Handshake,
    marks: u8,
    http: Vec<HttpWire<'a>>,
}

#[derive(Debug, Serialize)]
struct HttpWire<'a> {
    method: &'a str,
    path: &'a str,
    host: Option<&'a str>,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the file ends inside it")]
    Truncated,
    #[error("it is {length} bytes long, more than the {MAX_RECORD_BYTES} a record may be")]
    TooLong { length: usize },
    #[error("its kind {0:#04x} is none this agent knows (a newer writer's?)")]
    UnknownKind(u8),
    #[error("its flags {0:#04x} hold some this agent does not know (a newer writer's?)")]
    UnknownMarks(u8),
    #[error("its body has {0} bytes after the record")]
    TrailingBytes(usize),
    #[error("a time of {0} ms after the Unix epoch is past the year 9999")]
    TimeOutOfRange(u64),
    #[error("its body is no flow record")]
    Flow(#[from] WireError),
    #[error("its body is no JSON of its kind")]
    Json(#[from] serde_json::Error),
}

/// Appends `line` to `out` as one frame.
pub fn encode(line: LogLineRef<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
    let kind = match line {
        LogLineRef::Flow(flow) => {
            postcard::to_io(&wire(flow), &mut *out).map_err(io::Error::other)?;
            KIND_FLOW
        }
        LogLineRef::Dns(name) => {
            serde_json::to_writer(&mut *out, name)?;
            KIND_DNS
        }
        LogLineRef::Stats(stats) => {
            serde_json::to_writer(&mut *out, stats)?;
            KIND_STATS
        }
    };
    let length = u32::try_from(out.len() - start - FRAME_HEAD_BYTES)
        .ok()
        .filter(|&length| length as usize <= MAX_RECORD_BYTES)
        .ok_or_else(|| io::Error::other("a flow log record longer than a reader takes"))?;
    out[start] = kind;
    out[start + 1..start + FRAME_HEAD_BYTES].copy_from_slice(&length.to_le_bytes());
    Ok(())
}

fn wire(flow: &FlowRecord) -> FlowWire<'_> {
    let mark = |set: bool, bit: u8| if set { bit } else { 0 };
    FlowWire {
        ts: flow.ts.unix_millis(),
        cgroup_id: flow.cgroup_id,
        cgroup: flow.cgroup.as_deref(),
        protocol: flow.protocol.0,
        local: flow.local,
        remote: flow.remote,
        initiator: flow.initiator,
        client: flow.client,
        client_basis: flow.client_basis,
        packets_in: flow.packets_in,
        packets_out: flow.packets_out,
        bytes_in: flow.bytes_in,
        bytes_out: flow.bytes_out,
        first_seen: flow.first_seen.unix_millis(),
        last_seen: flow.last_seen.unix_millis(),
        tcp_flags: &flow.tcp_flags,
        handshake: flow.handshake,
        marks: mark(flow.newly_established, NEWLY_ESTABLISHED)
            | mark(flow.new, NEW)
            | mark(flow.overflow, OVERFLOW)
            | mark(flow.ended, ENDED)
            | mark(flow.http_connection, HTTP_CONNECTION),
        http: flow
            .http
            .iter()
            .map(|request| HttpWire {
                method: &request.method,
                path: &request.path,
                host: request.host.as_deref(),
            })
            .collect(),
    }
}

/// A flow record's body; `cgroups` shares the paths the log repeats.
fn decode_flow(body: &[u8], cgroups: &mut SharedTexts) -> Result<FlowRecord, RecordError> {
    // FlowWire's fields, in its order.
    let mut wire = WireReader::new(body);
    let ts = wire.u64("ts")?;
    let cgroup_id = wire.u64("cgroup_id")?;
    let cgroup = match wire.option_text_bytes("cgroup")? {
        Some(path) => Some(cgroups.get(path, "cgroup")?),
        None => None,
    };
    let protocol = Protocol(wire.byte("protocol")?);
    let local = wire.address("local")?;
    let remote = wire.address("remote")?;
    let initiator = wire.variant(&SIDES, "initiator")?;
    let client = wire.variant(&SIDES, "client")?;
    let client_basis = wire.variant(&BASES, "client_basis")?;
    let packets_in = wire.u64("packets_in")?;
    let packets_out = wire.u64("packets_out")?;
    let bytes_in = wire.u64("bytes_in")?;
    let bytes_out = wire.u64("bytes_out")?;
    let first_seen = wire.u64("first_seen")?;
    let last_seen = wire.u64("last_seen")?;
    let tcp_flags = wire.str("tcp_flags")?.to_owned();
    let handshake = wire.variant(&HANDSHAKES, "handshake")?;
    let marks = wire.byte("marks")?;
    let requests = wire.length("http")?;
    // At least three bytes a request: no room is taken on a count alone.
    // (Most records hold none: no call to make an empty list.)
    let mut http = match requests {
        0 => Vec::new(),
        _ => Vec::with_capacity(requests.min(wire.rest().len() / 3)),
    };
    for _ in 0..requests {
        http.push(HttpRequest {
            method: wire.str("http method")?.to_owned(),
            path: wire.str("http path")?.to_owned(),
            host: wire.option_str("http host")?.map(str::to_owned),
        });
    }
    if !wire.rest().is_empty() {
        return Err(RecordError::TrailingBytes(wire.rest().len()));
    }
    if marks & !KNOWN_MARKS != 0 {
        return Err(RecordError::UnknownMarks(marks));
    }
    let time =
        |millis| Timestamp::from_unix_millis(millis).ok_or(RecordError::TimeOutOfRange(millis));
    let marked = |bit: u8| marks & bit != 0;
    Ok(FlowRecord {
        ts: time(ts)?,
        cgroup_id,
        cgroup,
        protocol,
        local,
        remote,
        initiator,
        client,
        client_basis,
        packets_in,
        packets_out,
        bytes_in,
        bytes_out,
        first_seen: time(first_seen)?,
        last_seen: time(last_seen)?,
        tcp_flags,
        handshake,
        newly_established: marked(NEWLY_ESTABLISHED),
        new: marked(NEW),
        overflow: marked(OVERFLOW),
        ended: marked(ENDED),
        http,
        http_connection: marked(HTTP_CONNECTION),
    })
}

/// The name `wanted` is asked about, as the JSON lines' `type`.
fn kind_name(kind: u8) -> Result<&'static str, RecordError> {
    match kind {
        KIND_FLOW => Ok("flow"),
        KIND_DNS => Ok("dns"),
        KIND_STATS => Ok("stats"),
        other => Err(RecordError::UnknownKind(other)),
    }
}

/// One whole frame.
fn decode(frame: &[u8], cgroups: &mut SharedTexts) -> Result<LogLine, RecordError> {
    let body = &frame[FRAME_HEAD_BYTES..];
    Ok(match frame[0] {
        KIND_FLOW => LogLine::Flow(decode_flow(body, cgroups)?),
        KIND_DNS => LogLine::Dns(serde_json::from_slice(body)?),
        KIND_STATS => LogLine::Stats(serde_json::from_slice(body)?),
        other => return Err(RecordError::UnknownKind(other)),
    })
}

/// The length of the frame at the start of `bytes` (its head and body),
/// once its head is there.
fn frame_length(bytes: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(head) = bytes.get(..FRAME_HEAD_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if length > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong { length });
    }
    kind_name(head[0])?;
    Ok(Some(FRAME_HEAD_BYTES + length))
}

/// Streams the records after the file's [`MAGIC`] (already read), handing
/// each whose kind `wanted` accepts to `each`; errors name the file, the
/// record (counted from 1) and its byte offset.
pub fn for_each_record_in(
    mut reader: impl io::BufRead,
    path: &Path,
    wanted: impl Fn(&str) -> bool,
    mut each: impl FnMut(LogLine) -> Result<(), FlowLogError>,
) -> Result<(), FlowLogError> {
    let mut record = 0;
    let mut offset = MAGIC.len() as u64;
    let refuse = |record: usize, offset: u64, reason: RecordError| FlowLogError::Record {
        path: path.to_path_buf(),
        record,
        offset,
        reason,
    };
    let mut cgroups = SharedTexts::default();
    let mut take = |frame: &[u8], record: usize, offset: u64| -> Result<(), FlowLogError> {
        match kind_name(frame[0]).map(&wanted) {
            Ok(false) => Ok(()),
            Ok(true) => {
                each(decode(frame, &mut cgroups).map_err(|reason| refuse(record, offset, reason))?)
            }
            Err(reason) => Err(refuse(record, offset, reason)),
        }
    };
    // Frames are taken where the reader's buffer holds them; only one split
    // across two fills of the buffer is put together here.
    let mut split_frame = Vec::new();
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FlowLogError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if split_frame.is_empty() {
            if buffer.is_empty() {
                return Ok(());
            }
            let whole =
                frame_length(buffer).map_err(|reason| refuse(record + 1, offset, reason))?;
            if let Some(length) = whole.filter(|&length| length <= buffer.len()) {
                record += 1;
                take(&buffer[..length], record, offset)?;
                reader.consume(length);
                offset += length as u64;
                continue;
            }
        }
        if buffer.is_empty() {
            return Err(refuse(record + 1, offset, RecordError::Truncated));
        }
        // What the frame still needs: the rest of its head, then its body.
        let needed = match frame_length(&split_frame) {
            Ok(Some(length)) => length - split_frame.len(),
            Ok(None) => FRAME_HEAD_BYTES - split_frame.len(),
            Err(reason) => return Err(refuse(record + 1, offset, reason)),
        };
        let taken = needed.min(buffer.len());
        split_frame.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
        if let Ok(Some(length)) = frame_length(&split_frame)
            && length == split_frame.len()
        {
            record += 1;
            take(&split_frame, record, offset)?;
            offset += length as u64;
            split_frame.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{daemon::flowlog::for_each_line_in, model::DnsName, model::IntervalStats};

    fn every_field() -> FlowRecord {
        FlowRecord {
            ts: "2026-11-20T10:00:05.250Z".parse().unwrap(),
            cgroup_id: 4242,
            cgroup: Some("/kubepods/podaaaa/cafe".into()),
            protocol: Protocol(6),
            local: Address {
                ip: "fd00::5".parse().unwrap(),
                port: 41000,
            },
            remote: Address {
                ip: "10.96.0.20".parse().unwrap(),
                port: 80,
            },
            initiator: Side::Local,
            client: Side::Remote,
            client_basis: Basis::HttpRequest,
            packets_in: 4,
            packets_out: u64::MAX,
            bytes_in: 300,
            bytes_out: 1 << 40,
            first_seen: "2026-11-20T10:00:00.001Z".parse().unwrap(),
            last_seen: "2026-11-20T10:00:01Z".parse().unwrap(),
            tcp_flags: "SYN|ACK|FIN".into(),
            handshake: Handshake::Refused,
            newly_established: true,
            new: false,
            overflow: true,
            ended: false,
            http: vec![
                HttpRequest {
                    method: "GET".into(),
                    path: "/api/v1/users/42".into(),
                    host: Some("cart".into()),
                },
                HttpRequest {
                    method: "POST".into(),
                    path: "/".into(),
                    host: None,
                },
            ],
            http_connection: true,
        }
    }

    fn dns() -> DnsName {
        DnsName {
            ts: "2026-11-20T10:00:05.000Z".into(),
            name: "api.example.com".into(),
            ip: "192.0.2.1".parse().unwrap(),
            server: Some("10.96.0.10".parse().unwrap()),
            cgroup: None,
        }
    }

    fn stats() -> IntervalStats {
        IntervalStats {
            ts: "2026-11-20T10:00:05.000Z".into(),
            table_entries: 3,
            table_capacity: 64,
            overflowed_connections: 1,
            drops: [("ring_full".to_string(), 2)].into(),
            dns_refused: Default::default(),
        }
    }

    /// A binary log of `lines`.
    fn log(lines: &[LogLineRef<'_>]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for &line in lines {
            encode(line, &mut bytes).unwrap();
        }
        bytes
    }

    /// Every record of `bytes` read `capacity` bytes at a time, or the error.
    fn read(bytes: &[u8], capacity: usize) -> Result<Vec<LogLine>, FlowLogError> {
        let mut lines = Vec::new();
        for_each_line_in(
            io::BufReader::with_capacity(capacity, bytes),
            Path::new("f.bin"),
            |_| true,
            |line| {
                lines.push(line);
                Ok(())
            },
        )?;
        Ok(lines)
    }

    fn json(lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|line| serde_json::to_string(&LogLineRef::from(line)).unwrap())
            .collect()
    }

    #[test]
    fn every_field_comes_back_whatever_the_reads() {
        let (flow, dns, stats) = (every_field(), dns(), stats());
        let mut bare = every_field();
        (bare.cgroup, bare.http, bare.tcp_flags) = (None, Vec::new(), String::new());
        let lines = [
            LogLineRef::Flow(&flow),
            LogLineRef::Dns(&dns),
            LogLineRef::Flow(&bare),
            LogLineRef::Stats(&stats),
        ];
        let bytes = log(&lines);
        let expected: Vec<String> = lines
            .iter()
            .map(|line| serde_json::to_string(line).unwrap())
            .collect();
        for capacity in [1, 3, 5, 6, 64, bytes.len(), 1 << 20] {
            let read = read(&bytes, capacity).unwrap();
            assert_eq!(json(&read), expected, "read {capacity} bytes at a time");
            let LogLine::Flow(back) = &read[0] else {
                panic!("{read:?}")
            };
            assert_eq!(back, &flow);
        }
        // A pass that wants only DNS answers gets only them.
        let mut kinds = Vec::new();
        for_each_line_in(
            &bytes[..],
            Path::new("f.bin"),
            |kind| kind == "dns",
            |line| {
                kinds.push(matches!(line, LogLine::Dns(_)));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(kinds, [true]);
    }

    #[test]
    fn the_bytes_of_a_record_are_the_format() {
        // Reordering FlowWire's fields or a model enum's variants changes
        // these bytes: a log written before would read as other records.
        let mut flow = every_field();
        flow.http.truncate(1);
        flow.local.ip = "10.244.0.5".parse().unwrap();
        let mut bytes = Vec::new();
        encode(LogLineRef::Flow(&flow), &mut bytes).unwrap();
        let millis = |time: Timestamp| varint(time.unix_millis());
        let text = |text: &str| [&[text.len() as u8][..], text.as_bytes()].concat();
        let expected = [
            &[b'f', 123, 0, 0, 0][..], // kind, length
            &millis(flow.ts),
            &varint(4242), // cgroup_id
            &[1],          // Some(cgroup)
            &text("/kubepods/podaaaa/cafe"),
            &[6],                // protocol
            &[0, 10, 244, 0, 5], // local: V4, octets
            &varint(41000),
            &[0, 10, 96, 0, 20, 80], // remote: V4, octets, port
            &[0, 1, 5],              // initiator Local, client Remote, basis HttpRequest
            &varint(4),
            &varint(u64::MAX),
            &varint(300),
            &varint(1 << 40),
            &millis(flow.first_seen),
            &millis(flow.last_seen),
            &text("SYN|ACK|FIN"),
            &[1],       // handshake Refused
            &[0b10101], // newly_established, overflow, http_connection
            &[1],       // one request
            &text("GET"),
            &text("/api/v1/users/42"),
            &[1],
            &text("cart"),
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    fn message(bytes: &[u8]) -> String {
        read(bytes, 1 << 20).unwrap_err().to_string()
            + &read(bytes, 1 << 20)
                .unwrap_err()
                .source()
                .map(|source| format!(": {source}"))
                .unwrap_or_default()
    }

    use std::error::Error as _;

    #[test]
    fn a_bad_record_is_named_with_its_number_and_offset() {
        let mut flow = every_field();
        flow.http.clear();
        let good = log(&[LogLineRef::Flow(&flow)]);
        let second = good.len() as u64;
        let with = |tail: &[u8]| [&good[..], tail].concat();
        let mut frame = Vec::new();
        encode(LogLineRef::Flow(&flow), &mut frame).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(&frame[..frame.len() - 1]), "the file ends inside it"),
            (with(&frame[..3]), "the file ends inside it"),
            (
                with(&[b'f', 0xff, 0xff, 0xff, 0x7f]),
                "bytes long, more than",
            ),
            (with(&[b'x', 0, 0, 0, 0]), "kind 0x78 is none"),
            (
                with(&[&[b'f', frame[1] + 1, 0, 0, 0][..], &frame[5..], &[0]].concat()),
                "1 bytes after the record",
            ),
            (with(&[b'f', 1, 0, 0, 0, 0x80]), "no flow record"),
            (with(&[b'd', 2, 0, 0, 0, b'{', b'}']), "no JSON of its kind"),
        ];
        for (bytes, reason) in cases {
            let message = message(&bytes);
            assert!(
                message.starts_with(&format!("f.bin: record 2 (at byte {second})"))
                    && message.contains(reason),
                "{reason}: {message}"
            );
            // Read in small pieces, the same record is named.
            let small = read(&bytes, 3).unwrap_err().to_string();
            assert!(small.starts_with("f.bin: record 2 "), "{small}");
        }
        // Marks and times a newer writer (or a forger) might send.
        let mut marked = frame.clone();
        let marks_at = marked.len() - 2; // before the count of requests
        assert_eq!(marked[marks_at], 0b10101);
        marked[marks_at] |= 0x80;
        assert!(message(&with(&marked)).contains("flags 0x95"));
        let mut late = every_field();
        late.ts = Timestamp::from_unix_millis(END_OF_TIME - 1).unwrap();
        let mut bytes = Vec::new();
        encode(LogLineRef::Flow(&late), &mut bytes).unwrap();
        // One millisecond later than the last time RFC 3339 writes.
        let (at, last) = (5, varint(END_OF_TIME - 1));
        assert_eq!(bytes[at..at + last.len()], last[..]);
        bytes.splice(at..at + last.len(), varint(END_OF_TIME));
        bytes[1] = (bytes.len() - 5) as u8;
        assert!(message(&with(&bytes)).contains("past the year 9999"));
    }

    #[test]
    fn every_cut_or_flipped_byte_of_a_record_is_refused_or_read_never_panics() {
        let mut frame = Vec::new();
        encode(LogLineRef::Flow(&every_field()), &mut frame).unwrap();
        let body = &frame[FRAME_HEAD_BYTES..];
        for length in 0..body.len() {
            assert!(
                decode_flow(&body[..length], &mut SharedTexts::default()).is_err(),
                "cut to {length}"
            );
        }
        // A forger's bytes: each byte of the body set to each value.
        for at in 0..body.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut forged = body.to_vec();
                forged[at] = value;
                let _ = decode_flow(&forged, &mut SharedTexts::default());
            }
        }
    }

    const END_OF_TIME: u64 = 253_402_300_800_000;

    fn varint(mut value: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        while value >= 0x80 {
            bytes.push(value as u8 | 0x80);
            value >>= 7;
        }
        bytes.push(value as u8);
        bytes
    }

    #[test]
    fn a_log_that_only_looks_binary_is_refused_by_name() {
        for (bytes, expected) in [
            (
                &b"NETFLOW\x02"[..],
                "version 2, which this agent cannot read",
            ),
            (
                &b"NETFL"[..],
                "starts as a binary flow log does, but is none",
            ),
            (&b"NETFLOWS and more"[..], "cannot read"),
        ] {
            let message = read(bytes, 1 << 20).unwrap_err().to_string();
            assert!(
                message.starts_with("f.bin ") && message.contains(expected),
                "{message}"
            );
        }
        assert!(
            read(MAGIC, 1).unwrap().is_empty(),
            "a log with no records yet"
        );
    }
}
