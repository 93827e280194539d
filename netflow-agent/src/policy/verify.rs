//! `policy verify`: replay every observed edge against a set of policies over
//! the inventory's pods, and measure what stays open.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    ops::Range,
};

use serde::Serialize;

use super::{
    evaluate::{
        End, Evaluator, HttpQuestion, IngressPeers, Policies, Verdict, cidr_contains,
        network_policy::Peer,
    },
    generate::{never_allowed, proven},
};
use crate::{
    graph::{CommGraph, Edge},
    inventory::{Inventory, PodEntry, WorkloadRef},
    model::{Endpoint, EndpointKind, LabelMap},
    parallel::map_in_order,
};

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub edges: usize,
    pub allowed: usize,
    /// Observed edges the policies would block, with the reason.
    pub blocked: Vec<BlockedEdge>,
    /// Observed edges to the metadata service: expected to be blocked.
    pub metadata_contacts: Vec<String>,
    /// Observed edges to or from a link-local address: expected to be blocked.
    pub link_local_contacts: Vec<String>,
    /// Edges whose attempts were never answered: never allowed, not checked.
    pub never_connected: Vec<String>,
    /// Edges whose ends have no pod (or address) in the inventory to test.
    pub not_checkable: Vec<String>,
    pub blast_radius: BlastRadius,
    /// Every edge's verdict, in the graph's edge order, from
    /// [`verify_explained`] (for the report page; the lists above say the
    /// same by kind); empty from [`verify`].
    #[serde(skip)]
    pub verdicts: Vec<EdgeVerdict>,
}

/// One edge's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeVerdict {
    pub edge: String,
    /// `allowed`, `blocked`, `never-connected`, `metadata`, `link-local`
    /// or `not-checkable`.
    pub status: &'static str,
    /// Why it is blocked; for an allowed edge, with
    /// [`verify_explained`], what allows it (each side's policy or rule).
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct BlockedEdge {
    pub edge: String,
    pub reason: String,
}

/// Reachable (client pod, server pod, port) triples among the inventory's
/// pods and their declared ports.
#[derive(Debug, Default, Serialize)]
pub struct BlastRadius {
    pub pairs_before: usize,
    pub pairs_after: usize,
    /// Open after the policies though no edge of the graph stands for them.
    pub open_beyond_observed: Vec<String>,
    /// The same two counts by the server's namespace: what each
    /// namespace's pods could be reached on, before and after.
    pub by_namespace: BTreeMap<String, NamespaceRadius>,
}

/// One namespace's part of the blast radius (its pods as servers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NamespaceRadius {
    pub pairs_before: usize,
    pub pairs_after: usize,
}

/// The name policies give the edge's protocol (`TCP`, `UDP`, `SCTP`); a
/// protocol they cannot name keeps its number, which no rule matches.
pub fn protocol_name(edge_protocol: &crate::model::Protocol) -> String {
    edge_protocol
        .policy_name()
        .map_or_else(|| edge_protocol.to_string(), str::to_string)
}

/// The protocols policies name, each by its position here where a small
/// code serves (verdict and observed-edge keys).
const POLICY_PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// `name`'s position in [`POLICY_PROTOCOLS`], whatever its case.
fn protocol_code(name: &str) -> Option<u8> {
    POLICY_PROTOCOLS
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
        .and_then(|code| u8::try_from(code).ok())
}

/// A protocol's name as the observed edges are keyed by it: upper case,
/// borrowed for the names policies use (no allocation per lookup).
fn protocol_key(name: &str) -> Cow<'static, str> {
    protocol_code(name).map_or_else(
        || Cow::Owned(name.to_ascii_uppercase()),
        |code| Cow::Borrowed(POLICY_PROTOCOLS[usize::from(code)]),
    )
}

/// Why an edge between these ends would be refused (`check` answers for
/// one client end and one server end); `None` when it is allowed. Every
/// client pod must reach every server pod; of a node's or an external
/// host's addresses, one reaching is enough.
pub fn refusal<'a>(
    clients: &[End<'a>],
    servers: &[End<'a>],
    mut check: impl FnMut(End<'a>, End<'a>) -> Verdict,
) -> Option<String> {
    let client_pods = matches!(clients.first(), Some(End::Pod(_)));
    for server_end in servers {
        let mut allowed_any = false;
        let mut first_denial = None;
        for client_end in clients {
            match check(*client_end, *server_end) {
                Verdict::Allowed => allowed_any = true,
                Verdict::Denied(reason) => {
                    first_denial.get_or_insert(reason);
                }
            }
        }
        let refused = if client_pods || !allowed_any {
            first_denial
        } else {
            None
        };
        if refused.is_some() {
            return refused;
        }
    }
    None
}

/// The ends of `endpoint` to check: a workload's pods (hostNetwork pods
/// aside), else its addresses.
pub fn pods_of<'a>(inventory: &'a Inventory, endpoint: &Endpoint) -> Vec<End<'a>> {
    match endpoint.kind {
        EndpointKind::Workload => {
            let workload = WorkloadRef {
                namespace: endpoint.namespace.clone().unwrap_or_default(),
                kind: endpoint.workload_kind.clone().unwrap_or_default(),
                name: endpoint.name.clone(),
            };
            inventory
                .pods_of(&workload)
                .filter(|pod| !pod.host_network)
                .map(End::Pod)
                .collect()
        }
        _ => endpoint
            .addresses
            .iter()
            .filter_map(|address| address.parse().ok())
            .map(End::Address)
            .collect(),
    }
}

