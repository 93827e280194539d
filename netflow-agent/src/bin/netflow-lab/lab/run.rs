//! `netflow-lab run SCENARIO --out DIR`: build the cluster, record its
//! traffic through the real eBPF path with one `netflow-agent run` daemon per
//! node (`agents`), merge their graphs, remove everything.
//!
//! Layout: a "fabric" namespace with a bridge is the node network; each node
//! is a namespace on it (its own address, a pod bridge, IP forwarding, routes
//! to the other nodes' pod subnets, kube-proxy-style DNAT rules for every
//! Service); each pod is a namespace on its node's bridge, its processes in a
//! kubelet-style cgroup below `netflow-lab`; external hosts are namespaces on
//! the fabric. Nothing is routed out of these namespaces.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use tracing::info;

use super::{
    agents::{AgentSetup, Agents, Runner},
    attack, kube_proxy,
    layout::{LAB_CGROUP, LabPlan, NETNS_PREFIX, NODE_LOCAL_DNS, PodPlan},
    scenario::{
        Destination, Expect, IpFamily, KubeProxy, Phase, Scenario, Sidecar, TrafficSpec, istio,
        parse_destination, protocol_of, split_workload,
    },
    variants,
};
use crate::peer::ProbeReport;
use netflow_agent::{
    inventory::Inventory,
    kernel::cgroup_mount,
    model::rfc3339,
    testbed::{ip, remove_cgroup_tree},
};

const FABRIC: &str = "nfl-fabric";
const FABRIC_BRIDGE: &str = "fab0";
const POD_BRIDGE: &str = "cbr0";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: the lab is being removed");
    }
    Ok(())
}

/// What one run wrote.
pub struct LabOutput {
    pub graph: PathBuf,
    pub inventory: PathBuf,
    pub flows: PathBuf,
}

