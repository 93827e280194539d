//! The flow log: one JSON object per line.
//!
//! Each poll interval writes one `"type":"flow"` line per connection that
//! moved during the interval (counters are that interval's deltas), then one
//! `"type":"stats"` line with the kernel's "could not record" counters.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::{DnsName, FlowRecord, IntervalStats};

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
}

/// Reads a whole flow log; the error names the file and line.
pub fn read_flow_log(path: &Path) -> Result<Vec<LogLine>, FlowLogError> {
    let text = std::fs::read_to_string(path).map_err(|source| FlowLogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|source| FlowLogError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                source,
            })
        })
        .collect()
}
