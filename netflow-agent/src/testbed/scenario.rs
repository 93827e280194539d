//! The lab's scenario file (see `docs/lab.md`): a small cluster
//! and the traffic to run in it.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default = "default_pod_cidr", rename = "podCIDR")]
    pub pod_cidr: String,
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    pub service_cidr: String,
    /// `[IPv4]` (the default) or dual-stack, `[IPv4, IPv6]`: pods, nodes
    /// and Services (by their `ipFamilyPolicy`) get an address of each.
    #[serde(default = "ipv4_only", rename = "ipFamilies")]
    pub ip_families: Vec<IpFamily>,
    /// Dual-stack: each node's pods get a /64 of this.
    #[serde(default = "default_pod_cidr_v6", rename = "podCIDRv6")]
    pub pod_cidr_v6: String,
    #[serde(default = "default_service_cidr_v6", rename = "serviceCIDRv6")]
    pub service_cidr_v6: String,
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub externals: Vec<ExternalSpec>,
    #[serde(default)]
    pub traffic: Vec<TrafficSpec>,
    /// How Services reach their pods on every node.
    #[serde(default)]
    pub kube_proxy: KubeProxy,
    /// Where pods send their DNS queries.
    #[serde(default)]
    pub dns: DnsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    /// To the kube-dns Service (CoreDNS).
    #[default]
    Coredns,
    /// To NodeLocal DNSCache on their node (169.254.20.10, a hostNetwork
    /// DaemonSet in kube-system), which asks kube-dns.
    Nodelocal,
}

/// kube-proxy's mode, or its replacement's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxy {
    /// DNAT rules per Service port and backend (`iptables -t nat`).
    #[default]
    Iptables,
    /// The IP Virtual Server, ClusterIPs on a dummy interface.
    Ipvs,
    /// kube-proxy's nftables mode: one table, a verdict map per Service
    /// port choosing a backend chain that DNATs.
    Nftables,
    /// Socket-level load balancing (a kube-proxy replacement): connect()
    /// to a ClusterIP is given a backend's address; no ClusterIP on the wire.
    Socket,
}

fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}

fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}

fn ipv4_only() -> Vec<IpFamily> {
    vec![IpFamily::IPv4]
}

fn default_pod_cidr_v6() -> String {
    "fd00:10:244::/56".into()
}

fn default_service_cidr_v6() -> String {
    "fd00:10:96::/112".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

/// A Service's `ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum IpFamilyPolicy {
    /// The cluster's first family (or the one `ipFamilies` names).
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: String,
    pub namespace: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub node: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub listen: Vec<PortSpec>,
    /// A service mesh's sidecar in each pod: `istio` adds the
    /// `istio-proxy` container (and its `istio-init`), redirects the
    /// pod's TCP to it with iptables (inbound to 15006, outbound to 15001)
    /// and has it connect to `istiod` (istio-system) on 15012 when the
    /// scenario runs one.
    pub sidecar: Option<Sidecar>,
    /// Relays its pods run (an ingress controller's routes): each listens
    /// on `port` and connects every connection on to `to`.
    #[serde(default)]
    pub forward: Vec<ForwardSpec>,
    /// The pod's containers, each in a cgroup of its own below the pod's
    /// (default one, `main`); the first serves the `listen` ports.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Containers that run before the others: each exits (its cgroup
    /// removed) after the last traffic step that runs in it.
    #[serde(default)]
    pub init_containers: Vec<String>,
    /// `NS/WORKLOAD`: this workload's pod is started by a `replace` step of
    /// the traffic, on the replaced workload's node and with its pod's IP
    /// (an IP reused by a new pod mid-recording).
    pub replaces: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sidecar {
    Istio,
}

/// Istio's names and ports, as its injector writes them.
pub mod istio {
    pub const PROXY: &str = "istio-proxy";
    pub const INIT: &str = "istio-init";
    pub const OUTBOUND: u16 = 15001;
    pub const INBOUND: u16 = 15006;
    /// The proxy's own metrics port (a port of the pod, not the app's).
    pub const METRICS: u16 = 15090;
    /// The proxy's connections carry this mark and are not redirected
    /// (Istio lets its proxy's user id through; a mark is the same rule).
    pub const PROXY_MARK: u32 = 1337;
    pub const CONTROL_PLANE: (&str, &str, u16) = ("istio-system", "istiod", 15012);
}

/// One relay of a workload's pods.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    pub port: u16,
    /// A traffic destination (`svc:NS/NAME:PORT`, `NS/WORKLOAD:PORT`, ...).
    pub to: String,
}