pub fn verify(graph: &CommGraph, policies: &Policies, inventory: &Inventory) -> VerifyReport {
    verify_with(graph, policies, inventory, false)
}

/// As [`verify`], and each allowed edge's verdict says what allows it (a
/// second evaluation per allowed edge: only the report page asks for it).
pub fn verify_explained(
    graph: &CommGraph,
    policies: &Policies,
    inventory: &Inventory,
) -> VerifyReport {
    verify_with(graph, policies, inventory, true)
}

fn verify_with(
    graph: &CommGraph,
    policies: &Policies,
    inventory: &Inventory,
    explain: bool,
) -> VerifyReport {
    verify_in_runs(graph, policies, inventory, explain, REPLAYED_AT_ONCE)
}

/// [`verify`], replaying `run` edges at a time per thread.
pub(crate) fn verify_in_runs(
    graph: &CommGraph,
    policies: &Policies,
    inventory: &Inventory,
    explain: bool,
    run: usize,
) -> VerifyReport {
    let started = std::time::Instant::now();
    let dns = dns_names(graph);
    let evaluator = Evaluator::for_set(policies, inventory, &dns);
    let classes = pod_classes(policies, inventory);
    let mut shared = SharedChecks::new(&evaluator, classes.as_deref());
    tracing::debug!(elapsed = ?started.elapsed(), "verify: evaluator and pod classes ready");
    // Edges are replayed on every core, a run of them at a time, each thread
    // with its own verdict cache; the reports are put together in edge order.
    let edges = graph.edges();
    let runs: Vec<_> = edges.chunks(run.max(1)).collect();
    let mut observed = Observed::new(inventory);
    let ends = EndsByEndpoint::new(graph, inventory, &observed.numbers);
    let replay = Replay {
        evaluator: &evaluator,
        ends: &ends,
        explain,
    };
    let (parts, caches) = map_in_order(
        &runs,
        || shared.checks(),
        |checks, run| {
            let mut part = (VerifyReport::default(), Vec::new());
            for &(client, server, edge) in *run {
                replay.edge(checks, &mut part, client, server, edge);
            }
            part
        },
    );
    // What the threads found serves the blast radius, read where it lies
    // (joining a million verdicts into one map costs more than a second look).
    let replayed: Vec<ClassVerdicts> = caches.into_iter().map(|checks| checks.found).collect();
    shared.known = replayed;
    let mut report = VerifyReport::default();
    let observed_count = parts.iter().map(|(_, observed)| observed.len()).sum();
    observed.edges.reserve(observed_count);
    for (part, observed_part) in parts {
        report.append(part);
        observed.edges.extend(observed_part);
    }
    tracing::debug!(elapsed = ?started.elapsed(), "verify: edges replayed");
    report.blast_radius = blast_radius_with(
        &shared,
        classes.as_deref(),
        policies,
        inventory,
        &observed,
        run.min(SERVER_CLASSES_AT_ONCE),
    );
    tracing::debug!(elapsed = ?started.elapsed(), "verify: blast radius counted");
    report
}

/// Edges replayed at once by one thread (a run's verdicts are one part of
/// the report).
const REPLAYED_AT_ONCE: usize = 4096;

/// Server classes one thread counts the blast radius of at once: a class
/// may have thousands of candidate clients, so runs are short, to keep the
/// threads evenly loaded.
const SERVER_CLASSES_AT_ONCE: usize = 64;

/// What replaying one edge needs besides its thread's cache.
struct Replay<'r, 'a> {
    evaluator: &'r Evaluator<'a>,
    ends: &'r EndsByEndpoint<'a>,
    explain: bool,
}

/// Every endpoint's ends ([`pods_of`]), found once: an endpoint is an end
/// of many edges, and finding its pods again for each (a workload's key
/// built, looked up, its pods collected) was a fifth of the replay.
/// Keyed by where the graph holds the endpoint, which stays put while the
/// graph is borrowed.
struct EndsByEndpoint<'a> {
    ends: HashMap<usize, (Vec<End<'a>>, Option<u32>), foldhash::fast::RandomState>,
}

impl<'a> EndsByEndpoint<'a> {
    fn new(graph: &CommGraph, inventory: &'a Inventory, numbers: &WorkloadNumbers<'_>) -> Self {
        let ends = graph
            .endpoints()
            .into_iter()
            .map(|endpoint| {
                let ends = (pods_of(inventory, endpoint), numbers.of_endpoint(endpoint));
                (address(endpoint), ends)
            })
            .collect();
        Self { ends }
    }

    /// The ends of `endpoint`, one of the graph's.
    fn of(&self, endpoint: &Endpoint) -> &[End<'a>] {
        self.ends
            .get(&address(endpoint))
            .map_or(&[], |(ends, _)| ends.as_slice())
    }

    /// The number of `endpoint`'s workload, when it has pods.
    fn workload(&self, endpoint: &Endpoint) -> Option<u32> {
        self.ends.get(&address(endpoint))?.1
    }
}

