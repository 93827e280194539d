//! Policy files: every NetworkPolicy, CiliumNetworkPolicy and cluster-wide
//! policy (ClusterNetworkPolicy, AdminNetworkPolicy,
//! BaselineAdminNetworkPolicy) in a directory of YAML files (or one file,
//! YAML or JSON), each refused by name when it cannot be read, is of another
//! kind, or does not fit its schema.

use std::{cell::Cell, path::Path};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize as _, de::DeserializeSeed as _};

use super::{
    document::{Document, DocumentSeed},
    network_policy::CompiledNetworkPolicy,
    selector::SelectorInterner,
};
use crate::{
    parallel::map_in_order,
    policy::{
        cilium::{self, CiliumNetworkPolicy},
        cluster_wide::{ClusterWideObject, TieredPolicy, v1alpha1, v1alpha2},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not valid YAML: {message}")]
    Yaml {
        path: String,
        index: usize,
        message: String,
    },
    #[error(
        "{path}: document {index} is a {kind}, which netflow does not evaluate (only networking.k8s.io/v1 NetworkPolicy, cilium.io/v2 CiliumNetworkPolicy, policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy and v1alpha1 AdminNetworkPolicy, BaselineAdminNetworkPolicy)"
    )]
    UnknownKind {
        path: String,
        index: usize,
        kind: String,
    },
    #[error("{path}: document {index} is not a valid {kind}: {message}")]
    Invalid {
        path: String,
        index: usize,
        kind: &'static str,
        message: String,
    },
}

/// Reads every policy in the `.yaml`/`.yml` files of `dir` (or the one file
/// `dir` names, YAML or JSON) to evaluate them. A `v1` `List` (what `kubectl
/// get networkpolicies -A -o yaml` prints) is read item by item.
pub fn load_policy_set(dir: &Path) -> Result<Policies, PolicyFileError> {
    load(dir, false)
}

/// Like [`load_policy_set`], keeping each NetworkPolicy as written too (in
/// [`Policies::kubernetes_objects`]), to send it to a cluster.
pub fn load_policy_objects(dir: &Path) -> Result<Policies, PolicyFileError> {
    load(dir, true)
}

fn load(dir: &Path, keep_objects: bool) -> Result<Policies, PolicyFileError> {
    let read_error = |source| PolicyFileError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    } else {
        files.push(dir.to_path_buf());
    }
    files.sort();
    // Reading YAML is most of a large set's load (a generated set is a file
    // per namespace): files are read on every core, each thread sharing
    // selectors across the files it reads, and put together in file order,
    // so the set (and the first error) is the same however they were shared.
    let (parts, interners) = map_in_order(&files, SelectorInterner::default, |selectors, path| {
        let mut part = Policies {
            keep_objects,
            selectors: std::mem::take(selectors),
            ..Policies::default()
        };
        let read = read_file(path, &mut part);
        *selectors = std::mem::take(&mut part.selectors);
        read.map(|()| part)
    });
    let mut set = Policies {
        keep_objects,
        selectors: interners.into_iter().next().unwrap_or_default(),
        ..Policies::default()
    };
    for part in parts {
        set.append(part?);
    }
    Ok(set)
}

fn read_file(path: &Path, part: &mut Policies) -> Result<(), PolicyFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
        path: shown.clone(),
        source,
    })?;
    part.add_text(&text, &shown)
}