fn default_kind() -> String {
    "Deployment".into()
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub name: Option<String>,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<ServicePortSpec>,
    /// `None`: a headless Service. The cluster DNS answers its name with
    /// its pods' addresses (and a StatefulSet pod's own name with its own);
    /// no ClusterIP, no load balancing.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// An ExternalName Service: its name is a CNAME for this host (an
    /// external's `dns`), nothing more.
    pub external_name: Option<String>,
    /// `ClusterIP` (the default), `NodePort` (each port also on every
    /// node's addresses, at its `nodePort`) or `LoadBalancer` (a NodePort
    /// Service with an address of its own, announced by the first node).
    #[serde(rename = "type", default)]
    pub service_type: ServiceType,
    /// NodePort and LoadBalancer: `Cluster` (the default: any node's pods,
    /// the client's address replaced by the node's) or `Local` (the
    /// receiving node's own pods only, the client's address kept).
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub ip_family_policy: IpFamilyPolicy,
    /// The Service's families, in order (default: by its policy).
    pub ip_families: Option<Vec<IpFamily>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

impl ServiceSpec {
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePortSpec {
    pub port: u16,
    /// A number or the name of a container port.
    pub target_port: Option<serde_norway::Value>,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub name: Option<String>,
    /// NodePort and LoadBalancer Services: the port on every node (default
    /// allocated from 30000).
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    pub name: String,
    pub ip: IpAddr,
    pub dns: Option<String>,
    #[serde(default)]
    pub listen: Vec<PortSpec>,
}

/// One step of the scenario: traffic (`from`, then `to` or `scan`), or `replace: NS/WORKLOAD`,
/// which deletes that workload's pod and starts the workload that
/// `replaces` it in its place, with the same IP, or `restart_agents: true`,
/// which stops every node's agent and starts it again on its state (an
/// upgrade).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// In place of `to`: try every pod or Service address of the lab on
    /// these ports (what an attacker does after landing in a pod).
    pub scan: Option<ScanSpec>,
    /// `audit` (the default): recorded before the policies are generated.
    /// `attack`: run after, recorded apart, and judged against them.
    #[serde(default)]
    pub phase: Phase,
    pub replace: Option<String>,
    #[serde(default)]
    pub restart_agents: bool,
    /// Which container of the `from` pod sends (default its first).
    pub container: Option<String>,
    /// Dual-stack: the address family to connect over (default the
    /// cluster's first); `dns:` steps then ask for AAAA records.
    pub family: Option<IpFamily>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default = "one")]
    pub connections: u32,
    /// Instead of connecting: send `to` (a UDP port of a workload) a forged
    /// DNS answer from port 53, naming `forge_dns.name` as `forge_dns.ip`.
    pub forge_dns: Option<ForgedAnswer>,
    /// Instead of the echo exchange: these HTTP/1.1 requests, in turn, on
    /// each connection (TCP; the workload's pods answer HTTP).
    #[serde(default)]
    pub http: Vec<HttpStep>,
    /// What the connections must do: `connect` (the default), `refused`
    /// (TCP to a port nothing listens on: a scan, a broken client), which
    /// the agent must never allow, or `any` (an attacker's try, whatever
    /// comes of it).
    #[serde(default)]
    pub expect: Expect,
}

/// One HTTP request of a traffic step.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    pub method: String,
    /// From `/`; a query string is sent, and not kept as part of the call.
    pub path: String,
}

/// Methods a scenario's HTTP requests may use (those netflow reads).
pub const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// When a step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Audit,
    Attack,
}

/// Every address of one kind, on each of these ports.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    pub ports: Vec<u16>,
    pub targets: ScanTargets,
}

/// What a scan tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanTargets {
    /// Every running pod's address (hostNetwork pods aside: theirs is the node's).
    Pods,
    /// Every Service's cluster IP.
    Services,
}

/// Ports one scan step may list.
pub const MAX_SCAN_PORTS: usize = 64;

impl TrafficSpec {
    /// Where the step goes, for people: its `to`, or what it scans.
    pub fn target(&self) -> String {
        match &self.scan {
            Some(scan) => format!(
                "scan {} on {:?}",
                match scan.targets {
                    ScanTargets::Pods => "pods",
                    ScanTargets::Services => "services",
                },
                scan.ports
            ),
            None => self.to.clone(),
        }
    }
}

/// A DNS answer nobody asked for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgedAnswer {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
}

/// The outcome a traffic step must have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    #[default]
    #[serde(rename = "connect", alias = "connected")]
    Connected,
    Refused,
    Any,
}

/// Where a traffic entry goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `svc:NS/NAME:PORT`
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
    /// `NS/WORKLOAD:PORT`: straight to a pod of the workload.
    Workload {
        namespace: String,
        name: String,
        port: u16,
    },
    /// `ext:NAME:PORT`
    External { name: String, port: u16 },
    /// `dns:NAME:PORT`: resolve NAME through the cluster DNS, then connect.
    Dns { name: String, port: u16 },
    /// `IP:PORT` (`[IPv6]:PORT`): an address nothing in the scenario names,
    /// such as the cloud's metadata service.
    Address { ip: IpAddr, port: u16 },
    /// `node:NODE:PORT`: a node's address (a NodePort from outside).
    Node { name: String, port: u16 },
    /// `lb:NS/NAME:PORT`: a LoadBalancer Service's own address.
    LoadBalancer {
        namespace: String,
        name: String,
        port: u16,
    },
}

