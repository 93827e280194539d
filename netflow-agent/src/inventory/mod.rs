//! The cluster as netflow needs to know it: pods grouped by their owning
//! workload, Services with their ports, nodes and namespaces.
//!
//! It is read from the output of
//! `kubectl get namespaces,nodes,pods,services,endpointslices,replicasets,deployments,statefulsets,daemonsets,jobs -A -o json`
//! (a `v1` `List`), which the lab writes and users can dump from a real
//! cluster; in a cluster the DaemonSet fills the same index live from watches
//! (`watch`).

mod builder;
mod dump;
mod entries;
mod labels;
mod owners;
pub mod watch;

use builder::Builder;
pub use dump::{InventoryError, ParseError};
pub use labels::Labels;
pub(crate) use owners::{OwnerKind, Owners};

use std::{collections::BTreeMap, net::IpAddr, ops::Range, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::model::{LabelMap, Protocol};

/// The label the API server sets on every namespace to its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Labels that name one pod or one revision, never a workload: a policy that
/// selected on them would break at the next rollout.
pub const PER_POD_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// Indexes into an inventory's pods under one key: an address is mostly one
/// pod's, a workload's replicas (and a Service's pods) are mostly one or
/// two, and a list of its own per key (32 bytes at least) was as much again
/// as the index.
pub(crate) type PodIndexes = SmallVec<[usize; 2]>;

/// A workload: what owns pods, as users name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub namespace: String,
    /// Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet (without a
    /// Deployment) or Pod (a bare pod).
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct PodEntry {
    /// Shared with the index by uid.
    pub uid: Arc<str>,
    /// Shared by the namespace's pods.
    pub namespace: Arc<str>,
    pub name: Box<str>,
    pub labels: Labels,
    /// Shared by the workload's pods and the indexes that name it.
    pub workload: Arc<WorkloadRef>,
    /// Shared by the node's pods.
    pub node: Option<Arc<str>>,
    pub host_network: bool,
    /// Mostly one: held inline, without an allocation of its own.
    pub ips: SmallVec<[IpAddr; 1]>,
    /// Every declared container port: number, protocol and name.
    pub ports: Box<[ContainerPort]>,
    /// When the pod held its IPs: an IP names a pod only for that time.
    pub started: Option<i64>,
    pub ended: Option<i64>,
    /// A service mesh's sidecar, when the pod runs one (boxed: most pods
    /// run none, and every pod would hold its room).
    pub mesh: Option<Box<MeshSidecar>>,
}

/// A service mesh's proxy beside a pod's containers. Its redirect rules
/// send every inbound TCP connection to the proxy's capture port, so the
/// pod's socket (what the kernel records) is on that port, not on the one
/// the client connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSidecar {
    /// The proxy's inbound capture port (Istio 15006, Linkerd 4143).
    pub inbound_port: u16,
    /// The TCP ports the pod's other containers declare: the ports inbound
    /// connections were for.
    pub app_ports: Vec<u16>,
}

/// Sidecar proxies by container name, with their inbound capture port.
pub const MESH_PROXIES: [(&str, u16); 2] = [("istio-proxy", 15006), ("linkerd-proxy", 4143)];

impl MeshSidecar {
    /// The port an inbound connection that reached `port` was made to:
    /// `port` itself unless it is the capture port; then the app's one TCP
    /// port, or `None` when it declares several (or none) and the pod's
    /// own record cannot tell which.
    pub fn inbound_app_port(&self, port: u16) -> Option<u16> {
        if port != self.inbound_port {
            return Some(port);
        }
        match self.app_ports.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }
}

/// A port a container declares. A name means a number *and* a protocol: a
/// policy or Service naming `metrics` over TCP does not reach `metrics` over
/// UDP. (24 bytes: every pod's ports are held for as long as the inventory,
/// where the API's strings took 56 and two allocations per port.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub number: u16,
    /// TCP (the API's default), UDP or SCTP: the only ones the API admits.
    pub protocol: Protocol,
    pub name: Option<Box<str>>,
}

