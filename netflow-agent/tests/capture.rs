//! End to end through the real kernel: two "pods" (network namespaces with
//! their processes in their own cgroups) exchange TCP and UDP over IPv4 and
//! IPv6 while netflow's programs are attached to their parent cgroup. The
//! recorded connections must be exactly the ones made, with the right
//! initiator, ports, cgroup ids and byte counts.

mod common;

use std::{collections::BTreeMap, net::SocketAddr, thread, time::Duration};

use netflow_agent::{
    model::{Basis, FlowRecord, Side},
    testbed::{Host, Testbed},
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Connection {
    protocol: String,
    local: SocketAddr,
    remote: SocketAddr,
    sent: u64,
    received: u64,
    messages: u64,
}

fn connect(testbed: &Testbed, args: &[&str]) -> Vec<Connection> {
    let mut all = vec!["connect"];
    all.extend_from_slice(args);
    let output = testbed
        .run_peer(&common::lab(), Host::A, &all)
        .expect("client");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("client report"))
        .collect()
}

type Key = (u64, &'static str, SocketAddr, SocketAddr);

fn key_of(flow: &FlowRecord) -> (u64, String, SocketAddr, SocketAddr) {
    (
        flow.cgroup_id,
        flow.protocol.to_string(),
        SocketAddr::new(flow.local.ip, flow.local.port),
        SocketAddr::new(flow.remote.ip, flow.remote.port),
    )
}

#[test]
fn records_exactly_the_connections_made_with_their_bytes() {
    if !common::privileged("records_exactly_the_connections_made_with_their_bytes") {
        return;
    }
    let started = std::time::SystemTime::now();
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfcap")).unwrap();
    let (_probe, mut reader) = common::record_testbed(&testbed, 1024, Duration::from_secs(600));

    testbed
        .start_server(
            &common::lab(),
            Host::B,
            &[
                "--tcp",
                "10.231.0.2:8080",
                "--tcp",
                "[fd00:6e66::2]:8080",
                "--udp",
                "10.231.0.2:5353",
                "--udp",
                "[fd00:6e66::2]:5353",
            ],
        )
        .unwrap();

    let mut connections = Vec::new();
    connections.extend(connect(
        &testbed,
        &[
            "--tcp",
            "10.231.0.2:8080",
            "--bytes",
            "1000",
            "--count",
            "2",
        ],
    ));
    // 5000 bytes: several MSS-sized segments, sent as one GSO skb.
    connections.extend(connect(
        &testbed,
        &["--tcp", "[fd00:6e66::2]:8080", "--bytes", "5000"],
    ));
    connections.extend(connect(
        &testbed,
        &[
            "--udp",
            "10.231.0.2:5353",
            "--bytes",
            "200",
            "--datagrams",
            "4",
        ],
    ));
    connections.extend(connect(
        &testbed,
        &[
            "--udp",
            "[fd00:6e66::2]:5353",
            "--bytes",
            "100",
            "--datagrams",
            "3",
        ],
    ));
    assert_eq!(connections.len(), 5);
    for connection in &connections {
        assert_eq!(
            connection.sent, connection.received,
            "echo incomplete: {connection:?}"
        );
    }
    // The last FIN/ACK exchange completes just after the client returns.
    thread::sleep(Duration::from_millis(300));

    let interval = reader.poll().unwrap();
    let (client_cgroup, server_cgroup) = (
        testbed.cgroup_id(Host::A).unwrap(),
        testbed.cgroup_id(Host::B).unwrap(),
    );

    let recorded: BTreeMap<_, &FlowRecord> = interval
        .flows
        .iter()
        .map(|flow| (key_of(flow), flow))
        .collect();
    assert_eq!(
        recorded.len(),
        interval.flows.len(),
        "one record per connection and side"
    );

    let mut expected: Vec<Key> = Vec::new();
    for c in &connections {
        let protocol = if c.protocol == "tcp" { "tcp" } else { "udp" };
        expected.push((client_cgroup, protocol, c.local, c.remote));
        expected.push((server_cgroup, protocol, c.remote, c.local));
    }
    let expected_keys: Vec<_> = {
        let mut keys: Vec<_> = expected
            .iter()
            .map(|(cg, p, l, r)| (*cg, p.to_string(), *l, *r))
            .collect();
        keys.sort();
        keys
    };
    let recorded_keys: Vec<_> = recorded.keys().cloned().collect();
    assert_eq!(recorded_keys, expected_keys, "the exact set of connections");

    for c in &connections {
        let protocol = c.protocol.as_str();
        let client = recorded[&(client_cgroup, protocol.to_string(), c.local, c.remote)];
        let server = recorded[&(server_cgroup, protocol.to_string(), c.remote, c.local)];
        let ip_header: u64 = if c.local.is_ipv4() { 20 } else { 40 };

        // The cgroup that owns each socket, by its path below the mount.
        let name = testbed
            .cgroup_parent()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            client.cgroup.as_deref(),
            Some(format!("/{name}/a").as_str())
        );
        assert_eq!(
            server.cgroup.as_deref(),
            Some(format!("/{name}/b").as_str())
        );

        // What one side sent is what the other received, packet for packet.
        assert_eq!(client.bytes_out, server.bytes_in, "{c:?}");
        assert_eq!(client.packets_out, server.packets_in, "{c:?}");
        assert_eq!(client.bytes_in, server.bytes_out, "{c:?}");
        assert_eq!(client.packets_in, server.packets_out, "{c:?}");

        if protocol == "udp" {
            // Exact: payload plus IP and UDP headers per datagram.
            let per_datagram = ip_header + 8;
            assert_eq!(client.packets_out, c.messages, "{c:?}");
            assert_eq!(client.packets_in, c.messages, "{c:?}");
            assert_eq!(
                client.bytes_out,
                c.sent + c.messages * per_datagram,
                "{c:?}"
            );
            assert_eq!(
                client.bytes_in,
                c.received + c.messages * per_datagram,
                "{c:?}"
            );
            assert_eq!(client.initiator, Side::Unknown);
            assert_eq!(
                (client.client, client.client_basis),
                (Side::Local, Basis::EphemeralPort)
            );
            assert_eq!(
                (server.client, server.client_basis),
                (Side::Remote, Basis::EphemeralPort)
            );
        } else {
            // Payload plus, per packet, the IP header and a TCP header of 20
            // to 60 bytes (timestamps on every segment, more options on SYNs).
            for (bytes, packets, payload) in [
                (client.bytes_out, client.packets_out, c.sent),
                (client.bytes_in, client.packets_in, c.received),
            ] {
                let headers = bytes - payload;
                assert!(
                    headers >= packets * (ip_header + 20) && headers <= packets * (ip_header + 60),
                    "{headers} header bytes for {packets} packets: {c:?}"
                );
            }
            // Handshake, data (at least one segment per MSS), FIN and ACKs:
            // the MSS on this veth is 1500 - ip - tcp - 12 bytes of timestamps.
            let mss = 1500 - ip_header - 20 - 12;
            let data_segments = c.sent.div_ceil(mss);
            assert!(client.packets_out >= 3 + data_segments, "{c:?}: {client:?}");
            assert!(
                client.packets_out <= 4 + data_segments + 2,
                "{c:?}: {client:?}"
            );
            assert_eq!(client.initiator, Side::Local);
            assert_eq!(server.initiator, Side::Remote);
            assert_eq!(client.client_basis, Basis::TcpSyn);
            assert!(client.tcp_flags.contains("SYN") && client.tcp_flags.contains("FIN"));
        }
    }

    // Kernel timestamps come out as wall-clock times of this test's run
    // (the kernel's coarse clock ticks every few milliseconds).
    let finished = std::time::SystemTime::now();
    let slack = Duration::from_millis(50);
    for flow in &interval.flows {
        let (first, last) = (flow.first_seen, flow.last_seen);
        assert!(
            first >= (started - slack).into() && first <= last && last <= (finished + slack).into(),
            "{flow:?}"
        );
    }

    for (reason, count) in &interval.stats.drops {
        assert_eq!(*count, 0, "drop counter {reason}");
    }
    assert_eq!(interval.stats.table_entries, 10);

    // Nothing moved since: the next poll reports no connection.
    let quiet = reader.poll().unwrap();
    assert!(quiet.flows.is_empty(), "{:?}", quiet.flows);
}

