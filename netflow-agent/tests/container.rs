//! The shipped artifact, run as the runtime would run the DaemonSet's
//! container: the OCI archive `cargo xtask image` builds (the test suite
//! gets one in `NETFLOW_AGENT_IMAGE`), imported into a containerd this test
//! starts for itself, run by runc under containerd's default seccomp profile
//! with exactly the container spec of `deploy/daemonset.yaml` turned into
//! `ctr run` flags: capabilities, read-only root, the hostPath mounts, the
//! args. It must attach, answer `/healthz` and `/readyz`, record two pods in
//! kubelet-style cgroups talking between network namespaces, name them from
//! a static inventory, keep its graph in the state hostPath, and detach on
//! SIGTERM. If the spec drifts from what runs, this fails.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Container};
use netflow_agent::testbed::{
    Host, Testbed,
    containerd::{AGENT_PATH, Containerd, capability_flags},
};

/// The image archive the suite built, or a skip (a failure under CI).
fn image_archive(test: &str) -> Option<PathBuf> {
    let archive = std::env::var_os("NETFLOW_AGENT_IMAGE").map(PathBuf::from);
    let tools = ["containerd", "ctr", "runc"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    match archive {
        Some(archive) if archive.exists() && tools => Some(archive),
        _ => {
            let why = "needs NETFLOW_AGENT_IMAGE (cargo xtask test builds it) and containerd, ctr, runc (cargo xtask setup installs them)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}; under CI=true a skipped test is a failure");
            }
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// The DaemonSet's one container and its pod's volumes (name -> hostPath).
fn daemonset_container() -> (Container, Vec<(String, String)>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let daemonset: DaemonSet =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    let volumes = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|volume| {
            let host = volume.host_path.expect("hostPath volumes only").path;
            (volume.name, host)
        })
        .collect();
    (pod.containers.into_iter().next().unwrap(), volumes)
}

/// What the DaemonSet's container asks of the runtime, runtime-neutral.
struct RunSpec {
    /// Capabilities kept (`drop: [ALL]` and these added).
    keep: Vec<String>,
    /// Dropped when `drop` names more than ALL.
    drop_all: bool,
    read_only: bool,
    /// (host path, container path, read-only).
    mounts: Vec<(String, String, bool)>,
}

/// The container spec, with each hostPath replaced as `host_path` says
/// (the test's own directories stand in for the node's). What no flag
/// expresses is checked here instead.
fn run_spec(
    container: &Container,
    volumes: &[(String, String)],
    host_path: impl Fn(&str) -> String,
) -> RunSpec {
    let security = container.security_context.clone().unwrap();
    let capabilities = security.capabilities.clone().unwrap();
    assert_ne!(
        security.privileged,
        Some(true),
        "the agent is never privileged"
    );
    assert_ne!(
        security.allow_privilege_escalation,
        Some(true),
        "both runtimes set no_new_privs unless told otherwise"
    );
    match security.seccomp_profile.map(|profile| profile.type_) {
        Some(kind) if kind == "RuntimeDefault" => {}
        other => panic!("seccompProfile {other:?} is not what this test runs"),
    }
    // The image's user is 0, as runAsUser says (the runtimes run the image's user).
    assert_eq!(security.run_as_user, Some(0));
    let mounts = container
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mount| {
            let (_, host) = volumes
                .iter()
                .find(|(name, _)| *name == mount.name)
                .expect("a mount of a declared volume");
            (
                host_path(host),
                mount.mount_path,
                mount.read_only == Some(true),
            )
        })
        .collect();
    let drop = capabilities.drop.unwrap_or_default();
    assert_eq!(
        drop,
        vec!["ALL".to_string()],
        "the agent drops every capability first"
    );
    RunSpec {
        keep: capabilities.add.unwrap_or_default(),
        drop_all: true,
        read_only: security.read_only_root_filesystem == Some(true),
        mounts,
    }
}

/// `ctr run` flags (containerd's default seccomp profile: RuntimeDefault).
fn ctr_flags(spec: &RunSpec) -> Vec<String> {
    let mut flags = vec!["--seccomp".to_string()];
    let keep: Vec<&str> = spec.keep.iter().map(String::as_str).collect();
    assert!(spec.drop_all);
    flags.extend(capability_flags(&keep));
    if spec.read_only {
        flags.push("--read-only".into());
    }
    for (host, inside, read_only) in &spec.mounts {
        let mode = if *read_only { "ro" } else { "rw" };
        flags.push(format!(
            "--mount=type=bind,src={host},dst={inside},options=rbind:{mode}"
        ));
    }
    flags
}

