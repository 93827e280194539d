//! Reading the head of an HTTP/1.x request the kernel passed up: method,
//! path (without query or fragment) and Host.
//!
//! The kernel passes up any TCP payload that begins with a method and a
//! space; binary protocols can begin so by chance. A head is believed only
//! when its whole request line is there and well formed: a known method,
//! one space, a request target of visible ASCII (origin form `/...`,
//! absolute form `http://host/...`, or `*` for OPTIONS), one space,
//! `HTTP/1.0` or `HTTP/1.1`, CRLF. Host comes from a complete `Host:`
//! header line within the head, else from an absolute-form target.

use crate::model::HttpRequest;

/// Methods the kernel passes up (and only these).
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Longest Host value believed (a DNS name, a port).
const MAX_HOST: usize = 261;

/// The request in `head`, or `None` when it is not a whole, well-formed
/// HTTP/1.x request line.
pub fn parse(head: &[u8]) -> Option<HttpRequest> {
    let line_end = find(head, b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let method = METHODS.into_iter().find(|known| *known == method)?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return None;
    }
    if target.is_empty() || !target.bytes().all(|byte| byte.is_ascii_graphic()) {
        return None;
    }
    let (mut host, path) = if target == "*" {
        if method != "OPTIONS" {
            return None;
        }
        (None, "*".to_string())
    } else if let Some(rest) = target.strip_prefix("http://") {
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        (valid_host(authority), without_query(path))
    } else if target.starts_with('/') {
        (None, without_query(target))
    } else {
        return None;
    };
    // Headers: complete lines only, up to the blank line or the cut.
    let mut rest = &head[line_end + 2..];
    while let Some(end) = find(rest, b"\r\n") {
        if end == 0 {
            break;
        }
        if let Ok(header) = std::str::from_utf8(&rest[..end])
            && let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("host")
        {
            if let Some(value) = valid_host(value.trim()) {
                host = Some(value);
            }
            break;
        }
        rest = &rest[end + 2..];
    }
    Some(HttpRequest {
        method: method.to_string(),
        path,
        host,
    })
}

fn without_query(target: &str) -> String {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let path = &target[..end];
    if path.is_empty() { "/" } else { path }.to_string()
}

/// A Host value (name or address, optional port), lower-cased.
fn valid_host(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_HOST
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-_:[]".contains(&byte));
    ok.then(|| value.to_ascii_lowercase())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, host: Option<&str>) -> Option<HttpRequest> {
        Some(HttpRequest {
            method: method.into(),
            path: path.into(),
            host: host.map(str::to_string),
        })
    }

    #[test]
    fn request_lines_are_read() {
        assert_eq!(
            parse(b"GET /api/v1/users/42?full=1 HTTP/1.1\r\nHost: API.example.com\r\nAccept: */*\r\n\r\n"),
            request("GET", "/api/v1/users/42", Some("api.example.com"))
        );
        assert_eq!(
            parse(b"POST /orders HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"),
            request("POST", "/orders", None)
        );
        assert_eq!(
            parse(b"GET http://proxy.example:8080/a/b#x HTTP/1.1\r\n"),
            request("GET", "/a/b", Some("proxy.example:8080"))
        );
        assert_eq!(
            parse(b"OPTIONS * HTTP/1.1\r\nhost: svc\r\n"),
            request("OPTIONS", "*", Some("svc"))
        );
        // A Host header cut by the head's end is not believed.
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: api.exa"),
            request("GET", "/", None)
        );
    }

    #[test]
    fn what_only_begins_like_a_request_is_not_one() {
        for head in [
            &b"GET "[..],
            b"GET /no-line-end HTTP/1.1",
            b"GET  /two-spaces HTTP/1.1\r\n",
            b"GET /x HTTP/2.0\r\n",
            b"GET /x HTTP/1.1 extra\r\n",
            b"GET x HTTP/1.1\r\n",
            b"GET \x00\x01\x02\x03 HTTP/1.1\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n",
            b"FETCH /x HTTP/1.1\r\n",
            b"get /x HTTP/1.1\r\n",
            b"POST * HTTP/1.1\r\n",
            b"GET \x7f\xff\xfe binary framing that happens to start so",
        ] {
            assert_eq!(parse(head), None, "{:?}", String::from_utf8_lossy(head));
        }
    }
}
