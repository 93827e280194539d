//! DNS messages passed up to the agent, which learns external names from the
//! answers to queries it saw asked.

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use netflow_common::{DIR_EGRESS, DIR_INGRESS, DNS_PAYLOAD_BYTES, DnsEvent, Drop, PROTO_UDP};

use crate::{
    maps::{DNS_EVENTS, count_drop},
    parse::Packet,
};

/// A UDP packet to or from port 53, seen from the asking socket.
#[inline(always)]
pub fn is_dns(packet: &Packet, direction: u8) -> bool {
    packet.key.protocol == PROTO_UDP
        && ((direction == DIR_INGRESS && packet.src_port(direction) == 53)
            || (direction == DIR_EGRESS && packet.dst_port(direction) == 53))
}

/// Copies a DNS message's payload, with its connection, into the DNS ring
/// buffer (queries too: an answer counts only when it answers one).
#[inline(always)]
pub fn pass_up(ctx: &SkBuffContext, packet: &Packet, direction: u8) {
    let offset = packet.payload_offset;
    let available = ctx.len().saturating_sub(offset);
    if available == 0 {
        return;
    }
    let len = if available as usize > DNS_PAYLOAD_BYTES {
        DNS_PAYLOAD_BYTES as u32
    } else {
        available
    };
    // The same value, in a form whose bounds the verifier can follow:
    // 1..=DNS_PAYLOAD_BYTES (a power of two).
    let len = ((len - 1) & (DNS_PAYLOAD_BYTES as u32 - 1)) + 1;
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        count_drop(Drop::DnsLost);
        return;
    };
    let event = entry.as_mut_ptr();
    let loaded = unsafe {
        (*event).key = packet.key;
        (*event).len = len;
        (*event).direction = direction;
        (*event)._pad = [0; 3];
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            offset,
            (&raw mut (*event).payload).cast(),
            len,
        )
    };
    if loaded == 0 {
        entry.submit(0);
    } else {
        entry.discard(0);
        count_drop(Drop::DnsLost);
    }
}
