//! `policy generate|verify|plan|tests|apply`.

pub mod apply;
pub mod generate;
pub mod plan;
pub mod tests;
pub mod verify;
