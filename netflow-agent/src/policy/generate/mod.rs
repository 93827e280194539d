//! From the graph of the audit window to the smallest set of allow policies
//! that still covers every observed edge, in either flavor.
//!
//! One skeleton ([`generate_with`]) for both flavors: per namespace a
//! default-deny (ingress and egress), a DNS allow to the cluster's real DNS
//! pods (as the inventory names them), and one policy per workload with its
//! ingress and egress allows. Peers are selected by their workload's selector
//! labels (never per-pod labels); ports are the server's pod ports; peers on
//! the same ports share a rule. The metadata service is never allowed: a
//! workload that contacted it is reported as a finding. A [`Flavor`] says
//! how each piece is written: `kubernetes` (NetworkPolicy) and `cilium`
//! (CiliumNetworkPolicy).

pub mod baseline;
pub mod cilium;
pub mod kubernetes;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::{
    api::networking::v1::NetworkPolicy, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Serialize;

pub use self::{baseline::ClusterBaseline, kubernetes::generate};
use crate::{
    graph::{CommGraph, Edge},
    identity::is_link_local,
    inventory::Inventory,
    model::{Endpoint, EndpointKind, LabelMap, file_time, file_time_display},
    parallel::map_in_order,
    policy::cluster_wide::ClusterWideObject,
};

/// Namespaces that get no policies unless asked: their clients (DNS above
/// all) must keep working for everyone.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["kube-system", "kube-public", "kube-node-lease", "netflow"];

const EVIDENCE_ANNOTATION: &str = "netflow.io/evidence";

/// The most an evidence annotation holds. Kubernetes refuses an object whose
/// annotations pass 256 KiB, and `kubectl apply` (client side) copies the
/// whole object, evidence included, into an annotation of its own: a quarter
/// leaves room for both and for the spec.
const EVIDENCE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(
        "the inventory has no cluster DNS (a Service kube-dns or coredns in kube-system with a selector): the DNS allow cannot be written without guessing"
    )]
    NoClusterDns,
    #[error(
        "--cluster-baseline writes policy.networking.k8s.io resources, which Cilium does not enforce: use it with --flavor kubernetes, or leave the default-deny to each namespace's CiliumNetworkPolicies"
    )]
    BaselineNeedsKubernetesFlavor,
}

#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Only these namespaces (all when empty).
    pub namespaces: BTreeSet<String>,
    pub include_system: bool,
    /// Ignore edges with fewer connections than this.
    pub min_connections: u64,
    /// Ignore edges last seen before this (Unix seconds).
    pub seen_after: u64,
    /// Ingress allows only (and an ingress-only default-deny).
    pub ingress_only: bool,
    /// Allow UDP edges that never saw a reply (fire-and-forget: statsd,
    /// syslog). Without it only answered traffic is allowed.
    pub allow_one_way_udp: bool,
    /// Put the default-deny and the DNS and metadata rules in the cluster
    /// admin's tiers instead of every namespace (`baseline`).
    pub cluster_baseline: ClusterBaseline,
    /// Allow only the HTTP calls seen on ports whose every connection was
    /// plaintext HTTP (Cilium's L7 rules; the Kubernetes flavor has none).
    pub l7_http: bool,
}

/// A client whose attempts to this many (peer, port) pairs were never
/// answered is reported as a scan.
pub const SCAN_ATTEMPTS: usize = 8;

/// Whether an edge carried traffic that was answered: only such an edge may
/// become an allow (a refused or unanswered attempt is a finding instead).
pub fn proven(edge: &Edge, allow_one_way_udp: bool) -> bool {
    edge.stats.volume().established > 0
        || (allow_one_way_udp && edge.key.protocol.0 == netflow_common::PROTO_UDP)
}

/// Something a reviewer must look at: not turned into an allow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub kind: String,
    pub workload: String,
    pub detail: String,
}

/// The policies of one flavor, by namespace, and what was left to review.
#[derive(Debug)]
pub struct PolicySet<P = NetworkPolicy> {
    /// Policies by namespace, in output order.
    pub by_namespace: BTreeMap<String, Vec<P>>,
    /// The cluster admin's Admin tier: applied before any namespace.
    pub admin_tier: Vec<ClusterWideObject>,
    /// The Baseline tier: applied last.
    pub baseline_tier: Vec<ClusterWideObject>,
    pub findings: Vec<Finding>,
}

impl<P> Default for PolicySet<P> {
    fn default() -> Self {
        Self {
            by_namespace: BTreeMap::new(),
            admin_tier: Vec::new(),
            baseline_tier: Vec::new(),
            findings: Vec::new(),
        }
    }
}

/// Edges the options keep, and the workloads to write policies for, by namespace.
type Scope<'g> = (
    Vec<(&'g Endpoint, &'g Endpoint, &'g Edge)>,
    BTreeMap<String, BTreeMap<String, &'g Endpoint>>,
);

fn scope<'g>(graph: &'g CommGraph, options: &GenerateOptions) -> Scope<'g> {
    let edges = graph
        .edges()
        .into_iter()
        .filter(|(_, _, edge)| {
            edge.stats.volume().connections >= options.min_connections
                && edge.stats.last_seen >= options.seen_after
        })
        .collect();
    let wanted = |namespace: &str| {
        (options.namespaces.is_empty() || options.namespaces.contains(namespace))
            && (options.include_system || !SYSTEM_NAMESPACES.contains(&namespace))
    };
    let mut workloads: BTreeMap<String, BTreeMap<String, &Endpoint>> = BTreeMap::new();
    for endpoint in graph.endpoints() {
        if let (EndpointKind::Workload, Some(namespace)) = (endpoint.kind, &endpoint.namespace)
            && wanted(namespace)
        {
            workloads
                .entry(namespace.clone())
                .or_default()
                .insert(endpoint.id.clone(), endpoint);
        }
    }
    (edges, workloads)
}

/// The cluster DNS pods, as the inventory names them.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    pub namespace: String,
    /// The DNS Service's selector: the DNS pods' labels.
    pub labels: LabelMap,
    /// The inventory runs NodeLocal DNSCache (its DaemonSet in
    /// kube-system): pods ask 169.254.20.10 on their node, and the DNS allow
    /// names that address too, port 53 only: the one link-local address a
    /// policy names, and only as the cluster's own DNS. Without the
    /// DaemonSet, traffic to it is a link-local finding like any other.
    pub node_local: bool,
}

impl ClusterDns {
    /// Whether `peer` on `port` is the cluster DNS the DNS allow covers.
    pub fn covers(&self, peer: &Endpoint, port: u16) -> bool {
        port == 53
            && ((peer.namespace.as_deref() == Some(self.namespace.as_str())
                && peer.labels == self.labels)
                || (self.node_local && is_node_local_dns_endpoint(peer)))
    }
}

/// The endpoint the identity names NodeLocal DNSCache's address by.
fn is_node_local_dns_endpoint(peer: &Endpoint) -> bool {
    peer.kind == EndpointKind::Node
        && peer.addresses.len() == 1
        && peer.addresses.iter().all(|address| {
            address
                .parse()
                .is_ok_and(crate::identity::is_node_local_dns)
        })
}

/// `169.254.20.10/32`, as the DNS allow names NodeLocal DNSCache.
pub fn node_local_dns_cidr() -> String {
    format!("{}/32", crate::identity::NODE_LOCAL_DNS)
}

/// The cluster DNS: its namespace and pod labels, from the inventory.
pub fn cluster_dns(inventory: &Inventory) -> Option<ClusterDns> {
    inventory
        .services
        .iter()
        .filter(|service| service.namespace == "kube-system" && !service.selector.is_empty())
        .find(|service| service.name == "kube-dns" || service.name == "coredns")
        .map(|service| ClusterDns {
            namespace: service.namespace.clone(),
            labels: LabelMap::clone(&service.selector),
            node_local: inventory.pods_in("kube-system").any(|pod| {
                pod.workload.kind == "DaemonSet"
                    && crate::identity::NODE_LOCAL_DNS_NAMES.contains(&pod.workload.name.as_str())
            }),
        })
}