impl Replay<'_, '_> {
    /// Replays one edge into `report`, noting it in `observed` when it was
    /// checked.
    fn edge<'g>(
        &self,
        checks: &mut ClassChecks<'_, '_>,
        (report, observed): &mut (VerifyReport, Vec<ObservedEdge>),
        client: &'g Endpoint,
        server: &'g Endpoint,
        edge: &Edge,
    ) {
        let (evaluator, explain) = (self.evaluator, self.explain);
        report.edges += 1;
        let protocol = protocol_name(&edge.key.protocol);
        // Named for the lists of edges not allowed and for the verdicts
        // (which only the report page asks for): a million allowed edges
        // are not named otherwise.
        let name = || {
            format!(
                "{} -> {} {}/{}",
                client.label(),
                server.label(),
                protocol.to_ascii_lowercase(),
                edge.key.port
            )
        };
        let verdict = |report: &mut VerifyReport, name: &str, status, why: String| {
            if explain {
                report.verdicts.push(EdgeVerdict {
                    edge: name.to_string(),
                    status,
                    why,
                });
            }
        };
        if !proven(edge, false) {
            let name = name();
            let why = "never answered: no policy allows it".into();
            verdict(report, &name, "never-connected", why);
            report.never_connected.push(name);
            return;
        }
        match never_allowed(server).or_else(|| never_allowed(client)) {
            Some("metadata-service") => {
                let name = name();
                let why = "the metadata service: never allowed".into();
                verdict(report, &name, "metadata", why);
                report.metadata_contacts.push(name);
                return;
            }
            Some(_) => {
                let name = name();
                let why = "a link-local address: never allowed".into();
                verdict(report, &name, "link-local", why);
                report.link_local_contacts.push(name);
                return;
            }
            None => {}
        }
        let (clients, servers) = (self.ends.of(client), self.ends.of(server));
        if clients.is_empty() || servers.is_empty() {
            let name = name();
            let why = "no pod or address of an end in the inventory".into();
            verdict(report, &name, "not-checkable", why);
            report.not_checkable.push(name);
            return;
        }
        let refusal = refusal(clients, servers, |client_end, server_end| {
            checks.check(client_end, server_end, edge.key.port, &protocol)
        })
        .or_else(|| {
            // Connected, and each call made on it passes the L7 rules too.
            let calls = edge.stats.http.records();
            calls
                .iter()
                .filter(|call| !call.example.is_empty())
                .find_map(|call| {
                    let request = HttpQuestion {
                        method: &call.method,
                        path: &call.example,
                    };
                    refusal(clients, servers, |client_end, server_end| {
                        evaluator.check_request(
                            client_end,
                            server_end,
                            edge.key.port,
                            &protocol,
                            Some(&request),
                        )
                    })
                })
        });
        match refusal {
            Some(reason) => {
                let name = name();
                verdict(report, &name, "blocked", reason.clone());
                report.blocked.push(BlockedEdge { edge: name, reason });
            }
            None => {
                if explain {
                    // What allows it, from one pair of its ends (they
                    // share the policies that allow them).
                    let why = evaluator
                        .explain(clients[0], servers[0], edge.key.port, &protocol)
                        .map(|by| by.join("; "))
                        .unwrap_or_default();
                    verdict(report, &name(), "allowed", why);
                }
                report.allowed += 1;
            }
        }
        if let (Some(client), Some(server)) =
            (self.ends.workload(client), self.ends.workload(server))
        {
            observed.push((client, server, edge.key.port, protocol_key(&protocol)));
        }
    }
}

impl VerifyReport {
    /// Adds `other`'s edges after this report's (the blast radius aside).
    fn append(&mut self, mut other: VerifyReport) {
        self.edges += other.edges;
        self.allowed += other.allowed;
        self.blocked.append(&mut other.blocked);
        self.metadata_contacts.append(&mut other.metadata_contacts);
        self.link_local_contacts
            .append(&mut other.link_local_contacts);
        self.never_connected.append(&mut other.never_connected);
        self.not_checkable.append(&mut other.not_checkable);
        self.verdicts.append(&mut other.verdicts);
    }
}

/// Every observed edge by workload: client, server (their
/// [`WorkloadNumbers`]), port, protocol (upper case). A million of them,
/// each looked up for every open pair of the blast radius: as numbers they
/// hash and compare without reaching for six names.
struct Observed<'i> {
    numbers: WorkloadNumbers<'i>,
    edges: HashSet<ObservedEdge, foldhash::fast::RandomState>,
}
type ObservedEdge = (u32, u32, u16, Cow<'static, str>);

impl<'i> Observed<'i> {
    /// None yet, over the inventory's workloads.
    fn new(inventory: &'i Inventory) -> Self {
        Observed {
            numbers: WorkloadNumbers::new(inventory),
            edges: HashSet::default(),
        }
    }

    /// Whether an edge was observed between these pods' workloads.
    fn between(&self, client: &PodEntry, server: &PodEntry, port: u16, protocol: &str) -> bool {
        let numbers = &self.numbers;
        let (Some(client), Some(server)) = (numbers.of_pod(client), numbers.of_pod(server)) else {
            return false;
        };
        self.edges
            .contains(&(client, server, port, protocol_key(protocol)))
    }
}
/// A workload's namespace, kind and name, borrowed from where it is named.
type WorkloadKey<'g> = (&'g str, &'g str, &'g str);

/// The inventory's workloads, numbered; and each pod's workload's number.
/// An observed edge between workloads without pods can stand for no pod
/// pair, and is not kept.
struct WorkloadNumbers<'i> {
    by_key: HashMap<WorkloadKey<'i>, u32, foldhash::fast::RandomState>,
    /// By where the inventory holds the pod.
    by_pod: HashMap<usize, u32, foldhash::fast::RandomState>,
}

