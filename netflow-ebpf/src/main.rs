//! netflow's kernel side: cgroup/skb ingress and egress programs that count
//! connections, and a cgroup/sock_release program that folds a closing
//! socket's counts into the connection table.
//!
//! The data path of one packet:
//! 1. an established TCP socket with storage: count on the socket
//!    (`socket`), fold into the table once per interval;
//! 2. otherwise parse the headers (`parse`) and add to the connection's
//!    table entry (`table`), creating it, or the overflow record when the
//!    table is full; an established socket gets its storage here;
//! 3. DNS messages are passed up to the agent (`dns`), and so are the heads
//!    of plaintext HTTP requests (`http`; on the fast path too, sampled).
//!
//! Beside the packet path, `cgroups` remembers each cgroup's path as it is
//! made, for naming pods that end before the agent polls.
//!
//! Rules that hold on every path:
//! - fail open: every program returns 1 (allow) whatever happens;
//! - nothing is lost silently: a packet that cannot be recorded moves a
//!   per-CPU counter (`DROPS`), and a connection the table has no room for is
//!   sent to the `OVERFLOW` ring buffer instead;
//! - no panics, no indexing, no unwrap (the verifier rejects reachable panics).
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsics lower to BPF's
// atomic add/or/xchg instructions.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod cgroups;
mod dns;
mod http;
mod maps;
mod parse;
mod socket;
mod table;

use aya_ebpf::{
    helpers::{bpf_ktime_get_coarse_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};
use netflow_common::{DIR_EGRESS, DIR_INGRESS, PROTO_TCP, direction_flags, initiator_of};
use parse::Packet;
use table::Delta;

use crate::maps::count_drop;

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

/// Runs when a process closes a socket: its counts since the last fold go
/// into the table before the socket (and its storage) goes away.
#[cgroup_sock(sock_release)]
pub fn netflow_release(ctx: SockContext) -> i32 {
    socket::fold_on_release(ctx.sock);
    1
}

/// The benchmark's floor (`netflow-lab bench`): the hook, the call and the
/// statistics' clock reads, with no work. Attachable in either direction;
/// the agent never loads it.
#[cgroup_skb]
pub fn netflow_floor(_ctx: SkBuffContext) -> i32 {
    1
}

/// The kernel's `LOOPBACK_IFINDEX`: `lo` of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

#[inline(always)]
fn record(ctx: &SkBuffContext, direction: u8) {
    let socket = socket::established_socket(ctx);
    if !socket.is_null() && socket::count_on_socket(ctx, socket, direction) {
        return;
    }
    // A pod's processes among themselves (a mesh sidecar and its app)
    // cross no network and no policy. Their packets can carry no loopback
    // address (a redirected connection's replies come from the address the
    // app asked for), so the device says it: loopback is ifindex 1 in every
    // namespace. Such sockets never get storage, so the fast path above
    // never sees them.
    if unsafe { (*ctx.skb.skb).ifindex } == LOOPBACK_IFINDEX {
        return;
    }
    match parse::parse(ctx, direction) {
        Ok(mut packet) => {
            packet.key.cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            let in_table = table::account(&packet.key, &packet_delta(&packet, direction, now));
            // A connection the table has no room for stays on this path:
            // each of its packets goes to the overflow ring, counted.
            if in_table && !socket.is_null() && packet.key.protocol == PROTO_TCP {
                socket::start_counting(socket, &packet);
            }
            if dns::is_dns(&packet, direction) {
                dns::pass_up(ctx, &packet, direction);
            } else if http::enabled()
                && packet.key.protocol == PROTO_TCP
                && ctx.len() > packet.payload_offset
                && http::begins(ctx, packet.payload_offset) == http::Begins::Request
            {
                // A request before its socket has storage (a server's
                // first): passed up whole, no sampling state yet.
                http::pass_up(ctx, &packet.key, direction, packet.payload_offset);
            }
        }
        Err(reason) => count_drop(reason),
    }
}

/// One packet's worth for its connection's table entry.
#[inline(always)]
fn packet_delta(packet: &Packet, direction: u8, now: u64) -> Delta {
    let segments = packet.segments as u64;
    let (packets_in, packets_out, bytes_in, bytes_out) = if direction == DIR_EGRESS {
        (0, segments, 0, packet.wire_bytes)
    } else {
        (segments, 0, packet.wire_bytes, 0)
    };
    Delta {
        packets_in,
        packets_out,
        bytes_in,
        bytes_out,
        tcp_flags: direction_flags(packet.tcp_flags, direction),
        initiator: initiator_of(packet.tcp_flags, direction),
        first_dir: direction,
        first_seen_ns: now,
        last_seen_ns: now,
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