impl ContainerPort {
    /// The protocol as the policy APIs name it (`TCP`, `UDP`, `SCTP`).
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.policy_name().unwrap_or_default()
    }
}

impl PodEntry {
    /// The number of the container port called `name` over `protocol`
    /// (`None` for any protocol, as Cilium's `ANY` has it).
    pub fn named_port(&self, name: &str, protocol: Option<&str>) -> Option<u16> {
        self.ports
            .iter()
            .find(|port| {
                port.name.as_deref() == Some(name)
                    && protocol
                        .is_none_or(|wanted| port.protocol_name().eq_ignore_ascii_case(wanted))
            })
            .map(|port| port.number)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(Box<str>),
}

#[derive(Clone, Debug)]
pub struct ServicePortEntry {
    /// The port's name (`""` when unnamed): EndpointSlices match on it.
    pub name: Box<str>,
    pub port: u16,
    /// TCP (the API's default), UDP or SCTP: the only ones the API admits.
    pub protocol: Protocol,
    pub target: TargetPort,
}

impl ServicePortEntry {
    /// The protocol as the policy APIs name it (`TCP`, `UDP`, `SCTP`).
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.policy_name().unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub selector: Labels,
    pub ports: Vec<ServicePortEntry>,
    /// For a Service without a selector, what its EndpointSlices name
    /// (boxed: most Services select their pods, and every Service would
    /// hold the room of two empty collections).
    pub endpoint_slices: Option<Box<SliceBackends>>,
    /// Indexes into the inventory's pods that the selector selects, worked
    /// out once when the inventory is built (every flow to the Service
    /// would otherwise compare labels across its namespace).
    pub(crate) selected: PodIndexes,
}

/// The indexes' maps: every record a graph build or the daemon names looks
/// a pod or Service up by address, and loading a dump of 20 000 pods hashes
/// their uids, owners and label sets by the hundred thousand; SipHash was a
/// twentieth of a whole `graph build`. foldhash, seeded at random per
/// process (docs/performance.md).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The backends a selector-less Service's EndpointSlices name.
#[derive(Clone, Debug, Default)]
pub struct SliceBackends {
    /// The pods, by name.
    pub pods: Vec<String>,
    /// Each slice port by name (`""` for an unnamed port).
    pub ports: BTreeMap<String, u16>,
}

#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub pods: Vec<PodEntry>,
    pub services: Vec<ServiceEntry>,
    pub nodes: Vec<NodeEntry>,
    pub namespaces: BTreeMap<String, LabelMap>,
    /// Selector labels per workload (per-pod labels removed).
    pub selectors: BTreeMap<Arc<WorkloadRef>, Labels>,
    /// Keyed by the pod's own `uid` (shared).
    pods_by_uid: HashMap<Arc<str>, usize>,
    pods_by_ip: HashMap<IpAddr, PodIndexes>,
    /// Indexes into `pods` per namespace (Services select within theirs).
    pods_by_namespace: HashMap<Arc<str>, Vec<usize>>,
    pods_by_workload: HashMap<Arc<WorkloadRef>, PodIndexes>,
    services_by_ip: HashMap<IpAddr, usize>,
    nodes_by_ip: HashMap<IpAddr, usize>,
}

/// Raw objects of one list (or of the live watches), before owners are
/// resolved. These are exactly the kinds netflow reads from a cluster: the
/// ClusterRole in `deploy/` grants these and nothing else.
#[derive(Clone, Default)]
pub(crate) struct Objects {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    /// ReplicaSets, Deployments, StatefulSets, DaemonSets and Jobs, as much
    /// of them as names a pod's workload.
    pub owners: Owners,
}