impl<'i> WorkloadNumbers<'i> {
    fn new(inventory: &'i Inventory) -> Self {
        let mut numbers = WorkloadNumbers {
            by_key: HashMap::default(),
            by_pod: HashMap::default(),
        };
        for pod in &inventory.pods {
            let next = u32::try_from(numbers.by_key.len()).unwrap_or(u32::MAX);
            let number = *numbers.by_key.entry(key_of(&pod.workload)).or_insert(next);
            numbers.by_pod.insert(address(pod), number);
        }
        numbers
    }

    fn of_endpoint(&self, endpoint: &Endpoint) -> Option<u32> {
        self.by_key.get(&workload_key(endpoint)?).copied()
    }

    fn of_pod(&self, pod: &PodEntry) -> Option<u32> {
        self.by_pod.get(&address(pod)).copied()
    }
}

/// Where `item` is held: a key for things that stay put while borrowed
/// (the graph's endpoints, the inventory's pods), cheaper to hash than
/// their names.
fn address<T>(item: &T) -> usize {
    std::ptr::from_ref(item).addr()
}

/// The DNS names the graph knows for external addresses (for `toFQDNs`).
pub fn dns_names(graph: &CommGraph) -> BTreeMap<std::net::IpAddr, BTreeSet<String>> {
    let mut names: BTreeMap<std::net::IpAddr, BTreeSet<String>> = BTreeMap::new();
    for endpoint in graph.endpoints() {
        for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
            names
                .entry(address)
                .or_default()
                .extend(endpoint.dns_names.iter().cloned());
        }
    }
    names
}

fn workload_key(endpoint: &Endpoint) -> Option<WorkloadKey<'_>> {
    (endpoint.kind == EndpointKind::Workload).then(|| {
        (
            endpoint.namespace.as_deref().unwrap_or_default(),
            endpoint.workload_kind.as_deref().unwrap_or_default(),
            endpoint.name.as_str(),
        )
    })
}

fn key_of(workload: &WorkloadRef) -> WorkloadKey<'_> {
    (&workload.namespace, &workload.kind, &workload.name)
}

/// Pods that every check treats alike: same namespace, labels and declared
/// ports, and -- only when some policy names addresses that a pod IP falls
/// in -- the same IPs. One of them stands for all in [`blast_radius`].
#[derive(PartialEq, Eq, Hash)]
struct PodClass<'a> {
    namespace: &'a str,
    labels: &'a LabelMap,
    ports: Vec<(u16, &'a str, Option<&'a str>)>,
    /// The pod's IPs when an ipBlock or network rule covers one.
    ips: Option<&'a [std::net::IpAddr]>,
}

/// Every address range the policies name (ipBlocks, the tiers' networks),
/// or `None` when they name pods in ways the class key does not capture
/// (any Cilium policy: CIDRs, entities, FQDNs).
fn named_ranges(policies: &Policies) -> Option<Vec<String>> {
    if !policies.cilium.is_empty() {
        return None;
    }
    let mut ranges = Vec::new();
    for policy in &policies.kubernetes {
        for peer in policy.peers() {
            if let Peer::Addresses(block) = peer {
                ranges.push(block.cidr.clone());
            }
        }
    }
    for policy in &policies.cluster_wide {
        for rule in policy.ingress.iter().chain(&policy.egress) {
            for peer in &rule.peers {
                if let crate::policy::cluster_wide::TierPeer::Networks(networks) = peer {
                    ranges.extend(networks.iter().cloned());
                }
            }
        }
    }
    Some(ranges)
}

/// Reachable (client pod, server pod, port) triples, counted class by
/// class: one check stands for every pod pair of two classes.
#[cfg(test)]
fn blast_radius(
    evaluator: &Evaluator<'_>,
    policies: &Policies,
    inventory: &Inventory,
    observed: &Observed<'_>,
) -> BlastRadius {
    let classes = pod_classes(policies, inventory);
    let shared = SharedChecks::new(evaluator, classes.as_deref());
    blast_radius_with(
        &shared,
        classes.as_deref(),
        policies,
        inventory,
        observed,
        1,
    )
}

/// The inventory's pods (host-network ones aside) by [`PodClass`], in
/// inventory order; `None` when the policies name pods in ways a class key
/// does not capture.
fn pod_classes<'i>(
    policies: &Policies,
    inventory: &'i Inventory,
) -> Option<Vec<Vec<&'i PodEntry>>> {
    let ranges = named_ranges(policies)?;
    let mut classes: Vec<Vec<&PodEntry>> = Vec::new();
    let mut index: HashMap<PodClass<'_>, usize> = HashMap::new();
    for pod in inventory.pods.iter().filter(|pod| !pod.host_network) {
        let ip_named = pod
            .ips
            .iter()
            .any(|ip| ranges.iter().any(|cidr| cidr_contains(cidr, *ip)));
        let key = PodClass {
            namespace: &pod.namespace,
            labels: &pod.labels,
            ports: pod
                .ports
                .iter()
                .map(|port| (port.number, port.protocol_name(), port.name.as_deref()))
                .collect(),
            ips: ip_named.then_some(pod.ips.as_slice()),
        };
        let class = *index.entry(key).or_insert_with(|| {
            classes.push(Vec::new());
            classes.len() - 1
        });
        classes[class].push(pod);
    }
    Some(classes)
}

