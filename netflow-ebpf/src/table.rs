//! The connection table: what a packet, or a socket's folded counts, adds to
//! a connection's entry, and the counted overflow path when the table is full.

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

use aya_ebpf::bindings::BPF_NOEXIST;
use netflow_common::{
    DIR_EGRESS, DIR_INGRESS, Drop, FlowKey, FlowStats, INITIATOR_UNKNOWN, OverflowRecord,
};

use crate::maps::{FLOWS, OVERFLOW, count_drop};

const EEXIST: i32 = 17;
const E2BIG: i32 = 7;

/// What to add to one connection: a single packet's worth (one direction) or
/// a socket's counts since its last fold (both).
pub struct Delta {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// TCP flags per direction (`direction_flags`).
    pub tcp_flags: u32,
    /// One of the `INITIATOR_*` values.
    pub initiator: u8,
    /// `DIR_*` of the first packet, for a new entry.
    pub first_dir: u8,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// Adds `delta` to the connection's entry, creating it if needed; a
/// connection the table has no room for goes to the overflow ring. True when
/// the connection has its entry in the table.
///
/// A function of its own (a BPF-to-BPF call): inlined into every caller,
/// the values it builds do not fit in one 512-byte stack frame.
#[inline(never)]
pub fn account(key: &FlowKey, delta: &Delta) -> bool {
    if let Some(stats) = FLOWS.get_ptr_mut(key) {
        update(stats, delta);
        return true;
    }

    let stats = FlowStats {
        packets_in: delta.packets_in,
        packets_out: delta.packets_out,
        bytes_in: delta.bytes_in,
        bytes_out: delta.bytes_out,
        first_seen_ns: delta.first_seen_ns,
        last_seen_ns: delta.last_seen_ns,
        tcp_flags: delta.tcp_flags,
        initiator: delta.initiator,
        first_dir: delta.first_dir,
        _pad: [0; 2],
    };
    match FLOWS.insert(key, &stats, BPF_NOEXIST as u64) {
        Ok(()) => true,
        // Another CPU inserted the same connection first: add to its entry.
        Err(err) if err == -EEXIST => match FLOWS.get_ptr_mut(key) {
            Some(stats) => {
                update(stats, delta);
                true
            }
            None => false,
        },
        Err(err) => {
            count_drop(if err == -E2BIG {
                Drop::MapFull
            } else {
                Drop::UpdateFailed
            });
            if delta.packets_out != 0 {
                overflow(key, delta, DIR_EGRESS);
            }
            if delta.packets_in != 0 {
                overflow(key, delta, DIR_INGRESS);
            }
            false
        }
    }
}

/// One direction of `delta` into the overflow ring (counted when the ring is full too).
#[inline(always)]
fn overflow(key: &FlowKey, delta: &Delta, direction: u8) {
    let (packets, bytes, tcp_flags) = if direction == DIR_EGRESS {
        (delta.packets_out, delta.bytes_out, delta.tcp_flags as u8)
    } else {
        (
            delta.packets_in,
            delta.bytes_in,
            (delta.tcp_flags >> 8) as u8,
        )
    };
    // Written in place in the ring (a record built on the stack would not
    // fit beside the caller's frame).
    let Some(mut entry) = OVERFLOW.reserve::<OverflowRecord>(0) else {
        count_drop(Drop::RingFull);
        return;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        (*record).key = *key;
        (*record).bytes = bytes;
        (*record).ts_ns = delta.last_seen_ns;
        (*record).packets = packets as u32;
        (*record).direction = direction;
        (*record).tcp_flags = tcp_flags;
        (*record)._pad = [0; 2];
    }
    entry.submit(0);
}

#[inline(always)]
fn update(stats: *mut FlowStats, delta: &Delta) {
    // Several CPUs may update one connection at once: counters use atomic adds.
    // Timestamps, flags and the initiator are last-writer-wins, which is exact
    // enough for them (all writers carry nearly the same values).
    unsafe {
        if delta.packets_out != 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*stats).packets_out,
                delta.packets_out,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*stats).bytes_out,
                delta.bytes_out,
            );
        }
        if delta.packets_in != 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*stats).packets_in,
                delta.packets_in,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*stats).bytes_in,
                delta.bytes_in,
            );
        }
        // A connection's entry is touched from several CPUs (ingress in one
        // softirq, egress from the process): write the time only when it
        // moved, so most packets do not pull the cache line away.
        if (*stats).last_seen_ns < delta.last_seen_ns {
            (*stats).last_seen_ns = delta.last_seen_ns;
        }
        // Most packets carry flags the connection has shown before: skip the
        // locked instruction for them.
        if (*stats).tcp_flags & delta.tcp_flags != delta.tcp_flags {
            atomic_or::<u32, u32, { AtomicOrdering::Relaxed }>(
                &raw mut (*stats).tcp_flags,
                delta.tcp_flags,
            );
            if delta.initiator != INITIATOR_UNKNOWN {
                (*stats).initiator = delta.initiator;
            }
        }
    }
}
