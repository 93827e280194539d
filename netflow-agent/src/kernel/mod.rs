//! The kernel stage: load netflow's eBPF object, attach it to a cgroup, and
//! turn the connection table (and the overflow ring, and the DNS answers the
//! programs pass up) into [`crate::model::FlowRecord`]s.
//!
//! `loader` attaches and owns the programs; `reader` polls the table through
//! `batch` reads; `initiator` decides which side is the client, `handshake`
//! whether the connection was ever answered; `clock` turns
//! kernel timestamps into wall time; `cgroup_mount` finds the cgroup v2
//! hierarchy and `cgroup_paths` names a cgroup id by its path (walking the
//! tree, or from the paths the kernel recorded as cgroups were made, with
//! `tracefs` finding the tracepoint); `dns_wire` parses the DNS responses
//! the kernel passes up.

pub mod batch;
pub mod cgroup_mount;
pub mod cgroup_paths;
pub mod clock;
pub mod dns_wire;
pub mod handshake;
pub mod http_wire;
pub mod initiator;
pub mod loader;
pub mod pins;
pub mod pseudo_fs;
pub mod reader;
pub mod redirect;
pub mod tracefs;
