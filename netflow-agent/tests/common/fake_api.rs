//! A scripted Kubernetes API server for tests (no real API server runs on
//! these machines): plain HTTP/1.1 on loopback, reached through a kubeconfig
//! like any cluster. It keeps objects with resource versions and a change
//! log, answers lists, streams watches from a version, applies server-side
//! apply patches, answers pod proxy requests from a script, records every
//! request, and can break watches, refuse them or expire their history, so
//! the client's recovery is tested against the protocol it really speaks.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use netflow_agent::inventory::{Inventory, watch::LiveInventory};
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: String,
}

struct Change {
    version: u64,
    collection: String,
    event: &'static str,
    object: Value,
}

#[derive(Default)]
struct ApiState {
    version: u64,
    /// (collection, namespace, name) -> object. A collection is the path
    /// prefix of its kind: `api/v1/pods`, `apis/apps/v1/replicasets`.
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Change>,
    /// Watches from a version older than this get 410 Gone.
    oldest_watchable: u64,
    /// Bumped to end every open watch without its closing chunk.
    watch_epoch: u64,
    /// The next this many watch requests get 500.
    refuse_watches: u32,
    requests: Vec<Recorded>,
    /// Pod name -> (status, body) for `pods/NAME:PORT/proxy/...`.
    proxy: BTreeMap<String, (u16, String)>,
    /// Pod name -> the address its proxy requests are forwarded to (a real
    /// agent's port), as the API server forwards them to the pod.
    proxy_to: BTreeMap<String, SocketAddr>,
    /// Object name -> when an apply of it is refused (422, as an admission
    /// webhook or a validation would).
    reject: BTreeMap<String, Reject>,
    /// Collections this API does not serve (a CRD that is not installed):
    /// 404, as the API server answers.
    not_installed: BTreeSet<String>,
}

/// When the scripted API refuses an apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Dry runs and real applies alike (an invalid object).
    Always,
    /// Only the real apply (a webhook that failed in between).
    RealApplyOnly,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<(Mutex<ApiState>, Condvar)>,
}

/// The collection an object belongs to, from its apiVersion and kind.
fn collection_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind").to_lowercase();
    let plural = match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    };
    let prefix = if api_version == "v1" {
        "api/v1".to_string()
    } else {
        format!("apis/{api_version}")
    };
    format!("{prefix}/{plural}")
}

