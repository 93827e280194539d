//! From a scenario to a concrete cluster: which pods run on which node with
//! which address, Service ClusterIPs, the DNS pod, and the inventory a
//! `kubectl get ... -o json` of that cluster would print.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use super::scenario::{
    Destination, DnsMode, ExternalSpec, IpFamily, IpFamilyPolicy, KubeProxy, PortSpec, Scenario,
    ServicePortSpec, ServiceType, TrafficPolicy, istio, parse_destination, protocol_of,
};

/// Where the lab's cgroups live, below the cgroup v2 mount. The agent
/// attaches here, so it sees the lab's pods and nothing else.
pub const LAB_CGROUP: &str = "netflow-lab";
/// Every network namespace the lab makes starts with this.
pub const NETNS_PREFIX: &str = "nfl-";
/// The cluster DNS, as kubeadm sets it up.
pub const DNS_NAMESPACE: &str = "kube-system";
pub const DNS_NAME: &str = "coredns";
pub const DNS_SERVICE: &str = "kube-dns";
/// NodeLocal DNSCache's DaemonSet, as its upstream manifest names it.
pub const NODE_LOCAL_DNS: &str = "node-local-dns";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// A fixed start time for the lab's objects; pods get theirs at run time.
const CREATED: &str = "2026-01-01T00:00:00Z";

#[derive(Clone, Debug)]
pub struct NodePlan {
    pub name: String,
    pub index: usize,
    /// Address on the lab's fabric (the "node network").
    pub ip: Ipv4Addr,
    pub pod_subnet: (Ipv4Addr, u8),
    pub gateway: Ipv4Addr,
    /// Dual-stack: the node's IPv6 address, its pods' /64 and its gateway.
    pub ipv6: Option<Ipv6Addr>,
    pub pod_subnet_v6: Option<(Ipv6Addr, u8)>,
    pub gateway_v6: Option<Ipv6Addr>,
    pub netns: String,
}

#[derive(Clone, Debug)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Index into `Scenario::workloads`, or `None` for the DNS pod.
    pub workload: Option<usize>,
    pub node: usize,
    pub ip: Ipv4Addr,
    /// Dual-stack: the pod's IPv6 address (its node's for hostNetwork).
    pub ipv6: Option<Ipv6Addr>,
    pub host_network: bool,
    pub labels: BTreeMap<String, String>,
    pub listen: Vec<PortSpec>,
    /// Namespace of the pod (its node's for hostNetwork pods).
    pub netns: String,
    /// Cgroup of its first app container, below the cgroup v2 mount
    /// (kubelet's cgroupfs layout).
    pub cgroup: String,
    /// The pod's own cgroup, the parent of its containers'.
    pub pod_cgroup: String,
    /// Every container, app containers first, then init containers.
    pub containers: Vec<ContainerPlan>,
    pub owner: Owner,
    /// The pod (index) whose place and IP this one takes mid-run.
    pub replaces: Option<usize>,
}

/// One container of a pod: its own cgroup below the pod's.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub name: String,
    pub id: String,
    pub cgroup: String,
    pub init: bool,
}

/// The owner chain kubelet's pods carry.
#[derive(Clone, Debug)]
pub enum Owner {
    None,
    ReplicaSet {
        name: String,
        hash: String,
        deployment: String,
    },
    StatefulSet(String),
    DaemonSet(String),
    Job {
        name: String,
        cron_job: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    /// `None` for headless and ExternalName Services, and IPv6-only ones.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Dual-stack Services' (and IPv6-only ones') IPv6 ClusterIP.
    pub cluster_ip_v6: Option<Ipv6Addr>,
    pub families: Vec<IpFamily>,
    pub family_policy: IpFamilyPolicy,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortSpec>,
    /// An ExternalName Service's host.
    pub external_name: Option<String>,
    pub service_type: ServiceType,
    pub traffic_policy: TrafficPolicy,
    /// A LoadBalancer Service's own address.
    pub load_balancer_ip: Option<Ipv4Addr>,
}

impl ServicePlan {
    /// Its name in the cluster DNS.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }
}

#[derive(Clone, Debug)]
pub struct ExternalPlan {
    pub spec: ExternalSpec,
    pub netns: String,
}

#[derive(Clone, Debug)]
pub struct LabPlan {
    pub scenario: Scenario,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    pub externals: Vec<ExternalPlan>,
    pub dns_ip: Ipv4Addr,
}

/// A DNS server's container ports.
fn dns_ports() -> Vec<PortSpec> {
    ["UDP", "TCP"]
        .into_iter()
        .map(|protocol| PortSpec {
            port: 53,
            protocol: protocol.into(),
            name: Some(if protocol == "UDP" { "dns" } else { "dns-tcp" }.into()),
        })
        .collect()
}

/// The first address of `cidr`, of the family `A` (`Ipv4Addr`, `Ipv6Addr`).
fn cidr_base<A: std::str::FromStr>(cidr: &str) -> anyhow::Result<A> {
    let (address, _) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow!("{cidr:?} is not a CIDR"))?;
    address.parse().map_err(|_| {
        anyhow!(
            "{cidr:?} is not an {} CIDR",
            std::any::type_name::<A>()
                .rsplit("::")
                .next()
                .unwrap_or("IP")
        )
    })
}

