//! The lab end to end: each example scenario is built, its traffic recorded
//! through the real eBPF path, and the whole edge set of the resulting graph
//! compared with the one the scenario implies.

mod common;

use std::{collections::BTreeSet, path::Path, process::Command};

fn edges(graph: &Path) -> BTreeSet<(String, String, String, u64)> {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(graph).unwrap()).unwrap();
    value["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            (
                edge["from"].as_str().unwrap().to_string(),
                edge["to"].as_str().unwrap().to_string(),
                edge["protocol"].as_str().unwrap().to_string(),
                edge["port"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn run_lab(scenario: &str) -> std::path::PathBuf {
    run_lab_with(scenario, &[])
}

/// A lab run with more `netflow-lab run` arguments.
fn run_lab_with(scenario: &str, extra: &[&std::ffi::OsStr]) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(common::unique_name("netflow-lab-"));
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(scenario);
    let output = Command::new(common::lab())
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lab run {}: {}",
        scenario.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    // Nothing of the lab is left behind.
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains("nfl-"));
    out
}

/// `policy verify` on a lab run's own policies: every observed edge allowed.
fn verify(out: &Path) {
    // Every policy file is a valid Kubernetes object, to the schema's letter.
    for entry in std::fs::read_dir(out.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            common::validate_schema(&path);
        }
    }
    verify_policies(out, "policies");
}

/// Whether the lab run's policies let a pod of `from` reach `to` (a
/// workload's pod, or an address) on `port`.
fn reachable(out: &Path, from: &str, to: &str, port: u16, protocol: &str) -> bool {
    reachable_with(out, "policies", from, to, port, protocol)
}

/// As [`reachable`], with the policies in `out/<policies>`.
fn reachable_with(
    out: &Path,
    policies: &str,
    from: &str,
    to: &str,
    port: u16,
    protocol: &str,
) -> bool {
    use netflow_agent::policy::evaluate::{End, Evaluator, Verdict, load_policy_set};
    let inventory = netflow_agent::inventory::Inventory::load(&out.join("inventory.json")).unwrap();
    let graph = netflow_agent::graph::CommGraph::load(&out.join("graph.json")).unwrap();
    let dns = netflow_agent::policy::verify::dns_names(&graph);
    let policies = load_policy_set(&out.join(policies)).unwrap();
    let pod = |name: &str| {
        let (namespace, workload) = name.split_once('/').unwrap();
        inventory
            .pods
            .iter()
            .find(|p| &*p.namespace == namespace && p.workload.name == workload)
            .unwrap_or_else(|| panic!("no pod of {name}"))
    };
    let server = match to.parse() {
        Ok(ip) => End::Address(ip),
        Err(_) => End::Pod(pod(to)),
    };
    Evaluator::for_set(&policies, &inventory, &dns).check(
        End::Pod(pod(from)),
        server,
        port,
        protocol,
    ) == Verdict::Allowed
}

/// `policy verify [--json]` of the lab run in `out` with `out/<policies>`.
fn run_verify(out: &Path, policies: &str, json: bool) -> std::process::Output {
    Command::new(common::agent())
        .args(["policy", "verify", "--graph"])
        .arg(out.join("graph.json"))
        .arg("--policies")
        .arg(out.join(policies))
        .arg("--inventory")
        .arg(out.join("inventory.json"))
        .args(json.then_some("--json"))
        .output()
        .unwrap()
}

/// `policy verify` with the policies in `out/<policies>`: every observed edge allowed.
fn verify_policies(out: &Path, policies: &str) {
    let output = run_verify(out, policies, false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" 0 blocked"), "{stdout}");
}

