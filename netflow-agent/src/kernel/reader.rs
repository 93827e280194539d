//! Turning the kernel's connection table into flow records.
//!
//! Every poll reads the whole table, reports what each connection did since
//! the last poll (delta of the kernel's running totals), removes connections
//! idle for longer than the idle timeout, and folds in the packets of
//! connections that only reached us through the overflow ring.
//!
//! Removing an idle entry races with a packet arriving between the final read
//! and the delete; that packet recreates the entry, so at most the bytes of
//! that one packet's update can be lost, and only for connections that were
//! idle for the whole timeout.

use std::{
    collections::{HashMap as StdHashMap, btree_map::BTreeMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    os::fd::{AsFd as _, BorrowedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::MapError;
use netflow_common::{
    DIR_EGRESS, DIR_INGRESS, DnsEvent, Drop, FAMILY_IPV4, FlowKey, FlowStats, HttpEvent,
    OverflowRecord,
};

use super::{
    batch::{self, BatchError},
    cgroup_mount,
    cgroup_paths::CgroupIndex,
    clock::KernelClock,
    dns_wire,
    handshake::handshake,
    http_wire, initiator,
    loader::ProbeMaps,
    redirect,
};
use crate::model::{
    Address, Basis, DnsAnswer, DnsName, FlowRecord, Handshake, HttpRequest, IntervalStats,
    Protocol, Side, rfc3339,
};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the connection table")]
    Table(#[source] MapError),
    #[error("reading the connection table in batches")]
    Batch(#[source] std::io::Error),
    #[error("reading the drop counters")]
    Drops(#[source] MapError),
}

/// One poll's output.
#[derive(Debug, Default)]
pub struct Interval {
    pub flows: Vec<FlowRecord>,
    /// Names learned from DNS responses during the interval.
    pub dns: Vec<DnsName>,
    pub stats: IntervalStats,
}

pub struct FlowReader {
    maps: ProbeMaps,
    /// Kernel totals as of the last report, per live table entry.
    reported: StdHashMap<FlowKey, FlowStats>,
    /// Overflow-ring packets not yet reported, aggregated per connection.
    overflow_pending: StdHashMap<FlowKey, FlowStats>,
    /// Connections seen through the overflow ring, with their running
    /// totals (the last packet time among them), so each is counted once,
    /// its handshake followed, and forgotten when idle.
    overflow_known: StdHashMap<FlowKey, OverflowConnection>,
    overflowed_connections: u64,
    /// Overflowed connections first seen since the last report.
    overflow_new: std::collections::HashSet<FlowKey>,
    /// At most this many overflowed connections are followed at once.
    overflow_limit: usize,
    /// Overflow-ring packets of connections past `overflow_limit`: not
    /// recorded, counted (drop reason `overflow_untracked`).
    overflow_untracked: u64,
    idle_timeout: Duration,
    ephemeral: RangeInclusive<u16>,
    /// Whether the kernel takes batch map operations (tried first, once).
    batches: bool,
    /// Cgroup ids to paths (none without a cgroup v2 mount).
    cgroups: Option<CgroupIndex>,
    /// Every name -> address the DNS answered, with when it was last
    /// answered (a counter: the oldest go first when the set is full), and
    /// those new this interval.
    /// (name, address, the server that answered, the asking socket's cgroup).
    dns_known: StdHashMap<DnsKey, u64>,
    dns_answers: u64,
    dns_new: Vec<DnsKey>,
    /// Queries the recorded sockets sent, waiting for their answer, with
    /// when they were sent: an answer counts only when it answers one.
    dns_pending: StdHashMap<PendingQuery, Instant>,
    /// Responses refused, by why (`unsolicited`: no query of that socket,
    /// id and question; `pending_full`: too many queries in flight).
    dns_refused: BTreeMap<String, u64>,
    /// HTTP requests read since the last report, by connection, with the
    /// direction they were seen in.
    http_pending: StdHashMap<FlowKey, (u8, Vec<HttpRequest>)>,
    /// Connections that carried an HTTP request (each counted once),
    /// forgotten with their table entry.
    http_connections: std::collections::HashSet<FlowKey>,
    /// Heads the kernel passed up that were no well-formed request line.
    http_unparsed: u64,
}

/// Connections followed as having carried HTTP, at most; past it a new one
/// is not counted as such (its edge then keeps L4 rules).
const HTTP_CONNECTIONS_MAX: usize = 262_144;

/// Names remembered from DNS answers, at most: past it the tenth answered
/// longest ago is forgotten, so a week of answers keeps memory bounded and
/// names learned late in the week still count.
const DNS_NAMES_MAX: usize = 100_000;

/// A name, the address it names, the server that said so and the cgroup of
/// the socket that asked.
type DnsKey = (String, IpAddr, IpAddr, Option<String>);

/// A query in flight: the socket that sent it, the server, the id and the
/// question. Its answer must match all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PendingQuery {
    cgroup_id: u64,
    local_addr: [u8; 16],
    local_port: u16,
    server: [u8; 16],
    id: u16,
    question: Option<String>,
}

impl PendingQuery {
    fn of(key: &FlowKey, message: &dns_wire::Message) -> Self {
        Self {
            cgroup_id: key.cgroup_id,
            local_addr: key.local_addr,
            local_port: key.local_port,
            server: key.remote_addr,
            id: message.id,
            question: message.question.clone(),
        }
    }
}

/// Queries in flight, at most (past it, new ones are not followed: their
/// answers will not count, and are counted).
const DNS_PENDING_MAX: usize = 65_536;

/// How long a query waits for its answer.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection followed through the overflow ring.
#[derive(Clone, Copy, Default)]
struct OverflowConnection {
    totals: FlowStats,
    /// Already reported as established.
    established: bool,
}

/// Overflowed connections followed at once, at most: a flood of new
/// connections past the kernel table cannot grow the agent without bound.
pub const OVERFLOW_CONNECTIONS_MAX: usize = 100_000;

/// Ring records taken per drain: a flood cannot keep one drain running.
const DRAIN_MAX: usize = 65_536;

/// A TCP connection closed (FIN both ways, or a reset) leaves the table
/// once this quiet, rather than after the idle timeout: at hundreds of new
/// connections a second, closed ones waiting out a minute would fill it.
/// The wait lets the last ACKs land in the entry, not in a new one.
const CLOSED_LINGER: Duration = Duration::from_secs(3);

/// Whether a connection is over: idle past the timeout, or closed and
/// quiet past [`CLOSED_LINGER`].
fn over(key: &FlowKey, total: &FlowStats, now_ns: u64, idle_ns: u64) -> bool {
    let quiet_ns = now_ns.saturating_sub(total.last_seen_ns);
    quiet_ns > idle_ns
        || (closed(key.protocol, total.tcp_flags) && quiet_ns > CLOSED_LINGER.as_nanos() as u64)
}

/// A TCP connection that ended: a reset either way, or a FIN each way
/// (`tcp_flags`: bits 0-7 sent, 8-15 received).
fn closed(protocol: u8, tcp_flags: u32) -> bool {
    let (sent, received) = ((tcp_flags & 0xff) as u8, ((tcp_flags >> 8) & 0xff) as u8);
    protocol == netflow_common::PROTO_TCP
        && ((sent | received) & netflow_common::TCP_RST != 0
            || (sent & received & netflow_common::TCP_FIN) != 0)
}

/// How long a removed cgroup's path is remembered beyond the idle
/// timeout (its last connections are reported when they idle out): long
/// enough for that, short enough that a node starting pods by the hundred
/// per second does not hold every path of the last ten minutes.
const CGROUP_GRACE_BEYOND_IDLE: Duration = Duration::from_secs(60);

/// Entries asked for per batch syscall.
const BATCH_ENTRIES: usize = 4096;

impl FlowReader {
    pub fn new(maps: ProbeMaps, idle_timeout: Duration) -> Self {
        let reused = maps.reused;
        let mut reader = Self::over(maps, idle_timeout);
        if reused {
            reader.take_over_table();
        }
        reader
    }

    /// A table taken over from an earlier agent: what it holds up to now
    /// was that agent's to report (it reported all of it up to its last
    /// poll; what came after is lost, at most one interval). Only what
    /// happens from here on is reported, and each connection keeps who
    /// opened it and when.
    fn take_over_table(&mut self) {
        match self.read_table() {
            Ok(entries) => {
                tracing::info!(
                    connections = entries.len(),
                    "took over the pinned connection table"
                );
                self.reported = entries.into_iter().collect();
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the pinned connection table"),
        }
    }

    fn over(maps: ProbeMaps, idle_timeout: Duration) -> Self {
        Self {
            maps,
            reported: StdHashMap::new(),
            overflow_pending: StdHashMap::new(),
            overflow_known: StdHashMap::new(),
            overflowed_connections: 0,
            overflow_new: Default::default(),
            overflow_limit: OVERFLOW_CONNECTIONS_MAX,
            overflow_untracked: 0,
            http_pending: StdHashMap::new(),
            http_connections: std::collections::HashSet::new(),
            http_unparsed: 0,
            idle_timeout,
            ephemeral: initiator::ephemeral_range(),
            batches: true,
            dns_known: StdHashMap::new(),
            dns_answers: 0,
            dns_new: Vec::new(),
            dns_pending: StdHashMap::new(),
            dns_refused: BTreeMap::new(),
            cgroups: cgroup_mount::cgroup2_mount()
                .ok()
                .map(|mount| CgroupIndex::new(&mount, idle_timeout + CGROUP_GRACE_BEYOND_IDLE)),
        }
    }

    /// Names local ends by walking this cgroup v2 mount (in a container: the
    /// host's hierarchy, not the container's own view), walked once now (see
    /// [`CgroupIndex::walked`]); the index [`FlowReader::new`] makes walks
    /// only when it meets an id it does not know.
    pub fn with_cgroup_mount(mut self, mount: &std::path::Path) -> Self {
        self.cgroups = Some(CgroupIndex::walked(
            mount,
            self.idle_timeout + CGROUP_GRACE_BEYOND_IDLE,
        ));
        self
    }

    /// Follows at most `limit` overflowed connections (the tests lower it).
    pub fn with_overflow_limit(mut self, limit: usize) -> Self {
        self.overflow_limit = limit;
        self
    }

    /// Reads the table key by key even where batches work (to test that path).
    pub fn without_batches(mut self) -> Self {
        self.batches = false;
        self
    }

    /// The overflow ring's fd: readable when the kernel sent something.
    pub fn overflow_fd(&self) -> BorrowedFd<'_> {
        self.maps.overflow.as_fd()
    }

    /// Moves everything waiting in the overflow ring into the pending set.
    pub fn drain_overflow(&mut self) -> usize {
        let mut records = Vec::new();
        while records.len() < DRAIN_MAX
            && let Some(item) = self.maps.overflow.next()
        {
            if item.len() < size_of::<OverflowRecord>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole OverflowRecord (length checked
            // above); read_unaligned copes with the ring's 8-byte alignment.
            records
                .push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<OverflowRecord>()) });
        }
        for record in &records {
            self.add_overflow(record);
        }
        records.len()
    }

    fn add_overflow(&mut self, record: &OverflowRecord) {
        if !self.overflow_known.contains_key(&record.key) {
            if self.overflow_known.len() >= self.overflow_limit {
                self.overflow_untracked += u64::from(record.packets);
                return;
            }
            self.overflowed_connections += 1;
            // Its first report counts it as a connection in the graph.
            self.overflow_new.insert(record.key);
        }
        // This interval's packets, and the connection's running totals.
        add_packet(self.overflow_pending.entry(record.key).or_default(), record);
        add_packet(
            &mut self.overflow_known.entry(record.key).or_default().totals,
            record,
        );
    }

    /// Reads the DNS responses the kernel passed up.
    pub fn drain_dns(&mut self) -> usize {
        let mut events = Vec::new();
        while events.len() < DRAIN_MAX
            && let Some(item) = self.maps.dns.next()
        {
            if item.len() < size_of::<DnsEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole DnsEvent (length checked).
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DnsEvent>()) });
        }
        let now = Instant::now();
        self.dns_pending
            .retain(|_, asked| now.duration_since(*asked) < DNS_QUERY_TIMEOUT);
        for event in &events {
            let len = (event.len as usize).min(event.payload.len());
            let Some(message) = dns_wire::parse(&event.payload[..len]) else {
                continue;
            };
            let query = PendingQuery::of(&event.key, &message);
            if !message.response {
                if event.direction == DIR_EGRESS {
                    if self.dns_pending.len() >= DNS_PENDING_MAX {
                        *self.dns_refused.entry("pending_full".into()).or_default() += 1;
                    } else {
                        self.dns_pending.insert(query, now);
                    }
                }
                continue;
            }
            // An answer counts only when this socket asked this server this
            // question under this id: anything else is unsolicited (a forged
            // answer from any pod's port 53).
            if event.direction != DIR_INGRESS || self.dns_pending.remove(&query).is_none() {
                *self.dns_refused.entry("unsolicited".into()).or_default() += 1;
                continue;
            }
            let server = ip_of(event.key.family, &event.key.remote_addr);
            let client = self
                .cgroup_path(event.key.cgroup_id)
                .map(|path| path.to_string());
            for (name, ip) in message.answers {
                self.dns_answers += 1;
                let key = (name, ip, server, client.clone());
                if self
                    .dns_known
                    .insert(key.clone(), self.dns_answers)
                    .is_none()
                {
                    self.dns_new.push(key);
                }
            }
        }
        if self.dns_known.len() > DNS_NAMES_MAX {
            keep_newest(&mut self.dns_known, DNS_NAMES_MAX * 9 / 10);
        }
        events.len()
    }

    /// Every name -> address learned so far, by address.
    pub fn dns_answers(&self) -> Vec<DnsAnswer> {
        self.dns_known
            .keys()
            .map(|(name, ip, server, client)| DnsAnswer {
                name: name.clone(),
                ip: *ip,
                server: Some(*server),
                client: client.clone(),
            })
            .collect()
    }

    /// Reads the heads of HTTP requests the kernel passed up.
    pub fn drain_http(&mut self) -> usize {
        let mut read = 0;
        while read < DRAIN_MAX
            && let Some(item) = self.maps.http.next()
        {
            read += 1;
            if item.len() < size_of::<HttpEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole HttpEvent (length checked).
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<HttpEvent>()) };
            let len = (event.len as usize).min(event.head.len());
            let Some(request) = http_wire::parse(&event.head[..len]) else {
                self.http_unparsed += 1;
                continue;
            };
            let pending = self
                .http_pending
                .entry(event.key)
                .or_insert_with(|| (event.direction, Vec::new()));
            pending.1.push(request);
        }
        read
    }

    /// This interval's HTTP requests, on their connection's record, or on a
    /// record of their own (no counts) when the connection has none this
    /// interval: a request's packets may be folded into the table in the
    /// next one.
    fn attach_http(&mut self, flows: &mut Vec<FlowRecord>, keys: &[FlowKey], clock: &KernelClock) {
        if self.http_pending.is_empty() {
            return;
        }
        let mut pending: Vec<_> = self.http_pending.drain().collect();
        pending.sort_by_key(|(key, _)| *key);
        let by_key: StdHashMap<FlowKey, usize> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| (*key, index))
            .collect();
        for (key, (direction, requests)) in pending {
            let first = !self.http_connections.contains(&key)
                && self.http_connections.len() < HTTP_CONNECTIONS_MAX;
            if first {
                self.http_connections.insert(key);
            }
            let index = match by_key.get(&key) {
                Some(&index) => index,
                None => {
                    let now = self.clock_now_stats(clock);
                    let mut record =
                        self.record(&key, &FlowStats::default(), &now, clock, false, false);
                    // Who sent the request is the client, whatever else.
                    record.client = if direction == DIR_EGRESS {
                        Side::Local
                    } else {
                        Side::Remote
                    };
                    record.client_basis = Basis::HttpRequest;
                    record.handshake = Handshake::Established;
                    flows.push(record);
                    flows.len() - 1
                }
            };
            flows[index].http.extend(requests);
            flows[index].http_connection |= first;
        }
    }

    /// Totals that say only "now", for a record with no counts.
    fn clock_now_stats(&self, clock: &KernelClock) -> FlowStats {
        let now = clock.kernel_now_ns();
        FlowStats {
            first_seen_ns: now,
            last_seen_ns: now,
            ..FlowStats::default()
        }
    }

    /// Reads the table and reports one interval.
    pub fn poll(&mut self) -> Result<Interval, ReadError> {
        self.drain_overflow();
        self.drain_dns();
        self.drain_http();
        let clock = KernelClock::now();
        let idle_ns = self.idle_timeout.as_nanos() as u64;

        let mut entries = self.read_table()?;
        entries.sort_by_key(|(key, _)| *key);
        // Inbound connections redirected in their pod: one connection, on
        // the port the client asked for (the other half goes with it).
        let folded = redirect::fold(&mut entries);

        let mut flows = Vec::new();
        // The connection of each record, in step with `flows`.
        let mut keys = Vec::new();
        let mut idle = Vec::new();
        let mut live = StdHashMap::with_capacity(entries.len());
        for (key, total) in &entries {
            let previous = self.reported.get(key).copied();
            let ended = over(key, total, clock.kernel_now_ns(), idle_ns);
            if let Some(delta) = delta(total, &previous.unwrap_or_default()) {
                let mut record = self.record(key, &delta, total, &clock, false, ended);
                record.newly_established = newly_established(key, total, previous.as_ref());
                record.new = previous.is_none();
                flows.push(record);
                keys.push(*key);
            }
            if ended {
                idle.push(*key);
            } else {
                live.insert(*key, *total);
            }
        }
        if !folded.is_empty() {
            let ended: std::collections::HashSet<FlowKey> = idle.iter().copied().collect();
            idle.extend(
                folded
                    .iter()
                    .filter(|(_, into)| ended.contains(into))
                    .map(|(absorbed, _)| *absorbed),
            );
        }
        self.remove_from_table(&idle);
        for key in &idle {
            self.http_connections.remove(key);
        }
        self.reported = live;

        let mut overflow: Vec<_> = self.overflow_pending.drain().collect();
        overflow.sort_by_key(|(key, _)| *key);
        for (key, stats) in &overflow {
            let known = self.overflow_known.get(key).copied().unwrap_or_default();
            let total = known.totals;
            let mut record = self.record(key, stats, &total, &clock, true, false);
            record.new = self.overflow_new.remove(key);
            record.newly_established =
                !known.established && handshake_of(key, &total) == Handshake::Established;
            if record.newly_established
                && let Some(known) = self.overflow_known.get_mut(key)
            {
                known.established = true;
            }
            flows.push(record);
            keys.push(*key);
        }
        self.overflow_known
            .retain(|key, known| !over(key, &known.totals, clock.kernel_now_ns(), idle_ns));
        self.attach_http(&mut flows, &keys, &clock);

        let dns = self
            .dns_new
            .drain(..)
            .map(|(name, ip, server, cgroup)| DnsName {
                ts: rfc3339(clock.wall_now()),
                name,
                ip,
                server: Some(server),
                cgroup,
            })
            .collect();
        let stats = IntervalStats {
            ts: rfc3339(clock.wall_now()),
            table_entries: entries.len().saturating_sub(idle.len()) as u64,
            table_capacity: self.maps.capacity,
            overflowed_connections: self.overflowed_connections,
            drops: self.drop_counters()?,
            dns_refused: self.dns_refused.clone(),
        };
        Ok(Interval { flows, dns, stats })
    }

    /// The path of cgroup `id`: known, recorded by the kernel when it was
    /// made (a pod already gone), or found by walking the tree.
    fn cgroup_path(&mut self, id: u64) -> Option<Arc<str>> {
        let made = self.maps.cgroup_paths.as_ref();
        self.cgroups.as_mut()?.path_of_or_made(id, |id| {
            let entry = made?.get(&id, 0).ok()?;
            let length = entry.path.iter().position(|&byte| byte == 0)?;
            std::str::from_utf8(&entry.path[..length])
                .ok()
                .filter(|path| path.starts_with('/'))
                .map(str::to_string)
        })
    }

    /// The whole table: in batches where the kernel has them, else key by key.
    fn read_table(&mut self) -> Result<Vec<(FlowKey, FlowStats)>, ReadError> {
        if self.batches {
            match batch::lookup_all(self.maps.flows_fd.as_fd(), BATCH_ENTRIES) {
                Ok(entries) => return Ok(entries),
                Err(BatchError::Unsupported) => self.batches = false,
                Err(BatchError::Failed(err)) => return Err(ReadError::Batch(err)),
            }
        }
        let mut entries = Vec::new();
        for entry in self.maps.flows.iter() {
            match entry {
                Ok(entry) => entries.push(entry),
                // The entry was removed while we walked the table: skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(err) => return Err(ReadError::Table(err)),
            }
        }
        Ok(entries)
    }

    fn remove_from_table(&mut self, keys: &[FlowKey]) {
        if keys.is_empty() {
            return;
        }
        if self.batches && batch::delete(self.maps.flows_fd.as_fd(), keys).is_ok() {
            return;
        }
        for key in keys {
            // Already gone is fine: the goal is that it is gone.
            let _ = self.maps.flows.remove(key);
        }
    }

    /// The kernel's "could not record" counters, summed over CPUs.
    pub fn drop_counters(&self) -> Result<BTreeMap<String, u64>, ReadError> {
        let mut counters = BTreeMap::new();
        for reason in Drop::ALL {
            let per_cpu = self
                .maps
                .drops
                .get(&(reason as u32), 0)
                .map_err(ReadError::Drops)?;
            counters.insert(reason.name().to_string(), per_cpu.iter().sum());
        }
        counters.insert("overflow_untracked".to_string(), self.overflow_untracked);
        counters.insert("http_unparsed".to_string(), self.http_unparsed);
        Ok(counters)
    }

    fn record(
        &mut self,
        key: &FlowKey,
        delta: &FlowStats,
        total: &FlowStats,
        clock: &KernelClock,
        overflow: bool,
        ended: bool,
    ) -> FlowRecord {
        let kernel = initiator::kernel_initiator(total.initiator);
        let (client, client_basis) = initiator::decide(
            kernel,
            key.local_port,
            key.remote_port,
            total.first_dir,
            &self.ephemeral,
        );
        let cgroup = self.cgroup_path(key.cgroup_id);
        FlowRecord {
            ts: clock.wall_now().into(),
            cgroup_id: key.cgroup_id,
            cgroup,
            protocol: Protocol(key.protocol),
            local: Address {
                ip: ip_of(key.family, &key.local_addr),
                port: key.local_port,
            },
            remote: Address {
                ip: ip_of(key.family, &key.remote_addr),
                port: key.remote_port,
            },
            initiator: kernel,
            client,
            client_basis,
            packets_in: delta.packets_in,
            packets_out: delta.packets_out,
            bytes_in: delta.bytes_in,
            bytes_out: delta.bytes_out,
            first_seen: clock.to_wall(total.first_seen_ns).into(),
            last_seen: clock.to_wall(total.last_seen_ns).into(),
            tcp_flags: tcp_flag_names((total.tcp_flags | total.tcp_flags >> 8) & 0xff),
            handshake: handshake_of(key, total),
            newly_established: false,
            new: false,
            overflow,
            ended,
            http: Vec::new(),
            http_connection: false,
        }
    }
}

