//! Policies from observed traffic.

pub mod apply;
pub mod cilium;
pub mod command;
pub mod evaluate;
pub mod generate;
pub mod netassert;
pub mod plan;
pub mod verify;