/// The Cilium flavor for a lab run, into `out/cilium`, verified like the
/// Kubernetes one.
fn generate_and_verify_cilium(out: &Path) {
    let output = Command::new(common::agent())
        .args(["policy", "generate", "--flavor", "cilium", "--graph"])
        .arg(out.join("graph.json"))
        .arg("--inventory")
        .arg(out.join("inventory.json"))
        .arg("--out")
        .arg(out.join("cilium"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    verify_policies(out, "cilium");
}

/// The cluster admin's tiers for a lab run (`--cluster-baseline cnp` into
/// `out/baseline-cnp`, `anp` into `out/baseline-anp`): every file fits its
/// schema, every observed edge passes, and the pods reach exactly what the
/// namespaced policies let them reach.
fn generate_and_verify_baselines(out: &Path) {
    let radius = |policies: &str| {
        let output = run_verify(out, policies, true);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        report["blast_radius"]["pairs_after"].clone()
    };
    let namespaced = radius("policies");
    for mode in ["cnp", "anp"] {
        let dir = format!("baseline-{mode}");
        let output = Command::new(common::agent())
            .args(["policy", "generate", "--cluster-baseline", mode, "--graph"])
            .arg(out.join("graph.json"))
            .arg("--inventory")
            .arg(out.join("inventory.json"))
            .arg("--out")
            .arg(out.join(&dir))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        common::validate_policy_dir(&out.join(&dir));
        verify_policies(out, &dir);
        assert_eq!(radius(&dir), namespaced, "{mode}: pod pairs reachable");
    }
}

fn edge(from: &str, to: &str, protocol: &str, port: u64) -> (String, String, String, u64) {
    (from.into(), to.into(), protocol.into(), port)
}

const DNS: &str = "workload:kube-system/Deployment/coredns";

#[test]
fn lab_scenarios_give_exactly_their_edges() {
    if !common::privileged("lab_scenarios_give_exactly_their_edges") {
        return;
    }
    // One test, run in turn: the lab's namespaces and cgroup are the lab's own.
    let shop = run_lab("shop.yaml");
    assert_eq!(
        edges(&shop.join("graph.json")),
        BTreeSet::from([
            // Through a Service with a named targetPort: the pod port.
            edge(
                "workload:shop/Deployment/loadgen",
                "workload:shop/Deployment/frontend",
                "tcp",
                8080
            ),
            // Resolved through the cluster DNS first, then the Service (port 80 -> 7070).
            edge("workload:shop/Deployment/frontend", DNS, "udp", 53),
            edge(
                "workload:shop/Deployment/frontend",
                "workload:shop/StatefulSet/cart",
                "tcp",
                7070
            ),
            edge(
                "workload:shop/Deployment/frontend",
                "workload:shop/Deployment/metrics",
                "udp",
                8125
            ),
            // A CronJob's pod is grouped under the CronJob, not its Job.
            edge(
                "workload:shop/CronJob/nightly",
                "workload:shop/StatefulSet/cart",
                "tcp",
                7070
            ),
        ])
    );
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shop.join("graph.json")).unwrap()).unwrap();
    let loadgen = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "workload:shop/Deployment/loadgen")
        .unwrap();
    assert_eq!(
        loadgen["connections"], 3,
        "each connection once, though both ends saw it"
    );
    let frontend = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "workload:shop/Deployment/frontend")
        .unwrap();
    assert_eq!(
        frontend["labels"],
        serde_json::json!({"app": "frontend"}),
        "no pod-template-hash"
    );
    // Recorded by one `netflow-agent run` daemon per node, which answered
    // /metrics and /graph while recording, was restarted mid-run (the
    // loadgen edge above came before the restart and survived it), and
    // detached on each SIGTERM.
    for node in ["node-a", "node-b"] {
        let dir = shop.join("agents").join(node);
        let metrics = std::fs::read_to_string(dir.join("metrics.txt")).unwrap();
        for line in ["netflow_attached 1\n", "netflow_inventory_synced 1\n"] {
            assert!(metrics.contains(line), "{node}: {metrics}");
        }
        let live: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("graph-live.json")).unwrap()).unwrap();
        assert!(
            !live["edges"].as_array().unwrap().is_empty(),
            "{node}: {live:#}"
        );
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
        assert_eq!(
            log.matches("attached: recording").count(),
            2,
            "{node}: {log}"
        );
        assert_eq!(log.matches("SIGTERM: stopping").count(), 2, "{node}: {log}");
        assert_eq!(log.matches("INFO detached").count(), 2, "{node}: {log}");
        assert_eq!(
            log.matches("communication graph loaded").count(),
            2,
            "{node}: {log}"
        );
    }
    let loaded_after_restart = std::fs::read_to_string(shop.join("agents/node-a/agent.log"))
        .unwrap()
        .lines()
        .filter(|line| line.contains("communication graph loaded"))
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        !loaded_after_restart.contains("edges=0"),
        "the restarted agent went on with its graph: {loaded_after_restart}"
    );
    // The inventory reads back as the kubectl dump it imitates.
    netflow_agent::inventory::Inventory::load(&shop.join("inventory.json")).unwrap();
    // And policies were generated: default-deny, DNS, one per workload.
    let policies = std::fs::read_to_string(shop.join("policies/shop.yaml")).unwrap();
    for name in [
        "default-deny",
        "allow-dns",
        "allow-deployment-frontend",
        "allow-statefulset-cart",
        "allow-cronjob-nightly",
    ] {
        assert!(
            policies.contains(&format!("name: {name}\n")),
            "{name} missing:\n{policies}"
        );
    }
    assert!(
        !policies.contains("pod-template-hash") && !policies.contains("controller-revision-hash")
    );
    // Generated, then verified: every observed edge allowed, and no more
    // than observed: unobserved pairs, a client's ephemeral port, other ports.
    verify(&shop);
    assert!(reachable(
        &shop,
        "shop/loadgen",
        "shop/frontend",
        8080,
        "TCP"
    ));
    assert!(reachable(&shop, "shop/frontend", "shop/cart", 7070, "TCP"));
    assert!(
        !reachable(&shop, "shop/loadgen", "shop/cart", 7070, "TCP"),
        "never observed"
    );
    assert!(
        !reachable(&shop, "shop/metrics", "shop/frontend", 8080, "TCP"),
        "never observed"
    );
    assert!(
        !reachable(&shop, "shop/frontend", "shop/loadgen", 40000, "TCP"),
        "a client's ephemeral port"
    );
    assert!(
        !reachable(&shop, "shop/frontend", "shop/metrics", 8125, "TCP"),
        "observed on UDP only"
    );
    // netassert tests: each observed edge from a testable workload must
    // connect, the metadata service and unobserved pairs must not.
    let output = Command::new(common::agent())
        .args(["policy", "tests", "--graph"])
        .arg(shop.join("graph.json"))
        .arg("--inventory")
        .arg(shop.join("inventory.json"))
        .arg("--out")
        .arg(shop.join("netassert"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(shop.join("netassert/netassert.yaml")).unwrap();
    let tests: Vec<serde_json::Value> = serde_norway::from_str(&text).unwrap();
    let must_connect: BTreeSet<String> = tests
        .iter()
        .filter(|t| t["exitCode"] == 0)
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        must_connect,
        BTreeSet::from([
            "shop-frontend-to-kube-system-coredns-udp-53-allowed".to_string(),
            "shop-frontend-to-shop-cart-tcp-7070-allowed".to_string(),
            "shop-frontend-to-shop-metrics-udp-8125-allowed".to_string(),
            "shop-loadgen-to-shop-frontend-tcp-8080-allowed".to_string(),
        ])
    );
    assert!(
        text.contains("# skipped: workload:shop/CronJob/nightly"),
        "a CronJob cannot be a netassert source"
    );
    assert!(
        tests
            .iter()
            .any(|t| t["name"] == "shop-loadgen-to-metadata-service-denied" && t["exitCode"] == 1)
    );
    assert!(
        tests
            .iter()
            .any(|t| t["name"] == "shop-loadgen-to-shop-frontend-tcp-8081-denied")
    );
    let names: BTreeSet<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), tests.len(), "netassert needs unique names");
    // Every negative test is denied by the generated policies too.
    for test in tests.iter().filter(|t| t["exitCode"] == 1) {
        let src = &test["src"]["k8sResource"];
        let from = format!(
            "{}/{}",
            src["namespace"].as_str().unwrap(),
            src["name"].as_str().unwrap()
        );
        let to = match test["dst"].get("host") {
            Some(host) => host["name"].as_str().unwrap().to_string(),
            None => format!(
                "{}/{}",
                test["dst"]["k8sResource"]["namespace"].as_str().unwrap(),
                test["dst"]["k8sResource"]["name"].as_str().unwrap()
            ),
        };
        let port = test["targetPort"].as_u64().unwrap() as u16;
        let protocol = test["protocol"].as_str().unwrap().to_ascii_uppercase();
        assert!(!reachable(&shop, &from, &to, port, &protocol), "{test:#?}");
    }
    // The Cilium flavor allows and denies the same.
    generate_and_verify_cilium(&shop);
    generate_and_verify_baselines(&shop);
    for tiers in ["baseline-cnp", "baseline-anp"] {
        assert!(!reachable_with(
            &shop,
            tiers,
            "shop/loadgen",
            "shop/cart",
            7070,
            "TCP"
        ));
        assert!(reachable_with(
            &shop,
            tiers,
            "shop/loadgen",
            "shop/frontend",
            8080,
            "TCP"
        ));
        assert!(reachable_with(
            &shop,
            tiers,
            "shop/metrics",
            "kube-system/coredns",
            53,
            "UDP"
        ));
    }
    assert!(reachable_with(
        &shop,
        "cilium",
        "shop/loadgen",
        "shop/frontend",
        8080,
        "TCP"
    ));
    assert!(!reachable_with(
        &shop,
        "cilium",
        "shop/loadgen",
        "shop/cart",
        7070,
        "TCP"
    ));
    assert!(!reachable_with(
        &shop,
        "cilium",
        "shop/frontend",
        "shop/loadgen",
        40000,
        "TCP"
    ));
    assert!(!reachable_with(
        &shop,
        "cilium",
        "shop/frontend",
        "shop/metrics",
        8125,
        "TCP"
    ));
    assert!(
        reachable_with(
            &shop,
            "cilium",
            "shop/metrics",
            "kube-system/coredns",
            53,
            "UDP"
        ),
        "DNS for all"
    );
    // The demo's report page (the demo runs this scenario), as the README
    // shows it: a screenshot in target/tmp; with NETFLOW_UPDATE_DOCS=1 it
    // replaces docs/report.png, to be committed when the page changed.
    if let Some(chromium) = common::browser::chromium() {
        let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-demo.png");
        common::browser::screenshot(&chromium, &shop.join("report.html"), &png);
        if std::env::var("NETFLOW_UPDATE_DOCS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.png");
            std::fs::copy(&png, docs).unwrap();
        }
    }
    std::fs::remove_dir_all(shop).unwrap();

    let cross = run_lab("cross-namespace.yaml");
    assert_eq!(
        edges(&cross.join("graph.json")),
        BTreeSet::from([
            edge(
                "workload:frontend/Deployment/web",
                "workload:backend/Deployment/api",
                "tcp",
                9000
            ),
            edge(
                "workload:backend/Deployment/api",
                "workload:data/StatefulSet/db",
                "tcp",
                5432
            ),
            edge(
                "workload:backend/Deployment/api",
                "workload:data/DaemonSet/log-agent",
                "udp",
                514
            ),
        ])
    );
    verify(&cross);
    assert!(reachable(
        &cross,
        "frontend/web",
        "backend/api",
        9000,
        "TCP"
    ));
    assert!(
        !reachable(&cross, "frontend/web", "data/db", 5432, "TCP"),
        "web never called db"
    );
    std::fs::remove_dir_all(cross).unwrap();

    let externals = run_lab("externals.yaml");
    assert_eq!(
        edges(&externals.join("graph.json")),
        BTreeSet::from([
            edge("workload:shop/Deployment/checkout", DNS, "udp", 53),
            edge(
                "workload:shop/Deployment/checkout",
                "external:203.0.113.10",
                "tcp",
                443
            ),
            edge(
                "workload:shop/Deployment/checkout",
                "external:198.51.100.7",
                "tcp",
                80
            ),
            edge(
                "workload:shop/Deployment/checkout",
                "metadata:169.254.169.254",
                "tcp",
                80
            ),
            // A hostNetwork client is its node, as its server sees it (from
            // the node's pod bridge address) and as policies must name it.
            edge(
                "node:node-a",
                "workload:shop/Deployment/checkout",
                "tcp",
                8080
            ),
        ])
    );
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(externals.join("graph.json")).unwrap()).unwrap();
    // The external is named by the answer the cluster's DNS gave for it,
    // read from the response as the client's socket received it.
    let payments = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "external:203.0.113.10")
        .unwrap();
    assert_eq!(payments["name"], "api.payments.example");
    assert_eq!(
        payments["dns_names"],
        serde_json::json!(["api.payments.example"])
    );
    // The metadata service is a finding, never an allow.
    let findings = std::fs::read_to_string(externals.join("policies/findings.json")).unwrap();
    assert!(
        findings.contains("metadata-service") && findings.contains("shop/checkout"),
        "{findings}"
    );
    let policies = std::fs::read_to_string(externals.join("policies/shop.yaml")).unwrap();
    assert!(!policies.contains("169.254.169.254"), "{policies}");
    assert!(policies.contains("cidr: 203.0.113.10/32"), "{policies}");
    verify(&externals);
    assert!(reachable(
        &externals,
        "shop/checkout",
        "203.0.113.10",
        443,
        "TCP"
    ));
    assert!(
        !reachable(&externals, "shop/checkout", "169.254.169.254", 80, "TCP"),
        "the metadata service"
    );
    assert!(
        !reachable(&externals, "shop/checkout", "203.0.113.10", 80, "TCP"),
        "another port of the external"
    );
    generate_and_verify_cilium(&externals);
    generate_and_verify_baselines(&externals);
    for tiers in ["baseline-cnp", "baseline-anp"] {
        assert!(!reachable_with(
            &externals,
            tiers,
            "shop/checkout",
            "169.254.169.254",
            80,
            "TCP"
        ));
        assert!(reachable_with(
            &externals,
            tiers,
            "shop/checkout",
            "203.0.113.10",
            443,
            "TCP"
        ));
        assert!(!reachable_with(
            &externals,
            tiers,
            "shop/checkout",
            "203.0.113.10",
            80,
            "TCP"
        ));
    }
    let cilium = std::fs::read_to_string(externals.join("cilium/shop.yaml")).unwrap();
    assert!(
        cilium.contains("matchName: api.payments.example"),
        "named externals by FQDN:\n{cilium}"
    );
    assert!(
        cilium.contains("198.51.100.7/32") && !cilium.contains("169.254.169.254"),
        "{cilium}"
    );
    assert!(reachable_with(
        &externals,
        "cilium",
        "shop/checkout",
        "203.0.113.10",
        443,
        "TCP"
    ));
    assert!(!reachable_with(
        &externals,
        "cilium",
        "shop/checkout",
        "169.254.169.254",
        80,
        "TCP"
    ));
    assert!(!reachable_with(
        &externals,
        "cilium",
        "shop/checkout",
        "203.0.113.10",
        80,
        "TCP"
    ));
    let mirror = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "external:198.51.100.7")
        .unwrap();
    assert_eq!(
        mirror["name"], "198.51.100.7",
        "no DNS answer: named by address"
    );
    let node = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "node:node-a")
        .unwrap();
    assert_eq!(
        node["host_workloads"],
        serde_json::json!(["monitoring/DaemonSet/node-exporter"])
    );
    std::fs::remove_dir_all(externals).unwrap();

    // A pod IP reused by a new pod mid-recording: each flow goes to the pod
    // that held the IP when it happened.
    let reuse = run_lab("ip-reuse.yaml");
    assert_eq!(
        edges(&reuse.join("graph.json")),
        BTreeSet::from([
            edge(
                "workload:shop/Deployment/checkout",
                "workload:shop/Deployment/legacy",
                "tcp",
                8080
            ),
            edge(
                "workload:shop/Deployment/checkout",
                "workload:shop/Deployment/payments",
                "tcp",
                8080
            ),
        ])
    );
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reuse.join("graph.json")).unwrap()).unwrap();
    let connections: Vec<u64> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["connections"].as_u64().unwrap())
        .collect();
    assert_eq!(
        connections,
        vec![2, 3],
        "legacy then payments (edges sorted by id)"
    );
    verify(&reuse);
    std::fs::remove_dir_all(reuse).unwrap();
}

