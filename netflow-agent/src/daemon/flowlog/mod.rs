//! The flow log: every connection that moved, interval by interval.
//!
//! Each poll interval writes one `flow` record per connection that moved
//! during the interval (counters are that interval's deltas), one `dns`
//! record per name answered, then one `stats` record with the kernel's
//! "could not record" counters. A log is JSON lines (`lines.rs`: one object
//! per line, its `type` first) or binary (`binary.rs`: the same records,
//! several times cheaper to read); readers tell them apart by the first
//! bytes and hand on the same records.

mod binary;
mod lines;
mod wire;

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::mpsc,
};

use serde::{Deserialize, Serialize};

pub use self::binary::RecordError;
use crate::model::{DnsName, FlowLogFormat, FlowRecord, IntervalStats};

/// A record to write, borrowed.
#[derive(Clone, Copy, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogLineRef<'a> {
    Flow(&'a FlowRecord),
    Dns(&'a DnsName),
    Stats(&'a IntervalStats),
}

impl<'a> From<&'a LogLine> for LogLineRef<'a> {
    fn from(line: &'a LogLine) -> Self {
        match line {
            LogLine::Flow(flow) => Self::Flow(flow),
            LogLine::Dns(name) => Self::Dns(name),
            LogLine::Stats(stats) => Self::Stats(stats),
        }
    }
}

/// Writes records in one format to any writer: the file's opening, then
/// record by record.
#[derive(Debug)]
pub struct FlowLogEncoder {
    format: FlowLogFormat,
    /// A binary record's frame, built before it is written.
    frame: Vec<u8>,
}

impl FlowLogEncoder {
    pub fn new(format: FlowLogFormat) -> Self {
        Self {
            format,
            frame: Vec::new(),
        }
    }

    /// What a log of this format opens with (binary: its magic bytes).
    pub fn start(&self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        match self.format {
            FlowLogFormat::Json => Ok(()),
            FlowLogFormat::Binary => out.write_all(binary::MAGIC),
        }
    }

    pub fn write(
        &mut self,
        out: &mut (impl Write + ?Sized),
        line: LogLineRef<'_>,
    ) -> io::Result<()> {
        match self.format {
            FlowLogFormat::Json => {
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")
            }
            FlowLogFormat::Binary => {
                self.frame.clear();
                binary::encode(line, &mut self.frame)?;
                out.write_all(&self.frame)
            }
        }
    }
}

/// Writes a flow log to stdout (`-`) or a file, interval by interval.
pub struct FlowLogWriter {
    out: Box<dyn Write + Send>,
    path: PathBuf,
    encoder: FlowLogEncoder,
}

impl FlowLogWriter {
    pub fn create(path: &Path, format: FlowLogFormat) -> io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            Box::new(BufWriter::new(File::create(path)?))
        };
        let encoder = FlowLogEncoder::new(format);
        encoder.start(&mut out)?;
        out.flush()?;
        Ok(Self {
            out,
            path: path.to_path_buf(),
            encoder,
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
            self.encoder.write(&mut self.out, LogLineRef::Flow(flow))?;
        }
        for name in dns {
            self.encoder.write(&mut self.out, LogLineRef::Dns(name))?;
        }
        self.encoder
            .write(&mut self.out, LogLineRef::Stats(stats))?;
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

#[derive(Debug, thiserror::Error)]
pub enum FlowLogError {
    #[error("cannot read flow log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: not a flow log line")]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: record {record} (at byte {offset}) is not a flow log record")]
    Record {
        path: PathBuf,
        record: usize,
        offset: u64,
        #[source]
        reason: RecordError,
    },
    #[error("{path} starts as a binary flow log does, but is none")]
    NotAFlowLog { path: PathBuf },
    #[error(
        "{path} is a binary flow log of version {version}, which this agent cannot read (it reads version 1)"
    )]
    NewerVersion { path: PathBuf, version: u8 },
    #[error("{path}:{line}: a line longer than {limit} bytes is no flow log line")]
    LineTooLong {
        path: PathBuf,
        line: usize,
        limit: usize,
    },
    /// Never returned to a user: the reader's signal that its caller
    /// stopped taking lines, and a caller's `each` may return it to stop
    /// the read for a reason of its own (which it then reports).
    #[error("the flow log's reader was stopped")]
    Stopped,
}