fn offset(base: Ipv4Addr, by: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + by)
}

fn offset6(base: Ipv6Addr, by: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(base) + by)
}

/// Stable pseudo-random hex, so the same scenario gives the same names.
fn hex(seed: &str, digits: usize) -> String {
    let mut out = String::new();
    let mut round = 0u64;
    while out.len() < digits {
        let mut hasher = DefaultHasher::new();
        (seed, round).hash(&mut hasher);
        out.push_str(&format!("{:016x}", hasher.finish()));
        round += 1;
    }
    out.truncate(digits);
    out
}

fn uid(seed: &str) -> String {
    let h = hex(seed, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl LabPlan {
    pub fn new(scenario: &Scenario) -> anyhow::Result<Self> {
        if scenario.kube_proxy == KubeProxy::Ipvs {
            // Seen from a pod's hook IPVS is iptables' picture (the pod
            // sends to the ClusterIP, the node rewrites it); the lab would
            // need the kernel's IP_VS to build it, which it does not use.
            bail!(
                "kubeProxy: ipvs is not built by the lab (it needs the kernel's IP Virtual Server); use iptables, nftables or socket"
            );
        }
        let pod_base = cidr_base(&scenario.pod_cidr)?;
        let service_base = cidr_base(&scenario.service_cidr)?;
        let dual = scenario.has_ipv6();
        let pod_base_v6 = dual.then(|| cidr_base(&scenario.pod_cidr_v6)).transpose()?;
        let service_base_v6 = dual
            .then(|| cidr_base(&scenario.service_cidr_v6))
            .transpose()?;
        let nodes: Vec<NodePlan> = scenario
            .nodes
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let subnet = offset(pod_base, (index as u32) << 8);
                NodePlan {
                    name: name.clone(),
                    index,
                    ip: Ipv4Addr::new(172, 30, 0, 10 + index as u8),
                    pod_subnet: (subnet, 24),
                    gateway: offset(subnet, 1),
                    ipv6: dual.then(|| {
                        Ipv6Addr::new(0xfd00, 0x172, 0x30, 0, 0, 0, 0, 0x10 + index as u16)
                    }),
                    pod_subnet_v6: pod_base_v6
                        .map(|base| (offset6(base, (index as u128) << 64), 64)),
                    gateway_v6: pod_base_v6.map(|base| offset6(base, ((index as u128) << 64) + 1)),
                    netns: format!("{NETNS_PREFIX}n{index}"),
                }
            })
            .collect();

        let mut pods = Vec::new();
        let mut next_host = vec![10u32; nodes.len()];
        let mut round_robin = 0usize;
        let mut place =
            |node: Option<usize>, host_network: bool| -> anyhow::Result<(usize, Ipv4Addr)> {
                let node = node.unwrap_or_else(|| {
                    round_robin += 1;
                    (round_robin - 1) % nodes.len()
                });
                if host_network {
                    return Ok((node, nodes[node].ip));
                }
                let host = next_host[node];
                if host > 250 {
                    bail!("node {} has no pod addresses left", nodes[node].name);
                }
                next_host[node] += 1;
                Ok((node, offset(nodes[node].pod_subnet.0, host)))
            };

        // The cluster DNS first: every scenario has one.
        let dns_labels = BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]);
        let (node, ip) = place(Some(0), false)?;
        pods.push(pod_plan(
            DNS_NAMESPACE,
            DNS_NAME,
            None,
            node,
            ip,
            false,
            &dns_labels,
            dns_ports(),
            &nodes,
            0,
            "Deployment",
            &[("coredns", false)],
        ));

        for (index, workload) in scenario.workloads.iter().enumerate() {
            if workload.replaces.is_some() {
                continue; // placed below, where the pod it replaces is
            }
            let pinned = workload
                .node
                .as_ref()
                .and_then(|name| nodes.iter().position(|node| &node.name == name));
            let replicas: Vec<Option<usize>> = if workload.kind == "DaemonSet" {
                (0..nodes.len()).map(Some).collect()
            } else {
                (0..workload.replicas).map(|_| pinned).collect()
            };
            for (replica, node) in replicas.into_iter().enumerate() {
                let (node, ip) = place(node, workload.host_network)?;
                pods.push(pod_plan(
                    &workload.namespace,
                    &workload.name,
                    Some(index),
                    node,
                    ip,
                    workload.host_network,
                    &workload.labels,
                    workload.listen.clone(),
                    &nodes,
                    replica,
                    &workload.kind,
                    &workload.containers(),
                ));
            }
        }

        if scenario.dns == DnsMode::Nodelocal {
            // NodeLocal DNSCache: a hostNetwork DaemonSet, one pod a node.
            let labels = BTreeMap::from([("k8s-app".to_string(), NODE_LOCAL_DNS.to_string())]);
            for node in &nodes {
                pods.push(pod_plan(
                    DNS_NAMESPACE,
                    NODE_LOCAL_DNS,
                    None,
                    node.index,
                    node.ip,
                    true,
                    &labels,
                    dns_ports(),
                    &nodes,
                    node.index,
                    "DaemonSet",
                    &[("node-cache", false)],
                ));
            }
        }

        for (index, workload) in scenario.workloads.iter().enumerate() {
            let Some(replaced) = &workload.replaces else {
                continue;
            };
            let old = pods
                .iter()
                .position(|pod: &PodPlan| {
                    pod.workload
                        .map(|w| &scenario.workloads[w])
                        .is_some_and(|w| format!("{}/{}", w.namespace, w.name) == *replaced)
                })
                .ok_or_else(|| anyhow!("{replaced} has no pod to replace"))?;
            let (node, ip) = (pods[old].node, pods[old].ip);
            let mut pod = pod_plan(
                &workload.namespace,
                &workload.name,
                Some(index),
                node,
                ip,
                false,
                &workload.labels,
                workload.listen.clone(),
                &nodes,
                0,
                &workload.kind,
                &workload.containers(),
            );
            pod.replaces = Some(old);
            pods.push(pod);
        }

        for pod in &mut pods {
            pod.ipv6 = match (pod.host_network, nodes[pod.node].pod_subnet_v6) {
                (true, _) => nodes[pod.node].ipv6,
                // The same host number as its IPv4 address in the node's /24.
                (false, Some((base, _))) => Some(offset6(base, u128::from(pod.ip.octets()[3]))),
                (false, None) => None,
            };
        }
        let mut services = vec![ServicePlan {
            namespace: DNS_NAMESPACE.into(),
            name: DNS_SERVICE.into(),
            // SingleStack, the cluster's first family (kubeadm's way).
            cluster_ip: (scenario.primary_family() == IpFamily::IPv4)
                .then(|| offset(service_base, 10)),
            cluster_ip_v6: service_base_v6
                .filter(|_| scenario.primary_family() == IpFamily::IPv6)
                .map(|base| offset6(base, 10)),
            families: vec![scenario.primary_family()],
            family_policy: IpFamilyPolicy::SingleStack,
            external_name: None,
            selector: dns_labels,
            ports: vec![
                ServicePortSpec {
                    port: 53,
                    target_port: None,
                    protocol: "UDP".into(),
                    name: Some("dns".into()),
                    node_port: None,
                },
                ServicePortSpec {
                    port: 53,
                    target_port: None,
                    protocol: "TCP".into(),
                    name: Some("dns-tcp".into()),
                    node_port: None,
                },
            ],
            service_type: ServiceType::ClusterIP,
            traffic_policy: TrafficPolicy::Cluster,
            load_balancer_ip: None,
        }];
        let mut next_node_port = 30000u16;
        let taken: Vec<u16> = scenario
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .filter_map(|p| p.node_port)
            .collect();
        for (index, service) in scenario.services.iter().enumerate() {
            let exposed = matches!(
                service.service_type,
                ServiceType::NodePort | ServiceType::LoadBalancer
            );
            let families = scenario.service_families(service);
            let has_ip = !service.is_headless() && service.external_name.is_none();
            let mut ports = service.ports.clone();
            for port in ports.iter_mut().filter(|_| exposed) {
                if port.node_port.is_none() {
                    while taken.contains(&next_node_port) {
                        next_node_port += 1;
                    }
                    port.node_port = Some(next_node_port);
                    next_node_port += 1;
                }
            }
            services.push(ServicePlan {
                service_type: service.service_type,
                traffic_policy: service.external_traffic_policy,
                // On the node network, announced by the first node (as
                // MetalLB's layer 2 mode does).
                load_balancer_ip: (service.service_type == ServiceType::LoadBalancer)
                    .then(|| Ipv4Addr::new(172, 30, 0, 200 + index as u8)),
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                // Addresses stay those of the Service's place in the list.
                cluster_ip: (has_ip && families.contains(&IpFamily::IPv4))
                    .then(|| offset(service_base, 20 + index as u32)),
                cluster_ip_v6: service_base_v6
                    .filter(|_| has_ip && families.contains(&IpFamily::IPv6))
                    .map(|base| offset6(base, 20 + index as u128)),
                families,
                family_policy: service.ip_family_policy,
                external_name: service.external_name.clone(),
                selector: service.selector.clone(),
                ports,
            });
        }
        let externals = scenario
            .externals
            .iter()
            .enumerate()
            .map(|(index, spec)| ExternalPlan {
                spec: spec.clone(),
                netns: format!("{NETNS_PREFIX}x{index}"),
            })
            .collect();
        Ok(Self {
            scenario: scenario.clone(),
            nodes,
            pods,
            dns_ip: offset(service_base, 10),
            services,
            externals,
        })
    }

    /// Where pods send their DNS queries: kube-dns, or their node's cache.
    pub fn client_dns(&self) -> SocketAddr {
        match self.scenario.dns {
            DnsMode::Coredns => {
                let kube_dns = &self.services[0];
                let ip: IpAddr = match (kube_dns.cluster_ip, kube_dns.cluster_ip_v6) {
                    (Some(ip), _) => ip.into(),
                    (None, Some(ip)) => ip.into(),
                    (None, None) => self.dns_ip.into(),
                };
                SocketAddr::new(ip, 53)
            }
            DnsMode::Nodelocal => SocketAddr::new(netflow_agent::identity::NODE_LOCAL_DNS, 53),
        }
    }

    /// The address a traffic step's `to` names (a DNS name as the lab's
    /// DNS answers it).
    pub fn destination(&self, to: &str) -> anyhow::Result<SocketAddr> {
        // The cluster's first family first; a Service of the other family
        // only has its address in that one.
        let primary = self.scenario.primary_family();
        let other = match primary {
            IpFamily::IPv4 => IpFamily::IPv6,
            IpFamily::IPv6 => IpFamily::IPv4,
        };
        self.destination_in(to, primary)
            .or_else(|_| self.destination_in(to, other))
    }

    /// A pod's addresses, in the cluster's family order (a hostNetwork
    /// pod's are its node's).
    pub fn pod_ips(&self, pod: &PodPlan) -> Vec<IpAddr> {
        self.scenario
            .ip_families
            .iter()
            .filter_map(|family| match family {
                IpFamily::IPv4 => Some(IpAddr::from(pod.ip)),
                IpFamily::IPv6 => pod.ipv6.map(IpAddr::from),
            })
            .collect()
    }

    /// The address `to` names in address family `family`.
    pub fn destination_in(&self, to: &str, family: IpFamily) -> anyhow::Result<SocketAddr> {
        let v6 = family == IpFamily::IPv6;
        let pick = |v4: Option<Ipv4Addr>, v6_address: Option<Ipv6Addr>| -> Option<IpAddr> {
            if v6 {
                v6_address.map(IpAddr::from)
            } else {
                v4.map(IpAddr::from)
            }
        };
        let address = match parse_destination(to).map_err(anyhow::Error::msg)? {
            Destination::Service {
                namespace,
                name,
                port,
            } => self
                .service(&namespace, &name)
                .and_then(|s| Some(SocketAddr::new(pick(s.cluster_ip, s.cluster_ip_v6)?, port))),
            Destination::Workload {
                namespace,
                name,
                port,
            } => self
                .pods
                .iter()
                .find(|pod| self.workload_of(pod) == Some((namespace.as_str(), name.as_str())))
                .and_then(|pod| {
                    let v4 = self.scenario.has_ipv4().then_some(pod.ip);
                    Some(SocketAddr::new(pick(v4, pod.ipv6)?, port))
                }),
            Destination::External { name, port } => self
                .externals
                .iter()
                .find(|e| e.spec.name == name && e.spec.ip.is_ipv6() == v6)
                .map(|e| SocketAddr::new(e.spec.ip, port)),
            Destination::Dns { name, port } => {
                let name = name.trim_end_matches('.');
                let name = self
                    .dns_aliases()
                    .into_iter()
                    .find(|(alias, _)| alias == name)
                    .map_or(name.to_string(), |(_, target)| target);
                self.dns_records()
                    .into_iter()
                    .find(|(record, ip)| *record == name && ip.is_ipv6() == v6)
                    .map(|(_, ip)| SocketAddr::new(ip, port))
            }
            Destination::Address { ip, port } => Some(SocketAddr::new(ip, port)),
            Destination::Node { name, port } => self
                .nodes
                .iter()
                .find(|node| node.name == name)
                .and_then(|node| {
                    let v4 = self.scenario.has_ipv4().then_some(node.ip);
                    Some(SocketAddr::new(pick(v4, node.ipv6)?, port))
                }),
            Destination::LoadBalancer {
                namespace,
                name,
                port,
            } => self
                .service(&namespace, &name)
                .and_then(|s| Some(SocketAddr::new(pick(s.load_balancer_ip, None)?, port))),
        };
        address.with_context(|| format!("{to}: the lab has no such destination over {family:?}"))
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServicePlan> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// `(namespace, name)` of the pod's workload (`None` for the DNS pod).
    pub fn workload_of(&self, pod: &PodPlan) -> Option<(&str, &str)> {
        pod.workload
            .map(|w| &self.scenario.workloads[w])
            .map(|w| (w.namespace.as_str(), w.name.as_str()))
    }

    pub fn backends(&self, service: &ServicePlan) -> Vec<&PodPlan> {
        self.pods
            .iter()
            .filter(|pod| {
                pod.namespace == service.namespace
                    && service
                        .selector
                        .iter()
                        .all(|(key, value)| pod.labels.get(key) == Some(value))
            })
            .collect()
    }

    /// The pod port a Service port reaches on `pod` (numeric or named targetPort).
    pub fn target_port(port: &ServicePortSpec, pod: &PodPlan) -> Option<u16> {
        match &port.target_port {
            None => Some(port.port),
            Some(serde_norway::Value::Number(number)) => {
                number.as_u64().and_then(|n| u16::try_from(n).ok())
            }
            Some(serde_norway::Value::String(name)) => match name.parse() {
                Ok(number) => Some(number),
                Err(_) => pod
                    .listen
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name))
                    .map(|p| p.port),
            },
            Some(_) => None,
        }
    }

    /// Each Service port's backends (pod IP and target port): what kube-proxy
    /// (or its replacement) sends a ClusterIP's connections to.
    pub fn service_ports(&self) -> Vec<crate::socket_lb::ServiceEntry> {
        let mut entries = Vec::new();
        for service in &self.services {
            let addresses = [
                service.cluster_ip.map(|ip| (IpAddr::from(ip), false)),
                service.cluster_ip_v6.map(|ip| (IpAddr::from(ip), true)),
            ];
            for (cluster_ip, v6) in addresses.into_iter().flatten() {
                for port in &service.ports {
                    let backends = self
                        .backends(service)
                        .into_iter()
                        .filter_map(|pod| {
                            let ip: IpAddr = if v6 { pod.ipv6?.into() } else { pod.ip.into() };
                            Some(SocketAddr::new(ip, Self::target_port(port, pod)?))
                        })
                        .collect();
                    entries.push(crate::socket_lb::ServiceEntry {
                        service: SocketAddr::new(cluster_ip, port.port),
                        protocol: protocol_of(&port.protocol).unwrap_or("TCP").into(),
                        backends,
                    });
                }
            }
        }
        entries
    }

    /// Names the lab's DNS answers: Services and the scenario's externals.
    /// A Service with a ClusterIP by it; a headless one by each of its
    /// pods' addresses, and each StatefulSet pod's own name
    /// (`POD.SERVICE.NS.svc...`) by its address.
    pub fn dns_records(&self) -> Vec<(String, IpAddr)> {
        let mut records: Vec<(String, IpAddr)> = Vec::new();
        for service in &self.services {
            if service.cluster_ip.is_some() || service.cluster_ip_v6.is_some() {
                records.extend(service.cluster_ip.map(|ip| (service.dns_name(), ip.into())));
                records.extend(
                    service
                        .cluster_ip_v6
                        .map(|ip| (service.dns_name(), ip.into())),
                );
                continue;
            }
            if service.external_name.is_some() {
                continue;
            }
            for pod in self.backends(service) {
                if pod.replaces.is_some() {
                    continue;
                }
                let addresses: Vec<IpAddr> = service
                    .families
                    .iter()
                    .filter_map(|family| match family {
                        IpFamily::IPv4 => Some(pod.ip.into()),
                        IpFamily::IPv6 => pod.ipv6.map(IpAddr::from),
                    })
                    .collect();
                for address in addresses {
                    records.push((service.dns_name(), address));
                    if matches!(pod.owner, Owner::StatefulSet(_)) {
                        records.push((format!("{}.{}", pod.name, service.dns_name()), address));
                    }
                }
            }
        }
        records.extend(
            self.externals
                .iter()
                .filter_map(|e| Some((e.spec.dns.clone()?, e.spec.ip))),
        );
        records
    }

    /// ExternalName Services' names, each an alias (CNAME) of its host.
    pub fn dns_aliases(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter_map(|s| Some((s.dns_name(), s.external_name.clone()?)))
            .collect()
    }

    /// The cluster as `kubectl get namespaces,nodes,pods,services,replicasets,
    /// deployments,statefulsets,daemonsets,jobs,cronjobs -A -o json` prints it.
    /// `replaced_at`: for each replaced pod (by index), when it was replaced.
    pub fn inventory(&self, pod_start: &str, replaced_at: &BTreeMap<usize, String>) -> Value {
        let mut items = Vec::new();
        let mut namespaces: Vec<(String, BTreeMap<String, String>)> = self
            .scenario
            .namespaces
            .iter()
            .map(|ns| (ns.name.clone(), ns.labels.clone()))
            .collect();
        if !namespaces.iter().any(|(name, _)| name == DNS_NAMESPACE) {
            namespaces.push((DNS_NAMESPACE.into(), BTreeMap::new()));
        }
        for (name, mut labels) in namespaces {
            labels.insert("kubernetes.io/metadata.name".into(), name.clone());
            items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": uid(&format!("ns/{name}")), "labels": labels, "creationTimestamp": CREATED}}));
        }
        for node in &self.nodes {
            let v4 = self.scenario.has_ipv4();
            let pod_cidrs: Vec<String> = v4
                .then(|| format!("{}/{}", node.pod_subnet.0, node.pod_subnet.1))
                .into_iter()
                .chain(
                    node.pod_subnet_v6
                        .map(|(base, bits)| format!("{base}/{bits}")),
                )
                .collect();
            let pod_cidr = pod_cidrs.first().cloned().unwrap_or_default();
            let mut addresses: Vec<Value> = v4
                .then(|| json!({"type": "InternalIP", "address": node.ip.to_string()}))
                .into_iter()
                .collect();
            addresses.extend(
                node.ipv6
                    .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()})),
            );
            addresses.push(json!({"type": "Hostname", "address": node.name}));
            items.push(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "uid": uid(&format!("node/{}", node.name)), "creationTimestamp": CREATED},
                "spec": {"podCIDR": pod_cidr, "podCIDRs": pod_cidrs},
                "status": {"addresses": addresses}}));
        }
        let mut owners_done = std::collections::BTreeSet::new();
        for (index, pod) in self.pods.iter().enumerate() {
            let start = match pod.replaces {
                Some(old) => match replaced_at.get(&old) {
                    Some(time) => time.as_str(),
                    None => continue, // never started
                },
                None => pod_start,
            };
            items.extend(owner_objects(pod, &mut owners_done));
            let mut object = pod_object(pod, &self.pod_ips(pod), &self.nodes[pod.node].name, start);
            if let Some(end) = replaced_at.get(&index) {
                object["metadata"]["deletionTimestamp"] = json!(end);
            }
            items.push(object);
        }
        for service in &self.services {
            let ports: Vec<Value> = service
                .ports
                .iter()
                .map(|port| {
                    let target = match &port.target_port {
                        None => json!(port.port),
                        Some(serde_norway::Value::Number(number)) => json!(number.as_u64()),
                        Some(serde_norway::Value::String(name)) => json!(name),
                        Some(_) => Value::Null,
                    };
                    let mut value = json!({"port": port.port, "targetPort": target,
                        "protocol": protocol_of(&port.protocol).unwrap_or("TCP")});
                    if let Some(name) = &port.name {
                        value["name"] = json!(name);
                    }
                    if let Some(node_port) = port.node_port {
                        value["nodePort"] = json!(node_port);
                    }
                    value
                })
                .collect();
            let spec = match (&service.external_name, service.cluster_ip) {
                (Some(host), _) => json!({"type": "ExternalName", "externalName": host}),
                (None, _) if service.cluster_ip.is_some() || service.cluster_ip_v6.is_some() => {
                    let cluster_ips: Vec<String> = service
                        .families
                        .iter()
                        .filter_map(|family| match family {
                            IpFamily::IPv4 => service.cluster_ip.map(|ip| ip.to_string()),
                            IpFamily::IPv6 => service.cluster_ip_v6.map(|ip| ip.to_string()),
                        })
                        .collect();
                    let mut spec = json!({"type": format!("{:?}", service.service_type),
                        "clusterIP": cluster_ips[0], "clusterIPs": cluster_ips,
                        "ipFamilies": service.families.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
                        "ipFamilyPolicy": format!("{:?}", service.family_policy),
                        "selector": service.selector, "ports": ports});
                    if service.service_type != ServiceType::ClusterIP {
                        spec["externalTrafficPolicy"] =
                            json!(format!("{:?}", service.traffic_policy));
                    }
                    spec
                }
                (None, _) => json!({"type": "ClusterIP", "clusterIP": "None",
                    "clusterIPs": ["None"], "selector": service.selector, "ports": ports}),
            };
            let mut object = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service.name, "namespace": service.namespace,
                    "uid": uid(&format!("svc/{}/{}", service.namespace, service.name)), "creationTimestamp": CREATED},
                "spec": spec});
            if let Some(ip) = service.load_balancer_ip {
                object["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}});
            }
            items.push(object);
        }
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
    }
}

