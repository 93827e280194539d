//! A NetworkPolicy as the evaluator reads it: its defaults resolved
//! (`policyTypes`, the namespace, empty lists meaning "any"), its selectors
//! shared ([`SelectorInterner`]), and long peer lists indexed by the one
//! namespace each peer names, then by the first label it requires. Made once when a policy is read; the typed
//! object is kept only when something will write it out again (`apply`).

use std::collections::HashMap;

use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    Direction,
    selector::{Selector, SelectorInterner},
};
use crate::{
    inventory::{NAMESPACE_NAME_LABEL, PodEntry},
    model::LabelMap,
};

#[derive(Debug)]
pub struct CompiledNetworkPolicy {
    pub namespace: String,
    pub name: String,
    /// `None`: every pod of the namespace (no `podSelector`).
    pub pod_selector: Option<Selector>,
    /// Whether it isolates its pods for `[ingress, egress]`.
    isolates: [bool; 2],
    /// The rules for `[ingress, egress]`.
    rules: [Vec<Rule>; 2],
}

/// One `ingress` or `egress` rule.
#[derive(Debug)]
pub struct Rule {
    /// `None`: any peer (no or an empty `from`/`to`).
    pub peers: Option<Vec<Peer>>,
    /// `None`: any port (no or an empty `ports`).
    pub ports: Option<Vec<Port>>,
    /// For long peer lists: their peers by the one namespace they name.
    pub index: Option<PeerIndex>,
}

#[derive(Debug)]
pub enum Peer {
    /// `ipBlock`.
    Addresses(Box<AddressBlock>),
    /// `namespaceSelector` and/or `podSelector`; `None` where omitted.
    Pods {
        namespaces: Option<Selector>,
        pods: Option<Selector>,
    },
}

#[derive(Debug)]
pub struct AddressBlock {
    pub cidr: String,
    pub except: Vec<String>,
}

#[derive(Debug)]
pub struct Port {
    /// Upper case, as written (default TCP).
    pub protocol: Box<str>,
    pub port: Option<PortRef>,
    pub end_port: Option<i32>,
}

#[derive(Debug)]
pub enum PortRef {
    Number(i32),
    /// A container port's name, looked up on the server.
    Name(Box<str>),
}

/// A peer list's peers (positions in it) by the one namespace each can
/// name, then by a label each requires. A generated policy for a busy
/// server lists a peer per client workload, thousands of them: a check
/// looks only at those that could select the client.
#[derive(Debug)]
pub struct PeerIndex {
    /// Peers that name pods of one namespace only: without a
    /// namespaceSelector (the policy's own) or with exactly
    /// `kubernetes.io/metadata.name: NAME`.
    pub by_namespace: HashMap<Box<str>, NamespacePeers, foldhash::fast::RandomState>,
    /// Every other peer (ipBlocks, other namespace selectors).
    pub others: Vec<usize>,
}

/// The peers that name pods of one namespace: first those whose pod
/// selector requires no label (none, `{}`, or `matchExpressions` only),
/// then the others in the order of the first label each requires (the
/// first of its `matchLabels`), so that only those requiring a label a pod
/// has are looked at.
#[derive(Debug, Default)]
pub struct NamespacePeers {
    positions: Vec<usize>,
    unlabeled: usize,
}

/// The first label `peer`'s pod selector requires.
fn first_label(peer: &Peer) -> Option<(&str, &str)> {
    match peer {
        Peer::Pods {
            pods: Some(selector),
            ..
        } => selector.match_labels().next(),
        _ => None,
    }
}

impl NamespacePeers {
    /// Puts the positions in their order (once every peer is in).
    fn sort(&mut self, peers: &[Peer]) {
        self.positions
            .sort_by_key(|&position| first_label(&peers[position]));
        self.unlabeled = self
            .positions
            .partition_point(|&position| first_label(&peers[position]).is_none());
    }

