//! `policy verify` against an independent engine: IBM's
//! network-config-analyzer (NCA, PyPI `network-config-analyzer`). Random
//! namespaces, pods (labels, named ports over TCP/UDP/SCTP) and
//! NetworkPolicies are written once for each tool; every (client, server,
//! protocol, port) probe between pods and outside addresses becomes an edge
//! of a graph that `policy verify --json` replays, and NCA's connectivity
//! map must give the same verdict for each.
//!
//! NCA reads each policy as the API server stores it: `policyTypes`
//! defaulted (omitted or empty: Ingress, plus Egress when there is at least
//! one egress rule) and the rules of a direction not in `policyTypes`
//! dropped. Both steps keep the meaning under the API; NCA needs them
//! because it reads a present-but-empty `egress` as isolating egress and
//! refuses rules of a direction its `policyTypes` leave out. netflow reads the
//! policies as written.
//!
//! One documented difference is left out, exactly: NCA treats an `ipBlock`
//! as outside the cluster, so it never matches a pod, while the API (and its
//! conformance tests) match pod IPs too. A pod-to-pod probe is not compared
//! when the client's or server's IP is inside an `ipBlock` CIDR of any
//! policy; the truth tables in `policy::evaluate` pin that case instead.
//!
//! `NETFLOW_TRUTH_CASES` sets the number of random worlds (default 40);
//! `NETFLOW_TRUTH_SEED` replays one. A failing world's files are kept and
//! their directory named in the failure.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    process::Command,
};

use serde_json::{Value, json};

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
/// Named ports a pod may declare: name, number, protocol.
const NAMED_PORTS: [(&str, u16, &str); 6] = [
    ("http", 80, "TCP"),
    ("http", 8080, "TCP"),
    ("dns", 53, "UDP"),
    ("dns", 53, "TCP"),
    ("metrics", 9090, "UDP"),
    ("metrics", 9090, "TCP"),
];
/// Ports every probe tries (the named ones, range ends and one beyond).
const PROBE_PORTS: [u16; 7] = [53, 80, 443, 3868, 8080, 8081, 9090];
/// Addresses outside the pod network (10.0.0.0/16) the probes use.
const OUTSIDE: [&str; 3] = ["192.0.2.10", "198.51.100.20", "203.0.113.30"];
/// CIDRs an ipBlock may name, and what it may except. The last two cover
/// pods: probes they decide are the documented difference.
const CIDRS: [(&str, &[&str]); 5] = [
    ("192.0.2.0/24", &[]),
    ("198.51.100.0/24", &["198.51.100.16/28"]),
    ("0.0.0.0/0", &["10.0.0.0/8", "203.0.113.0/24"]),
    ("10.0.1.0/24", &[]),
    ("0.0.0.0/0", &["192.0.2.0/24"]),
];

struct Pod {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    ip: Ipv4Addr,
    ports: Vec<(&'static str, u16, &'static str)>,
}

struct World {
    namespaces: Vec<(String, BTreeMap<String, String>)>,
    pods: Vec<Pod>,
    policies: Vec<Value>,
}

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn labels(rng: &mut fastrand::Rng, keys: &[(&str, &[&str])]) -> BTreeMap<String, String> {
    let mut chosen = BTreeMap::new();
    for (key, values) in keys {
        if rng.bool() {
            chosen.insert(key.to_string(), pick(rng, values).to_string());
        }
    }
    chosen
}

const POD_LABELS: &[(&str, &[&str])] = &[("app", &["a", "b", "c"]), ("tier", &["x", "y"])];
const NAMESPACE_LABELS: &[(&str, &[&str])] = &[("team", &["red", "blue"]), ("env", &["prod"])];

fn world(seed: u64) -> World {
    let mut rng = fastrand::Rng::with_seed(seed);
    let namespaces: Vec<(String, BTreeMap<String, String>)> = (0..rng.usize(2..=3))
        .map(|n| (format!("ns{n}"), labels(&mut rng, NAMESPACE_LABELS)))
        .collect();
    let mut pods = Vec::new();
    for (n, (namespace, _)) in namespaces.iter().enumerate() {
        for p in 0..rng.usize(1..=3) {
            let mut ports: Vec<(&str, u16, &str)> = Vec::new();
            for _ in 0..rng.usize(0..=2) {
                let port = *pick(&mut rng, &NAMED_PORTS);
                // Names are unique in a pod.
                if ports.iter().all(|(name, _, _)| *name != port.0) {
                    ports.push(port);
                }
            }
            pods.push(Pod {
                namespace: namespace.clone(),
                name: format!("p{p}"),
                labels: labels(&mut rng, POD_LABELS),
                ip: Ipv4Addr::new(10, 0, n as u8, 10 + p as u8),
                ports,
            });
        }
    }
    let policies = (0..rng.usize(1..=4))
        .map(|index| policy(&mut rng, index, &namespaces))
        .collect();
    World {
        namespaces,
        pods,
        policies,
    }
}

