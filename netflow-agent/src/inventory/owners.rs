//! Who owns a pod, as users name it: ReplicaSet -> Deployment, Job ->
//! CronJob, StatefulSet, DaemonSet, or the bare pod.

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{HashMap, PER_POD_LABELS, WorkloadRef};
use crate::model::{LabelMap, labels_from_kubernetes};

/// The kinds that own pods (directly or through another owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OwnerKind {
    ReplicaSet,
    Job,
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl OwnerKind {
    pub(crate) fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "ReplicaSet" => Self::ReplicaSet,
            "Job" => Self::Job,
            "Deployment" => Self::Deployment,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            _ => return None,
        })
    }
}

/// What the inventory reads of an owner: who owns it in turn, and the labels
/// that select its pods. Nothing else of the object (its pod template is
/// most of it) is kept.
#[derive(Clone, Debug, Default)]
struct OwnerRecord {
    /// Kind and name of each of its owner references.
    owned_by: Vec<(String, String)>,
    match_labels: Option<LabelMap>,
}

/// Owner chains: ReplicaSet -> Deployment, Job -> CronJob, indexed by kind,
/// namespace and name: a cluster's pods each look their owners up.
#[derive(Clone, Debug, Default)]
pub(crate) struct Owners {
    records: HashMap<OwnerKind, HashMap<String, HashMap<String, OwnerRecord>>>,
}

impl Owners {
    /// Adds an owner object (the first of duplicates stays, as a scan would
    /// find it).
    pub(crate) fn add(
        &mut self,
        kind: OwnerKind,
        meta: &ObjectMeta,
        selector: Option<&LabelSelector>,
    ) {
        let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref())
        else {
            return;
        };
        let by_name = self
            .records
            .entry(kind)
            .or_default()
            .entry(namespace.to_string())
            .or_default();
        if by_name.contains_key(name) {
            return;
        }
        let owned_by = meta
            .owner_references
            .iter()
            .flatten()
            .map(|owner| (owner.kind.clone(), owner.name.clone()))
            .collect();
        let match_labels = selector
            .and_then(|selector| selector.match_labels.as_ref())
            .map(|labels| labels_from_kubernetes(Some(labels)));
        by_name.insert(
            name.to_string(),
            OwnerRecord {
                owned_by,
                match_labels,
            },
        );
    }

    fn find(&self, kind: OwnerKind, namespace: &str, name: &str) -> Option<&OwnerRecord> {
        self.records.get(&kind)?.get(namespace)?.get(name)
    }

    /// The name of the `owner_kind` owning the `kind` object `name`.
    fn owner_of(
        &self,
        kind: OwnerKind,
        namespace: &str,
        name: &str,
        owner_kind: &str,
    ) -> Option<String> {
        self.find(kind, namespace, name)?
            .owned_by
            .iter()
            .find(|(kind, _)| kind == owner_kind)
            .map(|(_, name)| name.clone())
    }

    /// The workload owning a pod (through its controller reference).
    pub(super) fn workload_of(&self, pod: &Pod) -> WorkloadRef {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.controller == Some(true))
            .or_else(|| pod.metadata.owner_references.iter().flatten().next());
        let Some(owner) = controller else {
            return WorkloadRef {
                namespace,
                kind: "Pod".into(),
                name: pod_name,
            };
        };
        let workload = |kind: &str, name: &str| WorkloadRef {
            namespace: namespace.clone(),
            kind: kind.into(),
            name: name.into(),
        };
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let deployment = self
                    .owner_of(OwnerKind::ReplicaSet, &namespace, &owner.name, "Deployment")
                    // Without the ReplicaSet in the dump: a Deployment's
                    // ReplicaSet is named DEPLOYMENT-<pod-template-hash>.
                    .or_else(|| {
                        let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
                        owner
                            .name
                            .strip_suffix(&format!("-{hash}"))
                            .map(str::to_string)
                    });
                match deployment {
                    Some(name) => workload("Deployment", &name),
                    None => workload("ReplicaSet", &owner.name),
                }
            }
            "Job" => {
                let cron_job = self.owner_of(OwnerKind::Job, &namespace, &owner.name, "CronJob");
                match cron_job {
                    Some(name) => workload("CronJob", &name),
                    None => workload("Job", &owner.name),
                }
            }
            kind => workload(kind, &owner.name),
        }
    }

    /// Labels that select the workload's pods, and no single pod or revision.
    pub(super) fn selector_of(&self, workload: &WorkloadRef, pod_labels: &LabelMap) -> LabelMap {
        let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
        // Job selectors name one run (controller-uid): the pod template's
        // own labels select every run of the workload.
        let selecting = OwnerKind::from_kind(&workload.kind).filter(|kind| *kind != OwnerKind::Job);
        let match_labels = selecting
            .and_then(|kind| self.find(kind, namespace, name))
            .and_then(|record| record.match_labels.clone());
        let mut labels = match_labels.unwrap_or_else(|| pod_labels.clone());
        labels.retain(|key, _| !PER_POD_LABELS.contains(&key.as_str()));
        labels
    }
}