/// How one flavor writes each piece of the skeleton.
pub trait Flavor: Sync {
    type Policy: Send;
    /// How a rule names one peer.
    type Peer: PartialEq;
    /// How a policy of `workload` names `peer`, met on `edge`; `None` when
    /// it cannot be named without opening more than was observed.
    fn peer(&self, peer: &Endpoint, workload: &Endpoint, edge: &Edge) -> Option<Vec<Self::Peer>>;
    fn default_deny(&self, namespace: &str, ingress_only: bool) -> Self::Policy;
    /// Egress from every pod of `namespace` to the DNS pods, port 53.
    fn dns_allow(&self, namespace: &str, dns: &ClusterDns) -> Self::Policy;
    /// With system namespaces included: the DNS pods open to every namespace.
    fn dns_open_to_all(&self, namespace: &str, dns: &ClusterDns) -> Self::Policy;
    fn workload_policy(
        &self,
        workload: &Endpoint,
        metadata: ObjectMeta,
        rules: WorkloadRules<Self::Peer>,
        ingress_only: bool,
    ) -> Self::Policy;
}

/// The skeleton both flavors share, the policies kept by namespace.
pub fn generate_with<F: Flavor>(
    flavor: &F,
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
) -> Result<PolicySet<F::Policy>, GenerateError> {
    let by_namespace = std::sync::Mutex::new(BTreeMap::new());
    let mut set = generate_each(flavor, graph, inventory, options, |namespace, policies| {
        by_namespace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(namespace.to_string(), policies);
        Ok::<_, GenerateError>(())
    })?;
    set.by_namespace = by_namespace
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(set)
}

/// The skeleton both flavors share: each namespace's policies go to `sink`
/// as soon as they are written (a large cluster's are never all held at
/// once); the set returned holds the rest (tiers, findings).
pub fn generate_each<F: Flavor, E: From<GenerateError> + Send>(
    flavor: &F,
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
    sink: impl Fn(&str, Vec<F::Policy>) -> Result<(), E> + Sync,
) -> Result<PolicySet<F::Policy>, E> {
    let dns = cluster_dns(inventory).ok_or(GenerateError::NoClusterDns)?;
    let (edges, workloads) = scope(graph, options);
    let mut by_server: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_client: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, (client, server, _)) in edges.iter().enumerate() {
        by_server.entry(server.id.as_str()).or_default().push(index);
        by_client.entry(client.id.as_str()).or_default().push(index);
    }
    let inputs = Inputs {
        edges,
        by_server,
        by_client,
        dns,
        unselectable: unselectable(graph, inventory),
        allow_one_way_udp: options.allow_one_way_udp,
        l7_http: options.l7_http,
    };
    let dns = &inputs.dns;
    let mut set = PolicySet::default();
    scans(&inputs, &workloads, &mut set.findings);
    for (client, dropped) in graph.over_budget() {
        if let Some(workload) = graph.endpoint(client)
            && workloads
                .get(workload.namespace.as_deref().unwrap_or_default())
                .is_some_and(|members| members.contains_key(client))
        {
            set.findings.push(Finding {
                kind: "edge-budget".into(),
                workload: workload.label(),
                detail: format!(
                    "{dropped} of its edges were dropped over the per-client edge budget (a scan, or a client spraying connections?): its policy covers only the edges kept"
                ),
            });
        }
    }
    let cluster_wide = options.cluster_baseline != ClusterBaseline::None;
    (set.admin_tier, set.baseline_tier) =
        baseline::cluster_wide(options.cluster_baseline, options, dns);
    // Namespaces are independent: generated (and handed to `sink`) on every
    // core, each thread with findings of its own (sorted below).
    let namespaces: Vec<_> = workloads.iter().collect();
    let (written, findings) =
        map_in_order(&namespaces, Vec::new, |findings, (namespace, members)| {
            // With the cluster-wide layer, egress default-deny and the DNS allow
            // are the cluster admin's; ingress from outside the cluster is not
            // something a Baseline rule can name, so it stays here.
            let mut policies =
                vec![flavor.default_deny(namespace, options.ingress_only || cluster_wide)];
            if !options.ingress_only && !cluster_wide {
                policies.push(flavor.dns_allow(namespace, dns));
            }
            if options.include_system && **namespace == dns.namespace {
                policies.push(flavor.dns_open_to_all(namespace, dns));
            }
            for workload in members.values() {
                if let Some(why) = inputs.unselectable.get(&workload.id) {
                    // Its policy would select other pods too: grant nothing.
                    findings.push(Finding {
                        kind: "unselectable-workload".into(),
                        workload: workload.label(),
                        detail: format!(
                            "{why}; no policy written for it: give its pods a label only they carry"
                        ),
                    });
                    continue;
                }
                let name_peer =
                    |peer: &Endpoint, of: &Endpoint, edge: &Edge| flavor.peer(peer, of, edge);
                if let Some(rules) = workload_rules(&inputs, workload, options, findings, name_peer)
                {
                    let metadata = policy_metadata(
                        &workload_policy_name(workload),
                        namespace,
                        Some(rules.evidence()),
                    );
                    policies.push(flavor.workload_policy(
                        workload,
                        metadata,
                        rules,
                        options.ingress_only,
                    ));
                }
            }
            sink(namespace, policies)
        });
    for result in written {
        result?;
    }
    set.findings.extend(findings.into_iter().flatten());
    set.findings.sort();
    set.findings.dedup();
    Ok(set)
}

/// Workloads no label selector names alone, with why: their selector labels
/// are empty (only per-pod labels such as `pod-template-hash` or `job-name`),
/// or they also match running pods of another workload in the namespace. A
/// policy for them, or a rule naming them, would grant more than was seen.
fn unselectable(graph: &CommGraph, inventory: &Inventory) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for endpoint in graph.endpoints() {
        let (EndpointKind::Workload, Some(namespace)) = (endpoint.kind, &endpoint.namespace) else {
            continue;
        };
        if endpoint.labels.is_empty() {
            found.insert(
                endpoint.id.clone(),
                "its pods carry no label beyond per-pod ones (pod-template-hash, job-name, controller-uid, ...)".to_string(),
            );
            continue;
        }
        let other = inventory.pods_in(namespace).find(|pod| {
            pod.ended.is_none()
                && endpoint
                    .labels
                    .iter()
                    .all(|(key, value)| pod.labels.get(key) == Some(value))
                && !(pod.workload.name == endpoint.name
                    && Some(&pod.workload.kind) == endpoint.workload_kind.as_ref())
        });
        if let Some(pod) = other {
            let labels: Vec<String> = endpoint
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            found.insert(
                endpoint.id.clone(),
                format!(
                    "its selector {} also selects pod {} of {} {}",
                    labels.join(","),
                    pod.name,
                    pod.workload.kind,
                    pod.workload.name
                ),
            );
        }
    }
    found
}

/// Peers no policy may allow, as the kind of finding they are instead: the
/// cloud metadata services, and link-local addresses.
pub fn never_allowed(peer: &Endpoint) -> Option<&'static str> {
    if peer.kind == EndpointKind::Metadata {
        return Some("metadata-service");
    }
    // A node is named by its own addresses (link-local ones are left out
    // of its rules); the NodeLocal DNS cache is its link-local address.
    let link_local = (peer.kind != EndpointKind::Node || is_node_local_dns_endpoint(peer))
        && peer
            .addresses
            .iter()
            .filter_map(|address| address.parse().ok())
            .any(is_link_local);
    link_local.then_some("link-local")
}

/// An address-named peer (a node, an external host) as one /32 (or /128)
/// per address: a node talks from each of them. Link-local addresses are
/// never written.
pub fn host_cidrs(endpoint: &Endpoint) -> Vec<String> {
    endpoint
        .addresses
        .iter()
        .filter_map(|address| address.parse::<std::net::IpAddr>().ok())
        .filter(|ip| !is_link_local(*ip))
        .map(|ip| match ip {
            std::net::IpAddr::V4(_) => format!("{ip}/32"),
            std::net::IpAddr::V6(_) => format!("{ip}/128"),
        })
        .collect()
}