pub const WORKLOAD_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "Pod",
];

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {} is not valid", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut scenario: Scenario = serde_norway::from_str(text)?;
        if scenario.nodes.is_empty() {
            scenario.nodes.push("node-a".into());
        }
        scenario.validate()?;
        Ok(scenario)
    }

    /// A Service's address families, in order.
    pub fn service_families(&self, service: &ServiceSpec) -> Vec<IpFamily> {
        if let Some(families) = &service.ip_families {
            return families.clone();
        }
        match service.ip_family_policy {
            IpFamilyPolicy::SingleStack => self.ip_families[..1].to_vec(),
            _ => self.ip_families.clone(),
        }
    }

    /// Whether nodes and pods get IPv6 addresses (dual-stack or IPv6-only).
    pub fn has_ipv6(&self) -> bool {
        self.ip_families.contains(&IpFamily::IPv6)
    }

    pub fn has_ipv4(&self) -> bool {
        self.ip_families.contains(&IpFamily::IPv4)
    }

    /// The cluster's first family: Services' by default, steps' by default.
    pub fn primary_family(&self) -> IpFamily {
        self.ip_families.first().copied().unwrap_or(IpFamily::IPv4)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.nodes.len() > 8 {
            bail!("the lab runs at most 8 nodes");
        }
        let mut families = self.ip_families.clone();
        families.sort();
        families.dedup();
        if families.len() != self.ip_families.len()
            || !matches!(
                self.ip_families.as_slice(),
                [IpFamily::IPv4] | [IpFamily::IPv4, IpFamily::IPv6] | [IpFamily::IPv6]
            )
        {
            bail!(
                "ipFamilies {:?}: the lab runs [IPv4], dual-stack [IPv4, IPv6] or IPv6-only [IPv6]",
                self.ip_families
            );
        }
        if !self.has_ipv4() {
            // What the lab builds over IPv4 only.
            if self.dns == DnsMode::Nodelocal {
                bail!("dns: nodelocal (169.254.20.10) needs IPv4 in ipFamilies");
            }
            if let Some(workload) = self
                .workloads
                .iter()
                .find(|w| w.sidecar.is_some() || !w.forward.is_empty())
            {
                bail!(
                    "workload {}/{}: sidecars and relays are built over IPv4 only",
                    workload.namespace,
                    workload.name
                );
            }
            if let Some(service) = self.services.iter().find(|s| {
                matches!(
                    s.service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                )
            }) {
                bail!(
                    "service {}/{}: NodePort and LoadBalancer Services are built over IPv4 only",
                    service.namespace,
                    service.name
                );
            }
            if let Some(external) = self.externals.iter().find(|e| e.ip.is_ipv4()) {
                bail!(
                    "external {}: an IPv4 address in an IPv6-only cluster",
                    external.name
                );
            }
            if self.traffic.iter().any(|step| step.forge_dns.is_some()) {
                bail!("forge_dns steps are built over IPv4 only");
            }
        }
        for service in &self.services {
            let what = format!("service {}/{}", service.namespace, service.name);
            let wanted = self.service_families(service);
            if wanted.is_empty()
                || wanted
                    .iter()
                    .any(|family| !self.ip_families.contains(family))
                || (service.ip_family_policy == IpFamilyPolicy::RequireDualStack
                    && wanted.len() < 2)
            {
                bail!(
                    "{what}: families {wanted:?} ({:?}) do not fit the cluster's {:?}",
                    service.ip_family_policy,
                    self.ip_families
                );
            }
        }
        for external in &self.externals {
            if external.ip.is_ipv6() && !self.has_ipv6() {
                bail!(
                    "external {}: an IPv6 address needs a dual-stack cluster (ipFamilies: [IPv4, IPv6])",
                    external.name
                );
            }
        }
        for (index, step) in self.traffic.iter().enumerate() {
            if let Some(family) = step.family
                && !self.ip_families.contains(&family)
            {
                bail!(
                    "traffic[{index}]: family {family:?} is not one of the cluster's {:?}",
                    self.ip_families
                );
            }
        }
        let declared: Vec<&str> = self.namespaces.iter().map(|ns| ns.name.as_str()).collect();
        for workload in &self.workloads {
            let what = format!("workload {}/{}", workload.namespace, workload.name);
            if !WORKLOAD_KINDS.contains(&workload.kind.as_str()) {
                bail!(
                    "{what}: kind {:?} is not one of {WORKLOAD_KINDS:?}",
                    workload.kind
                );
            }
            if workload.replicas == 0 || workload.replicas > 16 {
                bail!("{what}: replicas must be 1 to 16");
            }
            if let Some(node) = &workload.node
                && !self.nodes.contains(node)
            {
                bail!("{what}: node {node:?} is not in nodes {:?}", self.nodes);
            }
            if workload.labels.is_empty() {
                bail!("{what}: needs labels (they are its selector)");
            }
            if workload.namespace != "kube-system"
                && !declared.contains(&workload.namespace.as_str())
            {
                bail!(
                    "{what}: namespace {:?} is not declared in namespaces",
                    workload.namespace
                );
            }
            for port in &workload.listen {
                protocol_of(&port.protocol).with_context(|| what.clone())?;
            }
            if workload.sidecar.is_some() && workload.host_network {
                bail!("{what}: a hostNetwork pod runs no mesh sidecar");
            }
            let mut names = std::collections::BTreeSet::new();
            for name in workload.container_names() {
                if !is_dns_label(name) || !names.insert(name) {
                    bail!("{what}: container {name:?} is not a DNS label, or is named twice");
                }
            }
            if workload.containers.len() + workload.init_containers.len() > 8 {
                bail!("{what}: the lab runs at most 8 containers a pod");
            }
        }
        for service in &self.services {
            let what = format!("service {}/{}", service.namespace, service.name);
            if let Some(ip) = &service.cluster_ip
                && ip != "None"
            {
                bail!("{what}: clusterIP is allocated by the lab; only None (headless) may be set");
            }
            // `externalName` makes an ExternalName Service (its type may be
            // left out); no other type has one.
            let external_typed = matches!(
                service.service_type,
                ServiceType::ExternalName | ServiceType::ClusterIP
            );
            if (service.service_type == ServiceType::ExternalName
                && service.external_name.is_none())
                || (service.external_name.is_some() && !external_typed)
            {
                bail!("{what}: type ExternalName and externalName go together");
            }
            let exposed = matches!(
                service.service_type,
                ServiceType::NodePort | ServiceType::LoadBalancer
            );
            if exposed && service.is_headless() {
                bail!(
                    "{what}: a {:?} Service needs a ClusterIP",
                    service.service_type
                );
            }
            if !exposed
                && (service.external_traffic_policy != TrafficPolicy::Cluster
                    || service.ports.iter().any(|p| p.node_port.is_some()))
            {
                bail!(
                    "{what}: nodePort and externalTrafficPolicy are for NodePort and LoadBalancer Services"
                );
            }
            if let Some(host) = &service.external_name {
                if !service.selector.is_empty()
                    || !service.ports.is_empty()
                    || service.is_headless()
                {
                    bail!("{what}: an ExternalName Service has no selector, ports or clusterIP");
                }
                if !self
                    .externals
                    .iter()
                    .any(|e| e.dns.as_deref() == Some(host.as_str()))
                {
                    bail!("{what}: externalName {host:?} is no external's dns name");
                }
                continue;
            }
            if service.selector.is_empty() {
                bail!("{what}: needs a selector (or an externalName)");
            }
            if service.ports.is_empty() {
                bail!("{what}: needs ports");
            }
            for port in &service.ports {
                protocol_of(&port.protocol).with_context(|| what.clone())?;
                if let Some(node_port) = port.node_port
                    && !(30000..=32767).contains(&node_port)
                {
                    bail!("{what}: nodePort {node_port} is not in 30000-32767");
                }
                match &port.target_port {
                    None
                    | Some(serde_norway::Value::Number(_))
                    | Some(serde_norway::Value::String(_)) => {}
                    Some(other) => {
                        bail!("{what}: targetPort {other:?} is neither a number nor a name");
                    }
                }
            }
        }
        let mut node_ports = std::collections::BTreeSet::new();
        for port in self.services.iter().flat_map(|s| &s.ports) {
            if let Some(node_port) = port.node_port
                && !node_ports.insert(node_port)
            {
                bail!("nodePort {node_port} is given to two Service ports");
            }
        }
        for workload in &self.workloads {
            let what = format!("workload {}/{}", workload.namespace, workload.name);
            for forward in &workload.forward {
                if workload.listen.iter().any(|p| p.port == forward.port) {
                    bail!("{what}: port {} both listens and forwards", forward.port);
                }
                self.check_destination(&what, &forward.to)?;
            }
        }
        for workload in &self.workloads {
            let Some(replaced) = &workload.replaces else {
                continue;
            };
            let what = format!("workload {}/{}", workload.namespace, workload.name);
            let (namespace, name) = split_workload(replaced)
                .ok_or_else(|| anyhow!("{what}: replaces must be NS/WORKLOAD"))?;
            let old = self
                .workload(namespace, name)
                .ok_or_else(|| anyhow!("{what}: replaces unknown workload {replaced}"))?;
            if old.replicas != 1
                || workload.replicas != 1
                || old.host_network
                || workload.host_network
                || old.kind == "DaemonSet"
                || workload.kind == "DaemonSet"
            {
                bail!("{what}: only a single-pod, pod-network workload can replace another");
            }
            if !self
                .traffic
                .iter()
                .any(|step| step.replace.as_deref() == Some(replaced.as_str()))
            {
                bail!("{what}: no traffic step replaces {replaced}");
            }
        }
        for (index, traffic) in self.traffic.iter().enumerate() {
            if (traffic.restart_agents || traffic.replace.is_some())
                && traffic.phase != Phase::Audit
            {
                bail!("traffic[{index}]: restart_agents and replace steps are audit steps");
            }
            if (traffic.restart_agents || traffic.replace.is_some()) && traffic.scan.is_some() {
                bail!("traffic[{index}]: a restart or replace step has no scan");
            }
            if traffic.restart_agents {
                if !traffic.from.is_empty() || !traffic.to.is_empty() || traffic.replace.is_some() {
                    bail!(
                        "traffic[{index}] (restart_agents): a restart step has no from, to or replace"
                    );
                }
                continue;
            }
            if let Some(replaced) = &traffic.replace {
                let what = format!("traffic[{index}] (replace {replaced})");
                if !traffic.from.is_empty() || !traffic.to.is_empty() {
                    bail!("{what}: a replace step has no from or to");
                }
                if !self
                    .workloads
                    .iter()
                    .any(|w| w.replaces.as_deref() == Some(replaced.as_str()))
                {
                    bail!("{what}: no workload replaces {replaced}");
                }
                continue;
            }
            let what = format!(
                "traffic[{index}] ({} -> {})",
                traffic.from,
                traffic.target()
            );
            protocol_of(&traffic.protocol).with_context(|| what.clone())?;
            if let Some(external) = traffic.from.strip_prefix("ext:") {
                if !self.externals.iter().any(|e| e.name == external) {
                    bail!("{what}: no external {external}");
                }
                if traffic.scan.is_some()
                    || traffic.forge_dns.is_some()
                    || traffic.container.is_some()
                    || traffic.phase != Phase::Audit
                    || traffic.to.starts_with("dns:")
                {
                    bail!(
                        "{what}: an external client makes audit connections to a to (no scan, forge_dns, container or dns:)"
                    );
                }
                self.check_destination(&what, &traffic.to)?;
                continue;
            }
            let (namespace, name) = split_workload(&traffic.from)
                .ok_or_else(|| anyhow!("{what}: from must be NS/WORKLOAD or ext:NAME"))?;
            let Some(source) = self.workload(namespace, name) else {
                bail!("{what}: no workload {namespace}/{name}");
            };
            if let Some(container) = &traffic.container
                && !source.container_names().any(|c| c == container)
            {
                bail!("{what}: {namespace}/{name} has no container {container:?}");
            }
            if traffic.expect == Expect::Refused && protocol_of(&traffic.protocol)? != "TCP" {
                bail!("{what}: expect: refused is for TCP steps");
            }
            if !traffic.http.is_empty() {
                if protocol_of(&traffic.protocol)? != "TCP"
                    || traffic.forge_dns.is_some()
                    || traffic.scan.is_some()
                    || traffic.phase == Phase::Attack
                    || traffic.expect != Expect::Connected
                {
                    bail!(
                        "{what}: http requests are for audit TCP steps that connect (no scan, no forge_dns)"
                    );
                }
                for step in &traffic.http {
                    if !HTTP_METHODS.contains(&step.method.as_str()) {
                        bail!(
                            "{what}: http method {:?} is not one of {HTTP_METHODS:?}",
                            step.method
                        );
                    }
                    if !step.path.starts_with('/')
                        || step.path.len() > 1024
                        || !step.path.bytes().all(|byte| byte.is_ascii_graphic())
                    {
                        bail!(
                            "{what}: http path {:?} must begin with / and be printable ASCII (at most 1024 bytes)",
                            step.path
                        );
                    }
                }
            }
            if traffic.phase == Phase::Attack && traffic.forge_dns.is_some() {
                bail!("{what}: forge_dns is an audit step (an attack step tries connections)");
            }
            if traffic.scan.is_none() && traffic.to.is_empty() {
                bail!("{what}: a traffic step needs a to or a scan");
            }
            if let Some(scan) = &traffic.scan {
                if !traffic.to.is_empty() {
                    bail!("{what}: a step has either to or scan, not both");
                }
                if traffic.forge_dns.is_some() {
                    bail!("{what}: forge_dns needs a to, not a scan");
                }
                if scan.ports.is_empty() || scan.ports.len() > MAX_SCAN_PORTS {
                    bail!("{what}: scan.ports must list 1 to {MAX_SCAN_PORTS} ports");
                }
                if scan.ports.contains(&0) {
                    bail!("{what}: scan.ports: port 0 cannot be connected to");
                }
                continue;
            }
            if traffic.forge_dns.is_some() && traffic.to.starts_with("dns:") {
                bail!("{what}: forge_dns goes to a workload's or an external's UDP port, not dns:");
            }
            self.check_destination(&what, &traffic.to)?;
        }
        Ok(())
    }

    /// That `to` names something of the scenario (`what` names the step).
    fn check_destination(&self, what: &str, to: &str) -> anyhow::Result<()> {
        match parse_destination(to).with_context(|| what.to_string())? {
            Destination::Service {
                namespace,
                name,
                port,
            } => {
                let service = self
                    .services
                    .iter()
                    .find(|s| s.namespace == namespace && s.name == name)
                    .ok_or_else(|| anyhow!("{what}: no service {namespace}/{name}"))?;
                if service.is_headless() || service.external_name.is_some() {
                    bail!(
                        "{what}: service {namespace}/{name} has no ClusterIP: reach it by dns:NAME:PORT"
                    );
                }
                if !service.ports.iter().any(|p| p.port == port) {
                    bail!("{what}: service {namespace}/{name} has no port {port}");
                }
            }
            Destination::Workload {
                namespace, name, ..
            } => {
                if self.workload(&namespace, &name).is_none() {
                    bail!("{what}: no workload {namespace}/{name}");
                }
            }
            Destination::External { name, .. } => {
                if !self.externals.iter().any(|e| e.name == name) {
                    bail!("{what}: no external {name}");
                }
            }
            Destination::Node { name, .. } => {
                if !self.nodes.contains(&name) {
                    bail!("{what}: no node {name}");
                }
            }
            Destination::LoadBalancer {
                namespace,
                name,
                port,
            } => {
                let service = self
                    .services
                    .iter()
                    .find(|s| s.namespace == namespace && s.name == name)
                    .ok_or_else(|| anyhow!("{what}: no service {namespace}/{name}"))?;
                if service.service_type != ServiceType::LoadBalancer
                    || !service.ports.iter().any(|p| p.port == port)
                {
                    bail!("{what}: {namespace}/{name} is no LoadBalancer Service with port {port}");
                }
            }
            Destination::Dns { .. } | Destination::Address { .. } => {}
        }
        Ok(())
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&WorkloadSpec> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }
}

