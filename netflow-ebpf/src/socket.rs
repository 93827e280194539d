//! The per-packet path of established TCP connections: counts go to storage
//! attached to the socket (no hash lookup, no full parse) and are folded into
//! the connection table at most once per fold interval while traffic flows,
//! and when the socket is closed (`netflow_release`).
//!
//! Which packets take it: those whose skb carries a full TCP socket in state
//! ESTABLISHED that already has its storage. The handshake's packets arrive
//! on a listener, a request socket or a socket still in SYN_SENT, so they
//! always go through the table (the evidence that a connection was answered
//! lives there), and the first established packet creates the storage.

use core::{
    intrinsics::{AtomicOrdering, atomic_or, atomic_xadd, atomic_xchg},
    ptr,
};

use aya_ebpf::{
    bindings::{BPF_SK_STORAGE_GET_F_CREATE, BPF_TCP_ESTABLISHED, bpf_sock},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_sk_storage_get},
    programs::SkBuffContext,
};
use netflow_common::{
    DEFAULT_FOLD_INTERVAL_NS, DEFAULT_TICK_NS, DIR_EGRESS, DIR_INGRESS, DirectionCounts,
    INITIATOR_UNKNOWN, SocketCounts, direction_flags,
};

use crate::{
    maps::SOCKETS,
    parse::Packet,
    table::{Delta, account},
};

/// How often, in jiffies, a socket's counts move into the table while it
/// carries traffic; set by the agent at load time to its poll interval, so
/// what it reads is exact to within one interval.
#[unsafe(no_mangle)]
static FOLD_INTERVAL_JIFFIES: u64 = DEFAULT_FOLD_INTERVAL_NS / DEFAULT_TICK_NS;

/// One jiffy in ns (set by the agent), to turn the jiffies kept per socket
/// into the table's coarse nanoseconds.
#[unsafe(no_mangle)]
static TICK_NS: u64 = DEFAULT_TICK_NS;

/// Offsets past this take the helper (`bpf_skb_load_bytes`): a bound the
/// verifier needs for direct packet reads at a variable offset.
const MAX_DIRECT_L4_OFFSET: u64 = 255;

#[inline(always)]
fn sockets_map() -> *mut core::ffi::c_void {
    ptr::from_ref(&SOCKETS).cast_mut().cast()
}

/// The packet's socket when it is in ESTABLISHED state (TCP, or a connected
/// UDP socket: those have no storage and go on to the table path). Read on
/// the socket's common part: `bpf_sk_storage_get` checks for a full socket
/// itself, so no `bpf_sk_fullsock` call is needed.
#[inline(always)]
pub fn established_socket(ctx: &SkBuffContext) -> *mut bpf_sock {
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() || unsafe { (*sk).state } != BPF_TCP_ESTABLISHED {
        return ptr::null_mut();
    }
    sk
}

/// The TCP header's data offset (byte 12) and flags (13): read straight
/// from the packet when the headers are in its linear part (always, for
/// packets a socket sends or TCP receives), else through the helper.
#[inline(always)]
fn tcp_offset_and_flags(ctx: &SkBuffContext, l4_offset: u64) -> Option<(u8, u8)> {
    if l4_offset <= MAX_DIRECT_L4_OFFSET {
        let (data, data_end) = unsafe {
            (
                (*ctx.skb.skb).data as usize,
                (*ctx.skb.skb).data_end as usize,
            )
        };
        let header = data + l4_offset as usize;
        if header + 14 <= data_end {
            let bytes = header as *const [u8; 14];
            return Some(unsafe { ((*bytes)[12], (*bytes)[13]) });
        }
    }
    let tcp = ctx.load::<[u8; 14]>(l4_offset as usize).ok()?;
    Some((tcp[12], tcp[13]))
}

/// Counts the packet on its socket's storage. False when the socket has no
/// storage yet or the TCP header cannot be read: nothing was counted, the
/// caller takes the table path.
#[inline(always)]
pub fn count_on_socket(ctx: &SkBuffContext, sk: *mut bpf_sock, direction: u8) -> bool {
    let counts = unsafe { bpf_sk_storage_get(sockets_map(), sk.cast(), ptr::null_mut(), 0) }
        .cast::<SocketCounts>();
    if counts.is_null() {
        return false;
    }
    let l4_offset = unsafe { (*counts).l4_offset } as u64;
    if l4_offset == 0 {
        // Being filled in by another CPU's first established packet.
        return false;
    }
    let Some((data_offset, tcp_flags)) = tcp_offset_and_flags(ctx, l4_offset) else {
        return false;
    };
    let header_len = ((data_offset >> 4) as u64) * 4;
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    let segments = if gso_segs > 1 { gso_segs as u64 } else { 1 };
    // As in `parse`: each GSO segment has its own headers on the wire.
    let wire_bytes = ctx.len() as u64 + (segments - 1) * (l4_offset + header_len);
    let flags = direction_flags(tcp_flags, direction);
    let now = unsafe { bpf_jiffies64() };
    unsafe {
        let counts_of_direction = if direction == DIR_EGRESS {
            &raw mut (*counts).egress
        } else {
            &raw mut (*counts).ingress
        };
        add(counts_of_direction, segments, wire_bytes, flags, now);
        let interval = ptr::read_volatile(&FOLD_INTERVAL_JIFFIES);
        if now.wrapping_sub((*counts).folded_jiffies) >= interval {
            fold(counts);
        }
    }
    let payload_offset = l4_offset + header_len;
    if crate::http::enabled() && ctx.len() as u64 > payload_offset {
        crate::http::on_socket_payload(ctx, counts, direction, payload_offset as u32);
    }
    true
}