fn selector(rng: &mut fastrand::Rng, keys: &[(&str, &[&str])]) -> Value {
    match rng.usize(0..4) {
        0 => json!({}),
        1 | 2 => {
            let (key, values) = pick(rng, keys);
            json!({"matchLabels": {*key: pick(rng, values)}})
        }
        _ => {
            let (key, values) = pick(rng, keys);
            let operator = *pick(rng, &["In", "NotIn", "Exists", "DoesNotExist"]);
            let mut requirement = json!({"key": key, "operator": operator});
            if matches!(operator, "In" | "NotIn") {
                requirement["values"] = json!([pick(rng, values)]);
            }
            json!({"matchExpressions": [requirement]})
        }
    }
}

fn peer(rng: &mut fastrand::Rng) -> Value {
    match rng.usize(0..5) {
        0 => json!({"podSelector": selector(rng, POD_LABELS)}),
        1 => json!({"namespaceSelector": selector(rng, NAMESPACE_LABELS)}),
        2 => json!({
            "namespaceSelector": selector(rng, NAMESPACE_LABELS),
            "podSelector": selector(rng, POD_LABELS),
        }),
        _ => {
            let (cidr, except) = pick(rng, &CIDRS);
            let mut block = json!({"cidr": cidr});
            if !except.is_empty() && rng.bool() {
                block["except"] = json!(except);
            }
            json!({"ipBlock": block})
        }
    }
}

fn port(rng: &mut fastrand::Rng) -> Value {
    let mut port = json!({});
    match rng.usize(0..5) {
        0 => {}
        1 => port["port"] = json!(pick(rng, &["http", "dns", "metrics"])),
        2 => {
            port["port"] = json!(8000);
            port["endPort"] = json!(8080);
        }
        _ => port["port"] = json!(pick(rng, &PROBE_PORTS)),
    }
    if rng.usize(0..3) > 0 {
        port["protocol"] = json!(pick(rng, &PROTOCOLS));
    }
    port
}

/// A list field that is absent, empty, or has one to three entries.
fn list(rng: &mut fastrand::Rng, item: impl Fn(&mut fastrand::Rng) -> Value) -> Option<Value> {
    match rng.usize(0..5) {
        0 => None,
        1 => Some(json!([])),
        n => Some(Value::Array((0..n - 1).map(|_| item(rng)).collect())),
    }
}

fn rule(rng: &mut fastrand::Rng, peers_key: &str) -> Value {
    let mut rule = json!({});
    if let Some(peers) = list(rng, peer) {
        rule[peers_key] = peers;
    }
    if let Some(ports) = list(rng, port) {
        rule["ports"] = ports;
    }
    rule
}

fn policy(
    rng: &mut fastrand::Rng,
    index: usize,
    namespaces: &[(String, BTreeMap<String, String>)],
) -> Value {
    let namespace = &pick(rng, namespaces).0;
    let mut spec = json!({"podSelector": selector(rng, POD_LABELS)});
    match rng.usize(0..5) {
        0 | 1 => {}
        2 => spec["policyTypes"] = json!([]),
        3 => spec["policyTypes"] = json!([pick(rng, &["Ingress", "Egress"])]),
        _ => spec["policyTypes"] = json!(["Ingress", "Egress"]),
    }
    for (field, peers_key) in [("ingress", "from"), ("egress", "to")] {
        if let Some(rules) = list(rng, |rng| rule(rng, peers_key)) {
            spec[field] = rules;
        }
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": format!("np{index}"), "namespace": namespace},
        "spec": spec,
    })
}

