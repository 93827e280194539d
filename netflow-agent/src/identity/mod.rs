//! Naming both ends of a flow the way Kubernetes users name things.
//!
//! - The local end by its cgroup: kubelet's path names the pod, the
//!   inventory names the pod's workload. A cgroup that is not a pod's is the
//!   node itself (kubelet, hostNetwork processes without a pod cgroup).
//! - The remote end by IP, at the time of the flow: a Service's ClusterIP
//!   stands for the workloads it selects, on their pod port (targetPort); a
//!   pod IP for its workload while that pod held it; a node address for the
//!   node; the metadata service is its own kind; anything else is external,
//!   named by the DNS answers seen for it, else by address.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
};

pub mod kubelet_cgroups;

use kubelet_cgroups::pod_of_cgroup;

use crate::{
    inventory::{Inventory, WorkloadRef},
    model::{DnsAnswer, Endpoint, EndpointKind, LabelMap},
};

/// Cloud metadata and credential services: never to be allowed, always to
/// be reported. 169.254.169.254 (AWS, GCP, Azure, OpenStack), 169.254.169.252
/// (GKE's metadata server, port 988), 169.254.170.2 and 169.254.170.23
/// (ECS task credentials, EKS Pod Identity), fd00:ec2::254 and fd00:ec2::23
/// (AWS over IPv6), 100.100.100.200 (Alibaba Cloud).
pub const METADATA_ADDRESSES: [IpAddr; 7] = [
    v4(169, 254, 169, 254),
    v4(169, 254, 169, 252),
    v4(169, 254, 170, 2),
    v4(169, 254, 170, 23),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
    v4(100, 100, 100, 200),
];

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Asked for the remote end of nearly every record a build reads: a
/// comparison, not a parse.
pub fn is_metadata(ip: IpAddr) -> bool {
    METADATA_ADDRESSES.contains(&ip)
}

/// 169.254.0.0/16 and fe80::/10: addresses that mean "this link", never a
/// peer a policy can name for one workload (an ipBlock of one opens the
/// node-local services of every node).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_unicast_link_local(),
    }
}

/// NodeLocal DNSCache's address on every node.
pub const NODE_LOCAL_DNS: IpAddr = v4(169, 254, 20, 10);

/// Names NodeLocal DNSCache's DaemonSet goes by (the upstream manifest's,
/// kubespray's).
pub const NODE_LOCAL_DNS_NAMES: [&str; 2] = ["node-local-dns", "nodelocaldns"];

pub fn is_node_local_dns(ip: IpAddr) -> bool {
    ip == NODE_LOCAL_DNS
}

/// The cluster's DNS servers: the kube-dns (or coredns) Services of
/// kube-system (their ClusterIPs and the pods they select), NodeLocal
/// DNSCache, and `extra` (what the user names).
pub fn dns_servers(inventory: &Inventory, extra: &[IpAddr]) -> BTreeSet<IpAddr> {
    let mut servers: BTreeSet<IpAddr> = extra.iter().copied().collect();
    servers.insert(NODE_LOCAL_DNS);
    for service in inventory.services.iter().filter(|service| {
        service.namespace == "kube-system"
            && matches!(service.name.as_str(), "kube-dns" | "coredns")
    }) {
        servers.extend(service.cluster_ips.iter().copied());
        servers.extend(
            inventory
                .selected_pods(service)
                .flat_map(|pod| pod.ips.iter().copied()),
        );
    }
    servers
}

/// Whether `answer` is believed: it came from one of the cluster's DNS
/// `servers`, or from a flow log of an earlier version, which did not
/// record the server (taken as before).
pub fn is_believed(answer: &DnsAnswer, servers: &BTreeSet<IpAddr>) -> bool {
    answer.server.is_none_or(|server| servers.contains(&server))
}

/// The names DNS answers give for addresses, from the cluster's DNS only
/// (an answer a socket asked for, but from another server, may be a pod
/// playing DNS); and how many answers were not believed. Answers without a
/// server (flow logs of earlier versions) are taken as before.
pub fn trusted_names(
    answers: &[DnsAnswer],
    servers: &BTreeSet<IpAddr>,
) -> (BTreeMap<IpAddr, BTreeSet<String>>, u64) {
    let mut names: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    let mut untrusted = 0;
    for answer in answers {
        if is_believed(answer, servers) {
            names
                .entry(answer.ip)
                .or_default()
                .insert(answer.name.clone());
        } else {
            untrusted += 1;
        }
    }
    (names, untrusted)
}

/// Names one client workload may hold, at most: past it, its further
/// answers name nothing for it (and are counted).
pub const DNS_NAMES_PER_CLIENT: usize = 4096;

