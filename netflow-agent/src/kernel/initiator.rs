//! Who is the client of a connection.
//!
//! The kernel knows for sure only when it saw the TCP SYN (without ACK). For
//! UDP, and for TCP connections already open when recording began, this rule
//! decides, in order:
//!
//! 1. `tcp_syn`: the side that sent the SYN.
//! 2. `ephemeral_port`: exactly one side's port is in this host's ephemeral
//!    range (`net.ipv4.ip_local_port_range`): that side is the client.
//! 3. `well_known_port`: exactly one side's port is below 1024: the other side
//!    is the client.
//! 4. `first_packet`: the side that sent the first packet netflow saw.
//!
//! Getting this wrong turns reply traffic into long lists of random high ports,
//! so the basis is kept next to the answer for anyone who wants to check.

use std::{fs, ops::RangeInclusive};

use crate::model::{Basis, Side};
use netflow_common::{DIR_EGRESS, DIR_INGRESS, INITIATOR_LOCAL, INITIATOR_REMOTE};

/// Linux's default `ip_local_port_range`.
pub const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

/// This host's ephemeral port range, or Linux's default if it cannot be read.
pub fn ephemeral_range() -> RangeInclusive<u16> {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            match (parts.next(), parts.next()) {
                (Some(Ok(low)), Some(Ok(high))) if low <= high => Some(low..=high),
                _ => None,
            }
        })
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// The kernel's view, as a [`Side`].
pub fn kernel_initiator(value: u8) -> Side {
    match value {
        INITIATOR_LOCAL => Side::Local,
        INITIATOR_REMOTE => Side::Remote,
        _ => Side::Unknown,
    }
}

/// Applies the rule of this module.
pub fn decide(
    kernel: Side,
    local_port: u16,
    remote_port: u16,
    first_direction: u8,
    ephemeral: &RangeInclusive<u16>,
) -> (Side, Basis) {
    if kernel != Side::Unknown {
        return (kernel, Basis::TcpSyn);
    }
    match (
        ephemeral.contains(&local_port),
        ephemeral.contains(&remote_port),
    ) {
        (true, false) => return (Side::Local, Basis::EphemeralPort),
        (false, true) => return (Side::Remote, Basis::EphemeralPort),
        _ => {}
    }
    match (local_port < 1024, remote_port < 1024) {
        (false, true) => return (Side::Local, Basis::WellKnownPort),
        (true, false) => return (Side::Remote, Basis::WellKnownPort),
        _ => {}
    }
    match first_direction {
        DIR_EGRESS => (Side::Local, Basis::FirstPacket),
        DIR_INGRESS => (Side::Remote, Basis::FirstPacket),
        _ => (Side::Unknown, Basis::Undecided),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_syn_wins_over_every_port_rule() {
        assert_eq!(
            decide(Side::Remote, 40000, 53, DIR_EGRESS, &DEFAULT_EPHEMERAL),
            (Side::Remote, Basis::TcpSyn)
        );
    }

    #[test]
    fn the_ephemeral_side_is_the_client() {
        assert_eq!(
            decide(Side::Unknown, 8080, 45000, DIR_EGRESS, &DEFAULT_EPHEMERAL),
            (Side::Remote, Basis::EphemeralPort)
        );
        assert_eq!(
            decide(Side::Unknown, 45000, 8080, DIR_INGRESS, &DEFAULT_EPHEMERAL),
            (Side::Local, Basis::EphemeralPort)
        );
    }

    #[test]
    fn a_well_known_port_marks_the_server() {
        assert_eq!(
            decide(Side::Unknown, 5000, 53, DIR_INGRESS, &DEFAULT_EPHEMERAL),
            (Side::Local, Basis::WellKnownPort)
        );
    }

    #[test]
    fn otherwise_the_first_sender_is_the_client() {
        assert_eq!(
            decide(Side::Unknown, 5000, 6000, DIR_INGRESS, &DEFAULT_EPHEMERAL),
            (Side::Remote, Basis::FirstPacket)
        );
        assert_eq!(
            decide(Side::Unknown, 40000, 50000, DIR_EGRESS, &DEFAULT_EPHEMERAL),
            (Side::Local, Basis::FirstPacket)
        );
    }
}