#[allow(clippy::too_many_arguments)]
fn pod_plan(
    namespace: &str,
    workload: &str,
    workload_index: Option<usize>,
    node: usize,
    ip: Ipv4Addr,
    host_network: bool,
    labels: &BTreeMap<String, String>,
    listen: Vec<PortSpec>,
    nodes: &[NodePlan],
    replica: usize,
    kind: &str,
    containers: &[(&str, bool)],
) -> PodPlan {
    let seed = format!("{namespace}/{workload}/{replica}");
    let hash = hex(&format!("{namespace}/{workload}"), 10);
    let suffix = hex(&seed, 5);
    let mut labels = labels.clone();
    let (name, owner) = match kind {
        "Deployment" => {
            labels.insert("pod-template-hash".into(), hash.clone());
            (
                format!("{workload}-{hash}-{suffix}"),
                Owner::ReplicaSet {
                    name: format!("{workload}-{hash}"),
                    hash,
                    deployment: workload.into(),
                },
            )
        }
        "StatefulSet" => {
            let name = format!("{workload}-{replica}");
            labels.insert(
                "controller-revision-hash".into(),
                format!("{workload}-{hash}"),
            );
            labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
            (name, Owner::StatefulSet(workload.into()))
        }
        "DaemonSet" => {
            labels.insert("controller-revision-hash".into(), hash.clone());
            (
                format!("{workload}-{suffix}"),
                Owner::DaemonSet(workload.into()),
            )
        }
        "Job" => {
            labels.insert("job-name".into(), workload.into());
            (
                format!("{workload}-{suffix}"),
                Owner::Job {
                    name: workload.into(),
                    cron_job: None,
                },
            )
        }
        "CronJob" => {
            let job = format!("{workload}-29000000");
            labels.insert("job-name".into(), job.clone());
            (
                format!("{job}-{suffix}"),
                Owner::Job {
                    name: job,
                    cron_job: Some(workload.into()),
                },
            )
        }
        _ => (workload.to_string(), Owner::None),
    };
    let uid = uid(&format!("pod/{namespace}/{name}"));
    // Each node's pods under the node's own cgroup, which its agent
    // attaches to (a real node's agent attaches to the node's root).
    let pod_cgroup = format!(
        "{LAB_CGROUP}/{}/kubepods/besteffort/pod{uid}",
        nodes[node].name
    );
    let containers: Vec<ContainerPlan> = containers
        .iter()
        .enumerate()
        .map(|(index, &(name, init))| {
            // The first container keeps the id lab runs have always given it.
            let id = if index == 0 {
                hex(&format!("container/{uid}"), 64)
            } else {
                hex(&format!("container/{uid}/{name}"), 64)
            };
            ContainerPlan {
                name: name.into(),
                cgroup: format!("{pod_cgroup}/{id}"),
                id,
                init,
            }
        })
        .collect();
    let netns = if host_network {
        nodes[node].netns.clone()
    } else {
        format!("{NETNS_PREFIX}p{}", hex(&format!("netns/{uid}"), 8))
    };
    let _ = workload_index;
    PodPlan {
        namespace: namespace.into(),
        name,
        cgroup: containers[0].cgroup.clone(),
        pod_cgroup,
        containers,
        uid,
        workload: workload_index,
        node,
        ip,
        ipv6: None,
        host_network,
        labels,
        listen,
        netns,
        owner,
        replaces: None,
    }
}