#[test]
fn idle_connections_are_reported_once_and_removed() {
    if !common::privileged("idle_connections_are_reported_once_and_removed") {
        return;
    }
    // Batch syscalls (the default) and the key-by-key walk older kernels need.
    for batches in [true, false] {
        idle_connections_leave_the_table(batches);
    }
}

fn idle_connections_leave_the_table(batches: bool) {
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfidl")).unwrap();
    let (_probe, reader) = common::record_testbed(&testbed, 64, Duration::from_millis(500));
    let mut reader = if batches {
        reader
    } else {
        reader.without_batches()
    };
    testbed
        .start_server(&common::lab(), Host::B, &["--udp", "10.231.0.2:5353"])
        .unwrap();
    let sent = connect(&testbed, &["--udp", "10.231.0.2:5353", "--bytes", "10"]);

    let first = reader.poll().unwrap();
    assert_eq!(first.flows.len(), 2);
    for flow in &first.flows {
        assert_eq!(flow.bytes_out, 10 + 28, "{flow:?}");
        assert!(
            flow.local.port == sent[0].local.port() || flow.remote.port == sent[0].local.port()
        );
    }
    assert!(first.flows.iter().all(|flow| !flow.ended));
    assert_eq!(first.stats.table_entries, 2);

    thread::sleep(Duration::from_millis(800));
    let second = reader.poll().unwrap();
    assert!(
        second.flows.is_empty(),
        "nothing new to report: {:?}",
        second.flows
    );
    assert_eq!(
        second.stats.table_entries, 0,
        "idle entries leave the table"
    );
}
