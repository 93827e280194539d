//! `netflow-agent graph build|merge|export|show` and `flows convert` on
//! files alone.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const NODE_A: &str = r#"{"id":"workload:shop/Deployment/frontend","kind":"workload","namespace":"shop","name":"frontend"}"#;
const NODE_B: &str =
    r#"{"id":"workload:shop/Deployment/cart","kind":"workload","namespace":"shop","name":"cart"}"#;

fn graph(connections: u64, first: &str, last: &str) -> String {
    format!(
        r#"{{"version":1,"nodes":[{NODE_A},{NODE_B}],"edges":[{{"from":"workload:shop/Deployment/frontend","to":"workload:shop/Deployment/cart","protocol":"tcp","port":7070,"first_seen":"{first}","last_seen":"{last}","days_seen":["{}"],"connections":{connections},"bytes":100}}]}}"#,
        &first[..10]
    )
}

/// A graph of one edge seen for an hour on 2026-11-18, at `path`.
fn write_graph(path: &Path, connections: u64) {
    fs::write(
        path,
        graph(connections, "2026-11-18T10:00:00Z", "2026-11-18T11:00:00Z"),
    )
    .unwrap();
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name("netflow-graph-cli-"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn agent(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(common::agent()).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn merge_adds_up_weeks_and_export_shows_the_edge() {
    let dir = scratch();
    let (a, b, merged) = (
        dir.join("a.json"),
        dir.join("b.json"),
        dir.join("merged.json"),
    );
    fs::write(&a, graph(3, "2026-11-18T10:00:00Z", "2026-11-18T11:00:00Z")).unwrap();
    fs::write(&b, graph(4, "2026-11-20T10:00:00Z", "2026-11-24T11:00:00Z")).unwrap();
    let (code, _, stderr) = agent(&[
        "graph",
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");

    let value: serde_json::Value = serde_json::from_slice(&fs::read(&merged).unwrap()).unwrap();
    let edges = value["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["connections"], 7);
    assert_eq!(edges[0]["first_seen"], "2026-11-18T10:00:00Z");
    assert_eq!(edges[0]["last_seen"], "2026-11-24T11:00:00Z");
    assert_eq!(edges[0]["days_seen"].as_array().unwrap().len(), 2);

    let (code, dot, _) = agent(&[
        "graph",
        "export",
        "--graph",
        merged.to_str().unwrap(),
        "--format",
        "dot",
    ]);
    assert_eq!(code, 0);
    assert!(
        dot.contains("-> \"workload:shop/Deployment/cart\" [label=\"tcp/7070 (7 conn)\"]"),
        "{dot}"
    );
    let (code, mermaid, _) = agent(&[
        "graph",
        "export",
        "--graph",
        merged.to_str().unwrap(),
        "--format",
        "mermaid",
    ]);
    assert_eq!(code, 0);
    assert!(mermaid.contains("-->|\"tcp/7070\"|"), "{mermaid}");
    let (code, table, _) = agent(&["graph", "show", "--graph", merged.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        table.contains("shop/frontend") && table.contains("tcp/7070"),
        "{table}"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_graphs_are_named_and_leave_no_output() {
    let dir = scratch();
    let good = dir.join("good.json");
    write_graph(&good, 1);
    let cases = [
        (
            "broken.json",
            "{\"version\":1,\"nodes\":[".to_string(),
            "is not valid",
        ),
        (
            "newer.json",
            "{\"version\":7,\"nodes\":[],\"edges\":[]}".to_string(),
            "newer than this netflow-agent reads",
        ),
        (
            "times.json",
            graph(1, "2026-11-18T10:00:00Z", "yesterday"),
            "not an RFC 3339 time",
        ),
    ];
    for (name, text, expected) in cases {
        let bad = dir.join(name);
        fs::write(&bad, text).unwrap();
        let out = dir.join("out.json");
        let (code, _, stderr) = agent(&[
            "graph",
            "merge",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(expected),
            "{name}: {stderr}"
        );
        assert!(!out.exists(), "{name}: no output written");
    }
    let (code, _, stderr) = agent(&[
        "graph",
        "show",
        "--graph",
        dir.join("missing.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.json"), "{stderr}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn export_to_a_file_writes_what_stdout_shows_or_nothing() {
    let dir = scratch();
    let input = dir.join("graph.json");
    write_graph(&input, 2);
    for format in ["json", "dot", "mermaid"] {
        let export = |extra: &[&str]| {
            let mut args = vec![
                "graph",
                "export",
                "--graph",
                input.to_str().unwrap(),
                "--format",
                format,
            ];
            args.extend_from_slice(extra);
            agent(&args)
        };
        let (code, shown, stderr) = export(&[]);
        assert_eq!(code, 0, "{format}: {stderr}");
        let out = dir.join(format!("out.{format}"));
        let (code, _, stderr) = export(&["-o", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{format}: {stderr}");
        assert_eq!(fs::read_to_string(&out).unwrap(), shown, "{format}");
        // A directory that does not exist: named, and nothing written.
        let unwritable = dir.join("missing").join(format!("out.{format}"));
        let (code, _, stderr) = export(&["-o", unwritable.to_str().unwrap()]);
        assert_eq!(code, 1, "{format}: {stderr}");
        assert!(stderr.contains("missing/out."), "{format}: {stderr}");
        assert!(!dir.join("missing").exists(), "{format}");
    }
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "no temporary file left: {names:?}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    let dir = scratch();
    let (input, inventory, policies) = (
        dir.join("graph.json"),
        dir.join("inventory.json"),
        dir.join("policies"),
    );
    write_graph(&input, 2);
    fs::write(&inventory, INVENTORY).unwrap();
    fs::create_dir(&policies).unwrap();
    let (input, inventory, policies) = (
        input.to_str().unwrap(),
        inventory.to_str().unwrap(),
        policies.to_str().unwrap(),
    );
    let commands: [&[&str]; 5] = [
        &["graph", "show", "--graph", input],
        &["graph", "export", "--graph", input, "--format", "json"],
        &["graph", "export", "--graph", input, "--format", "mermaid"],
        &["policy", "plan", "--graph", input, "--policies", policies],
        &[
            "policy",
            "verify",
            "--graph",
            input,
            "--policies",
            policies,
            "--inventory",
            inventory,
        ],
    ];
    for args in commands {
        // A full disk, as a closed pipe (`| head`) would be.
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let output = Command::new(common::agent())
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write to stdout") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    fs::remove_dir_all(dir).unwrap();
}

const INVENTORY: &str = r#"{"apiVersion":"v1","kind":"List","items":[
  {"kind":"Pod","metadata":{"name":"web-1","namespace":"shop","uid":"aaaaaaaa-0000-0000-0000-000000000001","labels":{"app":"web"}},
   "spec":{"containers":[{"name":"web"}]},"status":{"podIP":"10.244.0.5"}},
  {"kind":"Pod","metadata":{"name":"db-0","namespace":"shop","uid":"aaaaaaaa-0000-0000-0000-000000000002","labels":{"app":"db"},
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"s","controller":true}]},
   "spec":{"containers":[{"name":"db"}]},"status":{"podIP":"10.244.0.6"}}
]}"#;

const FLOWS: &str = r#"{"type":"flow","ts":"2026-11-20T10:00:05.000Z","cgroup_id":7,"cgroup":"/kubepods/podaaaaaaaa-0000-0000-0000-000000000001/0123456789abcdef","protocol":"tcp","local":{"ip":"10.244.0.5","port":41000},"remote":{"ip":"10.244.0.6","port":5432},"initiator":"local","client":"local","client_basis":"tcp_syn","packets_in":4,"packets_out":6,"bytes_in":300,"bytes_out":500,"first_seen":"2026-11-20T10:00:00.000Z","last_seen":"2026-11-20T10:00:01.000Z","new":true}
{"type":"stats","ts":"2026-11-20T10:00:05.000Z","table_entries":1,"table_capacity":64,"overflowed_connections":0,"drops":{}}
"#;

#[test]
fn build_turns_a_flow_log_into_workload_edges() {
    let dir = scratch();
    let (inventory, flows, out) = (
        dir.join("inventory.json"),
        dir.join("flows.jsonl"),
        dir.join("graph.json"),
    );
    fs::write(&inventory, INVENTORY).unwrap();
    fs::write(&flows, FLOWS).unwrap();
    let (code, _, stderr) = agent(&[
        "graph",
        "build",
        "--flows",
        flows.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let value: serde_json::Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    let edges = value["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{value:#}");
    assert_eq!(edges[0]["from"], "workload:shop/Pod/web-1");
    assert_eq!(edges[0]["to"], "workload:shop/StatefulSet/db");
    assert_eq!(edges[0]["port"], 5432);
    assert_eq!(edges[0]["connections"], 1);

    fs::write(
        &inventory,
        "{\"items\": [{\"kind\": \"Pod\", \"spec\": 3}]}",
    )
    .unwrap();
    let (code, _, stderr) = agent(&[
        "graph",
        "build",
        "--flows",
        flows.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "-o",
        dir.join("other.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("inventory.json") && stderr.contains("item 0 (Pod)"),
        "{stderr}"
    );
    assert!(!dir.join("other.json").exists());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_binary_flow_log_holds_the_same_records_and_builds_the_same_graph() {
    let dir = scratch();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    fs::write(path("inventory.json"), INVENTORY).unwrap();
    fs::write(path("flows.jsonl"), FLOWS).unwrap();
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = agent(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    run(&[
        "flows",
        "convert",
        &path("flows.jsonl"),
        "--to",
        "binary",
        "-o",
        &path("flows.bin"),
    ]);
    let binary = fs::read(path("flows.bin")).unwrap();
    assert!(binary.starts_with(b"NETFLOW\x01"));
    assert!(binary.len() < FLOWS.len() / 2, "{} bytes", binary.len());
    // Back as JSON lines: the same records, line for line, as the JSON
    // log's own (fields at their defaults written out).
    let convert = |inputs: &[&str]| {
        let mut args = vec!["flows".to_string(), "convert".to_string()];
        args.extend(inputs.iter().map(|name| path(name)));
        args.extend(["--to", "json", "-o", "-"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = run(&args);
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect::<Vec<serde_json::Value>>()
    };
    let from_json = convert(&["flows.jsonl"]);
    assert_eq!(from_json.len(), 2);
    assert_eq!(from_json[0]["bytes_out"], 500);
    assert_eq!(convert(&["flows.bin"]), from_json);
    // Both logs at once, in order, whatever their formats.
    assert_eq!(
        convert(&["flows.jsonl", "flows.bin"]),
        [from_json.clone(), from_json].concat()
    );
    for (log, graph) in [
        ("flows.jsonl", "from-json.json"),
        ("flows.bin", "from-binary.json"),
    ] {
        run(&[
            "graph",
            "build",
            "--flows",
            &path(log),
            "--inventory",
            &path("inventory.json"),
            "-o",
            &path(graph),
        ]);
    }
    assert_eq!(
        fs::read(path("from-json.json")).unwrap(),
        fs::read(path("from-binary.json")).unwrap()
    );

    // A log cut inside a record (a crash mid-write) is named, record and
    // byte, and nothing is written: neither a graph nor a conversion.
    fs::write(path("cut.bin"), &binary[..binary.len() - 3]).unwrap();
    let (code, _, stderr) = agent(&[
        "graph",
        "build",
        "--flows",
        &path("cut.bin"),
        "--inventory",
        &path("inventory.json"),
        "-o",
        &path("cut-graph.json"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cut.bin: record 2 (at byte") && stderr.contains("the file ends inside it"),
        "{stderr}"
    );
    let (code, _, stderr) = agent(&[
        "flows",
        "convert",
        &path("cut.bin"),
        "--to",
        "json",
        "-o",
        &path("cut.jsonl"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cut.bin: record 2"), "{stderr}");
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("cut") || name.starts_with('.'))
        .collect();
    assert_eq!(left, ["cut.bin"], "no output, no temporary file");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_binary_graph_is_the_same_graph_in_every_command() {
    let dir = scratch();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // With the cluster's DNS, which `policy generate` allows every pod.
    let mut inventory: serde_json::Value = serde_json::from_str(INVENTORY).unwrap();
    inventory["items"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"port": 53, "protocol": "UDP"}]}
        }));
    fs::write(path("inventory.json"), inventory.to_string()).unwrap();
    fs::write(path("flows.jsonl"), FLOWS).unwrap();
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = agent(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    for (format, graph) in [("json", "graph.json"), ("binary", "graph.bin")] {
        run(&[
            "graph",
            "build",
            "--flows",
            &path("flows.jsonl"),
            "--inventory",
            &path("inventory.json"),
            "-o",
            &path(graph),
            "--format",
            format,
        ]);
    }
    let binary = fs::read(path("graph.bin")).unwrap();
    assert!(binary.starts_with(b"NFGRAPH\x02"));
    // Exported as JSON it is the JSON build's graph, and every reader
    // (export, show, generate, merge) sees the same.
    let as_json = |graph: &str| run(&["graph", "export", "--graph", &path(graph)]);
    assert_eq!(as_json("graph.bin"), as_json("graph.json"));
    let show = |graph: &str| run(&["graph", "show", "--graph", &path(graph)]);
    assert_eq!(show("graph.bin"), show("graph.json"));
    assert!(show("graph.bin").contains("5432"));
    for (graph, out) in [("graph.json", "from-json"), ("graph.bin", "from-binary")] {
        run(&[
            "policy",
            "generate",
            "--graph",
            &path(graph),
            "--inventory",
            &path("inventory.json"),
            "--out",
            &path(out),
        ]);
    }
    let policies = |out: &str| {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(path(out))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().into_string().unwrap(),
                    fs::read(entry.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert!(!policies("from-json").is_empty());
    assert_eq!(policies("from-binary"), policies("from-json"));
    // Merged with itself in the other layout: every count doubled, stored
    // binary, read back by the extending build.
    run(&[
        "graph",
        "merge",
        &path("graph.json"),
        &path("graph.bin"),
        "-o",
        &path("twice.bin"),
        "--format",
        "binary",
    ]);
    let twice: serde_json::Value = serde_json::from_str(&as_json("twice.bin")).unwrap();
    assert_eq!(twice["edges"][0]["connections"], 2, "{twice:#}");
    run(&[
        "graph",
        "build",
        "--flows",
        &path("flows.jsonl"),
        "--inventory",
        &path("inventory.json"),
        "--graph",
        &path("twice.bin"),
        "-o",
        &path("thrice.json"),
    ]);
    let thrice: serde_json::Value = serde_json::from_str(&as_json("thrice.json")).unwrap();
    assert_eq!(thrice["edges"][0]["connections"], 3, "{thrice:#}");

    // A binary graph cut short is named, and nothing is written.
    fs::write(path("cut.bin"), &binary[..binary.len() - 2]).unwrap();
    let (code, _, stderr) = agent(&[
        "graph",
        "export",
        "--graph",
        &path("cut.bin"),
        "-o",
        &path("cut.json"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cut.bin is not valid: edge 0 (at byte") && stderr.contains("cut short"),
        "{stderr}"
    );
    assert!(!dir.join("cut.json").exists());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn policy_commands_refuse_bad_inputs_by_name() {
    let dir = scratch();
    let (inventory, graph_file) = (dir.join("inventory.json"), dir.join("graph.json"));
    fs::write(&inventory, INVENTORY).unwrap();
    fs::write(
        &graph_file,
        "{\"version\": 9, \"nodes\": [], \"edges\": []}",
    )
    .unwrap();
    let out = dir.join("policies");
    let (code, _, stderr) = agent(&[
        "policy",
        "generate",
        "--graph",
        graph_file.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("graph.json") && stderr.contains("newer than this netflow-agent reads"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written for a refused graph");

    // An inventory without a cluster DNS: nothing is guessed.
    write_graph(&graph_file, 1);
    let (code, _, stderr) = agent(&[
        "policy",
        "generate",
        "--graph",
        graph_file.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no cluster DNS"), "{stderr}");
    assert!(!out.exists(), "nothing written without a cluster DNS");

    let policies = dir.join("bad-policies");
    fs::create_dir_all(&policies).unwrap();
    fs::write(
        policies.join("a.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: [\n",
    )
    .unwrap();
    let (code, _, stderr) = agent(&[
        "policy",
        "verify",
        "--graph",
        graph_file.to_str().unwrap(),
        "--policies",
        policies.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("a.yaml") && stderr.contains("not valid YAML"),
        "{stderr}"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_daemonset_binary_has_no_lab_bench_or_peer() {
    // They moved to netflow-lab: the image's binary cannot setns, exec or
    // build a lab.
    for subcommand in ["lab", "bench", "peer"] {
        let output = Command::new(common::agent())
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{subcommand}: {stderr}");
        assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    }
    let help = Command::new(common::lab()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("run") && help.contains("bench"), "{help}");
}