impl FakeApi {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API");
        let addr = listener.local_addr().expect("address");
        let inner: Arc<(Mutex<ApiState>, Condvar)> = Arc::default();
        let server = inner.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                std::thread::spawn(move || serve_connection(stream, &server));
            }
        });
        Self { addr, inner }
    }

    /// A kubeconfig for this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\n\
             current-context: fake\nusers:\n- name: tester\n  user:\n    token: test-token\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn change(&self, f: impl FnOnce(&mut ApiState)) {
        let (state, changed) = &*self.inner;
        f(&mut state.lock().unwrap());
        changed.notify_all();
    }

    /// Creates or replaces an object (ADDED or MODIFIED to watchers).
    pub fn put(&self, mut object: Value) {
        self.change(|state| {
            state.version += 1;
            object["metadata"]["resourceVersion"] = json!(state.version.to_string());
            let collection = collection_of(&object);
            let key = (
                collection.clone(),
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["metadata"]["name"]
                    .as_str()
                    .expect("metadata.name")
                    .to_string(),
            );
            let event = if state.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            state.objects.insert(key, object.clone());
            let version = state.version;
            state.log.push(Change {
                version,
                collection,
                event,
                object,
            });
        });
    }

    /// Deletes an object (DELETED to watchers).
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let probe = json!({"apiVersion": api_version, "kind": kind});
        let collection = collection_of(&probe);
        self.change(|state| {
            let key = (collection.clone(), namespace.to_string(), name.to_string());
            let mut object = state.objects.remove(&key).expect("object to delete");
            state.version += 1;
            object["metadata"]["resourceVersion"] = json!(state.version.to_string());
            let version = state.version;
            state.log.push(Change {
                version,
                collection,
                event: "DELETED",
                object,
            });
        });
    }

    /// Ends every open watch mid-stream, as a dropped connection would.
    pub fn break_watches(&self) {
        self.change(|state| state.watch_epoch += 1);
    }

    /// The next `count` watch requests fail with 500.
    pub fn refuse_watches(&self, count: u32) {
        self.change(|state| state.refuse_watches = count);
    }

    /// Forgets the change log: a watch from an older version gets 410 Gone
    /// and the client must list again.
    pub fn expire_history(&self) {
        self.change(|state| state.oldest_watchable = state.version + 1);
    }

    /// What `pods/NAME:PORT/proxy/...` answers.
    pub fn set_proxy(&self, pod: &str, status: u16, body: &str) {
        self.change(|state| {
            state
                .proxy
                .insert(pod.to_string(), (status, body.to_string()));
        });
    }

    /// Forwards `pods/NAME:PORT/proxy/PATH` to `addr`, as the API server
    /// forwards to the pod's IP.
    pub fn proxy_to(&self, pod: &str, addr: SocketAddr) {
        self.change(|state| {
            state.proxy_to.insert(pod.to_string(), addr);
        });
    }

    /// Refuses applies of objects named `name` (422 Invalid).
    pub fn reject(&self, name: &str, when: Reject) {
        self.change(|state| {
            state.reject.insert(name.to_string(), when);
        });
    }

    /// Makes `collection` (`apis/cilium.io/v2/ciliumnetworkpolicies`) one
    /// this API does not serve.
    pub fn uninstall(&self, collection: &str) {
        self.change(|state| {
            state.not_installed.insert(collection.to_string());
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.0.lock().unwrap().requests.clone()
    }

    pub fn object(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (
            collection.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        self.inner.0.lock().unwrap().objects.get(&key).cloned()
    }
}

/// A parsed API path.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    /// Below the object: `proxy/...` or a subresource.
    rest: Vec<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("api/v1".to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("apis/{group}/{version}"), rest),
        _ => return None,
    };
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match rest {
        ["namespaces", namespace, resource, tail @ ..] => Some(Target {
            collection: format!("{prefix}/{resource}"),
            namespace: Some(namespace.to_string()),
            name: tail.first().map(|s| s.to_string()),
            rest: owned(tail.get(1..).unwrap_or_default()),
        }),
        [resource, tail @ ..] => Some(Target {
            collection: format!("{prefix}/{resource}"),
            namespace: None,
            name: tail.first().map(|s| s.to_string()),
            rest: owned(tail.get(1..).unwrap_or_default()),
        }),
        [] => None,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((key, value)) => {
            object["metadata"]["labels"][key.trim_end_matches('=')].as_str() == Some(value)
        }
        None => object["metadata"]["labels"].get(term).is_some(),
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "message": message, "code": code})
}

fn write_response(stream: &mut TcpStream, code: u16, body: &str, content_type: &str) -> bool {
    let text = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        if code < 400 { "OK" } else { "Error" },
        body.len()
    );
    stream.write_all(text.as_bytes()).is_ok()
}

fn serve_connection(stream: TcpStream, inner: &(Mutex<ApiState>, Condvar)) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|len| len.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query_text) = target.split_once('?').unwrap_or((&target, ""));
        let query: BTreeMap<String, String> = query_text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        let recorded = Recorded {
            method: method.clone(),
            path: percent_decode(path),
            query,
            content_type: headers.get("content-type").cloned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        inner.0.lock().unwrap().requests.push(recorded.clone());
        if recorded.path.ends_with("/portforward") {
            return port_forward(&recorded, &headers, writer, inner);
        }
        if !answer(&recorded, &mut writer, inner) {
            return;
        }
    }
}

