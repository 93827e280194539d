//! Header parsing for cgroup/skb programs, whose packet data starts at the IP
//! header. Every read goes through `bpf_skb_load_bytes` (`ctx.load`), which
//! fails cleanly on a short packet instead of reading past it.

use aya_ebpf::programs::SkBuffContext;
use netflow_common::{Drop, FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, PROTO_UDP};

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
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub family: u8,
    pub tcp_flags: u8,
    /// GSO/GRO segments this skb stands for (1 for a plain packet).
    pub segments: u32,
    /// Bytes on the wire from the IP header on, headers repeated per segment.
    pub wire_bytes: u64,
    /// Where the L4 payload starts (after the TCP or UDP header).
    pub payload_offset: u32,
}

// Each `ctx.load` is a helper call: headers are read in as few loads as
// possible (the programs run for every packet of every pod).
#[inline(always)]
pub fn parse(ctx: &SkBuffContext) -> Result<Packet, Drop> {
    // The first 20 bytes: a whole IPv4 header, or the start of an IPv6 one.
    let head: [u8; 20] = match ctx.load(0) {
        Ok(head) => head,
        Err(_) => return Err(short_packet_reason(ctx)),
    };
    let (family, protocol, l4_offset, src, dst) = match head[0] >> 4 {
        4 => parse_ipv4(&head)?,
        6 => parse_ipv6(ctx, &head)?,
        _ => return Err(Drop::NotIp),
    };

    let (src_port, dst_port, tcp_flags, l4_header_len) = match protocol {
        PROTO_TCP => {
            // Ports, sequence and ack numbers, data offset (byte 12), flags (13).
            let tcp: [u8; 14] = ctx.load(l4_offset).map_err(|_| Drop::Truncated)?;
            let header_len = ((tcp[12] >> 4) as usize) * 4;
            (
                u16::from_be_bytes([tcp[0], tcp[1]]),
                u16::from_be_bytes([tcp[2], tcp[3]]),
                tcp[13],
                header_len,
            )
        }
        PROTO_UDP => {
            let ports: [u8; 4] = ctx.load(l4_offset).map_err(|_| Drop::Truncated)?;
            (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
                0,
                8,
            )
        }
        _ => (0, 0, 0, 0),
    };

    let len = ctx.len() as u64;
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    let segments = if gso_segs > 1 { gso_segs } else { 1 };
    // A GSO/GRO skb carries one set of headers for all its segments; on the
    // wire each segment has its own.
    let headers = (l4_offset + l4_header_len) as u64;
    let wire_bytes = len + (segments as u64 - 1) * headers;

    Ok(Packet {
        src,
        dst,
        src_port,
        dst_port,
        protocol,
        family,
        tcp_flags,
        segments,
        wire_bytes,
        payload_offset: (l4_offset + l4_header_len) as u32,
    })
}

type L3 = (u8, u8, usize, [u8; 16], [u8; 16]);

/// A packet shorter than 20 bytes: garbage unless it claims to be IP.
#[inline(always)]
fn short_packet_reason(ctx: &SkBuffContext) -> Drop {
    match ctx.load::<u8>(0) {
        Ok(first) if first >> 4 == 4 || first >> 4 == 6 => Drop::Truncated,
        Ok(_) => Drop::NotIp,
        Err(_) => Drop::Truncated,
    }
}

#[inline(always)]
fn parse_ipv4(head: &[u8; 20]) -> Result<L3, Drop> {
    let header_len = ((head[0] & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(Drop::Truncated);
    }
    let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return Err(Drop::Fragment);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[0] = head[12];
    src[1] = head[13];
    src[2] = head[14];
    src[3] = head[15];
    dst[0] = head[16];
    dst[1] = head[17];
    dst[2] = head[18];
    dst[3] = head[19];
    Ok((FAMILY_IPV4, head[9], header_len, src, dst))
}

#[inline(always)]
fn parse_ipv6(ctx: &SkBuffContext, head: &[u8; 20]) -> Result<L3, Drop> {
    let next_header = head[6];
    // Bytes 20..40: the rest of the source address and the destination.
    let tail: [u8; 20] = ctx.load(20).map_err(|_| Drop::Truncated)?;
    // Spelled out: a slice copy here becomes a call to a BPF memcpy.
    let src = [
        head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15], head[16],
        head[17], head[18], head[19], tail[0], tail[1], tail[2], tail[3],
    ];
    let dst = [
        tail[4], tail[5], tail[6], tail[7], tail[8], tail[9], tail[10], tail[11], tail[12],
        tail[13], tail[14], tail[15], tail[16], tail[17], tail[18], tail[19],
    ];

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
            _ => return Ok((FAMILY_IPV6, protocol, offset, src, dst)),
        }
    }
    Err(Drop::ExtHeaderChain)
}