/// Reads a whole flow log; the error names the file and line.
pub fn read_flow_log(path: &Path) -> Result<Vec<LogLine>, FlowLogError> {
    let mut lines = Vec::new();
    for_each_line(path, |line| {
        lines.push(line.clone());
        Ok(())
    })?;
    Ok(lines)
}

/// Streams a flow log line by line (memory flat in its length), handing
/// each line whose type `wanted` accepts to `each`; the error names the
/// file and line.
pub fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&LogLine) -> Result<(), FlowLogError>,
) -> Result<(), FlowLogError> {
    for_each_line_of(path, |_| true, &mut each)
}

/// Log lines parsed ahead of the caller, in batches of this many: a week's
/// log is millions of lines, and handing them over one by one would cost
/// more than parsing them.
const LINES_PER_BATCH: usize = 1024;
/// Batches parsed ahead of the caller at most: memory stays flat however
/// long the log is.
const BATCHES_AHEAD: usize = 4;

/// As [`for_each_line`], parsing only lines of the types `wanted` accepts
/// (`"flow"`, `"dns"`, `"stats"`): lines written by this agent start with
/// their type, so the others are skipped unparsed. The file is read and
/// parsed on a thread of its own while `each` works on the lines before.
pub fn for_each_line_of(
    path: &Path,
    wanted: impl Fn(&str) -> bool + Send,
    mut each: impl FnMut(&LogLine) -> Result<(), FlowLogError>,
) -> Result<(), FlowLogError> {
    let file = File::open(path).map_err(|source| FlowLogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (batches, parsed) = mpsc::sync_channel::<Vec<LogLine>>(BATCHES_AHEAD);
    // Batches go back to the reader once `each` has seen them: their lines
    // are dropped on the thread that made them (freed on another core, a
    // line's strings cost both cores), and their room is filled again.
    let (read_batches, handed_back) = mpsc::sync_channel::<Vec<LogLine>>(BATCHES_AHEAD + 1);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let empty_batch = || match handed_back.try_recv() {
                Ok(mut batch) => {
                    batch.clear();
                    batch
                }
                Err(_) => Vec::with_capacity(LINES_PER_BATCH),
            };
            let mut batch = empty_batch();
            let mut caller_stopped = false;
            let read = for_each_line_in(
                io::BufReader::with_capacity(1 << 20, file),
                path,
                wanted,
                |line| {
                    batch.push(line);
                    if batch.len() == LINES_PER_BATCH {
                        let full = std::mem::replace(&mut batch, empty_batch());
                        if batches.send(full).is_err() {
                            caller_stopped = true;
                            return Err(FlowLogError::Stopped);
                        }
                    }
                    Ok(())
                },
            );
            if !batch.is_empty() {
                // The lines before a bad one, as a reader in one thread
                // would have handed them (unless the caller stopped).
                let _ = batches.send(batch);
            }
            if caller_stopped { Ok(()) } else { read }
        });
        let mut handed = Ok(());
        'batches: for batch in parsed.iter() {
            for line in &batch {
                if let Err(err) = each(line) {
                    handed = Err(err);
                    break 'batches;
                }
            }
            // Dropped here when the reader has enough in hand.
            let _ = read_batches.try_send(batch);
        }
        // Stops the reader at its next batch when `each` failed.
        drop(parsed);
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // Whichever came first in the log: `each` failed on a line before
        // any the reader could not read (read in one thread, the reader
        // would not have reached it).
        handed.and(read)
    })
}