/// What every workload's rules are made from.
struct Inputs<'g> {
    /// The edges the options keep.
    edges: Vec<(&'g Endpoint, &'g Endpoint, &'g Edge)>,
    /// Indexes into `edges` by the server's and by the client's id, in
    /// `edges` order: a workload's rules read its own edges only.
    by_server: HashMap<&'g str, Vec<usize>>,
    by_client: HashMap<&'g str, Vec<usize>>,
    dns: ClusterDns,
    /// Workloads no selector names alone, with why (see [`unselectable`]).
    unselectable: BTreeMap<String, String>,
    allow_one_way_udp: bool,
    l7_http: bool,
}

/// Clients in scope whose attempts to many (peer, port) pairs were never
/// answered: a port or host scan during the audit, reported by name.
fn scans(
    inputs: &Inputs<'_>,
    workloads: &BTreeMap<String, BTreeMap<String, &Endpoint>>,
    findings: &mut Vec<Finding>,
) {
    let mut failed: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<u16>, usize)> = BTreeMap::new();
    for (client, server, edge) in &inputs.edges {
        if !proven(edge, inputs.allow_one_way_udp) {
            let entry = failed.entry(client.id.as_str()).or_default();
            entry.0.insert(server.id.as_str());
            entry.1.insert(edge.key.port);
            entry.2 += 1;
        }
    }
    for (client, (peers, ports, attempts)) in failed {
        let in_scope = workloads
            .values()
            .find_map(|members| members.get(client))
            .copied();
        if let Some(workload) = in_scope
            && attempts >= SCAN_ATTEMPTS
        {
            findings.push(Finding {
                kind: "scan".into(),
                workload: workload.label(),
                detail: format!(
                    "{attempts} (peer, port) pairs attempted and never answered, {} peers and {} ports: a scan? none of it is allowed",
                    peers.len(),
                    ports.len()
                ),
            });
        }
    }
}

/// `allow-<kind>-<name>`: one policy per workload.
fn workload_policy_name(workload: &Endpoint) -> String {
    let kind = workload
        .workload_kind
        .clone()
        .unwrap_or_else(|| "workload".into())
        .to_ascii_lowercase();
    format!("allow-{kind}-{}", workload.name)
}

/// The metadata of every generated policy: managed by netflow, with the
/// evidence (which edges each rule stands for) when there are rules.
pub fn policy_metadata(name: &str, namespace: &str, evidence: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "netflow".to_string(),
        )])),
        annotations: evidence.map(|text| BTreeMap::from([(EVIDENCE_ANNOTATION.to_string(), text)])),
        ..ObjectMeta::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Peers allowed on the same ports, with the evidence for them. `P` is how
