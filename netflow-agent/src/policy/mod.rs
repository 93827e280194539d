//! Policies from observed traffic.

pub mod command;
pub mod generate;
