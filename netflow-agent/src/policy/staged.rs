//! Staged policies: a policy set judged against live traffic before it is
//! enforced. Each edge the agent records is replayed through the same
//! evaluator as `policy verify`; an edge the set would refuse is a
//! *denial*: what would break if the set were applied now.
//!
//! The denials are a bounded list (the most recently seen are kept), saved
//! in the agent's state directory, served beside its graph and merged
//! cluster-wide by `graph pull --denials`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::{
    evaluate::{Evaluator, Policies, PolicyFileError, load_policy_set},
    generate::proven,
    verify::{dns_names, pods_of, protocol_name, refusal},
};
use crate::{
    graph::{CommGraph, Edge},
    inventory::Inventory,
    model::Endpoint,
};

/// Denials kept at most; past it the least recently seen go.
pub const MAX_DENIALS: usize = 10_000;

/// The label (or annotation) that marks a cluster's policy object as
/// staged (`run --staged cluster`): judged, and, by the user's convention,
/// not applied by their enforcement pipeline while it carries it.
pub const STAGED_LABEL: &str = "netflow.io/staged";
/// How staged objects are marked, for people.
pub const STAGED_SELECTOR: &str = "netflow.io/staged=true";

/// Whether a cluster object is staged: [`STAGED_LABEL`] set to `true` as a
/// label or as an annotation (for pipelines that own the labels).
pub fn is_staged(meta: &kube::api::ObjectMeta) -> bool {
    let marked = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .and_then(|map| map.get(STAGED_LABEL))
            .is_some_and(|value| value == "true")
    };
    marked(&meta.labels) || marked(&meta.annotations)
}

/// A staged policy set: files (read again when they change), or the
/// cluster's objects labelled [`STAGED_LABEL`] (handed over as they are
/// listed, [`StagedSet::replace`]).
pub struct StagedSet {
    /// The files; `None` for the cluster's objects.
    source: Option<PathBuf>,
    policies: Policies,
    /// The newest modification time among the files, when last read.
    stamp: Option<SystemTime>,
}

impl StagedSet {
    /// Reads every policy under `source` (a directory or one file).
    pub fn load(source: &Path) -> Result<Self, PolicyFileError> {
        Ok(Self {
            source: Some(source.to_path_buf()),
            policies: load_policy_set(source)?,
            stamp: newest_change(source),
        })
    }

    /// The cluster's staged objects: none until the first list.
    pub fn from_cluster() -> Self {
        Self {
            source: None,
            policies: Policies::default(),
            stamp: None,
        }
    }

    /// The set as the cluster now lists it.
    pub fn replace(&mut self, policies: Policies) {
        self.policies = policies;
    }

    /// Reads the files again if one changed; `Ok(true)` when it did. A set
    /// that no longer reads is an error and the one held stays.
    pub fn reload_if_changed(&mut self) -> Result<bool, PolicyFileError> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let stamp = newest_change(source);
        if stamp == self.stamp {
            return Ok(false);
        }
        self.policies = load_policy_set(source)?;
        self.stamp = stamp;
        Ok(true)
    }

    /// Where the set comes from, for people.
    pub fn source(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => format!("the cluster's objects labelled or annotated {STAGED_SELECTOR}"),
        }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The edges among `edges` the set would refuse, each with why. Edges
    /// that never connected break nothing and are not judged; neither are
    /// edges whose ends the inventory cannot place.
    pub fn would_block<'g>(
        &self,
        graph: &CommGraph,
        inventory: &Inventory,
        edges: impl IntoIterator<Item = (&'g Endpoint, &'g Endpoint, &'g Edge)>,
    ) -> Vec<WouldBlock> {
        let dns = dns_names(graph);
        let evaluator = Evaluator::for_set(&self.policies, inventory, &dns);
        let mut blocked = Vec::new();
        for (client, server, edge) in edges {
            if !proven(edge, false) {
                continue;
            }
            let (clients, servers) = (pods_of(inventory, client), pods_of(inventory, server));
            if clients.is_empty() || servers.is_empty() {
                continue;
            }
            let protocol = protocol_name(&edge.key.protocol);
            let Some(reason) = refusal(&clients, &servers, |client_end, server_end| {
                evaluator.check(client_end, server_end, edge.key.port, &protocol)
            }) else {
                continue;
            };
            // The side that refuses is the namespace whose policies would
            // need to change.
            let policy_namespace = if reason.starts_with("egress") {
                client.namespace.clone()
            } else {
                server.namespace.clone()
            };
            blocked.push(WouldBlock {
                edge: edge_name(client, server, edge),
                refusal: Refusal {
                    client: client.id.clone(),
                    server: server.id.clone(),
                    protocol: protocol.to_ascii_lowercase(),
                    port: edge.key.port,
                    reason,
                    policy_namespace: policy_namespace.unwrap_or_default(),
                },
                connections: edge.stats.volume().connections,
                last_seen: edge.stats.last_seen,
            });
        }
        blocked
    }
}