/// Whether each (client class, server class, port, protocol code) was
/// allowed. Keys are small numbers made here: foldhash, not SipHash.
type ClassVerdicts = HashMap<(usize, usize, u16, u8), bool, foldhash::fast::RandomState>;

/// What every thread's [`ClassChecks`] reads: the evaluator, each
/// classified pod's class (by the entry's address), and the verdicts
/// earlier threads found.
struct SharedChecks<'e, 'a> {
    evaluator: &'e Evaluator<'a>,
    class_of: HashMap<usize, usize, foldhash::fast::RandomState>,
    known: Vec<ClassVerdicts>,
}

impl<'e, 'a> SharedChecks<'e, 'a> {
    fn new(evaluator: &'e Evaluator<'a>, classes: Option<&[Vec<&PodEntry>]>) -> Self {
        let mut class_of = HashMap::default();
        for (class, pods) in classes.into_iter().flatten().enumerate() {
            for pod in pods {
                class_of.insert(address(*pod), class);
            }
        }
        Self {
            evaluator,
            class_of,
            known: Vec::new(),
        }
    }

    /// A thread's checks, with a cache of its own.
    fn checks(&self) -> ClassChecks<'_, 'a> {
        ClassChecks {
            shared: self,
            found: ClassVerdicts::default(),
        }
    }
}

/// Checks whose verdicts pods of one class share: each (client class,
/// server class, port, protocol) is evaluated once per thread, for the edge
/// replay and the blast radius alike. Only whether it was allowed is kept
/// (a refusal's reason, wanted for the few blocked edges, is worked out
/// again): the blast radius of a large cluster asks millions of questions.
struct ClassChecks<'s, 'a> {
    shared: &'s SharedChecks<'s, 'a>,
    /// Verdicts this thread found.
    found: ClassVerdicts,
}

impl ClassChecks<'_, '_> {
    fn check(&mut self, client: End<'_>, server: End<'_>, port: u16, protocol: &str) -> Verdict {
        if self.allows(client, server, port, protocol) {
            Verdict::Allowed
        } else {
            self.shared.evaluator.check(client, server, port, protocol)
        }
    }

    fn allows(&mut self, client: End<'_>, server: End<'_>, port: u16, protocol: &str) -> bool {
        let shared = self.shared;
        let class = |end: End<'_>| match end {
            End::Pod(pod) => shared.class_of.get(&address(pod)).copied(),
            End::Address(_) => None,
        };
        // Protocols by a small code (no key allocation per check).
        let (Some(client_class), Some(server_class), Some(code)) =
            (class(client), class(server), protocol_code(protocol))
        else {
            return shared.evaluator.check(client, server, port, protocol) == Verdict::Allowed;
        };
        let key = (client_class, server_class, port, code);
        let known = shared.known.iter().chain([&self.found]);
        if let Some(&allowed) = known.filter_map(|verdicts| verdicts.get(&key)).next() {
            return allowed;
        }
        let allowed = shared.evaluator.check(client, server, port, protocol) == Verdict::Allowed;
        self.found.insert(key, allowed);
        allowed
    }
}

/// Reachable (client pod, server pod, port) triples, counted class by
/// class, or pod by pod when there are no classes. Server classes are
/// counted on every core, `at_once` of them at a time.
fn blast_radius_with(
    shared: &SharedChecks<'_, '_>,
    classes: Option<&[Vec<&PodEntry>]>,
    policies: &Policies,
    inventory: &Inventory,
    observed: &Observed<'_>,
    at_once: usize,
) -> BlastRadius {
    let pods: Vec<&PodEntry> = inventory
        .pods
        .iter()
        .filter(|pod| !pod.host_network)
        .collect();
    let Some(classes) = classes else {
        return blast_radius_per_pod(shared.evaluator, &pods, observed);
    };
    let counting = RadiusCount {
        classes,
        // With NetworkPolicies alone, a server's ingress rules name the
        // only clients that may reach it: the others are counted, not
        // checked.
        prune: policies.cilium.is_empty() && policies.cluster_wide.is_empty(),
        finder: CandidateFinder::new(classes, inventory),
        other_pods: pods.len().saturating_sub(1),
        observed,
    };
    let at_once = at_once.max(1);
    let runs: Vec<Range<usize>> = (0..classes.len())
        .step_by(at_once)
        .map(|first| first..(first + at_once).min(classes.len()))
        .collect();
    let (parts, _) = map_in_order(
        &runs,
        || shared.checks(),
        |checks, run| {
            let mut part = (BlastRadius::default(), BTreeSet::new());
            for server_class in run.clone() {
                counting.server_class(checks, &mut part, server_class);
            }
            part
        },
    );
    let mut radius = BlastRadius::default();
    let mut beyond = BTreeSet::new();
    for (part, mut part_beyond) in parts {
        radius.pairs_before += part.pairs_before;
        radius.pairs_after += part.pairs_after;
        for (namespace, counts) in part.by_namespace {
            let total = radius.by_namespace.entry(namespace).or_default();
            total.pairs_before += counts.pairs_before;
            total.pairs_after += counts.pairs_after;
        }
        beyond.append(&mut part_beyond);
    }
    radius.open_beyond_observed = beyond.into_iter().collect();
    radius
}

/// What counting one server class's blast radius reads.
struct RadiusCount<'c, 'a, 'o, 'g> {
    classes: &'c [Vec<&'a PodEntry>],
    prune: bool,
    finder: CandidateFinder<'c, 'a>,
    /// Every pod (host-network ones aside) but one: each server pod's
    /// possible clients.
    other_pods: usize,
    observed: &'o Observed<'g>,
}

