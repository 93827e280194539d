//! Who owns a pod, as users name it: ReplicaSet -> Deployment, Job ->
//! CronJob, StatefulSet, DaemonSet, or the bare pod.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::Job,
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{Objects, PER_POD_LABELS, WorkloadRef};

/// Objects of one kind by namespace and name.
type ByName<'a, T> = HashMap<(&'a str, &'a str), &'a T>;

/// Owner chains: ReplicaSet -> Deployment, Job -> CronJob. Each kind is
/// indexed once: a cluster's pods each look their owners up.
pub(super) struct Owners<'a> {
    replica_sets: ByName<'a, ReplicaSet>,
    jobs: ByName<'a, Job>,
    deployments: ByName<'a, Deployment>,
    stateful_sets: ByName<'a, StatefulSet>,
    daemon_sets: ByName<'a, DaemonSet>,
}

fn by_name<T>(items: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> ByName<'_, T> {
    let mut index = HashMap::with_capacity(items.len());
    for item in items {
        let meta = meta(item);
        if let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) {
            // The first of duplicates, as a scan would find it.
            index.entry((namespace, name)).or_insert(item);
        }
    }
    index
}

impl<'a> Owners<'a> {
    pub(super) fn new(objects: &'a Objects) -> Self {
        Self {
            replica_sets: by_name(&objects.replica_sets, |o| &o.metadata),
            jobs: by_name(&objects.jobs, |o| &o.metadata),
            deployments: by_name(&objects.deployments, |o| &o.metadata),
            stateful_sets: by_name(&objects.stateful_sets, |o| &o.metadata),
            daemon_sets: by_name(&objects.daemon_sets, |o| &o.metadata),
        }
    }

    fn find<'o, T>(index: &ByName<'o, T>, namespace: &str, name: &str) -> Option<&'o T> {
        index.get(&(namespace, name)).copied()
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
                let replica_set = Self::find(&self.replica_sets, &namespace, &owner.name);
                let deployment = replica_set
                    .and_then(|rs| rs.metadata.owner_references.as_ref())
                    .and_then(|owners| owners.iter().find(|o| o.kind == "Deployment"))
                    .map(|o| o.name.clone())
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
                let job = Self::find(&self.jobs, &namespace, &owner.name);
                let cron_job = job
                    .and_then(|job| job.metadata.owner_references.as_ref())
                    .and_then(|owners| owners.iter().find(|o| o.kind == "CronJob"))
                    .map(|o| o.name.clone());
                match cron_job {
                    Some(name) => workload("CronJob", &name),
                    None => workload("Job", &owner.name),
                }
            }
            kind => workload(kind, &owner.name),
        }
    }

    /// Labels that select the workload's pods, and no single pod or revision.
    pub(super) fn selector_of(
        &self,
        workload: &WorkloadRef,
        pod_labels: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
        let match_labels = match workload.kind.as_str() {
            "Deployment" => Self::find(&self.deployments, namespace, name)
                .and_then(|d| d.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone()),
            "StatefulSet" => Self::find(&self.stateful_sets, namespace, name)
                .and_then(|s| s.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone()),
            "DaemonSet" => Self::find(&self.daemon_sets, namespace, name)
                .and_then(|d| d.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone()),
            "ReplicaSet" => Self::find(&self.replica_sets, namespace, name)
                .and_then(|r| r.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone()),
            // Job selectors name one run (controller-uid): the pod template's
            // own labels select every run of the workload.
            _ => None,
        };
        let mut labels = match_labels.unwrap_or_else(|| pod_labels.clone());
        labels.retain(|key, _| !PER_POD_LABELS.contains(&key.as_str()));
        labels
    }
}
