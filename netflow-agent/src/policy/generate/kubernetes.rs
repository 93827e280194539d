//! The Kubernetes flavor: `networking.k8s.io/v1` NetworkPolicy. Other
//! namespaces through `kubernetes.io/metadata.name`; nodes and externals as
//! /32 (/128) ipBlocks.

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    ClusterDns, Flavor, GenerateError, GenerateOptions, PolicySet, Rule, WorkloadRules,
    generate_with, host_cidrs, policy_metadata,
};
use crate::{
    graph::{CommGraph, Edge},
    inventory::{Inventory, NAMESPACE_NAME_LABEL},
    model::{Endpoint, EndpointKind, LabelMap},
};

/// NetworkPolicies for the graph.
pub fn generate(
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
) -> Result<PolicySet<NetworkPolicy>, GenerateError> {
    generate_with(&Kubernetes, graph, inventory, options)
}

/// [`generate`], each namespace's policies handed to `sink` as they are
/// written (see [`super::generate_each`]).
pub fn generate_each<E: From<GenerateError> + Send>(
    graph: &CommGraph,
    inventory: &Inventory,
    options: &GenerateOptions,
    sink: impl Fn(&str, Vec<NetworkPolicy>) -> Result<(), E> + Sync,
) -> Result<PolicySet<NetworkPolicy>, E> {
    super::generate_each(&Kubernetes, graph, inventory, options, sink)
}

pub struct Kubernetes;

impl Flavor for Kubernetes {
    type Policy = NetworkPolicy;
    type Peer = NetworkPolicyPeer;

    fn peer(
        &self,
        peer: &Endpoint,
        workload: &Endpoint,
        _edge: &Edge,
    ) -> Option<Vec<NetworkPolicyPeer>> {
        match peer.kind {
            EndpointKind::Workload => {
                if peer.labels.is_empty() {
                    return None;
                }
                let namespace_selector = match (&peer.namespace, &workload.namespace) {
                    (Some(theirs), Some(ours)) if theirs == ours => None,
                    (Some(theirs), _) => Some(namespace_selector(theirs)),
                    (None, _) => return None,
                };
                Some(vec![NetworkPolicyPeer {
                    namespace_selector,
                    pod_selector: Some(selector(&peer.labels)),
                    ip_block: None,
                }])
            }
            EndpointKind::Node | EndpointKind::External => {
                let peers: Vec<NetworkPolicyPeer> = host_cidrs(peer)
                    .into_iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock { cidr, except: None }),
                        ..Default::default()
                    })
                    .collect();
                (!peers.is_empty()).then_some(peers)
            }
            EndpointKind::Metadata | EndpointKind::Unresolved => None,
        }
    }

    fn default_deny(&self, namespace: &str, ingress_only: bool) -> NetworkPolicy {
        NetworkPolicy {
            metadata: policy_metadata("default-deny", namespace, None),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(policy_types(ingress_only)),
                ingress: None,
                egress: None,
            }),
        }
    }

    fn dns_allow(&self, namespace: &str, dns: &ClusterDns) -> NetworkPolicy {
        NetworkPolicy {
            metadata: policy_metadata("allow-dns", namespace, None),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".into()]),
                ingress: None,
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(
                        std::iter::once(NetworkPolicyPeer {
                            namespace_selector: Some(namespace_selector(&dns.namespace)),
                            pod_selector: Some(selector(&dns.labels)),
                            ip_block: None,
                        })
                        .chain(dns.node_local.then(|| NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: super::node_local_dns_cidr(),
                                except: None,
                            }),
                            ..Default::default()
                        }))
                        .collect(),
                    ),
                    ports: Some(dns_ports()),
                }]),
            }),
        }
    }

    fn dns_open_to_all(&self, namespace: &str, dns: &ClusterDns) -> NetworkPolicy {
        NetworkPolicy {
            metadata: policy_metadata("allow-dns-from-everywhere", namespace, None),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector(&dns.labels)),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        ..Default::default()
                    }]),
                    ports: Some(dns_ports()),
                }]),
                egress: None,
            }),
        }
    }

    fn workload_policy(
        &self,
        workload: &Endpoint,
        metadata: ObjectMeta,
        rules: WorkloadRules<NetworkPolicyPeer>,
        ingress_only: bool,
    ) -> NetworkPolicy {
        let WorkloadRules { ingress, egress } = rules;
        NetworkPolicy {
            metadata,
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector(&workload.labels)),
                policy_types: Some(policy_types(ingress_only)),
                ingress: Some(
                    ingress
                        .into_iter()
                        .map(|rule| NetworkPolicyIngressRule {
                            ports: Some(ports(&rule)),
                            from: Some(rule.peers),
                        })
                        .collect(),
                ),
                egress: (!ingress_only).then(|| {
                    egress
                        .into_iter()
                        .map(|rule| NetworkPolicyEgressRule {
                            ports: Some(ports(&rule)),
                            to: Some(rule.peers),
                        })
                        .collect()
                }),
            }),
        }
    }
}

fn policy_types(ingress_only: bool) -> Vec<String> {
    let types: &[&str] = if ingress_only {
        &["Ingress"]
    } else {
        &["Ingress", "Egress"]
    };
    types.iter().map(|t| t.to_string()).collect()
}

fn selector(labels: &LabelMap) -> LabelSelector {
    crate::policy::cilium::match_labels(labels)
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    selector(&LabelMap::from_iter([(
        NAMESPACE_NAME_LABEL.to_string(),
        namespace.to_string(),
    )]))
}

fn dns_ports() -> Vec<NetworkPolicyPort> {
    ["UDP", "TCP"]
        .iter()
        .map(|protocol| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.to_string()),
            end_port: None,
        })
        .collect()
}

fn ports(rule: &Rule<NetworkPolicyPeer>) -> Vec<NetworkPolicyPort> {
    rule.ports
        .iter()
        .map(|(protocol, port)| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(*port))),
            protocol: Some(protocol.to_string()),
            end_port: None,
        })
        .collect()
}