#[test]
fn a_broken_scenario_is_refused_and_leaves_nothing() {
    if !common::privileged("a_broken_scenario_is_refused_and_leaves_nothing") {
        return;
    }
    let dir = std::env::temp_dir().join(common::unique_name("netflow-lab-bad-"));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("broken.yaml");
    std::fs::write(
        &scenario,
        "workloads:\n  - {name: a, namespace: nowhere, labels: {app: a}}\n",
    )
    .unwrap();
    let output = Command::new(common::lab())
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.yaml") && stderr.contains("namespace \"nowhere\" is not declared"),
        "{stderr}"
    );
    assert!(
        !dir.join("out").exists(),
        "no output for a refused scenario"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

const SLOW: &str = r#"
namespaces: [{name: shop}]
workloads:
  - {name: client, namespace: shop, labels: {app: client}}
  - {name: server, namespace: shop, labels: {app: server}, listen: [{port: 8080}]}
traffic:
  - {from: shop/client, to: "shop/server:8080", connections: 400}
  - {from: shop/client, to: "shop/server:8080", connections: 400}
  - {from: shop/client, to: "shop/server:8080", connections: 400}
  - {from: shop/client, to: "shop/server:8080", connections: 400}
  - {from: shop/client, to: "shop/server:8080", connections: 400}
"#;

fn lab_leftovers() -> (bool, bool) {
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns_left = String::from_utf8_lossy(&namespaces.stdout).contains("nfl-");
    let mount = netflow_agent::kernel::cgroup_mount::cgroup2_mount().unwrap();
    (netns_left, mount.join("netflow-lab").exists())
}

#[test]
fn ctrl_c_and_crashed_runs_leave_nothing() {
    if !common::privileged("ctrl_c_and_crashed_runs_leave_nothing") {
        return;
    }
    use std::io::{BufRead as _, BufReader};
    let dir = std::env::temp_dir().join(common::unique_name("netflow-lab-int-"));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("slow.yaml");
    std::fs::write(&scenario, SLOW).unwrap();

    // What a crashed run would have left: the next run removes it.
    let mount = netflow_agent::kernel::cgroup_mount::cgroup2_mount().unwrap();
    std::fs::create_dir_all(mount.join("netflow-lab/kubepods/stale")).unwrap();
    assert!(
        Command::new("ip")
            .args(["netns", "add", "nfl-stale"])
            .status()
            .unwrap()
            .success()
    );

    let mut lab = Command::new(common::lab())
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.join("out"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = lab.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("netflow attached to the lab") {
            break;
        }
    }
    // The stale namespace is gone by the time the lab is built.
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains("nfl-stale"));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(lab.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = lab.wait().unwrap();
    assert_eq!(status.code(), Some(1), "interrupted runs fail: {rest:#?}");
    assert!(
        rest.iter().any(|line| line.contains("interrupted")),
        "{rest:#?}"
    );
    assert_eq!(
        lab_leftovers(),
        (false, false),
        "nothing of the lab is left"
    );
    assert!(
        !dir.join("out/graph.json").exists(),
        "no graph from an interrupted run"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every policy YAML file of a directory, as one text.
fn policy_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            text.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    text
}

#[test]
fn a_scan_during_the_audit_is_never_allowed() {
    if !common::privileged("a_scan_during_the_audit_is_never_allowed") {
        return;
    }
    let out = run_lab("scan.yaml");
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    let probe = "workload:shop/Deployment/probe";
    let attempts: Vec<&serde_json::Value> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["from"] == probe && e["port"] != 8080)
        .collect();
    // Every refused attempt is in the graph, counted, and never answered.
    assert_eq!(attempts.len(), 10, "{graph:#}");
    for attempt in &attempts {
        assert_eq!(attempt["connections"], 1, "{attempt}");
        assert_eq!(attempt["established"], 0, "{attempt}");
    }
    let answered = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == probe && e["port"] == 8080)
        .expect("the probe's one real call");
    assert_eq!(answered["established"], 1, "{answered}");
    // The policies allow the real calls and none of the scan, in both flavors.
    generate_and_verify_cilium(&out);
    generate_and_verify_baselines(&out);
    verify(&out);
    for flavor in ["policies", "cilium"] {
        let text = policy_text(&out.join(flavor));
        assert!(text.contains("8080"), "{flavor}: {text}");
        for port in ["3306", "5432", "6379", "9200", "8443"] {
            assert!(!text.contains(port), "{flavor} allows {port}: {text}");
        }
    }
    let findings = std::fs::read_to_string(out.join("policies/findings.json")).unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_str(&findings).unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "scan" && f["workload"] == "shop/probe"),
        "{findings:#?}"
    );
    std::fs::remove_dir_all(out).ok();
}