/// Runs the scenario; the node agents run from `agent_image` (an OCI
/// archive) under containerd when given, else as processes.
pub fn run(
    scenario_path: &Path,
    out: &Path,
    agent_image: Option<&Path>,
    kube_proxy: Option<KubeProxy>,
) -> anyhow::Result<LabOutput> {
    let mut scenario = Scenario::load(scenario_path)?;
    if let Some(mode) = kube_proxy {
        scenario.kube_proxy = mode;
    }
    let plan =
        LabPlan::new(&scenario).with_context(|| format!("scenario {}", scenario_path.display()))?;
    // Ctrl-C and SIGTERM stop the run between steps; the lab's Drop then
    // removes what was made.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // Peers are this binary; the node agents are netflow-agent beside it.
    let lab_exe = std::env::current_exe().context("cannot find the netflow-lab binary")?;
    let runner = match agent_image {
        Some(archive) => Runner::Image(archive.to_path_buf()),
        None => Runner::Process(crate::agent_binary()?),
    };
    let mount = cgroup_mount::cgroup2_mount()?;

    let mut lab = Lab {
        mount: mount.clone(),
        children: Vec::new(),
        pod_servers: std::collections::HashMap::new(),
        replaced_at: std::collections::BTreeMap::new(),
        socket_lb: None,
    };
    lab.remove_all();
    let started = rfc3339(SystemTime::now() - Duration::from_secs(1));
    lab.build(&plan).context("building the lab")?;
    if plan.scenario.kube_proxy == KubeProxy::Socket {
        let table = out.join("socket-lb.json");
        write_json(&table, &plan.service_ports())?;
        lab.socket_lb = Some(table);
    }
    check_interrupt()?;

    let output = LabOutput {
        graph: out.join("graph.json"),
        inventory: out.join("inventory.json"),
        flows: out.join("flows.jsonl"),
    };
    // The agents name workloads from this file; it is written again each
    // time a pod is replaced, and they read it again when it changes.
    write_inventory(&plan, &started, &lab.replaced_at, &output.inventory)?;
    let mut agents = Agents::start(
        AgentSetup {
            runner: runner.clone(),
            out,
            agents_dir: "agents",
            inventory: &output.inventory,
            staged: None,
        },
        &plan,
        &mount,
    )?;

    lab.start_servers(&lab_exe, &plan)?;
    check_interrupt()?;
    lab.run_traffic(&lab_exe, &plan, &mut agents, &started, &output.inventory)?;
    let graph = agents.finish(&output.graph, &output.flows)?;
    let inventory_json = write_inventory(&plan, &started, &lab.replaced_at, &output.inventory)?;
    let inventory = Inventory::parse(&String::from_utf8_lossy(&inventory_json))
        .context("the lab's own inventory")?;
    let variants = variants::generate_all(&graph, &inventory, out)?;
    let assertions = variants::check_netassert(&graph, &inventory, &variants, out)?;
    write_json(&out.join("netassert-check.json"), &assertions)?;
    write_report(&graph, &inventory, &variants[0], out)?;
    print!("{}", netflow_agent::graph::export::show(&graph));

    let attack_steps = plan
        .scenario
        .traffic
        .iter()
        .filter(|step| step.phase == Phase::Attack)
        .count();
    if attack_steps > 0 {
        // The attack is recorded apart: the audit graph is what the
        // policies came from, the attack's is what they are judged on,
        // here and live by the agents, which stage the NetworkPolicies.
        let agents = Agents::start(
            AgentSetup {
                runner,
                out,
                agents_dir: "attack-agents",
                inventory: &output.inventory,
                staged: Some(&out.join("policies")),
            },
            &plan,
            &mount,
        )?;
        let results = lab.run_attack(&lab_exe, &plan)?;
        agents.finish(
            &out.join("attack-graph.json"),
            &out.join("attack-flows.jsonl"),
        )?;
        let entries = attack::judge(&plan, &inventory, &graph, &variants, &results)?;
        write_json(&out.join("attack.json"), &entries)?;
        let audit = variants::verify_all(&graph, &inventory, &variants);
        let table = attack::table(&plan, &entries, &variants, &audit);
        fs::write(out.join("attack.txt"), &table)
            .with_context(|| format!("cannot write {}", out.join("attack.txt").display()))?;
        println!("\n{table}");
    }
    lab.remove_all();
    let disagreeing: Vec<&variants::AssertionCheck> = assertions
        .iter()
        .filter(|check| !check.disagree.is_empty())
        .collect();
    println!(
        "\nwrote {dir}/graph.json, {dir}/inventory.json, {dir}/flows.jsonl, {dir}/policies/ ({} namespaces, {} findings), \
         {dir}/policies-cnp/, {dir}/policies-anp/, {dir}/policies-cilium/, {dir}/report.html and {dir}/netassert.yaml ({} assertions, each consistent with every set: {})\n\
         next: netflow-agent policy verify --graph {dir}/graph.json --policies {dir}/policies --inventory {dir}/inventory.json",
        variants[0]
            .policies
            .kubernetes
            .iter()
            .map(|p| p.namespace.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        findings_count(out),
        assertions.len(),
        if disagreeing.is_empty() { "yes" } else { "NO" },
        dir = out.display()
    );
    if !disagreeing.is_empty() {
        bail!(
            "{} netassert assertions disagree with the generated policies (see {}): {}",
            disagreeing.len(),
            out.join("netassert-check.json").display(),
            disagreeing
                .iter()
                .take(5)
                .map(|check| format!("{} {:?}", check.name, check.disagree))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(output)
}

/// `OUT/report.html`: the graph and the review of `OUT/policies`, as
/// `graph export --format html --policies` writes it.
fn write_report(
    graph: &netflow_agent::graph::CommGraph,
    inventory: &Inventory,
    variant: &variants::Variant,
    out: &Path,
) -> anyhow::Result<()> {
    use netflow_agent::policy::rollout;
    let report =
        netflow_agent::policy::verify::verify_explained(graph, &variant.policies, inventory);
    let source = out.join("policies").display().to_string();
    let plan = rollout::render(
        &rollout::plan(graph, rollout::ClusterTiers::default()),
        &source,
    );
    let page = netflow_agent::report::render(&netflow_agent::report::ReportInputs {
        title: &format!("netflow lab: {}", out.display()),
        graph,
        inventory: Some(inventory),
        review: Some(netflow_agent::report::PolicyReview {
            source: &source,
            report: &report,
            plan: &plan,
        }),
    })?;
    let path = out.join("report.html");
    netflow_agent::graph::file::write_atomically(&path, page.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Findings written beside the policies (0 when unreadable).
fn findings_count(out: &Path) -> usize {
    fs::read(out.join("policies/findings.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<serde_json::Value>>(&bytes).ok())
        .map_or(0, |findings| findings.len())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(value)?;
    netflow_agent::graph::file::write_atomically(path, &json)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the lab's inventory as of now (atomically: the agents read it).
fn write_inventory(
    plan: &LabPlan,
    started: &str,
    replaced_at: &std::collections::BTreeMap<usize, String>,
    path: &Path,
) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec_pretty(&plan.inventory(started, replaced_at))?;
    netflow_agent::graph::file::write_atomically(path, &json)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(json)
}

struct Lab {
    mount: PathBuf,
    children: Vec<Child>,
    /// Each pod's echo servers, by pod index (stopped when a pod is replaced).
    pod_servers: std::collections::HashMap<usize, Child>,
    /// Pods replaced mid-run, by index, with the time (RFC 3339, whole seconds).
    replaced_at: std::collections::BTreeMap<usize, String>,
    /// With socket-level load balancing: the Service table clients connect by.
    socket_lb: Option<PathBuf>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Makes namespace `ns` with its `eth0` (holding `address`) plugged into a
/// bridge: `(namespace of the bridge, bridge, name of the port on it)`.
fn plug_namespace(
    ns: &str,
    (bridge_ns, bridge, port): (&str, &str, &str),
    address: Option<&str>,
) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&[
        "link", "add", port, "netns", bridge_ns, "type", "veth", "peer", "name", "eth0", "netns",
        ns,
    ])?;
    ip(&["-n", bridge_ns, "link", "set", port, "master", bridge, "up"])?;
    if let Some(address) = address {
        ip(&["-n", ns, "addr", "add", address, "dev", "eth0"])?;
    }
    ip(&["-n", ns, "link", "set", "eth0", "up"])
}

/// Gives `device` in `netns` IPv6 `address` in a /64, usable at once (no
/// duplicate address detection: the lab allocates every address).
fn add_ipv6(netns: &str, address: std::net::Ipv6Addr, device: &str) -> anyhow::Result<()> {
    let prefix = format!("{address}/64");
    ip(&["-n", netns, "addr", "add", &prefix, "dev", device, "nodad"])
}

/// The node network's IPv6 prefix (dual-stack).
const NODE_NETWORK_V6: &str = "fd00:172:30::/64";

/// `ip/32`, or `ip/128` for IPv6.
fn host_prefix(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(_) => format!("{ip}/32"),
        std::net::IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// A dual-stack node's IPv6 side: its address on the node network, its
/// pods' gateway, forwarding, bridge netfilter for ip6tables, routes to the
/// other nodes' pod /64s and to the IPv6 Service CIDR (see the IPv4 side).
fn add_ipv6_to_node(plan: &LabPlan, node: &super::layout::NodePlan) -> anyhow::Result<()> {
    let ns = node.netns.as_str();
    let (Some(address), Some(gateway)) = (node.ipv6, node.gateway_v6) else {
        return Ok(());
    };
    add_ipv6(ns, address, "eth0")?;
    add_ipv6(ns, gateway, POD_BRIDGE)?;
    netns_exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    netns_exec(
        ns,
        &["sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=1"],
    )?;
    route_pod_subnets_v6(
        ns,
        plan.nodes.iter().filter(|other| other.index != node.index),
    )?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        &plan.scenario.service_cidr_v6,
        "dev",
        POD_BRIDGE,
    ])
}

/// Routes in `ns` to each dual-stack node's pod /64 through its IPv6 address.
fn route_pod_subnets_v6<'a>(
    ns: &str,
    nodes: impl Iterator<Item = &'a super::layout::NodePlan>,
) -> anyhow::Result<()> {
    for node in nodes {
        if let (Some((subnet, bits)), Some(via)) = (node.pod_subnet_v6, node.ipv6) {
            let subnet = format!("{subnet}/{bits}");
            ip(&["-n", ns, "route", "add", &subnet, "via", &via.to_string()])?;
        }
    }
    Ok(())
}

/// Routes in `ns` to each node's pod subnet through that node's address.
fn route_pod_subnets<'a>(
    ns: &str,
    nodes: impl Iterator<Item = &'a super::layout::NodePlan>,
) -> anyhow::Result<()> {
    for node in nodes {
        let subnet = format!("{}/{}", node.pod_subnet.0, node.pod_subnet.1);
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            &subnet,
            "via",
            &node.ip.to_string(),
        ])?;
    }
    Ok(())
}

fn netns_exec(netns: &str, command: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["netns", "exec", netns];
    args.extend_from_slice(command);
    ip(&args)
}

impl Lab {
    /// Removes every namespace, cgroup and process the lab (this run or an
    /// earlier one that crashed) made. DNAT rules go with their namespaces.
    fn remove_all(&mut self) {
        for child in self
            .children
            .iter_mut()
            .chain(self.pod_servers.values_mut())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        self.pod_servers.clear();
        remove_cgroup_tree(&self.mount.join(LAB_CGROUP));
        for name in lab_namespaces() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &name])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn build(&mut self, plan: &LabPlan) -> anyhow::Result<()> {
        ip(&["netns", "add", FABRIC])?;
        ip(&["-n", FABRIC, "link", "add", FABRIC_BRIDGE, "type", "bridge"])?;
        ip(&["-n", FABRIC, "link", "set", FABRIC_BRIDGE, "up"])?;
        for node in &plan.nodes {
            let ns = node.netns.as_str();
            let fabric_port = format!("nflf{}", node.index);
            plug_namespace(
                ns,
                (FABRIC, FABRIC_BRIDGE, &fabric_port),
                Some(&format!("{}/24", node.ip)),
            )?;
            ip(&["-n", ns, "link", "add", POD_BRIDGE, "type", "bridge"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", node.gateway),
                "dev",
                POD_BRIDGE,
            ])?;
            ip(&["-n", ns, "link", "set", POD_BRIDGE, "up"])?;
            // Forward between pods, nodes and externals; let DNAT rules see
            // bridged pod-to-pod traffic, as on a kube-proxy node.
            netns_exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            netns_exec(
                ns,
                &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
            )?;
            route_pod_subnets(
                ns,
                plan.nodes.iter().filter(|other| other.index != node.index),
            )?;
            // The node's own processes (hostNetwork pods) reach ClusterIPs:
            // a route lets their connect() out to the DNAT rules, as a
            // node's default route does.
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                &plan.scenario.service_cidr,
                "dev",
                POD_BRIDGE,
            ])?;
            for external in &plan.externals {
                ip(&[
                    "-n",
                    ns,
                    "route",
                    "add",
                    &host_prefix(external.spec.ip),
                    "dev",
                    "eth0",
                ])?;
            }
            if plan.scenario.has_ipv6() {
                add_ipv6_to_node(plan, node)?;
            }
        }
        for (index, external) in plan.externals.iter().enumerate() {
            let ns = external.netns.as_str();
            let fabric_port = format!("nflx{index}");
            plug_namespace(
                ns,
                (FABRIC, FABRIC_BRIDGE, &fabric_port),
                Some(&host_prefix(external.spec.ip)),
            )?;
            if external.spec.ip.is_ipv6() {
                // nodad: the address is usable at once.
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "change",
                    &host_prefix(external.spec.ip),
                    "dev",
                    "eth0",
                    "nodad",
                ])?;
                ip(&["-n", ns, "route", "add", NODE_NETWORK_V6, "dev", "eth0"])?;
                route_pod_subnets_v6(ns, plan.nodes.iter())?;
                continue;
            }
            ip(&["-n", ns, "route", "add", "172.30.0.0/24", "dev", "eth0"])?;
            route_pod_subnets(ns, plan.nodes.iter())?;
        }
        // Load balancer addresses, announced by the first node (MetalLB's
        // layer 2 mode): on its node-network interface.
        for address in plan.services.iter().filter_map(|s| s.load_balancer_ip) {
            ip(&[
                "-n",
                &plan.nodes[0].netns,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "eth0",
            ])?;
        }
        for index in 0..plan.pods.len() {
            // Pods that replace another start mid-run, in its place.
            if plan.pods[index].replaces.is_none() {
                self.create_pod(plan, index)?;
            }
        }
        for node in &plan.nodes {
            kube_proxy::install(plan, node)?;
        }
        Ok(())
    }

    /// A pod's cgroup and (unless hostNetwork) its namespace on its node's bridge.
    fn create_pod(&self, plan: &LabPlan, index: usize) -> anyhow::Result<()> {
        let pod = &plan.pods[index];
        for container in &pod.containers {
            fs::create_dir_all(self.mount.join(&container.cgroup))
                .with_context(|| format!("creating cgroup {}", container.cgroup))?;
        }
        if pod.host_network {
            return Ok(());
        }
        let node = &plan.nodes[pod.node];
        let ns = pod.netns.as_str();
        let node_port = format!("vp{index}");
        // An IPv6-only cluster's pods have no IPv4 address.
        let v4 = plan.scenario.has_ipv4();
        plug_namespace(
            ns,
            (&node.netns, POD_BRIDGE, &node_port),
            v4.then(|| format!("{}/24", pod.ip)).as_deref(),
        )?;
        if v4 {
            let gateway = node.gateway.to_string();
            ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
        }
        if let (Some(address), Some(gateway)) = (pod.ipv6, node.gateway_v6) {
            add_ipv6(ns, address, "eth0")?;
            ip(&[
                "-n",
                ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
        }
        let sidecar = pod
            .workload
            .and_then(|w| plan.scenario.workloads[w].sidecar);
        if sidecar == Some(Sidecar::Istio) {
            redirect_to_istio_proxy(ns)?;
        }
        Ok(())
    }

    /// Deletes pod `old` and starts the pod that replaces it, with its IP, at
    /// a whole second (what the inventory's timestamps can tell apart).
    fn replace_pod(&mut self, lab_exe: &Path, plan: &LabPlan, old: usize) -> anyhow::Result<()> {
        let new = plan
            .pods
            .iter()
            .position(|pod| pod.replaces == Some(old))
            .context("no pod replaces this one")?;
        let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let at = now.as_secs() + 1;
        thread::sleep(Duration::from_secs(at) - now + Duration::from_millis(20));
        if let Some(mut server) = self.pod_servers.remove(&old) {
            let _ = server.kill();
            let _ = server.wait();
        }
        let old_pod = &plan.pods[old];
        ip(&["netns", "delete", &old_pod.netns])?;
        remove_cgroup_tree(&self.mount.join(&old_pod.pod_cgroup));
        self.create_pod(plan, new)?;
        // Neighbours still map the IP to the deleted pod's MAC address:
        // forget it everywhere, as a CNI's gratuitous ARP would make them.
        let address = format!("{}/32", old_pod.ip);
        for netns in lab_namespaces() {
            let _ = Command::new("ip")
                .args(["-n", &netns, "neigh", "flush", "to", &address])
                .stderr(Stdio::null())
                .status();
        }
        self.start_pod_servers(lab_exe, plan, new)?;
        self.replaced_at.insert(old, rfc3339_seconds(at));
        info!(old = %old_pod.name, new = %plan.pods[new].name, ip = %old_pod.ip, "pod replaced, IP reused");
        Ok(())
    }

    /// NodeLocal DNSCache on each node: dnsmasq in its hostNetwork pod's
    /// cgroup, on 169.254.20.10 (on the node's loopback: pods reach it
    /// through their gateway, as the cache's own dummy interface has it),
    /// asking kube-dns (its pod, under socket-level load balancing).
    fn start_node_local_dns(&mut self, lab_exe: &Path, plan: &LabPlan) -> anyhow::Result<()> {
        let upstream = match plan.scenario.kube_proxy {
            KubeProxy::Socket => plan.pods[0].ip,
            _ => plan.dns_ip,
        };
        let address = netflow_agent::identity::NODE_LOCAL_DNS;
        for pod in plan
            .pods
            .iter()
            .filter(|pod| pod.name.starts_with(NODE_LOCAL_DNS) && pod.host_network)
        {
            let netns = &plan.nodes[pod.node].netns;
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ])?;
            let mut dnsmasq = Command::new(lab_exe);
            dnsmasq
                .args(["peer", "--cgroup"])
                .arg(self.mount.join(&pod.cgroup))
                .args(["--netns", &format!("/run/netns/{netns}"), "exec", "--"])
                .args([
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--user=root",
                    "--pid-file=",
                    "--port=53",
                ])
                .arg(format!("--listen-address={address}"))
                .arg(format!("--server={upstream}"));
            let mut child = dnsmasq
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting NodeLocal DNSCache (dnsmasq)")?;
            wait_for_port(&mut child, netns, 53)?;
            self.children.push(child);
        }
        Ok(())
    }

    /// The pod's Istio proxy, in its own container: outbound connections
    /// on to where they were going, inbound ones to the app over loopback,
    /// its own marked (not redirected); a stream to istiod held open.
    fn start_istio_proxy(
        &mut self,
        lab_exe: &Path,
        plan: &LabPlan,
        pod: &PodPlan,
    ) -> anyhow::Result<()> {
        let proxy = pod
            .containers
            .iter()
            .find(|c| c.name == istio::PROXY)
            .context("a meshed pod without its proxy container")?;
        let mut command = self.client_command(lab_exe, pod, &proxy.cgroup);
        command.args([
            "relay",
            "--mark",
            &istio::PROXY_MARK.to_string(),
            "--forward",
            &format!("0.0.0.0:{}=original", istio::OUTBOUND),
            "--forward",
            &format!("0.0.0.0:{}=original-port@127.0.0.1", istio::INBOUND),
        ]);
        let (namespace, name, port) = istio::CONTROL_PLANE;
        if let Ok(istiod) = plan.destination(&format!("svc:{namespace}/{name}:{port}")) {
            command.args(["--hold", &istiod.to_string()]);
        }
        let child = spawn_ready(
            command,
            &format!("the istio-proxy of pod {}/{}", pod.namespace, pod.name),
        )?;
        self.children.push(child);
        Ok(())
    }

    fn start_pod_servers(
        &mut self,
        lab_exe: &Path,
        plan: &LabPlan,
        index: usize,
    ) -> anyhow::Result<()> {
        let pod = &plan.pods[index];
        if pod.workload.is_none() {
            return Ok(()); // the cluster's DNS pods: dnsmasq serves them
        }
        let sidecar = pod
            .workload
            .and_then(|w| plan.scenario.workloads[w].sidecar);
        if sidecar == Some(Sidecar::Istio) {
            self.start_istio_proxy(lab_exe, plan, pod)?;
        }
        let forwards = pod
            .workload
            .map(|w| plan.scenario.workloads[w].forward.as_slice())
            .unwrap_or_default();
        if !forwards.is_empty() {
            // The relays connect on as the pod's other clients do.
            let mut command = self.client_command(lab_exe, pod, &pod.cgroup);
            command.arg("relay");
            for forward in forwards {
                let to = plan.destination(&forward.to)?;
                command.args(["--forward", &format!("0.0.0.0:{}={to}", forward.port)]);
            }
            let child = spawn_ready(
                command,
                &format!("relays of pod {}/{}", pod.namespace, pod.name),
            )?;
            self.children.push(child);
        }
        if pod.listen.is_empty() {
            return Ok(());
        }
        let mut command = Command::new(lab_exe);
        command
            .args(["peer", "--cgroup"])
            .arg(self.mount.join(&pod.cgroup))
            .args(["--netns", &format!("/run/netns/{}", pod.netns), "serve"]);
        add_listen_args(
            &mut command,
            pod.listen.iter().map(|p| (p.port, p.protocol.as_str())),
            pod.ipv6.is_some(),
        );
        let child = spawn_ready(
            command,
            &format!("servers of pod {}/{}", pod.namespace, pod.name),
        )?;
        self.pod_servers.insert(index, child);
        Ok(())
    }

    fn start_servers(&mut self, lab_exe: &Path, plan: &LabPlan) -> anyhow::Result<()> {
        let netns_path = |ns: &str| format!("/run/netns/{ns}");
        // The cluster DNS: dnsmasq in the coredns pod, answering Service and
        // external names (and nothing from outside: --no-resolv).
        let dns_pod = &plan.pods[0];
        let mut dnsmasq = Command::new(lab_exe);
        dnsmasq
            .args(["peer", "--cgroup"])
            .arg(self.mount.join(&dns_pod.cgroup))
            .args([
                "--netns",
                &netns_path(&dns_pod.netns),
                "exec",
                "--",
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                "--port=53",
            ])
            .args(
                plan.pod_ips(dns_pod)
                    .iter()
                    .map(|ip| format!("--listen-address={ip}")),
            );
        // Records, not --address: a name may have several addresses (a
        // headless Service), and a CNAME's target must be a record.
        for (name, address) in plan.dns_records() {
            dnsmasq.arg(format!("--host-record={name},{address}"));
        }
        for (alias, target) in plan.dns_aliases() {
            dnsmasq.arg(format!("--cname={alias},{target}"));
        }
        let mut child = dnsmasq
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq")?;
        wait_for_port(&mut child, &dns_pod.netns, 53)?;
        self.children.push(child);
        self.start_node_local_dns(lab_exe, plan)?;

        for index in 1..plan.pods.len() {
            // Pods that replace another start with their replace step.
            if plan.pods[index].replaces.is_none() {
                self.start_pod_servers(lab_exe, plan, index)?;
            }
        }
        for external in plan.externals.iter().filter(|e| !e.spec.listen.is_empty()) {
            let mut command = Command::new(lab_exe);
            command.args(["peer", "--netns", &netns_path(&external.netns), "serve"]);
            add_listen_args(
                &mut command,
                external
                    .spec
                    .listen
                    .iter()
                    .map(|p| (p.port, p.protocol.as_str())),
                external.spec.ip.is_ipv6(),
            );
            let child = spawn_ready(
                command,
                &format!("servers of external {}", external.spec.name),
            )?;
            self.children.push(child);
        }
        Ok(())
    }

    fn run_traffic(
        &mut self,
        lab_exe: &Path,
        plan: &LabPlan,
        agents: &mut Agents,
        started: &str,
        inventory: &Path,
    ) -> anyhow::Result<()> {
        for (index, traffic) in plan.scenario.traffic.iter().enumerate() {
            check_interrupt()?;
            if traffic.phase == Phase::Attack {
                continue;
            }
            if traffic.scan.is_some() {
                // A scan during the audit week: tried and recorded, never
                // judged (and never allowed unless it connected).
                let client = self.client_of(plan, index, traffic)?;
                self.probe(lab_exe, plan, index, traffic, client)?;
                continue;
            }
            if traffic.restart_agents {
                agents.restart()?;
                continue;
            }
            if let Some(replaced) = &traffic.replace {
                let old = plan
                    .pods
                    .iter()
                    .position(|pod| {
                        pod.workload
                            .map(|w| &plan.scenario.workloads[w])
                            .is_some_and(|w| format!("{}/{}", w.namespace, w.name) == *replaced)
                    })
                    .with_context(|| format!("traffic[{index}]: no pod of {replaced}"))?;
                // The agents read the old pod's last packets while its
                // cgroup exists, as their interval would on a node.
                agents.settle();
                self.replace_pod(lab_exe, plan, old)?;
                write_inventory(plan, started, &self.replaced_at, inventory)?;
                continue;
            }
            let udp = protocol_of(&traffic.protocol).map_err(anyhow::Error::msg)? == "UDP"
                || traffic.forge_dns.is_some();
            let flag = if udp { "--udp" } else { "--tcp" };
            let family = traffic
                .family
                .unwrap_or_else(|| plan.scenario.primary_family());
            let count = traffic.connections.to_string();
            let mut args: Vec<String> = vec!["connect".into()];
            match parse_destination(&traffic.to).map_err(anyhow::Error::msg)? {
                // The client resolves the name through the cluster DNS
                // itself: the query is traffic too.
                Destination::Dns { name, port } => {
                    args.extend([
                        "--resolve".into(),
                        name,
                        "--dns".into(),
                        plan.client_dns().to_string(),
                        "--port".into(),
                        port.to_string(),
                    ]);
                    if udp {
                        args.push("--resolved-udp".into());
                    }
                    if family == IpFamily::IPv6 {
                        args.push("--aaaa".into());
                    }
                }
                _ => {
                    let address = plan
                        .destination_in(&traffic.to, family)
                        .with_context(|| format!("traffic[{index}]"))?;
                    args.extend([flag.into(), address.to_string()]);
                }
            }
            if let Some(forged) = &traffic.forge_dns {
                // The destination as resolved above, forged from port 53.
                let to = args
                    .last()
                    .cloned()
                    .context("forge_dns needs a destination")?;
                args = vec![
                    "forge-dns".into(),
                    "--to".into(),
                    to,
                    "--name".into(),
                    forged.name.clone(),
                    "--ip".into(),
                    forged.ip.to_string(),
                ];
            } else if !traffic.http.is_empty() {
                args.extend(["--count".into(), count]);
                if let Some(host) = http_host(plan, &traffic.to) {
                    args.extend(["--http-host".into(), host]);
                }
                for request in &traffic.http {
                    args.extend([
                        "--http".into(),
                        format!("{} {}", request.method, request.path),
                    ]);
                }
            } else {
                args.extend(["--count".into(), count, "--bytes".into(), "64".into()]);
            }
            let mut command = match traffic.from.strip_prefix("ext:") {
                // A host outside the cluster: in its namespace, recorded by
                // no agent (only the cluster's side of its connections is).
                Some(name) => {
                    let external = plan
                        .externals
                        .iter()
                        .find(|e| e.spec.name == name)
                        .with_context(|| format!("traffic[{index}]: no external {name}"))?;
                    let mut command = Command::new(lab_exe);
                    command.args(["peer", "--netns", &format!("/run/netns/{}", external.netns)]);
                    command
                }
                None => {
                    let client = &plan.pods[self.client_of(plan, index, traffic)?];
                    let cgroup = match &traffic.container {
                        Some(name) => client
                            .containers
                            .iter()
                            .find(|c| &c.name == name)
                            .map(|c| &c.cgroup)
                            .with_context(|| format!("traffic[{index}]: no container {name}"))?,
                        None => &client.cgroup,
                    };
                    self.client_command(lab_exe, client, cgroup)
                }
            };
            let output = command
                .args(&args)
                .output()
                .context("running a lab client")?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            match (traffic.expect, output.status.success()) {
                (Expect::Any, _) | (Expect::Connected, true) => {}
                (Expect::Connected, false) => bail!(
                    "traffic[{index}] {} -> {} failed: {}",
                    traffic.from,
                    traffic.to,
                    stderr.trim()
                ),
                (Expect::Refused, false) if stderr.contains("Connection refused") => {}
                (Expect::Refused, _) => bail!(
                    "traffic[{index}] {} -> {} was to be refused, but: {}",
                    traffic.from,
                    traffic.to,
                    if output.status.success() {
                        "it connected"
                    } else {
                        stderr.trim()
                    }
                ),
            }
            info!(from = %traffic.from, to = %traffic.to, connections = traffic.connections, expect = ?traffic.expect, "traffic sent");
            self.complete_init_containers(plan, index);
        }
        Ok(())
    }

    /// Init containers whose last step was `index` exit: their cgroups go,
    /// as kubelet removes them (what they sent must still name their pod).
    fn complete_init_containers(&self, plan: &LabPlan, index: usize) {
        let step = &plan.scenario.traffic[index];
        let Some(name) = &step.container else {
            return;
        };
        let later = plan.scenario.traffic[index + 1..]
            .iter()
            .any(|other| other.from == step.from && other.container.as_ref() == Some(name));
        if later {
            return;
        }
        let source = split_workload(&step.from);
        for pod in plan
            .pods
            .iter()
            .filter(|pod| plan.workload_of(pod) == source)
        {
            for container in pod.containers.iter().filter(|c| c.init && &c.name == name) {
                remove_cgroup_tree(&self.mount.join(&container.cgroup));
            }
        }
    }
}

