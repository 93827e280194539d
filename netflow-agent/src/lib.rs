//! netflow's agent library. A flow record walks through the stages in this
//! order, each a module that imports only the ones before it (checked by
//! `cargo xtask test`, see `docs/architecture.md`):
//!
//! ```text
//! kernel    load + attach the eBPF programs, read the connection table  -> model::FlowRecord
//! identity  name both ends (cgroup -> pod, IP -> pod/Service/node/external) with the inventory
//! graph     who talks to whom over the audit window; saved, merged, exported
//! policy    the smallest allow set that covers the graph; verify, rollout, tests, apply
//! ```
//!
//! `inventory` (the cluster's objects, from a dump or from watches) feeds
//! identity and policy; `daemon` wires kernel -> identity -> graph in one
//! poll loop for `run`/`record`; `cmd` holds one small file per subcommand
//! and `cli` their clap types.

pub mod cli;
pub mod cmd;
pub mod daemon;
#[cfg(feature = "lab")]
pub mod fuzzing;
pub mod graph;
pub mod identity;
pub mod inventory;
pub mod kernel;
pub mod kube;
pub mod model;
pub mod parallel;
pub mod policy;
pub mod report;
pub mod telemetry;
/// Test support for the integration tests and `netflow-lab`: namespaces,
/// cgroups, peers, HTTP and DNS clients. Never in the DaemonSet's binary.
#[cfg(feature = "lab")]
pub mod testbed;
