//! The live inventory (kube-rs watchers) against a scripted Kubernetes API:
//! list then watch, pod churn, an IP reused by a new pod, a Deployment
//! rollout, and watches that break, are refused, or expire.

mod common;

use std::net::IpAddr;

use common::fake_api::{FakeApi, Live};
use netflow_agent::inventory::Inventory;
use serde_json::{Value, json};

fn pod(name: &str, uid: &str, ip: &str, replica_set: &str, started: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
            "labels": {"app": "web", "pod-template-hash": replica_set.rsplit('-').next().unwrap()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
                "uid": format!("uid-{replica_set}"), "controller": true}]},
        "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web:1",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}], "startTime": started}})
}

fn replica_set(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": "uid-web", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}}})
}

/// A small cluster: one namespace, node, Deployment with one pod, Service.
pub fn seed(api: &FakeApi) {
    api.put(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "uid": "uid-ns-shop"}}));
    api.put(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "uid": "uid-node-a"},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.2"}]}}));
    api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}}}}));
    api.put(replica_set("web-5d4f"));
    api.put(pod(
        "web-5d4f-aaaaa",
        "p1",
        "10.244.1.5",
        "web-5d4f",
        "2026-11-25T10:00:00Z",
    ));
    api.put(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-svc-web"},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}}));
    api.put(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "web-abc", "namespace": "shop", "uid": "uid-es-web",
            "labels": {"kubernetes.io/service-name": "web"}},
        "endpoints": [{"addresses": ["10.244.1.5"]}]}),
    );
}

fn unix(text: &str) -> i64 {
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn name_at(inventory: &Inventory, ip: &str, at: i64) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    inventory.pod_by_ip(ip, at).map(|pod| pod.name.to_string())
}

fn workload_of(inventory: &Inventory, uid: &str) -> Option<String> {
    inventory
        .pod_by_uid(uid)
        .map(|pod| format!("{}/{}", pod.workload.kind, pod.workload.name))
}

#[test]
fn the_live_inventory_follows_churn_ip_reuse_rollouts_and_broken_watches() {
    let dir = common::tempdir("live");
    let api = FakeApi::start();
    seed(&api);
    let live = Live::start(&api, &dir);

    // The initial lists.
    live.until("the seeded pod is named", |inventory| {
        workload_of(inventory, "p1").as_deref() == Some("Deployment/web")
    });
    let inventory = live.live.inventory();
    assert_eq!(
        inventory
            .node_by_ip("172.30.0.2".parse().unwrap())
            .unwrap()
            .name,
        "node-a"
    );
    let service = inventory
        .service_by_ip("10.96.0.10".parse().unwrap())
        .unwrap();
    assert_eq!(inventory.service_backends(service, 80, "TCP").len(), 1);
    assert_eq!(
        inventory.namespaces["shop"]
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("shop")
    );

    // Churn over the watch: a second pod, then the first one deleted and its
    // IP given to a new pod of another workload.
    api.put(pod(
        "web-5d4f-bbbbb",
        "p2",
        "10.244.1.6",
        "web-5d4f",
        "2026-11-25T10:01:00Z",
    ));
    live.until("the second pod arrives", |inventory| {
        inventory.pod_by_uid("p2").is_some()
    });
    let mut dying = pod(
        "web-5d4f-aaaaa",
        "p1",
        "10.244.1.5",
        "web-5d4f",
        "2026-11-25T10:00:00Z",
    );
    dying["metadata"]["deletionTimestamp"] = json!("2026-11-25T12:00:00Z");
    api.put(dying);
    api.delete("v1", "Pod", "shop", "web-5d4f-aaaaa");
    let mut reuser = pod(
        "db-0",
        "p3",
        "10.244.1.5",
        "db-7c9e",
        "2026-11-25T12:00:30Z",
    );
    reuser["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
        "kind": "StatefulSet", "name": "db", "uid": "uid-db", "controller": true}]);
    api.put(reuser);
    live.until("the IP names the new pod", |inventory| {
        name_at(inventory, "10.244.1.5", now()).as_deref() == Some("db-0")
    });
    let inventory = live.live.inventory();
    // Before the deletion the IP was the old pod's; its cgroup still names it.
    assert_eq!(
        name_at(&inventory, "10.244.1.5", unix("2026-11-25T11:00:00Z")).as_deref(),
        Some("web-5d4f-aaaaa")
    );
    assert_eq!(
        workload_of(&inventory, "p1").as_deref(),
        Some("Deployment/web")
    );
    assert_eq!(
        workload_of(&inventory, "p3").as_deref(),
        Some("StatefulSet/db")
    );

    // A rollout: a new ReplicaSet of the same Deployment.
    api.put(replica_set("web-8e2a"));
    api.put(pod(
        "web-8e2a-ccccc",
        "p4",
        "10.244.1.7",
        "web-8e2a",
        "2026-11-25T12:05:00Z",
    ));
    live.until("the rolled-out pod is the same workload", |inventory| {
        workload_of(inventory, "p4").as_deref() == Some("Deployment/web")
    });
    assert_eq!(
        live.live
            .inventory()
            .selector_of(&live.live.inventory().pod_by_uid("p4").unwrap().workload)
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<Vec<_>>(),
        vec![("app".to_string(), "web".to_string())]
    );

    // A watch breaks and the next two attempts are refused: what changed
    // meanwhile still arrives (the watch resumes from its last version).
    let errors_before = live.live.watch_errors();
    api.refuse_watches(2);
    api.break_watches();
    api.put(pod(
        "web-8e2a-ddddd",
        "p5",
        "10.244.1.8",
        "web-8e2a",
        "2026-11-25T12:06:00Z",
    ));
    live.until(
        "the pod added while the watch was down arrives",
        |inventory| inventory.pod_by_uid("p5").is_some(),
    );
    assert!(
        live.live.watch_errors() > errors_before,
        "the refused watches were counted"
    );

    // The history expires while the watch is down: the watch gets 410 Gone,
    // the watcher lists again and learns the deletion it never saw.
    api.expire_history();
    api.break_watches();
    api.delete("v1", "Pod", "shop", "web-5d4f-bbbbb");
    api.expire_history();
    live.until("the pod deleted during the outage has ended", |inventory| {
        name_at(inventory, "10.244.1.6", now() + 1).is_none()
    });
    // It still names its IP for the time it held it.
    assert_eq!(
        name_at(
            &live.live.inventory(),
            "10.244.1.6",
            unix("2026-11-25T12:00:00Z")
        )
        .as_deref(),
        Some("web-5d4f-bbbbb")
    );
    let relists = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.query.contains_key("watch"))
        .count();
    assert!(relists >= 2, "the pods were listed again after 410 Gone");
    std::fs::remove_dir_all(&dir).ok();
}
