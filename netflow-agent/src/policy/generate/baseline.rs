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

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::{ClusterDns, GenerateOptions, SYSTEM_NAMESPACES};
use crate::{
    identity::METADATA_ADDRESSES,
    inventory::NAMESPACE_NAME_LABEL,
    policy::cluster_wide::{ClusterWideObject, NamespacedPod, Subject, v1alpha1, v1alpha2},
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
        .map(|address| {
            if address.contains(':') {
                format!("{address}/128")
            } else {
                format!("{address}/32")
            }
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
        pod_selector: LabelSelector {
            match_labels: Some(dns.labels.clone()),
            match_expressions: None,
        },
    }
}

const EVERYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// The Admin tier object(s) and the Baseline tier object(s), in that order
/// of application; empty for [`ClusterBaseline::None`].
pub fn cluster_wide(
    mode: ClusterBaseline,
    options: &GenerateOptions,
    dns: &ClusterDns,
) -> (Vec<ClusterWideObject>, Vec<ClusterWideObject>) {
    match mode {
        ClusterBaseline::None => (Vec::new(), Vec::new()),
        ClusterBaseline::ClusterNetworkPolicy => {
            let (admin, baseline) = v1alpha2_objects(options, dns);
            (
                vec![ClusterWideObject::Cluster(admin)],
                vec![ClusterWideObject::Cluster(baseline)],
            )
        }
        ClusterBaseline::AdminNetworkPolicy => {
            let (admin, baseline) = v1alpha1_objects(options, dns);
            (
                vec![ClusterWideObject::Admin(admin)],
                vec![ClusterWideObject::Admin(baseline)],
            )
        }
    }
}

fn v1alpha2_objects(
    options: &GenerateOptions,
    dns: &ClusterDns,
) -> (
    v1alpha2::ClusterNetworkPolicy,
    v1alpha2::ClusterNetworkPolicy,
) {
    use v1alpha2::{ClusterNetworkPolicy, Peer, Port, Protocol, ProtocolPorts, Rule, Spec};
    let port_53 = || {
        Some(ProtocolPorts {
            destination_port: Some(Port {
                number: Some(53),
                range: None,
            }),
        })
    };
    let admin = ClusterNetworkPolicy::new(
        metadata(ADMIN_NAME),
        Spec {
            tier: "Admin".into(),
            priority: ADMIN_PRIORITY,
            subject: subject(options),
            ingress: Vec::new(),
            egress: vec![
                Rule {
                    name: "deny-metadata-service".into(),
                    action: "Deny".into(),
                    from: None,
                    to: Some(vec![Peer {
                        networks: Some(metadata_networks()),
                        ..Peer::default()
                    }]),
                    protocols: None,
                },
                Rule {
                    name: "accept-cluster-dns".into(),
                    action: "Accept".into(),
                    from: None,
                    to: Some(vec![Peer {
                        pods: Some(dns_pods(dns)),
                        ..Peer::default()
                    }]),
                    protocols: Some(vec![
                        Protocol {
                            udp: port_53(),
                            ..Protocol::default()
                        },
                        Protocol {
                            tcp: port_53(),
                            ..Protocol::default()
                        },
                    ]),
                },
            ],
        },
    );
    let baseline = ClusterNetworkPolicy::new(
        metadata(BASELINE_NAME),
        Spec {
            tier: "Baseline".into(),
            priority: BASELINE_PRIORITY,
            subject: subject(options),
            ingress: vec![Rule {
                name: "default-deny-from-pods".into(),
                action: "Deny".into(),
                from: Some(vec![Peer {
                    namespaces: Some(LabelSelector::default()),
                    ..Peer::default()
                }]),
                to: None,
                protocols: None,
            }],
            egress: if options.ingress_only {
                Vec::new()
            } else {
                vec![Rule {
                    name: "default-deny-egress".into(),
                    action: "Deny".into(),
                    from: None,
                    to: Some(vec![Peer {
                        networks: Some(EVERYWHERE.map(String::from).to_vec()),
                        ..Peer::default()
                    }]),
                    protocols: None,
                }]
            },
        },
    );
    (admin, baseline)
}

fn v1alpha1_objects(
    options: &GenerateOptions,
    dns: &ClusterDns,
) -> (v1alpha1::AdminNetworkPolicy, v1alpha1::AdminNetworkPolicy) {
    use v1alpha1::{AdminNetworkPolicy, Peer, Port, PortNumber, Rule, Spec};
    let port_53 = |protocol: &str| Port {
        port_number: Some(PortNumber {
            protocol: protocol.into(),
            port: 53,
        }),
        ..Port::default()
    };
    let admin = AdminNetworkPolicy::admin(
        metadata(ADMIN_NAME),
        Spec {
            priority: Some(ADMIN_PRIORITY),
            subject: subject(options),
            ingress: Vec::new(),
            egress: vec![
                Rule {
                    name: "deny-metadata-service".into(),
                    action: "Deny".into(),
                    from: None,
                    to: Some(vec![Peer {
                        networks: Some(metadata_networks()),
                        ..Peer::default()
                    }]),
                    ports: None,
                },
                Rule {
                    name: "allow-cluster-dns".into(),
                    action: "Allow".into(),
                    from: None,
                    to: Some(vec![Peer {
                        pods: Some(dns_pods(dns)),
                        ..Peer::default()
                    }]),
                    ports: Some(vec![port_53("UDP"), port_53("TCP")]),
                },
            ],
        },
    );
    let baseline = AdminNetworkPolicy::baseline(
        metadata(v1alpha1::BASELINE_NAME),
        Spec {
            priority: None,
            subject: subject(options),
            ingress: vec![Rule {
                name: "default-deny-from-pods".into(),
                action: "Deny".into(),
                from: Some(vec![Peer {
                    namespaces: Some(LabelSelector::default()),
                    ..Peer::default()
                }]),
                to: None,
                ports: None,
            }],
            egress: if options.ingress_only {
                Vec::new()
            } else {
                vec![Rule {
                    name: "default-deny-egress".into(),
                    action: "Deny".into(),
                    from: None,
                    to: Some(vec![Peer {
                        networks: Some(EVERYWHERE.map(String::from).to_vec()),
                        ..Peer::default()
                    }]),
                    ports: None,
                }]
            },
        },
    );
    (admin, baseline)
}