    /// Whether one of `peers` that could select a pod with `labels` does
    /// (`matches`, given a position).
    fn any(
        &self,
        peers: &[Peer],
        labels: &LabelMap,
        matches: &mut impl FnMut(usize) -> bool,
    ) -> bool {
        let (unlabeled, labeled) = self.positions.split_at(self.unlabeled);
        unlabeled.iter().any(|&position| matches(position))
            || labels.iter().any(|(key, value)| {
                let wanted = Some((key.as_str(), value.as_str()));
                let start = labeled.partition_point(|&p| first_label(&peers[p]) < wanted);
                labeled[start..]
                    .iter()
                    .take_while(|&&p| first_label(&peers[p]) == wanted)
                    .any(|&position| matches(position))
            })
    }
}

/// Peer lists shorter than this are scanned as they are.
const INDEXED_PEER_LISTS: usize = 8;

/// A NetworkPolicy's `spec` as read, its selectors interned: the policy's
/// namespace (which indexes its peers) may come after it.
#[derive(Debug, Default)]
pub struct SpecParts {
    pub pod_selector: Option<Selector>,
    pub policy_types: Option<Vec<String>>,
    /// The `[ingress, egress]` rules.
    pub rules: [Vec<RuleParts>; 2],
}

/// One rule as read: its `from`/`to` and its `ports`.
#[derive(Debug, Default)]
pub struct RuleParts {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<Port>>,
}

impl CompiledNetworkPolicy {
    pub fn compile(policy: &NetworkPolicy, selectors: &mut SelectorInterner) -> Self {
        let spec = policy.spec.as_ref().map(|spec| {
            let ingress = spec
                .ingress
                .iter()
                .flatten()
                .map(|rule| {
                    RuleParts::compile(rule.from.as_deref(), rule.ports.as_deref(), selectors)
                })
                .collect();
            let egress = spec
                .egress
                .iter()
                .flatten()
                .map(|rule| {
                    RuleParts::compile(rule.to.as_deref(), rule.ports.as_deref(), selectors)
                })
                .collect();
            SpecParts {
                pod_selector: spec
                    .pod_selector
                    .as_ref()
                    .map(|selector| selectors.intern(selector)),
                policy_types: spec.policy_types.clone(),
                rules: [ingress, egress],
            }
        });
        Self::from_parts(
            policy.metadata.namespace.clone(),
            policy.metadata.name.clone(),
            spec,
        )
    }

    /// The policy of these parts, its defaults resolved.
    pub fn from_parts(
        namespace: Option<String>,
        name: Option<String>,
        spec: Option<SpecParts>,
    ) -> Self {
        let namespace = namespace.unwrap_or_else(|| "default".into());
        let name = name.unwrap_or_default();
        let Some(spec) = spec else {
            // Without a spec a policy selects nothing it could allow.
            return Self {
                namespace,
                name,
                pod_selector: None,
                isolates: [false; 2],
                rules: [Vec::new(), Vec::new()],
            };
        };
        let [ingress, egress] = spec.rules.map(|rules| {
            rules
                .into_iter()
                .map(|rule| Rule::new(rule, &namespace))
                .collect::<Vec<_>>()
        });
        let isolates = match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => [
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            ],
            // The API server's default for an omitted or empty list: Ingress
            // always, Egress when there is at least one egress rule
            // (`egress: []` is none).
            _ => [true, !egress.is_empty()],
        };
        Self {
            pod_selector: spec.pod_selector,
            namespace,
            name,
            isolates,
            rules: [ingress, egress],
        }
    }

    pub(super) fn isolates(&self, direction: Direction) -> bool {
        self.isolates[direction.side()]
    }

    pub(super) fn rules(&self, direction: Direction) -> &[Rule] {
        &self.rules[direction.side()]
    }

    /// Drops the peer indexes: every peer list is scanned (to hold the
    /// indexes to the scan's verdicts).
    #[cfg(test)]
    pub(super) fn unindexed(&mut self) {
        for rule in self.rules.iter_mut().flatten() {
            rule.index = None;
        }
    }

    /// Every peer of every rule.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.rules
            .iter()
            .flatten()
            .flat_map(|rule| rule.peers.iter().flatten())
    }
}