fn handshake_of(key: &FlowKey, total: &FlowStats) -> Handshake {
    handshake(
        key.protocol,
        total.tcp_flags,
        total.initiator,
        total.packets_in,
        total.packets_out,
    )
}

/// Whether `total` is the first report in which the connection is
/// established (`previous`: the totals of its last report, if any).
fn newly_established(key: &FlowKey, total: &FlowStats, previous: Option<&FlowStats>) -> bool {
    handshake_of(key, total) == Handshake::Established
        && previous.is_none_or(|previous| handshake_of(key, previous) != Handshake::Established)
}

/// Adds one overflow-ring packet to a connection's counters.
fn add_packet(stats: &mut FlowStats, record: &OverflowRecord) {
    if stats.first_seen_ns == 0 {
        stats.first_seen_ns = record.ts_ns;
        stats.first_dir = record.direction;
    }
    if record.direction == DIR_EGRESS {
        stats.packets_out += record.packets as u64;
        stats.bytes_out += record.bytes;
    } else {
        stats.packets_in += record.packets as u64;
        stats.bytes_in += record.bytes;
    }
    stats.first_seen_ns = stats.first_seen_ns.min(record.ts_ns);
    stats.last_seen_ns = stats.last_seen_ns.max(record.ts_ns);
    stats.tcp_flags |= netflow_common::direction_flags(record.tcp_flags, record.direction);
    let seen = netflow_common::initiator_of(record.tcp_flags, record.direction);
    if seen != netflow_common::INITIATOR_UNKNOWN {
        stats.initiator = seen;
    }
}

