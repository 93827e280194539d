//! `deploy/`: every manifest is valid Kubernetes, the kustomization lists
//! them all, the DaemonSet runs the agent as the tests proved it must run,
//! and the ClusterRole grants exactly what the agent's code asks the API.

mod common;

use std::{collections::BTreeSet, path::Path};

use clap::Parser as _;
use common::{
    deploy::{deploy_dir, documents, grants, manifests, object, rbac_of},
    fake_api::{FakeApi, Live},
};
use serde_json::Value;

#[test]
fn every_manifest_is_valid_kubernetes_and_in_the_kustomization() {
    let manifests = manifests();
    assert!(manifests.len() >= 5, "{manifests:?}");
    for path in &manifests {
        common::validate_schema(path);
    }
    let kustomization = documents(&deploy_dir().join("kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = manifests
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn the_daemonset_runs_the_agent_with_only_the_capabilities_it_needs() {
    let daemonset = object("DaemonSet", "netflow-agent");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    // The set `bpf_net_admin_and_perfmon_are_exactly_the_capabilities_needed`
    // (tests/record_cli.rs) proves on this kernel.
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["BPF", "NET_ADMIN", "PERFMON"])
    );
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["privileged"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsUser"], 0);
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());

    // The arguments are the agent's own: they parse with its CLI.
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().to_string())
        .collect();
    let cli = netflow_agent::cli::Cli::try_parse_from(
        std::iter::once("netflow-agent".to_string()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|err| panic!("the DaemonSet's args do not parse: {err}"));
    let netflow_agent::cli::Command::Run(run) = cli.command else {
        panic!("the DaemonSet does not run `run`");
    };
    assert!(
        run.inventory.is_none(),
        "in a cluster the inventory is live"
    );
    assert!(
        run.graph_listen.is_some_and(|addr| addr.ip().is_loopback()),
        "the graph is served on loopback only"
    );
    let ports: Vec<&Value> = container["ports"].as_array().unwrap().iter().collect();
    assert_eq!(ports.len(), 1, "only the metrics port is declared");
    assert_eq!(ports[0]["containerPort"], 9090);

    // The cgroup and the state directory are host paths mounted read-only
    // and read-write.
    let mount_of = |path: &Path| -> (Value, Value) {
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mount| Path::new(mount["mountPath"].as_str().unwrap()) == path)
            .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()))
            .clone();
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap()
            .clone();
        (mount, volume)
    };
    let (mount, volume) = mount_of(run.cgroup.as_deref().expect("--cgroup"));
    assert_eq!(mount["readOnly"], true);
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/cgroup");
    let (mount, volume) = mount_of(run.state_dir.as_deref().expect("--state-dir"));
    assert!(mount["readOnly"].is_null());
    assert!(volume["hostPath"]["path"].is_string());
    // The maps are pinned in the node's bpffs (writable), below its mount.
    let pins = run.pin_maps.as_deref().expect("--pin-maps");
    let (mount, volume) = mount_of(Path::new("/sys/fs/bpf"));
    assert!(pins.starts_with("/sys/fs/bpf"));
    assert!(mount["readOnly"].is_null());
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/bpf");
    // The node's tracefs, for the cgroup_mkdir tracepoint.
    let (_, volume) = mount_of(Path::new("/sys/kernel/tracing"));
    assert_eq!(volume["hostPath"]["path"], "/sys/kernel/tracing");

    // Bound to the ServiceAccount it runs as.
    let binding = object("ClusterRoleBinding", "netflow-agent");
    assert_eq!(binding["roleRef"]["name"], "netflow-agent");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        daemonset["metadata"]["namespace"]
    );
}

#[test]
fn the_cluster_role_grants_exactly_what_the_live_inventory_asks() {
    let dir = common::tempdir("rbac");
    let api = FakeApi::start();
    let live = Live::start(&api, &dir);
    live.until("listed", |_| true);
    // A broken watch: the resumed watches and any relists count too.
    api.break_watches();
    let watches = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| r.query.contains_key("watch"))
            .count()
    };
    let first = watches(&api);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while watches(&api) < first + 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watches did not resume"
        );
        live.runtime
            .block_on(async { tokio::time::sleep(std::time::Duration::from_millis(50)).await });
    }
    let used: BTreeSet<_> = api.requests().iter().map(rbac_of).collect();
    let granted = grants(&object("ClusterRole", "netflow-agent"));
    assert_eq!(
        used, granted,
        "the ClusterRole must grant every request the agent makes, and nothing else"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn only_the_monitoring_namespace_reaches_the_agents_and_only_their_metrics() {
    use netflow_agent::{
        inventory::Inventory,
        policy::evaluate::{End, Evaluator, Verdict, load_policy_set},
    };
    let policies = load_policy_set(&deploy_dir().join("networkpolicy.yaml")).unwrap();
    let inventory = Inventory::parse(
        r#"{"kind":"List","items":[
      {"kind":"Namespace","metadata":{"name":"netflow"}},
      {"kind":"Namespace","metadata":{"name":"monitoring"}},
      {"kind":"Namespace","metadata":{"name":"shop"}},
      {"kind":"Pod","metadata":{"name":"netflow-agent-x","namespace":"netflow","uid":"1","labels":{"app.kubernetes.io/name":"netflow-agent"}},
        "spec":{"containers":[{"name":"agent","ports":[{"name":"http","containerPort":9090}]}]},"status":{"podIP":"10.0.0.1"}},
      {"kind":"Pod","metadata":{"name":"prometheus","namespace":"monitoring","uid":"2","labels":{"app":"prometheus"}},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.0.0.2"}},
      {"kind":"Pod","metadata":{"name":"compromised","namespace":"shop","uid":"3","labels":{"app":"web"}},
        "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.0.0.3"}}
    ]}"#,
    )
    .unwrap();
    let pod = |name: &str| End::Pod(inventory.pods.iter().find(|p| &*p.name == name).unwrap());
    let allowed = |from: &str, port: u16| {
        Evaluator::new(&policies, &inventory).check(pod(from), pod("netflow-agent-x"), port, "TCP")
            == Verdict::Allowed
    };
    assert!(allowed("prometheus", 9090));
    assert!(
        !allowed("prometheus", 9091),
        "the graph port is not reachable"
    );
    assert!(!allowed("compromised", 9090));
    assert!(!allowed("compromised", 9091));
}