impl Inventory {
    pub(crate) fn from_objects(objects: Objects) -> Self {
        let mut builder = Builder::new(&objects.namespaces, &objects.nodes, objects.owners);
        for pod in &objects.pods {
            builder.add_pod(pod);
        }
        let services = objects.services.iter().filter_map(entries::service_entry);
        builder.finish(services, &objects.endpoint_slices)
    }

    pub fn pod_by_uid(&self, uid: &str) -> Option<&PodEntry> {
        self.pods_by_uid.get(uid).map(|&index| &self.pods[index])
    }

    /// The pod that held `ip` at `unix_seconds` (IPs are reused: a pod names an
    /// IP only from its start to its end). hostNetwork pods are not returned:
    /// their IP is their node's.
    pub fn pod_by_ip(&self, ip: IpAddr, unix_seconds: i64) -> Option<&PodEntry> {
        self.pods_by_ip
            .get(&ip)?
            .iter()
            .map(|&index| &self.pods[index])
            .filter(|pod| !pod.host_network)
            .filter(|pod| {
                pod.started.is_none_or(|start| start <= unix_seconds)
                    && pod.ended.is_none_or(|end| unix_seconds < end)
            })
            // Several candidates (a dump without times): the latest started.
            .max_by_key(|pod| pod.started.unwrap_or(i64::MIN))
    }

    /// The times around `unix_seconds` in which the same pods hold `ip`
    /// (none before, none after, as may be): over them [`Self::pod_by_ip`]
    /// answers as it does at `unix_seconds`, so a caller may keep its answer.
    pub fn ip_holders_steady(&self, ip: IpAddr, unix_seconds: i64) -> Range<i64> {
        let mut steady = i64::MIN..i64::MAX;
        let holders = self.pods_by_ip.get(&ip).into_iter().flatten();
        for pod in holders.map(|&index| &self.pods[index]) {
            for change in [pod.started, pod.ended].into_iter().flatten() {
                if change <= unix_seconds {
                    steady.start = steady.start.max(change);
                } else {
                    steady.end = steady.end.min(change);
                }
            }
        }
        steady
    }

    pub fn node_by_ip(&self, ip: IpAddr) -> Option<&NodeEntry> {
        self.nodes_by_ip.get(&ip).map(|&index| &self.nodes[index])
    }

    pub fn service_by_ip(&self, ip: IpAddr) -> Option<&ServiceEntry> {
        self.services_by_ip
            .get(&ip)
            .map(|&index| &self.services[index])
    }

