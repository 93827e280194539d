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

/// How often one call was seen, and when. Each end's agent sees a request
/// (the client's as it leaves, the server's as it arrives): the two
/// counts are kept apart and the call's count is the larger, as an edge's
/// volume is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    pub seen_by_client: u64,
    pub seen_by_server: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    /// One path the call was made with (the least, so it does not depend
    /// on order): what `policy verify` asks L7 rules about.
    pub example: String,
}

impl CallStats {
    pub fn requests(&self) -> u64 {
        self.seen_by_client.max(self.seen_by_server)
    }

    fn absorb(&mut self, other: &CallStats) {
        self.seen_by_client += other.seen_by_client;
        self.seen_by_server += other.seen_by_server;
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, theirs) => theirs,
            (ours, 0) => ours,
            (ours, theirs) => ours.min(theirs),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        if self.example.is_empty() || (!other.example.is_empty() && other.example < self.example) {
            self.example.clone_from(&other.example);
        }
    }
}

/// Which end saw a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeenBy {
    Client,
    Server,
}

/// One call as the graph file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub method: String,
    /// The path template (a regular expression).
    pub path: String,
    /// The larger of the two ends' counts.
    pub requests: u64,
    /// Each end's own count; absent in hand-written files (then
    /// `requests` is taken as the client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_by_client: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_by_server: Option<u64>,
    #[serde(default)]
    pub first_seen: u64,
    #[serde(default)]
    pub last_seen: u64,
    /// A path the call was made with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub example: String,
}

/// The calls of one edge. Most edges carry none (not HTTP, or not seen as
/// such), and a graph holds a million edges: an edge without calls holds
/// one null pointer here, not the calls' empty tables.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "HttpCallsFile", into = "HttpCallsFile")]
pub struct HttpCalls(Option<Box<Calls>>);

/// An edge's calls, when it has some; read through [`HttpCalls`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// (method, path template) -> counts.
    pub calls: BTreeMap<(String, String), CallStats>,
    /// Connections of the edge that carried HTTP requests, as each end saw them.
    pub connections_by_client: u64,
    pub connections_by_server: u64,
    /// How far the templates were widened to stay in bounds (0: not; 1: to
    /// their first segment; 2: to `/.*`); every call added later is widened
    /// as far, so the result does not depend on the order calls came in.
    widened: u8,
}

/// [`HttpCalls`] as lists (JSON has no tuple keys).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HttpCallsFile {
    #[serde(default)]
    pub calls: Vec<CallRecord>,
    #[serde(default)]
    pub connections_by_client: u64,
    #[serde(default)]
    pub connections_by_server: u64,
}

/// What an edge without calls reads as.
static NO_CALLS: Calls = Calls {
    calls: BTreeMap::new(),
    connections_by_client: 0,
    connections_by_server: 0,
    widened: 0,
};

impl std::ops::Deref for HttpCalls {
    type Target = Calls;

    fn deref(&self) -> &Calls {
        self.0.as_deref().unwrap_or(&NO_CALLS)
    }
}

impl PartialEq for HttpCalls {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for HttpCalls {}

impl From<HttpCallsFile> for HttpCalls {
    fn from(file: HttpCallsFile) -> Self {
        let mut calls = HttpCalls::default();
        if file.connections_by_client > 0 || file.connections_by_server > 0 {
            let held = calls.held();
            held.connections_by_client = file.connections_by_client;
            held.connections_by_server = file.connections_by_server;
        }
        for call in file.calls {
            let (seen_by_client, seen_by_server) = match (call.seen_by_client, call.seen_by_server)
            {
                (None, None) => (call.requests, 0),
                (client, server) => (client.unwrap_or(0), server.unwrap_or(0)),
            };
            calls.add(
                call.method,
                call.path,
                &CallStats {
                    seen_by_client,
                    seen_by_server,
                    first_seen: call.first_seen,
                    last_seen: call.last_seen,
                    example: call.example,
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
            connections_by_client: calls.connections_by_client,
            connections_by_server: calls.connections_by_server,
        }
    }
}

impl HttpCalls {
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Calls::is_empty)
    }

    /// The calls, made when the first is added.
    fn held(&mut self) -> &mut Calls {
        self.0.get_or_insert_with(Box::default)
    }

    /// One request of `path` (a raw path: templated here), seen by one end at `at`.
    pub fn add_request(&mut self, method: &str, path: &str, at: u64, seen_by: SeenBy) {
        self.held().add_request(method, path, at, seen_by);
    }