impl RadiusCount<'_, '_, '_, '_> {
    /// Adds what `server_class`'s pods could be reached by into `radius`,
    /// and the open pairs no observed edge stands for into `beyond`.
    fn server_class(
        &self,
        checks: &mut ClassChecks<'_, '_>,
        (radius, beyond): &mut (BlastRadius, BTreeSet<String>),
        server_class: usize,
    ) {
        let classes = self.classes;
        let servers = &classes[server_class];
        let server = servers[0];
        // Every server pod pairs with every other pod, on each declared port.
        let before = servers.len() * self.other_pods * server.ports.len();
        radius.pairs_before += before;
        let namespace = radius
            .by_namespace
            .entry(server.namespace.to_string())
            .or_default();
        namespace.pairs_before += before;
        // Port by port: a generated policy names each port's clients in a
        // rule of its own, so a client is checked only on the ports some
        // rule could admit it on.
        for declared in &server.ports {
            let (port, protocol) = (declared.number, declared.protocol_name());
            let candidates = match self
                .prune
                .then(|| {
                    checks
                        .shared
                        .evaluator
                        .ingress_peers(server, port, protocol)
                })
                .flatten()
            {
                Some(rules) => self.finder.candidates(&rules),
                None => (0..classes.len()).collect(),
            };
            for client_class in candidates {
                let clients = &classes[client_class];
                // Pairs of two different pods (a pod is not its own peer).
                let pairs = if client_class == server_class {
                    clients
                        .iter()
                        .map(|client| servers.iter().filter(|s| s.uid != client.uid).count())
                        .sum()
                } else {
                    clients.len() * servers.len()
                };
                if pairs == 0
                    || !checks.allows(End::Pod(clients[0]), End::Pod(server), port, protocol)
                {
                    continue;
                }
                radius.pairs_after += pairs;
                namespace.pairs_after += pairs;
                // A class's pods are mostly one workload's: each pair of
                // workloads is looked up once.
                let mut noted: Vec<(&WorkloadRef, &WorkloadRef)> = Vec::new();
                for client in clients {
                    for server in servers {
                        let workloads = (&*client.workload, &*server.workload);
                        if client.uid != server.uid && !noted.contains(&workloads) {
                            noted.push(workloads);
                            note_beyond(beyond, self.observed, client, server, port, protocol);
                        }
                    }
                }
            }
        }
    }
}

/// Which pod classes a list of NetworkPolicy peers may name, from indexes
/// by namespace and by label: a superset (each candidate is still checked),
/// never missing a class a peer matches.
struct CandidateFinder<'c, 'a> {
    classes: &'c [Vec<&'a PodEntry>],
    /// Labels of each namespace that has classes, as selectors see them.
    namespace_labels: HashMap<&'a str, LabelMap, foldhash::fast::RandomState>,
    by_namespace: HashMap<&'a str, Vec<usize>, foldhash::fast::RandomState>,
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>, foldhash::fast::RandomState>,
    /// Classes whose pods an address range may name.
    addressed: Vec<usize>,
}

