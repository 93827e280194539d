//! The policies the lab generates from its audit recording: every flavor,
//! every cluster baseline mode, each written where `policy generate` would
//! write it and read back as `policy verify` reads it. The lab judges its
//! attack replay and its netassert assertions against each.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;

use netflow_agent::{
    graph::CommGraph,
    inventory::{Inventory, WorkloadRef},
    policy::{
        evaluate::{End, Evaluator, Policies, load_policy_set},
        generate::{ClusterBaseline, GenerateOptions, cilium, kubernetes},
        netassert::{self, Target, TestCase},
        verify::{VerifyReport, dns_names, refusal, verify},
        write::write_dir,
    },
};

/// One generated policy set.
pub struct Variant {
    /// `kubernetes`, `kubernetes+cnp`, `kubernetes+anp` or `cilium`.
    pub name: &'static str,
    pub policies: Policies,
}

/// Generates, writes and reads back every variant: `OUT/policies`
/// (NetworkPolicies, each namespace its own baseline), `OUT/policies-cnp`,
/// `OUT/policies-anp` (the baseline in the cluster admin's tiers) and
/// `OUT/policies-cilium`.
pub fn generate_all(
    graph: &CommGraph,
    inventory: &Inventory,
    out: &Path,
) -> anyhow::Result<Vec<Variant>> {
    let with = |cluster_baseline| GenerateOptions {
        cluster_baseline,
        ..GenerateOptions::default()
    };
    let mut variants = Vec::new();
    for (name, dir, baseline) in [
        ("kubernetes", "policies", ClusterBaseline::None),
        (
            "kubernetes+cnp",
            "policies-cnp",
            ClusterBaseline::ClusterNetworkPolicy,
        ),
        (
            "kubernetes+anp",
            "policies-anp",
            ClusterBaseline::AdminNetworkPolicy,
        ),
    ] {
        let dir = out.join(dir);
        let set = kubernetes::generate(graph, inventory, &with(baseline))?;
        rewrite_dir(&dir, |dir| Ok(write_dir(&set, dir)?))?;
        variants.push(read_back(name, dir)?);
    }
    let dir = out.join("policies-cilium");
    let set = cilium::generate(graph, inventory, &with(ClusterBaseline::None))?;
    rewrite_dir(&dir, |dir| Ok(write_dir(&set, dir)?))?;
    variants.push(read_back("cilium", dir)?);
    Ok(variants)
}

/// Writes a directory afresh: no file of an earlier run stays to be read
/// back as part of this one's set.
fn rewrite_dir(dir: &Path, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing {}", dir.display()));
        }
        _ => {}
    }
    write(dir)
}

fn read_back(name: &'static str, dir: PathBuf) -> anyhow::Result<Variant> {
    let policies = load_policy_set(&dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(Variant { name, policies })
}

/// `policy verify` of the audit recording against each variant.
pub fn verify_all(
    graph: &CommGraph,
    inventory: &Inventory,
    variants: &[Variant],
) -> Vec<(&'static str, VerifyReport)> {
    variants
        .iter()
        .map(|variant| (variant.name, verify(graph, &variant.policies, inventory)))
        .collect()
}

/// One netassert assertion, judged against every variant.
#[derive(Debug, Serialize)]
pub struct AssertionCheck {
    pub name: String,
    /// What the file asserts: the connection succeeds.
    pub must_connect: bool,
    /// Variants whose policies say otherwise, with why.
    pub disagree: Vec<(String, String)>,
}

/// The assertions of `policy tests` (as written to `OUT/netassert.yaml`),
/// each judged by the evaluator against every variant: an assertion that
/// must connect needs every variant to allow it, one that must not needs
/// every variant to refuse it. Assertions whose ends the inventory cannot
/// place are left out (netassert would skip them too).
pub fn check_netassert(
    graph: &CommGraph,
    inventory: &Inventory,
    variants: &[Variant],
    out: &Path,
) -> anyhow::Result<Vec<AssertionCheck>> {
    let (cases, skipped) = netassert::test_cases(graph, inventory);
    let path = out.join("netassert.yaml");
    let yaml = netassert::to_yaml(&cases, &skipped)?;
    netflow_agent::graph::file::write_atomically(&path, yaml.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let dns = dns_names(graph);
    let evaluators: Vec<(&str, Evaluator)> = variants
        .iter()
        .map(|v| (v.name, Evaluator::for_set(&v.policies, inventory, &dns)))
        .collect();
    let mut checks = Vec::new();
    for case in &cases {
        let (Some(clients), Some(servers)) =
            (ends(inventory, &case.src), ends(inventory, &case.dst))
        else {
            continue;
        };
        let protocol = case.protocol.to_ascii_uppercase();
        let must_connect = case.exit_code == 0;
        let mut disagree = Vec::new();
        for (name, evaluator) in &evaluators {
            let refused = refusal(&clients, &servers, |client, server| {
                evaluator.check(client, server, case.target_port, &protocol)
            });
            match (must_connect, refused) {
                (true, Some(reason)) => disagree.push((name.to_string(), reason)),
                (false, None) => disagree.push((name.to_string(), "allowed".into())),
                _ => {}
            }
        }
        checks.push(AssertionCheck {
            name: case.name.clone(),
            must_connect,
            disagree,
        });
    }
    Ok(checks)
}

/// The pods (or the host's address) a netassert end names; `None` when the
/// inventory has none of them.
fn ends<'a>(inventory: &'a Inventory, target: &Target) -> Option<Vec<End<'a>>> {
    if let Some(resource) = &target.k8s_resource {
        let kind = TestCase::resource_kind(&resource.kind)?;
        let workload = WorkloadRef {
            namespace: resource.namespace.clone(),
            kind: kind.into(),
            name: resource.name.clone(),
        };
        let pods: Vec<End> = inventory
            .pods_of(&workload)
            .filter(|pod| !pod.host_network)
            .map(End::Pod)
            .collect();
        return (!pods.is_empty()).then_some(pods);
    }
    let address = target.host.as_ref()?.name.parse().ok()?;
    Some(vec![End::Address(address)])
}
