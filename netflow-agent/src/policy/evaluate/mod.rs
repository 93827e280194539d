//! What a policy set allows, for replaying traffic offline (`policy verify`,
//! the lab's checks). Both flavors add up: a connection is allowed when the
//! client's egress and the server's ingress both allow it.
//!
//! NetworkPolicy (`kubernetes`):
//! - A pod is isolated for a direction when a policy in its namespace selects
//!   it and has that direction in `policyTypes` (default: Ingress, plus Egress
//!   when the policy has egress rules). A pod no policy isolates allows all.
//! - An isolated pod allows what any selecting policy's rule allows (rules add
//!   up). A rule with no or empty `from`/`to` matches every peer; with no or
//!   empty `ports` every port.
//! - A peer with only `podSelector` means pods in the policy's namespace; only
//!   `namespaceSelector`, every pod in matching namespaces; both in one peer,
//!   matching pods in matching namespaces; `ipBlock`, addresses in the CIDR
//!   and not in `except` -- pod IPs included, as the conformance tests
//!   expect. Every namespace carries `kubernetes.io/metadata.name`.
//! - Ports: protocol defaults to TCP; a named port is the server's container
//!   port of that name *and* the rule's protocol; `endPort` makes an
//!   inclusive range. SCTP is a protocol of its own.
//!
//! CiliumNetworkPolicy (`cilium`): the subset `policy::cilium` models (see
//! there); a policy using more is refused when its file is read (`files`).
//!
//! The cluster-wide tiers (`tiers`, network-policy-api): for each direction
//! the Admin tier decides first (Accept/Allow or Deny is final, Pass hands
//! over); then the namespaced policies above, final for the pods they
//! isolate; then the Baseline tier; then allow.

mod cilium;
mod document;
mod files;
mod kubernetes;
pub mod network_policy;
pub mod selector;
mod spec_reader;
mod tiers;
#[cfg(test)]
mod truth_tables;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

pub use files::{Policies, PolicyFileError, load_policy_objects, load_policy_set};
pub use kubernetes::{cidr_contains, matches};
pub use network_policy::CompiledNetworkPolicy;

use crate::{
    inventory::{Inventory, PodEntry},
    policy::{
        cilium::{self as cilium_types, CiliumNetworkPolicy},
        cluster_wide::{Action, Tier, TieredPolicy},
    },
};

/// One end of a connection being checked.
#[derive(Clone, Copy, Debug)]
pub enum End<'a> {
    Pod(&'a PodEntry),
    /// An address outside the pod network (a node, an external host).
    Address(IpAddr),
}

impl End<'_> {
    fn ip(&self) -> Option<IpAddr> {
        match self {
            End::Pod(pod) => pod.ips.first().copied(),
            End::Address(ip) => Some(*ip),
        }
    }
}

impl std::fmt::Display for End<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Pod(pod) => write!(f, "{}/{}", pod.namespace, pod.name),
            End::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a connection is refused, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied(String),
}

impl Verdict {
    /// Why it is denied; `None` when allowed.
    pub fn denied(self) -> Option<String> {
        match self {
            Verdict::Allowed => None,
            Verdict::Denied(reason) => Some(reason),
        }
    }
}

/// One direction of a connection, seen from `pod`.
struct Question<'a> {
    pod: &'a PodEntry,
    direction: Direction,
    peer: End<'a>,
    port: u16,
    protocol: &'a str,
    /// The pod whose container ports name the port (the server).
    port_owner: Option<&'a PodEntry>,
    /// An HTTP request on the connection, to judge by L7 rules too.
    request: Option<&'a HttpQuestion<'a>>,
}

/// An HTTP request to judge: its method and path (an observed one).
#[derive(Clone, Copy, Debug)]
pub struct HttpQuestion<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

impl Question<'_> {
    /// `ingress of ns/pod`, for reasons.
    fn side(&self) -> String {
        format!(
            "{} of {}/{}",
            self.direction.name(),
            self.pod.namespace,
            self.pod.name
        )
    }

    /// `tcp/5432 from ns/pod` (`tcp/80 GET /x to ...`), for reasons.
    fn traffic(&self) -> String {
        format!(
            "{}/{}{} {} {}",
            self.protocol.to_ascii_lowercase(),
            self.port,
            self.request
                .map(|request| format!(" {} {}", request.method, request.path))
                .unwrap_or_default(),
            match self.direction {
                Direction::Ingress => "from",
                Direction::Egress => "to",
            },
            self.peer
        )
    }
}

