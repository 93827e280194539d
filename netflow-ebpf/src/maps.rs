//! The maps the programs share with each other and with the agent.

use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{HashMap, PerCpuArray, RingBuf},
};
use netflow_common::{
    DEFAULT_FLOW_ENTRIES, DNS_RING_BYTES, Drop, FlowKey, FlowStats, HTTP_RING_BYTES,
    OVERFLOW_RING_BYTES, SocketCounts,
};

/// Connections, aggregated in place. Size is overridden by the agent at load time.
#[map]
pub static FLOWS: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

/// Established TCP sockets' counts since their last fold into `FLOWS`:
/// storage that lives and dies with the socket, reached without a hash
/// lookup. Needs BTF (the kernel refuses socket storage without it).
#[btf_map]
pub static SOCKETS: SkStorage<SocketCounts> = SkStorage::new();

/// Packets of connections that did not fit in `FLOWS`.
#[map]
pub static OVERFLOW: RingBuf = RingBuf::with_byte_size(OVERFLOW_RING_BYTES, 0);

/// DNS responses, for the agent to name external addresses.
#[map]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_RING_BYTES, 0);

/// Heads of plaintext HTTP requests, for the agent to read the calls.
#[map]
pub static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(HTTP_RING_BYTES, 0);

/// What could not be recorded, by `Drop` reason.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Drop::COUNT, 0);

#[inline(always)]
pub fn count_drop(reason: Drop) {
    if let Some(counter) = DROPS.get_ptr_mut(reason as u32) {
        // Per-CPU slot: no other CPU writes it, a plain add is exact.
        unsafe { *counter += 1 };
    }
}