impl Lab {
    /// A `peer` in `pod`'s namespace and `cgroup` (one of its containers'),
    /// connecting as the node's Service routing has clients connect.
    fn client_command(&self, lab_exe: &Path, pod: &PodPlan, cgroup: &str) -> Command {
        let mut command = Command::new(lab_exe);
        command
            .args(["peer", "--cgroup"])
            .arg(self.mount.join(cgroup))
            .args(["--netns", &format!("/run/netns/{}", pod.netns)]);
        if let Some(table) = &self.socket_lb {
            command.arg("--socket-lb").arg(table);
        }
        command
    }

    /// The pod (index) that sends step `index`: the running pods of its
    /// `from` workload take turns, step by step.
    fn client_of(
        &self,
        plan: &LabPlan,
        index: usize,
        traffic: &TrafficSpec,
    ) -> anyhow::Result<usize> {
        let (namespace, name) = split_workload(&traffic.from).context("traffic source")?;
        let clients: Vec<usize> = plan
            .pods
            .iter()
            .enumerate()
            .filter(|(index, pod)| {
                self.is_running(pod, *index) && plan.workload_of(pod) == Some((namespace, name))
            })
            .map(|(index, _)| index)
            .collect();
        clients
            .get(index % clients.len().max(1))
            .copied()
            .with_context(|| format!("traffic[{index}]: no pod of {namespace}/{name}"))
    }

