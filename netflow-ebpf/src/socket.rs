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
    helpers::{bpf_ktime_get_coarse_ns, bpf_sk_fullsock, bpf_sk_storage_get},
    programs::SkBuffContext,
};
use netflow_common::{
    DEFAULT_FOLD_INTERVAL_NS, DIR_EGRESS, DIR_INGRESS, INITIATOR_UNKNOWN, PROTO_TCP, SocketCounts,
    direction_flags,
};

use crate::{
    maps::SOCKETS,
    parse::Packet,
    table::{Delta, account},
};

/// How often a socket's counts move into the table while it carries
/// traffic; set by the agent at load time to its poll interval, so what it
/// reads is exact to within one interval.
#[unsafe(no_mangle)]
static FOLD_INTERVAL_NS: u64 = DEFAULT_FOLD_INTERVAL_NS;

#[inline(always)]
fn sockets_map() -> *mut core::ffi::c_void {
    ptr::from_ref(&SOCKETS).cast_mut().cast()
}

/// The packet's socket, when it is a full TCP socket in ESTABLISHED state.
#[inline(always)]
pub fn established_tcp_socket(ctx: &SkBuffContext) -> *mut bpf_sock {
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return ptr::null_mut();
    }
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return sk;
    }
    let (protocol, state) = unsafe { ((*sk).protocol, (*sk).state) };
    if protocol == PROTO_TCP as u32 && state == BPF_TCP_ESTABLISHED {
        sk
    } else {
        ptr::null_mut()
    }
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
    // Data offset (byte 12) and flags (13).
    let Ok(tcp) = ctx.load::<[u8; 14]>(l4_offset as usize) else {
        return false;
    };
    let header_len = ((tcp[12] >> 4) as u64) * 4;
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    let segments = if gso_segs > 1 { gso_segs as u64 } else { 1 };
    // As in `parse`: each GSO segment has its own headers on the wire.
    let wire_bytes = ctx.len() as u64 + (segments - 1) * (l4_offset + header_len);
    let flags = direction_flags(tcp[13], direction);
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    unsafe {
        // Ingress (softirq) and egress (the process) may run on two CPUs at once.
        let (packets, bytes) = if direction == DIR_EGRESS {
            (&raw mut (*counts).packets_out, &raw mut (*counts).bytes_out)
        } else {
            (&raw mut (*counts).packets_in, &raw mut (*counts).bytes_in)
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(packets, segments);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes, wire_bytes);
        if (*counts).tcp_flags & flags != flags {
            atomic_or::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*counts).tcp_flags, flags);
        }
        if (*counts).last_seen_ns != now {
            (*counts).last_seen_ns = now;
        }
        let interval = ptr::read_volatile(&FOLD_INTERVAL_NS);
        if now.wrapping_sub((*counts).folded_ns) >= interval {
            fold(counts, now);
        }
    }
    true
}

/// Gives an established socket its storage, after its first established
/// packet went through the table.
#[inline(always)]
pub fn start_counting(sk: *mut bpf_sock, packet: &Packet, now: u64) {
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
        (*counts).folded_ns = now;
        (*counts).last_seen_ns = now;
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
        fold(counts, unsafe { bpf_ktime_get_coarse_ns() });
    }
}

/// Moves the counts into the table. Each counter is taken with an atomic
/// exchange, so a packet counted on another CPU meanwhile is either in this
/// fold or in the next one, never lost or counted twice. Rare (once per
/// interval per socket), so a call of its own keeps its frame off the
/// per-packet path's stack.
#[inline(never)]
fn fold(counts: *mut SocketCounts, now: u64) {
    unsafe {
        let since = (*counts).folded_ns;
        (*counts).folded_ns = now;
        let take = |counter: *mut u64| atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(counter, 0);
        let packets_out = take(&raw mut (*counts).packets_out);
        let delta = Delta {
            packets_in: take(&raw mut (*counts).packets_in),
            packets_out,
            bytes_in: take(&raw mut (*counts).bytes_in),
            bytes_out: take(&raw mut (*counts).bytes_out),
            tcp_flags: atomic_xchg::<u32, { AtomicOrdering::Relaxed }>(
                &raw mut (*counts).tcp_flags,
                0,
            ),
            initiator: INITIATOR_UNKNOWN,
            // Only read if the table lost the entry (idle-removed) meanwhile.
            first_dir: if packets_out != 0 {
                DIR_EGRESS
            } else {
                DIR_INGRESS
            },
            first_seen_ns: since,
            last_seen_ns: (*counts).last_seen_ns,
        };
        if delta.packets_in != 0 || delta.packets_out != 0 {
            // Only fails when the reader removed the entry as idle and the
            // table filled meanwhile: then the counts go to the overflow ring.
            account(&(*counts).key, &delta);
        }
    }
}