/// a flavor names a peer.
pub struct Rule<P> {
    pub peers: Vec<P>,
    /// (protocol as policies name it, port).
    pub ports: BTreeSet<(&'static str, u16)>,
    /// With L7 (`GenerateOptions::l7_http`): the ports whose every
    /// connection carried plaintext HTTP, with the calls (method, path
    /// template) seen on them; a flavor that can allows only those.
    pub http: BTreeMap<(&'static str, u16), BTreeSet<(String, String)>>,
    /// One line per edge the rule stands for, joined by newlines (written
    /// in place: a million edges' lines are a million strings otherwise).
    pub evidence: String,
}

/// A workload's ingress and egress allow rules.
pub struct WorkloadRules<P> {
    pub ingress: Vec<Rule<P>>,
    pub egress: Vec<Rule<P>>,
}

impl<P> WorkloadRules<P> {
    /// Which edges each rule stands for, for the evidence annotation: whole
    /// lines up to [`EVIDENCE_BYTES`], then how many edges did not fit.
    pub fn evidence(&self) -> String {
        use std::fmt::Write as _;
        // Room for the closing line, whatever the count.
        const CLOSING_BYTES: usize = 128;
        let mut text = String::new();
        let mut left_out = 0usize;
        for (direction, rules) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            for (index, rule) in rules.iter().enumerate() {
                for line in rule.evidence.lines() {
                    if left_out > 0 {
                        left_out += 1;
                        continue;
                    }
                    let kept = text.len();
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    let _ = write!(text, "{direction}[{index}]: {line}");
                    if text.len() > EVIDENCE_BYTES - CLOSING_BYTES {
                        text.truncate(kept);
                        left_out = 1;
                    }
                }
            }
        }
        if left_out > 0 {
            if !text.is_empty() {
                text.push('\n');
            }
            let _ = write!(
                text,
                "... and {left_out} more edges (the annotation stays under {} KiB; the graph holds them all)",
                EVIDENCE_BYTES / 1024
            );
        }
        text
    }
}

/// `workload`'s rules in both directions (ingress only when asked); `None`
/// when it has none.
fn workload_rules<P: PartialEq>(
    inputs: &Inputs<'_>,
    workload: &Endpoint,
    options: &GenerateOptions,
    findings: &mut Vec<Finding>,
    name_peer: impl Fn(&Endpoint, &Endpoint, &Edge) -> Option<Vec<P>> + Copy,
) -> Option<WorkloadRules<P>> {
    let ingress = rules(inputs, workload, Direction::Ingress, findings, name_peer);
    let egress = if options.ingress_only {
        Vec::new()
    } else {
        rules(inputs, workload, Direction::Egress, findings, name_peer)
    };
    (!ingress.is_empty() || !egress.is_empty()).then_some(WorkloadRules { ingress, egress })
}

/// The allow rules of `workload` in `direction`: observed peers, named by
/// `name_peer` (a flavor's selector), grouped by identical port sets.
fn rules<P: PartialEq>(
    inputs: &Inputs<'_>,
    workload: &Endpoint,
    direction: Direction,
    findings: &mut Vec<Finding>,
    name_peer: impl Fn(&Endpoint, &Endpoint, &Edge) -> Option<Vec<P>>,
) -> Vec<Rule<P>> {
    // Peer (by its endpoint id) -> ports and evidence.
    let mut by_peer: BTreeMap<&str, Rule<P>> = BTreeMap::new();
    let Inputs {
        edges,
        by_server,
        by_client,
        l7_http,
        dns,
        unselectable,
        allow_one_way_udp,
    } = inputs;
    let own_edges = match direction {
        Direction::Ingress => by_server.get(workload.id.as_str()),
        Direction::Egress => by_client.get(workload.id.as_str()),
    };
    for &index in own_edges.into_iter().flatten() {
        let (client, server, edge) = &edges[index];
        let peer = match direction {
            Direction::Ingress => *client,
            Direction::Egress => *server,
        };
        let Some(protocol) = edge.key.protocol.policy_name() else {
            // ICMP and the like: no policy API has a port rule for them.
            findings.push(Finding {
                kind: "unnamed-protocol".into(),
                workload: workload.label(),
                detail: format!(
                    "{} {} {} over IP protocol {}: policies name TCP, UDP and SCTP only; not allowed",
                    direction_name(direction),
                    match direction {
                        Direction::Ingress => "from",
                        Direction::Egress => "to",
                    },
                    peer.label(),
                    edge.key.protocol
                ),
            });
            continue;
        };
        // The DNS allow covers every workload's DNS traffic (NodeLocal
        // DNSCache's link-local address too, when the cluster runs it).
        if direction == Direction::Egress && dns.covers(peer, edge.key.port) {
            continue;
        }
        if let Some(kind) = never_allowed(peer) {
            findings.push(Finding {
                kind: kind.into(),
                workload: workload.label(),
                detail: format!(
                    "{} {} {} {}/{} ({} connections, last {}): never allowed",
                    direction_name(direction),
                    match direction {
                        Direction::Ingress => "from",
                        Direction::Egress => "to",
                    },
                    peer.addresses.iter().next().map_or("?", String::as_str),
                    protocol.to_ascii_lowercase(),
                    edge.key.port,
                    edge.stats.volume().connections,
                    file_time(edge.stats.last_seen)
                ),
            });
            continue;
        }
        if !proven(edge, *allow_one_way_udp) {
            findings.push(Finding {
                kind: "never-connected".into(),
                workload: workload.label(),
                detail: format!(
                    "{} {} {} {}/{}: {} attempts, none answered: not allowed",
                    direction_name(direction),
                    match direction {
                        Direction::Ingress => "from",
                        Direction::Egress => "to",
                    },
                    peer.label(),
                    protocol.to_ascii_lowercase(),
                    edge.key.port,
                    edge.stats.volume().connections
                ),
            });
            continue;
        }
        if let Some(why) = unselectable.get(&peer.id) {
            findings.push(Finding {
                kind: "unselectable-peer".into(),
                workload: workload.label(),
                detail: format!(
                    "{} {}/{}: peer {} not allowed: {why}",
                    direction_name(direction),
                    protocol.to_ascii_lowercase(),
                    edge.key.port,
                    peer.label()
                ),
            });
            continue;
        }
        let Some(selector) = name_peer(peer, workload, edge) else {
            findings.push(Finding {
                kind: "unresolved-peer".into(),
                workload: workload.label(),
                detail: format!(
                    "{} {}/{}: peer {} could not be named",
                    direction_name(direction),
                    protocol.to_ascii_lowercase(),
                    edge.key.port,
                    peer.id
                ),
            });
            continue;
        };
        let entry = by_peer.entry(peer.id.as_str()).or_insert_with(|| Rule {
            peers: Vec::new(),
            ports: BTreeSet::new(),
            http: BTreeMap::new(),
            evidence: String::new(),
        });
        // One peer met on several edges (ports) may be named by more on
        // some (the names its client resolved): every name, once.
        for selector in selector {
            if !entry.peers.contains(&selector) {
                entry.peers.push(selector);
            }
        }
        let port = (protocol, edge.key.port);
        // A port keeps L7 rules while every edge on it was all HTTP; the
        // first that was not (TLS, another protocol) makes it L4 for good.
        let l7_so_far = !entry.ports.contains(&port) || entry.http.contains_key(&port);
        if *l7_http && all_http(edge) && l7_so_far {
            let calls = entry.http.entry(port).or_default();
            calls.extend(edge.stats.http.calls.keys().cloned());
        } else {
            entry.http.remove(&port);
        }
        entry.ports.insert(port);
        if !entry.evidence.is_empty() {
            entry.evidence.push('\n');
        }
        write_evidence(&mut entry.evidence, peer, protocol, edge);
    }
    // Peers with the same ports (and the same calls on them) share one rule.
    type RuleKey = (
        BTreeSet<(&'static str, u16)>,
        BTreeMap<(&'static str, u16), BTreeSet<(String, String)>>,
    );
    let mut by_ports: BTreeMap<RuleKey, (Vec<P>, String)> = BTreeMap::new();
    for (_, peer) in by_peer {
        let (peers, evidence) = by_ports.entry((peer.ports, peer.http)).or_default();
        peers.extend(peer.peers);
        if !evidence.is_empty() {
            evidence.push('\n');
        }
        evidence.push_str(&peer.evidence);
    }
    by_ports
        .into_iter()
        .map(|((ports, http), (peers, evidence))| Rule {
            peers,
            ports,
            http,
            evidence,
        })
        .collect()
}

/// Whether every answered connection of the edge carried plaintext HTTP
/// requests (and some were seen): only then may its port be narrowed to
/// calls.
pub fn all_http(edge: &Edge) -> bool {
    let http = &edge.stats.http;
    !http.calls.is_empty() && http.connections() >= edge.stats.volume().established
}

/// One edge's evidence line: the peer, the port, when it was seen, how
/// often, and the HTTP calls it carried.
fn write_evidence(text: &mut String, peer: &Endpoint, protocol: &str, edge: &Edge) {
    use std::fmt::Write as _;
    let _ = write!(
        text,
        "{} {}/{} first {} last {} connections {}",
        peer.label_display(),
        protocol.to_ascii_lowercase(),
        edge.key.port,
        file_time_display(edge.stats.first_seen),
        file_time_display(edge.stats.last_seen),
        edge.stats.volume().connections,
    );
    if edge.stats.http.calls.is_empty() {
        return;
    }
    for (index, call) in edge.stats.http.records().iter().enumerate() {
        let separator = if index == 0 { " http " } else { ", " };
        let _ = write!(
            text,
            "{separator}{} {} ({})",
            call.method, call.path, call.requests
        );
    }
}

pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        graph::build::add_flows,
        identity::Identity,
        model::{Address, Basis, FlowRecord, PROTO_SCTP, Protocol, Side},
        policy::write::to_yaml,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const INVENTORY: &str = r#"{"kind":"List","items":[
      {"kind":"Namespace","metadata":{"name":"shop"}},
      {"kind":"Namespace","metadata":{"name":"data"}},
      {"kind":"Pod","metadata":{"name":"coredns-1","namespace":"kube-system","uid":"00000000-0000-0000-0000-000000000001","labels":{"k8s-app":"kube-dns","pod-template-hash":"x"}},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.2"}},
      {"kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},
        "spec":{"clusterIP":"10.96.0.10","selector":{"k8s-app":"kube-dns"},"ports":[{"port":53,"protocol":"UDP"}]}},
      {"kind":"Pod","metadata":{"name":"web-abc-1","namespace":"shop","uid":"00000000-0000-0000-0000-000000000002","labels":{"app":"web","pod-template-hash":"abc"},
        "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-abc","uid":"r","controller":true}]},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.5"}},
      {"kind":"Pod","metadata":{"name":"db-0","namespace":"data","uid":"00000000-0000-0000-0000-000000000003","labels":{"app":"db","statefulset.kubernetes.io/pod-name":"db-0"},
        "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"s","controller":true}]},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.6"}}
    ]}"#;

    pub(crate) fn flow(uid: &str, local: &str, remote: (&str, u16), protocol: u8) -> FlowRecord {
        FlowRecord {
            ts: "2026-11-20T10:00:05Z".parse().unwrap(),
            cgroup_id: 1,
            cgroup: Some(format!("/kubepods/pod{uid}/0123456789abcdef").into()),
            protocol: Protocol(protocol),
            local: Address {
                ip: local.parse().unwrap(),
                port: 40000,
            },
            remote: Address {
                ip: remote.0.parse().unwrap(),
                port: remote.1,
            },
            initiator: Side::Local,
            client: Side::Local,
            client_basis: Basis::TcpSyn,
            packets_in: 1,
            packets_out: 1,
            bytes_in: 100,
            bytes_out: 100,
            first_seen: "2026-11-20T10:00:00Z".parse().unwrap(),
            last_seen: "2026-11-20T10:00:00Z".parse().unwrap(),
            tcp_flags: String::new(),
            handshake: crate::model::Handshake::Established,
            newly_established: true,
            new: true,
            overflow: false,
            ended: false,
            http: Vec::new(),
            http_connection: false,
        }
    }

    /// The pod UID of shop/web, the client of every test flow.
    pub(crate) const WEB: &str = "00000000-0000-0000-0000-000000000002";

    /// The graph of `flows` over the test inventory.
    pub(crate) fn graph_of(flows: &[FlowRecord]) -> (CommGraph, Inventory) {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        add_flows(&mut graph, &identity, flows);
        (graph, inventory)
    }

    /// web calls db, the DNS, an external host and the metadata service.
    fn shop_graph() -> (CommGraph, Inventory) {
        graph_of(&[
            flow(WEB, "10.244.0.5", ("10.244.0.6", 5432), 6),
            flow(WEB, "10.244.0.5", ("10.96.0.10", 53), 17),
            flow(WEB, "10.244.0.5", ("203.0.113.10", 443), 6),
            flow(WEB, "10.244.0.5", ("169.254.169.254", 80), 6),
        ])
    }

    fn policies() -> PolicySet {
        let (graph, inventory) = shop_graph();
        generate(&graph, &inventory, &GenerateOptions::default()).unwrap()
    }

