//! `flows convert`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::model::FlowLogFormat;

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Rewrite flow logs (either format, one after the other) in one
    /// format, record for record: a binary log as JSON lines to read or
    /// `jq`, JSON lines as binary for `graph build` to read fast.
    Convert {
        /// Flow logs written by `record` (JSON lines or binary).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The output's format.
        #[arg(long, value_enum)]
        to: FlowLogFormat,
        /// Output file (written atomically), `-` for stdout.
        #[arg(long, short)]
        output: PathBuf,
    },
}
