//! The HTTP calls seen on an edge: method and path template, with counts.
//!
//! A path template is a regular expression (as Cilium's L7 rules take
//! them) in which each variable segment (a number, a UUID, a hex id, a
//! long token) is `[^/]+`: `/api/v1/users/42` and `/api/v1/users/7` are one
//! call, `/api/v1/users/[^/]+`. An edge keeps at most
//! [`MAX_CALLS_PER_EDGE`]; past it every template falls back to its first
//! segment (`/api/.*`), then to `/.*`: the result depends only on the set
//! of calls, never on the order they came in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Distinct (method, template) pairs one edge keeps.
pub const MAX_CALLS_PER_EDGE: usize = 32;

/// What stands for one variable segment.
pub const VARIABLE_SEGMENT: &str = "[^/]+";

/// How often one call was seen, and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    pub requests: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

impl CallStats {
    fn absorb(&mut self, other: &CallStats) {
        self.requests += other.requests;
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, theirs) => theirs,
            (ours, 0) => ours,
            (ours, theirs) => ours.min(theirs),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// One call as the graph file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub method: String,
    /// The path template (a regular expression).
    pub path: String,
    pub requests: u64,
    #[serde(default)]
    pub first_seen: u64,
    #[serde(default)]
    pub last_seen: u64,
}

/// The calls of one edge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HttpCallsFile", into = "HttpCallsFile")]
pub struct HttpCalls {
    /// (method, path template) -> counts.
    pub calls: BTreeMap<(String, String), CallStats>,
    /// Connections of the edge that carried HTTP requests.
    pub connections: u64,
    /// How far the templates were widened to stay in bounds (0: not; 1: to
    /// their first segment; 2: to `/.*`); every call added later is widened
    /// as far, so the result does not depend on the order calls came in.
    widened: u8,
}

/// [`HttpCalls`] as a list (JSON has no tuple keys).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HttpCallsFile {
    #[serde(default)]
    pub calls: Vec<CallRecord>,
    #[serde(default)]
    pub connections: u64,
}

impl From<HttpCallsFile> for HttpCalls {
    fn from(file: HttpCallsFile) -> Self {
        let mut calls = HttpCalls {
            connections: file.connections,
            ..HttpCalls::default()
        };
        for call in file.calls {
            calls.add(
                call.method,
                call.path,
                &CallStats {
                    requests: call.requests,
                    first_seen: call.first_seen,
                    last_seen: call.last_seen,
                },
            );
        }
        calls
    }
}

impl From<HttpCalls> for HttpCallsFile {
    fn from(calls: HttpCalls) -> Self {
        HttpCallsFile {
            calls: calls.records(),
            connections: calls.connections,
        }
    }
}

impl HttpCalls {
    /// The calls as the graph file lists them, in order.
    pub fn records(&self) -> Vec<CallRecord> {
        self.calls
            .iter()
            .map(|((method, path), stats)| CallRecord {
                method: method.clone(),
                path: path.clone(),
                requests: stats.requests,
                first_seen: stats.first_seen,
                last_seen: stats.last_seen,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.connections == 0
    }

    /// One request of `path` (a raw path: templated here), at `at`.
    pub fn add_request(&mut self, method: &str, path: &str, at: u64) {
        self.add(
            method.to_string(),
            template(path),
            &CallStats {
                requests: 1,
                first_seen: at,
                last_seen: at,
            },
        );
    }

    /// A call whose path is a template already.
    pub fn add(&mut self, method: String, template: String, stats: &CallStats) {
        let template = widen(&template, self.widened);
        self.calls
            .entry((method, template))
            .or_default()
            .absorb(stats);
        self.bound();
    }

    pub fn absorb(&mut self, other: &HttpCalls) {
        self.connections += other.connections;
        for ((method, path), stats) in &other.calls {
            self.add(method.clone(), path.clone(), stats);
        }
    }

    /// Past the limit: widen every template one step further.
    fn bound(&mut self) {
        while self.calls.len() > MAX_CALLS_PER_EDGE && self.widened < 2 {
            self.widened += 1;
            let calls = std::mem::take(&mut self.calls);
            for ((method, path), stats) in calls {
                self.calls
                    .entry((method, widen(&path, self.widened)))
                    .or_default()
                    .absorb(&stats);
            }
        }
    }
}

/// A template widened to `level` (see [`HttpCalls`]); widening again to the
/// same level changes nothing.
fn widen(template: &str, level: u8) -> String {
    match level {
        0 => template.to_string(),
        1 => first_segment(template),
        _ => "/.*".into(),
    }
}

/// The template of a raw path: variable segments as [`VARIABLE_SEGMENT`],
/// the rest escaped so it matches only itself.
pub fn template(path: &str) -> String {
    if path == "*" {
        return "\\*".into();
    }
    let mut out = String::with_capacity(path.len() + 8);
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        if is_variable(segment) {
            out.push_str(VARIABLE_SEGMENT);
        } else {
            escape_into(segment, &mut out);
        }
    }
    out
}

/// Whether a path segment is an id rather than a name: a number, a UUID, a
/// hex id (8+ hex digits with a digit in them), or a long token (20+
/// characters mixing letters and digits).
pub fn is_variable(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    if digits == segment.len() {
        return true;
    }
    let hex = segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if hex && is_uuid(segment) {
        return true;
    }
    if hex && segment.len() >= 8 && digits > 0 && !segment.contains('-') {
        return true;
    }
    let letters = segment.bytes().filter(u8::is_ascii_alphabetic).count();
    segment.len() >= 20
        && digits > 0
        && letters > 0
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=.~".contains(&b))
}

fn is_uuid(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len)
}