impl WorkloadSpec {
    /// Its app containers (`main` when the scenario names none).
    pub fn app_containers(&self) -> Vec<&str> {
        if self.containers.is_empty() {
            vec!["main"]
        } else {
            self.containers.iter().map(String::as_str).collect()
        }
    }

    /// Every container it runs as `(name, is init)`: app containers, the
    /// mesh's proxy, then init containers (the mesh's first).
    pub fn containers(&self) -> Vec<(&str, bool)> {
        let mut containers: Vec<(&str, bool)> = self
            .app_containers()
            .into_iter()
            .map(|name| (name, false))
            .collect();
        if self.sidecar == Some(Sidecar::Istio) {
            containers.push((istio::PROXY, false));
            containers.push((istio::INIT, true));
        }
        containers.extend(
            self.init_containers
                .iter()
                .map(|name| (name.as_str(), true)),
        );
        containers
    }

    /// Every container's name.
    pub fn container_names(&self) -> impl Iterator<Item = &str> {
        self.containers().into_iter().map(|(name, _)| name)
    }
}

/// A Kubernetes name: lowercase letters, digits and `-`, 1 to 63.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `TCP`/`UDP` (any case) to its canonical name.
pub fn protocol_of(text: &str) -> anyhow::Result<&'static str> {
    match text.to_ascii_uppercase().as_str() {
        "TCP" => Ok("TCP"),
        "UDP" => Ok("UDP"),
        other => Err(anyhow!("protocol {other:?} is not TCP or UDP")),
    }
}