/// One packet into its direction's counters. A direction is mostly written
/// from one CPU at a time, but not always (an ACK from a timer while the
/// process sends): the counters take atomic adds.
#[inline(always)]
unsafe fn add(
    counts: *mut DirectionCounts,
    segments: u64,
    wire_bytes: u64,
    flags: u32,
    jiffies: u64,
) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*counts).packets, segments);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*counts).bytes, wire_bytes);
        if (*counts).tcp_flags & flags != flags {
            atomic_or::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*counts).tcp_flags, flags);
        }
        if (*counts).last_seen_jiffies != jiffies {
            (*counts).last_seen_jiffies = jiffies;
        }
    }
}

/// Gives an established socket its storage, after its first established
/// packet went through the table.
#[inline(always)]
pub fn start_counting(sk: *mut bpf_sock, packet: &Packet) {
    // Created zeroed (an existing storage is returned as it is) and filled
    // in place: a value built on the stack would not fit beside the rest.
    let counts = unsafe {
        bpf_sk_storage_get(
            sockets_map(),
            sk.cast(),
            ptr::null_mut(),
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        )
    }
    .cast::<SocketCounts>();
    if counts.is_null() {
        return;
    }
    unsafe {
        if (*counts).l4_offset != 0 {
            return;
        }
        (*counts).key = packet.key;
        (*counts).folded_jiffies = bpf_jiffies64();
        // Written last: a storage without it is not counted on yet (the
        // L4 header is never at offset 0).
        (*counts).l4_offset = packet.l4_offset;
    }
}

/// Folds a closing socket's counts into the table (`netflow_release`); `sk`
/// is the program's context.
#[inline(always)]
pub fn fold_on_release(sk: *mut bpf_sock) {
    let counts = unsafe { bpf_sk_storage_get(sockets_map(), sk.cast(), ptr::null_mut(), 0) }
        .cast::<SocketCounts>();
    if !counts.is_null() {
        fold(counts);
    }
}

/// Moves the counts into the table. Each counter is taken with an atomic
/// exchange, so a packet counted on another CPU meanwhile is either in this
/// fold or in the next one, never lost or counted twice. Rare (once per
/// interval per socket), so a call of its own keeps its frame off the
/// per-packet path's stack.
#[inline(never)]
fn fold(counts: *mut SocketCounts) {
    unsafe {
        let (now, now_jiffies) = (bpf_ktime_get_coarse_ns(), bpf_jiffies64());
        let tick = ptr::read_volatile(&TICK_NS);
        // Jiffies back to the table's clock: so many ticks before now.
        let at = |jiffies: u64| now.saturating_sub(now_jiffies.saturating_sub(jiffies) * tick);
        let since = at((*counts).folded_jiffies);
        (*counts).folded_jiffies = now_jiffies;
        // A new interval: each direction may pass up its requests' heads again.
        (*counts).http_sent = [0; 2];
        let take = |counter: *mut u64| atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(counter, 0);
        let take_flags =
            |flags: *mut u32| atomic_xchg::<u32, { AtomicOrdering::Relaxed }>(flags, 0);
        let (egress, ingress) = (&raw mut (*counts).egress, &raw mut (*counts).ingress);
        let packets_out = take(&raw mut (*egress).packets);
        let delta = Delta {
            packets_in: take(&raw mut (*ingress).packets),
            packets_out,
            bytes_in: take(&raw mut (*ingress).bytes),
            bytes_out: take(&raw mut (*egress).bytes),
            tcp_flags: take_flags(&raw mut (*egress).tcp_flags)
                | take_flags(&raw mut (*ingress).tcp_flags),
            initiator: INITIATOR_UNKNOWN,
            // Only read if the table lost the entry (idle-removed) meanwhile.
            first_dir: if packets_out != 0 {
                DIR_EGRESS
            } else {
                DIR_INGRESS
            },
            first_seen_ns: since,
            last_seen_ns: at((*egress)
                .last_seen_jiffies
                .max((*ingress).last_seen_jiffies)),
        };
        if delta.packets_in != 0 || delta.packets_out != 0 {
            // Only fails when the reader removed the entry as idle and the
            // table filled meanwhile: then the counts go to the overflow ring.
            account(&(*counts).key, &delta);
        }
    }
}
