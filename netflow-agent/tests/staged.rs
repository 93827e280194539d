//! Staged mode (issue 15): policies generated from a first phase of
//! traffic are staged on a running agent; a second phase repeats the first
//! and adds one new edge. Exactly that edge is reported: in /metrics, at
//! /denials, in the state directory, and again after a restart.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{agent_process::AgentProcess, fake_api::FakeApi};
use netflow_agent::testbed::{
    Host, Testbed,
    http_client::{free_loopback_addr, http_get},
};

const CLIENT_UID: &str = "57a6ed00-0000-4000-8000-00000000000a";
const SERVER_UID: &str = "57a6ed00-0000-4000-8000-00000000000b";

fn inventory() -> String {
    let pod = |name: &str, uid: &str, ip: &str, node: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-0"), "namespace": "shop", "uid": uid,
                "labels": {"app": name},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": format!("ss-{name}"), "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090, "protocol": "TCP"}]}]},
            "status": {"podIP": ip, "startTime": "2020-01-01T00:00:00Z"}})
    };
    let owner = |name: &str| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("ss-{name}")},
            "spec": {"selector": {"matchLabels": {"app": name}}}})
    };
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
        owner("client"), owner("server"),
        pod("client", CLIENT_UID, "10.231.0.1", "host-a"),
        pod("server", SERVER_UID, "10.231.0.2", "host-b"),
    ]})
    .to_string()
}

/// `record` on the testbed with a short interval and `args`.
fn start(testbed: &Testbed, args: &[&std::ffi::OsStr]) -> AgentProcess {
    let mut all: Vec<&std::ffi::OsStr> = vec!["--interval".as_ref(), "0.5s".as_ref()];
    all.extend_from_slice(args);
    AgentProcess::start("record", testbed.cgroup_parent(), all)
}