impl RuleParts {
    fn compile(
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        selectors: &mut SelectorInterner,
    ) -> Self {
        RuleParts {
            peers: peers.map(|peers| {
                peers
                    .iter()
                    .map(|peer| Peer::compile(peer, selectors))
                    .collect()
            }),
            ports: ports.map(|ports| ports.iter().map(Port::compile).collect()),
        }
    }
}

impl Rule {
    fn new(parts: RuleParts, policy_namespace: &str) -> Self {
        // Empty lists mean "any", as omitted ones do.
        let peers = parts.peers.filter(|peers| !peers.is_empty());
        let ports = parts.ports.filter(|ports| !ports.is_empty());
        let index = peers
            .as_deref()
            .filter(|peers| peers.len() >= INDEXED_PEER_LISTS)
            .map(|peers| PeerIndex::new(peers, policy_namespace));
        Self {
            peers,
            ports,
            index,
        }
    }

    /// Whether `matches` holds for one of the peers that may select `pod`
    /// (`None`: an address); no other peer can.
    pub fn any_candidate(
        &self,
        pod: Option<&PodEntry>,
        mut matches: impl FnMut(&Peer) -> bool,
    ) -> bool {
        let peers = self.peers.as_deref().unwrap_or_default();
        match &self.index {
            None => peers.iter().any(matches),
            Some(index) => {
                let mut at = |position: usize| matches(&peers[position]);
                pod.and_then(|pod| {
                    let namespace = index.by_namespace.get(&*pod.namespace)?;
                    Some(namespace.any(peers, &pod.labels, &mut at))
                })
                .unwrap_or(false)
                    || index.others.iter().any(|&position| at(position))
            }
        }
    }
}

impl Port {
    pub(super) fn compile(port: &NetworkPolicyPort) -> Self {
        Port {
            protocol: port.protocol.as_deref().unwrap_or("TCP").into(),
            port: port.port.as_ref().map(|port| match port {
                IntOrString::Int(number) => PortRef::Number(*number),
                IntOrString::String(name) => PortRef::Name(name.as_str().into()),
            }),
            end_port: port.end_port,
        }
    }
}

impl Peer {
    fn compile(peer: &NetworkPolicyPeer, selectors: &mut SelectorInterner) -> Self {
        match &peer.ip_block {
            Some(block) => Peer::addresses(block.clone()),
            None => Peer::Pods {
                namespaces: peer
                    .namespace_selector
                    .as_ref()
                    .map(|selector| selectors.intern(selector)),
                pods: peer
                    .pod_selector
                    .as_ref()
                    .map(|selector| selectors.intern(selector)),
            },
        }
    }

    /// An `ipBlock`.
    pub(super) fn addresses(block: IPBlock) -> Self {
        Peer::Addresses(Box::new(AddressBlock {
            cidr: block.cidr,
            except: block.except.unwrap_or_default(),
        }))
    }

    /// The only namespace whose pods it can name, when it is one by name.
    pub fn one_namespace<'p>(&'p self, policy_namespace: &'p str) -> Option<&'p str> {
        let Peer::Pods { namespaces, .. } = self else {
            return None;
        };
        let Some(selector) = namespaces else {
            return Some(policy_namespace);
        };
        if selector.has_expressions() || selector.match_labels().count() != 1 {
            return None;
        }
        // Every namespace carries its name in this label (the inventory sees
        // to it): a selector of that label alone names that namespace only.
        selector.required(NAMESPACE_NAME_LABEL)
    }
}

impl PeerIndex {
    fn new(peers: &[Peer], policy_namespace: &str) -> Self {
        let mut index = PeerIndex {
            by_namespace: HashMap::default(),
            others: Vec::new(),
        };
        for (position, peer) in peers.iter().enumerate() {
            match peer.one_namespace(policy_namespace) {
                Some(namespace) => index
                    .by_namespace
                    .entry(namespace.into())
                    .or_default()
                    .positions
                    .push(position),
                None => index.others.push(position),
            }
        }
        for namespace in index.by_namespace.values_mut() {
            namespace.sort(peers);
        }
        index
    }
}