/// The breach example: the attack phase is tried for real, recorded apart,
/// and judged against every generated policy set.
#[test]
fn the_attackers_path_is_replayed_and_judged() {
    if !common::privileged("the_attackers_path_is_replayed_and_judged") {
        return;
    }
    let out = run_lab("breach.yaml");
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("attack.json")).unwrap()).unwrap();
    let variants = ["kubernetes", "kubernetes+cnp", "kubernetes+anp", "cilium"];
    let steps: BTreeSet<u64> = entries
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    let last_step = *steps.iter().max().unwrap();
    assert_eq!(steps.len(), 8, "one entry list per attack step: {steps:?}");
    // 6 pods (2 web, api, postgres, redis, the DNS) and 4 Services, 7 ports
    // each: the pod CIDR is 10.244.0.0/16, the Service CIDR 10.96.0.0/12.
    let scanned = |prefix: &str| {
        entries
            .iter()
            .filter(|e| {
                [6379, 5432, 3306, 9200, 27017, 8080, 443].contains(&e["port"].as_u64().unwrap())
                    && e["address"].as_str().unwrap().starts_with(prefix)
            })
            .count()
    };
    assert!(scanned("10.244.") >= 42, "{entries:#?}");
    assert!(scanned("10.96.") >= 28, "{entries:#?}");
    for entry in &entries {
        let blocked = |variant: &str| entry["blocked"][variant].as_bool().unwrap();
        if entry["step"] == last_step {
            // web's daily call to its API: it connected, and every set allows it.
            assert_eq!(entry["connected"], true, "{entry}");
            for variant in variants {
                assert!(
                    !blocked(variant),
                    "{variant} blocks web's own call: {entry}"
                );
            }
            continue;
        }
        // Every try of the attacker is blocked by every set, with a reason.
        for variant in variants {
            assert!(
                blocked(variant),
                "{variant} lets the attacker through: {entry}"
            );
            assert!(
                entry["by"][variant]
                    .as_str()
                    .is_some_and(|by| !by.is_empty()),
                "{entry}"
            );
        }
    }
    // Each try was made for real: the metadata service and the databases
    // answered in the lab (nothing enforces there), the unrouted address
    // did not.
    let tried = |address: &str| {
        entries
            .iter()
            .find(|e| e["address"] == address)
            .unwrap_or_else(|| panic!("no try of {address}"))
    };
    assert_eq!(tried("169.254.169.254:80")["connected"], true);
    assert_eq!(tried("169.254.169.252:988")["connected"], false);
    assert_eq!(tried("198.51.100.66:443")["connected"], true);
    assert!(
        entries
            .iter()
            .any(|e| e["to"] == "data/postgres" && e["port"] == 5432 && e["connected"] == true),
        "{entries:#?}"
    );
    // The attack is in its own recording, not in the week's.
    let audit = edges(&out.join("graph.json"));
    let attack = edges(&out.join("attack-graph.json"));
    let web = "workload:shop/Deployment/web";
    let postgres = "workload:data/StatefulSet/postgres";
    assert!(
        attack.contains(&edge(web, postgres, "tcp", 5432)),
        "{attack:#?}"
    );
    assert!(
        !audit.contains(&edge(web, postgres, "tcp", 5432)),
        "{audit:#?}"
    );
    assert!(
        !audit.iter().any(|(_, to, _, _)| to.contains("169.254")),
        "{audit:#?}"
    );
    // The week's traffic stays allowed by every set; the audit-phase scan
    // (refused: nothing listened) is allowed by none.
    for dir in [
        "policies",
        "policies-cnp",
        "policies-anp",
        "policies-cilium",
    ] {
        verify_policies(&out, dir);
        let text = policy_text(&out.join(dir));
        for port in ["3306", "9200", "27017"] {
            assert!(!text.contains(port), "{dir} allows {port}: {text}");
        }
    }
    // The attack-phase agents staged the NetworkPolicies: what they report
    // would break is exactly what connected in the attack and the sets
    // block; web's own call to its API is not among it.
    let denials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("staged-denials.json")).unwrap()).unwrap();
    let reported: BTreeSet<&str> = denials["denials"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        reported,
        BTreeSet::from([
            "shop/web -> 198.51.100.66 tcp/443",
            "shop/web -> cache/redis tcp/6379",
            "shop/web -> data/postgres tcp/5432",
            "shop/web -> metadata-service tcp/80",
            "shop/web -> shop/web tcp/8080",
        ]),
        "{denials:#}"
    );
    let table = std::fs::read_to_string(out.join("attack.txt")).unwrap();
    assert!(table.contains("audit traffic still allowed"), "{table}");
    // The netassert file agrees with every set, assertion by assertion.
    let checks: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("netassert-check.json")).unwrap()).unwrap();
    assert!(checks.len() >= 10, "{checks:#?}");
    assert!(
        checks.iter().any(|c| c["must_connect"] == false && c["name"].as_str().unwrap().contains("metadata")),
        "{checks:#?}"
    );
    for check in &checks {
        assert_eq!(check["disagree"], serde_json::json!([]), "{check}");
    }
    std::fs::remove_dir_all(out).ok();
}

