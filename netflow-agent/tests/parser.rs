//! The kernel parser on crafted packets, run through BPF_PROG_TEST_RUN: the
//! real programs in the real kernel, fed packets no stack would send. Every
//! packet must be allowed, and each one is either recorded exactly or moves
//! the counter for its reason.

mod common;

use aya::programs::{TestRun, TestRunOptions};
use netflow_agent::testbed::packets::{DST4, SRC4, frame, ipv4, ipv6, tcp, test_run_context, udp};
use netflow_agent::{
    kernel::{
        loader::{DEFAULT_FOLD_INTERVAL, Probe},
        reader::FlowReader,
    },
    model::{FlowRecord, IntervalStats},
};
use netflow_common::{EGRESS_PROG, INGRESS_PROG};

struct Harness {
    probe: Probe,
    reader: FlowReader,
}

impl Harness {
    fn new() -> Self {
        Self::with_table(64)
    }

    fn with_table(entries: u32) -> Self {
        let mut probe = Probe::load(entries, DEFAULT_FOLD_INTERVAL).expect("load");
        let maps = probe.take_maps().expect("maps");
        let reader = FlowReader::new(maps, std::time::Duration::from_secs(600));
        Self { probe, reader }
    }

    /// Runs the ingress (or egress) program on `ip_packet`; asserts it allowed it.
    fn run(&self, program: &'static str, ip_packet: &[u8], gso_segs: u32) {
        let frame = frame(ip_packet);
        let ctx = test_run_context(gso_segs).expect("a test run's context");
        let options = TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(ctx.as_slice()),
            repeat: 1,
            ..TestRunOptions::default()
        };
        let result = self
            .probe
            .program(program)
            .unwrap()
            .test_run(options)
            .expect("test run");
        assert_eq!(result.return_value, 1, "the program must always allow");
    }

    fn ingress(&self, ip_packet: &[u8]) {
        self.run(INGRESS_PROG, ip_packet, 0);
    }

    fn poll(&mut self) -> (Vec<FlowRecord>, IntervalStats) {
        let interval = self.reader.poll().unwrap();
        (interval.flows, interval.stats)
    }
}

/// An 8-byte IPv6 option header (hop-by-hop, destination options, routing).
fn ext8(next_header: u8) -> Vec<u8> {
    vec![next_header, 0, 1, 4, 0, 0, 0, 0]
}

fn drops(stats: &IntervalStats, reason: &str) -> u64 {
    stats.drops[reason]
}

fn total_drops(stats: &IntervalStats) -> u64 {
    stats.drops.values().sum()
}

#[test]
fn ipv4_tcp_syn_is_recorded_with_direction_and_initiator() {
    if !common::privileged("ipv4_tcp_syn") {
        return;
    }
    let mut harness = Harness::new();
    let packet = ipv4(6, 0, &tcp(40000, 80, 0x02, 0));
    harness.ingress(&packet);
    harness.run(EGRESS_PROG, &ipv4(6, 0, &tcp(80, 40000, 0x12, 0)), 0);
    let (flows, stats) = harness.poll();
    assert_eq!(total_drops(&stats), 0);
    assert_eq!(flows.len(), 2, "{flows:?}");
    let ingress = flows.iter().find(|f| f.packets_in == 1).unwrap();
    assert_eq!(ingress.local.ip.to_string(), "10.1.0.2");
    assert_eq!(ingress.local.port, 80);
    assert_eq!(ingress.remote.ip.to_string(), "10.1.0.1");
    assert_eq!(ingress.remote.port, 40000);
    assert_eq!(ingress.bytes_in, packet.len() as u64);
    assert_eq!(serde_json::to_value(ingress.initiator).unwrap(), "remote");
    // The SYN-ACK seen on egress is a different key (addresses swapped) and
    // proves nothing about who opened it.
    let egress = flows.iter().find(|f| f.packets_out == 1).unwrap();
    assert_eq!(egress.local.ip.to_string(), "10.1.0.1");
    assert_eq!(serde_json::to_value(egress.initiator).unwrap(), "unknown");
}