impl<'c, 'a> CandidateFinder<'c, 'a> {
    fn new(classes: &'c [Vec<&'a PodEntry>], inventory: &'a Inventory) -> Self {
        let mut by_namespace: HashMap<&str, Vec<usize>, _> = HashMap::default();
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>, _> = HashMap::default();
        for (index, class) in classes.iter().enumerate() {
            let pod = class[0];
            by_namespace.entry(&pod.namespace).or_default().push(index);
            for (key, value) in pod.labels.iter() {
                by_label
                    .entry((&*pod.namespace, key.as_str(), value.as_str()))
                    .or_default()
                    .push(index);
            }
        }
        let namespace_labels = by_namespace
            .keys()
            .map(|namespace| {
                let labels = inventory
                    .namespaces
                    .get(*namespace)
                    .cloned()
                    .unwrap_or_else(|| {
                        LabelMap::from_iter([(
                            crate::inventory::NAMESPACE_NAME_LABEL.to_string(),
                            namespace.to_string(),
                        )])
                    });
                (*namespace, labels)
            })
            .collect();
        Self {
            classes,
            namespace_labels,
            by_namespace,
            by_label,
            addressed: (0..classes.len()).collect(),
        }
    }

    /// The classes any of `rules` may admit, sorted.
    fn candidates(&self, rules: &[IngressPeers<'_>]) -> Vec<usize> {
        let mut found = Vec::new();
        for (peers, policy_namespace) in rules {
            let Some(peers) = peers else {
                // A rule without `from` admits every source.
                return (0..self.classes.len()).collect();
            };
            for peer in *peers {
                self.add_peer(peer, policy_namespace, &mut found);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    fn add_peer(&self, peer: &Peer, policy_namespace: &str, found: &mut Vec<usize>) {
        let Peer::Pods {
            namespaces: namespace_selector,
            pods: selector,
        } = peer
        else {
            // Which pods a range covers is the check's to say.
            found.extend(self.addressed.iter().copied());
            return;
        };
        let selected_namespace = |namespace: &&str| {
            namespace_selector.as_ref().is_none_or(|selector| {
                self.namespace_labels
                    .get(namespace)
                    .is_some_and(|labels| selector.matches(labels))
            })
        };
        // A selector naming the namespace by name (as generated policies
        // do) is looked up, not matched against every namespace.
        let by_name = namespace_selector
            .as_ref()
            .and_then(|selector| selector.required(crate::inventory::NAMESPACE_NAME_LABEL));
        let namespaces: Vec<&str> = match (namespace_selector, by_name) {
            (None, _) => vec![policy_namespace],
            (Some(_), Some(name)) => vec![name],
            (Some(_), None) => self.by_namespace.keys().copied().collect(),
        };
        let namespaces = namespaces.into_iter().filter(selected_namespace);
        let first_label = selector
            .as_ref()
            .and_then(|selector| selector.match_labels().next());
        for namespace in namespaces {
            let in_namespace: &[usize] = match first_label {
                Some((key, value)) => self
                    .by_label
                    .get(&(namespace, key, value))
                    .map_or(&[], Vec::as_slice),
                None => self.by_namespace.get(namespace).map_or(&[], Vec::as_slice),
            };
            found.extend(in_namespace.iter().copied().filter(|&class| {
                selector
                    .as_ref()
                    .is_none_or(|selector| selector.matches(&self.classes[class][0].labels))
            }));
        }
    }
}

/// One pair left open that no observed edge stands for, by workload.
fn note_beyond(
    beyond: &mut BTreeSet<String>,
    observed: &Observed<'_>,
    client: &PodEntry,
    server: &PodEntry,
    port: u16,
    protocol: &str,
) {
    if !observed.between(client, server, port, protocol) {
        beyond.insert(format!(
            "{}/{} -> {}/{} {}/{}",
            client.namespace,
            client.workload.name,
            server.namespace,
            server.workload.name,
            protocol.to_ascii_lowercase(),
            port
        ));
    }
}

/// The blast radius pod by pod: for sets the class key cannot describe,
/// and as the tests' reference.
fn blast_radius_per_pod(
    evaluator: &Evaluator<'_>,
    pods: &[&PodEntry],
    observed: &Observed<'_>,
) -> BlastRadius {
    let mut radius = BlastRadius::default();
    let mut beyond: BTreeSet<String> = BTreeSet::new();
    for client in pods {
        for server in pods {
            if client.uid == server.uid {
                continue;
            }
            for declared in &server.ports {
                let (port, protocol) = (declared.number, declared.protocol_name());
                radius.pairs_before += 1;
                let namespace = radius
                    .by_namespace
                    .entry(server.namespace.to_string())
                    .or_default();
                namespace.pairs_before += 1;
                if evaluator.check(End::Pod(client), End::Pod(server), port, protocol)
                    == Verdict::Allowed
                {
                    namespace.pairs_after += 1;
                    radius.pairs_after += 1;
                    note_beyond(&mut beyond, observed, client, server, port, protocol);
                }
            }
        }
    }
    radius.open_beyond_observed = beyond.into_iter().collect();
    radius
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::evaluate::load_policy_set;

    /// Counts the blast radius of `policies` (YAML) over `inventory` class by
    /// class and pod by pod, asserts they agree, and returns the latter.
    fn assert_classes_count_as_pods_do(inventory: &Inventory, policies: &str) -> BlastRadius {
        let dir = std::env::temp_dir().join(format!(
            "netflow-classes-{}-{}",
            std::process::id(),
            policies.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), policies).unwrap();
        let policies = load_policy_set(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let dns = BTreeMap::new();
        let evaluator = Evaluator::for_set(&policies, inventory, &dns);
        let observed = Observed::new(inventory);
        let pods: Vec<&PodEntry> = inventory.pods.iter().collect();
        let by_class = blast_radius(&evaluator, &policies, inventory, &observed);
        let by_pod = blast_radius_per_pod(&evaluator, &pods, &observed);
        assert_eq!(by_class.pairs_before, by_pod.pairs_before);
        assert_eq!(by_class.pairs_after, by_pod.pairs_after);
        assert_eq!(by_class.open_beyond_observed, by_pod.open_beyond_observed);
        assert_eq!(by_class.by_namespace, by_pod.by_namespace);
        by_pod
    }

    /// An open pair is listed beyond the observed edges unless an edge was
    /// observed between its two workloads on its port and protocol.
    #[test]
    fn only_unobserved_open_pairs_are_listed_beyond() {
        let inventory = Inventory::parse(r#"{"kind":"List","items":[
          {"kind":"Pod","metadata":{"name":"web-1","namespace":"a","uid":"1","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.0.1"}},
          {"kind":"Pod","metadata":{"name":"api-1","namespace":"b","uid":"4","labels":{"app":"api"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080},{"containerPort":8080,"protocol":"UDP"}]}]},"status":{"podIP":"10.0.1.4"}},
          {"kind":"Pod","metadata":{"name":"api-2","namespace":"b","uid":"5","labels":{"app":"api"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080}]}]},"status":{"podIP":"10.0.1.5"}}
        ]}"#).unwrap();
        let endpoint = |pod: &str| {
            let pod = inventory.pods.iter().find(|p| &*p.name == pod).unwrap();
            let mut endpoint = crate::graph::tests::workload(&pod.namespace, &pod.workload.name);
            endpoint.id = format!("workload:{}/{}", pod.namespace, pod.workload.name);
            endpoint.workload_kind = Some(pod.workload.kind.clone());
            endpoint
        };
        let mut graph = CommGraph::new();
        let web = graph.upsert_endpoint(endpoint("web-1"));
        let api = graph.upsert_endpoint(endpoint("api-1"));
        let tcp = crate::graph::EdgeKey {
            protocol: crate::model::Protocol(6),
            port: 8080,
        };
        graph.observe(web, api, tcp, &crate::graph::tests::stats(1, 2, 1));
        let report = verify(&graph, &Policies::default(), &inventory);
        assert_eq!(report.allowed, 1);
        let beyond = &report.blast_radius.open_beyond_observed;
        for open in [
            "a/web-1 -> b/api-1 udp/8080",
            "a/web-1 -> b/api-2 tcp/8080",
            "b/api-1 -> b/api-2 tcp/8080",
            "b/api-1 -> a/web-1 tcp/80",
        ] {
            assert!(
                beyond.iter().any(|pair| pair == open),
                "{open}: {beyond:#?}"
            );
        }
        assert!(
            !beyond
                .iter()
                .any(|pair| pair == "a/web-1 -> b/api-1 tcp/8080"),
            "{beyond:#?}"
        );
    }

    /// Pods of one class (same namespace, labels, ports) counted once must
    /// give what pod-by-pod counting gives, ipBlocks on pod IPs included.
    #[test]
    fn classes_count_as_pods_do() {
        let inventory = Inventory::parse(r#"{"kind":"List","items":[
          {"kind":"Namespace","metadata":{"name":"a"}},
          {"kind":"Namespace","metadata":{"name":"b"}},
          {"kind":"Pod","metadata":{"name":"web-1","namespace":"a","uid":"1","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.0.1"}},
          {"kind":"Pod","metadata":{"name":"web-2","namespace":"a","uid":"2","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.0.2"}},
          {"kind":"Pod","metadata":{"name":"web-3","namespace":"a","uid":"3","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.9.3"}},
          {"kind":"Pod","metadata":{"name":"api-1","namespace":"b","uid":"4","labels":{"app":"api"}},"spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080},{"containerPort":53,"protocol":"UDP"}]}]},"status":{"podIP":"10.0.1.4"}},
          {"kind":"Pod","metadata":{"name":"api-2","namespace":"b","uid":"5","labels":{"app":"api"}},"spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080},{"containerPort":53,"protocol":"UDP"}]}]},"status":{"podIP":"10.0.1.5"}}
        ]}"#).unwrap();
        let by_pod = assert_classes_count_as_pods_do(
            &inventory,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: b}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/24}}]\n    ports: [{port: http}]\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: a}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}]}, {to: [{namespaceSelector: {}}], ports: [{port: 8080}]}]}\n",
        );
        // web-3 (outside the ipBlock) reaches less of api than web-1 and web-2.
        assert!(by_pod.pairs_after > 0 && by_pod.pairs_after < by_pod.pairs_before);
    }

    /// Only the clients a server's ingress rules name are checked: the
    /// count must stay what pod-by-pod counting gives, for selectors of
    /// every form (labels, expressions, namespaces, rules without `from`).
    #[test]
    fn checking_only_named_clients_counts_as_pods_do() {
        let pod = |name: &str, namespace: &str, uid: u32, labels: &str, ip: &str| {
            format!(
                r#"{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"{namespace}","uid":"{uid}","labels":{labels}}},"spec":{{"containers":[{{"name":"c","ports":[{{"containerPort":80}},{{"containerPort":9000}}]}}]}},"status":{{"podIP":"{ip}"}}}}"#
            )
        };
        let items = [
            r#"{"kind":"Namespace","metadata":{"name":"a","labels":{"team":"x"}}}"#.to_string(),
            r#"{"kind":"Namespace","metadata":{"name":"b"}}"#.to_string(),
            r#"{"kind":"Namespace","metadata":{"name":"c","labels":{"team":"x"}}}"#.to_string(),
            pod(
                "web-1",
                "a",
                1,
                r#"{"app":"web","tier":"front"}"#,
                "10.0.0.1",
            ),
            pod(
                "web-2",
                "a",
                2,
                r#"{"app":"web","tier":"front"}"#,
                "10.0.0.2",
            ),
            pod(
                "api-1",
                "a",
                3,
                r#"{"app":"api","tier":"back"}"#,
                "10.0.0.3",
            ),
            pod("db-1", "b", 4, r#"{"app":"db"}"#, "10.0.1.4"),
            pod(
                "job-1",
                "b",
                5,
                r#"{"app":"job","tier":"back"}"#,
                "10.0.1.5",
            ),
            pod("web-3", "c", 6, r#"{"app":"web"}"#, "10.0.2.6"),
            pod("tool-1", "c", 7, r#"{}"#, "10.0.2.7"),
        ];
        let inventory = Inventory::parse(&format!(
            r#"{{"kind":"List","items":[{}]}}"#,
            items.join(",")
        ))
        .unwrap();
        let policies = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: a}\nspec:\n  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: 80}]\n  - from: [{namespaceSelector: {matchLabels: {team: x}}, podSelector: {matchExpressions: [{key: app, operator: In, values: [web, tool]}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: b}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {tier: back}}}, {podSelector: {}}]\n    ports: [{port: 9000}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: c}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: a}\nspec: {podSelector: {matchLabels: {tier: front}}, policyTypes: [Ingress]}\n";
        let by_pod = assert_classes_count_as_pods_do(&inventory, policies);
        assert!(by_pod.pairs_after > 0 && by_pod.pairs_after < by_pod.pairs_before);
    }
}