/// `podman run` flags (its default seccomp profile unless `seccomp` names
/// a Localhost one).
fn podman_flags(spec: &RunSpec, seccomp: Option<&Path>) -> Vec<String> {
    let mut flags = Vec::new();
    if spec.drop_all {
        flags.push("--cap-drop=ALL".into());
    }
    flags.push(format!("--cap-add={}", spec.keep.join(",")));
    if spec.read_only {
        flags.push("--read-only".into());
    }
    for (host, inside, read_only) in &spec.mounts {
        let mode = if *read_only { "ro" } else { "rw" };
        flags.push(format!("--volume={host}:{inside}:{mode}"));
    }
    if let Some(profile) = seccomp {
        flags.push(format!("--security-opt=seccomp={}", profile.display()));
    }
    flags
}

/// The hostPath volumes as this test provides them: the node's own cgroup
/// tree and tracefs, a directory of the test's for the state, and a bpffs
/// of the test's own beside it (what the agent pins goes when the test
/// unmounts it).
fn stand_in(host: &str, state: &Path) -> String {
    match host {
        "/sys/fs/cgroup" => host.to_string(),
        "/var/lib/netflow" => state.display().to_string(),
        "/sys/fs/bpf" => {
            let bpffs = private_bpffs(state);
            bpffs.display().to_string()
        }
        "/sys/kernel/tracing" => {
            if !Path::new("/sys/kernel/tracing/events").is_dir() {
                mount("tracefs", Path::new("/sys/kernel/tracing"));
            }
            host.to_string()
        }
        other => panic!("a hostPath this test does not stand in for: {other}"),
    }
}

/// A bpffs instance of the test's own, beside `state`.
fn private_bpffs(state: &Path) -> PathBuf {
    let bpffs = state.with_file_name("bpffs");
    if !bpffs.exists() {
        std::fs::create_dir_all(&bpffs).unwrap();
        mount("bpf", &bpffs);
    }
    bpffs
}

fn mount(kind: &str, at: &Path) {
    let status = Command::new("mount")
        .args(["-t", kind, kind])
        .arg(at)
        .status()
        .unwrap();
    assert!(status.success(), "mount -t {kind} {}", at.display());
}

/// Unmounts the test's bpffs (if it made one): its pins go with it.
fn remove_private_bpffs(state: &Path) {
    let bpffs = state.with_file_name("bpffs");
    if bpffs.exists() {
        let _ = Command::new("umount").arg(&bpffs).status();
    }
}

/// An HTTP GET from inside the network namespace of process `pid` (the
/// container's: its ports are not on the host).
fn get_in_netns(pid: u32, addr: SocketAddr, path: &'static str) -> Option<(u16, String)> {
    let netns = format!("/proc/{pid}/ns/net");
    thread::spawn(move || {
        let file = std::fs::File::open(netns).ok()?;
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on this thread only, with a descriptor it holds.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        netflow_agent::testbed::http_client::http_get(addr, path).ok()
    })
    .join()
    .unwrap()
}

/// Two pods of namespace `shop` in kubelet (cgroupfs driver) cgroups under
/// the testbed: `client` on host A, `server` on host B.
const CLIENT_UID: &str = "0b0d5c1e-0000-4000-8000-00000000000a";
const SERVER_UID: &str = "0b0d5c1e-0000-4000-8000-00000000000b";

fn inventory() -> String {
    let pod = |name: &str, uid: &str, ip: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"app": name}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
            "status": {"podIP": ip, "startTime": "2020-01-01T00:00:00Z"}})
    };
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        pod("client", CLIENT_UID, "10.231.0.1"),
        pod("server", SERVER_UID, "10.231.0.2"),
    ]})
    .to_string()
}