#[test]
fn packets_on_the_loopback_device_are_not_recorded() {
    if !common::privileged("packets_on_the_loopback_device") {
        return;
    }
    // A test run without a device is given the loopback device: what a
    // pod's processes send each other (a mesh sidecar and its app), which
    // crosses no policy, whatever its addresses.
    let mut harness = Harness::new();
    let syn = ipv4(6, 0, &tcp(40000, 8080, 0x02, 0));
    for program in [INGRESS_PROG, EGRESS_PROG] {
        let result = harness
            .probe
            .program(program)
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(&frame(&syn)),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .expect("test run");
        assert_eq!(result.return_value, 1, "the program must always allow");
    }
    let (flows, stats) = harness.poll();
    assert!(flows.is_empty(), "{flows:?}");
    assert_eq!(total_drops(&stats), 0);
    // The same packet through a real device is recorded.
    harness.ingress(&syn);
    assert_eq!(harness.poll().0.len(), 1);
}

#[test]
fn truncated_headers_are_counted_not_recorded() {
    if !common::privileged("truncated_headers") {
        return;
    }
    let mut harness = Harness::new();
    // IPv4 header cut short.
    harness.ingress(&ipv4(6, 0, &[])[..12]);
    // TCP header cut after the ports.
    harness.ingress(&ipv4(6, 0, &tcp(1, 2, 0x02, 0)[..6]));
    // IHL below the minimum of 5 words.
    let mut bad_ihl = ipv4(17, 0, &udp(1, 2, 4));
    bad_ihl[0] = 0x44;
    harness.ingress(&bad_ihl);
    // IPv6 header cut short, and an extension header that runs off the end.
    harness.ingress(&ipv6(17, &[])[..30]);
    harness.ingress(&ipv6(0, &[17, 0]));
    let (flows, stats) = harness.poll();
    assert!(flows.is_empty(), "{flows:?}");
    assert_eq!(drops(&stats, "truncated"), 5);
    assert_eq!(total_drops(&stats), 5);
}

#[test]
fn ipv6_extension_headers_are_skipped_to_the_ports() {
    if !common::privileged("ipv6_extension_headers") {
        return;
    }
    let mut harness = Harness::new();
    // hop-by-hop -> destination options -> routing -> TCP
    let mut rest = ext8(60);
    rest.extend(ext8(43));
    rest.extend(ext8(6));
    rest.extend(tcp(33000, 443, 0x02, 10));
    let packet = ipv6(0, &rest);
    harness.ingress(&packet);
    // A first fragment (offset 0) still carries the UDP header.
    let mut fragment = vec![17, 0, 0, 1, 0, 0, 0, 7];
    fragment.extend(udp(5000, 53, 20));
    harness.ingress(&ipv6(44, &fragment));

    let (flows, stats) = harness.poll();
    assert_eq!(total_drops(&stats), 0, "{stats:?}");
    assert_eq!(flows.len(), 2, "{flows:?}");
    let tcp_flow = flows.iter().find(|f| f.protocol.0 == 6).unwrap();
    assert_eq!((tcp_flow.local.port, tcp_flow.remote.port), (443, 33000));
    assert_eq!(tcp_flow.bytes_in, packet.len() as u64);
    let udp_flow = flows.iter().find(|f| f.protocol.0 == 17).unwrap();
    assert_eq!((udp_flow.local.port, udp_flow.remote.port), (53, 5000));
}