/// Names by the workload that resolved them: (client endpoint id, address)
/// -> names. Answers whose asker is unknown (flow logs of earlier versions)
/// are filed under the empty id and count for every client.
pub type ClientNames = BTreeMap<(String, IpAddr), BTreeSet<String>>;

/// The trusted answers of `answers` (see [`trusted_names`]) filed by the
/// workload whose socket asked, each workload holding at most
/// [`DNS_NAMES_PER_CLIENT`] names; and how many answers went over that cap.
pub fn names_by_client(
    inventory: &Inventory,
    answers: &[DnsAnswer],
    servers: &BTreeSet<IpAddr>,
) -> (ClientNames, u64) {
    let empty = BTreeMap::new();
    let identity = Identity::new(inventory, &empty);
    let unspecified = IpAddr::from([0, 0, 0, 0]);
    let mut by_client = ClientNames::new();
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    let mut over_cap = 0;
    for answer in answers {
        if !is_believed(answer, servers) {
            continue;
        }
        let client = match &answer.client {
            Some(cgroup) => match identity.local(Some(cgroup), unspecified) {
                Some(endpoint) => endpoint.id,
                // A socket no pod owns: its answers name nothing.
                None => continue,
            },
            None => String::new(),
        };
        let names = by_client.entry((client.clone(), answer.ip)).or_default();
        if names.contains(&answer.name) {
            continue;
        }
        let count = held.entry(client).or_default();
        if *count >= DNS_NAMES_PER_CLIENT {
            over_cap += 1;
            continue;
        }
        *count += 1;
        names.insert(answer.name.clone());
    }
    (by_client, over_cap)
}

pub struct Identity<'a> {
    inventory: &'a Inventory,
    /// Names the cluster's DNS gave for external addresses.
    dns: &'a BTreeMap<IpAddr, BTreeSet<String>>,
    /// The same names by the workload that resolved them; without it every
    /// client shares `dns`.
    by_client: Option<&'a ClientNames>,
    /// NodeLocal DNSCache's endpoint (see [`Identity::node_local_dns`]).
    node_local_dns: Endpoint,
}

/// One remote end as a server: the endpoint and the port traffic reaches it on.
pub type Target = (Endpoint, u16);

impl<'a> Identity<'a> {
    pub fn new(inventory: &'a Inventory, dns: &'a BTreeMap<IpAddr, BTreeSet<String>>) -> Self {
        Self {
            inventory,
            dns,
            by_client: None,
            node_local_dns: node_local_dns_endpoint(inventory),
        }
    }

    /// Names belong to the workload that resolved them (see
    /// [`names_by_client`]).
    pub fn with_client_names(mut self, by_client: &'a ClientNames) -> Self {
        self.by_client = Some(by_client);
        self
    }

    /// The names `client` resolved for `ip`: what a policy of `client` may
    /// name that address by.
    pub fn names_resolved_by(&self, client: &str, ip: IpAddr) -> BTreeSet<String> {
        match self.by_client {
            None => self.dns.get(&ip).cloned().unwrap_or_default(),
            Some(by_client) => [client, ""]
                .iter()
                .filter_map(|id| by_client.get(&(id.to_string(), ip)))
                .flatten()
                .cloned()
                .collect(),
        }
    }

    /// The local end: by cgroup path (a pod's), else the node at `local_ip`.
    /// `None` when neither names it.
    pub fn local(&self, cgroup: Option<&str>, local_ip: IpAddr) -> Option<Endpoint> {
        self.local_named(cgroup, local_ip)
            .map(|named| self.endpoint(named))
    }

