//! Established TCP connections are counted on their sockets (socket storage,
//! no hash lookup per packet) and folded into the connection table once per
//! fold interval and when the socket closes. Through the real kernel: what
//! the reader sees must be exact once a connection has closed, and, while it
//! stays open and busy, behind by at most one fold interval.

mod common;

use std::{
    net::SocketAddr,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use netflow_agent::{
    model::FlowRecord,
    testbed::{Host, Testbed},
};

const SERVER: &str = "10.231.0.2:8080";

/// The two sides of the one connection to `SERVER`, summed over the polls.
#[derive(Default, Debug)]
struct Sides {
    client_packets_out: u64,
    client_bytes_out: u64,
    client_packets_in: u64,
    client_bytes_in: u64,
    server_packets_in: u64,
    server_bytes_in: u64,
    server_packets_out: u64,
    server_bytes_out: u64,
}

impl Sides {
    fn add(&mut self, flows: &[FlowRecord], testbed: &Testbed) {
        let server: SocketAddr = SERVER.parse().unwrap();
        let client_cgroup = testbed.cgroup_id(Host::A).unwrap();
        let server_cgroup = testbed.cgroup_id(Host::B).unwrap();
        for flow in flows {
            if flow.cgroup_id == client_cgroup && flow.remote.port == server.port() {
                self.client_packets_out += flow.packets_out;
                self.client_bytes_out += flow.bytes_out;
                self.client_packets_in += flow.packets_in;
                self.client_bytes_in += flow.bytes_in;
            } else if flow.cgroup_id == server_cgroup && flow.local.port == server.port() {
                self.server_packets_in += flow.packets_in;
                self.server_bytes_in += flow.bytes_in;
                self.server_packets_out += flow.packets_out;
                self.server_bytes_out += flow.bytes_out;
            }
        }
    }
}

fn start(name: &str, fold_interval: Duration) -> (Testbed, common::Recording) {
    common::testbed_with_server(name, fold_interval, SERVER)
}

/// A client making `args`' exchange with `SERVER` in the background.
fn spawn_client(testbed: &Testbed, args: &[&str]) -> std::process::Child {
    let mut all = vec!["connect", "--tcp", SERVER, "--bytes", "100"];
    all.extend_from_slice(args);
    testbed
        .peer_command(&common::lab(), Host::A, &all)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Exact at close: with a fold interval longer than the test, a busy
/// connection's packets stay on its socket while it is open (the table holds
/// only what came before the socket's storage), and all of them reach the
/// table when it closes, each side's counts equal to the other's.
#[test]
fn a_busy_connection_is_folded_exactly_when_it_closes() {
    if !common::privileged("a_busy_connection_is_folded_exactly_when_it_closes") {
        return;
    }
    let (testbed, (_probe, mut reader)) = start("nfsk", Duration::from_secs(3600));
    const MESSAGES: u64 = 200;
    let mut client = spawn_client(
        &testbed,
        &["--messages", &MESSAGES.to_string(), "--hold", "2s"],
    );
    // The messages take a few milliseconds; then the connection is held open.
    thread::sleep(Duration::from_millis(1000));
    let mut sides = Sides::default();
    let open = reader.poll().unwrap();
    sides.add(&open.flows, &testbed);
    assert!(
        sides.client_packets_out > 0 && sides.client_packets_out < 10,
        "while open, the table holds the handshake's packets only: {sides:?}"
    );
    assert!(client.wait().unwrap().success());
    thread::sleep(Duration::from_millis(300));
    sides.add(&reader.poll().unwrap().flows, &testbed);

    assert_eq!(
        sides.client_packets_out, sides.server_packets_in,
        "{sides:?}"
    );
    assert_eq!(sides.client_bytes_out, sides.server_bytes_in, "{sides:?}");
    assert_eq!(
        sides.client_packets_in, sides.server_packets_out,
        "{sides:?}"
    );
    assert_eq!(sides.client_bytes_in, sides.server_bytes_out, "{sides:?}");
    // Every message went out as its own packet (with its 40 bytes of
    // IPv4 and TCP headers at least), plus the handshake and the close.
    assert!(sides.client_packets_out >= MESSAGES + 2, "{sides:?}");
    assert!(sides.client_bytes_out >= MESSAGES * (100 + 40), "{sides:?}");
    assert!(sides.server_packets_out >= MESSAGES + 2, "{sides:?}");
}

/// Behind by at most one interval: a connection that carries a message every
/// 50 ms for 1.5 s and is then held open has its counts in the table, but
/// for the packets of its last fold interval, while still open.
#[test]
fn an_open_connection_reaches_the_table_within_one_fold_interval() {
    if !common::privileged("an_open_connection_reaches_the_table_within_one_fold_interval") {
        return;
    }
    let fold_interval = Duration::from_millis(200);
    let spacing = Duration::from_millis(50);
    const MESSAGES: u64 = 30;
    let (testbed, (_probe, mut reader)) = start("nfskf", fold_interval);
    let started = Instant::now();
    let mut client = spawn_client(
        &testbed,
        &[
            "--messages",
            &MESSAGES.to_string(),
            "--spacing",
            "50ms",
            "--hold",
            "3s",
        ],
    );
    thread::sleep(spacing * MESSAGES as u32 + Duration::from_millis(700));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "poll while open"
    );
    let mut sides = Sides::default();
    sides.add(&reader.poll().unwrap().flows, &testbed);
    // Messages in the last fold interval (and the one that triggers a fold)
    // may still be on the socket; everything before is in the table.
    let pending_at_most = (fold_interval.as_millis() / spacing.as_millis()) as u64 + 2;
    assert!(
        sides.client_packets_out >= MESSAGES - pending_at_most,
        "{sides:?}"
    );
    assert!(
        sides.server_packets_in >= MESSAGES - pending_at_most,
        "{sides:?}"
    );
    assert!(client.wait().unwrap().success());
    thread::sleep(Duration::from_millis(300));
    sides.add(&reader.poll().unwrap().flows, &testbed);
    assert_eq!(
        sides.client_packets_out, sides.server_packets_in,
        "{sides:?}"
    );
    assert_eq!(sides.client_bytes_out, sides.server_bytes_in, "{sides:?}");
    assert_eq!(sides.client_bytes_in, sides.server_bytes_out, "{sides:?}");
}
