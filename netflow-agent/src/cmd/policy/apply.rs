//! `policy apply`: server-side apply of a policy directory, all or nothing.
//!
//! 1. Every file is read and checked (nothing sent on a broken one).
//! 2. The server checks every object in a dry run; one refusal applies
//!    nothing. `--dry-run` stops here.
//! 3. The cluster admin's Admin tier goes in first (the namespaces' egress
//!    policies rely on its DNS allow): if it fails, nothing else is applied.
//! 4. The allows go in next, then the default-denies; a namespace where an
//!    allow failed gets no default-deny, so a half-applied namespace keeps
//!    its traffic.
//! 5. The Baseline tier (a cluster-wide default-deny) goes in last, and only
//!    when everything before it went in.

use std::{collections::BTreeSet, path::Path};

use anyhow::bail;
use kube::Client;

use crate::policy::{
    apply::{FIELD_MANAGER, Object, apply, params, read},
    cluster_wide::Tier,
};

pub fn run(
    dir: &Path,
    kubeconfig: Option<&Path>,
    dry_run: bool,
    force: bool,
) -> anyhow::Result<()> {
    let objects = read(dir)?;
    crate::cmd::runtime()?.block_on(async {
        let client = crate::kube::client(kubeconfig).await?;
        let refused = apply_each(&client, objects.iter(), true, force).await;
        if !refused.is_empty() {
            bail!(
                "the server refused {} of {} policies in a dry run; nothing was applied: {}",
                refused.len(),
                objects.len(),
                refused.join(", ")
            );
        }
        if dry_run {
            for object in &objects {
                progress(&format!("applied {} (dry run)", object.shown()));
            }
            eprintln!(
                "{} policies checked by the server (dry run), field manager {FIELD_MANAGER}",
                objects.len()
            );
            return Ok(());
        }
        let in_tier = |tier| move |object: &&Object| object.tier() == Some(tier);
        let admin: Vec<&Object> = objects.iter().filter(in_tier(Tier::Admin)).collect();
        let baseline: Vec<&Object> = objects.iter().filter(in_tier(Tier::Baseline)).collect();
        let failed_admin = apply_each(&client, admin.iter().copied(), false, force).await;
        if !failed_admin.is_empty() {
            bail!(
                "the Admin tier was not applied ({}); nothing else was, as the namespaces' policies rely on it",
                failed_admin.join(", ")
            );
        }
        let (denies, allows): (Vec<&Object>, Vec<&Object>) = objects
            .iter()
            .filter(|object| object.tier().is_none())
            .partition(|object| object.is_isolation_only());
        let failed = apply_each(&client, allows.iter().copied(), false, force).await;
        let failed_namespaces: BTreeSet<&str> = allows
            .iter()
            .filter(|object| failed.contains(&object.shown()))
            .map(|object| object.namespace())
            .collect();
        let (mut held, denies): (Vec<&Object>, Vec<&Object>) = denies
            .into_iter()
            .partition(|object| failed_namespaces.contains(object.namespace()));
        for object in &held {
            eprintln!(
                "netflow-agent: not applied {}: an allow of namespace {} failed, and isolating it now would cut traffic",
                object.shown(),
                object.namespace()
            );
        }
        let failed_denies = apply_each(&client, denies.into_iter(), false, force).await;
        if failed.is_empty() && failed_denies.is_empty() && held.is_empty() {
            let failed_baseline = apply_each(&client, baseline.iter().copied(), false, force).await;
            if !failed_baseline.is_empty() {
                bail!(
                    "the Baseline tier was not applied: {}",
                    failed_baseline.join(", ")
                );
            }
        } else {
            for object in &baseline {
                eprintln!(
                    "netflow-agent: not applied {}: a namespaced policy did not go in, and a cluster-wide default-deny now would cut its traffic",
                    object.shown()
                );
            }
            held.extend(baseline.iter().copied());
        }
        if !failed.is_empty() || !failed_denies.is_empty() || !held.is_empty() {
            bail!(
                "{} of {} policies were not applied ({} failed, {} default-denies held back): {}",
                failed.len() + failed_denies.len() + held.len(),
                objects.len(),
                failed.len() + failed_denies.len(),
                held.len(),
                failed
                    .iter()
                    .chain(&failed_denies)
                    .cloned()
                    .chain(held.iter().map(|object| object.shown()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        eprintln!(
            "{} policies applied with field manager {FIELD_MANAGER}",
            objects.len()
        );
        Ok(())
    })
}

/// Applies each object (or asks for a dry run); prints what was applied and
/// why each failure failed; returns the failures (as `Kind ns/name`).
async fn apply_each<'a>(
    client: &Client,
    objects: impl Iterator<Item = &'a Object>,
    dry_run: bool,
    force: bool,
) -> Vec<String> {
    let params = params(dry_run, force);
    let mut failed = Vec::new();
    for object in objects {
        let shown = object.shown();
        match apply(client, object, &params).await {
            Ok(()) if dry_run => {}
            Ok(()) => progress(&format!("applied {shown}")),
            Err(err) => {
                eprintln!(
                    "netflow-agent: cannot apply {shown}{}: {}",
                    if dry_run { " (dry run)" } else { "" },
                    crate::kube::describe(&err)
                );
                failed.push(shown);
            }
        }
    }
    failed
}

/// One line of progress on stdout. Not being able to write it (a closed
/// pipe) must not stop an apply halfway, as `println!`'s panic would: the
/// summary and every failure go to stderr.
fn progress(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}