    /// As [`Identity::local`], a workload left unbuilt (see [`Named`]).
    pub fn local_named(&self, cgroup: Option<&str>, local_ip: IpAddr) -> Option<Named<'a>> {
        if is_node_local_dns(local_ip) {
            // The DNS cache answering on its own address (hostNetwork):
            // named as its clients name it, not as the node.
            return Some(Named::Other(self.node_local_dns()));
        }
        if let Some(pod) = cgroup.and_then(pod_of_cgroup) {
            let entry = self.inventory.pod_by_uid(&pod.pod_uid)?;
            if entry.host_network {
                // Seen from anywhere else this traffic comes from the node's
                // address: name it the node, and note the workload on it.
                let node = entry
                    .node
                    .as_deref()
                    .and_then(|name| self.inventory.nodes.iter().find(|node| node.name == name))
                    .or_else(|| self.inventory.node_by_ip(local_ip))?;
                let mut endpoint = node_endpoint(&node.name, &node.addresses);
                let workload = &entry.workload;
                endpoint.host_workloads.insert(format!(
                    "{}/{}/{}",
                    workload.namespace, workload.kind, workload.name
                ));
                return Some(Named::Other(endpoint));
            }
            return Some(Named::Workload(&entry.workload));
        }
        self.inventory
            .node_by_ip(local_ip)
            .map(|node| Named::Other(node_endpoint(&node.name, &node.addresses)))
    }

    /// The mesh sidecar of the pod that owns `cgroup`, if it runs one.
    pub fn mesh_of(&self, cgroup: Option<&str>) -> Option<&'a crate::inventory::MeshSidecar> {
        let pod = cgroup.and_then(pod_of_cgroup)?;
        self.inventory.pod_by_uid(&pod.pod_uid)?.mesh.as_deref()
    }

    /// The remote end as a server, reached at `port`: a Service expands to the
    /// workloads behind it on their pod port.
    pub fn remote_server(&self, ip: IpAddr, port: u16, protocol: &str, at: i64) -> Vec<Target> {
        self.remote_server_named(ip, port, protocol, at)
            .into_iter()
            .map(|(named, port)| (self.endpoint(named), port))
            .collect()
    }

    /// As [`Identity::remote_server`], workloads left unbuilt.
    pub fn remote_server_named(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: &str,
        at: i64,
    ) -> Vec<(Named<'a>, u16)> {
        if let Some(service) = self.inventory.service_by_ip(ip) {
            return self
                .inventory
                .service_backends_of(service, port, protocol)
                .into_iter()
                .map(|(workload, target)| (Named::Workload(workload), target))
                .collect();
        }
        vec![(self.remote_named(ip, at), port)]
    }

    /// Whether `ip` is a Service's: its backends do not depend on time, so a
    /// caller may keep [`Identity::remote_server_named`]'s answer.
    pub fn is_service(&self, ip: IpAddr) -> bool {
        self.inventory.service_by_ip(ip).is_some()
    }

    /// The remote end by address alone (as a client, or a non-Service server).
    pub fn remote(&self, ip: IpAddr, at: i64) -> Endpoint {
        self.endpoint(self.remote_named(ip, at))
    }

    /// As [`Identity::remote`], a workload left unbuilt.
    pub fn remote_named(&self, ip: IpAddr, at: i64) -> Named<'a> {
        if is_node_local_dns(ip) {
            return Named::Other(self.node_local_dns());
        }
        if is_metadata(ip) {
            return Named::Other(Endpoint {
                kind: EndpointKind::Metadata,
                ..plain(format!("metadata:{ip}"), "metadata-service", ip)
            });
        }
        if let Some(pod) = self.inventory.pod_by_ip(ip, at) {
            return Named::Workload(&pod.workload);
        }
        if let Some(node) = self.inventory.node_by_ip(ip) {
            return Named::Other(node_endpoint(&node.name, &node.addresses));
        }
        if self.inventory.service_by_ip(ip).is_some() {
            // A ClusterIP seen from the server side cannot happen; from the
            // client side it has no backend on this port: name it, flag it.
            return Named::Other(Endpoint {
                kind: EndpointKind::Unresolved,
                ..plain(format!("unresolved:{ip}"), &ip.to_string(), ip)
            });
        }
        let names = self.dns.get(&ip).cloned().unwrap_or_default();
        let name = names
            .iter()
            .next()
            .cloned()
            .unwrap_or_else(|| ip.to_string());
        Named::Other(Endpoint {
            kind: EndpointKind::External,
            dns_names: names,
            ..plain(format!("external:{ip}"), &name, ip)
        })
    }

    /// As [`Identity::remote_named`], with the times around `at` over which
    /// `ip` names the same end (only a pod's start or end changes it).
    pub fn remote_named_steady(&self, ip: IpAddr, at: i64) -> (Named<'a>, Range<i64>) {
        (
            self.remote_named(ip, at),
            self.inventory.ip_holders_steady(ip, at),
        )
    }

    /// NodeLocal DNSCache: the same address on every node, each pod's
    /// queries answered by its own node's cache (a hostNetwork DaemonSet,
    /// named here when the inventory has it). One endpoint for all nodes: a
    /// policy cannot tell them apart either.
    fn node_local_dns(&self) -> Endpoint {
        self.node_local_dns.clone()
    }

    /// The endpoint `named` stands for.
    pub fn endpoint(&self, named: Named<'_>) -> Endpoint {
        match named {
            Named::Workload(workload) => self.workload(workload),
            Named::Other(endpoint) => endpoint,
        }
    }

    fn workload(&self, workload: &WorkloadRef) -> Endpoint {
        Endpoint {
            id: workload_id(workload),
            kind: EndpointKind::Workload,
            namespace: Some(workload.namespace.clone()),
            name: workload.name.clone(),
            workload_kind: Some(workload.kind.clone()),
            labels: LabelMap::clone(&self.inventory.selector_of(workload)),
            addresses: BTreeSet::new(),
            dns_names: BTreeSet::new(),
            host_workloads: BTreeSet::new(),
        }
    }
}

