//! The report page in a real browser: `graph export --format html` opened
//! in headless Chromium (Debian's package), its DOM read after the script
//! ran: node and edge counts equal the graph's, filters (from the URL hash)
//! hide what they should, a blocked edge is marked, and a page of 2 000
//! workloads and 20 000 edges loads in under 3 s.

mod common;

use std::{path::Path, process::Command};

use serde_json::{Value, json};

/// The DOM after the page's script ran, for `page#hash`.
fn dom(chromium: &Path, dir: &Path, page: &Path, hash: &str) -> String {
    let output = common::browser::command(chromium, &dir.join("profile"))
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}#{hash}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        dom.contains("data-ready=\"true\""),
        "the script did not finish: {dom:.2000}"
    );
    dom
}

/// `data-NAME="..."` of the body.
fn body_number(dom: &str, name: &str) -> u64 {
    let body = &dom[dom.find("<body").unwrap()..];
    let body = &body[..body.find('>').unwrap()];
    let key = format!("data-{name}=\"");
    let start = body
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        + key.len();
    body[start..start + body[start..].find('"').unwrap()]
        .parse()
        .unwrap()
}

fn workload(namespace: &str, name: &str) -> Value {
    json!({"id": format!("workload:{namespace}/Deployment/{name}"), "kind": "workload",
        "namespace": namespace, "name": name, "workload_kind": "Deployment", "labels": {"app": name}})
}

fn edge(from: &str, to: &str, port: u16) -> Value {
    json!({"from": format!("workload:{from}"), "to": format!("workload:{to}"), "protocol": "tcp", "port": port,
        "first_seen": "2026-11-20T10:00:00Z", "last_seen": "2026-11-20T11:00:00Z",
        "days_seen": ["2026-11-20"], "connections": 3, "established": 3, "bytes": 300})
}

fn pod(namespace: &str, name: &str, ip: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-abc-1"), "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
            "labels": {"app": name},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-abc"), "uid": format!("rs-{name}"), "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": port}]}]},
        "status": {"podIP": ip}})
}

fn replica_set(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{name}-abc"), "namespace": namespace, "uid": format!("rs-{name}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": format!("d-{name}"), "controller": true}]}})
}

fn agent(args: &[&str], dir: &Path) {
    let output = Command::new(common::agent())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
}

/// shop/web -> shop/api:8080 -> data/db:5432, and web's DNS: the policies
/// generated from them; then a later graph with web -> db:5432 as well,
/// which they block.
#[test]
fn the_page_shows_the_graph_and_its_review_in_a_browser() {
    let Some(chromium) = common::browser::chromium() else {
        return;
    };
    let dir = std::env::temp_dir().join(common::unique_name("netflow-report-"));
    std::fs::create_dir_all(&dir).unwrap();
    let inventory = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "data"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "coredns"}, "ports": [{"port": 53, "protocol": "UDP"}]}},
        replica_set("kube-system", "coredns"), pod("kube-system", "coredns", "10.244.0.2", 53),
        replica_set("shop", "web"), pod("shop", "web", "10.244.0.5", 80),
        replica_set("shop", "api"), pod("shop", "api", "10.244.0.6", 8080),
        replica_set("data", "db"), pod("data", "db", "10.244.0.7", 5432),
    ]});
    std::fs::write(dir.join("inventory.json"), inventory.to_string()).unwrap();
    let nodes = json!([
        workload("shop", "web"),
        workload("shop", "api"),
        workload("data", "db"),
        workload("kube-system", "coredns")
    ]);
    let week = vec![
        edge("shop/Deployment/web", "shop/Deployment/api", 8080),
        edge("shop/Deployment/api", "data/Deployment/db", 5432),
    ];
    std::fs::write(
        dir.join("week.json"),
        json!({"version": 1, "nodes": nodes, "edges": week}).to_string(),
    )
    .unwrap();
    agent(
        &[
            "policy",
            "generate",
            "--graph",
            "week.json",
            "--inventory",
            "inventory.json",
            "--out",
            "policies",
        ],
        &dir,
    );
    let mut later = week.clone();
    later.push(edge("shop/Deployment/web", "data/Deployment/db", 5432));
    std::fs::write(
        dir.join("later.json"),
        json!({"version": 1, "nodes": nodes, "edges": later}).to_string(),
    )
    .unwrap();
    agent(
        &[
            "graph",
            "export",
            "--format",
            "html",
            "--graph",
            "later.json",
            "--inventory",
            "inventory.json",
            "--policies",
            "policies",
            "-o",
            "report.html",
        ],
        &dir,
    );
    let page = dir.join("report.html");
    // Self-contained: nothing to fetch.
    let html = std::fs::read_to_string(&page).unwrap();
    for fetch in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(fetch), "{fetch}");
    }

    let all = dom(&chromium, &dir, &page, "");
    assert_eq!(body_number(&all, "nodes"), 4);
    assert_eq!(body_number(&all, "edges"), 3);
    assert_eq!(body_number(&all, "visible-edges"), 3);
    let edge_list = &all[all.find("id=\"edge-list\"").unwrap()..];
    let edge_list = &edge_list[..edge_list.find("</table>").unwrap()];
    assert_eq!(edge_list.matches("<tr class=").count(), 3, "{edge_list}");
    // The new edge is blocked, marked and explained; the others allowed by name.
    let blocked: Vec<&str> = edge_list
        .split("<tr ")
        .filter(|row| row.starts_with("class=\"blocked"))
        .collect();
    assert_eq!(blocked.len(), 1, "{edge_list}");
    assert!(
        blocked[0].contains("shop/web") && blocked[0].contains("data/db"),
        "{}",
        blocked[0]
    );
    assert!(
        blocked[0].contains("no rule allows tcp/5432"),
        "{}",
        blocked[0]
    );
    assert!(
        edge_list.contains("NetworkPolicy shop/allow-deployment-web"),
        "{edge_list}"
    );
    assert!(all.contains("id=\"plan\""), "the rollout plan");
    // The blast radius by namespace: shop's and data's pods as servers.
    let radius = &all[all.find("id=\"radius\"").unwrap()..];
    let radius = &radius[..radius.find("</table>").unwrap()];
    for namespace in ["shop", "data"] {
        assert!(
            radius.contains(&format!("data-ns=\"{namespace}\"")),
            "{radius}"
        );
    }
    // Replicas from the inventory.
    let node_list = &all[all.find("id=\"node-list\"").unwrap()..];
    assert!(node_list.contains("<td>1</td>"), "{node_list:.2000}");

    // Filters: a namespace keeps the edges that touch it; a search keeps
    // what matches; "findings" keeps the blocked edge.
    let data = dom(&chromium, &dir, &page, "ns=data");
    assert_eq!(body_number(&data, "visible-edges"), 2);
    let searched = dom(&chromium, &dir, &page, "q=api");
    assert_eq!(body_number(&searched, "visible-edges"), 2);
    let findings = dom(&chromium, &dir, &page, "only=findings");
    assert_eq!(body_number(&findings, "visible-edges"), 1);

    // A picture of it, as a reviewer sees it.
    common::browser::screenshot(&chromium, &page, &dir.join("report.png"));
    std::fs::remove_dir_all(&dir).ok();
}

