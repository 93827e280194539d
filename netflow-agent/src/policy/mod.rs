//! Policies from observed traffic: `generate` writes the smallest allow set
//! for the graph in either flavor (NetworkPolicy, or the typed
//! CiliumNetworkPolicy of `cilium`) and the cluster admin's tiers of
//! `cluster_wide`, `write` puts a set on disk; `evaluate`
//! decides what a set allows (`from_cluster` reads the set a cluster has),
//! `verify` replays the graph against it, `staged` judges live traffic
//! against a set not yet enforced;
//! `rollout` orders the enforcement, `netassert` writes tests, `apply` sends
//! a set to the cluster. Sets are read and written a file at a time on every
//! core (`crate::parallel`).

pub mod apply;
pub mod cilium;
pub mod cluster_wide;
pub mod evaluate;
pub mod from_cluster;
pub mod generate;
pub mod netassert;
pub mod rollout;
pub mod staged;
pub mod verify;
pub mod write;
pub mod yaml_emit;