/// Answers one request; false when the connection must close.
fn answer(request: &Recorded, out: &mut TcpStream, inner: &(Mutex<ApiState>, Condvar)) -> bool {
    let json_type = "application/json";
    let Some(target) = parse_path(&request.path) else {
        return write_response(
            out,
            404,
            &status(404, "NotFound", "no such path").to_string(),
            json_type,
        );
    };
    let watching = matches!(
        request.query.get("watch").map(String::as_str),
        Some("true" | "1")
    );
    match (request.method.as_str(), &target.name) {
        ("GET", None) if watching => watch(request, &target, out, inner),
        ("GET", _)
            if inner
                .0
                .lock()
                .unwrap()
                .not_installed
                .contains(&target.collection) =>
        {
            write_response(
                out,
                404,
                &status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
                .to_string(),
                json_type,
            )
        }
        ("GET", None) => {
            let state = inner.0.lock().unwrap();
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|((collection, namespace, _), object)| {
                    *collection == target.collection
                        && target.namespace.as_ref().is_none_or(|ns| ns == namespace)
                        && matches_selector(object, request.query.get("labelSelector"))
                })
                .map(|(_, object)| object.clone())
                .collect();
            let list = json!({"apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": state.version.max(1).to_string()}, "items": items});
            write_response(out, 200, &list.to_string(), json_type)
        }
        ("GET", Some(name)) if target.rest.first().map(String::as_str) == Some("proxy") => {
            let pod = name.split(':').next().unwrap_or_default();
            let forward = inner.0.lock().unwrap().proxy_to.get(pod).copied();
            if let Some(addr) = forward {
                let path = format!("/{}", target.rest[1..].join("/"));
                let (code, body) = forward_get(addr, &path);
                return write_response(out, code, &body, json_type);
            }
            let answer = inner.0.lock().unwrap().proxy.get(pod).cloned();
            match answer {
                Some((code, body)) => write_response(out, code, &body, json_type),
                None => write_response(
                    out,
                    503,
                    &status(503, "ServiceUnavailable", "error trying to reach service").to_string(),
                    json_type,
                ),
            }
        }
        ("GET", Some(name)) => {
            let key = (
                target.collection.clone(),
                target.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let object = inner.0.lock().unwrap().objects.get(&key).cloned();
            match object {
                Some(object) => write_response(out, 200, &object.to_string(), json_type),
                None => write_response(
                    out,
                    404,
                    &status(404, "NotFound", &format!("{name} not found")).to_string(),
                    json_type,
                ),
            }
        }
        ("PATCH", Some(name)) => {
            if request.content_type.as_deref() != Some("application/apply-patch+yaml") {
                return write_response(
                    out,
                    415,
                    &status(415, "UnsupportedMediaType", "only apply patches here").to_string(),
                    json_type,
                );
            }
            let object: Value = match serde_norway::from_str(&request.body) {
                Ok(object) => object,
                Err(err) => {
                    return write_response(
                        out,
                        400,
                        &status(400, "BadRequest", &err.to_string()).to_string(),
                        json_type,
                    );
                }
            };
            if object["metadata"]["name"].as_str() != Some(name.as_str()) {
                return write_response(
                    out,
                    400,
                    &status(400, "BadRequest", "name in body and path differ").to_string(),
                    json_type,
                );
            }
            let dry_run = request.query.contains_key("dryRun");
            let refused = inner.0.lock().unwrap().reject.get(name).copied();
            if refused == Some(Reject::Always)
                || (refused == Some(Reject::RealApplyOnly) && !dry_run)
            {
                return write_response(
                    out,
                    422,
                    &status(
                        422,
                        "Invalid",
                        &format!("{name} is refused by the scripted API"),
                    )
                    .to_string(),
                    json_type,
                );
            }
            if !dry_run {
                let (state, changed) = inner;
                let mut state = state.lock().unwrap();
                state.version += 1;
                let mut stored = object.clone();
                stored["metadata"]["resourceVersion"] = json!(state.version.to_string());
                let key = (
                    target.collection.clone(),
                    target.namespace.clone().unwrap_or_default(),
                    name.clone(),
                );
                state.objects.insert(key, stored);
                changed.notify_all();
            }
            write_response(out, 200, &object.to_string(), json_type)
        }
        _ => write_response(
            out,
            405,
            &status(405, "MethodNotAllowed", "not scripted").to_string(),
            json_type,
        ),
    }
}

