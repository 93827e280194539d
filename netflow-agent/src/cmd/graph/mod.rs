//! `graph build|pull|merge|export|show`.

pub mod build;
pub mod export;
pub mod merge;
pub mod pull;
pub mod show;
