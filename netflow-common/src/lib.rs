//! Types shared by the kernel programs (`netflow-ebpf`) and the agent.
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each is
//! `#[repr(C)]` with explicit padding, holds only integers and byte arrays (no
//! `bool`, `Option` or enum: the kernel may write any bit pattern), and has a
//! size assertion so a layout change cannot slip through silently.
#![no_std]

/// Name of the connection table (a plain, shared hash map: never LRU, so a
/// full table is visible instead of silently evicting connections).
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the ring buffer that receives connections the table could not hold.
pub const OVERFLOW_MAP: &str = "OVERFLOW";
/// Name of the ring buffer that carries DNS responses up to the agent, which
/// reads them to name external addresses.
pub const DNS_MAP: &str = "DNS_EVENTS";
/// DNS payload bytes passed up per response (answers beyond are not read).
pub const DNS_PAYLOAD_BYTES: usize = 512;
/// DNS ring buffer size in bytes.
pub const DNS_RING_BYTES: u32 = 256 * 1024;

/// Name of the ring buffer that carries the heads of plaintext HTTP/1.x
/// requests up to the agent, which reads method, path and Host from them.
pub const HTTP_MAP: &str = "HTTP_EVENTS";
/// Request bytes passed up per request: the request line and, when they
/// fit, the headers up to Host.
pub const HTTP_HEAD_BYTES: usize = 256;
/// HTTP ring buffer size in bytes.
pub const HTTP_RING_BYTES: u32 = 256 * 1024;
/// Name of the global that turns the passing up of HTTP request heads on
/// (1, the default) or off (0: `--http-heads off`; the verifier then drops
/// the code, so the packet path is as without it).
pub const HTTP_HEADS_GLOBAL: &str = "HTTP_HEADS";
/// Request heads passed up per connection and direction per fold interval;
/// the rest are counted (`Drop::HttpUnsampled`), so a busy keep-alive
/// connection costs a bounded number of events.
pub const HTTP_HEADS_PER_INTERVAL: u16 = 8;
/// A socket direction's HTTP state (`SocketCounts::http_state`): not yet
/// seen a payload, its first payload began a request, or it did not (then
/// its payloads are never looked at again).
pub const HTTP_UNDECIDED: u8 = 0;
pub const HTTP_REQUESTS: u8 = 1;
pub const HTTP_NOT_REQUESTS: u8 = 2;

/// Name of the per-CPU array of "could not record" counters, indexed by [`Drop`] reason.
pub const DROPS_MAP: &str = "DROPS";
/// Name of the egress program.
pub const EGRESS_PROG: &str = "netflow_egress";
/// Name of the ingress program.
pub const INGRESS_PROG: &str = "netflow_ingress";
/// Name of the program that folds a closing socket's counts into the table.
pub const RELEASE_PROG: &str = "netflow_release";
/// Name of the per-socket counters of established TCP connections
/// (`BPF_MAP_TYPE_SK_STORAGE`, one [`SocketCounts`] per socket).
pub const SOCKETS_MAP: &str = "SOCKETS";
/// Name of the global that says how often, in kernel ticks (jiffies), a
/// socket's counts are folded into the connection table while it carries
/// traffic; the agent sets it to its poll interval.
pub const FOLD_INTERVAL_GLOBAL: &str = "FOLD_INTERVAL_JIFFIES";
/// Name of the global holding the kernel tick's length in ns (the agent
/// reads it as the resolution of CLOCK_MONOTONIC_COARSE).
pub const TICK_NS_GLOBAL: &str = "TICK_NS";
/// Fold interval (ns) the agent uses unless told (its default poll interval).
pub const DEFAULT_FOLD_INTERVAL_NS: u64 = 1_000_000_000;
/// Tick length compiled into the object (HZ=250); the agent overrides it.
pub const DEFAULT_TICK_NS: u64 = 4_000_000;
/// Name of the benchmark's floor program: allows and does nothing else, so
/// the hook's own cost can be subtracted. The agent never loads it.
pub const FLOOR_PROG: &str = "netflow_floor";