    fn policy<'a>(set: &'a PolicySet, namespace: &str, name: &str) -> &'a NetworkPolicy {
        set.by_namespace[namespace]
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no policy {namespace}/{name}"))
    }

    /// Edges are replayed in runs on every core: a report made one edge per
    /// run is the report made in one run, verdicts in the graph's order.
    #[test]
    fn verify_reports_the_same_whatever_the_runs() {
        let (graph, inventory) = shop_graph();
        let set = policies();
        // Without data's workload policy, web -> db is blocked.
        let kept = set
            .by_namespace
            .into_iter()
            .flat_map(|(namespace, policies)| {
                policies.into_iter().filter(move |policy| {
                    namespace != "data" || policy.metadata.name.as_deref() == Some("default-deny")
                })
            });
        let policies = crate::policy::evaluate::Policies::from_network_policies(kept);
        let whole =
            crate::policy::verify::verify_in_runs(&graph, &policies, &inventory, true, 4096);
        let single = crate::policy::verify::verify_in_runs(&graph, &policies, &inventory, true, 1);
        assert_eq!(whole.edges, 4);
        assert_eq!(whole.blocked.len(), 1, "{whole:#?}");
        assert_eq!(whole.metadata_contacts.len(), 1, "{whole:#?}");
        assert_eq!(whole.verdicts, single.verdicts);
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            serde_json::to_string(&single).unwrap()
        );
    }

    #[test]
    fn every_namespace_gets_default_deny_and_dns() {
        let set = policies();
        assert_eq!(
            set.by_namespace.keys().collect::<Vec<_>>(),
            vec!["data", "shop"]
        );
        for namespace in ["data", "shop"] {
            let deny = policy(&set, namespace, "default-deny")
                .spec
                .clone()
                .unwrap();
            assert_eq!(deny.pod_selector, Some(LabelSelector::default()));
            assert_eq!(
                deny.policy_types,
                Some(vec!["Ingress".to_string(), "Egress".to_string()])
            );
            let dns = serde_json::to_value(policy(&set, namespace, "allow-dns")).unwrap();
            assert_eq!(
                dns["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"],
                serde_json::json!({"k8s-app": "kube-dns"})
            );
            assert_eq!(
                dns["spec"]["egress"][0]["ports"].as_array().unwrap().len(),
                2
            );
        }
    }

    #[test]
    fn peers_are_selected_by_workload_and_namespace_labels() {
        let set = policies();
        let web = serde_json::to_value(policy(&set, "shop", "allow-deployment-web")).unwrap();
        assert_eq!(
            web["spec"]["podSelector"]["matchLabels"],
            serde_json::json!({"app": "web"})
        );
        let egress = web["spec"]["egress"].as_array().unwrap();
        // db in another namespace, the external by /32; DNS is left to allow-dns.
        assert_eq!(egress.len(), 2, "{egress:#?}");
        let text = serde_json::to_string(&web).unwrap();
        assert!(text.contains(r#""namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"data"}},"podSelector":{"matchLabels":{"app":"db"}}"#), "{text}");
        assert!(
            text.contains(r#""ipBlock":{"cidr":"203.0.113.10/32"}"#),
            "{text}"
        );
        assert!(
            !text.contains("pod-template-hash") && !text.contains("169.254"),
            "{text}"
        );
        let db = serde_json::to_value(policy(&set, "data", "allow-statefulset-db")).unwrap();
        assert_eq!(
            db["spec"]["ingress"][0]["ports"][0],
            serde_json::json!({"port": 5432, "protocol": "TCP"})
        );
    }

    #[test]
    fn the_metadata_service_is_a_finding_never_an_allow() {
        let set = policies();
        assert_eq!(set.findings.len(), 1);
        assert_eq!(set.findings[0].kind, "metadata-service");
        assert_eq!(set.findings[0].workload, "shop/web");
    }

    #[test]
    fn link_local_and_every_metadata_address_are_findings_in_both_flavors() {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let web = "00000000-0000-0000-0000-000000000002";
        let mut graph = CommGraph::new();
        let contacts = [
            ("169.254.20.10", 53, 17),   // a node-local DNS cache
            ("169.254.170.2", 80, 6),    // ECS task credentials
            ("169.254.170.23", 80, 6),   // EKS Pod Identity
            ("169.254.169.252", 988, 6), // GKE metadata server
            ("100.100.100.200", 80, 6),  // Alibaba Cloud metadata
            ("fd00:ec2::23", 80, 6),     // AWS over IPv6
            ("fe80::1", 8080, 6),        // IPv6 link-local
        ];
        let flows: Vec<FlowRecord> = contacts
            .iter()
            .map(|(ip, port, protocol)| flow(web, "10.244.0.5", (ip, *port), *protocol))
            .collect();
        add_flows(&mut graph, &identity, &flows);
        let options = GenerateOptions::default();
        let kubernetes = generate(&graph, &inventory, &options).unwrap();
        let cilium = cilium::generate(&graph, &inventory, &options).unwrap();
        for (text, findings) in [
            (
                serde_json::to_string(&kubernetes.by_namespace).unwrap(),
                &kubernetes.findings,
            ),
            (
                serde_json::to_string(&cilium.by_namespace).unwrap(),
                &cilium.findings,
            ),
        ] {
            for (ip, _, _) in contacts {
                assert!(!text.contains(ip), "{ip} allowed: {text}");
            }
            assert!(
                !text.contains("169.254") && !text.contains("fe80"),
                "{text}"
            );
            let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
            assert_eq!(
                kinds.iter().filter(|k| **k == "metadata-service").count(),
                5,
                "{findings:#?}"
            );
            assert_eq!(
                kinds.iter().filter(|k| **k == "link-local").count(),
                2,
                "{findings:#?}"
            );
            // Each names the workload and the port.
            assert!(findings.iter().all(|f| f.workload == "shop/web"));
            assert!(
                findings
                    .iter()
                    .any(|f| f.detail.contains("169.254.169.252 tcp/988")),
                "{findings:#?}"
            );
        }
    }

    #[test]
    fn the_node_local_dns_cache_is_allowed_on_53_only_where_the_cluster_runs_it() {
        // The cluster runs NodeLocal DNSCache: its DaemonSet in kube-system.
        let text = INVENTORY.replacen(
            r#"{"kind":"Namespace","metadata":{"name":"shop"}},"#,
            r#"{"kind":"Namespace","metadata":{"name":"shop"}},
              {"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"node-local-dns","namespace":"kube-system","uid":"d1"}},
              {"kind":"Pod","metadata":{"name":"node-local-dns-x","namespace":"kube-system","uid":"n1","labels":{"k8s-app":"node-local-dns"},
                "ownerReferences":[{"apiVersion":"apps/v1","kind":"DaemonSet","name":"node-local-dns","uid":"d1","controller":true}]},
                "spec":{"hostNetwork":true,"containers":[{"name":"node-cache"}]},"status":{"podIP":"172.30.0.2"}},"#,
            1,
        );
        let inventory = Inventory::parse(&text).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let web = "00000000-0000-0000-0000-000000000002";
        let mut graph = CommGraph::new();
        let flows = [
            flow(web, "10.244.0.5", ("169.254.20.10", 53), 17),
            // The same address on another port: still link-local.
            flow(web, "10.244.0.5", ("169.254.20.10", 8080), 6),
        ];
        add_flows(&mut graph, &identity, &flows);
        let options = GenerateOptions::default();
        let kubernetes = generate(&graph, &inventory, &options).unwrap();
        let cilium = cilium::generate(&graph, &inventory, &options).unwrap();
        for (text, findings) in [
            (
                serde_json::to_string(&kubernetes.by_namespace).unwrap(),
                &kubernetes.findings,
            ),
            (
                serde_json::to_string(&cilium.by_namespace).unwrap(),
                &cilium.findings,
            ),
        ] {
            // Once, in the DNS allow (port 53), and nowhere else.
            assert_eq!(text.matches("169.254.20.10/32").count(), 1, "{text}");
            let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
            assert_eq!(kinds, vec!["link-local"], "{findings:#?}");
            assert!(findings[0].detail.contains("tcp/8080"), "{findings:#?}");
        }
        let allow_dns = serde_json::to_value(policy(&kubernetes, "shop", "allow-dns")).unwrap();
        assert_eq!(
            allow_dns["spec"]["egress"][0]["to"][1],
            serde_json::json!({"ipBlock": {"cidr": "169.254.20.10/32"}})
        );
    }

    #[test]
    fn every_policy_selects_exactly_its_workload() {
        // A Job whose pods carry only per-pod labels, a bare Pod with none,
        // and a Deployment whose selector also matches its canary's pods.
        let inventory = Inventory::parse(r#"{"kind":"List","items":[
          {"kind":"Namespace","metadata":{"name":"shop"}},
          {"kind":"Pod","metadata":{"name":"coredns-1","namespace":"kube-system","uid":"00000000-0000-0000-0000-000000000001","labels":{"k8s-app":"kube-dns"}},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.2"}},
          {"kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},
            "spec":{"clusterIP":"10.96.0.10","selector":{"k8s-app":"kube-dns"},"ports":[{"port":53,"protocol":"UDP"}]}},
          {"kind":"Pod","metadata":{"name":"batch-x","namespace":"shop","uid":"00000000-0000-0000-0000-00000000000a","labels":{"job-name":"batch","controller-uid":"u1"},
            "ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"batch","uid":"j","controller":true}]},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.10"}},
          {"kind":"Pod","metadata":{"name":"debug","namespace":"shop","uid":"00000000-0000-0000-0000-00000000000b"},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.11"}},
          {"kind":"Pod","metadata":{"name":"web-1","namespace":"shop","uid":"00000000-0000-0000-0000-00000000000c","labels":{"app":"web","pod-template-hash":"a"},
            "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-a","uid":"r1","controller":true}]},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.12"}},
          {"kind":"Pod","metadata":{"name":"canary-1","namespace":"shop","uid":"00000000-0000-0000-0000-00000000000d","labels":{"app":"web","track":"canary","pod-template-hash":"b"},
            "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"canary-b","uid":"r2","controller":true}]},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.13"}}
        ]}"#).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let uid = |last: char| format!("00000000-0000-0000-0000-00000000000{last}");
        let mut graph = CommGraph::new();
        add_flows(
            &mut graph,
            &identity,
            &[
                flow(&uid('a'), "10.244.0.10", ("10.244.0.13", 8080), 6), // job -> canary
                flow(&uid('b'), "10.244.0.11", ("10.244.0.13", 8080), 6), // bare pod -> canary
                flow(&uid('d'), "10.244.0.13", ("10.244.0.12", 80), 6),   // canary -> web
                flow(&uid('d'), "10.244.0.13", ("203.0.113.10", 443), 6), // canary -> external
            ],
        );
        let options = GenerateOptions::default();
        let kubernetes = generate(&graph, &inventory, &options).unwrap();
        let cilium = cilium::generate(&graph, &inventory, &options).unwrap();
        let names: Vec<String> = kubernetes.by_namespace["shop"]
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        // Only the canary, whose selector names its own pods alone, gets a policy.
        assert_eq!(
            names,
            vec!["default-deny", "allow-dns", "allow-deployment-canary"],
            "{names:?}"
        );
        let canary =
            serde_json::to_value(policy(&kubernetes, "shop", "allow-deployment-canary")).unwrap();
        assert_eq!(
            canary["spec"]["podSelector"]["matchLabels"],
            serde_json::json!({"app": "web", "track": "canary"})
        );
        // Its peers that no selector names alone are not allowed either.
        assert!(
            canary["spec"]["ingress"].as_array().unwrap().is_empty(),
            "{canary:#}"
        );
        let egress = canary["spec"]["egress"].to_string();
        assert!(
            egress.contains("203.0.113.10/32") && !egress.contains("\"web\"}"),
            "{egress}"
        );
        for findings in [&kubernetes.findings, &cilium.findings] {
            let count = |kind: &str| findings.iter().filter(|f| f.kind == kind).count();
            assert_eq!(count("unselectable-workload"), 3, "{findings:#?}");
            assert_eq!(count("unselectable-peer"), 3, "{findings:#?}");
            assert!(
                findings
                    .iter()
                    .any(|f| f.workload == "shop/web"
                        && f.detail.contains("also selects pod canary-1")),
                "{findings:#?}"
            );
        }
        let cilium_names: Vec<String> = cilium.by_namespace["shop"]
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(cilium_names, names);
    }

    #[test]
    fn a_client_over_its_edge_budget_is_a_finding() {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let web = "00000000-0000-0000-0000-000000000002";
        let mut graph = CommGraph::new();
        let scan: Vec<FlowRecord> = (1..=5)
            .map(|n| flow(web, "10.244.0.5", (&format!("203.0.113.{n}"), 443), 6))
            .collect();
        add_flows(&mut graph, &identity, &scan);
        let dropped = graph.cap_per_client(2);
        assert_eq!(dropped, 3);
        let set = generate(&graph, &inventory, &GenerateOptions::default()).unwrap();
        let budget: Vec<&Finding> = set
            .findings
            .iter()
            .filter(|f| f.kind == "edge-budget")
            .collect();
        assert_eq!(budget.len(), 1, "{:#?}", set.findings);
        assert_eq!(budget[0].workload, "shop/web");
        assert!(
            budget[0].detail.starts_with("3 of its edges"),
            "{budget:#?}"
        );
    }

    #[test]
    fn traffic_that_never_connected_is_never_allowed() {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let web = "00000000-0000-0000-0000-000000000002";
        let refused = |remote: (&str, u16), protocol: u8| {
            let mut flow = flow(web, "10.244.0.5", remote, protocol);
            flow.handshake = if protocol == 6 {
                crate::model::Handshake::Refused
            } else {
                crate::model::Handshake::OneWay
            };
            flow.newly_established = false;
            flow
        };
        // db answered on 5432; ten more ports of db refused (a scan), and a
        // one-way UDP stream to an external collector.
        let mut flows = vec![flow(web, "10.244.0.5", ("10.244.0.6", 5432), 6)];
        flows.extend((1..=10).map(|n| refused(("10.244.0.6", 6000 + n), 6)));
        flows.push(refused(("203.0.113.9", 8125), 17));
        let mut graph = CommGraph::new();
        add_flows(&mut graph, &identity, &flows);
        let set = generate(&graph, &inventory, &GenerateOptions::default()).unwrap();
        let text = serde_json::to_string(&set.by_namespace).unwrap();
        assert!(
            text.contains("5432"),
            "the answered edge is allowed: {text}"
        );
        assert!(!text.contains("600") && !text.contains("8125"), "{text}");
        let count = |kind: &str| set.findings.iter().filter(|f| f.kind == kind).count();
        // Each unanswered edge, seen from both of its workloads (the UDP one
        // only from web: its peer is external).
        assert_eq!(count("never-connected"), 21, "{:#?}", set.findings);
        let scan: Vec<&Finding> = set.findings.iter().filter(|f| f.kind == "scan").collect();
        assert_eq!(scan.len(), 1, "{:#?}", set.findings);
        assert_eq!(scan[0].workload, "shop/web");
        // Fire-and-forget UDP only when asked.
        let options = GenerateOptions {
            allow_one_way_udp: true,
            ..GenerateOptions::default()
        };
        let text =
            serde_json::to_string(&generate(&graph, &inventory, &options).unwrap().by_namespace)
                .unwrap();
        assert!(
            text.contains("203.0.113.9/32") && !text.contains("6001"),
            "{text}"
        );
    }

    #[test]
    fn sctp_edges_become_sctp_rules_that_verify_allows() {
        let (graph, inventory) = graph_of(&[
            flow(WEB, "10.244.0.5", ("10.244.0.6", 3868), PROTO_SCTP),
            flow(WEB, "10.244.0.5", ("10.244.0.6", 0), 1),
        ]);
        let set = generate(&graph, &inventory, &GenerateOptions::default()).unwrap();
        let text = serde_json::to_string(&set.by_namespace).unwrap();
        assert!(
            text.contains(r#""port":3868,"protocol":"SCTP""#) && !text.contains("132"),
            "{text}"
        );
        assert!(
            set.findings.iter().any(|f| f.kind == "unnamed-protocol"),
            "{:#?}",
            set.findings
        );
        let policies = crate::policy::evaluate::Policies::from_network_policies(
            set.by_namespace.into_values().flatten(),
        );
        let report = crate::policy::verify::verify(&graph, &policies, &inventory);
        // The SCTP edge is checked and allowed; the ICMP one was not
        // allowed, and is reported blocked.
        assert_eq!(report.allowed, 1, "{:#?}", report.blocked);
        assert_eq!(report.blocked.len(), 1);
        assert_eq!(report.blocked[0].edge, "shop/web -> data/db 1/0");
    }

    /// `policies()`'s graph, generated with a cluster baseline, written and
    /// read back as `policy verify` reads a directory.
    fn baseline_round_trip(
        mode: ClusterBaseline,
    ) -> (PolicySet, crate::policy::verify::VerifyReport) {
        let (graph, inventory) = shop_graph();
        let options = GenerateOptions {
            cluster_baseline: mode,
            ..GenerateOptions::default()
        };
        let set = generate(&graph, &inventory, &options).unwrap();
        let dir =
            std::env::temp_dir().join(format!("netflow-baseline-{}-{mode:?}", std::process::id()));
        crate::policy::write::write_dir(&set, &dir).unwrap();
        let policies = crate::policy::evaluate::load_policy_set(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(policies.cluster_wide.len(), 2, "{mode:?}");
        (
            set,
            crate::policy::verify::verify(&graph, &policies, &inventory),
        )
    }

    #[test]
    fn a_cluster_baseline_takes_the_default_deny_dns_and_metadata_rules() {
        for mode in [
            ClusterBaseline::ClusterNetworkPolicy,
            ClusterBaseline::AdminNetworkPolicy,
        ] {
            let (set, report) = baseline_round_trip(mode);
            // Every observed edge still passes; the metadata service does not.
            assert!(report.blocked.is_empty(), "{mode:?}: {:#?}", report.blocked);
            assert_eq!(report.metadata_contacts.len(), 1);
            // Namespaces keep an ingress default-deny and their allows; the
            // DNS allow and egress default-deny are the cluster's.
            for policies in set.by_namespace.values() {
                let names: Vec<&str> = policies
                    .iter()
                    .filter_map(|p| p.metadata.name.as_deref())
                    .collect();
                assert!(!names.contains(&"allow-dns"), "{names:?}");
                let deny = policies
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some("default-deny"))
                    .unwrap();
                assert_eq!(
                    deny.spec.as_ref().unwrap().policy_types,
                    Some(vec!["Ingress".to_string()])
                );
            }
            let admin = serde_json::to_string(&set.admin_tier).unwrap();
            assert!(
                admin.contains("169.254.169.254/32") && admin.contains("fd00:ec2::254/128"),
                "{admin}"
            );
            assert!(admin.contains(r#""k8s-app":"kube-dns""#), "{admin}");
            let baseline = serde_json::to_string(&set.baseline_tier).unwrap();
            assert!(
                baseline.contains("0.0.0.0/0") && baseline.contains("::/0"),
                "{baseline}"
            );
            // System namespaces stay out by selector.
            assert!(
                baseline.contains(r#""operator":"NotIn","values":["kube-system""#),
                "{baseline}"
            );
        }
        let (set, _) = baseline_round_trip(ClusterBaseline::AdminNetworkPolicy);
        let baseline = serde_json::to_value(&set.baseline_tier).unwrap();
        assert_eq!(baseline[0]["kind"], "BaselineAdminNetworkPolicy");
        assert_eq!(baseline[0]["metadata"]["name"], "default");
    }

    #[test]
    fn the_cilium_flavor_refuses_a_cluster_baseline() {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let options = GenerateOptions {
            cluster_baseline: ClusterBaseline::ClusterNetworkPolicy,
            ..GenerateOptions::default()
        };
        let err = cilium::generate(&CommGraph::new(), &inventory, &options).unwrap_err();
        assert!(err.to_string().contains("--flavor kubernetes"), "{err}");
    }

    #[test]
    fn a_name_belongs_to_the_workload_that_resolved_it() {
        use crate::{
            identity::{dns_servers, names_by_client, trusted_names},
            model::DnsAnswer,
        };
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let web = "00000000-0000-0000-0000-000000000002";
        let db = "00000000-0000-0000-0000-000000000003";
        // web asked the cluster DNS for api.example; db never did.
        let answers = [DnsAnswer {
            name: "api.example".into(),
            ip: "203.0.113.10".parse().unwrap(),
            server: Some("10.96.0.10".parse().unwrap()),
            client: Some(format!("/kubepods/pod{web}/0123456789abcdef")),
        }];
        let servers = dns_servers(&inventory, &[]);
        let (dns, _) = trusted_names(&answers, &servers);
        let (by_client, over_cap) = names_by_client(&inventory, &answers, &servers);
        assert_eq!(over_cap, 0);
        let identity = Identity::new(&inventory, &dns).with_client_names(&by_client);
        let mut graph = CommGraph::new();
        add_flows(
            &mut graph,
            &identity,
            &[
                flow(web, "10.244.0.5", ("203.0.113.10", 443), 6),
                flow(db, "10.244.0.6", ("203.0.113.10", 443), 6),
            ],
        );
        let set = cilium::generate(&graph, &inventory, &GenerateOptions::default()).unwrap();
        let text = |namespace: &str, name: &str| {
            let policy = set.by_namespace[namespace]
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
                .unwrap();
            // The rules (the evidence annotation shows the address's
            // display name, which is not a grant).
            serde_json::to_string(&policy.spec).unwrap()
        };
        let web_policy = text("shop", "allow-deployment-web");
        assert!(web_policy.contains("api.example"), "{web_policy}");
        let db_policy = text("data", "allow-statefulset-db");
        assert!(!db_policy.contains("api.example"), "{db_policy}");
        assert!(db_policy.contains("203.0.113.10/32"), "{db_policy}");
    }

    #[test]
    fn output_is_deterministic_and_valid_yaml() {
        let first = to_yaml(&policies().by_namespace["shop"]).unwrap();
        let second = to_yaml(&policies().by_namespace["shop"]).unwrap();
        assert_eq!(first, second);
        for document in first.split("---\n").filter(|d| !d.trim().is_empty()) {
            let value: serde_norway::Value = serde_norway::from_str(document).unwrap();
            assert_eq!(value["kind"], serde_norway::Value::from("NetworkPolicy"));
        }
    }

    fn policies_with(options: &GenerateOptions) -> PolicySet {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let web = "00000000-0000-0000-0000-000000000002";
        let mut graph = CommGraph::new();
        let mut rare = flow(web, "10.244.0.5", ("203.0.113.10", 443), 6);
        rare.first_seen = "2026-11-01T00:00:00Z".parse().unwrap();
        rare.last_seen = "2026-11-01T00:00:00Z".parse().unwrap();
        add_flows(
            &mut graph,
            &identity,
            &[flow(web, "10.244.0.5", ("10.244.0.6", 5432), 6), rare],
        );
        // A second connection to db: db's edge has 2, the external's 1.
        add_flows(
            &mut graph,
            &identity,
            &[flow(web, "10.244.0.5", ("10.244.0.6", 5432), 6)],
        );
        generate(&graph, &inventory, options).unwrap()
    }

    fn rendered(set: &PolicySet) -> String {
        set.by_namespace
            .values()
            .map(|p| to_yaml(p).unwrap())
            .collect()
    }

    #[test]
    fn options_narrow_what_is_generated() {
        let all = rendered(&policies_with(&GenerateOptions::default()));
        assert!(all.contains("203.0.113.10/32") && all.contains("namespace: data"));

        let only_shop = policies_with(&GenerateOptions {
            namespaces: ["shop".to_string()].into(),
            ..Default::default()
        });
        assert_eq!(
            only_shop.by_namespace.keys().collect::<Vec<_>>(),
            vec!["shop"]
        );

        let frequent = rendered(&policies_with(&GenerateOptions {
            min_connections: 2,
            ..Default::default()
        }));
        assert!(!frequent.contains("203.0.113.10/32") && frequent.contains("app: db"));

        let recent = rendered(&policies_with(&GenerateOptions {
            seen_after: 1_794_268_800,
            ..Default::default()
        }));
        assert!(
            !recent.contains("203.0.113.10/32"),
            "last seen 2026-11-01, before the cut"
        );

        let ingress_only = policies_with(&GenerateOptions {
            ingress_only: true,
            ..Default::default()
        });
        let text = rendered(&ingress_only);
        assert!(
            !text.contains("egress") && !text.contains("Egress") && !text.contains("allow-dns"),
            "{text}"
        );
        assert!(text.contains("allow-statefulset-db"));
    }

    #[test]
    fn system_namespaces_only_when_asked_and_then_dns_stays_open() {
        let inventory = Inventory::parse(INVENTORY).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        // coredns itself talks to the external (upstream DNS).
        let coredns = "00000000-0000-0000-0000-000000000001";
        add_flows(
            &mut graph,
            &identity,
            &[flow(coredns, "10.244.0.2", ("203.0.113.53", 53), 17)],
        );
        let default = generate(&graph, &inventory, &GenerateOptions::default()).unwrap();
        assert!(!default.by_namespace.contains_key("kube-system"));
        let included = generate(
            &graph,
            &inventory,
            &GenerateOptions {
                include_system: true,
                ..Default::default()
            },
        )
        .unwrap();
        let open = serde_json::to_value(policy(
            &included,
            "kube-system",
            "allow-dns-from-everywhere",
        ))
        .unwrap();
        assert_eq!(
            open["spec"]["ingress"][0]["from"][0]["namespaceSelector"],
            serde_json::json!({})
        );
        assert_eq!(
            open["spec"]["podSelector"]["matchLabels"],
            serde_json::json!({"k8s-app": "kube-dns"})
        );
    }

    #[test]
    fn without_a_cluster_dns_nothing_is_guessed() {
        let inventory = Inventory::parse(r#"{"items":[]}"#).unwrap();
        let err = generate(&CommGraph::new(), &inventory, &GenerateOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no cluster DNS"));
    }

    /// A flow of web to db's port that carried `calls` (one connection).
    fn http_flow(calls: &[(&str, &str)]) -> FlowRecord {
        let mut flow = flow(WEB, "10.244.0.5", ("10.244.0.6", 5432), 6);
        flow.http = calls
            .iter()
            .map(|(method, path)| crate::model::HttpRequest {
                method: method.to_string(),
                path: path.to_string(),
                host: None,
            })
            .collect();
        flow.http_connection = true;
        flow
    }

    fn l7_policies(graph: &CommGraph, inventory: &Inventory) -> crate::policy::evaluate::Policies {
        let options = GenerateOptions {
            l7_http: true,
            ..GenerateOptions::default()
        };
        let set = cilium::generate(graph, inventory, &options).unwrap();
        let mut policies = crate::policy::evaluate::Policies::default();
        policies.cilium = set.by_namespace.into_values().flatten().collect();
        policies
    }

    /// Cilium with L7: an all-HTTP port allows exactly its calls, as
    /// templates; verify passes the calls made and blocks one never made.
    #[test]
    fn l7_rules_allow_exactly_the_calls_seen() {
        let (graph, inventory) = graph_of(&[http_flow(&[
            ("GET", "/users/42"),
            ("GET", "/users/7"),
            ("POST", "/orders"),
        ])]);
        let policies = l7_policies(&graph, &inventory);
        let text = serde_json::to_string(&policies.cilium).unwrap();
        assert!(
            text.contains(r#""http":[{"method":"GET","path":"/users/[^/]+"},{"method":"POST","path":"/orders"}]"#),
            "{text}"
        );
        let report = crate::policy::verify::verify(&graph, &policies, &inventory);
        assert_eq!(
            (report.allowed, report.blocked.len()),
            (1, 0),
            "{:#?}",
            report.blocked
        );

        // The same policies, judged on a graph with one more call: blocked.
        let (later, _) = graph_of(&[
            http_flow(&[("GET", "/users/42")]),
            http_flow(&[("DELETE", "/users/42")]),
        ]);
        let report = crate::policy::verify::verify(&later, &policies, &inventory);
        assert_eq!(report.blocked.len(), 1, "{report:#?}");
        assert!(
            report.blocked[0].reason.contains("DELETE /users/42"),
            "{}",
            report.blocked[0].reason
        );
    }

    /// A port one of whose connections was not HTTP (TLS, a binary
    /// protocol) keeps its L4 rule; so does every port without --l7.
    #[test]
    fn a_port_not_all_http_keeps_l4_rules() {
        let mut plain = flow(WEB, "10.244.0.5", ("10.244.0.6", 5432), 6);
        plain.local.port = 40001;
        let (graph, inventory) = graph_of(&[http_flow(&[("GET", "/users/42")]), plain]);
        let text = serde_json::to_string(&l7_policies(&graph, &inventory).cilium).unwrap();
        assert!(!text.contains(r#""http""#), "{text}");
        let (graph, inventory) = graph_of(&[http_flow(&[("GET", "/users/42")])]);
        let set = cilium::generate(&graph, &inventory, &GenerateOptions::default()).unwrap();
        assert!(
            !serde_json::to_string(&set.by_namespace)
                .unwrap()
                .contains(r#""http""#)
        );
    }

    /// The Kubernetes flavor stays L3/L4 and names the calls it covers.
    #[test]
    fn networkpolicy_evidence_names_the_calls() {
        let (graph, inventory) = graph_of(&[http_flow(&[("GET", "/users/42")])]);
        let set = generate(
            &graph,
            &inventory,
            &GenerateOptions {
                l7_http: true,
                ..GenerateOptions::default()
            },
        )
        .unwrap();
        let text = serde_json::to_string(&set.by_namespace).unwrap();
        assert!(text.contains("http GET /users/[^/]+ (1)"), "{text}");
        assert!(!text.contains(r#""http":["#), "{text}");
    }

    /// Kubernetes refuses an object whose annotations pass 256 KiB: a hub
    /// with thousands of clients must still get a policy it accepts, its
    /// evidence cut at a whole line and saying how many edges it leaves out.
    #[test]
    fn evidence_of_a_busy_workload_stays_within_an_annotation() {
        let line = |client: usize| {
            format!(
                "ns/client-{client} tcp/5432 first 2026-11-20T09:59:58Z last 2026-11-20T09:59:59Z connections 1"
            )
        };
        let rule = |lines: std::ops::Range<usize>| Rule::<()> {
            peers: Vec::new(),
            ports: BTreeSet::new(),
            http: BTreeMap::new(),
            evidence: lines.map(line).collect::<Vec<_>>().join("\n"),
        };
        let rules = WorkloadRules {
            ingress: vec![rule(0..4000)],
            egress: vec![rule(4000..4010)],
        };
        let text = rules.evidence();
        assert!(text.len() <= EVIDENCE_BYTES, "{} bytes", text.len());
        let lines: Vec<&str> = text.lines().collect();
        let (last, kept) = lines.split_last().unwrap();
        assert!(kept.len() > 100);
        for (index, kept) in kept.iter().enumerate() {
            assert_eq!(*kept, format!("ingress[0]: {}", line(index)));
        }
        assert_eq!(
            *last,
            format!(
                "... and {} more edges (the annotation stays under {} KiB; the graph holds them all)",
                4010 - kept.len(),
                EVIDENCE_BYTES / 1024
            )
        );
        // A workload with a few edges keeps them all.
        let few = WorkloadRules {
            ingress: vec![rule(0..3)],
            egress: vec![rule(3..4)],
        };
        assert_eq!(few.evidence().lines().count(), 4);
        assert!(few.evidence().ends_with(&format!("egress[0]: {}", line(3))));
    }
}