/// A GET to a pod's address: (status, body); 503 when it does not answer.
/// `pods/NAME/portforward?ports=P` as the API server and the kubelet answer
/// it: a WebSocket (`v4.channel.k8s.io`) whose channel 0 carries the bytes of
/// the pod's port P and channel 1 its errors. The pod's port is the address
/// given by [`FakeApi::proxy_to`] (a real agent), or a scripted HTTP answer
/// ([`FakeApi::set_proxy`]); with neither, nothing listens there.
fn port_forward(
    request: &Recorded,
    headers: &BTreeMap<String, String>,
    mut stream: TcpStream,
    inner: &(Mutex<ApiState>, Condvar),
) {
    use tungstenite::{Message, protocol::Role};
    const PROTOCOL: &str = "v4.channel.k8s.io";
    let offered = headers
        .get("sec-websocket-protocol")
        .is_some_and(|protocols| protocols.split(',').any(|p| p.trim() == PROTOCOL));
    let (Some(key), true) = (headers.get("sec-websocket-key"), offered) else {
        write_response(
            &mut stream,
            400,
            &status(400, "BadRequest", "a v4.channel.k8s.io WebSocket upgrade").to_string(),
            "application/json",
        );
        return;
    };
    let Some(port) = request
        .query
        .get("ports")
        .and_then(|p| p.parse::<u16>().ok())
    else {
        write_response(
            &mut stream,
            400,
            &status(400, "BadRequest", "one port").to_string(),
            "application/json",
        );
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgraded = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
    );
    if stream.write_all(upgraded.as_bytes()).is_err() {
        return;
    }
    let mut socket = tungstenite::WebSocket::from_raw_socket(stream, Role::Server, None);
    let [low, high] = port.to_le_bytes();
    let send = |socket: &mut tungstenite::WebSocket<TcpStream>, channel: u8, bytes: &[u8]| {
        let mut frame = vec![channel];
        frame.extend_from_slice(bytes);
        socket.send(Message::binary(frame)).is_ok()
    };
    // Each channel opens with the port it stands for.
    if !send(&mut socket, 0, &[low, high]) || !send(&mut socket, 1, &[low, high]) {
        return;
    }
    // What the client writes to the port: one HTTP request, read whole.
    let mut asked = Vec::new();
    while !asked.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read() {
            Ok(Message::Binary(data)) if data.first() == Some(&0) => {
                asked.extend_from_slice(&data[1..]);
            }
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
    let pod = request
        .path
        .rsplit('/')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (forward, scripted) = {
        let state = inner.0.lock().unwrap();
        (
            state.proxy_to.get(&pod).copied(),
            state.proxy.get(&pod).cloned(),
        )
    };
    let answered = match (forward, scripted) {
        (Some(addr), _) => {
            // The real agent's port: the request as it came, the answer as it goes.
            let mut agent = match TcpStream::connect(addr) {
                Ok(agent) => agent,
                Err(err) => {
                    send(
                        &mut socket,
                        1,
                        format!("error forwarding port {port}: {err}").as_bytes(),
                    );
                    let _ = socket.close(None);
                    return;
                }
            };
            let mut answer = Vec::new();
            if agent.write_all(&asked).is_err() || agent.read_to_end(&mut answer).is_err() {
                return;
            }
            answer
        }
        (None, Some((code, body))) => format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
        (None, None) => {
            send(
                &mut socket,
                1,
                format!("error forwarding port {port} to pod {pod}: connection refused").as_bytes(),
            );
            let _ = socket.close(None);
            let _ = socket.flush();
            return;
        }
    };
    for chunk in answered.chunks(32 * 1024) {
        if !send(&mut socket, 0, chunk) {
            return;
        }
    }
    let _ = socket.close(None);
    let _ = socket.flush();
    // Let the close handshake finish before the socket goes.
    while socket.read().is_ok() {}
}

fn forward_get(addr: SocketAddr, path: &str) -> (u16, String) {
    match netflow_agent::testbed::http_client::http_get(addr, path) {
        Ok((0, body)) => (502, body),
        Ok(answer) => answer,
        Err(err) => (
            503,
            status(
                503,
                "ServiceUnavailable",
                &format!("error trying to reach service: {err}"),
            )
            .to_string(),
        ),
    }
}

fn write_chunk(out: &mut TcpStream, data: &str) -> bool {
    out.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .is_ok()
}

/// Streams changes after `resourceVersion` until the timeout, a broken
/// watch (connection dropped mid-stream) or a failed write.
fn watch(
    request: &Recorded,
    target: &Target,
    out: &mut TcpStream,
    inner: &(Mutex<ApiState>, Condvar),
) -> bool {
    let (state_lock, changed) = inner;
    let since: u64 = request
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = request
        .query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let epoch = {
        let mut state = state_lock.lock().unwrap();
        if state.refuse_watches > 0 {
            state.refuse_watches -= 1;
            drop(state);
            return write_response(
                out,
                500,
                &status(500, "InternalError", "watch refused by the script").to_string(),
                "application/json",
            );
        }
        state.watch_epoch
    };
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut sent = since;
    let started = Instant::now();
    let mut state = state_lock.lock().unwrap();
    if since < state.oldest_watchable {
        drop(state);
        let gone = json!({"type": "ERROR", "object": status(410, "Expired",
            &format!("too old resource version: {since}"))});
        let _ = write_chunk(out, &format!("{gone}\n"));
        let _ = out.write_all(b"0\r\n\r\n");
        return false;
    }
    loop {
        if state.watch_epoch != epoch {
            // Drop the connection without the closing chunk.
            let _ = out.shutdown(std::net::Shutdown::Both);
            return false;
        }
        let events: Vec<String> = state
            .log
            .iter()
            .filter(|change| change.version > sent && change.collection == target.collection)
            .filter(|change| {
                target.namespace.as_ref().is_none_or(|ns| {
                    change.object["metadata"]["namespace"].as_str() == Some(ns.as_str())
                }) && matches_selector(&change.object, request.query.get("labelSelector"))
            })
            .map(|change| json!({"type": change.event, "object": change.object}).to_string())
            .collect();
        sent = state.version;
        drop(state);
        for event in events {
            if !write_chunk(out, &format!("{event}\n")) {
                return false;
            }
        }
        if started.elapsed() >= timeout {
            let _ = out.write_all(b"0\r\n\r\n");
            return false;
        }
        state = state_lock.lock().unwrap();
        state = changed
            .wait_timeout(state, Duration::from_millis(200))
            .unwrap()
            .0;
    }
}

/// The live inventory of `api`, driven by a runtime of the test's own.
pub struct Live {
    pub runtime: tokio::runtime::Runtime,
    pub live: LiveInventory,
}

impl Live {
    pub fn start(api: &FakeApi, dir: &std::path::Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = api.kubeconfig(dir);
        let live = runtime.block_on(async {
            let client = netflow_agent::kube::client(Some(&kubeconfig))
                .await
                .expect("client");
            LiveInventory::start(&client)
        });
        Self { runtime, live }
    }

    /// Runs the watchers until `check` holds (or fails after 20 s).
    pub fn until(&self, what: &str, check: impl Fn(&Inventory) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.live.synced() && check(&self.live.inventory()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the live inventory never got there: {what}"
            );
            self.runtime
                .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        }
    }
}
