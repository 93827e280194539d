//! The agent killed with SIGKILL at random points, fifty times, while
//! traffic runs (issue 14): during polls, during saves, right after it
//! attached. Every restart must load a valid graph that lost nothing it had
//! saved; nothing may be counted twice (the pinned table is taken over, not
//! read again from zero); what is lost is at most the last interval before
//! each kill (and what ran while no agent was attached: the programs go
//! with the process); and no program stays attached once an agent is gone.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::agent_process::AgentProcess;
use netflow_agent::{
    graph::CommGraph,
    testbed::{Host, Testbed},
};

const RESTARTS: usize = 50;
const INTERVAL: Duration = Duration::from_millis(300);

/// A connection the client made, between these two instants.
#[derive(Clone, Copy)]
struct Made {
    from: Instant,
    to: Instant,
}

/// One agent's life: attached at, killed at.
#[derive(Clone, Copy)]
struct Life {
    attached: Instant,
    killed: Instant,
}

/// Connections host A -> host B:8080 in a saved graph, as the client's and
/// the server's side counted them.
fn connections_in(graph: &Path) -> (u64, u64) {
    let graph = CommGraph::load(graph).expect("every saved graph loads");
    graph
        .edges()
        .iter()
        .filter(|(_, to, edge)| to.id == "node:host-b" && edge.key.port == 8080)
        .fold((0, 0), |(client, server), (_, _, edge)| {
            (
                client + edge.stats.seen_by_client.connections,
                server + edge.stats.seen_by_server.connections,
            )
        })
}

#[test]
fn fifty_sigkills_lose_at_most_an_interval_each_and_count_nothing_twice() {
    if !common::privileged("fifty_sigkills") {
        return;
    }
    let mut testbed = Testbed::two_hosts(&common::unique_name("nfkill")).unwrap();
    let dir = common::tempdir("kill");
    let inventory = common::host_inventory(&dir);
    let state = dir.join("state");
    let pins = Path::new("/sys/fs/bpf").join(common::unique_name("netflow-kill-"));
    testbed
        .start_server(&common::lab(), Host::B, &["--tcp", "10.231.0.2:8080"])
        .unwrap();

    // The client: one connection after another, each timed.
    let made = Arc::new(Mutex::new(Vec::<Made>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let made = made.clone();
        let stop = stop.clone();
        let command = {
            let command = testbed.peer_command(
                &common::lab(),
                Host::A,
                &["connect", "--tcp", "10.231.0.2:8080", "--count", "1"],
            );
            (
                command.get_program().to_owned(),
                command
                    .get_args()
                    .map(|arg| arg.to_owned())
                    .collect::<Vec<_>>(),
            )
        };
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let from = Instant::now();
                let status = Command::new(&command.0)
                    .args(&command.1)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
                made.lock().unwrap().push(Made {
                    from,
                    to: Instant::now(),
                });
            }
        })
    };

    let start = |testbed: &Testbed| {
        let interval = format!("{}ms", INTERVAL.as_millis());
        AgentProcess::start(
            "record",
            testbed.cgroup_parent(),
            [
                "--interval".as_ref(),
                interval.as_ref(),
                "--inventory".as_ref(),
                inventory.as_os_str(),
                "--state-dir".as_ref(),
                state.as_os_str(),
                "--pin-maps".as_ref(),
                pins.as_os_str(),
            ],
        )
    };

    let mut lives = Vec::new();
    let mut saved = (0, 0);
    let mut took_over = 0;
    let mut random = 0x2545_f491_4f6c_dd1du64;
    for restart in 0..RESTARTS {
        let agent = start(&testbed);
        let attached = agent.attached;
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        // Anywhere from before the first poll to a few intervals in.
        thread::sleep(Duration::from_millis(50 + random % 1200));
        let said = agent.kill();
        let killed = Instant::now();
        lives.push(Life { attached, killed });
        took_over += usize::from(
            said.iter()
                .any(|line| line.contains("took over the pinned connection table")),
        );
        // The programs went with the process.
        assert_eq!(
            common::netflow_hooks_attached(testbed.cgroup_parent()),
            [0, 0, 0],
            "restart {restart}: a program outlived its agent"
        );
        let graph = state.join("graph.json");
        if graph.exists() {
            let now = connections_in(&graph);
            assert!(
                now.0 >= saved.0 && now.1 >= saved.1,
                "restart {restart}: the saved graph went back from {saved:?} to {now:?} connections"
            );
            saved = now;
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    // A last agent, stopped cleanly: it reports what the last kill left in
    // the table after its interval, then detaches.
    let agent = start(&testbed);
    let attached = agent.attached;
    thread::sleep(INTERVAL * 4);
    agent.stop(libc::SIGTERM);
    lives.push(Life {
        attached,
        killed: Instant::now(),
    });
    assert_eq!(
        common::netflow_hooks_attached(testbed.cgroup_parent()),
        [0, 0, 0],
        "a program stayed attached after the last stop"
    );

    let (by_client, by_server) = connections_in(&state.join("graph.json"));
    let made = made.lock().unwrap().clone();
    // Connections made well inside an agent's life, before its last interval.
    let margin = Duration::from_millis(100);
    let covered = made
        .iter()
        .filter(|connection| {
            lives.iter().any(|life| {
                connection.from > life.attached + margin
                    && connection.to + INTERVAL + margin < life.killed
            })
        })
        .count() as u64;
    let downtime: Duration = lives
        .windows(2)
        .map(|pair| pair[1].attached.duration_since(pair[0].killed))
        .sum();
    eprintln!(
        "restart: {:?} on average from SIGKILL to attached again",
        downtime / (lives.len() as u32 - 1)
    );
    eprintln!(
        "{RESTARTS} SIGKILLs: {} connections made, {covered} well inside an agent's life, recorded {by_client} by the client's side and {by_server} by the server's ({took_over} restarts took over the pinned table)",
        made.len()
    );
    for (side, recorded) in [("client", by_client), ("server", by_server)] {
        assert!(
            recorded <= made.len() as u64,
            "the {side}'s side recorded {recorded} of {} made: counted twice",
            made.len()
        );
        assert!(
            recorded >= covered,
            "the {side}'s side recorded {recorded}, but {covered} were made while an agent ran, before its last interval"
        );
    }
    assert!(
        took_over >= RESTARTS - 1,
        "the pinned table was not taken over"
    );
    drop(testbed);
    let _ = std::fs::remove_dir_all(&pins);
    std::fs::remove_dir_all(dir).unwrap();
}