/// `client -> server tcp/5432`, as `policy verify` names edges.
pub fn edge_name(client: &Endpoint, server: &Endpoint, edge: &Edge) -> String {
    format!(
        "{} -> {} {}/{}",
        client.label(),
        server.label(),
        protocol_name(&edge.key.protocol).to_ascii_lowercase(),
        edge.key.port
    )
}

/// Who an edge connects and why a staged set refuses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub client: String,
    pub server: String,
    pub protocol: String,
    pub port: u16,
    pub reason: String,
    /// The namespace whose policies refuse it (empty for none).
    pub policy_namespace: String,
}

/// One edge a staged set would refuse, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WouldBlock {
    pub edge: String,
    pub refusal: Refusal,
    /// The edge's connections and last seen (Unix seconds) when judged.
    pub connections: u64,
    pub last_seen: u64,
}

/// An edge the staged set would break, as kept and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    #[serde(flatten)]
    pub refusal: Refusal,
    /// Connections seen on the edge while the set would have refused it.
    pub connections: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// The denials file's version.
pub const DENIALS_VERSION: u32 = 1;

/// Every denial, by edge name: a node's, or the cluster's merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denials {
    pub version: u32,
    pub denials: BTreeMap<String, Denial>,
}

#[derive(Debug, thiserror::Error)]
pub enum DenialsError {
    #[error("{path} is not a denials file")]
    Invalid {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is a denials file of version {version}; this netflow reads {DENIALS_VERSION}")]
    Version { path: String, version: u32 },
}

impl Denials {
    pub fn new() -> Self {
        Self {
            version: DENIALS_VERSION,
            denials: BTreeMap::new(),
        }
    }

    /// Parses a denials file (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<Self, DenialsError> {
        let denials: Denials =
            serde_json::from_str(text).map_err(|source| DenialsError::Invalid {
                path: path.to_string(),
                source,
            })?;
        if denials.version != DENIALS_VERSION {
            return Err(DenialsError::Version {
                path: path.to_string(),
                version: denials.version,
            });
        }
        Ok(denials)
    }

    /// Notes `connections` more on an edge the set refuses, seen at `now`.
    pub fn note(&mut self, blocked: &WouldBlock, connections: u64, now: u64) {
        let denial = self
            .denials
            .entry(blocked.edge.clone())
            .or_insert_with(|| Denial {
                refusal: blocked.refusal.clone(),
                connections: 0,
                first_seen: now,
                last_seen: now,
            });
        // The latest reason (the set may have changed).
        denial.refusal.clone_from(&blocked.refusal);
        denial.connections += connections;
        denial.last_seen = denial.last_seen.max(now);
        self.bound();
    }

    /// Forgets the denials of edges the set now allows (it changed).
    pub fn keep_only(&mut self, still_blocked: &std::collections::BTreeSet<String>) {
        self.denials.retain(|edge, _| still_blocked.contains(edge));
    }