/// Connection table size compiled into the object; the agent overrides it at load time.
pub const DEFAULT_FLOW_ENTRIES: u32 = 65_536;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const OVERFLOW_RING_BYTES: u32 = 256 * 1024;

/// Address families as stored in [`FlowKey::family`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IP protocol numbers the parser understands; anything else is recorded by
/// number with zero ports.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// [`FlowStats::initiator`] values: who opened the connection, as far as the
/// kernel saw it (a TCP SYN without ACK). UDP and connections already open when
/// recording began stay `INITIATOR_UNKNOWN`; userspace applies its rule.
pub const INITIATOR_UNKNOWN: u8 = 0;
pub const INITIATOR_LOCAL: u8 = 1;
pub const INITIATOR_REMOTE: u8 = 2;

/// Packet directions, relative to the cgroup that owns the socket.
pub const DIR_INGRESS: u8 = 1;
pub const DIR_EGRESS: u8 = 2;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The initiator a single packet proves: a TCP SYN without ACK was sent by
/// the side that opens the connection. Anything else proves nothing.
#[inline(always)]
pub const fn initiator_of(tcp_flags: u8, direction: u8) -> u8 {
    if tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        INITIATOR_UNKNOWN
    } else if direction == DIR_EGRESS {
        INITIATOR_LOCAL
    } else {
        INITIATOR_REMOTE
    }
}

/// A packet's TCP flags placed in [`FlowStats::tcp_flags`] by direction, so
/// userspace can tell a SYN-ACK received from a SYN sent (a connection that
/// was answered from one that was refused or never answered).
#[inline(always)]
pub const fn direction_flags(tcp_flags: u8, direction: u8) -> u32 {
    if direction == DIR_EGRESS {
        tcp_flags as u32
    } else {
        (tcp_flags as u32) << 8
    }
}

/// Reasons a packet was not (fully) recorded. Each indexes the per-CPU
/// [`DROPS_MAP`] array. The packet itself is always allowed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The connection table was full: the packet went to the overflow ring instead.
    MapFull = 0,
    /// The table was full and so was the overflow ring: the packet is lost to the record.
    RingFull = 1,
    /// A header could not be read (packet shorter than its headers claim).
    Truncated = 2,
    /// Not IPv4 or IPv6 (or a bad IP version field).
    NotIp = 3,
    /// A non-first IP fragment: it carries no ports, so it cannot be tied to a connection.
    Fragment = 4,
    /// IPv6 extension header chain longer than the parser follows.
    ExtHeaderChain = 5,
    /// A map update failed for a reason other than a full table.
    UpdateFailed = 6,
    /// A DNS response could not be passed up (ring full or unreadable).
    DnsLost = 7,
    /// An HTTP request head could not be passed up (ring full or unreadable).
    HttpLost = 8,
    /// An HTTP request seen but not passed up: its connection had passed
    /// [`HTTP_HEADS_PER_INTERVAL`] heads this interval already.
    HttpUnsampled = 9,
}

impl Drop {
    pub const COUNT: u32 = 10;
    pub const ALL: [Drop; Drop::COUNT as usize] = [
        Drop::MapFull,
        Drop::RingFull,
        Drop::Truncated,
        Drop::NotIp,
        Drop::Fragment,
        Drop::ExtHeaderChain,
        Drop::UpdateFailed,
        Drop::DnsLost,
        Drop::HttpLost,
        Drop::HttpUnsampled,
    ];

    /// Stable name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Drop::MapFull => "map_full",
            Drop::RingFull => "ring_full",
            Drop::Truncated => "truncated",
            Drop::NotIp => "not_ip",
            Drop::Fragment => "fragment",
            Drop::ExtHeaderChain => "ext_header_chain",
            Drop::UpdateFailed => "update_failed",
            Drop::DnsLost => "dns_lost",
            Drop::HttpLost => "http_lost",
            Drop::HttpUnsampled => "http_unsampled",
        }
    }
}

/// One connection, as seen from the cgroup that owns the local socket.
///
/// IPv4 addresses use the first 4 bytes of the 16-byte arrays; the rest is zero.
/// Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub cgroup_id: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);

