//! Server-side apply of generated policies with field manager `netflow`
//! (`policy apply DIR`).
//!
//! Every file is read and checked before the first object is sent, so a
//! broken file applies nothing; then the server checks every object in a
//! dry run, so an object it refuses applies nothing either. Allows go in
//! before default-denies ([`Object::is_isolation_only`]), so traffic is
//! never cut between the two. Without `--force` a field another manager owns
//! (a hand edit with kubectl) is a conflict that is reported, not
//! overwritten.

use std::path::{Path, PathBuf};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};

use super::{
    cluster_wide::{ClusterWideObject, Tier},
    evaluate::{PolicyFileError, load_policy_objects},
};

/// The field manager netflow's applies carry.
pub const FIELD_MANAGER: &str = "netflow";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Read(#[from] PolicyFileError),
    #[error("cannot render a policy")]
    Render(#[from] serde_json::Error),
    #[error("{dir}: a {kind} has no metadata.name")]
    NoName { dir: PathBuf, kind: String },
    #[error("{dir}: {kind} {name} has no metadata.namespace (a namespaced policy needs one)")]
    NoNamespace {
        dir: PathBuf,
        kind: String,
        name: String,
    },
    #[error("{}: no policies to apply", .0.display())]
    Empty(PathBuf),
}

/// One object to apply.
pub struct Object {
    resource: ApiResource,
    /// `None` for the cluster-scoped tiers.
    namespace: Option<String>,
    name: String,
    body: serde_json::Value,
    /// The cluster-wide tier the object belongs to, if any.
    tier: Option<Tier>,
}

impl Object {
    /// `Kind namespace/name` (`Kind name` cluster-wide), as messages show it.
    pub fn shown(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }

    /// The namespace (`""` for a cluster-wide object).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    pub fn tier(&self) -> Option<Tier> {
        self.tier
    }

    /// Whether the policy only isolates (a default-deny) and allows nothing:
    /// such a policy goes in after the allows of its namespace, and not at
    /// all when one of them failed.
    pub fn is_isolation_only(&self) -> bool {
        if self.tier.is_some() {
            return false;
        }
        // A NetworkPolicy rule allows something even when empty (`{}`
        // allows everything); a CiliumNetworkPolicy's `{}` only turns on
        // default deny.
        let empty_rule_allows = self.resource.kind == "NetworkPolicy";
        let allows_something = |rules: &serde_json::Value| {
            rules.as_array().is_some_and(|rules| {
                rules.iter().any(|rule| {
                    empty_rule_allows || rule.as_object().is_some_and(|rule| !rule.is_empty())
                })
            })
        };
        let spec = &self.body["spec"];
        let specs = self.body["specs"].as_array().cloned().unwrap_or_default();
        std::iter::once(spec)
            .chain(specs.iter())
            .all(|spec| !allows_something(&spec["ingress"]) && !allows_something(&spec["egress"]))
    }
}

fn network_policy() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "NetworkPolicy"),
        "networkpolicies",
    )
}

fn cluster_wide_resource(object: &ClusterWideObject) -> ApiResource {
    let (version, kind, plural) = match object {
        ClusterWideObject::Cluster(_) => {
            ("v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies")
        }
        ClusterWideObject::Admin(policy) if policy.kind == "BaselineAdminNetworkPolicy" => (
            "v1alpha1",
            "BaselineAdminNetworkPolicy",
            "baselineadminnetworkpolicies",
        ),
        ClusterWideObject::Admin(_) => ("v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies"),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.networking.k8s.io", version, kind),
        plural,
    )
}

fn cilium_network_policy() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy"),
        "ciliumnetworkpolicies",
    )
}

/// Reads and checks every policy under `dir` (nothing is applied yet).
pub fn read(dir: &Path) -> Result<Vec<Object>, ApplyError> {
    let set = load_policy_objects(dir)?;
    let kubernetes = set.kubernetes_objects.into_iter().map(|policy| {
        serde_json::to_value(&policy)
            .map_err(ApplyError::from)
            .map(|body| (network_policy(), body, None))
    });
    let cilium = set.cilium.into_iter().map(|policy| {
        serde_json::to_value(&policy)
            .map_err(ApplyError::from)
            .map(|body| (cilium_network_policy(), body, None))
    });
    let cluster_wide =
        set.cluster_wide_objects
            .iter()
            .zip(&set.cluster_wide)
            .map(|(object, tiered)| {
                serde_json::to_value(object)
                    .map_err(ApplyError::from)
                    .map(|body| (cluster_wide_resource(object), body, Some(tiered.tier)))
            });
    let mut objects = Vec::new();
    for item in kubernetes.chain(cilium).chain(cluster_wide) {
        let (resource, body, tier) = item?;
        let field = |name: &str| {
            body["metadata"][name]
                .as_str()
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        let Some(name) = field("name") else {
            return Err(ApplyError::NoName {
                dir: dir.to_path_buf(),
                kind: resource.kind,
            });
        };
        let namespace = field("namespace");
        if namespace.is_none() && tier.is_none() {
            return Err(ApplyError::NoNamespace {
                dir: dir.to_path_buf(),
                kind: resource.kind,
                name,
            });
        }
        objects.push(Object {
            resource,
            namespace,
            name,
            body,
            tier,
        });
    }
    if objects.is_empty() {
        return Err(ApplyError::Empty(dir.to_path_buf()));
    }
    Ok(objects)
}

/// Server-side apply parameters: field manager netflow; `force` takes over
/// fields another manager owns.
pub fn params(dry_run: bool, force: bool) -> PatchParams {
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    params.dry_run = dry_run;
    params
}

/// Applies one object.
pub async fn apply(
    client: &Client,
    object: &Object,
    params: &PatchParams,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = match &object.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &object.resource),
        None => Api::all_with(client.clone(), &object.resource),
    };
    api.patch(&object.name, params, &Patch::Apply(&object.body))
        .await
        .map(|_| ())
}
