//! `netflow-agent policy apply DIR`: server-side apply of generated policies
//! with field manager `netflow`.
//!
//! Every file is read and checked before the first object is sent, so a
//! broken file applies nothing. Without `--force` a field another manager
//! owns (a hand edit with kubectl) is a conflict that is reported, not
//! overwritten.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};

use super::evaluate::load_policy_set;

/// The field manager netflow's applies carry.
pub const FIELD_MANAGER: &str = "netflow";

#[derive(Clone, Debug)]
pub struct ApplyOptions {
    pub kubeconfig: Option<PathBuf>,
    pub dry_run: bool,
    /// Take over fields another manager owns.
    pub force: bool,
}

/// One object to apply.
struct Object {
    resource: ApiResource,
    namespace: String,
    name: String,
    body: serde_json::Value,
}

fn network_policy() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "NetworkPolicy"),
        "networkpolicies",
    )
}

fn cilium_network_policy() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy"),
        "ciliumnetworkpolicies",
    )
}

/// Reads and checks every policy under `dir` (nothing is applied yet).
fn read(dir: &Path) -> anyhow::Result<Vec<Object>> {
    let set = load_policy_set(dir)?;
    let kubernetes = set.kubernetes.into_iter().map(|policy| {
        serde_json::to_value(&policy)
            .context("rendering a NetworkPolicy")
            .map(|body| (network_policy(), body))
    });
    let cilium = set
        .cilium
        .into_iter()
        .map(|body| Ok((cilium_network_policy(), body)));
    let mut objects = Vec::new();
    for item in kubernetes.chain(cilium) {
        let (resource, body) = item?;
        let field = |name: &str| {
            body["metadata"][name]
                .as_str()
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        let Some(name) = field("name") else {
            bail!(
                "{}: a {} has no metadata.name",
                dir.display(),
                resource.kind
            );
        };
        let Some(namespace) = field("namespace") else {
            bail!(
                "{}: {} {name} has no metadata.namespace (netflow applies namespaced policies only)",
                dir.display(),
                resource.kind
            );
        };
        objects.push(Object {
            resource,
            namespace,
            name,
            body,
        });
    }
    if objects.is_empty() {
        bail!("{}: no policies to apply", dir.display());
    }
    Ok(objects)
}

pub fn apply(dir: &Path, options: &ApplyOptions) -> anyhow::Result<()> {
    let objects = read(dir)?;
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let client = crate::inventory::live::client(options.kubeconfig.as_deref()).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = options.force;
        params.dry_run = options.dry_run;
        let suffix = if options.dry_run { " (dry run)" } else { "" };
        let mut failed = Vec::new();
        for object in &objects {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &object.namespace, &object.resource);
            let shown = format!(
                "{} {}/{}",
                object.resource.kind, object.namespace, object.name
            );
            match api
                .patch(&object.name, &params, &Patch::Apply(&object.body))
                .await
            {
                Ok(_) => println!("applied {shown}{suffix}"),
                Err(err) => {
                    eprintln!(
                        "netflow-agent: cannot apply {shown}: {}",
                        crate::inventory::live::describe(&err)
                    );
                    failed.push(shown);
                }
            }
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} policies were not applied: {}",
                failed.len(),
                objects.len(),
                failed.join(", ")
            );
        }
        eprintln!(
            "{} policies applied{suffix} with field manager {FIELD_MANAGER}",
            objects.len()
        );
        Ok(())
    })
}
