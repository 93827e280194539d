//! Pods that live less than a poll interval (issue 14): a hundred pods, each
//! a kubelet-style cgroup that exists for about 200 ms, make one connection
//! each and are gone long before the agent polls. Every one of them must be
//! named in the graph: the agent cannot find their cgroups by walking the
//! tree any more, so it must have learned their paths when they were made.

mod common;

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::agent_process::AgentProcess;
use netflow_agent::testbed::{Host, Testbed, remove_cgroup_tree};

const PODS: usize = 100;
const LIFETIME: Duration = Duration::from_millis(200);

fn uid(index: usize) -> String {
    format!("5eed0000-0000-4000-8000-{index:012}")
}

/// The pods (each of its own Job, as CronJobs' pods are), their Jobs and
/// the two hosts as nodes. The pods' own addresses are never on the wire
/// (they run in host A's namespace): only their cgroups can name them, so
/// the server's side of each connection cannot name them instead.
fn inventory() -> String {
    let mut items = vec![
        r#"{"kind":"Node","metadata":{"name":"host-a"},"status":{"addresses":[{"type":"InternalIP","address":"10.231.0.1"}]}}"#.to_string(),
        r#"{"kind":"Node","metadata":{"name":"host-b"},"status":{"addresses":[{"type":"InternalIP","address":"10.231.0.2"}]}}"#.to_string(),
    ];
    for index in 0..PODS {
        items.push(format!(
            r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"burst-{index}","namespace":"jobs","uid":"j{index}"}},"spec":{{"selector":{{"matchLabels":{{"job-name":"burst-{index}"}}}}}}}}"#
        ));
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"burst-{index}-x","namespace":"jobs","uid":"{uid}","labels":{{"job-name":"burst-{index}"}},"ownerReferences":[{{"apiVersion":"batch/v1","kind":"Job","name":"burst-{index}","uid":"j{index}","controller":true}}]}},"spec":{{"nodeName":"host-a"}},"status":{{"phase":"Running","podIP":"10.99.0.{index}","podIPs":[{{"ip":"10.99.0.{index}"}}]}}}}"#,
            uid = uid(index)
        ));
    }
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    )
}

#[test]
fn pods_that_live_200_ms_are_all_named() {
    if !common::privileged("pods_that_live_200_ms_are_all_named") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfshrt")).unwrap();
    let dir = std::env::temp_dir().join(common::unique_name("netflow-short-"));
    std::fs::create_dir_all(&dir).unwrap();
    let inventory_path = dir.join("inventory.json");
    std::fs::write(&inventory_path, inventory()).unwrap();
    let state = dir.join("state");
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();

    // A poll every 5 s: every pod below is born and gone between two polls.
    let agent = AgentProcess::start(
        "record",
        testbed.cgroup_parent(),
        [
            "--interval".as_ref(),
            "5".as_ref(),
            "--inventory".as_ref(),
            inventory_path.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--output".as_ref(),
            dir.join("flows.jsonl").as_os_str(),
        ],
    );

    let kubepods = testbed.cgroup_parent().join("kubepods/besteffort");
    for index in 0..PODS {
        let born = Instant::now();
        let pod = kubepods.join(format!("pod{}", uid(index)));
        let container = pod.join(format!("{:064x}", index + 1));
        std::fs::create_dir_all(&container).unwrap();
        let output = Command::new(common::lab())
            .arg("peer")
            .arg("--cgroup")
            .arg(&container)
            .arg("--netns")
            .arg(testbed.netns_path(Host::A))
            .args(["connect", "--tcp", "10.231.0.2:8080", "--count", "1"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        thread::sleep(LIFETIME.saturating_sub(born.elapsed()));
        remove_cgroup_tree(&pod);
        assert!(!pod.exists(), "{} is still there", pod.display());
    }

    // Two polls later the last pod has been gone for seconds.
    thread::sleep(Duration::from_secs(6));
    let said = agent.stop(libc::SIGTERM);

    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("graph.json")).unwrap()).unwrap();
    let mut named: Vec<String> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|edge| edge["to"] == "node:host-b" && edge["port"] == 8080)
        .map(|edge| edge["from"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    named.dedup();
    let mut expected: Vec<String> = (0..PODS)
        .map(|index| format!("workload:jobs/Job/burst-{index}"))
        .collect();
    expected.sort();
    let missing: Vec<&String> = expected.iter().filter(|id| !named.contains(id)).collect();
    if !missing.is_empty() {
        let flows = std::fs::read_to_string(dir.join("flows.jsonl")).unwrap_or_default();
        eprintln!(
            "flow log:\n{}",
            flows
                .lines()
                .filter(|line| !line.contains("/b\""))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        missing.is_empty(),
        "{} of {PODS} short-lived pods not named (edges from: {named:?}); the agent said {said:#?}",
        missing.len()
    );
    drop(testbed);
    std::fs::remove_dir_all(dir).unwrap();
}

/// An init container whose cgroup was made before the agent started (an
/// agent restarted, or deployed, while the pod was starting) and removed
/// before the agent's first poll: the kernel never saw it made, and a walk
/// at the poll cannot find it. The agent walks the tree once when it starts.
#[test]
fn a_container_made_before_the_agent_started_is_named() {
    if !common::privileged("a_container_made_before_the_agent_started_is_named") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfinit")).unwrap();
    let dir = std::env::temp_dir().join(common::unique_name("netflow-init-"));
    std::fs::create_dir_all(&dir).unwrap();
    let inventory_path = dir.join("inventory.json");
    std::fs::write(&inventory_path, inventory()).unwrap();
    let state = dir.join("state");
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();
    let pod = testbed
        .cgroup_parent()
        .join(format!("kubepods/besteffort/pod{}", uid(7)));
    let init_container = pod.join(format!("{:064x}", 7));
    std::fs::create_dir_all(&init_container).unwrap();

    let agent = AgentProcess::start(
        "record",
        testbed.cgroup_parent(),
        [
            "--interval".as_ref(),
            "5".as_ref(),
            "--inventory".as_ref(),
            inventory_path.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--output".as_ref(),
            dir.join("flows.jsonl").as_os_str(),
        ],
    );
    let output = Command::new(common::lab())
        .arg("peer")
        .arg("--cgroup")
        .arg(&init_container)
        .arg("--netns")
        .arg(testbed.netns_path(Host::A))
        .args(["connect", "--tcp", "10.231.0.2:8080", "--count", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    remove_cgroup_tree(&init_container);
    thread::sleep(Duration::from_secs(6));
    let said = agent.stop(libc::SIGTERM);

    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("graph.json")).unwrap()).unwrap();
    let clients: Vec<&str> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|edge| edge["to"] == "node:host-b" && edge["port"] == 8080)
        .map(|edge| edge["from"].as_str().unwrap())
        .collect();
    // (The server's side names the client by its address: host A's.)
    assert!(
        clients.contains(&"workload:jobs/Job/burst-7"),
        "clients {clients:?}; the agent said {said:#?}"
    );
    remove_cgroup_tree(&pod);
    drop(testbed);
    std::fs::remove_dir_all(dir).unwrap();
}
