//! `policy generate`: the smallest allow set for the graph, written to a
//! directory (`NAMESPACE.yaml` per namespace and `findings.json`).

use anyhow::Context as _;

use crate::{
    cli::{ClusterBaselineArg, Flavor, GenerateArgs, L7Arg},
    inventory::Inventory,
    policy::{
        generate::{ClusterBaseline, Finding, GenerateOptions, cilium, kubernetes},
        write::StagedDir,
    },
};

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if args.l7 == L7Arg::Http && !matches!(args.flavor, Flavor::Cilium) {
        anyhow::bail!(
            "--l7 http writes Cilium's L7 rules: use it with --flavor cilium (NetworkPolicy stops at ports)"
        );
    }
    let options = GenerateOptions {
        namespaces: args.namespaces.into_iter().collect(),
        include_system: args.include_system,
        min_connections: args.min_connections,
        seen_after: seen_after_seconds(args.seen_after.as_deref())?,
        ingress_only: args.ingress_only,
        allow_one_way_udp: args.allow_one_way_udp,
        cluster_baseline: match args.cluster_baseline {
            ClusterBaselineArg::None => ClusterBaseline::None,
            ClusterBaselineArg::Cnp => ClusterBaseline::ClusterNetworkPolicy,
            ClusterBaselineArg::Anp => ClusterBaseline::AdminNetworkPolicy,
        },
        l7_http: args.l7 == L7Arg::Http,
    };
    let out = args.out;
    let (graph, inventory) = super::with_graph(&args.graph, || {
        Inventory::load(&args.inventory).map_err(anyhow::Error::from)
    })?;
    // Each namespace's file is written (under a temporary name) as soon as
    // its policies are; all are renamed into place at the end.
    let dir = StagedDir::new(&out);
    let findings = match args.flavor {
        Flavor::Kubernetes => {
            let set = kubernetes::generate_each(&graph, &inventory, &options, |ns, policies| {
                dir.stage_namespace(ns, &policies)
                    .map_err(anyhow::Error::from)
            })?;
            dir.commit(&set)?;
            set.findings
        }
        Flavor::Cilium => {
            let set = cilium::generate_each(&graph, &inventory, &options, |ns, policies| {
                dir.stage_namespace(ns, &policies)
                    .map_err(anyhow::Error::from)
            })?;
            dir.commit(&set)?;
            set.findings
        }
    };
    report(&findings);
    Ok(())
}

fn report(findings: &[Finding]) {
    for finding in findings {
        eprintln!(
            "finding: {} {}: {}",
            finding.kind, finding.workload, finding.detail
        );
    }
}

/// `--seen-after` as Unix seconds (0 when absent).
fn seen_after_seconds(text: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = text else { return Ok(0) };
    let time = humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("--seen-after {text:?} is not an RFC 3339 time"))?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs()))
}