#[test]
fn the_daemonset_container_runs_from_the_image_under_containerd() {
    if !common::privileged("the_daemonset_container_runs_from_the_image_under_containerd") {
        return;
    }
    let Some(archive) =
        image_archive("the_daemonset_container_runs_from_the_image_under_containerd")
    else {
        return;
    };
    let dir = common::tempdir("ctr");
    let cgroup_root = netflow_agent::kernel::cgroup_mount::cgroup2_mount().unwrap();
    let attached_before = common::netflow_hooks_attached(&cgroup_root);
    let containerd = Containerd::start(&dir.join("containerd")).unwrap();
    let reference = containerd.import(&archive).unwrap();

    let testbed = Testbed::two_hosts(&common::unique_name("nfctr")).unwrap();
    let state = dir.join("state-hostpath");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("inventory.json"), inventory()).unwrap();
    let (container, volumes) = daemonset_container();
    let flags = ctr_flags(&run_spec(&container, &volumes, |host| {
        stand_in(host, &state)
    }));
    // The image's entrypoint with the container's args, as the kubelet runs
    // it; a static inventory instead of the API, and a short interval.
    let mut args: Vec<String> = vec![AGENT_PATH.into()];
    args.extend(container.args.clone().unwrap_or_default());
    args.push("--inventory=/var/lib/netflow/inventory.json".into());
    args.push("--interval=0.5s".into());
    let id = common::unique_name("agent");
    let mut run = containerd.ctr();
    run.args(["run", "--rm"])
        .args(&flags)
        .arg(&reference)
        .arg(&id)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let agent = run.spawn().expect("ctr run");

    // The task's pid, to reach its ports in its own network namespace.
    let pid = containerd.task_pid(&id, Duration::from_secs(20)).unwrap();
    let health: SocketAddr = "127.0.0.1:9090".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_in_netns(pid, health, "/readyz").map(|(code, _)| code) != Some(200) {
        assert!(Instant::now() < deadline, "never ready");
        thread::sleep(Duration::from_millis(100));
    }
    let ready_after = started.elapsed();
    eprintln!("the container was ready {ready_after:?} after ctr run");
    assert_eq!(
        get_in_netns(pid, health, "/healthz").map(|(code, _)| code),
        Some(200)
    );

    // Two pods talk; the agent names them from the inventory.
    let server_cgroup = common::pod_cgroup(&testbed, SERVER_UID, 'b');
    let client_cgroup = common::pod_cgroup(&testbed, CLIENT_UID, 'a');
    let lab = common::lab();
    let mut server = Command::new(&lab)
        .args(["peer", "--cgroup"])
        .arg(&server_cgroup)
        .arg("--netns")
        .arg(testbed.netns_path(Host::B))
        .args(["serve", "--tcp", "10.231.0.2:8080"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let client = Command::new(&lab)
        .args(["peer", "--cgroup"])
        .arg(&client_cgroup)
        .arg("--netns")
        .arg(testbed.netns_path(Host::A))
        .args(["connect", "--tcp", "10.231.0.2:8080", "--count", "3"])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );

    let graph_addr: SocketAddr = "127.0.0.1:9091".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let edge_seen = |body: &str| {
        body.contains("workload:shop/Pod/client") && body.contains("workload:shop/Pod/server")
    };
    loop {
        if let Some((200, body)) = get_in_netns(pid, graph_addr, "/graph")
            && edge_seen(&body)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pods' edge never showed in /graph"
        );
        thread::sleep(Duration::from_millis(300));
    }
    let _ = server.kill();
    let _ = server.wait();

    // SIGTERM, as the kubelet stops it: the agent saves, detaches, exits 0.
    let killed = containerd
        .ctr()
        .args(["tasks", "kill", "--signal", "SIGTERM", &id])
        .output()
        .unwrap();
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let output = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent: {stderr}");
    let saved =
        std::fs::read_to_string(state.join("graph.json")).expect("graph in the state hostPath");
    assert!(edge_seen(&saved), "{saved}");
    let attached_after = common::netflow_hooks_attached(&cgroup_root);
    assert_eq!(
        attached_after,
        attached_before,
        "programs left attached at {}",
        cgroup_root.display()
    );
    drop(testbed);
    drop(containerd);
    remove_private_bpffs(&state);
    std::fs::remove_dir_all(&dir).ok();
}

/// podman with storage of its own under `dir`, cgroupfs (no systemd here)
/// and runc (crun refuses hybrid cgroups).
fn podman(dir: &Path) -> Command {
    let mut command = Command::new("podman");
    command
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--cgroup-manager",
            "cgroupfs",
            "--runtime",
            "runc",
            "--events-backend",
            "file",
        ]);
    command
}