/// What allows one direction of a connection; named for people only when
/// displayed (a verify asks millions of questions and shows few answers).
enum Allowance<'p> {
    /// The pod's own node: policies cannot refuse it.
    OwnNode,
    /// A cluster-wide tier's rule (named), with its action.
    Tier(String, Action),
    /// No namespaced policy isolates the pod for the direction.
    Unisolated(Direction),
    NetworkPolicy(&'p CompiledNetworkPolicy),
    Cilium(&'p CiliumNetworkPolicy),
}

impl std::fmt::Display for Allowance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowance::OwnNode => f.write_str("the pod's own node (always allowed)"),
            Allowance::Tier(by, action) => write!(f, "{by} ({action:?})"),
            Allowance::Unisolated(direction) => {
                write!(f, "no policy isolates its {}", direction.name())
            }
            Allowance::NetworkPolicy(policy) => {
                write!(f, "NetworkPolicy {}/{}", policy.namespace, policy.name)
            }
            Allowance::Cilium(policy) => write!(
                f,
                "CiliumNetworkPolicy {}/{}",
                policy.metadata.namespace.as_deref().unwrap_or("default"),
                policy.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The index of this direction in `[ingress, egress]` pairs.
    fn side(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

pub struct Evaluator<'a> {
    policies: &'a [CompiledNetworkPolicy],
    cilium: &'a [CiliumNetworkPolicy],
    /// Admin and Baseline tier policies (network-policy-api).
    cluster_wide: &'a [TieredPolicy],
    /// Names the DNS gave for external addresses, for `toFQDNs`.
    dns: Option<&'a BTreeMap<IpAddr, BTreeSet<String>>>,
    inventory: &'a Inventory,
    /// The namespaced policies that select each inventory pod, worked out
    /// once: a check then looks only at them (the blast radius asks about
    /// every pair of pods). Keyed by the entry's address in the inventory:
    /// two entries may share a name (a pod replaced under the same name).
    selected: HashMap<usize, Selected<'a>, foldhash::fast::RandomState>,
}

/// One ingress rule's peers and its policy's namespace (see
/// [`Evaluator::ingress_peers`]).
pub type IngressPeers<'a> = (Option<&'a [network_policy::Peer]>, &'a str);

/// What selects one pod, per direction (`[ingress, egress]`).
#[derive(Clone)]
struct Selected<'a> {
    kubernetes: [Vec<&'a CompiledNetworkPolicy>; 2],
    cilium: [Vec<(&'a CiliumNetworkPolicy, &'a cilium_types::Rule)>; 2],
}

impl<'a> Evaluator<'a> {
    /// Every kind of a set, without DNS names for `toFQDNs`.
    pub fn new(policies: &'a Policies, inventory: &'a Inventory) -> Self {
        Self::index(policies, inventory, None)
    }

    /// Every kind of a set; `dns` names external addresses for `toFQDNs`.
    pub fn for_set(
        policies: &'a Policies,
        inventory: &'a Inventory,
        dns: &'a BTreeMap<IpAddr, BTreeSet<String>>,
    ) -> Self {
        Self::index(policies, inventory, Some(dns))
    }

    fn index(
        policies: &'a Policies,
        inventory: &'a Inventory,
        dns: Option<&'a BTreeMap<IpAddr, BTreeSet<String>>>,
    ) -> Self {
        let mut this = Self {
            policies: &policies.kubernetes,
            cilium: &policies.cilium,
            cluster_wide: &policies.cluster_wide,
            dns,
            inventory,
            selected: HashMap::default(),
        };
        // Policies by namespace first: a pod is selected only by its own
        // namespace's, and a cluster has thousands of namespaces.
        let mut kubernetes: HashMap<&str, Vec<&CompiledNetworkPolicy>> = HashMap::new();
        for policy in this.policies {
            kubernetes
                .entry(&policy.namespace)
                .or_default()
                .push(policy);
        }
        let mut cilium: HashMap<&str, Vec<&CiliumNetworkPolicy>> = HashMap::new();
        for policy in this.cilium {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
            cilium.entry(namespace).or_default().push(policy);
        }
        let none = (Vec::new(), Vec::new());
        for pod in &this.inventory.pods {
            let of_namespace = (
                kubernetes
                    .get(&*pod.namespace)
                    .unwrap_or(&none.0)
                    .as_slice(),
                cilium.get(&*pod.namespace).unwrap_or(&none.1).as_slice(),
            );
            let selected = Self::select_from(of_namespace, pod);
            this.selected
                .insert(std::ptr::from_ref(pod).addr(), selected);
        }
        this
    }

    /// What selects `pod`: from the index, or worked out for a pod the
    /// index does not hold (not from the inventory).
    fn selected_for(&self, pod: &PodEntry) -> std::borrow::Cow<'_, Selected<'a>> {
        match self.selected.get(&std::ptr::from_ref(pod).addr()) {
            Some(selected) => std::borrow::Cow::Borrowed(selected),
            None => std::borrow::Cow::Owned(self.select(pod)),
        }
    }

    /// What selects a pod the index does not hold (not from the inventory).
    fn select(&self, pod: &PodEntry) -> Selected<'a> {
        let kubernetes: Vec<&CompiledNetworkPolicy> = self.policies.iter().collect();
        let cilium: Vec<&CiliumNetworkPolicy> = self.cilium.iter().collect();
        Self::select_from((&kubernetes, &cilium), pod)
    }

    fn select_from(
        (kubernetes, cilium): (&[&'a CompiledNetworkPolicy], &[&'a CiliumNetworkPolicy]),
        pod: &PodEntry,
    ) -> Selected<'a> {
        let directions = [Direction::Ingress, Direction::Egress];
        Selected {
            kubernetes: directions.map(|d| kubernetes::selecting(kubernetes, pod, d)),
            cilium: directions.map(|d| cilium::selecting(cilium, pod, d)),
        }
    }

    /// The peer lists (`from`) of the NetworkPolicy ingress rules that
    /// could admit a client to `pod` on `port`/`protocol`, each with its
    /// policy's namespace (`None` for a rule without `from`: any source);
    /// `None` when no NetworkPolicy isolates `pod` for ingress. A client no
    /// list names is refused by the namespaced policies on that port:
    /// counting the blast radius checks only the clients some list names.
    /// Meaningful for sets of NetworkPolicies alone (no Cilium policy, no
    /// tier).
    pub fn ingress_peers(
        &self,
        pod: &PodEntry,
        port: u16,
        protocol: &str,
    ) -> Option<Vec<IngressPeers<'a>>> {
        let selected = self.selected_for(pod);
        let policies = &selected.kubernetes[0];
        if policies.is_empty() {
            return None;
        }
        let mut peers = Vec::new();
        for policy in policies {
            for rule in policy.rules(Direction::Ingress) {
                if kubernetes::rule_admits_port(rule, port, protocol, Some(pod)) {
                    peers.push((rule.peers.as_deref(), policy.namespace.as_str()));
                }
            }
        }
        Some(peers)
    }

    /// Whether `client` may open a connection to `server` on `port`/`protocol`.
    pub fn check(&self, client: End<'_>, server: End<'_>, port: u16, protocol: &str) -> Verdict {
        self.check_request(client, server, port, protocol, None)
    }

    /// As [`Evaluator::check`], and with `request`, whether that HTTP
    /// request on the connection passes the L7 rules (Cilium's `http`):
    /// where every rule that allows the port lists requests, it must be
    /// one of them.
    pub fn check_request(
        &self,
        client: End<'_>,
        server: End<'_>,
        port: u16,
        protocol: &str,
        request: Option<&HttpQuestion<'_>>,
    ) -> Verdict {
        if let End::Pod(pod) = client
            && let Some(reason) =
                self.refused(pod, Direction::Egress, server, port, protocol, request)
        {
            return Verdict::Denied(reason);
        }
        if let End::Pod(pod) = server
            && let Some(reason) =
                self.refused(pod, Direction::Ingress, client, port, protocol, request)
        {
            return Verdict::Denied(reason);
        }
        Verdict::Allowed
    }

    fn reached_from_own_node(&self, pod: &PodEntry, peer: End<'_>) -> bool {
        let End::Address(ip) = peer else {
            return false;
        };
        self.inventory
            .node_by_ip(ip)
            .is_some_and(|node| pod.node.as_deref() == Some(node.name.as_str()))
    }

    /// `None` when `pod` allows `peer` in `direction`, else the reason.
    fn refused(
        &self,
        pod: &PodEntry,
        direction: Direction,
        peer: End<'_>,
        port: u16,
        protocol: &str,
        request: Option<&HttpQuestion<'_>>,
    ) -> Option<String> {
        self.decide(pod, direction, peer, port, protocol, request)
            .err()
    }

    /// What allows `peer` in `direction` at `pod` (`Ok`: the policy or
    /// rule that does, named for people when displayed), or why not
    /// (`Err`).
    fn decide(
        &self,
        pod: &PodEntry,
        direction: Direction,
        peer: End<'_>,
        port: u16,
        protocol: &str,
        request: Option<&HttpQuestion<'_>>,
    ) -> Result<Allowance<'a>, String> {
        if direction == Direction::Ingress && self.reached_from_own_node(pod, peer) {
            // Every implementation lets a pod's node reach it (kubelet
            // probes); policies cannot refuse it.
            return Ok(Allowance::OwnNode);
        }
        // For ingress the port is the pod's own; for egress the peer's.
        let port_owner = match direction {
            Direction::Ingress => Some(pod),
            Direction::Egress => match peer {
                End::Pod(peer) => Some(peer),
                End::Address(_) => None,
            },
        };
        let question = Question {
            pod,
            direction,
            peer,
            port,
            protocol,
            port_owner,
            request,
        };
        let tier = |tier| tiers::decide(self.cluster_wide, tier, self.inventory, &question);
        let denial = |by: &str| {
            format!(
                "{} is denied by {by} for {}",
                question.side(),
                question.traffic()
            )
        };
        // The Admin tier first: its Accept and Deny are final; Pass (or no
        // matching rule) hands over to NetworkPolicy.
        match tier(Tier::Admin) {
            Some((Action::Accept, by)) => return Ok(Allowance::Tier(by, Action::Accept)),
            Some((Action::Deny, by)) => return Err(denial(&by)),
            Some((Action::Pass, _)) | None => {}
        }
        let selected = self.selected_for(pod);
        let side = direction.side();
        let (selecting, cilium_selecting) = (&selected.kubernetes[side], &selected.cilium[side]);
        if selecting.is_empty() && cilium_selecting.is_empty() {
            // No namespaced policy isolates the pod: the Baseline tier
            // decides, and without a matching rule it is allowed.
            return match tier(Tier::Baseline) {
                Some((Action::Deny, by)) => Err(denial(&by)),
                Some((action, by)) => Ok(Allowance::Tier(by, action)),
                None => Ok(Allowance::Unisolated(direction)),
            };
        }
        let allowed_by_kubernetes = selecting.iter().find(|policy| {
            kubernetes::allows(
                policy,
                self.inventory,
                direction,
                peer,
                port,
                protocol,
                port_owner,
            )
        });
        let allowed_by_cilium = cilium_selecting.iter().find(|(policy, rule)| {
            let context = cilium::Context {
                inventory: self.inventory,
                dns: self.dns,
                namespace: policy.metadata.namespace.as_deref().unwrap_or("default"),
                port_owner,
            };
            cilium::allows(rule, &context, direction, peer, port, protocol, request)
        });
        if let Some(policy) = allowed_by_kubernetes {
            return Ok(Allowance::NetworkPolicy(policy));
        }
        if let Some((policy, _)) = allowed_by_cilium {
            return Ok(Allowance::Cilium(policy));
        }
        let mut names: Vec<String> = selecting
            .iter()
            .map(|p| p.name.clone())
            .chain(
                cilium_selecting
                    .iter()
                    .map(|(p, _)| p.metadata.name.clone().unwrap_or_default()),
            )
            .collect();
        names.dedup();
        Err(format!(
            "{} is isolated by {} and no rule allows {}",
            question.side(),
            names.join(", "),
            question.traffic()
        ))
    }

    /// What lets `client` reach `server` (each side's allowing policy or
    /// rule, egress first), or why it may not.
    pub fn explain(
        &self,
        client: End<'_>,
        server: End<'_>,
        port: u16,
        protocol: &str,
    ) -> Result<Vec<String>, String> {
        let mut by = Vec::new();
        if let End::Pod(pod) = client {
            by.push(format!(
                "egress: {}",
                self.decide(pod, Direction::Egress, server, port, protocol, None)?
            ));
        }
        if let End::Pod(pod) = server {
            by.push(format!(
                "ingress: {}",
                self.decide(pod, Direction::Ingress, client, port, protocol, None)?
            ));
        }
        Ok(by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pods: shop/web (app=web, named port http=8080), shop/api (app=api,
    /// port 9000), data/db (app=db, 5432), other/tool (app=tool).
    const INVENTORY: &str = r#"{"kind":"List","items":[
      {"kind":"Namespace","metadata":{"name":"shop","labels":{"team":"web"}}},
      {"kind":"Namespace","metadata":{"name":"data","labels":{"team":"data"}}},
      {"kind":"Namespace","metadata":{"name":"other"}},
      {"kind":"Pod","metadata":{"name":"web","namespace":"shop","uid":"1","labels":{"app":"web"}},
        "spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8080}]}]},"status":{"podIP":"10.0.0.1"}},
      {"kind":"Pod","metadata":{"name":"api","namespace":"shop","uid":"2","labels":{"app":"api"}},
        "spec":{"containers":[{"name":"c","ports":[{"containerPort":9000}]}]},"status":{"podIP":"10.0.0.2"}},
      {"kind":"Pod","metadata":{"name":"db","namespace":"data","uid":"3","labels":{"app":"db"}},
        "spec":{"containers":[{"name":"c","ports":[{"containerPort":5432}]}]},"status":{"podIP":"10.0.1.3"}},
      {"kind":"Pod","metadata":{"name":"tool","namespace":"other","uid":"4","labels":{"app":"tool"}},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.0.2.4"}}
    ]}"#;

    fn inventory() -> Inventory {
        Inventory::parse(INVENTORY).unwrap()
    }

    fn policies(yaml: &str) -> Policies {
        let dir = std::env::temp_dir().join(format!(
            "netflow-eval-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), yaml).unwrap();
        let loaded = load_policy_set(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        loaded
    }

    fn allowed(policies: &Policies, from: End<'_>, to: End<'_>, port: u16, protocol: &str) -> bool {
        Evaluator::new(policies, &inventory()).check(from, to, port, protocol) == Verdict::Allowed
    }

    fn pod<'a>(inventory: &'a Inventory, name: &str) -> End<'a> {
        End::Pod(inventory.pods.iter().find(|p| &*p.name == name).unwrap())
    }

    const HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n";

    #[test]
    fn no_policy_allows_everything_and_an_empty_selector_isolates_all() {
        let inv = inventory();
        assert!(allowed(
            &Policies::default(),
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        let deny = policies(&format!("{HEAD}spec: {{podSelector: {{}}}}\n"));
        assert!(!allowed(
            &deny,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &deny,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // policyTypes defaults to Ingress only: egress from web stays open.
        assert!(allowed(
            &deny,
            pod(&inv, "web"),
            pod(&inv, "db"),
            5432,
            "TCP"
        ));
    }

    #[test]
    fn an_empty_from_list_allows_all_and_no_from_too_but_no_rule_denies() {
        let inv = inventory();
        let empty_from = policies(&format!(
            "{HEAD}spec: {{podSelector: {{}}, ingress: [{{from: []}}]}}\n"
        ));
        assert!(allowed(
            &empty_from,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        let no_from = policies(&format!(
            "{HEAD}spec: {{podSelector: {{}}, ingress: [{{}}]}}\n"
        ));
        assert!(allowed(
            &no_from,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            1,
            "UDP"
        ));
        let no_rules = policies(&format!("{HEAD}spec: {{podSelector: {{}}, ingress: []}}\n"));
        assert!(!allowed(
            &no_rules,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
    }

    #[test]
    fn namespace_and_pod_selector_in_one_peer_is_and_in_two_peers_is_or() {
        let inv = inventory();
        let and = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: data}}}}\n      podSelector: {{matchLabels: {{app: tool}}}}\n"
        ));
        assert!(
            !allowed(&and, pod(&inv, "db"), pod(&inv, "web"), 8080, "TCP"),
            "db is in data but not app=tool"
        );
        assert!(
            !allowed(&and, pod(&inv, "tool"), pod(&inv, "web"), 8080, "TCP"),
            "tool is app=tool but not in data"
        );
        let or = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: data}}}}\n    - podSelector: {{matchLabels: {{app: api}}}}\n"
        ));
        assert!(allowed(&or, pod(&inv, "db"), pod(&inv, "web"), 8080, "TCP"));
        assert!(allowed(
            &or,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &or,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // A podSelector alone means the policy's own namespace.
        let same_ns = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: db}}}}}}]\n"
        ));
        assert!(!allowed(
            &same_ns,
            pod(&inv, "db"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // matchExpressions.
        let expressions = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchExpressions: [{{key: team, operator: Exists}}]}}}}]\n"
        ));
        assert!(allowed(
            &expressions,
            pod(&inv, "db"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &expressions,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
    }

    #[test]
    fn ip_blocks_honour_except() {
        let inv = inventory();
        let egress = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}}}]\n"
        ));
        let web = pod(&inv, "web");
        assert!(allowed(
            &egress,
            web,
            End::Address("203.0.113.10".parse().unwrap()),
            443,
            "TCP"
        ));
        assert!(!allowed(
            &egress,
            web,
            End::Address("169.254.169.254".parse().unwrap()),
            80,
            "TCP"
        ));
        assert!(
            !allowed(
                &egress,
                web,
                End::Address("fd00::1".parse().unwrap()),
                80,
                "TCP"
            ),
            "an IPv4 block is not IPv6"
        );
    }

    #[test]
    fn named_ports_end_ports_and_protocols() {
        let inv = inventory();
        let named = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - ports: [{{port: http}}]\n"
        ));
        assert!(allowed(
            &named,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &named,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8081,
            "TCP"
        ));
        assert!(
            !allowed(&named, pod(&inv, "api"), pod(&inv, "web"), 8080, "UDP"),
            "protocol defaults to TCP"
        );
        let range = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - ports: [{{port: 8000, endPort: 8100, protocol: TCP}}]\n"
        ));
        assert!(allowed(
            &range,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!allowed(
            &range,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8101,
            "TCP"
        ));
    }

    #[test]
    fn egress_needs_its_type_or_rules_and_both_sides_must_allow() {
        let inv = inventory();
        // egress rules without policyTypes: Egress is implied.
        let implied = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  egress:\n  - to: [{{podSelector: {{matchLabels: {{app: api}}}}}}]\n"
        ));
        assert!(allowed(
            &implied,
            pod(&inv, "web"),
            pod(&inv, "api"),
            9000,
            "TCP"
        ));
        assert!(!allowed(
            &implied,
            pod(&inv, "web"),
            pod(&inv, "db"),
            5432,
            "TCP"
        ));
        // The server's namespace isolates ingress: the client's egress is not enough.
        let both = policies(&format!(
            "{HEAD}spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  egress: [{{}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: d, namespace: data}}\nspec: {{podSelector: {{}}}}\n"
        ));
        assert!(!allowed(
            &both,
            pod(&inv, "web"),
            pod(&inv, "db"),
            5432,
            "TCP"
        ));
    }

    fn cilium(yaml: &str) -> Policies {
        let dir = std::env::temp_dir().join(format!(
            "netflow-eval-cilium-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.yaml"), yaml).unwrap();
        let loaded = load_policy_set(&dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        assert!(loaded.kubernetes.is_empty() && !loaded.cilium.is_empty());
        loaded
    }

    const CILIUM: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: shop}\n";

    #[test]
    fn cilium_rules_in_the_subset_netflow_writes() {
        let inv = inventory();
        let names = BTreeMap::from([(
            "203.0.113.10".parse::<IpAddr>().unwrap(),
            std::collections::BTreeSet::from(["api.example".to_string()]),
        )]);
        let check = |set: &Policies, from: End<'_>, to: End<'_>, port: u16, protocol: &str| {
            Evaluator::for_set(set, &inv, &names).check(from, to, port, protocol)
                == Verdict::Allowed
        };
        // `{}` only turns on default deny.
        let deny = cilium(&format!(
            "{CILIUM}spec: {{endpointSelector: {{}}, ingress: [{{}}]}}\n"
        ));
        assert!(!check(
            &deny,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(
            check(&deny, pod(&inv, "web"), pod(&inv, "db"), 5432, "TCP"),
            "egress untouched"
        );
        // Ports only: any peer on those ports.
        let ports = cilium(&format!(
            "{CILIUM}spec: {{endpointSelector: {{matchLabels: {{app: web}}}}, ingress: [{{toPorts: [{{ports: [{{port: '8080', protocol: TCP}}]}}]}}]}}\n"
        ));
        assert!(check(
            &ports,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!check(
            &ports,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8081,
            "TCP"
        ));
        // fromEndpoints: the policy's namespace unless the namespace label says otherwise.
        let endpoints = cilium(&format!(
            "{CILIUM}spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: api}}}}, {{matchLabels: {{app: db, k8s:io.kubernetes.pod.namespace: data}}}}]\n"
        ));
        assert!(check(
            &endpoints,
            pod(&inv, "api"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(check(
            &endpoints,
            pod(&inv, "db"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        assert!(!check(
            &endpoints,
            pod(&inv, "tool"),
            pod(&inv, "web"),
            8080,
            "TCP"
        ));
        // toFQDNs by the names the DNS gave; toCIDR; ANY protocol.
        let egress = cilium(&format!(
            "{CILIUM}spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  egress:\n  - toFQDNs: [{{matchName: api.example}}]\n    toPorts: [{{ports: [{{port: '443', protocol: ANY}}]}}]\n  - toCIDR: [198.51.100.0/24]\n"
        ));
        let web = pod(&inv, "web");
        assert!(check(
            &egress,
            web,
            End::Address("203.0.113.10".parse().unwrap()),
            443,
            "UDP"
        ));
        assert!(!check(
            &egress,
            web,
            End::Address("203.0.113.11".parse().unwrap()),
            443,
            "TCP"
        ));
        assert!(check(
            &egress,
            web,
            End::Address("198.51.100.7".parse().unwrap()),
            80,
            "TCP"
        ));
        assert!(!check(&egress, web, pod(&inv, "api"), 9000, "TCP"));
    }

    #[test]
    fn cilium_named_ports_ranges_and_specs() {
        let inv = inventory();
        let names = BTreeMap::new();
        let check = |set: &Policies, from: End<'_>, to: End<'_>, port: u16| {
            Evaluator::for_set(set, &inv, &names).check(from, to, port, "TCP") == Verdict::Allowed
        };
        // A named port is the server's container port of that name, not
        // every port (web names 8080 `http`).
        let named = cilium(&format!(
            "{CILIUM}spec: {{endpointSelector: {{matchLabels: {{app: web}}}}, ingress: [{{toPorts: [{{ports: [{{port: http, protocol: TCP}}]}}]}}]}}\n"
        ));
        assert!(check(&named, pod(&inv, "api"), pod(&inv, "web"), 8080));
        assert!(!check(&named, pod(&inv, "api"), pod(&inv, "web"), 9999));
        // endPort makes a range; `specs` rules count like `spec`.
        let ranged = cilium(&format!(
            "{CILIUM}specs:\n- endpointSelector: {{matchLabels: {{app: api}}}}\n  ingress: [{{toPorts: [{{ports: [{{port: '9000', endPort: 9100}}]}}]}}]\n"
        ));
        assert!(check(&ranged, pod(&inv, "web"), pod(&inv, "api"), 9050));
        assert!(!check(&ranged, pod(&inv, "web"), pod(&inv, "api"), 9101));
    }

    #[test]
    fn cilium_fields_netflow_cannot_judge_are_refused_by_file() {
        let dir = std::env::temp_dir().join(format!("netflow-eval-deny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("deny.yaml");
        std::fs::write(
            &path,
            format!("{CILIUM}spec: {{endpointSelector: {{}}, ingressDeny: [{{fromEntities: [world]}}]}}\n"),
        )
        .unwrap();
        let err = load_policy_set(&path).unwrap_err().to_string();
        assert!(
            err.contains("deny.yaml")
                && err.contains("CiliumNetworkPolicy")
                && err.contains("ingressDeny"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Files are read in parallel: the set comes back in file order, and
    /// of several bad files the first (in that order) is the one named.
    #[test]
    fn a_directory_reads_in_file_order_and_names_its_first_bad_file() {
        let dir = std::env::temp_dir().join(format!("netflow-eval-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = |name: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{podSelector: {{matchLabels: {{app: web}}}}}}\n"
            )
        };
        let names: Vec<String> = (0..40).map(|n| format!("p{n:02}")).collect();
        for name in &names {
            let text = format!("{}---\n{}", policy(name), policy(&format!("{name}b")));
            std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
        }
        let set = load_policy_set(&dir).unwrap();
        let read: Vec<&str> = set.kubernetes.iter().map(|p| p.name.as_str()).collect();
        let expected: Vec<String> = names
            .iter()
            .flat_map(|name| [name.clone(), format!("{name}b")])
            .collect();
        assert_eq!(read, expected);
        for bad in ["p31", "p07", "p20"] {
            std::fs::write(dir.join(format!("{bad}.yaml")), "kind: [\n").unwrap();
        }
        let err = load_policy_set(&dir).unwrap_err().to_string();
        assert!(err.contains("p07.yaml"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_policy_files_are_named() {
        let dir = std::env::temp_dir().join(format!("netflow-eval-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text, expected) in [
            ("broken.yaml", "kind: [", "is not valid YAML"),
            (
                "cilium.yaml",
                "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n",
                "CiliumClusterwideNetworkPolicy",
            ),
            (
                "wrong.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: {podSelector: 7}\n",
                "not a valid NetworkPolicy",
            ),
            (
                "unclosed.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: [\n",
                "is not valid YAML",
            ),
            (
                "kindlast.yaml",
                "spec: {podSelector: 7}\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n",
                "not a valid NetworkPolicy",
            ),
            (
                "second.yaml",
                "kind: List\nitems: []\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: [x]}\n",
                "document 1 is not a valid NetworkPolicy",
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let err = load_policy_set(&path).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains(expected),
                "{name}: {err}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn long_peer_lists_decide_as_a_scan_would() {
        // A pod of two labels, besides the inventory's pods of one.
        let two_labels = r#"{"kind":"Pod","metadata":{"name":"web2","namespace":"shop","uid":"5","labels":{"app":"web","zone":"a"}},"spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.0.0.5"}},"#;
        let inv = Inventory::parse(&INVENTORY.replacen(
            r#"{"kind":"Pod","#,
            &format!("{two_labels}{{\"kind\":\"Pod\","),
            1,
        ))
        .unwrap();
        let forms = [
            "{podSelector: {matchLabels: {app: db}}}",
            "{podSelector: {}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchLabels: {app: web}}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop, team: web}}}",
            "{namespaceSelector: {matchLabels: {team: web}}}",
            "{namespaceSelector: {}}",
            "{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [other]}]}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}}",
            "{ipBlock: {cidr: 10.0.0.0/24}}",
            // Pod selectors of several labels, with expressions, or of a
            // label no pod has:
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchLabels: {app: web, zone: a}}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchLabels: {app: api}, matchExpressions: [{key: app, operator: NotIn, values: [web]}]}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchExpressions: [{key: app, operator: In, values: [web, db]}]}}",
            "{podSelector: {matchLabels: {build: x}}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchLabels: {zone: a}}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchLabels: {app: web, zone: b}}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}, podSelector: {matchLabels: {app: api, zone: a}}}",
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}, podSelector: {matchLabels: {app: tool}}}",
        ];
        let fillers: Vec<String> = (0..8)
            .map(|n| {
                format!(
                    "{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: ns{n}}}}}, podSelector: {{matchLabels: {{app: a{n}}}}}}}"
                )
            })
            .collect();
        let lists: Vec<Vec<&str>> = forms
            .iter()
            .map(|form| vec![*form])
            .chain(std::iter::once(forms.to_vec()))
            .collect();
        let clients = [
            pod(&inv, "web"),
            pod(&inv, "web2"),
            pod(&inv, "api"),
            pod(&inv, "tool"),
            pod(&inv, "db"),
            End::Address("10.0.0.9".parse().unwrap()),
            End::Address("192.0.2.1".parse().unwrap()),
        ];
        for list in lists {
            let peers: Vec<&str> = list
                .iter()
                .copied()
                .chain(fillers.iter().map(String::as_str))
                .collect();
            let yaml = format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: data}}\nspec: {{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{from: [{}], ports: [{{port: 5432}}]}}]}}\n",
                peers.join(", ")
            );
            let set = policies(&yaml);
            let indexed = Evaluator::new(&set, &inv);
            let indexes = set.kubernetes[0]
                .rules(Direction::Ingress)
                .iter()
                .filter(|rule| rule.index.is_some())
                .count();
            assert_eq!(indexes, 1, "{yaml}");
            let mut unindexed = policies(&yaml);
            unindexed.kubernetes[0].unindexed();
            let scanned = Evaluator::new(&unindexed, &inv);
            for client in clients {
                let server = pod(&inv, "db");
                assert_eq!(
                    indexed.check(client, server, 5432, "TCP"),
                    scanned.check(client, server, 5432, "TCP"),
                    "{list:?} from {client:?}"
                );
            }
        }
    }
}