/// The L7 example: each edge carries exactly the calls its traffic made,
/// each request counted once though both ends' agents saw it.
#[test]
fn lab_http_calls_are_exact_per_edge() {
    if !common::privileged("lab_http_calls_are_exact_per_edge") {
        return;
    }
    let out = run_lab("l7.yaml");
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    let calls = |from: &str, to: &str| -> BTreeSet<(String, String, u64)> {
        let edge = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .unwrap_or_else(|| panic!("no edge {from} -> {to}: {graph:#}"));
        edge["http"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        (
                            c["method"].as_str().unwrap().to_string(),
                            c["path"].as_str().unwrap().to_string(),
                            c["requests"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let call =
        |method: &str, path: &str, requests| (method.to_string(), path.to_string(), requests);
    let web = "workload:shop/Deployment/web";
    let api = "workload:shop/Deployment/api";
    assert_eq!(
        calls(web, api),
        BTreeSet::from([
            call("GET", "/api/v1/users/[^/]+", 4),
            call("GET", "/health", 2),
            call("POST", "/api/v1/orders", 2),
        ])
    );
    assert_eq!(
        calls(api, "external:203.0.113.10"),
        BTreeSet::from([call("POST", "/v1/charges", 1)])
    );
    assert!(calls(api, "workload:data/StatefulSet/postgres").is_empty());
    let web_api = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == web && e["to"] == api)
        .unwrap();
    assert_eq!(
        web_api["http_connections"]["seen_by_client"], 2,
        "{web_api}"
    );
    assert_eq!(
        web_api["http_connections"]["seen_by_server"], 2,
        "{web_api}"
    );

    // The report page carries the calls too.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("/api/v1/users/[^/]+") && page.contains("netflow-data"));

    // Generate with L7 and verify: the calls made pass their rules.
    let output = Command::new(common::agent())
        .args([
            "policy", "generate", "--flavor", "cilium", "--l7", "http", "--graph",
        ])
        .arg(out.join("graph.json"))
        .arg("--inventory")
        .arg(out.join("inventory.json"))
        .arg("--out")
        .arg(out.join("cilium-l7"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    verify_policies(&out, "cilium-l7");
    let text = policy_text(&out.join("cilium-l7"));
    for rule in [
        "path: /api/v1/users/[^/]+",
        "path: /api/v1/orders",
        "path: /health",
        "path: /v1/charges",
        "matchName: api.payments.example",
    ] {
        assert!(text.contains(rule), "{rule}: {text}");
    }
    // Postgres is no HTTP: its port keeps an L4 rule.
    let after_postgres = text.split("port: '5432'").nth(1).unwrap_or_default();
    let postgres_rule = after_postgres.split("---").next().unwrap_or_default();
    assert!(!postgres_rule.contains("http:"), "{text}");
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn a_forged_dns_answer_names_nothing() {
    if !common::privileged("a_forged_dns_answer_names_nothing") {
        return;
    }
    let out = run_lab("dns-forgery.yaml");
    let graph = std::fs::read_to_string(out.join("graph.json")).unwrap();
    assert!(!graph.contains("exfil.example"), "{graph}");
    // The real lookup through the cluster DNS still names its external.
    assert!(graph.contains("api.payments.example"), "{graph}");
    generate_and_verify_cilium(&out);
    generate_and_verify_baselines(&out);
    verify(&out);
    for flavor in ["policies", "cilium"] {
        let text = policy_text(&out.join(flavor));
        assert!(!text.contains("exfil.example"), "{flavor}: {text}");
        // The address itself, as an address.
        assert!(text.contains("203.0.113.66/32"), "{flavor}: {text}");
    }
    // Each node's agent counted the refused answer.
    let refused: u64 = ["node-a"]
        .iter()
        .map(|node| {
            let metrics =
                std::fs::read_to_string(out.join("agents").join(node).join("metrics.txt")).unwrap();
            metrics
                .lines()
                .find_map(|line| {
                    line.strip_prefix("netflow_dns_answers_refused_total{reason=\"unsolicited\"} ")
                })
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(refused >= 1, "no unsolicited answer counted");
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn the_lab_runs_its_agents_from_the_image_users_deploy() {
    let test = "the_lab_runs_its_agents_from_the_image_users_deploy";
    if !common::privileged(test) {
        return;
    }
    let Some(archive) = std::env::var_os("NETFLOW_AGENT_IMAGE") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: NETFLOW_AGENT_IMAGE is not set (cargo xtask test builds the image)");
        }
        eprintln!("skipping {test}: NETFLOW_AGENT_IMAGE is not set");
        return;
    };
    // The same scenario with the agents as processes and from the image
    // under containerd: the same graph.
    let processes = run_lab("cross-namespace.yaml");
    let image = run_lab_with(
        "cross-namespace.yaml",
        &["--agent-image".as_ref(), archive.as_os_str()],
    );
    let found = edges(&image.join("graph.json"));
    assert!(!found.is_empty());
    assert_eq!(found, edges(&processes.join("graph.json")));
    verify(&image);
    let log = std::fs::read_to_string(image.join("agents/node-a/agent.log")).unwrap();
    assert!(
        log.contains("/host/sys/fs/cgroup"),
        "attached through the DaemonSet's mount: {log}"
    );
    assert!(
        !image.join("containerd").exists(),
        "the lab's containerd is gone"
    );
    std::fs::remove_dir_all(processes).ok();
    std::fs::remove_dir_all(image).ok();
}

/// A workload's graph id from `NS/KIND/NAME`.
fn workload(id: &str) -> String {
    format!("workload:{id}")
}

#[test]
fn shape_every_container_of_a_pod_is_its_pod() {
    if !common::privileged("shape_every_container_of_a_pod_is_its_pod") {
        return;
    }
    let out = run_lab("containers.yaml");
    let api = workload("app/Deployment/api");
    assert_eq!(
        edges(&out.join("graph.json")),
        BTreeSet::from([
            // The init container (gone before the agents polled) and the
            // app container: one edge, their pod's workload.
            edge(&api, &workload("app/StatefulSet/db"), "tcp", 5432),
            // The log shipper beside the app.
            edge(
                &api,
                &workload("observability/Deployment/collector"),
                "tcp",
                4317
            ),
            edge(&workload("app/Deployment/web"), &api, "tcp", 8080),
        ])
    );
    // The flows came from three different containers of the api pods.
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    let containers: BTreeSet<String> = flows
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|flow| {
            flow["client"] == "local"
                && flow["remote"]["port"]
                    .as_u64()
                    .is_some_and(|port| [5432, 4317].contains(&port))
        })
        .filter_map(|flow| flow["cgroup"].as_str().map(str::to_string))
        .collect();
    assert_eq!(containers.len(), 3, "{containers:?}");
    verify(&out);
    std::fs::remove_dir_all(out).ok();
}

/// The ports of a run's flows to the lab's Service CIDR (10.96.0.0/12):
/// ClusterIPs on the wire.
fn cluster_ip_ports(out: &Path) -> Vec<u64> {
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    flows
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|flow| {
            flow["remote"]["ip"]
                .as_str()
                .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
                .is_some_and(|ip| ip.octets()[0] == 10 && (ip.octets()[1] & 0xf0) == 96)
        })
        .filter_map(|flow| flow["remote"]["port"].as_u64())
        .collect()
}

fn cluster_ips_on_the_wire(out: &Path) -> usize {
    cluster_ip_ports(out).len()
}

#[test]
fn shape_every_kube_proxy_mode_gives_the_same_graph() {
    if !common::privileged("shape_every_kube_proxy_mode_gives_the_same_graph") {
        return;
    }
    let mode = |mode: &str| run_lab_with("shop.yaml", &["--kube-proxy".as_ref(), mode.as_ref()]);
    let iptables = mode("iptables");
    let expected = edges(&iptables.join("graph.json"));
    assert_eq!(expected.len(), 5, "{expected:?}");
    // The pods sent to ClusterIPs, the nodes rewrote them.
    assert!(cluster_ips_on_the_wire(&iptables) > 0);
    // Traffic from outside (NodePort, a load balancer) and a proxy
    // connecting on to a Service.
    let ingress =
        |mode: &str| run_lab_with("ingress.yaml", &["--kube-proxy".as_ref(), mode.as_ref()]);
    let ingress_iptables = ingress("iptables");
    let ingress_expected = edges(&ingress_iptables.join("graph.json"));
    assert_eq!(ingress_expected.len(), 3, "{ingress_expected:?}");
    std::fs::remove_dir_all(ingress_iptables).ok();
    for name in ["nftables", "socket"] {
        let out = mode(name);
        assert_eq!(
            edges(&out.join("graph.json")),
            expected,
            "kubeProxy: {name}"
        );
        let from_outside = ingress(name);
        assert_eq!(
            edges(&from_outside.join("graph.json")),
            ingress_expected,
            "kubeProxy: {name}"
        );
        std::fs::remove_dir_all(from_outside).ok();
        verify(&out);
        if name == "socket" {
            // Socket-level load balancing: connect() already names the
            // backend, no ClusterIP is ever on the wire (DNS included).
            assert_eq!(cluster_ips_on_the_wire(&out), 0);
        } else {
            assert!(cluster_ips_on_the_wire(&out) > 0);
        }
        std::fs::remove_dir_all(out).ok();
    }
    std::fs::remove_dir_all(iptables).ok();
    // IPVS needs the kernel's IP Virtual Server, which the lab does not
    // use: refused by name, nothing built.
    let output = Command::new(common::lab())
        .args(["run", "--kube-proxy", "ipvs", "--out"])
        .arg(std::env::temp_dir().join(common::unique_name("netflow-lab-ipvs-")))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop.yaml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ipvs"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn shape_headless_and_external_name_services() {
    if !common::privileged("shape_headless_and_external_name_services") {
        return;
    }
    let out = run_lab("service-kinds.yaml");
    let api = workload("app/Deployment/api");
    assert_eq!(
        edges(&out.join("graph.json")),
        BTreeSet::from([
            edge(&api, DNS, "udp", 53),
            // The headless Service's name, and a StatefulSet pod's own:
            // the pods, on their port.
            edge(&api, &workload("app/StatefulSet/db"), "tcp", 5432),
            // The ExternalName Service's name: its host.
            edge(&api, "external:203.0.113.10", "tcp", 443),
        ])
    );
    // Only the DNS queries went to a ClusterIP (kube-dns).
    let ports = cluster_ip_ports(&out);
    assert!(
        !ports.is_empty() && ports.iter().all(|port| *port == 53),
        "{ports:?}"
    );
    // The external is named by both names it was reached by.
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    let payments = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "external:203.0.113.10")
        .unwrap();
    assert_eq!(
        payments["dns_names"],
        serde_json::json!(["api.payments.example", "payments.app.svc.cluster.local"])
    );
    verify(&out);
    generate_and_verify_cilium(&out);
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn shape_ingress_controller_node_port_and_load_balancer() {
    if !common::privileged("shape_ingress_controller_node_port_and_load_balancer") {
        return;
    }
    let out = run_lab("ingress.yaml");
    let controller = workload("ingress-nginx/Deployment/ingress-nginx-controller");
    assert_eq!(
        edges(&out.join("graph.json")),
        BTreeSet::from([
            // externalTrafficPolicy: Local keeps the browser's address,
            // through the load balancer's address and the NodePort alike.
            edge("external:198.51.100.20", &controller, "tcp", 80),
            // The controller proxies on: ingress -> backend, on the pod port.
            edge(&controller, &workload("shop/Deployment/web"), "tcp", 8080),
            // externalTrafficPolicy: Cluster: the node that took the
            // connection is the client the pod sees.
            edge("node:node-a", &workload("shop/Deployment/api"), "tcp", 9090),
        ])
    );
    verify(&out);
    let shop = std::fs::read_to_string(out.join("policies/shop.yaml")).unwrap();
    let ingress = std::fs::read_to_string(out.join("policies/ingress-nginx.yaml")).unwrap();
    // The browser by its address; the node by each of its addresses.
    assert!(ingress.contains("cidr: 198.51.100.20/32"), "{ingress}");
    assert!(shop.contains("cidr: 172.30.0.10/32"), "{shop}");
    // web takes connections from the controller's pods only.
    assert!(reachable(
        &out,
        "ingress-nginx/ingress-nginx-controller",
        "shop/web",
        8080,
        "TCP"
    ));
    assert!(!reachable(&out, "shop/api", "shop/web", 8080, "TCP"));
    generate_and_verify_cilium(&out);
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn shape_a_service_mesh_shows_app_to_app_on_the_apps_ports() {
    if !common::privileged("shape_a_service_mesh_shows_app_to_app_on_the_apps_ports") {
        return;
    }
    let out = run_lab("mesh.yaml");
    let shop = |name: &str| workload(&format!("shop/Deployment/{name}"));
    let istiod = workload("istio-system/Deployment/istiod");
    let found = edges(&out.join("graph.json"));
    assert_eq!(
        found,
        BTreeSet::from([
            // Meshed to meshed, to a pod of two ports, to and from a pod
            // outside the mesh: the app's port every time.
            edge(&shop("frontend"), &shop("cart"), "tcp", 7070),
            edge(&shop("frontend"), &shop("catalog"), "tcp", 8081),
            edge(&shop("frontend"), &shop("catalog"), "tcp", 9091),
            edge(&shop("frontend"), &shop("legacy"), "tcp", 9000),
            edge(&shop("legacy"), &shop("frontend"), "tcp", 8080),
            // The proxies' own streams to the control plane.
            edge(&shop("frontend"), &istiod, "tcp", 15012),
            edge(&shop("cart"), &istiod, "tcp", 15012),
            edge(&shop("catalog"), &istiod, "tcp", 15012),
        ])
    );
    // Both ends saw every application connection, whole: the server's
    // redirected halves were put together on the port the client asked for.
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    for edge in graph["edges"].as_array().unwrap() {
        if edge["to"] == istiod.as_str() {
            continue;
        }
        // (Packets may differ by a retransmission; connections may not.)
        for count in ["connections", "established"] {
            assert_eq!(
                edge["seen_by_client"][count], edge["seen_by_server"][count],
                "{edge}"
            );
        }
        assert!(edge["established"].as_u64().unwrap() > 0, "{edge}");
    }
    // Nothing of the proxies' plumbing reached the flow log.
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    for plumbing in ["\"port\":15001", "\"port\":15006", "127.0.0."] {
        assert!(!flows.contains(plumbing), "{plumbing} in the flow log");
    }
    verify(&out);
    generate_and_verify_cilium(&out);
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn shape_node_local_dns_cache() {
    if !common::privileged("shape_node_local_dns_cache") {
        return;
    }
    let out = run_lab("node-local-dns.yaml");
    let web = workload("shop/Deployment/web");
    let cache = "node-local-dns:169.254.20.10";
    assert_eq!(
        edges(&out.join("graph.json")),
        BTreeSet::from([
            // Pods on both nodes ask the cache on their node...
            edge(&web, cache, "udp", 53),
            // ...each node's cache (hostNetwork: the node) asks CoreDNS.
            edge("node:node-a", DNS, "udp", 53),
            edge("node:node-b", DNS, "udp", 53),
            edge(&web, &workload("shop/Deployment/api"), "tcp", 8080),
            // Named by the answer that came through the cache.
            edge(&web, "external:203.0.113.10", "tcp", 443),
        ])
    );
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    let to_cache = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == cache)
        .unwrap();
    // Both ends name it alike: the client by address, the cache by its own.
    assert_eq!(
        to_cache["seen_by_client"]["connections"], to_cache["seen_by_server"]["connections"],
        "{to_cache}"
    );
    let payments = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "external:203.0.113.10")
        .unwrap();
    assert_eq!(payments["name"], "api.payments.example");
    verify(&out);
    generate_and_verify_cilium(&out);
    generate_and_verify_baselines(&out);
    // The cache's address is allowed in the DNS allow, on port 53 only.
    let policies = std::fs::read_to_string(out.join("policies/shop.yaml")).unwrap();
    assert_eq!(
        policies.matches("169.254.20.10/32").count(),
        1,
        "{policies}"
    );
    assert!(reachable(&out, "shop/web", "169.254.20.10", 53, "UDP"));
    assert!(!reachable(&out, "shop/web", "169.254.20.10", 80, "TCP"));
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn shape_dual_stack() {
    if !common::privileged("shape_dual_stack") {
        return;
    }
    let out = run_lab("dual-stack.yaml");
    let web = workload("shop/Deployment/web");
    assert_eq!(
        edges(&out.join("graph.json")),
        BTreeSet::from([
            edge(&web, DNS, "udp", 53),
            // Over IPv4 and IPv6, through either ClusterIP or straight to
            // the pod: one edge.
            edge(&web, &workload("shop/Deployment/api"), "tcp", 8080),
            // An IPv6-only Service.
            edge(&web, &workload("shop/StatefulSet/db"), "tcp", 5432),
            edge(&web, "external:2001:db8::10", "tcp", 443),
        ])
    );
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    let api = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "workload:shop/Deployment/api")
        .unwrap();
    // 2 + 2 through the Service, 1 through its AAAA record, 1 to the pod.
    for side in ["seen_by_client", "seen_by_server"] {
        assert_eq!(api[side]["connections"], 6, "{api}");
        assert_eq!(api[side]["established"], 6, "{api}");
    }
    // Both families on the wire, seen by both ends.
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    let sides: BTreeSet<(bool, String)> = flows
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|flow| flow["type"] == "flow")
        .map(|flow| {
            let v6 = flow["remote"]["ip"].as_str().unwrap().contains(':');
            (v6, flow["client"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(sides.len(), 4, "{sides:?}");
    let mirror = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "external:2001:db8::10")
        .unwrap();
    assert_eq!(mirror["name"], "mirror.example", "named by its AAAA answer");
    verify(&out);
    let policies = std::fs::read_to_string(out.join("policies/shop.yaml")).unwrap();
    assert!(policies.contains("cidr: 2001:db8::10/128"), "{policies}");
    generate_and_verify_cilium(&out);
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn shape_ipv6_only() {
    if !common::privileged("shape_ipv6_only") {
        return;
    }
    let out = run_lab("ipv6-only.yaml");
    let web = workload("shop/Deployment/web");
    let api = workload("shop/Deployment/api");
    let cache = workload("shop/Deployment/cache");
    assert_eq!(
        edges(&out.join("graph.json")),
        BTreeSet::from([
            edge(&web, DNS, "udp", 53),
            edge(&api, DNS, "udp", 53),
            edge(&web, &api, "tcp", 8080),
            edge(&web, &cache, "tcp", 6379),
            edge(&web, &cache, "udp", 9121),
            edge(&api, "external:2001:db8::10", "tcp", 443),
        ])
    );
    // Not one IPv4 address on the wire.
    let flows = std::fs::read_to_string(out.join("flows.jsonl")).unwrap();
    let families: BTreeSet<bool> = flows
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|flow| flow["type"] == "flow")
        .flat_map(|flow| {
            [&flow["local"]["ip"], &flow["remote"]["ip"]]
                .map(|ip| ip.as_str().unwrap().contains(':'))
        })
        .collect();
    assert_eq!(families, BTreeSet::from([true]));
    verify(&out);
    let policies = std::fs::read_to_string(out.join("policies/shop.yaml")).unwrap();
    assert!(policies.contains("cidr: 2001:db8::10/128"), "{policies}");
    generate_and_verify_cilium(&out);
    generate_and_verify_baselines(&out);
    std::fs::remove_dir_all(out).ok();
}
