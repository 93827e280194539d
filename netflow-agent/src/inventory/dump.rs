//! The inventory from a dump: `kubectl get ... -A -o json` (a `v1` `List`).

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

use serde::{
    Deserialize, Deserializer,
    de::{
        DeserializeOwned, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
    },
};
use serde_json::value::RawValue;

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{Builder, Inventory, Objects, OwnerKind, Owners, entries::service_entry};

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

/// The list, read item by item: each is handed on as it is read (a large
/// cluster's dump holds a hundred thousand), and read into its typed object
/// straight from the dump, never into a `serde_json::Value` tree (a tree of
/// a whole cluster's dump is many times the dump's size).
struct ListReader<'f, F> {
    each: &'f mut F,
    /// Why `each` refused an item: serde carries only text.
    refused: &'f mut Option<ParseError>,
}

impl<'de, F> Visitor<'de> for ListReader<'_, F>
where
    F: FnMut(usize, Item<'de>) -> Result<(), ParseError>,
{
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a Kubernetes List")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut list: A) -> Result<(), A::Error> {
        while let Some(key) = list.next_key::<Cow<'de, str>>()? {
            if key == "items" {
                list.next_value_seed(ItemsReader {
                    each: &mut *self.each,
                    refused: &mut *self.refused,
                })?;
            } else {
                list.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The list's `items`, handed to `each` one by one.
struct ItemsReader<'f, F> {
    each: &'f mut F,
    refused: &'f mut Option<ParseError>,
}

impl<'de, F> DeserializeSeed<'de> for ItemsReader<'_, F>
where
    F: FnMut(usize, Item<'de>) -> Result<(), ParseError>,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, items: D) -> Result<(), D::Error> {
        items.deserialize_seq(self)
    }
}

impl<'de, F> Visitor<'de> for ItemsReader<'_, F>
where
    F: FnMut(usize, Item<'de>) -> Result<(), ParseError>,
{
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a list of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(item) = items.next_element::<Item<'de>>()? {
            if let Err(refused) = (self.each)(index, item) {
                *self.refused = Some(refused);
                return Err(A::Error::custom("an item was refused"));
            }
            index += 1;
        }
        Ok(())
    }
}

/// Reads the list in `text`, handing each item to `each`.
fn read_items<'de>(
    text: &'de str,
    mut each: impl FnMut(usize, Item<'de>) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    let mut refused = None;
    let mut list = serde_json::Deserializer::from_str(text);
    let read = list
        .deserialize_map(ListReader {
            each: &mut each,
            refused: &mut refused,
        })
        .and_then(|()| list.end());
    match refused {
        Some(refused) => Err(refused),
        None => read.map_err(ParseError::List),
    }
}

/// An item read once: its kind, and its parts as text until the kind says
/// what they are. Reading the kind alone first read every item through
/// twice more (a fifth of loading a dump); the parts netflow reads are
/// these, whatever the kind.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    spec: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    /// An EndpointSlice's.
    #[serde(borrow, rename = "addressType")]
    address_type: Option<&'a RawValue>,
    #[serde(borrow)]
    endpoints: Option<&'a RawValue>,
    #[serde(borrow)]
    ports: Option<&'a RawValue>,
}

/// A part of an item, typed; an absent part as its default (`null` too).
fn part<T: DeserializeOwned + Default>(raw: Option<&RawValue>) -> serde_json::Result<T> {
    match raw {
        Some(raw) => Ok(serde_json::from_str::<Option<T>>(raw.get())?.unwrap_or_default()),
        None => Ok(T::default()),
    }
}

