//! The commands that talk to a cluster, against the scripted API:
//! `graph pull` (agent pods through the pod proxy) and `policy apply`
//! (server-side apply with field manager netflow).

mod common;

use std::{collections::BTreeSet, path::Path, process::Command};

use common::{
    deploy::{grants, object, rbac_of},
    fake_api::{FakeApi, Reject},
};
use serde_json::json;

fn agent(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(common::agent()).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn agent_pod(api: &FakeApi, namespace: &str, name: &str, node: &str) {
    api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
            "labels": {"app.kubernetes.io/name": "netflow-agent"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent"}]}}));
}

/// A node's graph with one edge FROM -> cart:7070.
fn node_graph(from: &str, connections: u64) -> String {
    json!({"version": 1,
        "nodes": [
            {"id": format!("workload:shop/Deployment/{from}"), "kind": "workload", "namespace": "shop", "name": from},
            {"id": "workload:shop/Deployment/cart", "kind": "workload", "namespace": "shop", "name": "cart"}],
        "edges": [{"from": format!("workload:shop/Deployment/{from}"), "to": "workload:shop/Deployment/cart",
            "protocol": "tcp", "port": 7070, "first_seen": "2026-11-20T10:00:00Z",
            "last_seen": "2026-11-25T10:00:00Z", "days_seen": ["2026-11-20"], "connections": connections, "bytes": 100}]})
    .to_string()
}

#[test]
fn graph_pull_merges_every_node_and_names_the_ones_that_did_not_answer() {
    let dir = common::tempdir("pull");
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let out = dir.join("cluster.json");
    let out_arg = out.to_str().unwrap();

    // Nothing deployed: a clear error.
    let (code, _, stderr) = agent(&["graph", "pull", "--kubeconfig", kubeconfig, "-o", out_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no agent pods match"), "{stderr}");

    agent_pod(&api, "netflow", "netflow-agent-aaaaa", "node-a");
    agent_pod(&api, "netflow", "netflow-agent-bbbbb", "node-b");
    agent_pod(&api, "netflow", "netflow-agent-ccccc", "node-c");
    // Same label elsewhere: not an agent of this deployment.
    agent_pod(&api, "other", "netflow-agent-zzzzz", "node-z");
    api.set_proxy("netflow-agent-aaaaa", 200, &node_graph("frontend", 3));
    api.set_proxy("netflow-agent-bbbbb", 200, &node_graph("frontend", 2));
    // node-c's agent does not answer (the proxy says 503).

    let (code, _, stderr) = agent(&["graph", "pull", "--kubeconfig", kubeconfig, "-o", out_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("node did not answer: node-c (pod netflow-agent-ccccc)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 3 nodes did not answer; nothing written"),
        "{stderr}"
    );
    assert!(
        !out.exists(),
        "no partial graph is written as if it were complete"
    );

    let (code, _, stderr) = agent(&[
        "graph",
        "pull",
        "--kubeconfig",
        kubeconfig,
        "-o",
        out_arg,
        "--allow-missing",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("from 2 of 3 nodes"), "{stderr}");
    let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let edges = merged["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{merged:#}");
    assert_eq!(edges[0]["connections"], 5);

    // Every node answers; one answer is not a graph: named, nothing written.
    api.set_proxy("netflow-agent-ccccc", 200, &node_graph("checkout", 1));
    let (code, _, stderr) = agent(&["graph", "pull", "--kubeconfig", kubeconfig, "-o", out_arg]);
    assert_eq!(code, 0, "{stderr}");
    let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(merged["edges"].as_array().unwrap().len(), 2);
    std::fs::remove_file(&out).unwrap();
    api.set_proxy("netflow-agent-ccccc", 200, "{\"version\": 1, \"nodes\": [");
    let (code, _, stderr) = agent(&["graph", "pull", "--kubeconfig", kubeconfig, "-o", out_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("node-c") && stderr.contains("not valid"),
        "{stderr}"
    );
    assert!(!out.exists());

    // What it asked of the API is what the graph reader role grants (and
    // the GET of the port-forward upgrade, which older API servers check).
    let used: BTreeSet<_> = api.requests().iter().map(rbac_of).collect();
    let granted = grants(&object("Role", "netflow-graph-reader"));
    let portforward_get = (
        String::new(),
        "pods/portforward".to_string(),
        "get".to_string(),
    );
    assert!(used.is_subset(&granted), "{used:?} not in {granted:?}");
    let extra: BTreeSet<_> = granted.difference(&used).cloned().collect();
    assert_eq!(extra, BTreeSet::from([portforward_get]));
    assert!(
        !granted
            .iter()
            .any(|(_, resource, _)| resource == "pods/proxy"),
        "the graph is not reachable through the pod proxy"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn write_policies(dir: &Path) -> std::path::PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("shop.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny\n  namespace: shop\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n---\n\
         apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: cart-ingress\n  namespace: shop\nspec:\n  endpointSelector:\n    matchLabels:\n      app: cart\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: frontend\n",
    )
    .unwrap();
    // Not YAML: ignored, as generate writes it beside the policies.
    std::fs::write(policies.join("findings.json"), "[]").unwrap();
    policies
}

#[test]
fn policy_apply_uses_server_side_apply_as_netflow() {
    let dir = common::tempdir("apply");
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let policies = write_policies(&dir);
    let policies = policies.to_str().unwrap();

    // --dry-run: the server is asked, nothing is stored.
    let (code, stdout, stderr) = agent(&[
        "policy",
        "apply",
        policies,
        "--kubeconfig",
        kubeconfig,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("applied NetworkPolicy shop/default-deny (dry run)"),
        "{stdout}"
    );
    assert!(
        api.object(
            "apis/networking.k8s.io/v1/networkpolicies",
            "shop",
            "default-deny"
        )
        .is_none()
    );

    let (code, stdout, stderr) = agent(&["policy", "apply", policies, "--kubeconfig", kubeconfig]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("applied CiliumNetworkPolicy shop/cart-ingress"),
        "{stdout}"
    );
    let stored = api
        .object(
            "apis/networking.k8s.io/v1/networkpolicies",
            "shop",
            "default-deny",
        )
        .expect("stored");
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(
        api.object(
            "apis/cilium.io/v2/ciliumnetworkpolicies",
            "shop",
            "cart-ingress"
        )
        .is_some()
    );

    let patches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    // --dry-run: two dry runs; the apply: two dry runs first, then the
    // allow before the default-deny.
    assert_eq!(patches.len(), 6);
    let real: Vec<&str> = patches
        .iter()
        .filter(|p| !p.query.contains_key("dryRun"))
        .map(|p| p.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(real, vec!["cart-ingress", "default-deny"]);
    for patch in &patches {
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            patch.query.get("fieldManager").map(String::as_str),
            Some("netflow")
        );
        assert!(
            !patch.query.contains_key("force"),
            "no takeover without --force"
        );
    }
    assert_eq!(
        patches
            .iter()
            .filter(|p| p.query.get("dryRun").map(String::as_str) == Some("All"))
            .count(),
        4
    );
    let used: BTreeSet<_> = api.requests().iter().map(rbac_of).collect();
    let granted = grants(&object("ClusterRole", "netflow-policy-applier"));
    assert!(used.is_subset(&granted), "{used:?} not in {granted:?}");

    // A broken file applies nothing, and is named.
    let before = api.requests().len();
    std::fs::write(
        Path::new(policies).join("broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: shop}\n",
    )
    .unwrap();
    let (code, _, stderr) = agent(&["policy", "apply", policies, "--kubeconfig", kubeconfig]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("broken.yaml"), "{stderr}");
    assert_eq!(api.requests().len(), before, "nothing was sent");
    std::fs::remove_dir_all(dir).ok();
}

/// A directory as `generate --cluster-baseline cnp` writes it: the Admin
/// tier, a namespace, the Baseline tier.
fn write_tiered_policies(dir: &Path) -> std::path::PathBuf {
    let policies = dir.join("tiered");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("_cluster-admin.yaml"),
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: netflow-admin}\nspec:\n  tier: Admin\n  priority: 50\n  subject: {namespaces: {}}\n  egress: [{action: Deny, to: [{networks: [169.254.169.254/32]}]}]\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("_cluster-baseline.yaml"),
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: [{action: Deny, from: [{namespaces: {}}]}]\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("shop.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-web, namespace: shop}\nspec: {podSelector: {matchLabels: {app: web}}, ingress: [{}]}\n",
    )
    .unwrap();
    policies
}

#[test]
fn policy_apply_puts_the_admin_tier_first_and_the_baseline_last() {
    let dir = common::tempdir("apply-tiers");
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let policies = write_tiered_policies(&dir);
    let policies = policies.to_str().unwrap();
    let (code, stdout, stderr) = agent(&["policy", "apply", policies, "--kubeconfig", kubeconfig]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("applied ClusterNetworkPolicy netflow-admin"),
        "{stdout}"
    );
    let real: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.query.contains_key("dryRun"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        real,
        vec![
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/netflow-admin",
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/allow-web",
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/default-deny",
            "/apis/policy.networking.k8s.io/v1alpha1/baselineadminnetworkpolicies/default",
        ]
    );
    assert!(
        api.object(
            "apis/policy.networking.k8s.io/v1alpha1/baselineadminnetworkpolicies",
            "",
            "default"
        )
        .is_some()
    );
    let used: BTreeSet<_> = api.requests().iter().map(rbac_of).collect();
    let granted = grants(&object("ClusterRole", "netflow-policy-applier"));
    assert!(used.is_subset(&granted), "{used:?} not in {granted:?}");

    // An allow the server refuses: the Baseline tier is held back.
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    api.reject("allow-web", Reject::RealApplyOnly);
    let (code, _, stderr) = agent(&[
        "policy",
        "apply",
        policies,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not applied BaselineAdminNetworkPolicy default"),
        "{stderr}"
    );
    assert!(
        api.object(
            "apis/policy.networking.k8s.io/v1alpha1/baselineadminnetworkpolicies",
            "",
            "default"
        )
        .is_none()
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A graph where shop/web calls data/db on 5432 and shop/api on 9000, and
/// the inventory with their pods.
fn web_graph(dir: &Path) {
    let workload = |namespace: &str, name: &str| {
        json!({"id": format!("workload:{namespace}/Pod/{name}"), "kind": "workload",
            "namespace": namespace, "name": name, "workload_kind": "Pod", "labels": {"app": name}})
    };
    let edge = |from: &str, to: &str, port: u16| {
        json!({"from": from, "to": to, "protocol": "tcp", "port": port,
            "first_seen": "2026-11-20T10:00:00Z", "last_seen": "2026-11-20T10:00:00Z",
            "connections": 1, "established": 1, "bytes": 10})
    };
    let graph = json!({"version": 1,
    "nodes": [workload("shop", "web"), workload("data", "db"), workload("shop", "api")],
    "edges": [
        edge("workload:shop/Pod/web", "workload:data/Pod/db", 5432),
        edge("workload:shop/Pod/web", "workload:shop/Pod/api", 9000),
    ]});
    std::fs::write(dir.join("graph.json"), graph.to_string()).unwrap();
    let pod = |namespace: &str, name: &str, ip: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"podIP": ip}})
    };
    let inventory = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "data"}},
        pod("shop", "web", "10.0.0.1"), pod("shop", "api", "10.0.0.2"), pod("data", "db", "10.0.1.1"),
    ]});
    std::fs::write(dir.join("inventory.json"), inventory.to_string()).unwrap();
}

#[test]
fn policy_verify_against_the_cluster_reads_its_policies_through_the_api() {
    let dir = common::tempdir("against");
    web_graph(&dir);
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    // data isolates its pods and lets nobody in; an Admin tier rule denies
    // shop's egress to port 9000; Cilium is not installed.
    api.put(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "data"}, "spec": {"podSelector": {}}}),
    );
    api.put(
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "no-9000"},
        "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
            "egress": [{"action": "Deny", "to": [{"namespaces": {}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 9000}}}]}]}}),
    );
    api.uninstall("apis/cilium.io/v2/ciliumnetworkpolicies");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "policy".to_string(),
            "verify".into(),
            "--against-cluster".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--graph".into(),
            dir.join("graph.json").display().to_string(),
            "--inventory".into(),
            dir.join("inventory.json").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args_ref = args(&[]);
    let args_ref: Vec<&str> = args_ref.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = agent(&args_ref);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("BLOCKED shop/web -> data/db tcp/5432")
            && stdout.contains("isolated by deny-all"),
        "{stdout}"
    );
    assert!(
        stdout.contains("BLOCKED shop/web -> shop/api tcp/9000")
            && stdout.contains("ClusterNetworkPolicy no-9000"),
        "{stdout}"
    );
    assert!(stderr.contains("1 NetworkPolicy"), "{stderr}");
    assert!(
        stderr.contains("not served by this cluster (no CRD): CiliumNetworkPolicy"),
        "{stderr}"
    );
    let used: BTreeSet<_> = api.requests().iter().map(rbac_of).collect();
    let granted = grants(&object("ClusterRole", "netflow-policy-reader"));
    assert!(used.is_subset(&granted), "{used:?} not in {granted:?}");

    // A policy netflow cannot judge is refused by name, not skipped.
    api.put(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "broken", "namespace": "shop"}, "spec": {"podSelector": 7}}),
    );
    let (code, _, stderr) = agent(&args_ref);
    assert_eq!(code, 1);
    assert!(stderr.contains("NetworkPolicy shop/broken"), "{stderr}");

    // Files and the cluster are one or the other.
    let both = args(&["--policies", "x"]);
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let (code, _, stderr) = agent(&both);
    assert_eq!(code, 2, "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn policy_apply_is_all_or_nothing() {
    let dir = common::tempdir("apply-refused");
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let policies = write_policies(&dir);
    let policies = policies.to_str().unwrap();
    let stored = |collection: &str, name: &str| api.object(collection, "shop", name).is_some();
    const NP: &str = "apis/networking.k8s.io/v1/networkpolicies";
    const CNP: &str = "apis/cilium.io/v2/ciliumnetworkpolicies";

    // The server refuses one object in the dry run: nothing is applied.
    api.reject("cart-ingress", Reject::Always);
    let (code, _, stderr) = agent(&["policy", "apply", policies, "--kubeconfig", kubeconfig]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("CiliumNetworkPolicy shop/cart-ingress")
            && stderr.contains("refused by the scripted API")
            && stderr.contains("nothing was applied"),
        "{stderr}"
    );
    assert!(!stored(NP, "default-deny") && !stored(CNP, "cart-ingress"));
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r.query.contains_key("dryRun")),
        "only dry runs were sent"
    );

    // It passes the dry run but fails for real: the namespace keeps its
    // traffic (no default-deny without its allows).
    api.reject("cart-ingress", Reject::RealApplyOnly);
    let (code, _, stderr) = agent(&["policy", "apply", policies, "--kubeconfig", kubeconfig]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not applied NetworkPolicy shop/default-deny"),
        "{stderr}"
    );
    assert!(!stored(NP, "default-deny") && !stored(CNP, "cart-ingress"));
    std::fs::remove_dir_all(dir).ok();
}
