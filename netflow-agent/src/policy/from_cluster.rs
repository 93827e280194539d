//! The policies a cluster enforces now, read through the API
//! (`policy verify --against-cluster`): NetworkPolicies, and where their
//! CRDs are installed, CiliumNetworkPolicies and the cluster admin's tiers
//! (ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy).
//! Each object is read as a policy file's would be: one netflow cannot judge
//! is refused by name, never skipped (skipping a deny would report traffic
//! as allowed that is not).

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};

use super::evaluate::{Policies, PolicyFileError};

/// The kinds asked for: group, version, kind, plural.
pub const KINDS: [(&str, &str, &str, &str); 5] = [
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    (
        "cilium.io",
        "v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
        "clusternetworkpolicies",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "AdminNetworkPolicy",
        "adminnetworkpolicies",
    ),
    (
        "policy.networking.k8s.io",
        "v1alpha1",
        "BaselineAdminNetworkPolicy",
        "baselineadminnetworkpolicies",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ClusterPoliciesError {
    #[error("cannot list the cluster's {kind}s")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read a {kind} the cluster returned")]
    Decode {
        kind: &'static str,
        #[source]
        source: serde_norway::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
}

/// What the cluster has, and which kinds it does not serve (no CRD).
#[derive(Debug, Default)]
pub struct ClusterPolicies {
    pub policies: Policies,
    /// `(kind, count)` for each kind the cluster serves.
    pub read: Vec<(&'static str, usize)>,
    /// Kinds whose API the cluster does not have.
    pub not_installed: Vec<&'static str>,
}

pub async fn read(client: &Client) -> Result<ClusterPolicies, ClusterPoliciesError> {
    read_matching(client, |_| true).await
}

/// As [`read`], only the objects `keep` keeps (the staged ones: `run
/// --staged cluster`). The lists are served from the API server's cache
/// (`resourceVersion=0`): an agent on every node asks again and again, and
/// a staged set a few seconds old judges as well.
pub async fn read_matching(
    client: &Client,
    keep: impl Fn(&kube::api::ObjectMeta) -> bool,
) -> Result<ClusterPolicies, ClusterPoliciesError> {
    let mut found = ClusterPolicies::default();
    let params = ListParams::default().match_any();
    for (group, version, kind, plural) in KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = match api.list(&params).await {
            Ok(list) => list,
            // The API server has no such resource: the CRD is not installed.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                found.not_installed.push(kind);
                continue;
            }
            Err(source) => return Err(ClusterPoliciesError::List { kind, source }),
        };
        let mut kept = 0;
        for object in list.items.iter().filter(|object| keep(&object.metadata)) {
            kept += 1;
            let shown = format!(
                "the cluster's {kind} {}{}",
                object
                    .metadata
                    .namespace
                    .as_deref()
                    .map(|namespace| format!("{namespace}/"))
                    .unwrap_or_default(),
                object.metadata.name.as_deref().unwrap_or_default()
            );
            let mut value = serde_norway::to_value(object)
                .map_err(|source| ClusterPoliciesError::Decode { kind, source })?;
            // Items of a list may come without their type.
            if let Some(map) = value.as_mapping_mut() {
                map.insert("apiVersion".into(), resource.api_version.clone().into());
                map.insert("kind".into(), kind.into());
            }
            found.policies.add(value, &shown, 0)?;
        }
        found.read.push((kind, kept));
    }
    Ok(found)
}
