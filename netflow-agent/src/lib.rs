//! netflow's userspace agent, one module per stage of the data path.

pub mod batch;
pub mod bench;
pub mod cgroupfs;
pub mod cgroups;
pub mod cli;
pub mod clock;
pub mod dns;
pub mod flowlog;
pub mod graph;
pub mod identity;
pub mod initiator;
pub mod inventory;
pub mod lab;
pub mod loader;
pub mod peer;
pub mod policy;
pub mod reader;
pub mod record;
pub mod serve;
pub mod telemetry;
pub mod testbed;

/// The single-threaded Tokio runtime the commands run their async parts on
/// (the kernel work is synchronous; one thread is enough for the watches,
/// the signals and the API calls).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
