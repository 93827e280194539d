//! `netflow-agent record` as a user runs it: the binary, its flow log, its
//! clean detach on SIGINT, and its errors.

mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::agent_process::AgentProcess;
use netflow_agent::{
    daemon::flowlog::{LogLine, read_flow_log},
    testbed::{Host, Testbed},
};

#[test]
fn record_writes_the_flow_log_and_detaches_on_sigint() {
    if !common::privileged("record_writes_the_flow_log_and_detaches_on_sigint") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfrec")).unwrap();
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();
    let log_dir = tempdir();
    // The same connection is in either format's log (the reader tells them
    // apart by their first bytes).
    for (format, first_bytes) in [("json", &b"{\"type\":"[..]), ("binary", b"NETFLOW\x01")] {
        let log = log_dir.join(format!("flows.{format}"));
        let agent = start_record(
            &testbed,
            &[
                "--interval".as_ref(),
                "0.3".as_ref(),
                "--flow-log-format".as_ref(),
                format.as_ref(),
                "--output".as_ref(),
                log.as_os_str(),
            ],
        );
        assert_eq!(
            common::netflow_hooks_attached(testbed.cgroup_parent()),
            [1; 3]
        );
        let output = testbed
            .run_peer(
                &common::lab(),
                Host::A,
                &["connect", "--tcp", "10.231.0.2:8080", "--bytes", "700"],
            )
            .unwrap();
        let client_port = common::client_ports(&output.stdout)[0];
        thread::sleep(Duration::from_millis(800));

        let stderr_lines = agent.stop(libc::SIGINT);
        assert!(
            stderr_lines.iter().any(|line| line.contains("detached")),
            "{stderr_lines:#?}"
        );

        // The kernel agrees that nothing is left attached.
        assert_eq!(
            common::netflow_hooks_attached(testbed.cgroup_parent()),
            [0; 3]
        );

        assert!(
            std::fs::read(&log).unwrap().starts_with(first_bytes),
            "{format}"
        );
        let lines = read_flow_log(&log).unwrap();
        let flows: Vec<_> = lines
            .iter()
            .filter_map(|line| match line {
                LogLine::Flow(flow) => Some(flow),
                _ => None,
            })
            .collect();
        assert!(lines.iter().any(|line| matches!(line, LogLine::Stats(_))));
        let client_cgroup = testbed.cgroup_id(Host::A).unwrap();
        let client: Vec<_> = flows
            .iter()
            .filter(|flow| flow.cgroup_id == client_cgroup && flow.local.port == client_port)
            .collect();
        assert!(!client.is_empty(), "{format}: {flows:#?}");
        let sent: u64 = client.iter().map(|flow| flow.bytes_out).sum();
        let packets: u64 = client.iter().map(|flow| flow.packets_out).sum();
        assert!(
            sent >= 700 + packets * 40 && sent <= 700 + packets * 80,
            "{format}: {client:#?}"
        );
        assert_eq!(client[0].remote.port, 8080);
        assert_eq!(client[0].protocol.to_string(), "tcp");
        assert!(client[0].new && client[0].first_seen <= client[0].last_seen);
        assert_eq!(
            flows.len(),
            2,
            "{format}: one client and one server side: {flows:#?}"
        );
    }
    std::fs::remove_dir_all(&log_dir).unwrap();
}

/// Starts `record` on the testbed and waits until it says it attached.
fn start_record(testbed: &Testbed, args: &[&std::ffi::OsStr]) -> AgentProcess {
    start_agent(testbed, "record", args)
}

/// `netflow-agent SUBCOMMAND --cgroup <testbed> ARGS`, waited for until attached.
fn start_agent(testbed: &Testbed, subcommand: &str, args: &[&std::ffi::OsStr]) -> AgentProcess {
    AgentProcess::start(subcommand, testbed.cgroup_parent(), args)
}