fn owner_objects(pod: &PodPlan, done: &mut std::collections::BTreeSet<String>) -> Vec<Value> {
    let ns = &pod.namespace;
    let selector: BTreeMap<&String, &String> = pod
        .labels
        .iter()
        .filter(|(key, _)| !netflow_agent::inventory::PER_POD_LABELS.contains(&key.as_str()))
        .collect();
    let meta = |kind: &str, name: &str, owner: Option<(&str, &str, &str)>| {
        let mut meta = json!({"name": name, "namespace": ns, "uid": uid(&format!("{kind}/{ns}/{name}")), "creationTimestamp": CREATED});
        if let Some((api, owner_kind, owner_name)) = owner {
            meta["ownerReferences"] = json!([{"apiVersion": api, "kind": owner_kind, "name": owner_name,
                "uid": uid(&format!("{owner_kind}/{ns}/{owner_name}")), "controller": true, "blockOwnerDeletion": true}]);
        }
        meta
    };
    let mut objects = Vec::new();
    let mut add = |key: String, object: Value| {
        if done.insert(key) {
            objects.push(object);
        }
    };
    let template = json!({"metadata": {"labels": selector}, "spec": {"containers": [{"name": "main", "image": "netflow/peer"}]}});
    match &pod.owner {
        Owner::None => {}
        Owner::ReplicaSet {
            name,
            hash,
            deployment,
        } => {
            let mut rs_selector = serde_json::to_value(&selector).unwrap_or_default();
            rs_selector["pod-template-hash"] = json!(hash);
            add(
                format!("Deployment/{ns}/{deployment}"),
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": meta("Deployment", deployment, None),
                "spec": {"selector": {"matchLabels": selector}, "template": template}}),
            );
            add(
                format!("ReplicaSet/{ns}/{name}"),
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": meta("ReplicaSet", name, Some(("apps/v1", "Deployment", deployment))),
                "spec": {"selector": {"matchLabels": rs_selector}}}),
            );
        }
        Owner::StatefulSet(name) => add(
            format!("StatefulSet/{ns}/{name}"),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": meta("StatefulSet", name, None),
            "spec": {"selector": {"matchLabels": selector}, "serviceName": name, "template": template}}),
        ),
        Owner::DaemonSet(name) => add(
            format!("DaemonSet/{ns}/{name}"),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": meta("DaemonSet", name, None),
            "spec": {"selector": {"matchLabels": selector}, "template": template}}),
        ),
        Owner::Job { name, cron_job } => {
            if let Some(cron_job) = cron_job {
                add(
                    format!("CronJob/{ns}/{cron_job}"),
                    json!({"apiVersion": "batch/v1", "kind": "CronJob",
                    "metadata": meta("CronJob", cron_job, None),
                    "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": template}}}}),
                );
            }
            let owner = cron_job
                .as_deref()
                .map(|cron_job| ("batch/v1", "CronJob", cron_job));
            add(
                format!("Job/{ns}/{name}"),
                json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": meta("Job", name, owner), "spec": {"template": template}}),
            );
        }
    }
    objects
}

