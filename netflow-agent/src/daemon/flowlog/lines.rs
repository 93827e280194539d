//! The flow log as JSON lines, read: one object per line, its `type` first.

use std::{io, path::Path};

use super::{FlowLogError, LogLine};

/// The longest line read: the agent writes lines of a few hundred bytes
/// (a flow's HTTP requests, each head capped, make the longest); a file
/// without line ends is not read into memory whole.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Streams the lines of `reader`, handing each whose type `wanted` accepts
/// to `each`; errors name `path` and the line.
pub fn for_each_line_in(
    mut reader: impl io::BufRead,
    path: &Path,
    wanted: impl Fn(&str) -> bool,
    mut each: impl FnMut(LogLine) -> Result<(), FlowLogError>,
) -> Result<(), FlowLogError> {
    let read_error = |source| FlowLogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut number = 0;
    let mut take = |line: &[u8]| -> Result<(), FlowLogError> {
        number += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            return Ok(());
        }
        if let Some(kind) = leading_type(text)
            && !wanted(kind)
        {
            return Ok(());
        }
        let parsed = parse_line(text).map_err(|source| FlowLogError::Line {
            path: path.to_path_buf(),
            line: number,
            source,
        })?;
        each(parsed)
    };
    // Lines are taken where the reader's buffer holds them: a week's log is
    // gigabytes, and the lines a pass skips (a pass that wants only DNS
    // answers skips nearly all) are never copied. Only a line split across
    // two fills of the buffer is put together here.
    let mut split_line = Vec::new();
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(read_error(err)),
        };
        if buffer.is_empty() {
            // The last line, without a line end.
            if split_line.is_empty() {
                return Ok(());
            }
            return take(&split_line);
        }
        let Some(end) = memchr::memchr(b'\n', buffer) else {
            if split_line.len() + buffer.len() > MAX_LINE_BYTES {
                return Err(FlowLogError::LineTooLong {
                    path: path.to_path_buf(),
                    line: number + 1,
                    limit: MAX_LINE_BYTES,
                });
            }
            split_line.extend_from_slice(buffer);
            let length = buffer.len();
            reader.consume(length);
            continue;
        };
        if split_line.is_empty() {
            take(&buffer[..end])?;
        } else {
            split_line.extend_from_slice(&buffer[..end]);
            take(&split_line)?;
            split_line.clear();
        }
        reader.consume(end + 1);
    }
}

/// The type of a line that starts with it, as this agent writes them.
fn leading_type(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(br#"{"type":""#)?;
    let end = rest.iter().position(|&byte| byte == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// One line. A flow line (nearly all of a log) that starts with its type is
/// read straight into a `FlowRecord` (which ignores the `type` field): the
/// tagged-enum path buffers every field first and is several times slower.
///
/// The line is checked as UTF-8 whole, once: read as bytes, the parser
/// would check each of its ~40 strings (keys too) one call at a time. A line
/// that is not UTF-8 is left to the parser, whose error says where.
fn parse_line(line: &[u8]) -> Result<LogLine, serde_json::Error> {
    let Ok(text) = std::str::from_utf8(line) else {
        return serde_json::from_slice(line);
    };
    if leading_type(line) == Some("flow") {
        return serde_json::from_str(text).map(LogLine::Flow);
    }
    serde_json::from_str(text)
}
