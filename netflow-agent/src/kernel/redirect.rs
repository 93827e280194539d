//! Inbound connections redirected inside the pod (a service mesh's
//! iptables REDIRECT to its proxy, any DNAT in the pod's own namespace).
//! The kernel's hooks see such a connection under two local ports: packets
//! in carry the port after the rewrite (the proxy's, 15006), packets out
//! the port before it (conntrack restores it before the egress hook: the
//! one the client connected to). So the table holds two entries for one
//! connection, each with half a handshake: one received the SYN and never
//! sent a SYN-ACK, the other sent the SYN-ACK (or a reset: nothing took
//! it) and never received a SYN. Their union is the connection, on the port
//! its client asked for, answered or refused.

use std::collections::HashMap;

use netflow_common::{FlowKey, FlowStats, PROTO_TCP, TCP_RST, TCP_SYN};

/// What [`fold`] did: `(absorbed, into)` pairs of table keys.
pub type Folded = Vec<(FlowKey, FlowKey)>;

fn sent(stats: &FlowStats) -> u8 {
    (stats.tcp_flags & 0xff) as u8
}

fn received(stats: &FlowStats) -> u8 {
    ((stats.tcp_flags >> 8) & 0xff) as u8
}

/// The entry's connection regardless of its local port.
fn peer_key(key: &FlowKey) -> (u64, u8, [u8; 16], [u8; 16], u16) {
    (
        key.cgroup_id,
        key.family,
        key.local_addr,
        key.remote_addr,
        key.remote_port,
    )
}

/// Folds each inbound connection's rewritten half (SYN received, no
/// SYN-ACK sent) into its other half (SYN-ACK sent, no SYN received) when
/// both are in `entries`; returns the pairs folded. An entry with no other
/// half is left as it is.
pub fn fold(entries: &mut Vec<(FlowKey, FlowStats)>) -> Folded {
    // The half that answered: a SYN-ACK, or a reset (nothing behind the
    // redirect took it).
    let syn_ack_only = |stats: &FlowStats| {
        sent(stats) & (TCP_SYN | TCP_RST) != 0 && received(stats) & TCP_SYN == 0
    };
    let syn_only = |stats: &FlowStats| received(stats) & TCP_SYN != 0 && sent(stats) & TCP_SYN == 0;
    // The halves that answered, by connection (one per connection: two
    // would leave no way to pair them, so neither is used).
    let mut answered: HashMap<_, Option<usize>> = HashMap::new();
    for (index, (key, stats)) in entries.iter().enumerate() {
        if key.protocol == PROTO_TCP && syn_ack_only(stats) {
            answered
                .entry(peer_key(key))
                .and_modify(|slot| *slot = None)
                .or_insert(Some(index));
        }
    }
    if answered.is_empty() {
        return Vec::new();
    }
    let mut folded = Vec::new();
    let mut absorbed = vec![false; entries.len()];
    for index in 0..entries.len() {
        let (key, stats) = entries[index];
        if key.protocol != PROTO_TCP || !syn_only(&stats) {
            continue;
        }
        let Some(Some(into)) = answered.get(&peer_key(&key)).copied() else {
            continue;
        };
        if entries[into].0.local_port == key.local_port {
            continue;
        }
        merge(&mut entries[into].1, &stats);
        absorbed[index] = true;
        folded.push((key, entries[into].0));
    }
    let mut index = 0;
    entries.retain(|_| {
        index += 1;
        !absorbed[index - 1]
    });
    folded
}

/// `into` gains `half`'s counts; the SYN's half says who opened it.
fn merge(into: &mut FlowStats, half: &FlowStats) {
    into.packets_in += half.packets_in;
    into.packets_out += half.packets_out;
    into.bytes_in += half.bytes_in;
    into.bytes_out += half.bytes_out;
    into.tcp_flags |= half.tcp_flags;
    if half.first_seen_ns != 0 && half.first_seen_ns <= into.first_seen_ns {
        into.first_seen_ns = half.first_seen_ns;
        into.first_dir = half.first_dir;
    }
    into.last_seen_ns = into.last_seen_ns.max(half.last_seen_ns);
    into.initiator = half.initiator;
}

#[cfg(test)]
mod tests {
    use netflow_common::{
        DIR_EGRESS, DIR_INGRESS, INITIATOR_REMOTE, INITIATOR_UNKNOWN, PROTO_TCP, TCP_ACK, TCP_FIN,
        TCP_RST, TCP_SYN, direction_flags,
    };

    use super::*;
    use crate::{kernel::handshake::handshake, model::Handshake};

