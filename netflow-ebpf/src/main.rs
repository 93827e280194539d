//! netflow's kernel side: cgroup/skb ingress and egress programs that count
//! connections in place in a shared hash map.
//!
//! Rules that hold on every path:
//! - fail open: both programs return 1 (allow) whatever happens;
//! - nothing is lost silently: a packet that cannot be recorded moves a
//!   per-CPU counter (`DROPS`), and a connection the table has no room for is
//!   sent to the `OVERFLOW` ring buffer instead;
//! - no panics, no indexing, no unwrap (the verifier rejects reachable panics).
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsics lower to BPF's
// atomic add/or instructions.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod parse;

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_coarse_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::{cgroup_skb, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use netflow_common::{
    DEFAULT_FLOW_ENTRIES, DIR_EGRESS, DIR_INGRESS, DNS_PAYLOAD_BYTES, DNS_RING_BYTES, DnsEvent,
    Drop, FlowKey, FlowStats, INITIATOR_UNKNOWN, OVERFLOW_RING_BYTES, OverflowRecord, PROTO_UDP,
    direction_flags, initiator_of,
};
use parse::Packet;

/// Connections, aggregated in place. Size is overridden by the agent at load time.
#[map]
static FLOWS: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

/// Packets of connections that did not fit in `FLOWS`.
#[map]
static OVERFLOW: RingBuf = RingBuf::with_byte_size(OVERFLOW_RING_BYTES, 0);

/// DNS responses, for the agent to name external addresses.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_RING_BYTES, 0);

/// What could not be recorded, by `Drop` reason.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Drop::COUNT, 0);

const EEXIST: i32 = 17;
const E2BIG: i32 = 7;

#[cgroup_skb(egress)]
pub fn netflow_egress(ctx: SkBuffContext) -> i32 {
    record(&ctx, DIR_EGRESS);
    1
}

#[cgroup_skb(ingress)]
pub fn netflow_ingress(ctx: SkBuffContext) -> i32 {
    record(&ctx, DIR_INGRESS);
    1
}

/// The benchmark's floor (`netflow-lab bench`): the hook, the call and the
/// statistics' clock reads, with no work. Attachable in either direction;
/// the agent never loads it.
#[cgroup_skb]
pub fn netflow_floor(_ctx: SkBuffContext) -> i32 {
    1
}

#[inline(always)]
fn record(ctx: &SkBuffContext, direction: u8) {
    match parse::parse(ctx) {
        Ok(packet) => {
            let key = flow_key(ctx, &packet, direction);
            account(&key, &packet, direction);
            let dns = packet.protocol == PROTO_UDP
                && ((direction == DIR_INGRESS && packet.src_port == 53)
                    || (direction == DIR_EGRESS && packet.dst_port == 53));
            if dns {
                pass_dns_up(ctx, &packet, &key, direction);
            }
        }
        Err(reason) => count_drop(reason),
    }
}

/// Copies a DNS message's payload, with its connection, into the DNS ring
/// buffer (queries too: an answer counts only when it answers one).
#[inline(always)]
fn pass_dns_up(ctx: &SkBuffContext, packet: &Packet, key: &FlowKey, direction: u8) {
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
        (*event).key = *key;
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

#[inline(always)]
fn count_drop(reason: Drop) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // Per-CPU slot: no other CPU writes it, a plain add is exact.
        unsafe { *counter += 1 };
    }
}

/// The connection a packet belongs to, seen from the local socket.
#[inline(always)]
fn flow_key(ctx: &SkBuffContext, packet: &Packet, direction: u8) -> FlowKey {
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let (local_addr, remote_addr, local_port, remote_port) = if direction == DIR_EGRESS {
        (packet.src, packet.dst, packet.src_port, packet.dst_port)
    } else {
        (packet.dst, packet.src, packet.dst_port, packet.src_port)
    };
    FlowKey {
        cgroup_id,
        local_addr,
        remote_addr,
        local_port,
        remote_port,
        protocol: packet.protocol,
        family: packet.family,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn account(key: &FlowKey, packet: &Packet, direction: u8) {
    let now = unsafe { bpf_ktime_get_coarse_ns() };

    if let Some(stats) = FLOWS.get_ptr_mut(key) {
        update(stats, packet, direction, now);
        return;
    }

    let mut stats = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        tcp_flags: direction_flags(packet.tcp_flags, direction),
        initiator: initiator_of(packet.tcp_flags, direction),
        first_dir: direction,
        ..FlowStats::default()
    };
    if direction == DIR_EGRESS {
        stats.packets_out = packet.segments as u64;
        stats.bytes_out = packet.wire_bytes;
    } else {
        stats.packets_in = packet.segments as u64;
        stats.bytes_in = packet.wire_bytes;
    }

    match FLOWS.insert(key, &stats, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Another CPU inserted the same connection first: add to its entry.
        Err(err) if err == -EEXIST => {
            if let Some(stats) = FLOWS.get_ptr_mut(key) {
                update(stats, packet, direction, now);
            }
        }
        Err(err) => {
            count_drop(if err == -E2BIG {
                Drop::MapFull
            } else {
                Drop::UpdateFailed
            });
            let overflow = OverflowRecord {
                key: *key,
                bytes: packet.wire_bytes,
                ts_ns: now,
                packets: packet.segments,
                direction,
                tcp_flags: packet.tcp_flags,
                _pad: [0; 2],
            };
            if OVERFLOW.output::<OverflowRecord>(&overflow, 0).is_err() {
                count_drop(Drop::RingFull);
            }
        }
    }
}

#[inline(always)]
fn update(stats: *mut FlowStats, packet: &Packet, direction: u8, now: u64) {
    // Several CPUs may update one connection at once: counters use atomic adds.
    // Timestamps, flags and the initiator are last-writer-wins, which is exact
    // enough for them (all writers carry nearly the same values).
    unsafe {
        let (packets, bytes) = if direction == DIR_EGRESS {
            (&raw mut (*stats).packets_out, &raw mut (*stats).bytes_out)
        } else {
            (&raw mut (*stats).packets_in, &raw mut (*stats).bytes_in)
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(packets, packet.segments as u64);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes, packet.wire_bytes);
        // A connection's entry is touched from several CPUs (ingress in one
        // softirq, egress from the process): write the time only when it
        // moved, so most packets do not pull the cache line away.
        if (*stats).last_seen_ns != now {
            (*stats).last_seen_ns = now;
        }
        let flags = direction_flags(packet.tcp_flags, direction);
        // Most packets carry flags the connection has shown before: skip the
        // locked instruction for them.
        if (*stats).tcp_flags & flags != flags {
            atomic_or::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*stats).tcp_flags, flags);
            let initiator = initiator_of(packet.tcp_flags, direction);
            if initiator != INITIATOR_UNKNOWN {
                (*stats).initiator = initiator;
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