/// A template cut to its first segment: `/api/v1/x` -> `/api(/.*)?`.
fn first_segment(template: &str) -> String {
    if template == "/.*" {
        return template.to_string();
    }
    let base = template.strip_suffix("(/.*)?").unwrap_or(template);
    let rest = base.strip_prefix('/').unwrap_or(base);
    // A '/' inside a bracket expression (`[^/]+`) or a group ends no segment.
    let mut depth = 0i32;
    let mut end = rest.len();
    for (index, char) in rest.char_indices() {
        match char {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            '/' if depth == 0 => {
                end = index;
                break;
            }
            _ => {}
        }
    }
    format!("/{}(/.*)?", &rest[..end])
}

fn escape_into(text: &str, out: &mut String) {
    for char in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(char) {
            out.push('\\');
        }
        out.push(char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_segments_collapse() {
        for (path, expected) in [
            ("/api/v1/users/42", "/api/v1/users/[^/]+"),
            ("/api/v1/users/7", "/api/v1/users/[^/]+"),
            (
                "/orders/0b9c2a1e-6f3d-4c5b-9a8e-1d2c3b4a5f60/items",
                "/orders/[^/]+/items",
            ),
            ("/blobs/deadbeef42", "/blobs/[^/]+"),
            ("/s/AbCdEfGh1234567890xyZ", "/s/[^/]+"),
            ("/health", "/health"),
            ("/", "/"),
            ("/v2/catalog.json", "/v2/catalog\\.json"),
            ("/decade", "/decade"),
            ("/api/v1", "/api/v1"),
            ("*", "\\*"),
        ] {
            assert_eq!(template(path), expected, "{path}");
        }
    }

    #[test]
    fn templates_match_what_they_came_from() {
        for path in [
            "/api/v1/users/42",
            "/a.b/c+d/(x)",
            "/orders/0b9c2a1e-6f3d-4c5b-9a8e-1d2c3b4a5f60",
        ] {
            let regex = regex::Regex::new(&format!("^(?:{})$", template(path))).unwrap();
            assert!(regex.is_match(path), "{path}");
        }
        let users = regex::Regex::new(&format!("^(?:{})$", template("/users/42"))).unwrap();
        assert!(users.is_match("/users/9000"));
        assert!(!users.is_match("/users/9000/delete"));
        assert!(!users.is_match("/admin"));
    }

    #[test]
    fn an_edge_keeps_a_bounded_set_whatever_the_order() {
        // 40 distinct names (no ids): past the bound, whichever order.
        let names: Vec<String> = (0..40)
            .map(|i| {
                let letter = char::from(b'a' + (i % 26) as u8);
                format!("/api/thing{}/detail", letter.to_string().repeat(1 + i / 26))
            })
            .collect();
        let mut forward = HttpCalls::default();
        let mut backward = HttpCalls::default();
        for (index, path) in names.iter().enumerate() {
            forward.add_request("GET", path, index as u64 + 1);
        }
        for (index, path) in names.iter().enumerate().rev() {
            backward.add_request("GET", path, index as u64 + 1);
        }
        forward.add_request("POST", "/login", 50);
        backward.add_request("POST", "/login", 50);
        assert_eq!(forward, backward);
        assert!(forward.calls.len() <= MAX_CALLS_PER_EDGE);
        let requests: u64 = forward.calls.values().map(|c| c.requests).sum();
        assert_eq!(requests, 41);
        assert!(
            forward
                .calls
                .contains_key(&("GET".into(), "/api(/.*)?".into())),
            "{forward:?}"
        );
        // Widened templates still match what they came from.
        let api = regex::Regex::new("^(?:/api(/.*)?)$").unwrap();
        assert!(names.iter().all(|path| api.is_match(path)));
    }
}