pub fn split_workload(text: &str) -> Option<(&str, &str)> {
    let (namespace, name) = text.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

pub fn parse_destination(text: &str) -> anyhow::Result<Destination> {
    let (target, port) = text
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{text:?} has no :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("{text:?}: port {port:?} is not a number"))?;
    let invalid = || {
        anyhow!(
            "{text:?} is not svc:NS/NAME:PORT, NS/WORKLOAD:PORT, ext:NAME:PORT, dns:NAME:PORT, node:NODE:PORT, lb:NS/NAME:PORT or IP:PORT"
        )
    };
    let literal = target
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(target);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(Destination::Address { ip, port });
    }
    if let Some(service) = target.strip_prefix("svc:") {
        let (namespace, name) = split_workload(service).ok_or_else(invalid)?;
        return Ok(Destination::Service {
            namespace: namespace.into(),
            name: name.into(),
            port,
        });
    }
    if let Some(name) = target.strip_prefix("ext:") {
        return Ok(Destination::External {
            name: name.into(),
            port,
        });
    }
    if let Some(name) = target.strip_prefix("node:") {
        return Ok(Destination::Node {
            name: name.into(),
            port,
        });
    }
    if let Some(service) = target.strip_prefix("lb:") {
        let (namespace, name) = split_workload(service).ok_or_else(invalid)?;
        return Ok(Destination::LoadBalancer {
            namespace: namespace.into(),
            name: name.into(),
            port,
        });
    }
    if let Some(name) = target.strip_prefix("dns:") {
        return Ok(Destination::Dns {
            name: name.into(),
            port,
        });
    }
    let (namespace, name) = split_workload(target).ok_or_else(invalid)?;
    Ok(Destination::Workload {
        namespace: namespace.into(),
        name: name.into(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
namespaces:
  - name: shop
workloads:
  - {name: frontend, namespace: shop, replicas: 2, labels: {app: frontend}, listen: [{port: 8080, name: http}]}
  - {name: cart, namespace: shop, kind: StatefulSet, labels: {app: cart}, listen: [{port: 7070}]}
services:
  - {name: cart, namespace: shop, selector: {app: cart}, ports: [{port: 80, targetPort: 7070}]}
externals:
  - {name: payments, ip: 203.0.113.10, dns: api.payments.example, listen: [{port: 443}]}
traffic:
  - {from: shop/frontend, to: "svc:shop/cart:80", connections: 3}
  - {from: shop/cart, to: "ext:payments:443"}
"#;

    #[test]
    fn the_documented_format_parses_with_defaults() {
        let scenario = Scenario::parse(SHOP).unwrap();
        assert_eq!(scenario.nodes, vec!["node-a"]);
        assert_eq!(scenario.pod_cidr, "10.244.0.0/16");
        assert_eq!(scenario.workloads[0].kind, "Deployment");
        assert_eq!(scenario.traffic[1].connections, 1);
    }

    #[test]
    fn destinations_are_parsed() {
        assert_eq!(
            parse_destination("svc:shop/cart:80").unwrap(),
            Destination::Service {
                namespace: "shop".into(),
                name: "cart".into(),
                port: 80
            }
        );
        assert_eq!(
            parse_destination("dns:api.payments.example:443").unwrap(),
            Destination::Dns {
                name: "api.payments.example".into(),
                port: 443
            }
        );
        assert_eq!(
            parse_destination("169.254.169.252:988").unwrap(),
            Destination::Address {
                ip: "169.254.169.252".parse().unwrap(),
                port: 988
            }
        );
        assert_eq!(
            parse_destination("[fd00::1]:80").unwrap(),
            Destination::Address {
                ip: "fd00::1".parse().unwrap(),
                port: 80
            }
        );
        assert!(parse_destination("shop/cart").is_err());
        assert!(parse_destination("cart:80").is_err());
    }

    #[test]
    fn attack_steps_parse_with_their_defaults() {
        let text = format!(
            "{SHOP}  - {{phase: attack, from: shop/cart, scan: {{ports: [6379, 5432], targets: services}}, expect: any}}\n  \
             - {{phase: attack, from: shop/cart, to: \"169.254.169.254:80\", expect: connect}}\n  \
             - {{from: shop/cart, to: \"shop/frontend:9\", expect: refused}}\n"
        );
        let scenario = Scenario::parse(&text).unwrap();
        let steps = &scenario.traffic;
        assert_eq!(steps[0].phase, Phase::Audit);
        assert_eq!(steps[0].expect, Expect::Connected);
        assert_eq!(steps[2].phase, Phase::Attack);
        assert_eq!(steps[2].expect, Expect::Any);
        assert_eq!(
            steps[2].scan,
            Some(ScanSpec {
                ports: vec![6379, 5432],
                targets: ScanTargets::Services
            })
        );
        assert_eq!(steps[3].expect, Expect::Connected);
        assert_eq!(steps[4].expect, Expect::Refused);
    }

    #[test]
    fn every_example_scenario_is_valid() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut read = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Scenario::load(&path).unwrap_or_else(|err| panic!("{err:#}"));
                read += 1;
            }
        }
        assert!(read >= 14, "{read} examples");
    }

    #[test]
    fn broken_scenarios_say_what_is_wrong() {
        let cases = [
            (
                SHOP.replace("svc:shop/cart:80", "svc:shop/cart:81"),
                "has no port 81",
            ),
            (
                SHOP.replace("kind: StatefulSet", "kind: Daemon"),
                "kind \"Daemon\"",
            ),
            (
                SHOP.replace("- name: shop", "- name: other"),
                "namespace \"shop\" is not declared",
            ),
            (
                SHOP.replace("replicas: 2", "replicas: 2, colour: red"),
                "unknown field `colour`",
            ),
            (
                SHOP.replace("ext:payments:443", "ext:bank:443"),
                "no external bank",
            ),
            ("workloads: [".to_string(), ""),
            (
                format!("{SHOP}  - {{replace: shop/cart}}\n"),
                "no workload replaces shop/cart",
            ),
            (
                format!("{SHOP}  - {{restart_agents: true, from: shop/frontend}}\n"),
                "a restart step has no from, to or replace",
            ),
            (
                SHOP.replace(
                    "listen: [{port: 7070}]}",
                    "listen: [{port: 7070}], replaces: shop/frontend}",
                ),
                "only a single-pod",
            ),
            (
                format!(
                    "{SHOP}  - {{from: shop/cart, to: \"ext:payments:443\", scan: {{ports: [1], targets: pods}}}}\n"
                ),
                "either to or scan",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart, scan: {{ports: [], targets: pods}}}}\n"),
                "scan.ports must list 1 to 64 ports",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart, scan: {{ports: [0], targets: pods}}}}\n"),
                "port 0",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart, scan: {{ports: [1], targets: nodes}}}}\n"),
                "unknown variant `nodes`",
            ),
            (
                format!("{SHOP}  - {{restart_agents: true, phase: attack}}\n"),
                "are audit steps",
            ),
            (
                format!(
                    "{SHOP}  - {{phase: attack, from: shop/cart, to: \"ext:payments:443\", forge_dns: {{name: a.example, ip: 1.2.3.4}}}}\n"
                ),
                "forge_dns is an audit step",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart, to: \"ext:payments:443\", expect: maybe}}\n"),
                "unknown variant `maybe`",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart}}\n"),
                "needs a to or a scan",
            ),
            (
                format!(
                    "{SHOP}  - {{from: shop/cart, to: \"svc:shop/cart:80\", http: [{{method: FETCH, path: /}}]}}\n"
                ),
                "http method \"FETCH\"",
            ),
            (
                format!(
                    "{SHOP}  - {{from: shop/cart, to: \"svc:shop/cart:80\", http: [{{method: GET, path: \"no-slash\"}}]}}\n"
                ),
                "must begin with /",
            ),
            (
                format!(
                    "{SHOP}  - {{from: shop/cart, to: \"svc:shop/cart:80\", protocol: UDP, http: [{{method: GET, path: /}}]}}\n"
                ),
                "http requests are for audit TCP steps",
            ),
            // The cluster shapes' options.
            (
                SHOP.replace(
                    "selector: {app: cart}",
                    "type: NodePort, externalName: a.example, selector: {app: cart}",
                ),
                "type ExternalName and externalName go together",
            ),
            (
                SHOP.replace(
                    "selector: {app: cart}",
                    "type: ExternalName, selector: {app: cart}",
                ),
                "type ExternalName and externalName go together",
            ),
            (
                SHOP.replace(
                    "ports: [{port: 80, targetPort: 7070}]",
                    "ports: [{port: 80, nodePort: 30000}]",
                ),
                "nodePort and externalTrafficPolicy are for NodePort",
            ),
            (
                SHOP.replace(
                    "ports: [{port: 80, targetPort: 7070}]",
                    "type: NodePort, ports: [{port: 80, nodePort: 80}]",
                ),
                "not in 30000-32767",
            ),
            (
                format!("ipFamilies: [IPv6, IPv4]\n{SHOP}"),
                "the lab runs [IPv4], dual-stack [IPv4, IPv6] or IPv6-only [IPv6]",
            ),
            (
                format!("ipFamilies: [IPv6]\n{SHOP}"),
                "an IPv4 address in an IPv6-only cluster",
            ),
            (
                SHOP.replace(
                    "selector: {app: cart}",
                    "ipFamilyPolicy: RequireDualStack, selector: {app: cart}",
                ),
                "do not fit the cluster's",
            ),
            (
                SHOP.replace("ip: 203.0.113.10", "ip: \"2001:db8::1\""),
                "needs a dual-stack cluster",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart, to: \"svc:shop/cart:80\", family: IPv6}}\n"),
                "family IPv6 is not one of the cluster's",
            ),
            (
                format!(
                    "{SHOP}  - {{from: shop/cart, to: \"svc:shop/cart:80\", container: sidecar}}\n"
                ),
                "has no container \"sidecar\"",
            ),
            (
                format!(
                    "{SHOP}  - {{from: \"ext:payments\", scan: {{ports: [1], targets: pods}}}}\n"
                ),
                "an external client makes audit connections",
            ),
            (
                format!("{SHOP}  - {{from: shop/cart, to: \"lb:shop/cart:80\"}}\n"),
                "is no LoadBalancer Service",
            ),
            (
                SHOP.replace(
                    "labels: {app: cart}",
                    "labels: {app: cart}, hostNetwork: true, sidecar: istio",
                ),
                "runs no mesh sidecar",
            ),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", Scenario::parse(&text).unwrap_err());
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }
}
