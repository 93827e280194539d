//! `/graph` kept gzip-compressed: the JSON of a large graph is tens of
//! megabytes and compresses about tenfold. Clients that accept gzip (`graph
//! pull`) get the shared bytes as they are; others get it inflated as it is
//! sent, a chunk at a time, so no request ever holds a whole copy.

use std::{
    io::Read as _,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf as _, Bytes};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use http_body::{Body, Frame};
use serde::Serialize;

/// How much of the inflated graph one frame carries.
const CHUNK_BYTES: usize = 64 * 1024;

/// JSON kept gzip-compressed, with its length inflated (a response inflated
/// as it is sent still says its Content-Length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GzipJson {
    pub gzip: Bytes,
    pub json_bytes: u64,
}

impl GzipJson {
    pub fn is_empty(&self) -> bool {
        self.gzip.is_empty()
    }
}

/// JSON handed to the compressor at once. serde_json writes a token at a
/// time, and flate2 zeroes its whole 32 KiB output buffer on every write it
/// is given: unbuffered, that was 85% of the agent's CPU at 100 000 edges.
const JSON_BUFFER_BYTES: usize = 256 * 1024;

/// `value` as gzip-compressed JSON (fast compression: rendered every interval).
pub fn gzip_json(value: &impl Serialize) -> std::io::Result<GzipJson> {
    let mut counted = Counted {
        inner: GzEncoder::new(Vec::new(), Compression::fast()),
        bytes: 0,
    };
    let mut buffered = std::io::BufWriter::with_capacity(JSON_BUFFER_BYTES, &mut counted);
    serde_json::to_writer(&mut buffered, value)?;
    std::io::Write::flush(&mut buffered)?;
    drop(buffered);
    Ok(GzipJson {
        gzip: Bytes::from(counted.inner.finish()?),
        json_bytes: counted.bytes,
    })
}

/// A writer that counts what goes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A response body inflating shared gzip bytes as the client reads.
pub struct Inflate {
    decoder: Option<GzDecoder<bytes::buf::Reader<Bytes>>>,
    /// What is left to send (from the inflated length).
    remaining: u64,
}

impl Inflate {
    pub fn new(compressed: &GzipJson) -> Self {
        Self {
            decoder: Some(GzDecoder::new(compressed.gzip.clone().reader())),
            remaining: compressed.json_bytes,
        }
    }
}

impl Body for Inflate {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Poll::Ready(None);
        };
        let mut chunk = vec![0; CHUNK_BYTES];
        let read = match decoder.read(&mut chunk) {
            Ok(read) => read,
            Err(err) => {
                self.decoder = None;
                return Poll::Ready(Some(Err(err)));
            }
        };
        if read == 0 {
            self.decoder = None;
            return Poll::Ready(None);
        }
        chunk.truncate(read);
        self.remaining = self.remaining.saturating_sub(read as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[test]
    fn inflating_gives_back_the_json_in_chunks() {
        let value: Vec<u64> = (0..200_000).collect();
        let json = serde_json::to_vec(&value).unwrap();
        let compressed = gzip_json(&value).unwrap();
        assert!(compressed.gzip.len() * 2 < json.len());
        assert_eq!(compressed.json_bytes, json.len() as u64);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut body = Inflate::new(&compressed);
        assert_eq!(body.size_hint().exact(), Some(json.len() as u64));
        let (mut inflated, mut frames) = (Vec::new(), 0);
        runtime.block_on(async {
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                assert!(data.len() <= CHUNK_BYTES);
                inflated.extend_from_slice(&data);
                frames += 1;
            }
        });
        assert_eq!(inflated, json);
        assert!(frames > 1);
    }

    #[test]
    fn a_corrupt_stream_ends_in_an_error() {
        let good = gzip_json(&(0..50_000).collect::<Vec<u64>>()).unwrap();
        let mut compressed = good.gzip.to_vec();
        let middle = compressed.len() / 2;
        compressed[middle..]
            .iter_mut()
            .for_each(|byte| *byte = !*byte);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut body = Inflate::new(&GzipJson {
            gzip: Bytes::from(compressed),
            ..good
        });
        let failed = runtime.block_on(async {
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    return true;
                }
            }
            false
        });
        assert!(failed);
    }
}