/// What moved since `previous`, or `None` when nothing did.
fn delta(total: &FlowStats, previous: &FlowStats) -> Option<FlowStats> {
    let delta = FlowStats {
        packets_in: total.packets_in.saturating_sub(previous.packets_in),
        packets_out: total.packets_out.saturating_sub(previous.packets_out),
        bytes_in: total.bytes_in.saturating_sub(previous.bytes_in),
        bytes_out: total.bytes_out.saturating_sub(previous.bytes_out),
        ..*total
    };
    (delta.packets_in + delta.packets_out > 0).then_some(delta)
}

pub fn ip_of(family: u8, addr: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

/// `SYN|ACK|...` for a TCP flag byte.
pub fn tcp_flag_names(flags: u32) -> String {
    const NAMES: [(u32, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x08, "PSH"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x20, "URG"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_closed_by_fins_both_ways_or_a_reset() {
        use netflow_common::{PROTO_TCP, PROTO_UDP, TCP_FIN, TCP_RST};
        let (fin, rst) = (u32::from(TCP_FIN), u32::from(TCP_RST));
        assert!(closed(PROTO_TCP, fin | fin << 8));
        assert!(!closed(PROTO_TCP, fin), "our FIN alone: half closed");
        assert!(!closed(PROTO_TCP, fin << 8), "theirs alone: half closed");
        assert!(closed(PROTO_TCP, rst));
        assert!(closed(PROTO_TCP, rst << 8));
        assert!(!closed(PROTO_UDP, fin | fin << 8 | rst));
        assert!(!closed(PROTO_TCP, 0x12 | 0x10 << 8));
    }

    #[test]
    fn flag_names_follow_the_bits() {
        assert_eq!(tcp_flag_names(0x12), "SYN|ACK");
        assert_eq!(tcp_flag_names(0), "");
    }

    #[test]
    fn delta_reports_only_what_moved() {
        let previous = FlowStats {
            packets_in: 2,
            bytes_in: 100,
            ..FlowStats::default()
        };
        let total = FlowStats {
            packets_in: 5,
            bytes_in: 400,
            packets_out: 1,
            bytes_out: 60,
            ..previous
        };
        let moved = delta(&total, &previous).unwrap();
        assert_eq!((moved.packets_in, moved.bytes_in), (3, 300));
        assert_eq!((moved.packets_out, moved.bytes_out), (1, 60));
        assert!(delta(&total, &total).is_none());
    }

    #[test]
    fn ipv4_uses_the_first_four_bytes() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            ip_of(FAMILY_IPV4, &addr),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        let v6: Ipv6Addr = "fd00::1".parse().unwrap();
        assert_eq!(ip_of(6, &v6.octets()), IpAddr::V6(v6));
    }
}

/// Keeps the `keep` entries with the highest (distinct) stamps.
fn keep_newest<K>(map: &mut StdHashMap<K, u64>, keep: usize) {
    if map.len() <= keep {
        return;
    }
    let mut stamps: Vec<u64> = map.values().copied().collect();
    let excess = stamps.len() - keep;
    let (_, cutoff, _) = stamps.select_nth_unstable(excess);
    let cutoff = *cutoff;
    map.retain(|_, stamp| *stamp >= cutoff);
}

#[cfg(test)]
mod eviction_tests {
    use super::*;

    #[test]
    fn the_names_answered_longest_ago_are_forgotten_first() {
        let mut names: StdHashMap<u32, u64> = (0..100).map(|n| (n, u64::from(n) * 3)).collect();
        // Name 5 answered again, last.
        names.insert(5, 1000);
        keep_newest(&mut names, 10);
        let mut kept: Vec<u32> = names.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, vec![5, 91, 92, 93, 94, 95, 96, 97, 98, 99]);
        keep_newest(&mut names, 20);
        assert_eq!(names.len(), 10);
    }
}