#[test]
fn under_podmans_default_seccomp_the_agent_says_why_and_the_localhost_profile_runs() {
    let test = "under_podmans_default_seccomp_the_agent_says_why_and_the_localhost_profile_runs";
    if !common::privileged(test) {
        return;
    }
    let Some(archive) = image_archive(test) else {
        return;
    };
    if Command::new("podman").arg("--version").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: podman is not installed (cargo xtask setup installs it)");
        }
        eprintln!("skipping {test}: podman is not installed");
        return;
    }
    let dir = common::tempdir("podman");
    let loaded = podman(&dir)
        .arg("load")
        .arg("-i")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let reference = String::from_utf8_lossy(&loaded.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Loaded image: ").map(str::to_string))
        .expect("podman names the loaded image");
    let state = dir.join("state-hostpath");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("inventory.json"), inventory()).unwrap();
    let (container, volumes) = daemonset_container();
    let spec = run_spec(&container, &volumes, |host| stand_in(host, &state));
    let mut args = container.args.clone().unwrap_or_default();
    args.push("--inventory=/var/lib/netflow/inventory.json".into());
    let run = |seccomp: Option<&Path>, detach: bool| {
        let mut command = podman(&dir);
        command.args(["run", "--network=none"]);
        // podman as root raises the open-files and processes limits past
        // this machine's hard limits, which runc cannot do once every
        // capability is dropped; a kubelet's runtime leaves them alone.
        command.args(["--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"]);
        if detach {
            command.arg("--detach");
        } else {
            command.arg("--rm");
        }
        command
            .args(podman_flags(&spec, seccomp))
            .arg(&reference)
            .args(&args)
            .output()
            .unwrap()
    };

    // The default profile (containers-common's, as CRI-O's) allows bpf(2)
    // only with CAP_SYS_ADMIN: the agent says so and stops at once.
    let started = Instant::now();
    let refused = run(None, false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("seccomp refused bpf(2)")
            && stderr.contains("deploy/seccomp/netflow-agent.json"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "fails fast");

    // The Localhost profile deploy/ ships: it attaches, and detaches on stop.
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/seccomp/netflow-agent.json");
    let started = run(Some(&profile), true);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let id = String::from_utf8_lossy(&started.stdout).trim().to_string();
    let logs = || {
        let output = podman(&dir).args(["logs", &id]).output().unwrap();
        String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs().contains("attached: recording connections") {
        assert!(Instant::now() < deadline, "never attached: {}", logs());
        thread::sleep(Duration::from_millis(200));
    }
    let stopped = podman(&dir)
        .args(["stop", "--time", "20", &id])
        .output()
        .unwrap();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let code = podman(&dir)
        .args(["inspect", "--format", "{{.State.ExitCode}}", &id])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "{}",
        logs()
    );
    assert!(logs().contains("detached"), "{}", logs());
    let _ = podman(&dir).args(["rm", "--force", &id]).output();
    let _ = podman(&dir).args(["rmi", "--all", "--force"]).output();
    let _ = podman(&dir).args(["system", "reset", "--force"]).output();
    remove_private_bpffs(&state);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_shipped_seccomp_profile_is_the_runtime_default_plus_bpf_and_perf_event_open() {
    let default = Path::new("/usr/share/containers/seccomp.json");
    if !default.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("containers-common's seccomp.json is missing (podman brings it)");
        }
        eprintln!("skipping: no /usr/share/containers/seccomp.json");
        return;
    }
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let shipped =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/seccomp/netflow-agent.json"));
    let default = read(default);
    // Which syscalls each profile allows unconditionally (no capability or
    // argument condition): the shipped one adds exactly two.
    let allowed = |profile: &serde_json::Value| -> std::collections::BTreeSet<String> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| {
                rule["action"] == "SCMP_ACT_ALLOW"
                    && rule["args"].as_array().is_none_or(|args| args.is_empty())
                    && rule["includes"].as_object().is_none_or(|i| i.is_empty())
                    && rule["excludes"].as_object().is_none_or(|e| e.is_empty())
            })
            .flat_map(|rule| rule["names"].as_array().unwrap().iter())
            .map(|name| name.as_str().unwrap().to_string())
            .collect()
    };
    let added: Vec<String> = allowed(&shipped)
        .difference(&allowed(&default))
        .cloned()
        .collect();
    assert_eq!(
        added,
        vec!["bpf".to_string(), "perf_event_open".to_string()]
    );
    assert!(allowed(&default).is_subset(&allowed(&shipped)));
    assert_eq!(shipped["defaultAction"], default["defaultAction"]);
}
