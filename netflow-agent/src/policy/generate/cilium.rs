//! The Cilium flavor: CiliumNetworkPolicy (`cilium.io/v2`, the typed structs
//! of `policy::cilium`) with the same coverage as the Kubernetes flavor:
//!
//! - default deny: `endpointSelector: {}` with `ingress: [{}]`, `egress: [{}]`;
//! - DNS: egress to the DNS pods on port 53 (any protocol) with a DNS rule,
//!   which is what makes Cilium's proxy see the answers `toFQDNs` needs;
//! - peers: `fromEndpoints`/`toEndpoints` by workload labels (other
//!   namespaces through `k8s:io.kubernetes.pod.namespace`), nodes as the
//!   `host` and `remote-node` entities, externals as `toFQDNs` when their DNS
//!   name is known, else as a /32 (/128) CIDR.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{
    ClusterDns, Direction, Flavor, GenerateError, GenerateOptions, PolicySet, Rule, WorkloadRules,
    generate_with, host_cidrs, policy_metadata,
};
use crate::{
    graph::{CommGraph, Edge},
    inventory::Inventory,
    model::{Endpoint, EndpointKind, LabelMap},
    policy::cilium::{
        self as cnp, CiliumNetworkPolicy, EgressRule, FqdnSelector, HttpRule, IngressRule, L7Rules,
        NAMESPACE_LABEL, NODE_ENTITIES, PortProtocol, PortRule, match_labels,
    },
};

/// CiliumNetworkPolicies for the graph.
pub fn generate(
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
) -> Result<PolicySet<CiliumNetworkPolicy>, GenerateError> {
    if options.cluster_baseline != super::ClusterBaseline::None {
        return Err(GenerateError::BaselineNeedsKubernetesFlavor);
    }
    generate_with(&Cilium, graph, inventory, options)
}

/// [`generate`], each namespace's policies handed to `sink` as they are
/// written (see [`super::generate_each`]).
pub fn generate_each<E: From<GenerateError> + Send>(
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
    sink: impl Fn(&str, Vec<CiliumNetworkPolicy>) -> Result<(), E> + Sync,
) -> Result<PolicySet<CiliumNetworkPolicy>, E> {
    if options.cluster_baseline != super::ClusterBaseline::None {
        return Err(GenerateError::BaselineNeedsKubernetesFlavor.into());
    }
    super::generate_each(&Cilium, graph, inventory, options, sink)
}

/// How a Cilium rule names one peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CiliumPeer {
    Endpoints(LabelMap),
    Cidr(String),
    /// A node: the `host` and `remote-node` entities.
    Node,
    Fqdn(String),
}

pub struct Cilium;

impl Flavor for Cilium {
    type Policy = CiliumNetworkPolicy;
    type Peer = CiliumPeer;

    fn peer(&self, peer: &Endpoint, workload: &Endpoint, edge: &Edge) -> Option<Vec<CiliumPeer>> {
        match peer.kind {
            EndpointKind::Workload => {
                if peer.labels.is_empty() {
                    return None;
                }
                let mut labels = peer.labels.clone();
                let theirs = peer.namespace.as_ref()?;
                if Some(theirs) != workload.namespace.as_ref() {
                    labels.insert(NAMESPACE_LABEL.into(), theirs.clone());
                }
                Some(vec![CiliumPeer::Endpoints(labels)])
            }
            EndpointKind::Node => Some(vec![CiliumPeer::Node]),
            EndpointKind::External => {
                // The names this workload itself resolved the address by
                // (another workload's lookups, or a forged answer, name
                // nothing here): else the address.
                if !edge.stats.dns_names.is_empty() {
                    return Some(
                        edge.stats
                            .dns_names
                            .iter()
                            .map(|name| CiliumPeer::Fqdn(name.clone()))
                            .collect(),
                    );
                }
                let peers: Vec<CiliumPeer> =
                    host_cidrs(peer).into_iter().map(CiliumPeer::Cidr).collect();
                (!peers.is_empty()).then_some(peers)
            }
            EndpointKind::Metadata | EndpointKind::Unresolved => None,
        }
    }

    fn default_deny(&self, namespace: &str, ingress_only: bool) -> CiliumNetworkPolicy {
        // An empty rule allows nothing: it only turns on default deny.
        CiliumNetworkPolicy::new(
            policy_metadata("default-deny", namespace, None),
            cnp::Rule {
                endpoint_selector: LabelSelector::default(),
                ingress: Some(vec![IngressRule::default()]),
                egress: (!ingress_only).then(|| vec![EgressRule::default()]),
                ..cnp::Rule::default()
            },
        )
    }

    fn dns_allow(&self, namespace: &str, dns: &ClusterDns) -> CiliumNetworkPolicy {
        let mut selector = dns.labels.clone();
        selector.insert(NAMESPACE_LABEL.into(), dns.namespace.clone());
        let mut port = dns_port();
        port.rules = Some(L7Rules {
            dns: Some(vec![FqdnSelector {
                match_name: None,
                match_pattern: Some("*".into()),
            }]),
            http: None,
        });
        CiliumNetworkPolicy::new(
            policy_metadata("allow-dns", namespace, None),
            cnp::Rule {
                endpoint_selector: LabelSelector::default(),
                egress: Some(
                    std::iter::once(EgressRule {
                        to_endpoints: Some(vec![match_labels(&selector)]),
                        to_ports: Some(vec![port.clone()]),
                        ..EgressRule::default()
                    })
                    .chain(dns.node_local.then(|| EgressRule {
                        to_cidr: Some(vec![super::node_local_dns_cidr()]),
                        to_ports: Some(vec![port]),
                        ..EgressRule::default()
                    }))
                    .collect(),
                ),
                ..cnp::Rule::default()
            },
        )
    }