/// As [`for_each_line_of`], from any reader, in either format (told by
/// its first bytes); `path` names it in errors.
pub fn for_each_line_in(
    mut reader: impl io::BufRead,
    path: &Path,
    wanted: impl Fn(&str) -> bool,
    each: impl FnMut(LogLine) -> Result<(), FlowLogError>,
) -> Result<(), FlowLogError> {
    let read_error = |source| FlowLogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let head = reader.fill_buf().map_err(read_error)?;
    let peeked = head.len().min(binary::NAME.len());
    if peeked == 0 || head[..peeked] != binary::NAME[..peeked] {
        return lines::for_each_line_in(reader, path, wanted, each);
    }
    // A binary log (no JSON line starts with its name's first letter).
    let mut magic = [0; binary::MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => FlowLogError::NotAFlowLog {
                path: path.to_path_buf(),
            },
            _ => read_error(err),
        })?;
    if magic[..binary::NAME.len()] != binary::NAME[..] {
        return Err(FlowLogError::NotAFlowLog {
            path: path.to_path_buf(),
        });
    }
    if magic != *binary::MAGIC {
        return Err(FlowLogError::NewerVersion {
            path: path.to_path_buf(),
            version: magic[binary::NAME.len()],
        });
    }
    binary::for_each_record_in(reader, path, wanted, each)
}

#[cfg(test)]
mod tests {
    use super::{lines::MAX_LINE_BYTES, *};