impl Policies {
    /// Adds every object of the YAML (or JSON) documents of `text`, read
    /// from `source` (a file's name, for errors); a `v1` `List` item by item.
    pub fn add_text(&mut self, text: &str, source: &str) -> Result<(), PolicyFileError> {
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let typed = Cell::new(false);
            // The typed object is built only to be kept.
            let compile = (!self.keep_objects).then_some(&mut self.selectors);
            let read = DocumentSeed {
                typed: &typed,
                compile,
            }
            .deserialize(document);
            let value = match read {
                Ok(Document::NetworkPolicy(policy)) => {
                    self.push_network_policy(*policy);
                    continue;
                }
                Ok(Document::Compiled(policy)) => {
                    self.kubernetes.push(*policy);
                    continue;
                }
                Ok(Document::Value(value)) => value,
                Err(err) if typed.get() => {
                    // A typed read stops at the first field that does not
                    // fit, before the document's end, where a YAML syntax
                    // error is reported: that error comes first.
                    let syntax = serde_norway::Deserializer::from_str(text)
                        .nth(index)
                        .and_then(|document| serde::de::IgnoredAny::deserialize(document).err());
                    return Err(match syntax {
                        Some(syntax) => PolicyFileError::Yaml {
                            path: source.to_string(),
                            index,
                            message: syntax.to_string(),
                        },
                        None => PolicyFileError::Invalid {
                            path: source.to_string(),
                            index,
                            kind: "NetworkPolicy",
                            message: err.to_string(),
                        },
                    });
                }
                Err(err) => {
                    return Err(PolicyFileError::Yaml {
                        path: source.to_string(),
                        index,
                        message: err.to_string(),
                    });
                }
            };
            if value.is_null() {
                continue;
            }
            let items = if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
                value
                    .get("items")
                    .and_then(|items| items.as_sequence())
                    .cloned()
                    .unwrap_or_default()
            } else {
                vec![value]
            };
            for item in items {
                self.add(item, source, index)?;
            }
        }
        Ok(())
    }

    /// Adds one object, read from document `index` of `source` (a file, or
    /// what the cluster was asked for); refused by name when it is of
    /// another kind or does not fit its schema.
    pub fn add(
        &mut self,
        item: serde_norway::Value,
        source: &str,
        index: usize,
    ) -> Result<(), PolicyFileError> {
        let kind = item
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("document without a kind")
            .to_string();
        let api = item
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let invalid = |kind: &'static str, message: String| PolicyFileError::Invalid {
            path: source.to_string(),
            index,
            kind,
            message,
        };
        match (api.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let policy: NetworkPolicy = serde_norway::from_value(item)
                    .map_err(|err| invalid("NetworkPolicy", err.to_string()))?;
                self.push_network_policy(policy);
            }
            (cilium::API_VERSION, cilium::KIND) => {
                let policy: CiliumNetworkPolicy = serde_norway::from_value(item)
                    .map_err(|err| invalid(cilium::KIND, err.to_string()))?;
                self.cilium.push(policy);
            }
            (v1alpha2::API_VERSION, v1alpha2::KIND) => {
                let policy: v1alpha2::ClusterNetworkPolicy = serde_norway::from_value(item)
                    .map_err(|err| invalid(v1alpha2::KIND, err.to_string()))?;
                let tiered = policy
                    .tiered()
                    .map_err(|message| invalid(v1alpha2::KIND, message))?;
                self.cluster_wide.push(tiered);
                self.cluster_wide_objects
                    .push(ClusterWideObject::Cluster(policy));
            }
            (v1alpha1::API_VERSION, v1alpha1::ADMIN_KIND | v1alpha1::BASELINE_KIND) => {
                let kind = if kind == v1alpha1::ADMIN_KIND {
                    v1alpha1::ADMIN_KIND
                } else {
                    v1alpha1::BASELINE_KIND
                };
                let policy: v1alpha1::AdminNetworkPolicy =
                    serde_norway::from_value(item).map_err(|err| invalid(kind, err.to_string()))?;
                let tiered = policy.tiered().map_err(|message| invalid(kind, message))?;
                self.cluster_wide.push(tiered);
                self.cluster_wide_objects
                    .push(ClusterWideObject::Admin(policy));
            }
            _ => {
                return Err(PolicyFileError::UnknownKind {
                    path: source.to_string(),
                    index,
                    kind: format!("{kind} ({api})"),
                });
            }
        }
        Ok(())
    }
}

/// Every policy of a set of files, by flavor.
#[derive(Debug, Default)]
pub struct Policies {
    /// NetworkPolicies as the evaluator reads them...
    pub kubernetes: Vec<CompiledNetworkPolicy>,
    /// ... and as they were written, in the same order, when loaded to be
    /// sent to a cluster ([`load_policy_objects`]); empty otherwise (a
    /// million-peer set is a few GB as k8s-openapi objects).
    pub kubernetes_objects: Vec<NetworkPolicy>,
    keep_objects: bool,
    /// Shares equal selectors between the compiled policies.
    selectors: SelectorInterner,
    pub cilium: Vec<CiliumNetworkPolicy>,
    /// The Admin and Baseline tiers, of either API version, as the
    /// evaluator reads them...
    pub cluster_wide: Vec<TieredPolicy>,
    /// ... and as they were written (for `apply`), in the same order.
    pub cluster_wide_objects: Vec<ClusterWideObject>,
}

impl Policies {
    /// A set of these NetworkPolicies, kept as written too.
    pub fn from_network_policies(policies: impl IntoIterator<Item = NetworkPolicy>) -> Self {
        let mut set = Policies {
            keep_objects: true,
            ..Policies::default()
        };
        for policy in policies {
            set.push_network_policy(policy);
        }
        set
    }

    /// Adds `other`'s policies after this set's.
    fn append(&mut self, mut other: Policies) {
        self.kubernetes.append(&mut other.kubernetes);
        self.kubernetes_objects
            .append(&mut other.kubernetes_objects);
        self.cilium.append(&mut other.cilium);
        self.cluster_wide.append(&mut other.cluster_wide);
        self.cluster_wide_objects
            .append(&mut other.cluster_wide_objects);
    }

    fn push_network_policy(&mut self, policy: NetworkPolicy) {
        self.kubernetes
            .push(CompiledNetworkPolicy::compile(&policy, &mut self.selectors));
        if self.keep_objects {
            self.kubernetes_objects.push(policy);
        }
    }

    pub fn len(&self) -> usize {
        self.kubernetes.len() + self.cilium.len() + self.cluster_wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
