//! The cluster admin's layer (`policy generate --cluster-baseline cnp|anp`):
//! what namespace owners must not be able to edit away, as network-policy-api
//! resources.
//!
//! - Admin tier (`netflow-admin`): deny the cloud metadata addresses, then
//!   accept DNS to the cluster's DNS pods. Admin Deny is final: no
//!   NetworkPolicy can open the metadata service again.
//! - Baseline tier (`netflow-baseline`, or the BaselineAdminNetworkPolicy
//!   `default`): deny ingress from every pod and egress to every address.
//!   NetworkPolicy comes before it, so the namespaces' allows still work.
//!
//! Both select the namespaces the namespaced policies were written for:
//! every namespace but the system ones (or exactly those asked for with
//! `--namespace`). A Baseline ingress rule can only name pods, not
//! addresses outside the cluster, so each namespace keeps an ingress
//! default-deny NetworkPolicy; egress default-deny and the DNS allow move
//! here.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::{ClusterDns, GenerateOptions, SYSTEM_NAMESPACES};
use crate::{
    identity::METADATA_ADDRESSES,
    inventory::NAMESPACE_NAME_LABEL,
    policy::cluster_wide::{
        Action, ClusterWideObject, NamespacedPod, Peer, Subject, v1alpha1, v1alpha2,
    },
};

/// Which resources carry the cluster-wide layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterBaseline {
    /// None: each namespace gets its own default-deny and DNS allow.
    #[default]
    None,
    /// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy.
    ClusterNetworkPolicy,
    /// `policy.networking.k8s.io/v1alpha1` AdminNetworkPolicy and
    /// BaselineAdminNetworkPolicy.
    AdminNetworkPolicy,
}

pub const ADMIN_NAME: &str = "netflow-admin";
pub const BASELINE_NAME: &str = "netflow-baseline";
/// Admin tier policies run lowest number first; leave room for the
/// cluster's own above netflow's.
pub const ADMIN_PRIORITY: i32 = 50;
pub const BASELINE_PRIORITY: i32 = 50;

/// The namespaces the cluster-wide layer applies to.
pub fn subject(options: &GenerateOptions) -> Subject {
    let requirement = if options.namespaces.is_empty() {
        if options.include_system {
            return Subject {
                namespaces: Some(LabelSelector::default()),
                pods: None,
            };
        }
        LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "NotIn".into(),
            values: Some(SYSTEM_NAMESPACES.iter().map(|ns| ns.to_string()).collect()),
        }
    } else {
        LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(options.namespaces.iter().cloned().collect()),
        }
    };
    Subject {
        namespaces: Some(LabelSelector {
            match_expressions: Some(vec![requirement]),
            match_labels: None,
        }),
        pods: None,
    }
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "netflow".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn metadata_networks() -> Vec<String> {
    METADATA_ADDRESSES
        .iter()
        .map(|address| match address {
            IpAddr::V4(_) => format!("{address}/32"),
            IpAddr::V6(_) => format!("{address}/128"),
        })
        .collect()
}

fn dns_pods(dns: &ClusterDns) -> NamespacedPod {
    NamespacedPod {
        namespace_selector: LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                dns.namespace.clone(),
            )])),
            match_expressions: None,
        },
        pod_selector: crate::policy::cilium::match_labels(&dns.labels),
    }
}

const EVERYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// One rule of the layer, before it is written in an API version.
struct LayerRule {
    name: &'static str,
    action: Action,
    peer: Peer,
    /// UDP and TCP 53 only (else every port).
    dns_ports: bool,
}

/// The rules of both tiers: Admin egress, Baseline ingress and egress.
struct Layer {
    admin_egress: Vec<LayerRule>,
    baseline_ingress: Vec<LayerRule>,
    baseline_egress: Vec<LayerRule>,
}

fn layer(options: &GenerateOptions, dns: &ClusterDns) -> Layer {
    let node_local_dns = dns.node_local.then(|| LayerRule {
        name: "allow-node-local-dns",
        action: Action::Accept,
        peer: Peer {
            networks: Some(vec![super::node_local_dns_cidr()]),
            ..Peer::default()
        },
        dns_ports: true,
    });
    Layer {
        admin_egress: [
            LayerRule {
                name: "deny-metadata-service",
                action: Action::Deny,
                peer: Peer {
                    networks: Some(metadata_networks()),
                    ..Peer::default()
                },
                dns_ports: false,
            },
            LayerRule {
                name: "allow-cluster-dns",
                action: Action::Accept,
                peer: Peer {
                    pods: Some(dns_pods(dns)),
                    ..Peer::default()
                },
                dns_ports: true,
            },
        ]
        .into_iter()
        .chain(node_local_dns)
        .collect(),
        baseline_ingress: vec![LayerRule {
            name: "default-deny-from-pods",
            action: Action::Deny,
            peer: Peer {
                namespaces: Some(LabelSelector::default()),
                ..Peer::default()
            },
            dns_ports: false,
        }],
        baseline_egress: if options.ingress_only {
            Vec::new()
        } else {
            vec![LayerRule {
                name: "default-deny-egress",
                action: Action::Deny,
                peer: Peer {
                    networks: Some(EVERYWHERE.map(String::from).to_vec()),
                    ..Peer::default()
                },
                dns_ports: false,
            }]
        },
    }
}

