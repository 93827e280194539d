//! Plaintext HTTP requests, seen through the real kernel: the programs pass
//! up request heads (client egress, server ingress), sampled per
//! connection, and the reader turns them into calls on the flow records.

mod common;

use std::{process::Stdio, thread, time::Duration};

use netflow_agent::{
    model::{FlowRecord, HttpRequest},
    testbed::{Host, Testbed},
};

const SERVER: &str = "10.231.0.2:8080";

fn start(name: &str, fold_interval: Duration) -> (Testbed, common::Recording) {
    common::testbed_with_server(name, fold_interval, SERVER)
}

/// A client on host A running `peer connect --tcp SERVER ARGS...` to the end.
fn client(testbed: &Testbed, args: &[&str]) {
    let mut all = vec!["connect", "--tcp", SERVER];
    all.extend_from_slice(args);
    let output = testbed
        .peer_command(&common::lab(), Host::A, &all)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// Every request on the records of host `host`'s cgroup, in order.
fn requests(flows: &[FlowRecord], testbed: &Testbed, host: Host) -> Vec<HttpRequest> {
    let cgroup = testbed.cgroup_id(host).unwrap();
    flows
        .iter()
        .filter(|flow| flow.cgroup_id == cgroup)
        .flat_map(|flow| flow.http.iter().cloned())
        .collect()
}

fn request(method: &str, path: &str, host: &str) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        host: Some(host.into()),
    }
}

/// Polls until both ends' records are in (a request's packets may be
/// folded in the next interval).
fn poll_settled(reader: &mut netflow_agent::kernel::reader::FlowReader) -> Vec<FlowRecord> {
    thread::sleep(Duration::from_millis(300));
    let mut flows = reader.poll().unwrap().flows;
    thread::sleep(Duration::from_millis(300));
    flows.extend(reader.poll().unwrap().flows);
    flows
}

/// Each request is seen once from each end: by the client as it leaves,
/// by the server as it arrives, with its method, path (no query) and Host,
/// and each end counts the connection once as one that carried HTTP.
#[test]
fn each_request_is_seen_from_both_ends() {
    if !common::privileged("each_request_is_seen_from_both_ends") {
        return;
    }
    let (testbed, (_probe, mut reader)) = start("nfhttp", Duration::from_millis(200));
    client(
        &testbed,
        &[
            "--http",
            "GET /api/v1/users/42?verbose=1",
            "--http",
            "GET /api/v1/users/7",
            "--http",
            "POST /api/v1/orders",
            "--http-host",
            "api.example",
        ],
    );
    let flows = poll_settled(&mut reader);
    let expected = vec![
        request("GET", "/api/v1/users/42", "api.example"),
        request("GET", "/api/v1/users/7", "api.example"),
        request("POST", "/api/v1/orders", "api.example"),
    ];
    assert_eq!(requests(&flows, &testbed, Host::A), expected, "{flows:#?}");
    assert_eq!(requests(&flows, &testbed, Host::B), expected, "{flows:#?}");
    for host in [Host::A, Host::B] {
        let cgroup = testbed.cgroup_id(host).unwrap();
        let connections = flows
            .iter()
            .filter(|flow| flow.cgroup_id == cgroup && flow.http_connection)
            .count();
        assert_eq!(connections, 1, "{host:?}: {flows:#?}");
    }
    // The responses ("HTTP/1.1 200 OK") are no requests.
    let drops = reader.drop_counters().unwrap();
    assert_eq!(drops["http_unparsed"], 0, "{drops:?}");
}