fn objects(world: &World) -> Vec<Value> {
    let mut items: Vec<Value> = world
        .namespaces
        .iter()
        .map(|(name, labels)| {
            let mut labels = labels.clone();
            labels.insert("kubernetes.io/metadata.name".into(), name.clone());
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        })
        .collect();
    for (index, pod) in world.pods.iter().enumerate() {
        let ports: Vec<Value> = pod
            .ports
            .iter()
            .map(|(name, number, protocol)| json!({"name": name, "containerPort": number, "protocol": protocol}))
            .collect();
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": format!("uid-{index}"), "labels": pod.labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIP": pod.ip.to_string(), "podIPs": [{"ip": pod.ip.to_string()}], "hostIP": "192.168.0.1"},
        }));
    }
    items
}

/// A probe: client, server (`ns/name` or an address), protocol, port.
type Probe = (String, String, &'static str, u16);

fn probes(world: &World) -> Vec<Probe> {
    let pods: Vec<String> = world
        .pods
        .iter()
        .map(|pod| format!("{}/{}", pod.namespace, pod.name))
        .collect();
    let mut pairs = Vec::new();
    for client in &pods {
        for server in &pods {
            if client != server {
                pairs.push((client.clone(), server.clone()));
            }
        }
        for address in OUTSIDE {
            pairs.push((client.clone(), address.to_string()));
            pairs.push((address.to_string(), client.clone()));
        }
    }
    let mut probes = Vec::new();
    for (client, server) in pairs {
        for protocol in PROTOCOLS {
            for port in PROBE_PORTS {
                probes.push((client.clone(), server.clone(), protocol, port));
            }
        }
    }
    probes
}

fn endpoint(name: &str) -> Value {
    match name.split_once('/') {
        Some((namespace, pod)) => json!({
            "id": format!("workload:{namespace}/Pod/{pod}"),
            "kind": "workload",
            "namespace": namespace,
            "name": pod,
            "workload_kind": "Pod",
        }),
        None => json!({
            "id": format!("external:{name}"),
            "kind": "external",
            "name": name,
            "addresses": [name],
        }),
    }
}

fn graph(probes: &[Probe]) -> Value {
    let mut nodes = BTreeMap::new();
    let mut edges = Vec::new();
    for (client, server, protocol, port) in probes {
        for end in [client, server] {
            nodes.entry(end.clone()).or_insert_with(|| endpoint(end));
        }
        edges.push(json!({
            "from": nodes[client]["id"],
            "to": nodes[server]["id"],
            "protocol": protocol.to_ascii_lowercase(),
            "port": port,
            "first_seen": "2026-11-20T10:00:00Z",
            "last_seen": "2026-11-20T10:00:00Z",
            "connections": 1,
            "established": 1,
            "bytes": 100,
        }));
    }
    json!({"version": 1, "nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges})
}

/// What NCA allows between two of its peers, cube by cube.
#[derive(Default)]
struct Allowed {
    /// `All connections` (or `All but` with these cubes as the exceptions).
    all_but: Option<Vec<Cube>>,
    cubes: Vec<Cube>,
}

/// One connection cube: protocols (`None`: all) and destination ports.
struct Cube {
    protocols: Option<(bool, BTreeSet<String>)>,
    ports: Option<Vec<(u16, u16)>>,
}

impl Cube {
    fn contains(&self, protocol: &str, port: u16) -> bool {
        let protocol_ok = self
            .protocols
            .as_ref()
            .is_none_or(|(negated, names)| names.contains(protocol) != *negated);
        let port_ok = self.ports.as_ref().is_none_or(|ranges| {
            ranges
                .iter()
                .any(|(low, high)| (*low..=*high).contains(&port))
        });
        protocol_ok && port_ok
    }
}

impl Allowed {
    fn contains(&self, protocol: &str, port: u16) -> bool {
        if let Some(exceptions) = &self.all_but {
            return !exceptions.iter().any(|cube| cube.contains(protocol, port));
        }
        self.cubes.iter().any(|cube| cube.contains(protocol, port))
    }
}

/// `{protocols:TCP, UDP,dst_ports:53,8000-8100},{...}`.
fn cubes(text: &str) -> Vec<Cube> {
    let text = text.trim().trim_start_matches('{').trim_end_matches('}');
    text.split("},{")
        .map(|cube| {
            let mut protocols = None;
            let mut ports = None;
            let keys = ["protocols:", "dst_ports:", "src_ports:"];
            let mut rest = cube;
            while let Some(key) = keys.iter().find(|key| rest.starts_with(**key)) {
                let value_start = key.len();
                let value_end = keys
                    .iter()
                    .filter_map(|next| rest[value_start..].find(&format!(",{next}")))
                    .min()
                    .map_or(rest.len(), |end| value_start + end);
                let value = &rest[value_start..value_end];
                match *key {
                    "protocols:" => {
                        let (negated, names) = match value.strip_prefix("all but ") {
                            Some(names) => (true, names),
                            None => (false, value),
                        };
                        protocols = Some((
                            negated,
                            names.split(',').map(|n| n.trim().to_string()).collect(),
                        ));
                    }
                    "dst_ports:" => {
                        ports = Some(
                            value
                                .split(',')
                                .map(|range| match range.split_once('-') {
                                    Some((low, high)) => {
                                        (low.parse().unwrap(), high.parse().unwrap())
                                    }
                                    None => {
                                        let port = range.parse().unwrap();
                                        (port, port)
                                    }
                                })
                                .collect(),
                        );
                    }
                    _ => panic!("NCA restricted source ports: {cube}"),
                }
                rest = rest[value_end..].trim_start_matches(',');
            }
            assert!(rest.is_empty(), "unparsed NCA cube {cube:?}");
            Cube { protocols, ports }
        })
        .collect()
}

/// NCA's `txt_no_fw_rules` lines: `src => dst : connections`, where an end
/// is `ns/pod` or IPv4 ranges `a-b,c-d`.
fn nca_verdicts(output: &str) -> Vec<(String, String, Allowed)> {
    output
        .lines()
        .filter_map(|line| {
            let (ends, connections) = line.split_once(" : ")?;
            let (source, destination) = ends.split_once(" => ")?;
            let connections = connections.trim();
            let allowed = if connections == "All connections" {
                Allowed {
                    all_but: Some(Vec::new()),
                    cubes: Vec::new(),
                }
            } else if let Some(exceptions) = connections.strip_prefix("All but ") {
                Allowed {
                    all_but: Some(cubes(exceptions)),
                    cubes: Vec::new(),
                }
            } else {
                Allowed {
                    all_but: None,
                    cubes: cubes(connections),
                }
            };
            Some((source.to_string(), destination.to_string(), allowed))
        })
        .collect()
}

/// Whether NCA's end text (`ns/pod` or IPv4 ranges) covers `end`.
fn covers(nca_end: &str, end: &str) -> bool {
    if nca_end.contains('/') || end.contains('/') {
        return nca_end == end;
    }
    let ip: Ipv4Addr = end.parse().unwrap();
    nca_end.split(',').any(|range| {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        match (low.parse::<Ipv4Addr>(), high.parse::<Ipv4Addr>()) {
            (Ok(low), Ok(high)) => (low..=high).contains(&ip),
            _ => false,
        }
    })
}

/// Pod IPs inside some policy's ipBlock CIDR: where NCA departs from the API.
fn ip_blocked_pods(world: &World) -> BTreeSet<String> {
    let cidrs: Vec<String> = world
        .policies
        .iter()
        .flat_map(|policy| {
            let spec = &policy["spec"];
            [&spec["ingress"], &spec["egress"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .flat_map(|rule| {
                    [&rule["from"], &rule["to"]]
                        .into_iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    world
        .pods
        .iter()
        .filter(|pod| {
            cidrs
                .iter()
                .any(|cidr| netflow_agent::policy::evaluate::cidr_contains(cidr, pod.ip.into()))
        })
        .map(|pod| format!("{}/{}", pod.namespace, pod.name))
        .collect()
}

/// A policy as the API server stores it: `policyTypes` defaulted, and the
/// rules of directions it leaves out (which the API ignores) dropped.
fn as_stored(policy: &Value) -> Value {
    let mut policy = policy.clone();
    let spec = policy["spec"].as_object_mut().unwrap();
    let types_given = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_some_and(|types| !types.is_empty());
    if !types_given {
        let mut types = vec![json!("Ingress")];
        if spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|rules| !rules.is_empty())
        {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
    let types = spec["policyTypes"].clone();
    for (field, kind) in [("ingress", "Ingress"), ("egress", "Egress")] {
        if !types.as_array().unwrap().contains(&json!(kind)) {
            spec.remove(field);
        }
    }
    policy
}

/// How to run NCA: `python3 -m nca` (the PyPI package's module; its `nca`
/// script may not be on PATH).
fn nca_command() -> Command {
    let mut command = Command::new("python3");
    command.args(["-m", "nca"]);
    command
}

fn nca_installed() -> bool {
    let found = nca_command()
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("network-config-analyzer (nca) is not installed; `cargo xtask setup` installs it");
    }
    eprintln!("skipping: network-config-analyzer (nca) is not installed");
    false
}

/// Runs one world through both tools; the disagreements, described.
fn disagreements(seed: u64, dir: &Path) -> Vec<String> {
    let world = world(seed);
    let objects = objects(&world);
    let inventory = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(dir.join("inventory.json"), inventory.to_string()).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let policies = json!({"apiVersion": "v1", "kind": "List", "items": world.policies});
    std::fs::write(dir.join("policies/policies.yaml"), policies.to_string()).unwrap();
    let mut everything = objects.clone();
    everything.extend(world.policies.iter().map(as_stored));
    let nca_input = dir.join("nca.json");
    std::fs::write(
        &nca_input,
        json!({"apiVersion": "v1", "kind": "List", "items": everything}).to_string(),
    )
    .unwrap();
    let probes = probes(&world);
    std::fs::write(dir.join("graph.json"), graph(&probes).to_string()).unwrap();

    let verify = Command::new(common::agent())
        .args(["policy", "verify", "--json", "--graph"])
        .arg(dir.join("graph.json"))
        .arg("--policies")
        .arg(dir.join("policies"))
        .arg("--inventory")
        .arg(dir.join("inventory.json"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap_or_else(|err| {
        panic!(
            "seed {seed}: policy verify printed no report ({err}): {}",
            String::from_utf8_lossy(&verify.stderr)
        )
    });
    assert_eq!(report["edges"], probes.len(), "seed {seed}: {report}");
    assert!(
        report["not_checkable"].as_array().unwrap().is_empty(),
        "seed {seed}: {report}"
    );
    let blocked: BTreeSet<String> = report["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["edge"].as_str().unwrap().to_string())
        .collect();

    let output = nca_command()
        .arg("--connectivity")
        .arg(&nca_input)
        .arg("--resource_list")
        .arg(&nca_input)
        .args([
            "--output_format",
            "txt_no_fw_rules",
            "--output_endpoints",
            "pods",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    std::fs::write(dir.join("nca.txt"), &stdout).unwrap();
    // NCA reports input it refuses on stdout and goes on without it.
    assert!(
        output.status.success() && !stdout.contains("rror"),
        "seed {seed}: NCA refused the input ({}):\n{stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts = nca_verdicts(&stdout);

    let excluded = ip_blocked_pods(&world);
    let mut wrong = Vec::new();
    for (client, server, protocol, port) in &probes {
        let both_pods = client.contains('/') && server.contains('/');
        if both_pods && (excluded.contains(client) || excluded.contains(server)) {
            continue;
        }
        let edge = format!(
            "{client} -> {server} {}/{port}",
            protocol.to_ascii_lowercase()
        );
        let ours = !blocked.contains(&edge);
        let theirs = verdicts.iter().any(|(source, destination, allowed)| {
            covers(source, client)
                && covers(destination, server)
                && allowed.contains(protocol, *port)
        });
        if ours != theirs {
            wrong.push(format!(
                "{edge}: policy verify says {}, NCA says {}",
                if ours { "allowed" } else { "blocked" },
                if theirs { "allowed" } else { "blocked" }
            ));
        }
    }
    wrong
}

#[test]
fn policy_verify_agrees_with_network_config_analyzer() {
    if !nca_installed() {
        return;
    }
    let seeds: Vec<u64> = match std::env::var("NETFLOW_TRUTH_SEED") {
        Ok(seed) => vec![seed.parse().expect("NETFLOW_TRUTH_SEED is a number")],
        Err(_) => {
            let cases = std::env::var("NETFLOW_TRUTH_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40);
            (0..cases).collect()
        }
    };
    let mut compared_worlds = 0;
    for seed in seeds {
        let dir = common::tempdir(&format!("truth{seed}"));
        let wrong = disagreements(seed, &dir);
        assert!(
            wrong.is_empty(),
            "seed {seed} (files kept in {}; replay with NETFLOW_TRUTH_SEED={seed}):\n{}",
            dir.display(),
            wrong.join("\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        compared_worlds += 1;
    }
    assert!(compared_worlds > 0);
}