#[test]
fn the_graph_survives_agent_restarts() {
    if !common::privileged("the_graph_survives_agent_restarts") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfrst")).unwrap();
    let dir = tempdir();
    let inventory = common::host_inventory(&dir);
    let state = dir.join("state");
    let args = [
        "--interval".as_ref(),
        "0.3".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--inventory".as_ref(),
        inventory.as_os_str(),
    ];
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();
    let connect = |count: &str| {
        testbed
            .run_peer(
                &common::lab(),
                Host::A,
                &["connect", "--tcp", "10.231.0.2:8080", "--count", count],
            )
            .unwrap();
    };
    let edge = || {
        let graph: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("graph.json")).unwrap()).unwrap();
        let edges = graph["edges"].as_array().unwrap().clone();
        assert_eq!(edges.len(), 1, "{graph:#}");
        assert_eq!(edges[0]["from"], "node:host-a");
        assert_eq!(edges[0]["to"], "node:host-b");
        assert_eq!(edges[0]["port"], 8080);
        edges[0].clone()
    };

    let agent = start_record(&testbed, &args);
    connect("2");
    thread::sleep(Duration::from_millis(800));
    agent.stop(libc::SIGTERM);
    let first = edge();
    assert_eq!(first["connections"], 2);

    // A new agent (an upgrade, a crash) goes on with the same graph.
    let agent = start_record(&testbed, &args);
    let said = agent.said.clone();
    assert!(
        said.iter()
            .any(|line| line.contains("communication graph loaded") && line.contains("edges=1")),
        "{said:#?}"
    );
    connect("3");
    thread::sleep(Duration::from_millis(800));
    agent.stop(libc::SIGTERM);
    let second = edge();
    assert_eq!(second["connections"], 5);
    assert_eq!(second["first_seen"], first["first_seen"]);

    // A graph that cannot be read is set aside (kept as it was), said, and
    // recording goes on with a fresh graph: the node stays recorded.
    let corrupt = "{\"version\": 1, \"nodes\": [";
    std::fs::write(state.join("graph.json"), corrupt).unwrap();
    let agent = start_record(&testbed, &args);
    let said = agent.said.clone();
    assert!(
        said.iter().any(|line| line.contains("graph file set aside")
            && line.contains("graph.json is not valid")),
        "{said:#?}"
    );
    connect("1");
    thread::sleep(Duration::from_millis(800));
    agent.stop(libc::SIGTERM);
    assert_eq!(edge()["connections"], 1, "a fresh graph, saved again");
    let kept: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("graph.json.unreadable-"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    assert_eq!(kept, vec![corrupt.to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name("netflow-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(args: &[&str]) -> (i32, String) {
    let output = Command::new(common::agent())
        .arg("record")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_cgroup_is_named_in_the_error() {
    if !common::privileged("a_missing_cgroup_is_named_in_the_error") {
        return;
    }
    let (code, stderr) = record(&[
        "--cgroup",
        "/sys/fs/cgroup/no-such-netflow-cgroup",
        "--duration",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no-such-netflow-cgroup") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_path_outside_the_cgroup_tree_is_refused() {
    if !common::privileged("a_path_outside_the_cgroup_tree_is_refused") {
        return;
    }
    let (code, stderr) = record(&["--cgroup", "/tmp", "--duration", "1"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("/tmp is not inside the cgroup v2 hierarchy"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_flow_log_is_named_and_nothing_is_attached() {
    if !common::privileged("an_unwritable_flow_log_is_named") {
        return;
    }
    let (code, stderr) = record(&[
        "--output",
        "/nonexistent-dir/flows.jsonl",
        "--duration",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot create flow log /nonexistent-dir/flows.jsonl"),
        "{stderr}"
    );
    assert!(!stderr.contains("attached"), "{stderr}");
}

#[test]
fn without_root_the_error_says_so() {
    if !common::privileged("without_root_the_error_says_so") {
        return;
    }
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    // The binary may sit in a directory nobody cannot enter: run a copy
    // from a directory of our own in the (world-accessible) temp dir.
    let dir = tempdir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("netflow-agent");
    std::fs::copy(common::agent(), &copy).unwrap();
    let output = Command::new(&copy)
        .args(["record", "--duration", "1"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("needs root"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_cgroup_v2_the_error_says_so() {
    if !common::privileged("without_cgroup_v2_the_error_says_so") {
        return;
    }
    // A private mount namespace with every cgroup2 mount removed: the agent
    // must find none and say so (the host's mounts are untouched).
    let script = format!(
        "for m in $(awk '$9 == \"cgroup2\" {{print $5}}' /proc/self/mountinfo | sort -r); do umount -l \"$m\" || exit 3; done; exec {} record --duration 1",
        common::agent().display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no cgroup v2 filesystem is mounted"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let (code, stderr) = record(&["--interval", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a positive duration"), "{stderr}");
    let (code, stderr) = record(&["--flow-entries", "0"]);
    assert_eq!(code, 2, "{stderr}");
    // The topology is served on loopback only.
    let (code, stderr) = record(&["--graph-listen", "0.0.0.0:9091"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn bpf_net_admin_and_perfmon_are_exactly_the_capabilities_needed() {
    if !common::privileged("bpf_net_admin_and_perfmon_are_exactly_the_capabilities_needed") {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let testbed = Testbed::two_hosts(&common::unique_name("nfcap")).unwrap();
    let dir = tempdir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("netflow-agent");
    std::fs::copy(common::agent(), &copy).unwrap();
    // As nobody, with only these capabilities (what a DaemonSet can grant).
    let run = |caps: &str| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["--inh-caps", caps, "--ambient-caps", caps])
            .arg(&copy)
            .args([
                "record",
                "--duration",
                "1",
                "--output",
                "/dev/null",
                "--cgroup",
            ])
            .arg(testbed.cgroup_parent())
            .output()
            .unwrap()
    };
    let all = run("+bpf,+net_admin,+perfmon");
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    for (caps, missing) in [
        ("+net_admin,+perfmon", "CAP_BPF"),
        ("+bpf,+perfmon", "CAP_NET_ADMIN"),
        ("+bpf,+net_admin", "CAP_PERFMON"),
    ] {
        let output = run(caps);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{caps}: {stderr}");
        assert!(
            stderr.contains(&format!("without {missing}")),
            "{caps}: {stderr}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// GET on the daemon's port: (status, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    netflow_agent::testbed::http_client::http_get(addr, path).unwrap()
}

#[test]
fn the_daemon_serves_health_metrics_and_graph_while_recording() {
    if !common::privileged("the_daemon_serves_health_metrics_and_graph_while_recording") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfrun")).unwrap();
    let dir = tempdir();
    let inventory = common::host_inventory(&dir);
    // A free loopback port.
    let addr = netflow_agent::testbed::http_client::free_loopback_addr().unwrap();
    let graph_addr = netflow_agent::testbed::http_client::free_loopback_addr().unwrap();
    let (listen, state) = (addr.to_string(), dir.join("state"));
    let graph_listen = graph_addr.to_string();
    let args = [
        "--interval".as_ref(),
        "0.3".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--inventory".as_ref(),
        inventory.as_os_str(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--graph-listen".as_ref(),
        graph_listen.as_ref(),
    ];
    let agent = start_agent(&testbed, "run", &args);
    assert_eq!(http_get(addr, "/healthz").0, 200);
    assert_eq!(http_get(addr, "/readyz").0, 200);
    assert_eq!(http_get(addr, "/nothing").0, 404);

    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();
    testbed
        .run_peer(
            &common::lab(),
            Host::A,
            &["connect", "--tcp", "10.231.0.2:8080", "--count", "2"],
        )
        .unwrap();
    thread::sleep(Duration::from_millis(900));

    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("netflow_attached 1\n"), "{metrics}");
    // The topology is not on the pod port, and not in the metrics.
    assert_eq!(http_get(addr, "/graph").0, 404);
    assert!(
        !metrics.contains("host-a") && !metrics.contains("host-b"),
        "{metrics}"
    );
    assert!(metrics.contains("netflow_graph_edges 1\n"), "{metrics}");
    assert!(
        metrics.contains("netflow_packets_not_recorded_total{reason=\"map_full\"} 0\n"),
        "{metrics}"
    );
    let records: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("netflow_flow_records_total "))
        .and_then(|value| value.parse().ok())
        .unwrap();
    // Two connections seen from both ends; one that straddles a poll is
    // reported in both intervals.
    assert!((4..=8).contains(&records), "{metrics}");
    let (status, graph) = http_get(graph_addr, "/graph");
    assert_eq!(status, 200);
    let graph: serde_json::Value = serde_json::from_str(&graph).unwrap();
    assert_eq!(graph["edges"][0]["from"], "node:host-a");
    assert_eq!(graph["edges"][0]["connections"], 2);

    agent.stop(libc::SIGTERM);
    assert_eq!(
        common::netflow_hooks_attached(testbed.cgroup_parent()),
        [0; 3]
    );

    // Restarted, it serves the graph it had at once.
    let agent = start_agent(&testbed, "run", &args);
    let (status, graph) = http_get(graph_addr, "/graph");
    assert_eq!(status, 200);
    assert!(graph.contains("node:host-b"), "{graph}");
    agent.stop(libc::SIGTERM);

    // run without its state directory is refused before anything starts.
    let output = Command::new(common::agent())
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("run needs --state-dir"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Polls `path` until it answers 200 (or fails after 20 s).
fn http_until_ok(addr: std::net::SocketAddr, path: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(addr, path);
        if status == 200 {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never answered 200: {status} {body}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemon_names_workloads_from_the_watched_cluster() {
    if !common::privileged("the_daemon_names_workloads_from_the_watched_cluster") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfkub")).unwrap();
    let dir = tempdir();
    let api = common::fake_api::FakeApi::start();
    let node = |name: &str, ip: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
    };
    api.put(node("host-a", "10.231.0.1"));
    api.put(node("host-b", "10.231.0.2"));
    let kubeconfig = api.kubeconfig(&dir);
    let addr = netflow_agent::testbed::http_client::free_loopback_addr().unwrap();
    let graph_addr = netflow_agent::testbed::http_client::free_loopback_addr().unwrap();
    let (listen, state) = (addr.to_string(), dir.join("state"));
    let graph_listen = graph_addr.to_string();
    let args = [
        "--interval".as_ref(),
        "0.3".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--graph-listen".as_ref(),
        graph_listen.as_ref(),
    ];
    let agent = start_agent(&testbed, "run", &args);
    // Ready once every watch has listed.
    http_until_ok(addr, "/readyz");
    let metrics = http_get(addr, "/metrics").1;
    assert!(
        metrics.contains("netflow_inventory_synced 1\n"),
        "{metrics}"
    );

    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();
    let connect = || {
        testbed
            .run_peer(
                &common::lab(),
                Host::A,
                &["connect", "--tcp", "10.231.0.2:8080"],
            )
            .unwrap();
    };
    connect();
    thread::sleep(Duration::from_millis(900));
    let graph = http_get(graph_addr, "/graph").1;
    assert!(graph.contains("node:host-b"), "{graph}");

    // The cluster changes under the daemon: host-b is replaced by a node of
    // another name at the same address, and new flows follow the watch.
    api.delete("v1", "Node", "", "host-b");
    api.put(node("host-c", "10.231.0.2"));
    thread::sleep(Duration::from_millis(500));
    connect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !http_get(graph_addr, "/graph").1.contains("node:host-c") {
        assert!(
            std::time::Instant::now() < deadline,
            "the new node was never named"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // graph pull finds this agent through the API and reads its /graph
    // through the (scripted) API's port-forward to the real daemon's
    // loopback graph port.
    api.put(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "netflow-agent-host1", "namespace": "netflow", "uid": "uid-agent",
            "labels": {"app.kubernetes.io/name": "netflow-agent"}},
        "spec": {"nodeName": "host-a", "containers": [{"name": "agent"}]}}));
    api.proxy_to("netflow-agent-host1", graph_addr);
    let pulled = dir.join("cluster.json");
    let output = Command::new(common::agent())
        .args(["graph", "pull", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--port", &graph_addr.port().to_string()])
        .arg("-o")
        .arg(&pulled)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cluster = std::fs::read_to_string(&pulled).unwrap();
    assert!(
        cluster.contains("node:host-c") && cluster.contains("node:host-a"),
        "{cluster}"
    );

    agent.stop(libc::SIGTERM);
    let watched: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.query.contains_key("watch"))
        .map(|r| r.path.clone())
        .collect();
    assert!(watched.contains(&"/api/v1/pods".to_string()), "{watched:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn record_attaches_through_the_hosts_cgroup_tree_mounted_read_only_elsewhere() {
    // In the DaemonSet the container sees its own cgroup view at
    // /sys/fs/cgroup and the host's tree read-only at /host/sys/fs/cgroup.
    // Here: a private mount namespace with the cgroup v2 tree bound
    // read-only at a second path.
    if !common::privileged(
        "record_attaches_through_the_hosts_cgroup_tree_mounted_read_only_elsewhere",
    ) {
        return;
    }
    let testbed = Testbed::two_hosts(&common::unique_name("nfhost")).unwrap();
    let dir = tempdir();
    let mount = netflow_agent::kernel::cgroup_mount::cgroup2_mount().unwrap();
    let host_view = dir.join("host-cgroup");
    std::fs::create_dir_all(&host_view).unwrap();
    let relative = testbed
        .cgroup_parent()
        .strip_prefix(&mount)
        .unwrap()
        .to_path_buf();
    record_in_private_mount(
        testbed,
        &format!(
            "mount --bind {mount} {view} && mount -o remount,bind,ro {view}",
            mount = mount.display(),
            view = host_view.display(),
        ),
        &host_view.join(relative),
    );
    // The bind lived only in the agent's mount namespace.
    assert!(std::fs::read_dir(&host_view).unwrap().next().is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `record --cgroup CGROUP` for 2 s in a private mount namespace after
/// `mounts` (shell commands), while host A calls host B once on TCP 8080;
/// the agent must record that connection.
fn record_in_private_mount(mut testbed: Testbed, mounts: &str, cgroup: &std::path::Path) {
    let script = format!(
        "{mounts} && exec {agent} record --cgroup {cgroup} --duration 2 --interval 0.3 -o -",
        agent = common::agent().display(),
        cgroup = cgroup.display(),
    );
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();
    testbed
        .run_peer(
            &common::lab(),
            Host::A,
            &["connect", "--tcp", "10.231.0.2:8080"],
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("\"flow\"") && line.contains("8080")),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn the_daemonsets_host_path_works_on_hybrid_and_unified_hosts() {
    // The DaemonSet mounts the host's /sys/fs/cgroup whole. On a unified
    // host that is the cgroup v2 tree; on a hybrid one (v1 controllers on a
    // tmpfs, cgroup v2 at `unified` below it) the agent must find the v2
    // tree below the path it was given.
    if !common::privileged("the_daemonsets_host_path_works_on_hybrid_and_unified_hosts") {
        return;
    }
    let testbed = Testbed::two_hosts(&common::unique_name("nfhyb")).unwrap();
    let dir = tempdir();
    let host_view = dir.join("host-sys-fs-cgroup");
    std::fs::create_dir_all(&host_view).unwrap();
    record_in_private_mount(
        testbed,
        &format!(
            "mount --rbind /sys/fs/cgroup {view} && mount -o remount,bind,ro {view}",
            view = host_view.display(),
        ),
        &host_view,
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_seccomp_profile_that_refuses_bpf_is_named_and_fails_fast() {
    // What podman's and CRI-O's default profile do to a container with
    // CAP_BPF but not CAP_SYS_ADMIN: bpf(2) answers EPERM. A classic BPF
    // seccomp filter doing exactly that is installed before the agent starts.
    if !common::privileged("a_seccomp_profile_that_refuses_bpf_is_named_and_fails_fast") {
        return;
    }
    use std::os::unix::process::CommandExt as _;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == SYS_bpf: next, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_bpf as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let started = std::time::Instant::now();
    let mut command = Command::new(common::agent());
    command.args(["record", "--duration", "5", "-o", "-"]);
    // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("seccomp refused bpf(2)")
            && stderr.contains("deploy/seccomp/netflow-agent.json"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "fails fast");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A state directory whose graph has `edges` edges (a week of a busy node).
fn seed_big_graph(state: &std::path::Path, edges: usize) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let node = |index: usize| {
        serde_json::json!({"id": format!("workload:ns{}/Deployment/w{index}", index % 7),
            "kind": "workload", "namespace": format!("ns{}", index % 7), "name": format!("w{index}"),
            "workload_kind": "Deployment", "labels": {"app": format!("w{index}")}})
    };
    let nodes: Vec<serde_json::Value> = (0..200).map(node).collect();
    let edges: Vec<serde_json::Value> = (0..edges)
        .map(|index| {
            serde_json::json!({"from": nodes[index % 200]["id"], "to": nodes[(index / 200 + 1 + index) % 200]["id"],
                "protocol": "tcp", "port": 1000 + (index / 200) as u16, "first_seen": now, "last_seen": now,
                "connections": 1, "packets": 2, "bytes": 100})
        })
        .collect();
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(
        state.join("graph.json"),
        serde_json::to_vec(&serde_json::json!({"version": 1, "nodes": nodes, "edges": edges}))
            .unwrap(),
    )
    .unwrap();
}

#[test]
fn the_port_holds_under_abuse() {
    if !common::privileged("the_port_holds_under_abuse") {
        return;
    }
    use std::io::{Read as _, Write as _};
    let testbed = Testbed::two_hosts(&common::unique_name("nfhtp")).unwrap();
    let dir = tempdir();
    let inventory = common::host_inventory(&dir);
    let state = dir.join("state");
    seed_big_graph(&state, 20_000);
    let addr = netflow_agent::testbed::http_client::free_loopback_addr().unwrap();
    let listen = addr.to_string();
    let graph_addr = netflow_agent::testbed::http_client::free_loopback_addr().unwrap();
    let graph_listen = graph_addr.to_string();
    let args = [
        "--interval".as_ref(),
        "1".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--inventory".as_ref(),
        inventory.as_os_str(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--graph-listen".as_ref(),
        graph_listen.as_ref(),
    ];
    let agent = start_agent(&testbed, "run", &args);
    let pid = agent.id();
    let (status, graph) = http_get(graph_addr, "/graph");
    assert_eq!(status, 200);
    assert!(
        graph.len() > 2_000_000,
        "a big graph: {} bytes",
        graph.len()
    );
    let healthy_within_a_second = |what: &str| {
        let started = std::time::Instant::now();
        let (status, _) = http_get(addr, "/healthz");
        assert_eq!(status, 200, "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: /healthz took {:?}",
            started.elapsed()
        );
    };
    let baseline = rss_kib(pid);

    // 1. An endless header line: refused once past the limit, not buffered.
    let mut endless = std::net::TcpStream::connect(addr).unwrap();
    endless
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut sent = 0usize;
    while std::time::Instant::now() < deadline {
        match endless.write(&chunk) {
            Ok(written) => sent += written,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 * 1024 * 1024,
        "the server kept reading: {sent} bytes"
    );
    drop(endless);
    healthy_within_a_second("after an endless header line");

    // 2. Clients that ask for the big graph and never read it.
    let stuck: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(graph_addr).unwrap();
            stream
                .write_all(b"GET /graph HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    healthy_within_a_second("while 50 clients do not read the graph");

    // 3. 500 connections open at once, saying nothing.
    let idle: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    healthy_within_a_second("with 500 idle connections");
    let grown_mib = rss_kib(pid).saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 64,
        "the daemon grew by {grown_mib} MiB under abuse (baseline {} MiB)",
        baseline / 1024
    );
    drop(stuck);
    drop(idle);

    // An idle connection is closed once its head is late.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = slow.read(&mut buffer).unwrap_or(0);
    assert_eq!(read, 0, "closed without an answer");
    agent.stop(libc::SIGTERM);
    std::fs::remove_dir_all(dir).unwrap();
}