/// Counters for one connection, aggregated in place in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Kernel CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns`) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// OR of every TCP flag byte seen, per direction (see [`direction_flags`]):
    /// bits 0-7 sent (egress), bits 8-15 received (ingress).
    pub tcp_flags: u32,
    /// One of the `INITIATOR_*` values.
    pub initiator: u8,
    /// Direction (`DIR_*`) of the first packet seen: a hint for UDP.
    pub first_dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowStats>() == 56);

/// Counts of one established TCP socket since they were last folded into
/// its connection's [`FlowStats`]: the per-packet path adds here (socket
/// storage, no hash lookup) and moves the sums into the table at most once per
/// fold interval and when the socket is closed.
///
/// Each direction's counters stay off the cache lines of the other
/// direction and of the read-mostly head (key, offset): a socket's egress
/// runs on its process's CPU while its ingress often runs in another CPU's
/// softirq, and a line written by one and read by the other would bounce
/// between them on every packet (measured: ~50 ns a packet). At least 64
/// bytes separate the groups, whatever the storage's alignment (Linux puts
/// the data 8 bytes into a cache line).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketCounts {
    /// The connection the socket's packets belong to (from its first
    /// established packet, as the table keys it: after any address translation).
    pub key: FlowKey,
    /// When the counts were last folded into the table, in jiffies: the
    /// per-packet path reads the clock as jiffies (an inlined load, where
    /// the nanosecond clocks are helper calls).
    pub folded_jiffies: u64,
    /// Where the TCP header starts in this socket's packets (IP header and
    /// IPv6 extension headers stay the same for the life of a connection);
    /// 0 while the storage is being filled in.
    pub l4_offset: u16,
    /// Per direction (egress first): whether its payloads begin HTTP
    /// requests (`HTTP_UNDECIDED`, `HTTP_REQUESTS`, `HTTP_NOT_REQUESTS`).
    pub http_state: [u8; 2],
    /// Request heads passed up since the last fold, per direction.
    pub http_sent: [u16; 2],
    pub _gap_head: [u8; 64],
    pub egress: DirectionCounts,
    pub _gap_directions: [u8; 64],
    pub ingress: DirectionCounts,
}
const _: () = assert!(core::mem::size_of::<SocketCounts>() == 256);
const _: () = assert!(core::mem::offset_of!(SocketCounts, egress) == 128);
const _: () = assert!(core::mem::offset_of!(SocketCounts, http_state) == 58);
const _: () = assert!(core::mem::offset_of!(SocketCounts, ingress) == 224);

impl Default for SocketCounts {
    fn default() -> Self {
        Self {
            key: FlowKey::default(),
            folded_jiffies: 0,
            l4_offset: 0,
            http_state: [HTTP_UNDECIDED; 2],
            http_sent: [0; 2],
            _gap_head: [0; 64],
            egress: DirectionCounts::default(),
            _gap_directions: [0; 64],
            ingress: DirectionCounts::default(),
        }
    }
}

/// One direction's counts of a socket since the last fold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounts {
    pub packets: u64,
    pub bytes: u64,
    /// The last packet's time, in jiffies.
    pub last_seen_jiffies: u64,
    /// TCP flags since the last fold, placed by direction ([`direction_flags`]).
    pub tcp_flags: u32,
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<DirectionCounts>() == 32);

/// A packet of a connection the table had no room for, sent through the
/// overflow ring buffer so that userspace can still account for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverflowRecord {
    pub key: FlowKey,
    pub bytes: u64,
    /// Kernel CLOCK_MONOTONIC_COARSE of the packet.
    pub ts_ns: u64,
    /// GSO segments the packet stands for (at least 1).
    pub packets: u32,
    /// One of the `DIR_*` values.
    pub direction: u8,
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<OverflowRecord>() == 72);

