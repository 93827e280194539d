//! One entry point per parser that reads data from outside the agent, for
//! the fuzz targets (`netflow-agent/fuzz`, run by `cargo xtask fuzz`) and
//! for the regression test that replays their committed corpus and crash
//! inputs in `cargo xtask test` (`tests/fuzz_corpus.rs`). Both call the
//! same function, so a crash found by the fuzzer stays a failing test until
//! it is fixed.
//!
//! Every entry takes arbitrary bytes. An error is a fine answer; a panic, a
//! hang or an allocation without bound is a bug. Where a parse succeeds the
//! entry checks what the rest of netflow relies on (a graph that loads can
//! be saved and loaded again).

use std::{
    cell::RefCell,
    path::Path,
    sync::{Arc, LazyLock, Mutex},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    daemon::{
        flowlog, graph_gzip,
        http::{self, Serves, Shared, Snapshot},
    },
    graph::CommGraph,
    inventory::Inventory,
    kernel::{dns_wire, http_wire},
    policy::evaluate::Policies,
    testbed::scenario::Scenario,
};

/// A named parser entry.
pub struct Target {
    /// The fuzz target's name: its file in `fuzz/fuzz_targets` and its
    /// directories under `fuzz/corpus` and `fuzz/regressions`.
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every parser of outside data.
pub const TARGETS: &[Target] = &[
    Target {
        name: "dns_wire",
        run: dns_wire_message,
    },
    Target {
        name: "flow_log",
        run: flow_log,
    },
    Target {
        name: "http_head",
        run: http_head,
    },
    Target {
        name: "graph_file",
        run: graph_file,
    },
    Target {
        name: "inventory_dump",
        run: inventory_dump,
    },
    Target {
        name: "policy_yaml",
        run: policy_yaml,
    },
    Target {
        name: "scenario",
        run: scenario,
    },
    Target {
        name: "http_request",
        run: http_request,
    },
];

/// The entry named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}

/// A DNS message as the kernel passes it up (any packet a pod answers).
pub fn dns_wire_message(data: &[u8]) {
    let parsed = dns_wire::parse(data);
    let answers = dns_wire::response_addresses(data);
    // The two views of one message agree.
    assert_eq!(
        answers.is_some(),
        parsed.as_ref().is_some_and(|message| message.response)
    );
}

/// An HTTP request head the kernel passed up. What reads as a request has
/// a known method and a path without query, and the path's template (what
/// L7 rules allow) matches the path it came from.
pub fn http_head(data: &[u8]) {
    let Some(request) = http_wire::parse(data) else {
        return;
    };
    assert!(http_wire::METHODS.contains(&request.method.as_str()));
    assert!(!request.path.contains(['?', '#']), "{request:?}");
    let template = crate::graph::http_calls::template(&request.path);
    let regex = regex::Regex::new(&format!("^(?:{template})$"))
        .unwrap_or_else(|err| panic!("template {template:?} of {:?}: {err}", request.path));
    assert!(
        regex.is_match(&request.path),
        "{template:?} / {:?}",
        request.path
    );
}

/// A flow log (`record` writes it; `graph build` reads it).
pub fn flow_log(data: &[u8]) {
    let _ = flowlog::for_each_line_in(data, Path::new("fuzz.jsonl"), |_| true, |_| Ok(()));
}

/// A graph file, JSON or binary (the daemon's state, `graph pull`'s answer
/// from each node, `graph build --format binary`).
pub fn graph_file(data: &[u8]) {
    let path = Path::new("fuzz-graph");
    let Ok(graph) = CommGraph::parse_bytes(data.to_vec(), path) else {
        return;
    };
    // What loads can be saved, in either layout, and loads again, whole.
    let saved = serde_json::to_string(&graph.file()).expect("a loaded graph serializes");
    let mut binary = Vec::new();
    crate::graph::file::binary::write(&graph, &mut binary).expect("a loaded graph encodes");
    for again in [saved.into_bytes(), binary] {
        let again = CommGraph::parse_bytes(again, path).expect("a saved graph loads");
        assert_eq!(again.edge_count(), graph.edge_count());
        assert_eq!(again.node_count(), graph.node_count());
    }
}

/// A `kubectl get -o json` dump (`--inventory`).
pub fn inventory_dump(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Inventory::parse(text);
    }
}

/// Policy files for `policy verify` (YAML or JSON, any number of documents).
pub fn policy_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policies::default().add_text(text, "fuzz.yaml");
    }
}

/// A lab scenario file.
pub fn scenario(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Scenario::parse(text);
    }
}

/// Bytes sent to the agent's HTTP ports (the health port faces the pods):
/// served by both listeners' code over an in-memory stream, as a socket
/// would be, with a graph to serve.
pub fn http_request(data: &[u8]) {
    thread_local! {
        static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
    }
    static SHARED: LazyLock<Shared> = LazyLock::new(|| {
        let snapshot = Snapshot {
            attached: true,
            inventory_loaded: true,
            graph_gzip: graph_gzip(&CommGraph::new()),
            denials_json: Some(bytes::Bytes::from_static(b"{\"version\":1,\"denials\":{}}")),
        };
        Shared {
            snapshot: Arc::new(Mutex::new(snapshot)),
            metrics: Arc::default(),
        }
    });
    RUNTIME.with(|runtime| {
        let mut runtime = runtime.borrow_mut();
        let runtime = runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
        });
        for serves in [Serves::Health, Serves::Graph] {
            runtime.block_on(async {
                let (client, server) = tokio::io::duplex(64 * 1024);
                let served = tokio::spawn(http::serve_connection(
                    hyper_util::rt::TokioIo::new(server),
                    SHARED.clone(),
                    serves,
                ));
                // Write and read at once: a reply may fill the pipe before
                // the request is all written.
                let (mut reads, mut writes) = tokio::io::split(client);
                let write = async {
                    let _ = writes.write_all(data).await;
                    let _ = writes.shutdown().await;
                };
                let read = async {
                    let mut reply = Vec::new();
                    let _ = reads.read_to_end(&mut reply).await;
                };
                tokio::join!(write, read);
                let _ = served.await;
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_empty_and_garbage_input() {
        for target in TARGETS {
            (target.run)(b"");
            (target.run)(b"\xff\x00{[--- \n");
        }
    }

    #[test]
    fn names_are_unique() {
        for (index, target) in TARGETS.iter().enumerate() {
            assert!(
                TARGETS[index + 1..]
                    .iter()
                    .all(|other| other.name != target.name),
                "{} twice",
                target.name
            );
        }
    }
}