    fn dns_open_to_all(&self, namespace: &str, dns: &ClusterDns) -> CiliumNetworkPolicy {
        CiliumNetworkPolicy::new(
            policy_metadata("allow-dns-from-everywhere", namespace, None),
            cnp::Rule {
                endpoint_selector: match_labels(&dns.labels),
                ingress: Some(vec![IngressRule {
                    from_entities: Some(vec!["cluster".into()]),
                    to_ports: Some(vec![dns_port()]),
                    ..IngressRule::default()
                }]),
                ..cnp::Rule::default()
            },
        )
    }

    fn workload_policy(
        &self,
        workload: &Endpoint,
        metadata: ObjectMeta,
        rules: WorkloadRules<CiliumPeer>,
        _ingress_only: bool,
    ) -> CiliumNetworkPolicy {
        let ingress: Vec<IngressRule> = rules
            .ingress
            .iter()
            .flat_map(|rule| split(rule, Direction::Ingress))
            .map(|parts| IngressRule {
                from_endpoints: parts.endpoints,
                from_cidr: parts.cidrs,
                from_entities: parts.entities,
                to_ports: Some(parts.ports),
            })
            .collect();
        let egress: Vec<EgressRule> = rules
            .egress
            .iter()
            .flat_map(|rule| split(rule, Direction::Egress))
            .map(|parts| EgressRule {
                to_endpoints: parts.endpoints,
                to_cidr: parts.cidrs,
                to_entities: parts.entities,
                to_fqdns: parts.fqdns,
                to_ports: Some(parts.ports),
            })
            .collect();
        CiliumNetworkPolicy::new(
            metadata,
            cnp::Rule {
                endpoint_selector: match_labels(&workload.labels),
                ingress: (!ingress.is_empty()).then_some(ingress),
                egress: (!egress.is_empty()).then_some(egress),
                ..cnp::Rule::default()
            },
        )
    }
}

/// One Cilium rule's peers, all of one kind of selection (endpoints, CIDRs,
/// entities or names), with the rule's ports: one kind per rule, so what a
/// rule allows never depends on how Cilium combines kinds.
#[derive(Default)]
struct Parts {
    endpoints: Option<Vec<LabelSelector>>,
    cidrs: Option<Vec<String>>,
    entities: Option<Vec<String>>,
    fqdns: Option<Vec<FqdnSelector>>,
    ports: Vec<PortRule>,
}

/// A netflow rule (peers on the same ports) as Cilium rules, one per kind of
/// peer selection.
fn split(rule: &Rule<CiliumPeer>, direction: Direction) -> Vec<Parts> {
    let mut endpoints = Vec::new();
    let mut cidrs = Vec::new();
    let mut fqdns = Vec::new();
    let mut node = false;
    for peer in &rule.peers {
        match peer {
            CiliumPeer::Endpoints(labels) => endpoints.push(match_labels(labels)),
            CiliumPeer::Cidr(cidr) => cidrs.push(cidr.clone()),
            CiliumPeer::Fqdn(name) => fqdns.push(FqdnSelector {
                match_name: Some(name.clone()),
                match_pattern: None,
            }),
            CiliumPeer::Node => node = true,
        }
    }
    let ports = port_rules(rule);
    let mut out = Vec::new();
    if !endpoints.is_empty() {
        out.push(Parts {
            endpoints: Some(endpoints),
            ports: ports.clone(),
            ..Parts::default()
        });
    }
    if !cidrs.is_empty() {
        out.push(Parts {
            cidrs: Some(cidrs),
            ports: ports.clone(),
            ..Parts::default()
        });
    }
    if node {
        out.push(Parts {
            entities: Some(NODE_ENTITIES.iter().map(|e| e.to_string()).collect()),
            ports: ports.clone(),
            ..Parts::default()
        });
    }
    // Names are for egress only (Cilium has no fromFQDNs).
    if !fqdns.is_empty() && direction == Direction::Egress {
        out.push(Parts {
            fqdns: Some(fqdns),
            ports,
            ..Parts::default()
        });
    }
    out
}

/// The rule's ports: those with calls (L7) each in a port rule of its own
/// listing them, the rest together.
fn port_rules(rule: &Rule<CiliumPeer>) -> Vec<PortRule> {
    let port_protocol = |(protocol, port): &(&str, u16)| PortProtocol {
        port: port.to_string(),
        protocol: Some(protocol.to_string()),
        end_port: None,
    };
    let mut out = Vec::new();
    let l4: Vec<PortProtocol> = rule
        .ports
        .iter()
        .filter(|port| !rule.http.contains_key(*port))
        .map(port_protocol)
        .collect();
    if !l4.is_empty() {
        out.push(PortRule {
            ports: Some(l4),
            rules: None,
        });
    }
    for (port, calls) in &rule.http {
        out.push(PortRule {
            ports: Some(vec![port_protocol(port)]),
            rules: Some(L7Rules {
                dns: None,
                http: Some(
                    calls
                        .iter()
                        .map(|(method, path)| HttpRule {
                            method: Some(method.clone()),
                            path: Some(path.clone()),
                            ..HttpRule::default()
                        })
                        .collect(),
                ),
            }),
        });
    }
    out
}

/// Port 53, any protocol (DNS over UDP and TCP).
fn dns_port() -> PortRule {
    PortRule {
        ports: Some(vec![PortProtocol {
            port: "53".into(),
            protocol: Some("ANY".into()),
            end_port: None,
        }]),
        rules: None,
    }
}
