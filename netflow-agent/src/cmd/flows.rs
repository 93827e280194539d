//! `flows convert`: flow logs rewritten in one format.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    daemon::flowlog::{FlowLogEncoder, FlowLogError, for_each_line},
    graph::file::write_atomically_buffered,
    model::FlowLogFormat,
};

/// Every record of `inputs`, in order, to `output` in `format`; a file is
/// replaced only once every input has been read whole.
pub fn convert(inputs: &[PathBuf], format: FlowLogFormat, output: &Path) -> anyhow::Result<()> {
    let mut records = 0u64;
    // Why the output was abandoned, when an input could not be read.
    let mut unreadable: Option<FlowLogError> = None;
    let mut write = |out: &mut dyn Write| -> io::Result<()> {
        let mut encoder = FlowLogEncoder::new(format);
        encoder.start(out)?;
        for input in inputs {
            let mut write_failed = None;
            let read = for_each_line(input, |line| {
                records += 1;
                encoder.write(out, line.into()).map_err(|err| {
                    write_failed = Some(err);
                    FlowLogError::Stopped
                })
            });
            if let Some(err) = write_failed {
                return Err(err);
            }
            if let Err(err) = read {
                unreadable = Some(err);
                return Err(io::Error::other("an input could not be read"));
            }
        }
        Ok(())
    };
    let written = if output == Path::new("-") {
        super::to_stdout(|out| write(out))
    } else {
        write_atomically_buffered(output, 0o644, |out| write(out))
            .with_context(|| format!("cannot write {}", output.display()))
    };
    if let Some(err) = unreadable {
        return Err(err.into());
    }
    written?;
    eprintln!("{}: {records} records", output.display());
    Ok(())
}
