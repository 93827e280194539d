//! More connections than the kernel table holds: every connection must still
//! appear (through the overflow ring), with its bytes, and the counters must
//! say how many overflowed.

mod common;

use std::{collections::BTreeMap, thread, time::Duration};

use netflow_agent::testbed::{Host, Testbed};

const TABLE_ENTRIES: u32 = 4;
const CONNECTIONS: usize = 12;

#[test]
fn a_full_table_loses_no_connection() {
    if !common::privileged("a_full_table_loses_no_connection") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfovf")).unwrap();
    let (_probe, mut reader) =
        common::record_testbed(&testbed, TABLE_ENTRIES, Duration::from_secs(600));
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:9000"])
        .unwrap();
    let output = testbed
        .run_peer(
            &common::lab(),
            Host::A,
            &[
                "connect",
                "--tcp",
                "10.231.0.2:9000",
                "--bytes",
                "300",
                "--count",
                &CONNECTIONS.to_string(),
            ],
        )
        .unwrap();
    let client_ports = common::client_ports(&output.stdout);
    assert_eq!(client_ports.len(), CONNECTIONS);
    thread::sleep(Duration::from_millis(300));

    let interval = reader.poll().unwrap();
    let client_cgroup = testbed.cgroup_id(Host::A).unwrap();
    let server_cgroup = testbed.cgroup_id(Host::B).unwrap();

    // Every connection, on both sides, exactly once.
    let mut sides = BTreeMap::new();
    for flow in &interval.flows {
        let port = if flow.cgroup_id == client_cgroup {
            flow.local.port
        } else {
            flow.remote.port
        };
        let previous = sides.insert((flow.cgroup_id, port), flow);
        assert!(
            previous.is_none(),
            "one record per connection side: {flow:?}"
        );
    }
    for port in &client_ports {
        let client = sides
            .get(&(client_cgroup, *port))
            .expect("client side present");
        let server = sides
            .get(&(server_cgroup, *port))
            .expect("server side present");
        // Table or ring, the bytes are the same bytes.
        assert_eq!(client.bytes_out, server.bytes_in, "port {port}");
        assert_eq!(client.bytes_in, server.bytes_out, "port {port}");
        assert_eq!(client.packets_out, server.packets_in, "port {port}");
        assert!(client.bytes_out >= 300 + client.packets_out * 40);
    }
    assert_eq!(sides.len(), 2 * CONNECTIONS);

    // The first connections filled the table; all the others overflowed.
    let overflowed: Vec<_> = interval.flows.iter().filter(|flow| flow.overflow).collect();
    let expected_overflow = 2 * CONNECTIONS as u64 - TABLE_ENTRIES as u64;
    assert_eq!(overflowed.len() as u64, expected_overflow);
    assert_eq!(interval.stats.overflowed_connections, expected_overflow);
    assert_eq!(interval.stats.table_entries, TABLE_ENTRIES as u64);
    let overflowed_packets: u64 = overflowed
        .iter()
        .map(|f| f.packets_in + f.packets_out)
        .sum();
    assert_eq!(interval.stats.drops["map_full"], overflowed_packets);
    assert_eq!(interval.stats.drops["ring_full"], 0);
    // Overflowed connections count as connections (their first report is
    // new), and TCP ones still know who opened them.
    for flow in overflowed {
        assert!(flow.new, "{flow:?}");
        let expected = if flow.cgroup_id == client_cgroup {
            "local"
        } else {
            "remote"
        };
        assert_eq!(
            serde_json::to_value(flow.initiator).unwrap(),
            expected,
            "{flow:?}"
        );
    }
    assert_eq!(interval.stats.drops["overflow_untracked"], 0);
}

/// Past the limit of overflowed connections followed at once, the rest are
/// counted, not kept: a flood cannot grow the agent without bound.
#[test]
fn overflowed_connections_are_bounded_and_counted() {
    if !common::privileged("overflowed_connections_are_bounded_and_counted") {
        return;
    }
    const FOLLOWED: usize = 6;
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfovb")).unwrap();
    let (_probe, reader) =
        common::record_testbed(&testbed, TABLE_ENTRIES, Duration::from_secs(600));
    let mut reader = reader.with_overflow_limit(FOLLOWED);
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:9000"])
        .unwrap();
    testbed
        .run_peer(
            &common::lab(),
            Host::A,
            &[
                "connect",
                "--tcp",
                "10.231.0.2:9000",
                "--count",
                &CONNECTIONS.to_string(),
            ],
        )
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let interval = reader.poll().unwrap();
    let overflowed: Vec<_> = interval.flows.iter().filter(|flow| flow.overflow).collect();
    assert_eq!(overflowed.len(), FOLLOWED);
    assert_eq!(interval.stats.overflowed_connections, FOLLOWED as u64);
    let followed_packets: u64 = overflowed
        .iter()
        .map(|f| f.packets_in + f.packets_out)
        .sum();
    // Every packet the kernel could not put in the table is either followed
    // or counted as untracked.
    assert_eq!(
        followed_packets + interval.stats.drops["overflow_untracked"],
        interval.stats.drops["map_full"]
    );
    assert!(interval.stats.drops["overflow_untracked"] > 0);
}