    /// Tries every destination of step `index` once from pod `client`
    /// (`peer probe` in the pod's cgroup and namespace), and checks what
    /// the step expects of them.
    fn probe(
        &self,
        lab_exe: &Path,
        plan: &LabPlan,
        index: usize,
        traffic: &TrafficSpec,
        client: usize,
    ) -> anyhow::Result<attack::StepResult> {
        let attempts = attack::attempts(plan, traffic, |pod| self.is_running(&plan.pods[pod], pod))
            .with_context(|| format!("traffic[{index}]"))?;
        let pod = &plan.pods[client];
        let mut command = self.client_command(lab_exe, pod, &pod.cgroup);
        command.arg("probe");
        for attempt in &attempts {
            let flag = if attempt.protocol == "UDP" {
                "--udp"
            } else {
                "--tcp"
            };
            command.args([flag, &attempt.address.to_string()]);
        }
        let output = command.output().context("running a lab probe")?;
        if !output.status.success() {
            bail!(
                "traffic[{index}]: the probe failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let mut probes: Vec<ProbeReport> = Vec::with_capacity(attempts.len());
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            probes.push(serde_json::from_str(line).context("reading the probe's report")?);
        }
        // The probe tries TCP destinations first, then UDP ones: match them
        // up by address and protocol, not by order.
        let mut ordered = Vec::with_capacity(attempts.len());
        for attempt in &attempts {
            let found = probes
                .iter()
                .position(|p| {
                    p.remote == attempt.address && p.protocol.eq_ignore_ascii_case(attempt.protocol)
                })
                .with_context(|| format!("traffic[{index}]: no report for {}", attempt.address))?;
            ordered.push(probes.swap_remove(found));
        }
        attack::check_expectation(index, traffic, &ordered)?;
        let connected = ordered.iter().filter(|p| p.connected).count();
        info!(from = %traffic.from, to = %traffic.target(), tries = ordered.len(), connected, phase = ?traffic.phase, "tried");
        Ok(attack::StepResult {
            step: index,
            client,
            attempts,
            probes: ordered,
        })
    }

    /// The attack phase: each step, in order, from the first running pod
    /// of its workload.
    fn run_attack(
        &self,
        lab_exe: &Path,
        plan: &LabPlan,
    ) -> anyhow::Result<Vec<attack::StepResult>> {
        let mut results = Vec::new();
        for (index, traffic) in plan.scenario.traffic.iter().enumerate() {
            check_interrupt()?;
            if traffic.phase != Phase::Attack {
                continue;
            }
            let client = self.client_of(plan, 0, traffic)?;
            results.push(self.probe(lab_exe, plan, index, traffic, client)?);
        }
        Ok(results)
    }

    /// Whether a pod exists now (not replaced yet, or already started).
    fn is_running(&self, pod: &PodPlan, index: usize) -> bool {
        let replaced = self.replaced_at.contains_key(&index);
        let started = pod
            .replaces
            .is_none_or(|old| self.replaced_at.contains_key(&old));
        !replaced && started
    }
}

/// The Host header a client names `to` by: a Service's or an external's
/// DNS name, the name a `dns:` step resolved (else the address, the
/// peer's default).
fn http_host(plan: &LabPlan, to: &str) -> Option<String> {
    match parse_destination(to).ok()? {
        Destination::Service {
            namespace, name, ..
        } => Some(format!(
            "{name}.{namespace}.svc.{}",
            super::layout::CLUSTER_DOMAIN
        )),
        Destination::Dns { name, .. } => Some(name),
        Destination::External { name, .. } => plan
            .externals
            .iter()
            .find(|e| e.spec.name == name)
            .and_then(|e| e.spec.dns.clone()),
        _ => None,
    }
}

/// istio-init's rules in a pod's namespace: every inbound TCP connection
/// to the proxy's inbound port, every outbound one (but the proxy's own,
/// and loopback) to its outbound port.
fn redirect_to_istio_proxy(netns: &str) -> anyhow::Result<()> {
    let mark = istio::PROXY_MARK.to_string();
    let inbound = istio::INBOUND.to_string();
    let outbound = istio::OUTBOUND.to_string();
    let rules: [&[&str]; 4] = [
        &[
            "PREROUTING",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &inbound,
        ],
        &[
            "OUTPUT", "-p", "tcp", "-m", "mark", "--mark", &mark, "-j", "RETURN",
        ],
        &["OUTPUT", "-p", "tcp", "-d", "127.0.0.0/8", "-j", "RETURN"],
        &[
            "OUTPUT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &outbound,
        ],
    ];
    for rule in rules {
        let mut args = vec!["iptables", "-w", "-t", "nat", "-A"];
        args.extend_from_slice(rule);
        netns_exec(netns, &args)?;
    }
    Ok(())
}

/// The network namespaces the lab made (this run's or a crashed run's).
fn lab_namespaces() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(NETNS_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

fn spawn_ready(mut command: Command, what: &str) -> anyhow::Result<Child> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{what}: no stdout");
    };
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    if read.is_err() || line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{what} did not start");
    }
    Ok(child)
}

fn rfc3339_seconds(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix_seconds))
        .to_string()
}

/// Servers on every address: `0.0.0.0`, or `[::]` (IPv6 and, mapped, IPv4)
/// where there is IPv6.
fn add_listen_args<'a>(
    command: &mut Command,
    ports: impl Iterator<Item = (u16, &'a str)>,
    ipv6: bool,
) {
    let any = if ipv6 { "[::]" } else { "0.0.0.0" };
    for (port, protocol) in ports {
        let flag = if protocol.eq_ignore_ascii_case("UDP") {
            "--udp"
        } else {
            "--tcp"
        };
        command.args([flag, &format!("{any}:{port}")]);
    }
}

/// Waits until something listens on UDP `port` in `netns` (dnsmasq says
/// nothing when it is ready).
fn wait_for_port(child: &mut Child, netns: &str, port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            bail!("dnsmasq exited ({status}): is it installed? run `cargo xtask setup`");
        }
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "ss",
                "-lnuH",
                &format!("sport = :{port}"),
            ])
            .output()?;
        if !output.stdout.is_empty() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("dnsmasq did not start listening on port {port}")
}