/// 2 000 workloads in 40 namespaces and 20 000 edges: the page is parsed,
/// drawn and listed within 3 s of navigation.
#[test]
fn a_large_page_loads_in_under_three_seconds() {
    let Some(chromium) = common::browser::chromium() else {
        return;
    };
    let dir = std::env::temp_dir().join(common::unique_name("netflow-report-big-"));
    std::fs::create_dir_all(&dir).unwrap();
    const WORKLOADS: usize = 2_000;
    const EDGES: usize = 20_000;
    let name = |index: usize| (format!("ns{}", index % 40), format!("w{index}"));
    let nodes: Vec<Value> = (0..WORKLOADS)
        .map(|index| {
            let (namespace, name) = name(index);
            workload(&namespace, &name)
        })
        .collect();
    // A fixed pseudo-random pattern (no two edges the same).
    let edges: Vec<Value> = (0..EDGES)
        .map(|index| {
            let from = index % WORKLOADS;
            let to = (from * 7 + index / WORKLOADS * 131 + 1) % WORKLOADS;
            let (from_ns, from_name) = name(from);
            let (to_ns, to_name) = name(if to == from { (to + 1) % WORKLOADS } else { to });
            edge(
                &format!("{from_ns}/Deployment/{from_name}"),
                &format!("{to_ns}/Deployment/{to_name}"),
                8000 + (index / WORKLOADS) as u16,
            )
        })
        .collect();
    std::fs::write(
        dir.join("big.json"),
        json!({"version": 1, "nodes": nodes, "edges": edges}).to_string(),
    )
    .unwrap();
    agent(
        &[
            "graph", "export", "--format", "html", "--graph", "big.json", "-o", "big.html",
        ],
        &dir,
    );
    let page = dir.join("big.html");
    let dom = dom(&chromium, &dir, &page, "");
    assert_eq!(body_number(&dom, "nodes"), WORKLOADS as u64);
    assert_eq!(body_number(&dom, "edges"), EDGES as u64);
    let load_ms = body_number(&dom, "load-ms");
    eprintln!(
        "2 000 workloads, 20 000 edges: loaded in {load_ms} ms (script {} ms)",
        body_number(&dom, "render-ms")
    );
    assert!(load_ms < 3_000, "{load_ms} ms");
    std::fs::remove_dir_all(&dir).ok();
}
