//! The peers' HTTP/1.1: a tiny responder the echo servers turn into when a
//! connection's first bytes are a request, and a keep-alive client that
//! makes a list of requests on one connection.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

/// Methods that begin a request (what the kernel looks for).
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Heads longer than this are refused (the responder is for the lab only).
const MAX_HEAD: usize = 16 * 1024;

/// Whether `bytes` begin an HTTP/1.x request (a method and a space).
pub fn begins_request(bytes: &[u8]) -> bool {
    METHODS.iter().any(|method| {
        bytes.len() > method.len()
            && bytes.starts_with(method.as_bytes())
            && bytes[method.len()] == b' '
    })
}

/// Reads on until `received` holds a whole first line (or 8 KiB, or
/// nothing comes for 200 ms), then says whether it is an HTTP/1.x request
/// line.
pub fn complete_request_line(stream: &mut TcpStream, received: &mut Vec<u8>) -> io::Result<bool> {
    let mut buffer = [0u8; 4096];
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    while find(received, b"\r\n").is_none() && received.len() < 8 * 1024 {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(err) => return Err(err),
        }
    }
    stream.set_read_timeout(None)?;
    let Some(end) = find(received, b"\r\n") else {
        return Ok(false);
    };
    let Ok(line) = std::str::from_utf8(&received[..end]) else {
        return Ok(false);
    };
    let parts: Vec<&str> = line.split(' ').collect();
    Ok(parts.len() == 3
        && METHODS.contains(&parts[0])
        && parts[1].bytes().all(|byte| byte.is_ascii_graphic())
        && matches!(parts[2], "HTTP/1.0" | "HTTP/1.1"))
}

/// Answers requests on `stream` until the client closes, `received` being
/// what was already read: `200 OK` with a short body to each, the request's
/// body (Content-Length) read and dropped.
pub fn respond(mut stream: TcpStream, mut received: Vec<u8>) -> io::Result<()> {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let Some(end) = find(&received, b"\r\n\r\n") else {
            if received.len() > MAX_HEAD {
                return Ok(());
            }
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(());
            }
            received.extend_from_slice(&buffer[..read]);
            continue;
        };
        let head = String::from_utf8_lossy(&received[..end]).into_owned();
        let body_len = content_length(&head);
        let mut rest = received.split_off(end + 4);
        while rest.len() < body_len {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(());
            }
            rest.extend_from_slice(&buffer[..read]);
        }
        received = rest.split_off(body_len);
        let status_body = if head.starts_with("HEAD ") { "" } else { "ok" };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n{status_body}"
        );
        stream.write_all(response.as_bytes())?;
        if head
            .lines()
            .any(|line| line.eq_ignore_ascii_case("connection: close"))
        {
            return Ok(());
        }
    }
}

/// One request of a client's list: `METHOD PATH`.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
}

impl std::str::FromStr for Request {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (method, path) = text
            .split_once(' ')
            .ok_or_else(|| format!("{text:?} is not METHOD PATH"))?;
        if !METHODS.contains(&method) || !path.starts_with('/') && path != "*" {
            return Err(format!(
                "{text:?} is not METHOD PATH (one of {METHODS:?}, a path from /)"
            ));
        }
        Ok(Request {
            method: method.into(),
            path: path.into(),
        })
    }
}

/// Makes every request in turn on one keep-alive connection to `addr`,
/// each read to the end of its response. With `split_at`, each request's
/// first `split_at` bytes go in a segment of their own (a request split
/// over two segments). Returns the statuses.
pub fn requests(
    addr: SocketAddr,
    host: &str,
    requests: &[Request],
    split_at: Option<usize>,
) -> io::Result<Vec<u16>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut statuses = Vec::with_capacity(requests.len());
    let mut buffer = [0u8; 4096];
    for request in requests {
        let body = if matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
            "{}"
        } else {
            ""
        };
        let text = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: netflow-lab\r\nContent-Length: {}\r\n\r\n{body}",
            request.method,
            request.path,
            body.len()
        );
        match split_at.filter(|at| *at < text.len()) {
            Some(at) => {
                stream.write_all(&text.as_bytes()[..at])?;
                // Apart in time too, so the stack sends two segments.
                thread::sleep(Duration::from_millis(20));
                stream.write_all(&text.as_bytes()[at..])?;
            }
            None => stream.write_all(text.as_bytes())?,
        }
        let mut response = Vec::new();
        let (status, body_len, head_end) = loop {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed before answering",
                ));
            }
            response.extend_from_slice(&buffer[..read]);
            if let Some(end) = find(&response, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&response[..end]).into_owned();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(0);
                // A HEAD response says the length its GET would have.
                let body_len = if request.method == "HEAD" {
                    0
                } else {
                    content_length(&head)
                };
                break (status, body_len, end + 4);
            }
        };
        while response.len() < head_end + body_len {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            response.extend_from_slice(&buffer[..read]);
        }
        statuses.push(status);
    }
    Ok(statuses)
}

/// A message head's Content-Length (0 without one).
fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
