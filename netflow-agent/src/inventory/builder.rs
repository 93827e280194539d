//! The index built from objects: namespaces and nodes first, then pods one
//! at a time, then Services (which select among the pods).

use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    discovery::v1::EndpointSlice,
};

use super::{
    HashSet, Inventory, NAMESPACE_NAME_LABEL, NodeEntry, Owners, ServiceEntry,
    entries::{add_endpoint_slices, first_host, pod_entry},
    labels::{LabelSets, Labels},
};
use crate::model::labels_from_kubernetes;

/// The index, filled in steps: pods one at a time (a dump's pods are read
/// and indexed one by one, never all held as Kubernetes objects at once).
pub(crate) struct Builder {
    inventory: Inventory,
    owners: Owners,
    label_sets: LabelSets,
    node_names: HashSet<Arc<str>>,
}

impl Builder {
    pub(crate) fn new(namespaces: &[Namespace], nodes: &[Node], owners: Owners) -> Self {
        let mut inventory = Inventory::default();
        for namespace in namespaces {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            let mut labels = labels_from_kubernetes(namespace.metadata.labels.as_ref());
            // Kubernetes sets this label itself; dumps of old clusters may lack it.
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
            inventory.namespaces.insert(name, labels);
        }
        for node in nodes {
            let mut addresses: Vec<IpAddr> = node
                .status
                .as_ref()
                .and_then(|status| status.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|address| address.address.parse().ok())
                .collect();
            // With a bridge CNI (kubenet, flannel, the lab) the node reaches
            // its own pods from the bridge's address, the first of its pod
            // CIDR: that address is the node too.
            let spec = node.spec.as_ref();
            let pod_cidrs = spec
                .and_then(|spec| spec.pod_cidrs.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(spec.and_then(|spec| spec.pod_cidr.clone()));
            for cidr in pod_cidrs {
                if let Some(gateway) = first_host(&cidr)
                    && !addresses.contains(&gateway)
                {
                    addresses.push(gateway);
                }
            }
            for address in &addresses {
                inventory
                    .nodes_by_ip
                    .entry(*address)
                    .or_insert(inventory.nodes.len());
            }
            inventory.nodes.push(NodeEntry {
                name: node.metadata.name.clone().unwrap_or_default(),
                addresses,
            });
        }
        Self {
            inventory,
            owners,
            label_sets: LabelSets::default(),
            node_names: HashSet::default(),
        }
    }

    pub(crate) fn add_pod(&mut self, pod: &Pod) {
        let inventory = &mut self.inventory;
        let mut entry = pod_entry(pod, &self.owners, &mut self.label_sets);
        // One namespace name and one node name for all their pods.
        if let Some((shared, _)) = inventory.pods_by_namespace.get_key_value(&*entry.namespace) {
            entry.namespace = shared.clone();
        }
        if let Some(node) = &mut entry.node {
            match self.node_names.get(node) {
                Some(shared) => *node = shared.clone(),
                None => {
                    self.node_names.insert(node.clone());
                }
            }
        }
        // One workload for all its pods and the indexes that name it.
        if let Some((shared, _)) = inventory.pods_by_workload.get_key_value(&*entry.workload) {
            entry.workload = shared.clone();
        }
        if !inventory.selectors.contains_key(&entry.workload) {
            let selector = self.owners.selector_of(&entry.workload, &entry.labels);
            let selector = self.label_sets.intern(selector);
            inventory.selectors.insert(entry.workload.clone(), selector);
        }
        let index = inventory.pods.len();
        inventory.pods_by_uid.insert(entry.uid.clone(), index);
        for ip in &entry.ips {
            inventory.pods_by_ip.entry(*ip).or_default().push(index);
        }
        inventory
            .pods_by_namespace
            .entry(entry.namespace.clone())
            .or_default()
            .push(index);
        inventory
            .pods_by_workload
            .entry(entry.workload.clone())
            .or_default()
            .push(index);
        inventory.pods.push(entry);
    }

    /// Adds the Services (read into entries: a dump reads them one at a
    /// time, never all held as Kubernetes objects) and ends the index.
    pub(crate) fn finish(
        self,
        services: impl IntoIterator<Item = ServiceEntry>,
        endpoint_slices: &[EndpointSlice],
    ) -> Inventory {
        let mut inventory = self.inventory;
        let mut label_sets = self.label_sets;
        for mut entry in services {
            entry.selector = label_sets.intern(Labels::unwrap_or_clone(entry.selector));
            if entry.selector.is_empty() {
                add_endpoint_slices(&mut entry, endpoint_slices);
            }
            entry.selected = inventory.selecting(&entry.namespace, &entry.selector);
            for ip in &entry.cluster_ips {
                inventory
                    .services_by_ip
                    .entry(*ip)
                    .or_insert(inventory.services.len());
            }
            inventory.services.push(entry);
        }
        // Kept for as long as the inventory is current: no growth slack.
        inventory.pods.shrink_to_fit();
        inventory.services.shrink_to_fit();
        inventory
    }
}
