//! Helpers shared by the root-only integration tests.
#![allow(dead_code)]

pub mod agent_process;
pub mod browser;
pub mod deploy;
pub mod fake_api;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// True when this test can load eBPF programs and make namespaces (root and
/// a cgroup v2 mount). Outside CI a missing privilege skips the test; with
/// `CI=true` it fails it, so CI can never pass on skipped tests.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("needs root".to_string())
    } else {
        netflow_agent::kernel::cgroup_mount::cgroup2_mount()
            .err()
            .map(|err| err.to_string())
    };
    match reason {
        None => true,
        Some(reason) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {reason}; under CI=true a skipped test is a failure");
            }
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// A testbed name unique to this process and call (at most 12 characters).
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{n}", std::process::id() % 100_000)
}

/// The DaemonSet's binary.
pub fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_netflow-agent"))
}

/// The lab's binary: `run` (the simulated cluster), `bench`, and `peer`
/// (the processes that stand in for pods).
pub fn lab() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_netflow-lab"))
}

/// Programs attached directly to `cgroup` for one attach type, asked of the
/// kernel with BPF_PROG_QUERY (so the test does not trust our own bookkeeping).
pub fn attached_programs(cgroup: &Path, attach_type: u32) -> u32 {
    netflow_agent::testbed::prog_query::attached_programs(cgroup, attach_type)
        .expect("BPF_PROG_QUERY")
}

pub const BPF_CGROUP_INET_INGRESS: u32 = 0;
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub const BPF_CGROUP_INET_SOCK_RELEASE: u32 = 34;
/// The hooks netflow attaches a program to.
pub const NETFLOW_ATTACH_TYPES: [u32; 3] = [
    BPF_CGROUP_INET_INGRESS,
    BPF_CGROUP_INET_EGRESS,
    BPF_CGROUP_INET_SOCK_RELEASE,
];

/// Programs attached directly to `cgroup` at each of netflow's hooks.
pub fn netflow_hooks_attached(cgroup: &Path) -> [u32; 3] {
    NETFLOW_ATTACH_TYPES.map(|attach_type| attached_programs(cgroup, attach_type))
}

/// netflow loaded and attached, and its reader.
pub type Recording = (
    netflow_agent::kernel::loader::Probe,
    netflow_agent::kernel::reader::FlowReader,
);

/// netflow attached to a testbed's parent cgroup, read in-process.
/// A kubelet-style (cgroupfs driver) container cgroup of pod `uid` under
/// the testbed, made: `kubepods/besteffort/pod<uid>/<container x 64>`.
pub fn pod_cgroup(
    testbed: &netflow_agent::testbed::Testbed,
    uid: &str,
    container: char,
) -> PathBuf {
    let path = testbed
        .cgroup_parent()
        .join("kubepods/besteffort")
        .join(format!("pod{uid}"))
        .join(container.to_string().repeat(64));
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// An inventory naming the testbed's two hosts as nodes: the testbed's
/// processes are not in pod cgroups, so they are their hosts.
pub fn host_inventory(dir: &std::path::Path) -> std::path::PathBuf {
    let inventory = dir.join("inventory.json");
    std::fs::write(
        &inventory,
        r#"{"apiVersion":"v1","kind":"List","items":[
          {"kind":"Node","metadata":{"name":"host-a"},"status":{"addresses":[{"type":"InternalIP","address":"10.231.0.1"}]}},
          {"kind":"Node","metadata":{"name":"host-b"},"status":{"addresses":[{"type":"InternalIP","address":"10.231.0.2"}]}}]}"#,
    )
    .unwrap();
    inventory
}

pub fn record_testbed(
    testbed: &netflow_agent::testbed::Testbed,
    flow_entries: u32,
    idle_timeout: std::time::Duration,
) -> (
    netflow_agent::kernel::loader::Probe,
    netflow_agent::kernel::reader::FlowReader,
) {
    record_testbed_folding(
        testbed,
        flow_entries,
        idle_timeout,
        netflow_agent::kernel::loader::DEFAULT_FOLD_INTERVAL,
    )
}

/// As [`record_testbed`], with busy sockets' counts folded into the table
/// every `fold_interval`.
pub fn record_testbed_folding(
    testbed: &netflow_agent::testbed::Testbed,
    flow_entries: u32,
    idle_timeout: std::time::Duration,
    fold_interval: std::time::Duration,
) -> (
    netflow_agent::kernel::loader::Probe,
    netflow_agent::kernel::reader::FlowReader,
) {
    let mut probe =
        netflow_agent::kernel::loader::Probe::load(flow_entries, fold_interval).expect("load");
    let maps = probe.take_maps().expect("maps");
    probe.attach(testbed.cgroup_parent()).expect("attach");
    (
        probe,
        netflow_agent::kernel::reader::FlowReader::new(maps, idle_timeout),
    )
}

/// A two-host testbed named `tag`, recorded in-process with `fold_interval`,
/// and a TCP echo server (`peer serve`, which answers HTTP too) on host B
/// at `server`.
pub fn testbed_with_server(
    tag: &str,
    fold_interval: std::time::Duration,
    server: &str,
) -> (netflow_agent::testbed::Testbed, Recording) {
    let mut testbed = netflow_agent::testbed::Testbed::two_hosts(&unique_name(tag)).unwrap();
    let recording = record_testbed_folding(
        &testbed,
        1024,
        std::time::Duration::from_secs(600),
        fold_interval,
    );
    testbed
        .start_server(&lab(), netflow_agent::testbed::Host::B, &["--tcp", server])
        .unwrap();
    (testbed, recording)
}

/// The client ports in a `peer connect` report (one JSON line per connection).
pub fn client_ports(stdout: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            let report: serde_json::Value = serde_json::from_str(line).expect("peer report");
            let local: std::net::SocketAddr = report["local"]
                .as_str()
                .expect("local address")
                .parse()
                .expect("address");
            local.port()
        })
        .collect()
}

/// Validates a file of Kubernetes objects against the Kubernetes OpenAPI
/// schema (kubernetes-validate, strict: unknown fields fail). Without the
/// validator the check is skipped outside CI and fails under `CI=true`.
pub fn validate_schema(path: &Path) {
    let available = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("kubernetes-validate is not installed (cargo xtask setup installs it)");
        }
        eprintln!(
            "skipping schema validation of {}: kubernetes-validate is not installed",
            path.display()
        );
        return;
    }
    let output = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(path)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        output.status.success(),
        "{} does not validate:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Validates a file of cluster-wide policies (ClusterNetworkPolicy,
/// AdminNetworkPolicy, BaselineAdminNetworkPolicy) against the CRDs'
/// OpenAPI schemas in `tests/schemas`, strictly. Needs python3 with jsonschema
/// and PyYAML (kubernetes-validate brings both); skipped without them
/// outside CI, a failure under `CI=true`.
pub fn validate_crd_schema(path: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/validate.py");
    let available = std::process::Command::new("python3")
        .args(["-c", "import jsonschema, yaml"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 jsonschema/PyYAML are missing (cargo xtask setup installs them)");
        }
        eprintln!("skipping CRD schema validation of {}", path.display());
        return;
    }
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(path)
        .output()
        .expect("run the CRD schema validator");
    assert!(
        output.status.success(),
        "{} does not validate against its CRD schema:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Validates every YAML file of a policy directory `policy generate` wrote:
/// the cluster tiers against their CRDs, the rest against Kubernetes'.
pub fn validate_policy_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("_cluster-") {
            validate_crd_schema(&path);
        } else {
            validate_schema(&path);
        }
    }
}

pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("netflow-{tag}-{}", unique_name("")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
