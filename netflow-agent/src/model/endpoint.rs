//! The ends of a graph edge: workloads, nodes, externals, the metadata
//! service, and what could not be named.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::LabelMap;

/// What kind of endpoint a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// Pods grouped by their owning workload (Deployment, StatefulSet, ...).
    Workload,
    /// A node's own address (kubelet, hostNetwork pods).
    Node,
    /// Anything outside the cluster, by address (and DNS names when known).
    External,
    /// The cloud metadata service (169.254.169.254 and friends).
    Metadata,
    /// An address or cgroup netflow could not name.
    Unresolved,
}

/// One endpoint. `id` is stable across runs and nodes, so graphs merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub kind: EndpointKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Deployment, StatefulSet, DaemonSet, Job, CronJob or Pod (workloads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    /// The workload's selector labels (never per-pod labels).
    #[serde(
        default,
        skip_serializing_if = "LabelMap::is_empty",
        deserialize_with = "super::deserialize_labels"
    )]
    pub labels: LabelMap,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub addresses: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dns_names: BTreeSet<String>,
    /// On a node: the hostNetwork workloads seen running there
    /// (`namespace/Kind/name`). Their traffic comes from the node's address,
    /// so policies can only name them by it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub host_workloads: BTreeSet<String>,
}

impl Endpoint {
    /// How the endpoint is named for people: `namespace/name` for workloads.
    pub fn label(&self) -> String {
        self.label_display().to_string()
    }

    /// [`Endpoint::label`], written where it is formatted.
    pub fn label_display(&self) -> impl std::fmt::Display + '_ {
        struct Label<'e>(&'e Endpoint);
        impl std::fmt::Display for Label<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let endpoint = self.0;
                match (&endpoint.namespace, endpoint.kind) {
                    (Some(namespace), EndpointKind::Workload) => {
                        write!(f, "{namespace}/{}", endpoint.name)
                    }
                    _ => f.write_str(&endpoint.name),
                }
            }
        }
        Label(self)
    }

    /// Folds what another observation knows of the same endpoint into this one.
    pub fn absorb(&mut self, other: &Endpoint) {
        self.addresses.extend(other.addresses.iter().cloned());
        self.dns_names.extend(other.dns_names.iter().cloned());
        self.host_workloads
            .extend(other.host_workloads.iter().cloned());
        for (key, value) in &other.labels {
            self.labels
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        if self.workload_kind.is_none() {
            self.workload_kind.clone_from(&other.workload_kind);
        }
    }
}
