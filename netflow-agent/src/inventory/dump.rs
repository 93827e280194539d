//! The inventory from a dump: `kubectl get ... -A -o json` (a `v1` `List`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Inventory, Objects};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("inventory {path} is not valid")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// What is wrong with a `kubectl get ... -o json` list.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a Kubernetes List")]
    List(#[source] serde_json::Error),
    #[error("item {index} ({kind})")]
    Item {
        index: usize,
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| InventoryError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses a `kubectl get ... -o json` list.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let list: List = serde_json::from_str(text).map_err(ParseError::List)?;
        let mut objects = Objects::default();
        for (index, item) in list.items.into_iter().enumerate() {
            let kind = item
                .get("kind")
                .and_then(|kind| kind.as_str())
                .unwrap_or_default()
                .to_string();
            let bad = |source: serde_json::Error| ParseError::Item {
                index,
                kind: kind.clone(),
                source,
            };
            match kind.as_str() {
                "Pod" => objects
                    .pods
                    .push(serde_json::from_value(item).map_err(bad)?),
                "Service" => objects
                    .services
                    .push(serde_json::from_value(item).map_err(bad)?),
                "Node" => objects
                    .nodes
                    .push(serde_json::from_value(item).map_err(bad)?),
                "Namespace" => objects
                    .namespaces
                    .push(serde_json::from_value(item).map_err(bad)?),
                "ReplicaSet" => objects
                    .replica_sets
                    .push(serde_json::from_value(item).map_err(bad)?),
                "Deployment" => objects
                    .deployments
                    .push(serde_json::from_value(item).map_err(bad)?),
                "StatefulSet" => objects
                    .stateful_sets
                    .push(serde_json::from_value(item).map_err(bad)?),
                "DaemonSet" => objects
                    .daemon_sets
                    .push(serde_json::from_value(item).map_err(bad)?),
                "Job" => objects
                    .jobs
                    .push(serde_json::from_value(item).map_err(bad)?),
                "EndpointSlice" => objects
                    .endpoint_slices
                    .push(serde_json::from_value(item).map_err(bad)?),
                // Other kinds (ConfigMaps, CronJobs: a Job's owner reference
                // names its CronJob, ...) are not needed here.
                _ => {}
            }
        }
        Ok(Self::from_objects(objects))
    }
}