/// A keep-alive connection with many requests within one fold interval
/// passes up a bounded number of heads per end; the rest are counted, so
/// heads and counted ones add up to every request, from each end.
#[test]
fn a_busy_keep_alive_connection_is_sampled_and_counted() {
    if !common::privileged("a_busy_keep_alive_connection_is_sampled_and_counted") {
        return;
    }
    const REQUESTS: usize = 200;
    let (testbed, (_probe, mut reader)) = start("nfhtpk", Duration::from_secs(3600));
    let mut args = Vec::new();
    for index in 0..REQUESTS {
        args.push("--http".to_string());
        args.push(format!("GET /items/{index}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    client(&testbed, &args);
    let flows = poll_settled(&mut reader);
    let (client_heads, server_heads) = (
        requests(&flows, &testbed, Host::A).len(),
        requests(&flows, &testbed, Host::B).len(),
    );
    let per_interval = netflow_common::HTTP_HEADS_PER_INTERVAL as usize;
    // The client's requests all leave on the socket's fast path; the
    // server's first arrives before its socket has storage, and is passed
    // up on the table path besides.
    assert_eq!(client_heads, per_interval, "{flows:#?}");
    assert_eq!(server_heads, per_interval + 1, "{flows:#?}");
    let unsampled = reader.drop_counters().unwrap()["http_unsampled"] as usize;
    assert_eq!(client_heads + server_heads + unsampled, 2 * REQUESTS);
    // The heads passed up are the connection's first requests.
    assert!(
        requests(&flows, &testbed, Host::A)
            .iter()
            .enumerate()
            .all(|(index, request)| request.path == format!("/items/{index}"))
    );
}

/// A request whose line is split over two segments is never read wrong:
/// the first segment's head has no whole request line, and is counted as
/// unreadable rather than turned into a call.
#[test]
fn a_request_split_over_two_segments_is_not_misread() {
    if !common::privileged("a_request_split_over_two_segments_is_not_misread") {
        return;
    }
    let (testbed, (_probe, mut reader)) = start("nfhtps", Duration::from_millis(200));
    client(
        &testbed,
        &["--http", "GET /api/v1/users/42", "--http-split-at", "12"],
    );
    let flows = poll_settled(&mut reader);
    for host in [Host::A, Host::B] {
        let seen = requests(&flows, &testbed, host);
        assert!(
            seen.iter()
                .all(|request| request.path == "/api/v1/users/42"),
            "{host:?}: {seen:?}"
        );
    }
    assert!(reader.drop_counters().unwrap()["http_unparsed"] >= 1);
}

/// Binary payloads that begin with "GET " by chance are no calls.
#[test]
fn binary_that_begins_like_a_request_is_no_call() {
    if !common::privileged("binary_that_begins_like_a_request_is_no_call") {
        return;
    }
    let (testbed, (_probe, mut reader)) = start("nfhtpb", Duration::from_millis(200));
    // "GET " then bytes no request line has, then CRLF and more.
    let mut payload = b"GET \x00\x01\x02\xff /x HTTP/1.1\r\n".to_vec();
    payload.extend_from_slice(&[0xab; 40]);
    let hex: String = payload.iter().map(|byte| format!("{byte:02x}")).collect();
    client(&testbed, &["--payload-hex", &hex, "--messages", "3"]);
    let flows = poll_settled(&mut reader);
    assert!(requests(&flows, &testbed, Host::A).is_empty(), "{flows:#?}");
    assert!(requests(&flows, &testbed, Host::B).is_empty(), "{flows:#?}");
    assert!(reader.drop_counters().unwrap()["http_unparsed"] >= 1);
}

/// With the heads off (`--http-heads off`), no payload is looked at: the
/// same requests leave no call and nothing counted.
#[test]
fn with_the_heads_off_no_call_is_read() {
    if !common::privileged("with_the_heads_off_no_call_is_read") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfhtpo")).unwrap();
    let mut probe = netflow_agent::kernel::loader::Probe::load_pinned(
        1024,
        Duration::from_millis(200),
        None,
        false,
    )
    .unwrap();
    let maps = probe.take_maps().unwrap();
    probe.attach(testbed.cgroup_parent()).unwrap();
    let mut reader = netflow_agent::kernel::reader::FlowReader::new(maps, Duration::from_secs(600));
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", SERVER])
        .unwrap();
    client(&testbed, &["--http", "GET /a/1", "--http", "POST /b"]);
    let flows = poll_settled(&mut reader);
    // The connection was recorded, its calls were not.
    let client_cgroup = testbed.cgroup_id(Host::A).unwrap();
    assert!(
        flows.iter().any(|flow| flow.cgroup_id == client_cgroup),
        "{flows:#?}"
    );
    assert!(flows.iter().all(|flow| flow.http.is_empty()), "{flows:#?}");
    let drops = reader.drop_counters().unwrap();
    assert_eq!(
        drops["http_unsampled"] + drops["http_unparsed"],
        0,
        "{drops:?}"
    );
}