    /// The pods of `namespace`.
    pub fn pods_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a PodEntry> + 'a {
        self.pods_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|&index| &self.pods[index])
    }

    /// The pods of `workload`.
    pub fn pods_of<'a>(
        &'a self,
        workload: &WorkloadRef,
    ) -> impl Iterator<Item = &'a PodEntry> + 'a {
        self.pods_by_workload
            .get(workload)
            .into_iter()
            .flatten()
            .map(|&index| &self.pods[index])
    }

    /// Indexes of the pods of `namespace` that `selector` selects (none for
    /// an empty selector: a Service without one selects no pod).
    fn selecting(&self, namespace: &str, selector: &LabelMap) -> PodIndexes {
        if selector.is_empty() {
            return PodIndexes::new();
        }
        self.pods_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&index| {
                selector
                    .iter()
                    .all(|(key, value)| self.pods[index].labels.get(key) == Some(value))
            })
            .collect()
    }

    /// The pods a Service selects.
    pub fn selected_pods<'a>(
        &'a self,
        service: &'a ServiceEntry,
    ) -> impl Iterator<Item = &'a PodEntry> + 'a {
        service.selected.iter().map(|&index| &self.pods[index])
    }

    /// The workloads behind `service` on `port`/`protocol`, each with the pod
    /// port the traffic reaches (numeric targetPort, or a named one looked up
    /// in the pods).
    pub fn service_backends(
        &self,
        service: &ServiceEntry,
        port: u16,
        protocol: &str,
    ) -> Vec<(WorkloadRef, u16)> {
        self.service_backends_of(service, port, protocol)
            .into_iter()
            .map(|(workload, target)| (workload.clone(), target))
            .collect()
    }

    /// As [`Inventory::service_backends`], borrowing the workloads.
    pub fn service_backends_of<'a>(
        &'a self,
        service: &ServiceEntry,
        port: u16,
        protocol: &str,
    ) -> Vec<(&'a WorkloadRef, u16)> {
        let Some(service_port) = service
            .ports
            .iter()
            .find(|p| p.port == port && p.protocol_name().eq_ignore_ascii_case(protocol))
        else {
            return Vec::new();
        };
        if service.selector.is_empty() {
            return self.endpoint_backends(service, service_port);
        }
        let mut backends: Vec<(&WorkloadRef, u16)> = service
            .selected
            .iter()
            .map(|&index| &self.pods[index])
            .filter_map(|pod| {
                let target = match &service_port.target {
                    TargetPort::Number(number) => *number,
                    TargetPort::Name(name) => {
                        pod.named_port(name, Some(service_port.protocol_name()))?
                    }
                };
                Some((&*pod.workload, target))
            })
            .collect();
        backends.sort();
        backends.dedup();
        backends
    }

    /// Backends of a Service without a selector, from its EndpointSlices: the
    /// slice port with the Service port's name is the pod port.
    fn endpoint_backends<'a>(
        &'a self,
        service: &ServiceEntry,
        service_port: &ServicePortEntry,
    ) -> Vec<(&'a WorkloadRef, u16)> {
        let Some(slices) = service.endpoint_slices.as_deref() else {
            return Vec::new();
        };
        let Some(&target) = slices.ports.get(&*service_port.name) else {
            return Vec::new();
        };
        let mut backends: Vec<(&WorkloadRef, u16)> = slices
            .pods
            .iter()
            .filter_map(|pod_name| {
                self.pods_in(&service.namespace)
                    .find(|pod| *pod.name == **pod_name)
            })
            .map(|pod| (&*pod.workload, target))
            .collect();
        backends.sort();
        backends.dedup();
        backends
    }

    pub fn selector_of(&self, workload: &WorkloadRef) -> Labels {
        self.selectors.get(workload).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SHOP: &str = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"team":"web"}}},
      {"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"},"spec":{"podCIDR":"10.244.1.0/24"},"status":{"addresses":[{"type":"InternalIP","address":"172.30.0.2"}]}},
      {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"frontend","namespace":"shop"},
       "spec":{"selector":{"matchLabels":{"app":"frontend"}},"template":{"metadata":{"labels":{"app":"frontend"}}}}},
      {"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"frontend-5d4f","namespace":"shop",
       "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"frontend","uid":"d1","controller":true}]},
       "spec":{"selector":{"matchLabels":{"app":"frontend","pod-template-hash":"5d4f"}}}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"frontend-5d4f-abcde","namespace":"shop","uid":"p1",
       "labels":{"app":"frontend","pod-template-hash":"5d4f"},
       "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"frontend-5d4f","uid":"r1","controller":true}]},
       "spec":{"nodeName":"node-a","containers":[{"name":"web","ports":[{"name":"http","containerPort":8080}]}]},
       "status":{"podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"}],"startTime":"2026-11-20T10:00:00Z"}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"cart-0","namespace":"shop","uid":"p2",
       "deletionTimestamp":"2026-11-20T09:00:00Z",
       "labels":{"app":"cart","controller-revision-hash":"cart-7f","statefulset.kubernetes.io/pod-name":"cart-0"},
       "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"cart","uid":"s1","controller":true}]},
       "spec":{"containers":[{"name":"cart","ports":[{"name":"grpc","containerPort":7070}]}]},
       "status":{"podIP":"10.244.1.5","startTime":"2026-11-18T10:00:00Z"}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"nightly-28912345-x1","namespace":"shop","uid":"p3",
       "labels":{"app":"report","job-name":"nightly-28912345","controller-uid":"j1"},
       "ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"nightly-28912345","uid":"j1","controller":true}]},
       "spec":{"containers":[{"name":"report"}]},"status":{"podIP":"10.244.1.9"}},
      {"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"nightly-28912345","namespace":"shop",
       "ownerReferences":[{"apiVersion":"batch/v1","kind":"CronJob","name":"nightly","uid":"c1","controller":true}]}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"agent-x","namespace":"shop","uid":"p4","labels":{"app":"agent"}},
       "spec":{"hostNetwork":true,"nodeName":"node-a","containers":[{"name":"a"}]},"status":{"podIP":"172.30.0.2"}},
      {"apiVersion":"v1","kind":"Service","metadata":{"name":"frontend","namespace":"shop"},
       "spec":{"type":"LoadBalancer","clusterIP":"10.96.0.10","externalIPs":["192.0.2.7"],"selector":{"app":"frontend"},
         "ports":[{"port":80,"targetPort":"http","protocol":"TCP","nodePort":30080}]},
       "status":{"loadBalancer":{"ingress":[{"ip":"172.30.0.200"},{"hostname":"lb.example"}]}}},
      {"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"shop"},
       "spec":{"clusterIP":"None","selector":{"app":"cart"},"ports":[{"port":7070}]}},
      {"apiVersion":"v1","kind":"Service","metadata":{"name":"payments","namespace":"shop"},
       "spec":{"type":"ExternalName","externalName":"api.payments.example"}},
      {"apiVersion":"v1","kind":"Service","metadata":{"name":"legacy","namespace":"shop"},
       "spec":{"clusterIP":"10.96.0.11","ports":[{"name":"web","port":80,"protocol":"TCP"}]}},
      {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
       "metadata":{"name":"legacy-1","namespace":"shop","labels":{"kubernetes.io/service-name":"legacy"}},
       "ports":[{"name":"web","port":8080,"protocol":"TCP"}],
       "endpoints":[{"addresses":["10.244.1.5"],"targetRef":{"kind":"Pod","name":"frontend-5d4f-abcde","namespace":"shop"}}]},
      {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ignored","namespace":"shop"}}
    ]}"#;

    fn shop() -> Inventory {
        Inventory::parse(SHOP).unwrap()
    }

    fn workload(kind: &str, name: &str) -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_workloads_pods_share_one_workload_namespace_and_node() {
        let second_pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"frontend-5d4f-fghij","namespace":"shop","uid":"p5",
       "labels":{"app":"frontend","pod-template-hash":"5d4f"},
       "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"frontend-5d4f","uid":"r1","controller":true}]},
       "spec":{"nodeName":"node-a"},"status":{"podIP":"10.244.1.6"}},
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"cart-0""#;
        let text = SHOP.replacen(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"cart-0""#,
            second_pod,
            1,
        );
        let inventory = Inventory::parse(&text).unwrap();
        let (first, second) = (
            inventory.pod_by_uid("p1").unwrap(),
            inventory.pod_by_uid("p5").unwrap(),
        );
        assert_eq!(*second.workload, workload("Deployment", "frontend"));
        assert!(Arc::ptr_eq(&first.workload, &second.workload));
        let (key, _) = inventory.selectors.get_key_value(&*first.workload).unwrap();
        assert!(Arc::ptr_eq(key, &first.workload), "the selectors' key too");
        assert!(
            Arc::ptr_eq(&first.labels, &second.labels),
            "and one label map"
        );
        assert!(Arc::ptr_eq(&first.namespace, &second.namespace));
        let (first_node, second_node) = (first.node.as_ref(), second.node.as_ref());
        assert!(
            first_node
                .zip(second_node)
                .is_some_and(|(a, b)| Arc::ptr_eq(a, b))
        );
    }

    #[test]
    fn pods_are_grouped_by_their_owning_workload() {
        let inventory = shop();
        assert_eq!(
            *inventory.pod_by_uid("p1").unwrap().workload,
            workload("Deployment", "frontend")
        );
        assert_eq!(
            *inventory.pod_by_uid("p2").unwrap().workload,
            workload("StatefulSet", "cart")
        );
        assert_eq!(
            *inventory.pod_by_uid("p3").unwrap().workload,
            workload("CronJob", "nightly")
        );
        assert_eq!(
            *inventory.pod_by_uid("p4").unwrap().workload,
            workload("Pod", "agent-x")
        );
    }

    #[test]
    fn a_services_every_address_leads_to_it_and_headless_ones_have_none() {
        let inventory = shop();
        // The ClusterIP, an external IP and the load balancer's address:
        // kube-proxy sends a pod's connection to each to the Service's pods.
        for ip in ["10.96.0.10", "192.0.2.7", "172.30.0.200"] {
            let service = inventory.service_by_ip(ip.parse().unwrap()).unwrap();
            assert_eq!(service.name, "frontend", "{ip}");
        }
        for name in ["db", "payments"] {
            let service = inventory.services.iter().find(|s| s.name == name).unwrap();
            assert!(service.cluster_ips.is_empty(), "{name}");
        }
    }

    #[test]
    fn selectors_never_carry_per_pod_labels() {
        let inventory = shop();
        let app =
            |name: &str| Labels::new(LabelMap::from_iter([("app".to_string(), name.to_string())]));
        assert_eq!(
            inventory.selector_of(&workload("Deployment", "frontend")),
            app("frontend")
        );
        assert_eq!(
            inventory.selector_of(&workload("StatefulSet", "cart")),
            app("cart")
        );
        assert_eq!(
            inventory.selector_of(&workload("CronJob", "nightly")),
            app("report")
        );
    }

    #[test]
    fn equal_label_sets_are_held_once() {
        let inventory = shop();
        // frontend's selector and the frontend Service's selector are the
        // same labels: one map.
        let selector = &inventory.selectors[&workload("Deployment", "frontend")];
        let service = inventory
            .service_by_ip("10.96.0.10".parse().unwrap())
            .unwrap();
        assert!(std::sync::Arc::ptr_eq(selector, &service.selector));
        // Two replicas of one ReplicaSet carry one map.
        let replica = |uid: &str, name: &str| {
            let mut pod: serde_json::Value = serde_json::from_str(SHOP)
                .map(|list: serde_json::Value| list["items"][4].clone())
                .unwrap();
            pod["metadata"]["uid"] = uid.into();
            pod["metadata"]["name"] = name.into();
            pod
        };
        let list = serde_json::json!({"kind": "List", "items": [
            replica("a", "frontend-5d4f-a"), replica("b", "frontend-5d4f-b")]});
        let inventory = Inventory::parse(&list.to_string()).unwrap();
        let (a, b) = (
            inventory.pod_by_uid("a").unwrap(),
            inventory.pod_by_uid("b").unwrap(),
        );
        assert_eq!(a.labels.len(), 2);
        assert!(std::sync::Arc::ptr_eq(&a.labels, &b.labels));
    }

    #[test]
    fn a_reused_ip_names_the_pod_that_held_it_then() {
        let inventory = shop();
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        let at = |text: &str| {
            let time = humantime::parse_rfc3339(text).unwrap();
            time.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        assert!(
            inventory
                .pod_by_ip(ip, at("2026-11-17T00:00:00Z"))
                .is_none()
        );
        assert_eq!(
            inventory
                .pod_by_ip(ip, at("2026-11-19T00:00:00Z"))
                .unwrap()
                .name,
            "cart-0".into()
        );
        // cart-0 is gone at 09:00, frontend starts at 10:00: nobody in between.
        assert!(
            inventory
                .pod_by_ip(ip, at("2026-11-20T09:30:00Z"))
                .is_none()
        );
        assert_eq!(
            inventory
                .pod_by_ip(ip, at("2026-11-21T00:00:00Z"))
                .unwrap()
                .name,
            "frontend-5d4f-abcde".into()
        );
    }

    #[test]
    fn host_network_pods_live_at_their_node_address() {
        let inventory = shop();
        let ip: IpAddr = "172.30.0.2".parse().unwrap();
        assert!(inventory.pod_by_ip(ip, 0).is_none());
        assert_eq!(inventory.node_by_ip(ip).unwrap().name, "node-a");
        // The pod bridge's address (first of the node's pod CIDR) is the node too.
        assert_eq!(
            inventory
                .node_by_ip("10.244.1.1".parse().unwrap())
                .unwrap()
                .name,
            "node-a"
        );
    }

    #[test]
    fn a_named_target_port_resolves_to_the_pod_port() {
        let inventory = shop();
        let service = inventory
            .service_by_ip("10.96.0.10".parse().unwrap())
            .unwrap();
        assert_eq!(
            inventory.service_backends(service, 80, "tcp"),
            vec![(workload("Deployment", "frontend"), 8080)]
        );
        assert!(inventory.service_backends(service, 81, "tcp").is_empty());
    }

    #[test]
    fn a_ports_name_means_its_protocol_and_no_protocol_is_made_up() {
        let inventory = Inventory::parse(
            r#"{"apiVersion":"v1","kind":"List","items":[
              {"apiVersion":"v1","kind":"Pod","metadata":{"name":"dns-0","namespace":"kube-system","uid":"d0"},
               "spec":{"containers":[{"name":"dns","ports":[
                 {"name":"dns","containerPort":53,"protocol":"UDP"},
                 {"name":"dns-tcp","containerPort":53},
                 {"name":"assoc","containerPort":2905,"protocol":"SCTP"},
                 {"name":"odd","containerPort":99,"protocol":"ICMP"}]}]},
               "status":{"podIP":"10.244.1.53"}}]}"#,
        )
        .unwrap();
        let pod = &inventory.pods[0];
        let ports: Vec<_> = pod
            .ports
            .iter()
            .map(|port| (port.number, port.protocol_name(), port.name.as_deref()))
            .collect();
        assert_eq!(
            ports,
            [
                (53, "UDP", Some("dns")),
                (53, "TCP", Some("dns-tcp")),
                (2905, "SCTP", Some("assoc"))
            ],
            "a port without a protocol is TCP's; one the API cannot hold is none"
        );
        assert_eq!(pod.named_port("dns", Some("udp")), Some(53));
        assert_eq!(pod.named_port("dns", Some("TCP")), None);
        assert_eq!(pod.named_port("assoc", None), Some(2905));
        assert_eq!(pod.named_port("odd", None), None);
    }

    #[test]
    fn a_service_without_selector_reaches_the_pods_of_its_endpoint_slices() {
        let inventory = shop();
        let service = inventory
            .service_by_ip("10.96.0.11".parse().unwrap())
            .unwrap();
        assert_eq!(
            inventory.service_backends(service, 80, "TCP"),
            vec![(workload("Deployment", "frontend"), 8080)]
        );
        assert!(inventory.service_backends(service, 443, "TCP").is_empty());
    }

    #[test]
    fn namespaces_carry_the_metadata_name_label() {
        let inventory = shop();
        assert_eq!(
            inventory.namespaces["shop"]
                .get("kubernetes.io/metadata.name")
                .map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            inventory.namespaces["shop"].get("team").map(String::as_str),
            Some("web")
        );
    }

    #[test]
    fn a_malformed_item_is_named() {
        let err =
            Inventory::parse(r#"{"items":[{"kind":"Pod","metadata":{"name":5}}]}"#).unwrap_err();
        assert!(err.to_string().contains("item 0 (Pod)"), "{err}");
    }
}