fn connect(testbed: &Testbed, cgroup: &Path, port: u16, count: usize) {
    let output = Command::new(common::lab())
        .arg("peer")
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--netns")
        .arg(testbed.netns_path(Host::A))
        .args([
            "connect",
            "--tcp",
            &format!("10.231.0.2:{port}"),
            "--count",
            &count.to_string(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

fn until(what: &str, mut ready: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = ready() {
            return found;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn denials(graph_port: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(graph_port, "/denials").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn staged_policies_report_exactly_the_edge_they_would_break() {
    if !common::privileged("staged_policies_report_exactly_the_edge_they_would_break") {
        return;
    }
    let testbed = Testbed::two_hosts(&common::unique_name("nfstg")).unwrap();
    let dir = common::tempdir("staged");
    let inventory_path = dir.join("inventory.json");
    std::fs::write(&inventory_path, inventory()).unwrap();
    let client = common::pod_cgroup(&testbed, CLIENT_UID, 'a');
    let server = common::pod_cgroup(&testbed, SERVER_UID, 'b');
    let mut server_process = Command::new(common::lab())
        .arg("peer")
        .arg("--cgroup")
        .arg(&server)
        .arg("--netns")
        .arg(testbed.netns_path(Host::B))
        .args([
            "serve",
            "--tcp",
            "10.231.0.2:8080",
            "--tcp",
            "10.231.0.2:9090",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(server_process.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");

    // Phase 1: the audit. client -> server:8080 only.
    let audit = dir.join("audit");
    let agent = start(
        &testbed,
        &[
            "--inventory".as_ref(),
            inventory_path.as_os_str(),
            "--state-dir".as_ref(),
            audit.as_os_str(),
        ],
    );
    connect(&testbed, &client, 8080, 3);
    thread::sleep(Duration::from_millis(1200));
    agent.stop(libc::SIGTERM);
    let policies = dir.join("policies");
    let generated = Command::new(common::agent())
        .args(["policy", "generate", "--graph"])
        .arg(audit.join("graph.json"))
        .arg("--inventory")
        .arg(&inventory_path)
        .arg("--out")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");

    // Phase 2: the same traffic, staged, and one new edge (port 9090).
    let state = dir.join("state");
    let (listen, graph_listen) = (free_loopback_addr().unwrap(), free_loopback_addr().unwrap());
    let staged_args = |state: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--inventory".into(),
            inventory_path.clone().into(),
            "--state-dir".into(),
            state.into(),
            "--staged".into(),
            policies.clone().into(),
            "--listen".into(),
            listen.to_string().into(),
            "--graph-listen".into(),
            graph_listen.to_string().into(),
        ]
    };
    let args = staged_args(&state);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|arg| arg.as_os_str()).collect();
    let agent = start(&testbed, &args);
    connect(&testbed, &client, 8080, 2);
    connect(&testbed, &client, 9090, 2);
    let metrics = until("the denial in /metrics", || {
        let (_, text) = http_get(listen, "/metrics").ok()?;
        text.contains("netflow_staged_denied_total{")
            .then_some(text)
    });
    let denied: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("netflow_staged_denied_total{"))
        .collect();
    assert_eq!(
        denied,
        vec![
            "netflow_staged_denied_total{namespace=\"shop\",workload=\"client\",policy_namespace=\"shop\"} 2"
        ],
        "{metrics}"
    );
    let served = denials(graph_listen);
    let edges: Vec<&String> = served["denials"].as_object().unwrap().keys().collect();
    assert_eq!(
        edges,
        vec!["shop/client -> shop/server tcp/9090"],
        "{served:#}"
    );
    let denial = &served["denials"]["shop/client -> shop/server tcp/9090"];
    assert_eq!(denial["connections"], 2);
    assert_eq!(denial["policy_namespace"], "shop");
    assert!(
        denial["reason"].as_str().unwrap().contains("9090"),
        "{denial}"
    );
    let said = agent.stop(libc::SIGTERM);
    assert_eq!(
        said.iter()
            .filter(|line| line.contains("the staged policies would refuse"))
            .count(),
        1,
        "logged once: {said:#?}"
    );
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("staged-denials.json")).unwrap()).unwrap();
    assert_eq!(kept, served);

    // A restart keeps the list.
    let agent = start(&testbed, &args);
    let again = until("/denials after a restart", || {
        http_get(graph_listen, "/denials")
            .ok()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    });
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again, served);

    // The cluster's view: graph pull --denials through the API server's
    // port-forward, then the rollout plan shows what its step would break.
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    api.put(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "netflow-agent-host1", "namespace": "netflow", "uid": "agent-1",
            "labels": {"app.kubernetes.io/name": "netflow-agent"}},
        "spec": {"nodeName": "host-a", "containers": [{"name": "agent"}]}}));
    api.proxy_to("netflow-agent-host1", graph_listen);
    let (pulled, pulled_denials) = (dir.join("cluster.json"), dir.join("denials.json"));
    let pull = Command::new(common::agent())
        .args(["graph", "pull", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("-o")
        .arg(&pulled)
        .arg("--denials")
        .arg(&pulled_denials)
        .output()
        .unwrap();
    assert!(pull.status.success(), "{pull:?}");
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pulled_denials).unwrap()).unwrap();
    assert_eq!(merged, served);
    let plan = Command::new(common::agent())
        .args(["policy", "plan", "--graph"])
        .arg(&pulled)
        .arg("--policies")
        .arg(&policies)
        .arg("--denials")
        .arg(&pulled_denials)
        .output()
        .unwrap();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "{plan:?}");
    assert!(
        plan_text.contains("these 1 edges would break")
            && plan_text.contains("shop/client -> shop/server tcp/9090 (2 connections)"),
        "{plan_text}"
    );
    agent.stop(libc::SIGTERM);

    // The same set staged in the cluster (`--staged cluster`): the generated
    // objects marked staged, one by a label, the next by an annotation,
    // beside a default deny that is not (were it judged, 8080 would be
    // refused too) and one marked `false`.
    let mut marked = 0;
    for path in std::fs::read_dir(&policies).unwrap() {
        let path = path.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let mut object: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            let by = if marked % 2 == 0 {
                "labels"
            } else {
                "annotations"
            };
            object["metadata"][by]["netflow.io/staged"] = "true".into();
            marked += 1;
            api.put(object);
        }
    }
    assert!(marked >= 2, "{marked} objects: both marks are not tried");
    api.put(
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-everything", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
    );
    api.put(
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all-but-marked-false", "namespace": "shop",
                     "annotations": {"netflow.io/staged": "false"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
    );
    let in_cluster = dir.join("state-cluster");
    let args: Vec<std::ffi::OsString> = vec![
        "--inventory".into(),
        inventory_path.clone().into(),
        "--state-dir".into(),
        in_cluster.clone().into(),
        "--staged".into(),
        "cluster".into(),
        "--kubeconfig".into(),
        kubeconfig.clone().into(),
        "--graph-listen".into(),
        graph_listen.to_string().into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|arg| arg.as_os_str()).collect();
    let before = api.requests().len();
    let agent = start(&testbed, &args);
    // The first list is asked for at start; traffic after it is judged.
    until("the staged objects listed", || {
        api.requests()[before..]
            .iter()
            .any(|request| request.path.ends_with("/networkpolicies"))
            .then(String::new)
    });
    connect(&testbed, &client, 8080, 1);
    connect(&testbed, &client, 9090, 3);
    let judged = until("the denial judged against the cluster's staged set", || {
        let (status, body) = http_get(graph_listen, "/denials").ok()?;
        (status == 200 && body.contains("9090")).then_some(body)
    });
    let judged: serde_json::Value = serde_json::from_str(&judged).unwrap();
    let edges: Vec<&String> = judged["denials"].as_object().unwrap().keys().collect();
    assert_eq!(
        edges,
        vec!["shop/client -> shop/server tcp/9090"],
        "{judged:#}"
    );
    assert_eq!(
        judged["denials"]["shop/client -> shop/server tcp/9090"]["connections"],
        3
    );
    agent.stop(libc::SIGTERM);
    // What staged mode asked of the API is what its ClusterRole grants.
    let asked: std::collections::BTreeSet<_> = api.requests()[before..]
        .iter()
        .map(common::deploy::rbac_of)
        .collect();
    let granted = common::deploy::grants(&common::deploy::object(
        "ClusterRole",
        "netflow-agent-staged",
    ));
    assert!(asked.is_subset(&granted), "{asked:?} not in {granted:?}");
    assert!(
        asked
            .iter()
            .any(|(_, resource, _)| resource == "networkpolicies"),
        "{asked:?}"
    );

    let _ = server_process.kill();
    let _ = server_process.wait();
    drop(testbed);
    std::fs::remove_dir_all(dir).unwrap();
}