#[test]
fn later_fragments_are_counted_as_fragments() {
    if !common::privileged("later_fragments") {
        return;
    }
    let mut harness = Harness::new();
    // IPv4: fragment offset 185 (x 8 bytes), no L4 header in it.
    harness.ingress(&ipv4(17, 185, &[0; 40]));
    // IPv4 first fragment (MF set, offset 0) has the header: recorded.
    harness.ingress(&ipv4(17, 0x2000, &udp(7000, 53, 30)));
    // IPv6 fragment header with offset 1448 / 8.
    let mut later = vec![17, 0];
    later.extend_from_slice(&((1448u16 / 8) << 3).to_be_bytes());
    later.extend_from_slice(&[0, 0, 0, 9]);
    later.extend_from_slice(&[0; 40]);
    harness.ingress(&ipv6(44, &later));

    let (flows, stats) = harness.poll();
    assert_eq!(drops(&stats, "fragment"), 2);
    assert_eq!(total_drops(&stats), 2);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].local.port, 53);
}

#[test]
fn an_overlong_extension_chain_is_counted() {
    if !common::privileged("overlong_extension_chain") {
        return;
    }
    let mut harness = Harness::new();
    let mut rest = Vec::new();
    for _ in 0..9 {
        rest.extend(ext8(60));
    }
    rest.extend(udp(1, 2, 0));
    harness.ingress(&ipv6(60, &rest));
    let (flows, stats) = harness.poll();
    assert!(flows.is_empty());
    assert_eq!(drops(&stats, "ext_header_chain"), 1);
}

#[test]
fn garbage_is_allowed_and_every_packet_is_accounted_for() {
    if !common::privileged("garbage") {
        return;
    }
    let mut harness = Harness::new();
    // Version nibble neither 4 nor 6.
    harness.ingress(&[0x00; 40]);
    harness.ingress(&[0xff; 60]);
    // Deterministic pseudo-random packets of every length up to 80 bytes.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut sent = 2;
    for length in 1..=80usize {
        let packet: Vec<u8> = (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        harness.ingress(&packet);
        sent += 1;
    }
    let (flows, stats) = harness.poll();
    assert!(drops(&stats, "not_ip") >= 2);
    // Each packet was recorded (adding one packet to some flow) or counted.
    let recorded: u64 = flows.iter().map(|f| f.packets_in).sum();
    assert_eq!(recorded + total_drops(&stats), sent, "{stats:?}");
}

#[test]
fn other_protocols_are_recorded_by_number() {
    if !common::privileged("other_protocols") {
        return;
    }
    let mut harness = Harness::new();
    let icmp = ipv4(1, 0, &[8, 0, 0, 0, 0, 1, 0, 1]);
    harness.ingress(&icmp);
    harness.ingress(&ipv6(132, &[0; 12])); // SCTP
    let (flows, stats) = harness.poll();
    assert_eq!(total_drops(&stats), 0);
    let mut protocols: Vec<u8> = flows.iter().map(|f| f.protocol.0).collect();
    protocols.sort();
    assert_eq!(protocols, vec![1, 132]);
    assert!(
        flows
            .iter()
            .all(|f| f.local.port == 0 && f.remote.port == 0)
    );
}

#[test]
fn gso_packets_count_every_segment_and_its_headers() {
    if !common::privileged("gso_packets") {
        return;
    }
    let mut harness = Harness::new();
    // (Test runs take at most about a page of data.)
    let packet = ipv4(6, 0, &tcp(40000, 8080, 0x10, 2000));
    harness.run(INGRESS_PROG, &packet, 4);
    let (flows, _) = harness.poll();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].packets_in, 4);
    // One skb of 4 segments: the wire carries the 40 header bytes 4 times.
    assert_eq!(flows[0].bytes_in, packet.len() as u64 + 3 * 40);
}

