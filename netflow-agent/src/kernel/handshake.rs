//! How far a connection got, from the kernel's counters: the TCP flags each
//! direction carried and the packets each way. A connection that never got
//! an answer (a port scan, a refused or unanswered attempt) must never be
//! mistaken for traffic that ran.

use netflow_common::{INITIATOR_LOCAL, INITIATOR_REMOTE, PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN};

use crate::model::Handshake;

/// The handshake state from the running totals of one connection:
/// `tcp_flags` as the kernel keeps them (bits 0-7 sent, 8-15 received),
/// `initiator` as the kernel saw it (`INITIATOR_*`).
pub fn handshake(
    protocol: u8,
    tcp_flags: u32,
    initiator: u8,
    packets_in: u64,
    packets_out: u64,
) -> Handshake {
    let sent = (tcp_flags & 0xff) as u8;
    let received = ((tcp_flags >> 8) & 0xff) as u8;
    let both_ways = packets_in > 0 && packets_out > 0;
    if protocol != PROTO_TCP {
        return if both_ways {
            Handshake::Established
        } else {
            Handshake::OneWay
        };
    }
    let (answered, reset) = match initiator {
        // We sent the SYN: the peer's SYN-ACK is the answer.
        INITIATOR_LOCAL => (received & TCP_SYN != 0, received & TCP_RST != 0),
        // They sent the SYN: our SYN-ACK, then their ACK.
        INITIATOR_REMOTE => (
            sent & TCP_SYN != 0 && received & TCP_ACK != 0,
            sent & TCP_RST != 0,
        ),
        // Older than the recording: packets both ways is all there is.
        _ => (both_ways, false),
    };
    if answered {
        Handshake::Established
    } else if reset {
        Handshake::Refused
    } else {
        Handshake::Unanswered
    }
}

#[cfg(test)]
mod tests {
    use netflow_common::{PROTO_UDP, direction_flags};

    use super::*;

    const OUT: u8 = netflow_common::DIR_EGRESS;
    const IN: u8 = netflow_common::DIR_INGRESS;

    fn flags(packets: &[(u8, u8)]) -> u32 {
        packets
            .iter()
            .fold(0, |all, (flags, dir)| all | direction_flags(*flags, *dir))
    }

    #[test]
    fn a_client_is_established_only_when_answered() {
        let syn = (TCP_SYN, OUT);
        let syn_ack = (TCP_SYN | TCP_ACK, IN);
        let rst_ack = (TCP_RST | TCP_ACK, IN);
        let tcp = |packets: &[(u8, u8)], received: u64| {
            handshake(PROTO_TCP, flags(packets), INITIATOR_LOCAL, received, 1)
        };
        assert_eq!(
            tcp(&[syn, syn_ack, (TCP_ACK, OUT)], 1),
            Handshake::Established
        );
        assert_eq!(tcp(&[syn, rst_ack], 1), Handshake::Refused);
        assert_eq!(tcp(&[syn], 0), Handshake::Unanswered);
        // An ACK coming back is not an answer to a SYN (a RST|ACK is not).
        assert_eq!(tcp(&[syn, (TCP_ACK, IN)], 1), Handshake::Unanswered);
    }

    #[test]
    fn a_server_is_established_when_the_client_acks() {
        let tcp =
            |packets: &[(u8, u8)]| handshake(PROTO_TCP, flags(packets), INITIATOR_REMOTE, 1, 1);
        let syn = (TCP_SYN, IN);
        let syn_ack = (TCP_SYN | TCP_ACK, OUT);
        assert_eq!(tcp(&[syn, syn_ack, (TCP_ACK, IN)]), Handshake::Established);
        // A SYN scan: SYN-ACK sent, then a bare RST, never an ACK.
        assert_eq!(tcp(&[syn, syn_ack, (TCP_RST, IN)]), Handshake::Unanswered);
        assert_eq!(tcp(&[syn, (TCP_RST | TCP_ACK, OUT)]), Handshake::Refused);
    }

    #[test]
    fn udp_needs_a_reply_and_old_tcp_needs_both_ways() {
        assert_eq!(handshake(PROTO_UDP, 0, 0, 1, 1), Handshake::Established);
        assert_eq!(handshake(PROTO_UDP, 0, 0, 0, 3), Handshake::OneWay);
        let ack = flags(&[(TCP_ACK, OUT), (TCP_ACK, IN)]);
        assert_eq!(handshake(PROTO_TCP, ack, 0, 2, 2), Handshake::Established);
        assert_eq!(
            handshake(PROTO_TCP, flags(&[(TCP_ACK, OUT)]), 0, 0, 5),
            Handshake::Unanswered
        );
    }
}