    fn key(local_port: u16, remote_port: u16) -> FlowKey {
        let mut local_addr = [0; 16];
        local_addr[..4].copy_from_slice(&[10, 244, 1, 10]);
        let mut remote_addr = [0; 16];
        remote_addr[..4].copy_from_slice(&[10, 244, 0, 13]);
        FlowKey {
            cgroup_id: 7,
            local_addr,
            remote_addr,
            local_port,
            remote_port,
            protocol: PROTO_TCP,
            family: 2,
            _pad: [0; 2],
        }
    }

    /// What the hooks saw of one connection to the app's 8080, redirected
    /// to the proxy's 15006.
    fn redirected(client_port: u16) -> [(FlowKey, FlowStats); 2] {
        let inbound = FlowStats {
            packets_in: 4,
            bytes_in: 300,
            first_seen_ns: 100,
            last_seen_ns: 400,
            tcp_flags: direction_flags(TCP_SYN, DIR_INGRESS)
                | direction_flags(TCP_ACK | TCP_FIN, DIR_INGRESS),
            initiator: INITIATOR_REMOTE,
            first_dir: DIR_INGRESS,
            ..FlowStats::default()
        };
        let outbound = FlowStats {
            packets_out: 3,
            bytes_out: 200,
            first_seen_ns: 150,
            last_seen_ns: 450,
            tcp_flags: direction_flags(TCP_SYN | TCP_ACK, DIR_EGRESS)
                | direction_flags(TCP_FIN, DIR_EGRESS),
            initiator: INITIATOR_UNKNOWN,
            first_dir: DIR_EGRESS,
            ..FlowStats::default()
        };
        [
            (key(15006, client_port), inbound),
            (key(8080, client_port), outbound),
        ]
    }

    #[test]
    fn the_two_halves_of_a_redirected_connection_are_one_on_the_clients_port() {
        let mut entries: Vec<_> = redirected(40000)
            .into_iter()
            .chain(redirected(40001))
            .collect();
        // An ordinary connection to another port, and one whose SYN went
        // unanswered: neither has another half.
        let (plain_key, plain) = {
            let [(_, mut stats), _] = redirected(40002);
            stats.tcp_flags |= direction_flags(TCP_SYN | TCP_ACK, DIR_EGRESS);
            (key(9000, 40002), stats)
        };
        let (scan_key, scan) = {
            let [(_, stats), _] = redirected(40003);
            (key(15006, 40003), stats)
        };
        entries.push((plain_key, plain));
        entries.push((scan_key, scan));
        let folded = fold(&mut entries);
        assert_eq!(
            folded,
            vec![
                (key(15006, 40000), key(8080, 40000)),
                (key(15006, 40001), key(8080, 40001)),
            ]
        );
        let ports: Vec<(u16, u16)> = entries
            .iter()
            .map(|(key, _)| (key.local_port, key.remote_port))
            .collect();
        assert_eq!(
            ports,
            vec![(8080, 40000), (8080, 40001), (9000, 40002), (15006, 40003)]
        );
        let (_, whole) = entries[0];
        assert_eq!((whole.packets_in, whole.packets_out), (4, 3));
        assert_eq!((whole.bytes_in, whole.bytes_out), (300, 200));
        assert_eq!((whole.first_seen_ns, whole.last_seen_ns), (100, 450));
        assert_eq!(whole.first_dir, DIR_INGRESS);
        assert_eq!(
            handshake(PROTO_TCP, whole.tcp_flags, whole.initiator, 4, 3),
            Handshake::Established,
            "neither half was, the connection is"
        );
        let [(_, half), _] = redirected(40000);
        assert_eq!(
            handshake(PROTO_TCP, half.tcp_flags, half.initiator, 4, 0),
            Handshake::Unanswered
        );
    }

    #[test]
    fn a_redirected_connection_nothing_took_is_refused_on_the_clients_port() {
        let [(inbound_key, inbound), (outbound_key, _)] = redirected(40000);
        let reset = FlowStats {
            packets_out: 1,
            tcp_flags: direction_flags(TCP_RST | TCP_ACK, DIR_EGRESS),
            first_seen_ns: 120,
            last_seen_ns: 120,
            first_dir: DIR_EGRESS,
            ..FlowStats::default()
        };
        let inbound = FlowStats {
            tcp_flags: direction_flags(TCP_SYN, DIR_INGRESS),
            packets_in: 1,
            ..inbound
        };
        let mut entries = vec![(inbound_key, inbound), (outbound_key, reset)];
        assert_eq!(fold(&mut entries).len(), 1);
        let (key, whole) = entries[0];
        assert_eq!(key.local_port, 8080);
        assert_eq!(
            handshake(PROTO_TCP, whole.tcp_flags, whole.initiator, 1, 1),
            Handshake::Refused
        );
    }
}
