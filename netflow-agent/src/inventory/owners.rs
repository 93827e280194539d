//! Who owns a pod, as users name it: ReplicaSet -> Deployment, Job ->
//! CronJob, StatefulSet, DaemonSet, or the bare pod.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta};

use super::{Objects, PER_POD_LABELS, WorkloadRef};

/// Owner chains: ReplicaSet -> Deployment, Job -> CronJob.
pub(super) struct Owners<'a> {
    objects: &'a Objects,
}

impl<'a> Owners<'a> {
    pub(super) fn new(objects: &'a Objects) -> Self {
        Self { objects }
    }

    fn find<'o, T>(
        items: &'o [T],
        meta: impl Fn(&T) -> &ObjectMeta,
        namespace: &str,
        name: &str,
    ) -> Option<&'o T> {
        items.iter().find(|item| {
            let meta = meta(item);
            meta.namespace.as_deref() == Some(namespace) && meta.name.as_deref() == Some(name)
        })
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
                let replica_set = Self::find(
                    &self.objects.replica_sets,
                    |rs| &rs.metadata,
                    &namespace,
                    &owner.name,
                );
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
                let job = Self::find(
                    &self.objects.jobs,
                    |job| &job.metadata,
                    &namespace,
                    &owner.name,
                );
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
            "Deployment" => Self::find(&self.objects.deployments, |d| &d.metadata, namespace, name)
                .and_then(|d| d.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone()),
            "StatefulSet" => Self::find(
                &self.objects.stateful_sets,
                |s| &s.metadata,
                namespace,
                name,
            )
            .and_then(|s| s.spec.as_ref())
            .and_then(|spec| spec.selector.match_labels.clone()),
            "DaemonSet" => Self::find(&self.objects.daemon_sets, |d| &d.metadata, namespace, name)
                .and_then(|d| d.spec.as_ref())
                .and_then(|spec| spec.selector.match_labels.clone()),
            "ReplicaSet" => {
                Self::find(&self.objects.replica_sets, |r| &r.metadata, namespace, name)
                    .and_then(|r| r.spec.as_ref())
                    .and_then(|spec| spec.selector.match_labels.clone())
            }
            // Job selectors name one run (controller-uid): the pod template's
            // own labels select every run of the workload.
            _ => None,
        };
        let mut labels = match_labels.unwrap_or_else(|| pod_labels.clone());
        labels.retain(|key, _| !PER_POD_LABELS.contains(&key.as_str()));
        labels
    }
}