/// An end as the inventory names it: a workload (its endpoint built only
/// when first needed: a graph build meets the same workloads millions of
/// times), or any other endpoint.
#[derive(Debug)]
pub enum Named<'a> {
    Workload(&'a WorkloadRef),
    Other(Endpoint),
}

pub fn workload_id(workload: &WorkloadRef) -> String {
    format!(
        "workload:{}/{}/{}",
        workload.namespace, workload.kind, workload.name
    )
}

/// The endpoint [`Identity::node_local_dns`] names, built once per identity:
/// in a cluster that runs the cache it stands in a good part of all records.
fn node_local_dns_endpoint(inventory: &Inventory) -> Endpoint {
    let host_workloads = inventory
        .pods_in("kube-system")
        .filter(|pod| {
            pod.workload.kind == "DaemonSet"
                && NODE_LOCAL_DNS_NAMES.contains(&pod.workload.name.as_str())
        })
        .map(|pod| format!("kube-system/DaemonSet/{}", pod.workload.name))
        .collect();
    Endpoint {
        id: format!("node-local-dns:{NODE_LOCAL_DNS}"),
        kind: EndpointKind::Node,
        name: "node-local-dns".into(),
        host_workloads,
        ..plain(String::new(), "", NODE_LOCAL_DNS)
    }
}

fn node_endpoint(name: &str, addresses: &[IpAddr]) -> Endpoint {
    Endpoint {
        id: format!("node:{name}"),
        kind: EndpointKind::Node,
        namespace: None,
        name: name.to_string(),
        workload_kind: None,
        labels: LabelMap::new(),
        addresses: addresses.iter().map(IpAddr::to_string).collect(),
        dns_names: BTreeSet::new(),
        host_workloads: BTreeSet::new(),
    }
}

fn plain(id: String, name: &str, ip: IpAddr) -> Endpoint {
    Endpoint {
        id,
        kind: EndpointKind::External,
        namespace: None,
        name: name.to_string(),
        workload_kind: None,
        labels: LabelMap::new(),
        addresses: BTreeSet::from([ip.to_string()]),
        dns_names: BTreeSet::new(),
        host_workloads: BTreeSet::new(),
    }
}

/// An end that could not be named (shown in the graph, never dropped).
pub fn unresolved_local(cgroup: Option<&str>, ip: IpAddr) -> Endpoint {
    let what = cgroup.map_or_else(|| ip.to_string(), str::to_string);
    Endpoint {
        kind: EndpointKind::Unresolved,
        ..plain(format!("unresolved:{what}"), &what, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cluster_dns_names_addresses() {
        let inventory = Inventory::parse(
            r#"{"kind":"List","items":[
          {"kind":"Pod","metadata":{"name":"coredns-1","namespace":"kube-system","uid":"1","labels":{"k8s-app":"kube-dns"}},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.2"}},
          {"kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},
            "spec":{"clusterIP":"10.96.0.10","selector":{"k8s-app":"kube-dns"},"ports":[{"port":53,"protocol":"UDP"}]}}
        ]}"#,
        )
        .unwrap();
        let extra: IpAddr = "192.0.2.53".parse().unwrap();
        let servers = dns_servers(&inventory, &[extra]);
        let answer = |name: &str, server: Option<&str>| DnsAnswer {
            name: name.into(),
            ip: "203.0.113.10".parse().unwrap(),
            server: server.map(|s| s.parse().unwrap()),
            client: None,
        };
        let answers = [
            answer("service-ip.example", Some("10.96.0.10")),
            answer("pod-ip.example", Some("10.244.0.2")),
            answer("node-local.example", Some("169.254.20.10")),
            answer("flag.example", Some("192.0.2.53")),
            answer("legacy-log.example", None),
            answer("a-pod-playing-dns.example", Some("10.244.0.9")),
        ];
        let (names, untrusted) = trusted_names(&answers, &servers);
        assert_eq!(untrusted, 1);
        let named: Vec<&str> = names[&answers[0].ip].iter().map(String::as_str).collect();
        assert_eq!(
            named,
            vec![
                "flag.example",
                "legacy-log.example",
                "node-local.example",
                "pod-ip.example",
                "service-ip.example"
            ]
        );
    }
}
