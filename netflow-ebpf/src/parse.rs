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
}

pub fn parse(ctx: &SkBuffContext) -> Result<Packet, Drop> {
    let first: u8 = ctx.load(0).map_err(|_| Drop::Truncated)?;
    let (family, protocol, l4_offset, src, dst) = match first >> 4 {
        4 => parse_ipv4(ctx, first)?,
        6 => parse_ipv6(ctx)?,
        _ => return Err(Drop::NotIp),
    };

    let (src_port, dst_port, tcp_flags, l4_header_len) = match protocol {
        PROTO_TCP => {
            let ports: [u8; 4] = ctx.load(l4_offset).map_err(|_| Drop::Truncated)?;
            // Byte 12 holds the data offset, byte 13 the flags.
            let offset_flags: [u8; 2] = ctx.load(l4_offset + 12).map_err(|_| Drop::Truncated)?;
            let header_len = ((offset_flags[0] >> 4) as usize) * 4;
            (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
                offset_flags[1],
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
    })
}

type L3 = (u8, u8, usize, [u8; 16], [u8; 16]);

#[inline(always)]
fn parse_ipv4(ctx: &SkBuffContext, ver_ihl: u8) -> Result<L3, Drop> {
    let header_len = ((ver_ihl & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(Drop::Truncated);
    }
    // Bytes 6..20: flags+fragment offset, ttl, protocol, checksum, src, dst.
    let fixed: [u8; 14] = ctx.load(6).map_err(|_| Drop::Truncated)?;
    let fragment_offset = u16::from_be_bytes([fixed[0], fixed[1]]) & 0x1fff;
    if fragment_offset != 0 {
        return Err(Drop::Fragment);
    }
    let protocol = fixed[3];
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[0] = fixed[6];
    src[1] = fixed[7];
    src[2] = fixed[8];
    src[3] = fixed[9];
    dst[0] = fixed[10];
    dst[1] = fixed[11];
    dst[2] = fixed[12];
    dst[3] = fixed[13];
    Ok((FAMILY_IPV4, protocol, header_len, src, dst))
}

#[inline(always)]
fn parse_ipv6(ctx: &SkBuffContext) -> Result<L3, Drop> {
    let next_header: u8 = ctx.load(6).map_err(|_| Drop::Truncated)?;
    let src: [u8; 16] = ctx.load(8).map_err(|_| Drop::Truncated)?;
    let dst: [u8; 16] = ctx.load(24).map_err(|_| Drop::Truncated)?;

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