    /// One more connection that carried HTTP, seen by one end.
    pub fn add_connection(&mut self, seen_by: SeenBy) {
        self.held().add_connection(seen_by);
    }

    /// A call whose path is a template already.
    pub fn add(&mut self, method: String, template: String, stats: &CallStats) {
        self.held().add(method, template, stats);
    }

    pub fn absorb(&mut self, other: &HttpCalls) {
        if !other.is_empty() {
            self.held().absorb(other);
        }
    }
}

impl Calls {
    /// The calls as the graph file lists them, in order.
    pub fn records(&self) -> Vec<CallRecord> {
        self.calls
            .iter()
            .map(|((method, path), stats)| CallRecord {
                method: method.clone(),
                path: path.clone(),
                requests: stats.requests(),
                seen_by_client: Some(stats.seen_by_client),
                seen_by_server: Some(stats.seen_by_server),
                first_seen: stats.first_seen,
                last_seen: stats.last_seen,
                example: stats.example.clone(),
            })
            .collect()
    }

    /// Connections that carried HTTP: the larger of the two ends' counts.
    pub fn connections(&self) -> u64 {
        self.connections_by_client.max(self.connections_by_server)
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.connections() == 0
    }

    fn add_request(&mut self, method: &str, path: &str, at: u64, seen_by: SeenBy) {
        let one = u64::from(seen_by == SeenBy::Client);
        self.add(
            method.to_string(),
            template(path),
            &CallStats {
                seen_by_client: one,
                seen_by_server: 1 - one,
                first_seen: at,
                last_seen: at,
                example: path.to_string(),
            },
        );
    }

    fn add_connection(&mut self, seen_by: SeenBy) {
        match seen_by {
            SeenBy::Client => self.connections_by_client += 1,
            SeenBy::Server => self.connections_by_server += 1,
        }
    }

    fn add(&mut self, method: String, template: String, stats: &CallStats) {
        let template = widen(&template, self.widened);
        self.calls
            .entry((method, template))
            .or_default()
            .absorb(stats);
        self.bound();
    }

    fn absorb(&mut self, other: &Calls) {
        self.connections_by_client += other.connections_by_client;
        self.connections_by_server += other.connections_by_server;
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
        // The metacharacters of RE2 (Cilium's proxy) and of the regex crate
        // (verify) alike; nothing else is escaped, as RE2 reads it plainly.
        if "\\.+*?()|[]{}^$".contains(char) {
            out.push('\\');
        }
        out.push(char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_without_calls_holds_one_pointer() {
        assert_eq!(size_of::<HttpCalls>(), size_of::<usize>());
        let none = HttpCalls::from(HttpCallsFile::default());
        assert!(none.0.is_none() && none.is_empty());
        assert_eq!(none, HttpCalls::default());
        let mut some = HttpCalls::default();
        some.add_connection(SeenBy::Server);
        assert!(!some.is_empty());
        assert_eq!(some.connections(), 1);
        let mut merged = HttpCalls::default();
        merged.absorb(&none);
        assert!(merged.0.is_none());
        merged.absorb(&some);
        assert_eq!(merged, some);
    }

    /// Both ends saw the same requests: counted once, not twice.
    #[test]
    fn both_ends_count_once() {
        let mut client = HttpCalls::default();
        let mut server = HttpCalls::default();
        for id in 0..3 {
            client.add_request("GET", &format!("/users/{id}"), 10, SeenBy::Client);
            server.add_request("GET", &format!("/users/{id}"), 11, SeenBy::Server);
        }
        client.add_connection(SeenBy::Client);
        server.add_connection(SeenBy::Server);
        client.absorb(&server);
        let records = client.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].requests, 3);
        assert_eq!(client.connections(), 1);
        // Through the file and back.
        let file: HttpCallsFile = client.clone().into();
        assert_eq!(HttpCalls::from(file), client);
    }

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
            "/a-b/~c/&d/#e/[f]/{g}/^h$/|i",
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
            forward.add_request("GET", path, index as u64 + 1, SeenBy::Client);
        }
        for (index, path) in names.iter().enumerate().rev() {
            backward.add_request("GET", path, index as u64 + 1, SeenBy::Client);
        }
        forward.add_request("POST", "/login", 50, SeenBy::Client);
        backward.add_request("POST", "/login", 50, SeenBy::Client);
        assert_eq!(forward, backward);
        assert!(forward.calls.len() <= MAX_CALLS_PER_EDGE);
        let requests: u64 = forward.calls.values().map(CallStats::requests).sum();
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
