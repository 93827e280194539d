//! `policy generate --cluster-baseline cnp|anp`: the cluster admin's tiers
//! are written as network-policy-api objects that fit their CRDs, `policy
//! verify` still passes every observed edge through them (and the
//! namespaced policies), and `policy plan` puts the Admin tier before the
//! namespaces and the Baseline tier last.

mod common;

use std::{path::Path, process::Command};

use serde_json::{Value, json};

fn workload(namespace: &str, kind: &str, name: &str, labels: Value) -> Value {
    json!({
        "id": format!("workload:{namespace}/{kind}/{name}"),
        "kind": "workload",
        "namespace": namespace,
        "name": name,
        "workload_kind": kind,
        "labels": labels,
    })
}

fn edge(from: &str, to: &str, protocol: &str, port: u16) -> Value {
    json!({
        "from": from, "to": to, "protocol": protocol, "port": port,
        "first_seen": "2026-11-20T10:00:00Z", "last_seen": "2026-11-20T11:00:00Z",
        "days_seen": ["2026-11-20"], "connections": 3, "established": 3, "bytes": 300,
    })
}

fn pod(namespace: &str, name: &str, app: &str, ip: &str, owner: Option<(&str, &str)>) -> Value {
    let mut metadata = json!({"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "labels": {"app": app}});
    if let Some((kind, owner)) = owner {
        metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": format!("o-{owner}"), "controller": true}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 5432}]}]},
        "status": {"podIP": ip}})
}

/// shop/web calls data/db on 5432, the cluster DNS, and the metadata
/// service; `idle` (namespace `batch`) is in the inventory and the graph
/// but has no edges.
fn fixture(dir: &Path) {
    let inventory = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "data"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}, "ports": [{"port": 53, "protocol": "UDP"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "coredns", "namespace": "kube-system", "uid": "uid-dns", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}, "status": {"podIP": "10.244.0.2"}},
        pod("shop", "web", "web", "10.244.0.5", None),
        pod("data", "db", "db", "10.244.0.6", None),
    ]});
    std::fs::write(dir.join("inventory.json"), inventory.to_string()).unwrap();
    let web = "workload:shop/Pod/web";
    let db = "workload:data/Pod/db";
    let dns = "workload:kube-system/Pod/coredns";
    let graph = json!({"version": 1,
    "nodes": [
        workload("shop", "Pod", "web", json!({"app": "web"})),
        workload("data", "Pod", "db", json!({"app": "db"})),
        workload("kube-system", "Pod", "coredns", json!({"k8s-app": "kube-dns"})),
        {"id": "metadata", "kind": "metadata", "name": "metadata", "addresses": ["169.254.169.254"]},
    ],
    "edges": [
        edge(web, db, "tcp", 5432),
        edge(web, dns, "udp", 53),
        edge(web, "metadata", "tcp", 80),
    ]});
    std::fs::write(dir.join("graph.json"), graph.to_string()).unwrap();
}

fn agent(args: &[&str], dir: &Path) -> (bool, String, String) {
    let output = Command::new(common::agent())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn generate(dir: &Path, out: &str, extra: &[&str]) {
    let mut args = vec![
        "policy",
        "generate",
        "--graph",
        "graph.json",
        "--inventory",
        "inventory.json",
        "--out",
        out,
    ];
    args.extend(extra);
    let (ok, _, stderr) = agent(&args, dir);
    assert!(ok, "generate {extra:?}: {stderr}");
}

fn verify_report(dir: &Path, policies: &str) -> Value {
    let (ok, stdout, stderr) = agent(
        &[
            "policy",
            "verify",
            "--json",
            "--graph",
            "graph.json",
            "--inventory",
            "inventory.json",
            "--policies",
            policies,
        ],
        dir,
    );
    assert!(ok, "verify {policies}: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn cluster_baselines_fit_their_crds_and_verify_like_the_namespaced_policies() {
    let dir = common::tempdir("baseline");
    fixture(&dir);
    generate(&dir, "namespaced", &[]);
    let namespaced = verify_report(&dir, "namespaced");
    for (mode, kinds) in [
        ("cnp", ["ClusterNetworkPolicy", "ClusterNetworkPolicy"]),
        ("anp", ["AdminNetworkPolicy", "BaselineAdminNetworkPolicy"]),
    ] {
        let out = format!("baseline-{mode}");
        generate(&dir, &out, &["--cluster-baseline", mode]);
        let policies = dir.join(&out);
        common::validate_policy_dir(&policies);
        for (file, kind) in ["_cluster-admin.yaml", "_cluster-baseline.yaml"]
            .iter()
            .zip(kinds)
        {
            let text = std::fs::read_to_string(policies.join(file)).unwrap();
            assert!(text.contains(&format!("kind: {kind}")), "{file}: {text}");
        }
        let report = verify_report(&dir, &out);
        assert_eq!(report["blocked"], json!([]), "{mode}: {report}");
        assert_eq!(report["allowed"], namespaced["allowed"], "{mode}");
        assert_eq!(
            report["blast_radius"]["pairs_after"], namespaced["blast_radius"]["pairs_after"],
            "{mode}: the tiers open exactly what the namespaced policies open"
        );
        assert_eq!(report["metadata_contacts"].as_array().unwrap().len(), 1);

        // Admin tier before any namespace, Baseline tier last.
        let (ok, plan, stderr) = agent(
            &[
                "policy",
                "plan",
                "--graph",
                "graph.json",
                "--policies",
                &out,
            ],
            &dir,
        );
        assert!(ok, "{stderr}");
        let admin = plan.find("_cluster-admin.yaml").expect(&plan);
        let baseline = plan.find("_cluster-baseline.yaml").expect(&plan);
        let namespace = plan.find(&format!("{out}/shop.yaml")).expect(&plan);
        assert!(admin < namespace && namespace < baseline, "{plan}");
    }
    // Generating again without a baseline leaves no tier file behind.
    generate(&dir, "baseline-cnp", &[]);
    assert!(!dir.join("baseline-cnp/_cluster-admin.yaml").exists());
    assert!(!dir.join("baseline-cnp/_cluster-baseline.yaml").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_crd_validator_refuses_what_the_api_server_would() {
    let dir = common::tempdir("crdbad");
    let path = dir.join("bad.yaml");
    for (bad, why) in [
        (
            "tier: Admin\n  priority: 1001\n  subject: {namespaces: {}}",
            "priority",
        ),
        (
            "tier: Admin\n  priority: 1\n  subject: {namespaces: {}, pods: {podSelector: {}}}",
            "two subjects",
        ),
        (
            "tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n  egres: []",
            "unknown field",
        ),
        (
            "tier: Middle\n  priority: 1\n  subject: {namespaces: {}}",
            "tier",
        ),
    ] {
        std::fs::write(
            &path,
            format!("apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: x}}\nspec:\n  {bad}\n"),
        )
        .unwrap();
        let result = std::panic::catch_unwind(|| common::validate_crd_schema(&path));
        assert!(result.is_err(), "{why}: accepted");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cilium_flavor_refuses_a_baseline_by_name() {
    let dir = common::tempdir("cilbase");
    fixture(&dir);
    let (ok, _, stderr) = agent(
        &[
            "policy",
            "generate",
            "--flavor",
            "cilium",
            "--cluster-baseline",
            "cnp",
            "--graph",
            "graph.json",
            "--inventory",
            "inventory.json",
            "--out",
            "out",
        ],
        &dir,
    );
    assert!(!ok && stderr.contains("--flavor kubernetes"), "{stderr}");
    assert!(!dir.join("out").exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}