/// A DNS message of a socket in the recorded cgroups, a query it sent (UDP
/// to port 53) or a response it received (UDP from port 53): the UDP payload
/// from the DNS header on, cut at [`DNS_PAYLOAD_BYTES`], with the socket's
/// connection, so userspace accepts only answers to queries that were asked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    /// The socket's connection: who asked (cgroup, local address and port)
    /// and which server (remote address and port).
    pub key: FlowKey,
    /// Bytes of `payload` that hold data.
    pub len: u32,
    /// `DIR_EGRESS` for a query the socket sent, `DIR_INGRESS` for a
    /// response it received.
    pub direction: u8,
    pub _pad: [u8; 3],
    pub payload: [u8; DNS_PAYLOAD_BYTES],
}
const _: () = assert!(core::mem::size_of::<DnsEvent>() == 56 + DNS_PAYLOAD_BYTES);

/// The head of an HTTP/1.x request a socket of the recorded cgroups sent
/// (egress) or received (ingress): the TCP payload from the method on, cut
/// at [`HTTP_HEAD_BYTES`], with the socket's connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpEvent {
    pub key: FlowKey,
    /// Bytes of `head` that hold data.
    pub len: u32,
    /// `DIR_EGRESS`: the local socket is the client; `DIR_INGRESS`: the server.
    pub direction: u8,
    pub _pad: [u8; 3],
    pub head: [u8; HTTP_HEAD_BYTES],
}
const _: () = assert!(core::mem::size_of::<HttpEvent>() == 56 + HTTP_HEAD_BYTES);

/// Name of the table of cgroups made while the programs were loaded: cgroup
/// id -> path, written when each is made (the `cgroup_mkdir` tracepoint),
/// so the agent names the flows of a pod whose cgroup was gone before it
/// polled. LRU: the oldest entries make room; the agent keeps what it read.
pub const CGROUP_PATHS_MAP: &str = "CGROUP_PATHS";
/// Entries of [`CGROUP_PATHS_MAP`] (kubelet makes two or three cgroups per
/// pod: thousands of pods started within one poll interval fit).
pub const CGROUP_PATH_ENTRIES: u32 = 8_192;
/// Path bytes kept per cgroup (kubelet's systemd paths are ~170 bytes).
pub const CGROUP_PATH_BYTES: usize = 256;
/// Name of the program on the `cgroup/cgroup_mkdir` tracepoint.
pub const CGROUP_MKDIR_PROG: &str = "netflow_cgroup_mkdir";
/// Where the tracepoint's record holds what the program reads (see
/// `events/cgroup/cgroup_mkdir/format` in tracefs; the agent checks the
/// running kernel's format before it attaches): the hierarchy's id (0 is
/// cgroup v2), the cgroup's id, and the `__data_loc` of its path.
pub const CGROUP_MKDIR_ROOT_OFFSET: usize = 8;
pub const CGROUP_MKDIR_ID_OFFSET: usize = 16;
pub const CGROUP_MKDIR_PATH_OFFSET: usize = 24;

/// A cgroup's path below the cgroup v2 root, as the kernel gave it when the
/// cgroup was made (NUL-terminated; cut at [`CGROUP_PATH_BYTES`] - 1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupPath {
    pub path: [u8; CGROUP_PATH_BYTES],
}
const _: () = assert!(core::mem::size_of::<CgroupPath>() == CGROUP_PATH_BYTES);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data: repr(C), integers and byte arrays only, explicit padding.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OverflowRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SocketCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DirectionCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DnsEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CgroupPath {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HttpEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_syn_names_the_initiator() {
        assert_eq!(initiator_of(TCP_SYN, DIR_EGRESS), INITIATOR_LOCAL);
        assert_eq!(initiator_of(TCP_SYN, DIR_INGRESS), INITIATOR_REMOTE);
        assert_eq!(
            initiator_of(TCP_SYN | TCP_ACK, DIR_INGRESS),
            INITIATOR_UNKNOWN
        );
        assert_eq!(
            initiator_of(TCP_ACK | TCP_FIN, DIR_EGRESS),
            INITIATOR_UNKNOWN
        );
        assert_eq!(initiator_of(0, DIR_EGRESS), INITIATOR_UNKNOWN);
    }
}
