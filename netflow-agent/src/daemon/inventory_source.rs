//! Where the daemon's names come from: a static file (read again when it
//! changes) or the cluster's API (the live inventory's watches).

use std::{path::PathBuf, sync::Arc};

use tracing::{info, warn};

use super::DaemonError;
use crate::inventory::{Inventory, watch::LiveInventory};

/// Where workload names come from.
#[derive(Clone, Debug)]
pub enum InventoryOption {
    /// A static dump (`kubectl get ... -o json`): the lab, or no cluster.
    File(PathBuf),
    /// Watch the cluster: in-cluster, or this kubeconfig.
    Cluster { kubeconfig: Option<PathBuf> },
}

/// The inventory as the recording loop uses it.
pub(super) enum InventorySource {
    /// A file, read again when it changes (a cron job's fresh
    /// `kubectl get`, the lab after it replaced a pod).
    Static(StaticInventory),
    Live(LiveInventory),
}

pub(super) struct StaticInventory {
    path: PathBuf,
    modified: Option<std::time::SystemTime>,
    inventory: Arc<Inventory>,
}

/// `inventory` copied into memory of its own. Reading a dump interleaves
/// what the index keeps with what it parses and drops (each pod's object),
/// and grows its tables as it goes; a copy made once the reading is done
/// packs the entries together at their final sizes, and the original's
/// pages, freed whole, go back to the system (at 20 000 pods: 74 -> 61 MB
/// resident).
fn compacted(inventory: Inventory) -> Inventory {
    let copy = inventory.clone();
    drop(inventory);
    copy
}

impl StaticInventory {
    fn load(path: &std::path::Path) -> Result<Self, DaemonError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path: path.to_path_buf(),
            modified,
            inventory: Arc::new(compacted(Inventory::load(path)?)),
        })
    }

    /// Reads the file again if it changed; a file that no longer reads
    /// keeps the last good inventory (and says so).
    fn refresh(&mut self) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == self.modified {
            return;
        }
        self.modified = modified;
        match Inventory::load(&self.path) {
            Ok(inventory) => {
                info!(inventory = %self.path.display(), pods = inventory.pods.len(), "inventory reloaded");
                self.inventory = Arc::new(compacted(inventory));
                super::return_freed_memory();
            }
            Err(err) => {
                let err = crate::telemetry::error_chain(&err);
                warn!(%err, "keeping the previous inventory");
            }
        }
    }
}

impl InventorySource {
    /// Opens the inventory; a live one starts its watchers on the current
    /// runtime.
    pub(super) async fn open(option: &InventoryOption) -> Result<Self, DaemonError> {
        Ok(match option {
            InventoryOption::File(path) => Self::Static(StaticInventory::load(path)?),
            InventoryOption::Cluster { kubeconfig } => {
                let client = crate::kube::client(kubeconfig.as_deref()).await?;
                info!("inventory: watching the cluster");
                Self::Live(LiveInventory::start(&client))
            }
        })
    }

    /// A static file is read again if it changed.
    pub(super) fn refresh(&mut self) {
        if let Self::Static(file) = self {
            file.refresh();
        }
    }

    /// The index, once it is complete (a live one: every kind listed).
    pub(super) fn current(&self) -> Option<Arc<Inventory>> {
        match self {
            Self::Static(file) => Some(file.inventory.clone()),
            Self::Live(live) => live.synced().then(|| live.inventory()),
        }
    }

    /// Whether flows can be named now ([`Self::current`] is `Some`),
    /// without building the index.
    pub(super) fn synced(&self) -> bool {
        match self {
            Self::Static(_) => true,
            Self::Live(live) => live.synced(),
        }
    }

    pub(super) fn watch_errors(&self) -> u64 {
        match self {
            Self::Static(_) => 0,
            Self::Live(live) => live.watch_errors(),
        }
    }
}