#[test]
fn a_large_table_is_read_whole_across_batches() {
    if !common::privileged("a_large_table_is_read_whole") {
        return;
    }
    // More connections than one batch syscall returns (4096).
    const CONNECTIONS: u16 = 9000;
    let mut harness = Harness::with_table(16384);
    for port in 0..CONNECTIONS {
        harness.ingress(&ipv4(17, 0, &udp(10000 + port, 53, 1)));
    }
    let (flows, stats) = harness.poll();
    assert_eq!(total_drops(&stats), 0);
    assert_eq!(stats.table_entries, CONNECTIONS as u64);
    let mut ports: Vec<u16> = flows.iter().map(|flow| flow.remote.port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(
        ports.len(),
        CONNECTIONS as usize,
        "every connection exactly once"
    );
    assert_eq!(flows.len(), CONNECTIONS as usize);
}

/// An IPv4 packet from DST4 to SRC4: the answer to what `ipv4` sent.
fn ipv4_back(protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut packet = ipv4(protocol, 0, l4);
    packet[12..16].copy_from_slice(&DST4);
    packet[16..20].copy_from_slice(&SRC4);
    packet
}

/// A DNS response to query `id` for `name`: one A record, `address`.
fn dns_answer(name: &str, id: u16, address: [u8; 4]) -> Vec<u8> {
    let mut response = netflow_agent::testbed::dns_client::a_query(name, id).unwrap();
    response[2] = 0x81;
    response[7] = 1;
    response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
    response.extend_from_slice(&address);
    response
}

#[test]
fn dns_answers_count_only_when_they_answer_a_query() {
    if !common::privileged("dns_answers_count_only_when_they_answer_a_query") {
        return;
    }
    let mut harness = Harness::new();
    let names = |interval: &netflow_agent::kernel::reader::Interval| -> Vec<(String, String)> {
        interval
            .dns
            .iter()
            .map(|name| (name.name.clone(), name.ip.to_string()))
            .collect()
    };
    let from_53 = |payload: &[u8]| {
        let mut datagram = udp(53, 40000, 0);
        datagram.extend_from_slice(payload);
        ipv4_back(17, &datagram)
    };
    // An answer nobody asked for (any pod can send from port 53): refused.
    harness.ingress(&from_53(&dns_answer("exfil.example", 9, [203, 0, 113, 66])));
    let interval = harness.reader.poll().unwrap();
    assert_eq!(names(&interval), vec![]);
    assert_eq!(interval.stats.dns_refused["unsolicited"], 1);

    // The socket asks; the server's answer with that id and question counts.
    let mut query = udp(40000, 53, 0);
    query.extend_from_slice(
        &netflow_agent::testbed::dns_client::a_query("api.payments.example", 10).unwrap(),
    );
    harness.run(EGRESS_PROG, &ipv4(17, 0, &query), 0);
    // A forged answer to the same socket with another id, or for another
    // name, does not.
    harness.ingress(&from_53(&dns_answer(
        "api.payments.example",
        11,
        [198, 51, 100, 1],
    )));
    harness.ingress(&from_53(&dns_answer("evil.example", 10, [198, 51, 100, 2])));
    harness.ingress(&from_53(&dns_answer(
        "api.payments.example",
        10,
        [203, 0, 113, 10],
    )));
    // A second answer to the same query is not believed either.
    harness.ingress(&from_53(&dns_answer(
        "api.payments.example",
        10,
        [198, 51, 100, 3],
    )));
    let interval = harness.reader.poll().unwrap();
    assert_eq!(
        names(&interval),
        vec![(
            "api.payments.example".to_string(),
            "203.0.113.10".to_string()
        )]
    );
    assert_eq!(interval.dns[0].server, Some("10.1.0.2".parse().unwrap()));
    assert_eq!(interval.stats.dns_refused["unsolicited"], 4);
    assert_eq!(interval.stats.drops["dns_lost"], 0);
}

/// A small xorshift generator: the run is the same every time, so a failure
/// can be replayed.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Well-formed packets of every kind the parser tells apart, to mutate.
fn templates() -> Vec<Vec<u8>> {
    let mut dns = udp(53, 40000, 0);
    dns.extend_from_slice(&dns_answer("db.shop.svc.cluster.local", 7, [10, 96, 0, 10]));
    let mut v6_ext = ext8(6);
    v6_ext.extend_from_slice(&tcp(40000, 443, 0x10, 100));
    vec![
        ipv4(6, 0, &tcp(40000, 80, 0x02, 0)),
        ipv4(6, 0, &tcp(80, 40000, 0x18, 512)),
        ipv4(17, 0, &udp(40000, 53, 40)),
        ipv4_back(17, &dns),
        ipv4(6, 0x2000, &tcp(40000, 80, 0x10, 64)),
        ipv4(1, 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
        ipv4(132, 0, &[0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0]),
        ipv6(6, &tcp(40000, 5432, 0x02, 0)),
        ipv6(17, &udp(40000, 53, 40)),
        ipv6(0, &v6_ext),
        ipv6(44, &[6, 0, 0, 1, 0, 0, 0, 1]),
    ]
}

/// One packet: a template with some bytes changed, or cut short, or grown,
/// or random bytes of a random length.
fn mutated(random: &mut Xorshift, templates: &[Vec<u8>]) -> Vec<u8> {
    let mut packet = templates[random.below(templates.len())].clone();
    match random.below(8) {
        0 => {
            let length = random.below(160);
            return (0..length).map(|_| random.next() as u8).collect();
        }
        1 => packet.truncate(random.below(packet.len() + 1)),
        2 => packet.extend((0..random.below(64)).map(|_| random.next() as u8)),
        _ => {}
    }
    if !packet.is_empty() {
        for _ in 0..=random.below(4) {
            let at = random.below(packet.len());
            packet[at] = match random.below(3) {
                0 => random.next() as u8,
                1 => packet[at] ^ (1 << random.below(8)),
                _ => [0, 0xff, 0x40, 0x60, 0x45][random.below(5)],
            };
        }
    }
    packet
}

/// The kernel parser's fuzz run (issue 14): a million random and mutated
/// packets, both directions, through the real programs. Every run must
/// allow, and every packet must be recorded or counted, none lost.
#[test]
fn a_million_random_and_mutated_packets_are_allowed_and_accounted_for() {
    if !common::privileged("a_million_random_and_mutated_packets") {
        return;
    }
    const PACKETS: u64 = 1_000_000;
    const POLL_EVERY: u64 = 20_000;
    let mut harness = Harness::with_table(65_536);
    let templates = templates();
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut recorded, mut counted, mut overflowed, mut dns_names) = (0u64, 0u64, 0u64, 0usize);
    let mut tally = |harness: &mut Harness| {
        let interval = harness.reader.poll().unwrap();
        recorded += interval
            .flows
            .iter()
            .map(|flow| flow.packets_in + flow.packets_out)
            .sum::<u64>();
        // The drop counters are totals since the programs were loaded.
        // A packet is recorded (in the table, or through the overflow ring
        // when the table is full: `map_full` counts those, recorded too) or
        // counted under exactly one of these reasons; `dns_lost` counts DNS
        // payloads not passed up, of packets recorded all the same.
        counted = [
            "truncated",
            "not_ip",
            "fragment",
            "ext_header_chain",
            "ring_full",
        ]
        .iter()
        .map(|reason| drops(&interval.stats, reason))
        .sum();
        overflowed = drops(&interval.stats, "map_full") + drops(&interval.stats, "update_failed");
        dns_names += interval.dns.len();
    };
    for sent in 1..=PACKETS {
        let packet = mutated(&mut random, &templates);
        let program = if random.below(2) == 0 {
            INGRESS_PROG
        } else {
            EGRESS_PROG
        };
        harness.run(program, &packet, 0);
        if sent % POLL_EVERY == 0 {
            tally(&mut harness);
        }
    }
    tally(&mut harness);
    eprintln!(
        "{PACKETS} packets: {recorded} recorded ({overflowed} of them through the overflow ring), \
         {counted} counted as not recordable, {dns_names} DNS names passed up"
    );
    assert_eq!(recorded + counted, PACKETS, "a packet was lost");
    assert!(recorded > PACKETS / 10, "too few recorded: {recorded}");
    assert!(counted > PACKETS / 10, "too few counted: {counted}");
}