impl Item<'_> {
    fn pod(&self) -> serde_json::Result<Pod> {
        Ok(Pod {
            metadata: part(self.metadata)?,
            spec: part(self.spec)?,
            status: part(self.status)?,
        })
    }

    fn service(&self) -> serde_json::Result<Service> {
        Ok(Service {
            metadata: part(self.metadata)?,
            spec: part(self.spec)?,
            status: part(self.status)?,
        })
    }

    fn node(&self) -> serde_json::Result<Node> {
        Ok(Node {
            metadata: part(self.metadata)?,
            spec: part(self.spec)?,
            status: part(self.status)?,
        })
    }

    fn namespace(&self) -> serde_json::Result<Namespace> {
        Ok(Namespace {
            metadata: part(self.metadata)?,
            spec: part(self.spec)?,
            status: part(self.status)?,
        })
    }

    fn endpoint_slice(&self) -> serde_json::Result<EndpointSlice> {
        let address_type = self
            .address_type
            .ok_or_else(|| serde::de::Error::missing_field("addressType"))?;
        Ok(EndpointSlice {
            metadata: part(self.metadata)?,
            address_type: serde_json::from_str(address_type.get())?,
            endpoints: part(self.endpoints)?,
            ports: part(self.ports)?,
        })
    }
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
        let mut pods = Vec::new();
        let mut objects = Objects::default();
        let mut services = Vec::new();
        read_items(text, |index, item| {
            if item.kind == "Pod" {
                // Read in the second pass.
                pods.push((index, item));
                return Ok(());
            }
            let read = match item.kind.as_ref() {
                "Service" => item
                    .service()
                    .map(|service| services.extend(service_entry(&service))),
                "Node" => item.node().map(|node| objects.nodes.push(node)),
                "Namespace" => item
                    .namespace()
                    .map(|namespace| objects.namespaces.push(namespace)),
                "EndpointSlice" => item
                    .endpoint_slice()
                    .map(|slice| objects.endpoint_slices.push(slice)),
                kind => match OwnerKind::from_kind(kind) {
                    Some(kind) => add_owner(&mut objects.owners, kind, &item),
                    // Other kinds (ConfigMaps, CronJobs: a Job's owner
                    // reference names its CronJob, ...) are not needed here.
                    None => Ok(()),
                },
            };
            read.map_err(|source| ParseError::Item {
                index,
                kind: item.kind.into_owned(),
                source,
            })
        })?;
        let mut builder = Builder::new(&objects.namespaces, &objects.nodes, objects.owners);
        for (index, item) in pods {
            let pod = item.pod().map_err(|source| ParseError::Item {
                index,
                kind: "Pod".into(),
                source,
            })?;
            builder.add_pod(&pod);
        }
        Ok(builder.finish(services, &objects.endpoint_slices))
    }
}

/// An owner's spec, read for what [`Owners`] keeps: its pod template (most
/// of a Deployment or ReplicaSet) is skipped, never built.
#[derive(Debug, Default, Deserialize)]
struct OwnerSpec {
    #[serde(default)]
    selector: Option<LabelSelector>,
}

fn add_owner(owners: &mut Owners, kind: OwnerKind, item: &Item<'_>) -> serde_json::Result<()> {
    let metadata: ObjectMeta = part(item.metadata)?;
    let spec: OwnerSpec = part(item.spec)?;
    owners.add(kind, &metadata, spec.selector.as_ref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_kind_is_read_wherever_it_stands_and_its_parts_by_it() {
        // `kind` after the parts it names, a null status, and kinds
        // netflow does not read: each item read in one pass.
        let text = r#"{"kind":"List","items":[
          {"metadata":{"name":"shop"},"kind":"Namespace","status":null},
          {"metadata":{"name":"web-abc","namespace":"shop","ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"d"}]},
           "spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"spec":{"containers":[{"name":"c"}]}}},"kind":"ReplicaSet"},
          {"kind":"ConfigMap","metadata":{"name":"x","namespace":"shop"},"data":{"spec":"not a spec"}},
          {"spec":{"containers":[{"name":"c","ports":[{"containerPort":8080}]}]},
           "status":{"podIP":"10.244.0.5","startTime":"2026-11-01T00:00:00Z"},
           "metadata":{"name":"web-abc-1","namespace":"shop","uid":"u1","labels":{"app":"web"},
             "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-abc","uid":"r"}]},
           "kind":"Pod"},
          {"kind":"Service","metadata":{"name":"web","namespace":"shop"},
           "spec":{"clusterIP":"10.96.0.7","selector":{"app":"web"},"ports":[{"port":80,"targetPort":8080}]}}
        ]}"#;
        let inventory = Inventory::parse(text).unwrap();
        assert_eq!(inventory.pods.len(), 1);
        let workload = &inventory.pods[0].workload;
        assert_eq!(
            (&*workload.namespace, &*workload.kind, &*workload.name),
            ("shop", "Deployment", "web"),
            "the ReplicaSet read before the pod names its Deployment"
        );
        assert_eq!(inventory.services.len(), 1);
        assert!(inventory.namespaces.contains_key("shop"));
    }

    #[test]
    fn a_bad_part_names_its_item_and_kind() {
        let cases = [
            (
                r#"{"kind":"List","items":[{"kind":"Namespace","metadata":{"name":"a"}},
                   {"kind":"EndpointSlice","metadata":{"name":"s"},"endpoints":[]}]}"#,
                "item 1 (EndpointSlice)",
                "addressType",
            ),
            (
                r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":7}}]}"#,
                "item 0 (Pod)",
                "invalid type",
            ),
        ];
        for (text, item, cause) in cases {
            let err = Inventory::parse(text).unwrap_err();
            let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(
                message.starts_with(item) && message.contains(cause),
                "{message}"
            );
        }
    }
}