    /// A log of `lines` DNS lines, line `bad` (1-based) not JSON.
    fn log(name: &str, lines: usize, bad: Option<usize>) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("netflow-flowlog-{}-{name}", std::process::id()));
        let mut text = String::new();
        for number in 1..=lines {
            if Some(number) == bad {
                text.push_str("{\"type\":\"dns\",\"name\":\n");
            } else {
                text.push_str(&format!(
                    "{{\"type\":\"dns\",\"ts\":\"2026-11-20T10:00:00Z\",\"name\":\"n{number}.example\",\"ip\":\"192.0.2.1\"}}\n"
                ));
            }
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_line_comes_in_order_across_batches() {
        let path = log("order", 3 * LINES_PER_BATCH + 5, None);
        let mut names = Vec::new();
        for_each_line_of(
            &path,
            |_| true,
            |line| {
                let LogLine::Dns(name) = line else {
                    panic!("not a DNS line")
                };
                names.push(name.name.clone());
                Ok(())
            },
        )
        .unwrap();
        let expected: Vec<String> = (1..=3 * LINES_PER_BATCH + 5)
            .map(|number| format!("n{number}.example"))
            .collect();
        assert_eq!(names, expected);
        std::fs::remove_file(path).unwrap();
    }

    /// Reads `path`, the caller failing on line `fail_at`: how many lines
    /// it was handed, and the outcome.
    fn hand_over(path: &Path, fail_at: Option<usize>) -> (usize, Result<(), FlowLogError>) {
        let mut handed = 0;
        let read = for_each_line_of(
            path,
            |_| true,
            |_| {
                handed += 1;
                if Some(handed) == fail_at {
                    return Err(FlowLogError::Read {
                        path: "the caller's".into(),
                        source: io::Error::other("caller stopped"),
                    });
                }
                Ok(())
            },
        );
        (handed, read)
    }

    #[test]
    fn a_bad_line_is_named_after_every_line_before_it() {
        let bad = 2 * LINES_PER_BATCH + 7;
        let path = log("bad", 3 * LINES_PER_BATCH, Some(bad));
        let (handed, read) = hand_over(&path, None);
        assert_eq!(handed, bad - 1);
        let message = read.unwrap_err().to_string();
        assert!(
            message.contains(&format!("{}:{bad}:", path.display())),
            "{message}"
        );
        std::fs::remove_file(path).unwrap();
    }

    /// Reads `f.jsonl` from `reader`: the names of the DNS lines handed
    /// over, and the outcome.
    fn dns_names_in(reader: impl io::BufRead) -> (Vec<String>, Result<(), FlowLogError>) {
        let mut names = Vec::new();
        let read = for_each_line_in(
            reader,
            Path::new("f.jsonl"),
            |_| true,
            |line| {
                if let LogLine::Dns(name) = line {
                    names.push(name.name);
                }
                Ok(())
            },
        );
        (names, read)
    }

    #[test]
    fn lines_split_across_reads_come_whole_and_an_endless_one_is_refused() {
        let line = |number: usize| {
            format!(
                r#"{{"type":"dns","ts":"2026-11-20T10:00:00Z","name":"n{number}.example","ip":"192.0.2.1"}}"#
            )
        };
        // Blank lines, CRLF line ends, the last line without one.
        let text = format!("{}\n\n{}\r\n{}\n{}", line(1), line(2), line(3), line(4));
        for capacity in [1, 7, 64, text.len(), 1 << 20] {
            let (names, read) =
                dns_names_in(io::BufReader::with_capacity(capacity, text.as_bytes()));
            read.unwrap();
            assert_eq!(
                names,
                ["n1.example", "n2.example", "n3.example", "n4.example"],
                "read {capacity} bytes at a time"
            );
        }
        // A line error names the line across reads too.
        let bad = format!("{}\n{}\n{{\"type\":\"dns\"\n", line(1), line(2));
        let (names, read) = dns_names_in(io::BufReader::with_capacity(5, bad.as_bytes()));
        assert_eq!(names.len(), 2);
        let message = read.unwrap_err().to_string();
        assert!(message.starts_with("f.jsonl:3: "), "{message}");
        // A file without line ends is not held whole.
        let endless = io::Read::take(io::repeat(b' '), MAX_LINE_BYTES as u64 + 1);
        let (_, read) = dns_names_in(io::BufReader::new(endless));
        let message = read.unwrap_err().to_string();
        assert!(
            message.starts_with("f.jsonl:1: a line longer than"),
            "{message}"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named_where_it_is_read() {
        let good =
            r#"{"type":"dns","ts":"2026-11-20T10:00:00Z","name":"a.example","ip":"192.0.2.1"}"#;
        let mut text = format!("{good}\n").into_bytes();
        text.extend_from_slice(b"{\"type\":\"dns\",\"ts\":\"2026-11-20T10:00:00Z\",\"name\":\"b\xff\",\"ip\":\"192.0.2.1\"}\n");
        // A pass that does not want DNS lines skips it unread.
        let unwanted = for_each_line_in(
            &text[..],
            Path::new("f.jsonl"),
            |kind| kind == "flow",
            |_| panic!("no line is wanted"),
        );
        assert!(unwanted.is_ok(), "{unwanted:?}");
        let (names, read) = dns_names_in(&text[..]);
        assert_eq!(names, ["a.example"]);
        let message = read.unwrap_err().to_string();
        assert!(message.starts_with("f.jsonl:2: "), "{message}");
    }

    #[test]
    fn the_callers_error_stops_the_read_and_is_returned() {
        let path = log("stop", 3 * LINES_PER_BATCH, None);
        let (handed, read) = hand_over(&path, Some(LINES_PER_BATCH + 3));
        assert_eq!(handed, LINES_PER_BATCH + 3);
        let err = read.unwrap_err();
        assert!(err.to_string().contains("the caller's"), "{err}");
        std::fs::remove_file(&path).unwrap();
        // Before a bad line further on (read, and its error met, before the
        // caller is handed the first line), the caller's error is the one.
        let path = log("stop-before-bad", 3 * LINES_PER_BATCH, Some(10));
        let (_, read) = hand_over(&path, Some(1));
        let err = read.unwrap_err();
        assert!(err.to_string().contains("the caller's"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let missing = for_each_line_of(&path, |_| true, |_| Ok(())).unwrap_err();
        assert!(
            missing.to_string().contains(&path.display().to_string()),
            "{missing}"
        );
    }
}