/// The Admin tier object(s) and the Baseline tier object(s), in that order
/// of application; empty for [`ClusterBaseline::None`].
pub fn cluster_wide(
    mode: ClusterBaseline,
    options: &GenerateOptions,
    dns: &ClusterDns,
) -> (Vec<ClusterWideObject>, Vec<ClusterWideObject>) {
    let layer = layer(options, dns);
    let subject = subject(options);
    match mode {
        ClusterBaseline::None => (Vec::new(), Vec::new()),
        ClusterBaseline::ClusterNetworkPolicy => {
            let spec = |tier: &str, priority, ingress: &[LayerRule], egress: &[LayerRule]| {
                v1alpha2::Spec {
                    tier: tier.into(),
                    priority,
                    subject: subject.clone(),
                    ingress: ingress
                        .iter()
                        .map(|rule| v1alpha2_rule(rule, true))
                        .collect(),
                    egress: egress
                        .iter()
                        .map(|rule| v1alpha2_rule(rule, false))
                        .collect(),
                }
            };
            let admin = spec("Admin", ADMIN_PRIORITY, &[], &layer.admin_egress);
            let baseline = spec(
                "Baseline",
                BASELINE_PRIORITY,
                &layer.baseline_ingress,
                &layer.baseline_egress,
            );
            (
                vec![ClusterWideObject::Cluster(
                    v1alpha2::ClusterNetworkPolicy::new(metadata(ADMIN_NAME), admin),
                )],
                vec![ClusterWideObject::Cluster(
                    v1alpha2::ClusterNetworkPolicy::new(metadata(BASELINE_NAME), baseline),
                )],
            )
        }
        ClusterBaseline::AdminNetworkPolicy => {
            let spec = |priority, ingress: &[LayerRule], egress: &[LayerRule]| v1alpha1::Spec {
                priority,
                subject: subject.clone(),
                ingress: ingress
                    .iter()
                    .map(|rule| v1alpha1_rule(rule, true))
                    .collect(),
                egress: egress
                    .iter()
                    .map(|rule| v1alpha1_rule(rule, false))
                    .collect(),
            };
            let admin = spec(Some(ADMIN_PRIORITY), &[], &layer.admin_egress);
            let baseline = spec(None, &layer.baseline_ingress, &layer.baseline_egress);
            (
                vec![ClusterWideObject::Admin(
                    v1alpha1::AdminNetworkPolicy::admin(metadata(ADMIN_NAME), admin),
                )],
                vec![ClusterWideObject::Admin(
                    v1alpha1::AdminNetworkPolicy::baseline(
                        metadata(v1alpha1::BASELINE_NAME),
                        baseline,
                    ),
                )],
            )
        }
    }
}

fn v1alpha2_rule(rule: &LayerRule, ingress: bool) -> v1alpha2::Rule {
    use v1alpha2::{Port, Protocol, ProtocolPorts};
    let port_53 = || {
        Some(ProtocolPorts {
            destination_port: Some(Port {
                number: Some(53),
                range: None,
            }),
        })
    };
    let peers = Some(vec![rule.peer.clone()]);
    v1alpha2::Rule {
        name: rule.name.into(),
        action: match rule.action {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
        .into(),
        from: if ingress { peers.clone() } else { None },
        to: if ingress { None } else { peers },
        protocols: rule.dns_ports.then(|| {
            vec![
                Protocol {
                    udp: port_53(),
                    ..Protocol::default()
                },
                Protocol {
                    tcp: port_53(),
                    ..Protocol::default()
                },
            ]
        }),
    }
}

fn v1alpha1_rule(rule: &LayerRule, ingress: bool) -> v1alpha1::Rule {
    use v1alpha1::{Port, PortNumber};
    let port_53 = |protocol: &str| Port {
        port_number: Some(PortNumber {
            protocol: protocol.into(),
            port: 53,
        }),
        ..Port::default()
    };
    let peers = Some(vec![rule.peer.clone()]);
    v1alpha1::Rule {
        name: rule.name.into(),
        action: match rule.action {
            Action::Accept => "Allow",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
        .into(),
        from: if ingress { peers.clone() } else { None },
        to: if ingress { None } else { peers },
        ports: rule.dns_ports.then(|| vec![port_53("UDP"), port_53("TCP")]),
    }
}