fn pod_object(pod: &PodPlan, ips: &[IpAddr], node: &str, start: &str) -> Value {
    let mut metadata = json!({"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
        "labels": pod.labels, "creationTimestamp": start});
    let owner = match &pod.owner {
        Owner::None => None,
        Owner::ReplicaSet { name, .. } => Some(("apps/v1", "ReplicaSet", name.as_str())),
        Owner::StatefulSet(name) => Some(("apps/v1", "StatefulSet", name.as_str())),
        Owner::DaemonSet(name) => Some(("apps/v1", "DaemonSet", name.as_str())),
        Owner::Job { name, .. } => Some(("batch/v1", "Job", name.as_str())),
    };
    if let Some((api, kind, name)) = owner {
        metadata["ownerReferences"] = json!([{"apiVersion": api, "kind": kind, "name": name,
            "uid": uid(&format!("{kind}/{}/{name}", pod.namespace)), "controller": true, "blockOwnerDeletion": true}]);
    }
    let ports: Vec<Value> = pod
        .listen
        .iter()
        .map(|port| {
            let mut value = json!({"containerPort": port.port, "protocol": protocol_of(&port.protocol).unwrap_or("TCP")});
            if let Some(name) = &port.name {
                value["name"] = json!(name);
            }
            value
        })
        .collect();
    // The listen ports are the first container's (it runs the servers).
    let spec = |container: &ContainerPlan, first: bool| {
        let mut spec = json!({"name": container.name, "image": "netflow/peer"});
        if first {
            spec["ports"] = json!(ports);
        } else if container.name == istio::PROXY {
            spec["ports"] = json!([{"containerPort": istio::METRICS, "name": "http-envoy-prom", "protocol": "TCP"}]);
        }
        spec
    };
    let status = |container: &ContainerPlan| {
        let mut status = json!({"name": container.name,
            "containerID": format!("containerd://{}", container.id), "ready": !container.init});
        if container.init {
            status["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        }
        status
    };
    let (init, app): (Vec<&ContainerPlan>, Vec<&ContainerPlan>) =
        pod.containers.iter().partition(|c| c.init);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"nodeName": node, "hostNetwork": pod.host_network,
            "initContainers": init.iter().map(|c| spec(c, false)).collect::<Vec<_>>(),
            "containers": app.iter().enumerate().map(|(i, c)| spec(c, i == 0)).collect::<Vec<_>>()},
        "status": {"phase": "Running", "podIP": ips.first().map(IpAddr::to_string),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
            "hostIP": ips.first().map(IpAddr::to_string), "startTime": start,
            "initContainerStatuses": init.iter().map(|c| status(c)).collect::<Vec<_>>(),
            "containerStatuses": app.iter().map(|c| status(c)).collect::<Vec<_>>()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use netflow_agent::inventory::{Inventory, WorkloadRef};

    const SCENARIO: &str = r#"
nodes: [node-a, node-b]
namespaces: [{name: shop}]
workloads:
  - {name: frontend, namespace: shop, replicas: 2, labels: {app: frontend}, listen: [{port: 8080, name: http}]}
  - {name: cart, namespace: shop, kind: StatefulSet, labels: {app: cart}, node: node-b, listen: [{port: 7070}]}
  - {name: nightly, namespace: shop, kind: CronJob, labels: {app: report}}
  - {name: agent, namespace: shop, kind: DaemonSet, hostNetwork: true, labels: {app: agent}}
services:
  - {name: web, namespace: shop, selector: {app: frontend}, ports: [{port: 80, targetPort: http}]}
"#;

    #[test]
    fn the_inventory_reads_back_with_owners_and_ports() {
        let plan = LabPlan::new(&Scenario::parse(SCENARIO).unwrap()).unwrap();
        let text = plan
            .inventory("2026-11-25T00:00:00Z", &BTreeMap::new())
            .to_string();
        let inventory = Inventory::parse(&text).unwrap();
        let workload = |kind: &str, name: &str| WorkloadRef {
            namespace: "shop".into(),
            kind: kind.into(),
            name: name.into(),
        };
        let mut workloads: Vec<WorkloadRef> = inventory
            .pods
            .iter()
            .map(|pod| WorkloadRef::clone(&pod.workload))
            .collect();
        workloads.sort();
        workloads.dedup();
        assert_eq!(
            workloads,
            vec![
                workload("CronJob", "nightly"),
                workload("DaemonSet", "agent"),
                WorkloadRef {
                    namespace: "kube-system".into(),
                    kind: "Deployment".into(),
                    name: "coredns".into()
                },
                workload("Deployment", "frontend"),
                workload("StatefulSet", "cart"),
            ]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        // Two agent pods (one per node), both at their node's address.
        let agents: Vec<_> = inventory
            .pods
            .iter()
            .filter(|p| p.workload.name == "agent")
            .collect();
        assert_eq!(agents.len(), 2);
        assert!(agents.iter().all(|p| p.host_network));
        let service = inventory
            .service_by_ip("10.96.0.20".parse().unwrap())
            .unwrap();
        assert_eq!(
            inventory.service_backends(service, 80, "TCP"),
            vec![(workload("Deployment", "frontend"), 8080)]
        );
        assert_eq!(
            inventory
                .selector_of(&workload("Deployment", "frontend"))
                .len(),
            1
        );
        // cart is pinned to node-b, whose pods are in 10.244.1.0/24.
        let cart = inventory
            .pods
            .iter()
            .find(|p| p.workload.name == "cart")
            .unwrap();
        // (after frontend's second replica, placed there round-robin)
        assert_eq!(cart.ips[0].to_string(), "10.244.1.11");
        let dns_pod = inventory.pod_by_uid(&plan.pods[0].uid).unwrap();
        assert!(dns_pod.name.starts_with("coredns-"));
    }

    #[test]
    fn the_dns_answers_services_and_externals() {
        let plan = LabPlan::new(&Scenario::parse(SCENARIO).unwrap()).unwrap();
        let records = plan.dns_records();
        assert!(records.contains(&(
            "kube-dns.kube-system.svc.cluster.local".into(),
            "10.96.0.10".parse().unwrap()
        )));
        assert!(records.contains(&(
            "web.shop.svc.cluster.local".into(),
            "10.96.0.20".parse().unwrap()
        )));
    }
}
