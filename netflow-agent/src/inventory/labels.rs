//! Label maps shared by everything that carries the same labels.
//!
//! A cluster's pods carry few distinct label sets: the replicas of one
//! workload carry the same, and a Service's selector is usually its
//! workload's selector. At 20 000 pods the inventory's label maps were most
//! of the daemon's memory; each distinct set is held once and shared (and as
//! a sorted list, see `model::LabelMap`).

use std::sync::Arc;

use super::HashSet;

use crate::model::LabelMap;

/// A label map (pod labels, a selector's `matchLabels`), shared.
pub type Labels = Arc<LabelMap>;

/// The distinct label sets met while an index is built.
#[derive(Default)]
pub(crate) struct LabelSets(HashSet<Labels>);

impl LabelSets {
    /// The shared copy of `labels`: the one met before, else this one.
    pub(crate) fn intern(&mut self, labels: LabelMap) -> Labels {
        if let Some(existing) = self.0.get(&labels) {
            return existing.clone();
        }
        let labels = Arc::new(labels);
        self.0.insert(labels.clone());
        labels
    }
}
