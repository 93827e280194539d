//! Header parsing for cgroup/skb programs, whose packet data starts at the IP
//! header. Every read goes through `bpf_skb_load_bytes` (`ctx.load`), which
//! fails cleanly on a short packet instead of reading past it.

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use netflow_common::{DIR_EGRESS, Drop, FAMILY_IPV4, FAMILY_IPV6, FlowKey, PROTO_TCP, PROTO_UDP};

/// IPv6 extension headers followed before giving up (counted as `ExtHeaderChain`).
const MAX_IPV6_EXT_HEADERS: usize = 8;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
const IPV6_MOBILITY: u8 = 135;
const IPV6_HIP: u8 = 139;
const IPV6_SHIM6: u8 = 140;

/// What the programs need to know of one packet.
pub struct Packet {
    /// The connection it belongs to, seen from the local socket (addresses
    /// and ports placed by direction; the cgroup is filled in by the caller).
    pub key: FlowKey,
    pub tcp_flags: u8,
    /// GSO/GRO segments this skb stands for (1 for a plain packet).
    pub segments: u32,
    /// Bytes on the wire from the IP header on, headers repeated per segment.
    pub wire_bytes: u64,
    /// Where the L4 payload starts (after the TCP or UDP header).
    pub payload_offset: u32,
    /// Where the L4 header starts (after IP and IPv6 extension headers).
    pub l4_offset: u16,
}

impl Packet {
    #[inline(always)]
    pub fn dst_port(&self, direction: u8) -> u16 {
        if direction == DIR_EGRESS {
            self.key.remote_port
        } else {
            self.key.local_port
        }
    }

    #[inline(always)]
    pub fn src_port(&self, direction: u8) -> u16 {
        if direction == DIR_EGRESS {
            self.key.local_port
        } else {
            self.key.remote_port
        }
    }
}

// Each `ctx.load` is a helper call: headers are read in as few loads as
// possible (the programs run for every packet of every pod). The key is
// written in place: copies of addresses through tuples cost stack the BPF
// frame (512 bytes) does not have.
#[inline(always)]
pub fn parse(ctx: &SkBuffContext, direction: u8) -> Result<Packet, Drop> {
    let mut packet = Packet {
        key: FlowKey::default(),
        tcp_flags: 0,
        segments: 1,
        wire_bytes: 0,
        payload_offset: 0,
        l4_offset: 0,
    };
    // Local and remote, as source and destination of this packet.
    let (src, dst) = if direction == DIR_EGRESS {
        (
            &raw mut packet.key.local_addr,
            &raw mut packet.key.remote_addr,
        )
    } else {
        (
            &raw mut packet.key.remote_addr,
            &raw mut packet.key.local_addr,
        )
    };
    // The first 20 bytes: a whole IPv4 header, or the start of an IPv6 one.
    let head: [u8; 20] = match ctx.load(0) {
        Ok(head) => head,
        Err(_) => return Err(short_packet_reason(ctx)),
    };
    let (protocol, l4_offset) = match head[0] >> 4 {
        4 => {
            let l3 = parse_ipv4(&head)?;
            // Spelled out: a slice copy here becomes a call to a BPF memcpy.
            unsafe {
                *src = [
                    head[12], head[13], head[14], head[15], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ];
                *dst = [
                    head[16], head[17], head[18], head[19], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ];
            }
            packet.key.family = FAMILY_IPV4;
            l3
        }
        6 => {
            load_address(ctx, 8, src)?;
            load_address(ctx, 24, dst)?;
            packet.key.family = FAMILY_IPV6;
            ipv6_upper_layer(ctx, head[6])?
        }
        _ => return Err(Drop::NotIp),
    };
    packet.key.protocol = protocol;

    let (src_port, dst_port, l4_header_len) = match protocol {
        PROTO_TCP => {
            // Ports, sequence and ack numbers, data offset (byte 12), flags (13).
            let tcp: [u8; 14] = ctx.load(l4_offset).map_err(|_| Drop::Truncated)?;
            packet.tcp_flags = tcp[13];
            (
                u16::from_be_bytes([tcp[0], tcp[1]]),
                u16::from_be_bytes([tcp[2], tcp[3]]),
                ((tcp[12] >> 4) as usize) * 4,
            )
        }
        PROTO_UDP => {
            let ports: [u8; 4] = ctx.load(l4_offset).map_err(|_| Drop::Truncated)?;
            (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
                8,
            )
        }
        _ => (0, 0, 0),
    };
    if direction == DIR_EGRESS {
        packet.key.local_port = src_port;
        packet.key.remote_port = dst_port;
    } else {
        packet.key.local_port = dst_port;
        packet.key.remote_port = src_port;
    }

    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    packet.segments = if gso_segs > 1 { gso_segs } else { 1 };
    // A GSO/GRO skb carries one set of headers for all its segments; on the
    // wire each segment has its own.
    let headers = (l4_offset + l4_header_len) as u64;
    packet.wire_bytes = ctx.len() as u64 + (packet.segments as u64 - 1) * headers;
    packet.payload_offset = (l4_offset + l4_header_len) as u32;
    packet.l4_offset = l4_offset as u16;
    Ok(packet)
}

/// 16 bytes of an IPv6 address at `offset`, straight into `address`.
#[inline(always)]
fn load_address(ctx: &SkBuffContext, offset: u32, address: *mut [u8; 16]) -> Result<(), Drop> {
    let loaded = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, offset, address.cast(), 16) };
    if loaded == 0 {
        Ok(())
    } else {
        Err(Drop::Truncated)
    }
}

/// A packet shorter than 20 bytes: garbage unless it claims to be IP.
#[inline(always)]
fn short_packet_reason(ctx: &SkBuffContext) -> Drop {
    match ctx.load::<u8>(0) {
        Ok(first) if first >> 4 == 4 || first >> 4 == 6 => Drop::Truncated,
        Ok(_) => Drop::NotIp,
        Err(_) => Drop::Truncated,
    }
}

/// The protocol and where its header starts.
#[inline(always)]
fn parse_ipv4(head: &[u8; 20]) -> Result<(u8, usize), Drop> {
    let header_len = ((head[0] & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(Drop::Truncated);
    }
    let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return Err(Drop::Fragment);
    }
    Ok((head[9], header_len))
}

/// Follows IPv6 extension headers from `next_header` to the upper-layer
/// protocol; returns it and where its header starts.
#[inline(always)]
fn ipv6_upper_layer(ctx: &SkBuffContext, next_header: u8) -> Result<(u8, usize), Drop> {
    let mut protocol = next_header;
    let mut offset = 40usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match protocol {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_HIP
            | IPV6_SHIM6 => {
                let ext: [u8; 2] = ctx.load(offset).map_err(|_| Drop::Truncated)?;
                protocol = ext[0];
                offset += (ext[1] as usize + 1) * 8;
            }
            IPV6_AUTH => {
                let ext: [u8; 2] = ctx.load(offset).map_err(|_| Drop::Truncated)?;
                protocol = ext[0];
                offset += (ext[1] as usize + 2) * 4;
            }
            IPV6_FRAGMENT => {
                let ext: [u8; 4] = ctx.load(offset).map_err(|_| Drop::Truncated)?;
                let fragment_offset = u16::from_be_bytes([ext[2], ext[3]]) >> 3;
                if fragment_offset != 0 {
                    return Err(Drop::Fragment);
                }
                protocol = ext[0];
                offset += 8;
            }
            _ => return Ok((protocol, offset)),
        }
    }
    Err(Drop::ExtHeaderChain)
}
