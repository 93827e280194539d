//! The inventory from a dump: `kubectl get ... -A -o json` (a `v1` `List`).

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{Builder, Inventory, Objects, OwnerKind, Owners, ServiceEntry, entries::service_entry};

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

/// The list with its items still as text: each item is read into its typed
/// object straight from the dump, never into a `serde_json::Value` tree (a
/// tree of a whole cluster's dump is many times the dump's size).
#[derive(Debug, Deserialize)]
struct List<'a> {
    #[serde(default, borrow)]
    items: Vec<&'a RawValue>,
}

/// Just what says how to read an item.
#[derive(Debug, Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
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
    ///
    /// Two passes over the items, each read from the dump's text when its
    /// turn comes: first everything but pods (owners must be known before a
    /// pod's workload is), then the pods, each indexed as soon as it is read.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let list: List = serde_json::from_str(text).map_err(ParseError::List)?;
        let mut pods = Vec::new();
        let mut objects = Objects::default();
        let mut services = Vec::new();
        for (index, item) in list.items.into_iter().enumerate() {
            let text = item.get();
            let head: Head = serde_json::from_str(text).map_err(|source| ParseError::Item {
                index,
                kind: String::new(),
                source,
            })?;
            let read = match head.kind.as_ref() {
                // Read in the second pass.
                "Pod" => {
                    pods.push((index, item));
                    Ok(())
                }
                "Service" => add_service(&mut services, text),
                "Node" => push(&mut objects.nodes, text),
                "Namespace" => push(&mut objects.namespaces, text),
                "EndpointSlice" => push(&mut objects.endpoint_slices, text),
                kind => match OwnerKind::from_kind(kind) {
                    Some(kind) => add_owner(&mut objects.owners, kind, text),
                    // Other kinds (ConfigMaps, CronJobs: a Job's owner
                    // reference names its CronJob, ...) are not needed here.
                    None => Ok(()),
                },
            };
            read.map_err(|source| ParseError::Item {
                index,
                kind: head.kind.into_owned(),
                source,
            })?;
        }
        let mut builder = Builder::new(&objects.namespaces, &objects.nodes, objects.owners);
        for (index, item) in pods {
            let pod: Pod = serde_json::from_str(item.get()).map_err(|source| ParseError::Item {
                index,
                kind: "Pod".into(),
                source,
            })?;
            builder.add_pod(&pod);
        }
        Ok(builder.finish(services, &objects.endpoint_slices))
    }
}

fn add_service(services: &mut Vec<ServiceEntry>, text: &str) -> serde_json::Result<()> {
    let service: Service = serde_json::from_str(text)?;
    services.extend(service_entry(&service));
    Ok(())
}

fn push<T: DeserializeOwned>(into: &mut Vec<T>, text: &str) -> serde_json::Result<()> {
    into.push(serde_json::from_str(text)?);
    Ok(())
}

/// An owner object, read for what [`Owners`] keeps: its pod template (most
/// of a Deployment or ReplicaSet) is skipped, never built.
#[derive(Debug, Deserialize)]
struct OwnerObject {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<OwnerSpec>,
}

#[derive(Debug, Deserialize)]
struct OwnerSpec {
    #[serde(default)]
    selector: Option<LabelSelector>,
}

fn add_owner(owners: &mut Owners, kind: OwnerKind, text: &str) -> serde_json::Result<()> {
    let object: OwnerObject = serde_json::from_str(text)?;
    let selector = object.spec.as_ref().and_then(|spec| spec.selector.as_ref());
    owners.add(kind, &object.metadata, selector);
    Ok(())
}
