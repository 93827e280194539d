//! Kubernetes objects to the index's entries: pods with their workload and
//! ports, Services with their ports and backends.

use std::{net::IpAddr, sync::Arc};

use smallvec::SmallVec;

use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    ContainerPort, MESH_PROXIES, MeshSidecar, PodEntry, ServiceEntry, ServicePortEntry,
    SliceBackends, TargetPort,
    labels::{LabelSets, Labels},
    owners::Owners,
};
use crate::model::{Protocol, labels_from_kubernetes};

pub(super) fn pod_entry(pod: &Pod, owners: &Owners, label_sets: &mut LabelSets) -> PodEntry {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: SmallVec<[IpAddr; 1]> = status
        .and_then(|status| status.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if let Some(ip) = status
        .and_then(|status| status.pod_ip.as_ref())
        .and_then(|ip| ip.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let ports = spec
        .into_iter()
        .flat_map(|spec| spec.containers.iter())
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            Some(ContainerPort {
                number: u16::try_from(port.container_port).ok()?,
                // Another name is no protocol a cluster admits: no port.
                protocol: Protocol::from_policy_name(port.protocol.as_deref().unwrap_or("TCP"))?,
                name: port.name.as_deref().map(Box::from),
            })
        })
        .collect();
    let started = status
        .and_then(|status| status.start_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|time| time.0.as_second());
    let mesh = spec.and_then(mesh_sidecar).map(Box::new);
    PodEntry {
        mesh,
        uid: pod.metadata.uid.as_deref().unwrap_or_default().into(),
        namespace: pod.metadata.namespace.as_deref().unwrap_or_default().into(),
        name: pod.metadata.name.as_deref().unwrap_or_default().into(),
        labels: label_sets.intern(labels_from_kubernetes(pod.metadata.labels.as_ref())),
        workload: Arc::new(owners.workload_of(pod)),
        node: spec
            .and_then(|spec| spec.node_name.as_deref())
            .map(Arc::from),
        host_network: spec.and_then(|spec| spec.host_network).unwrap_or(false),
        ips,
        ports,
        started,
        ended: pod
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|time| time.0.as_second()),
    }
}

/// The pod's mesh sidecar: a container (or a native sidecar, an init
/// container that keeps running) named as a mesh names its proxy.
fn mesh_sidecar(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<MeshSidecar> {
    let init = spec.init_containers.iter().flatten();
    let (proxy, inbound_port) = spec.containers.iter().chain(init).find_map(|container| {
        MESH_PROXIES
            .iter()
            .find(|(name, _)| container.name == *name)
            .map(|(name, port)| (*name, *port))
    })?;
    let mut app_ports: Vec<u16> = spec
        .containers
        .iter()
        .filter(|container| container.name != proxy)
        .flat_map(|container| container.ports.iter().flatten())
        .filter(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|port| u16::try_from(port.container_port).ok())
        .collect();
    app_ports.sort_unstable();
    app_ports.dedup();
    Some(MeshSidecar {
        inbound_port,
        app_ports,
    })
}

/// The first host address of a CIDR (`10.244.1.0/24` -> `10.244.1.1`).
pub(super) fn first_host(cidr: &str) -> Option<IpAddr> {
    let (base, _) = cidr.split_once('/')?;
    match base.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(v4).checked_add(1)?,
        ))),
        IpAddr::V6(v6) => Some(IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6).checked_add(1)?,
        ))),
    }
}

pub(super) fn service_entry(service: &Service) -> Option<ServiceEntry> {
    let spec = service.spec.as_ref()?;
    // A load balancer's and an external IP reach the Service's pods from
    // inside the cluster the way the ClusterIP does (kube-proxy rewrites
    // them on every node): a pod connecting to one connects to the Service.
    let load_balancer_ips = service
        .status
        .iter()
        .filter_map(|status| status.load_balancer.as_ref())
        .flat_map(|balancer| balancer.ingress.iter().flatten())
        .filter_map(|ingress| ingress.ip.as_ref());
    let mut cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .chain(spec.external_ips.iter().flatten())
        .chain(load_balancer_ips)
        .filter_map(|ip| ip.parse().ok())
        .collect();
    cluster_ips.sort();
    cluster_ips.dedup();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let number = u16::try_from(port.port).ok()?;
            let target = match &port.target_port {
                Some(IntOrString::Int(target)) => TargetPort::Number(u16::try_from(*target).ok()?),
                Some(IntOrString::String(name)) => match name.parse::<u16>() {
                    Ok(target) => TargetPort::Number(target),
                    Err(_) => TargetPort::Name(name.as_str().into()),
                },
                // No targetPort: the same as port.
                None => TargetPort::Number(number),
            };
            Some(ServicePortEntry {
                name: port.name.as_deref().unwrap_or_default().into(),
                port: number,
                // Another name is no protocol a cluster admits: no port.
                protocol: Protocol::from_policy_name(port.protocol.as_deref().unwrap_or("TCP"))?,
                target,
            })
        })
        .collect();
    Some(ServiceEntry {
        namespace: service.metadata.namespace.clone().unwrap_or_default(),
        name: service.metadata.name.clone().unwrap_or_default(),
        cluster_ips,
        selector: Labels::new(labels_from_kubernetes(spec.selector.as_ref())),
        ports,
        endpoint_slices: None,
        selected: Default::default(),
    })
}

/// The pods and ports of a selector-less Service's EndpointSlices (the
/// slices carry the label `kubernetes.io/service-name`).
pub(super) fn add_endpoint_slices(entry: &mut ServiceEntry, slices: &[EndpointSlice]) {
    let of_service = slices.iter().filter(|slice| {
        slice.metadata.namespace.as_deref() == Some(entry.namespace.as_str())
            && slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get("kubernetes.io/service-name"))
                == Some(&entry.name)
    });
    let mut backends = SliceBackends::default();
    for slice in of_service {
        for port in slice.ports.iter().flatten() {
            if let Some(number) = port.port.and_then(|number| u16::try_from(number).ok()) {
                backends
                    .ports
                    .insert(port.name.clone().unwrap_or_default(), number);
            }
        }
        let pods = slice
            .endpoints
            .iter()
            .filter_map(|endpoint| endpoint.target_ref.as_ref())
            .filter(|target| target.kind.as_deref() == Some("Pod"))
            .filter_map(|target| target.name.clone());
        backends.pods.extend(pods);
    }
    backends.pods.sort();
    backends.pods.dedup();
    if !backends.pods.is_empty() || !backends.ports.is_empty() {
        entry.endpoint_slices = Some(Box::new(backends));
    }
}