    /// Adds another node's denials (one edge seen on two nodes: counts
    /// added, times widened).
    pub fn merge(&mut self, other: &Denials) {
        for (edge, theirs) in &other.denials {
            match self.denials.get_mut(edge) {
                Some(ours) => {
                    ours.connections += theirs.connections;
                    ours.first_seen = ours.first_seen.min(theirs.first_seen);
                    if theirs.last_seen > ours.last_seen {
                        ours.last_seen = theirs.last_seen;
                        ours.refusal.clone_from(&theirs.refusal);
                    }
                }
                None => {
                    self.denials.insert(edge.clone(), theirs.clone());
                }
            }
        }
        self.bound();
    }

    /// At most [`MAX_DENIALS`]: the least recently seen go.
    fn bound(&mut self) {
        if self.denials.len() <= MAX_DENIALS {
            return;
        }
        let mut by_age: Vec<(u64, String)> = self
            .denials
            .iter()
            .map(|(edge, denial)| (denial.last_seen, edge.clone()))
            .collect();
        by_age.sort();
        let excess = self.denials.len() - MAX_DENIALS;
        for (_, edge) in by_age.into_iter().take(excess) {
            self.denials.remove(&edge);
        }
    }
}

/// The newest modification time of `source` and the files in it.
fn newest_change(source: &Path) -> Option<SystemTime> {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    let mut newest = modified(source);
    if let Ok(entries) = std::fs::read_dir(source) {
        for entry in entries.flatten() {
            newest = newest.max(modified(&entry.path()));
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_object_is_marked_by_label_or_annotation() {
        let meta = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| {
            let map = |pairs: &[(&str, &str)]| {
                Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            };
            kube::api::ObjectMeta {
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            }
        };
        assert!(is_staged(&meta(&[(STAGED_LABEL, "true")], &[])));
        assert!(is_staged(&meta(&[], &[(STAGED_LABEL, "true")])));
        assert!(!is_staged(&meta(&[(STAGED_LABEL, "false")], &[])));
        assert!(!is_staged(&meta(&[("netflow.io/other", "true")], &[])));
        assert!(!is_staged(&kube::api::ObjectMeta::default()));
    }

    fn blocked(edge: &str) -> WouldBlock {
        WouldBlock {
            edge: edge.into(),
            refusal: Refusal {
                client: "workload:a/Deployment/web".into(),
                server: "workload:b/Deployment/db".into(),
                protocol: "tcp".into(),
                port: 5432,
                reason: "ingress of b/db-0: no policy allows it".into(),
                policy_namespace: "b".into(),
            },
            connections: 1,
            last_seen: 1,
        }
    }

    #[test]
    fn denials_add_up_merge_and_stay_bounded() {
        let mut node_a = Denials::new();
        node_a.note(&blocked("a/web -> b/db tcp/5432"), 3, 100);
        node_a.note(&blocked("a/web -> b/db tcp/5432"), 2, 160);
        let denial = &node_a.denials["a/web -> b/db tcp/5432"];
        assert_eq!(
            (denial.connections, denial.first_seen, denial.last_seen),
            (5, 100, 160)
        );
        let mut node_b = Denials::new();
        node_b.note(&blocked("a/web -> b/db tcp/5432"), 1, 50);
        node_b.note(&blocked("a/web -> b/cache tcp/6379"), 1, 70);
        node_a.merge(&node_b);
        let denial = &node_a.denials["a/web -> b/db tcp/5432"];
        assert_eq!(
            (denial.connections, denial.first_seen, denial.last_seen),
            (6, 50, 160)
        );
        assert_eq!(node_a.denials.len(), 2);
        let text = serde_json::to_string(&node_a).unwrap();
        assert_eq!(Denials::parse(&text, "d.json").unwrap(), node_a);
        assert!(Denials::parse("{\"version\": 9, \"denials\": {}}", "d.json").is_err());

        let mut many = Denials::new();
        for n in 0..MAX_DENIALS + 5 {
            many.note(&blocked(&format!("edge {n}")), 1, n as u64);
        }
        assert_eq!(many.denials.len(), MAX_DENIALS);
        assert!(
            !many.denials.contains_key("edge 0"),
            "the oldest went first"
        );
        assert!(
            many.denials
                .contains_key(&format!("edge {}", MAX_DENIALS + 4))
        );
    }
}
