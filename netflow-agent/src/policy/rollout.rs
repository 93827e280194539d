//! `policy plan`: the rollout order the seed guidance gives: audit, then one
//! non-critical namespace, then staging, then the rest, then cluster-wide.
//! With a cluster baseline the Admin tier goes in right after the audit
//! (the namespaces' egress policies rely on its DNS allow) and the Baseline
//! tier, the default-deny, last.
//! Namespaces go in order of how little other traffic depends on them (the
//! workloads of other namespaces that call into them), so a mistake breaks
//! as little as possible while there is still time to see it.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    graph::CommGraph,
    model::{EndpointKind, file_time},
};

use super::{
    generate::SYSTEM_NAMESPACES,
    staged::{Denial, Denials},
    write::{ADMIN_TIER_FILE, BASELINE_TIER_FILE},
};

#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub title: String,
    pub namespaces: Vec<String>,
    /// Cluster-wide files of the policy directory this step applies.
    pub files: Vec<String>,
    pub advice: String,
}

/// Which cluster-wide tier files the policy directory has.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterTiers {
    pub admin: bool,
    pub baseline: bool,
}

/// How much traffic from elsewhere depends on a namespace.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Dependence {
    /// Distinct client workloads in other namespaces.
    callers: usize,
    /// Their connections.
    connections: u64,
}

fn is_staging(namespace: &str) -> bool {
    ["staging", "stage", "dev", "test", "qa", "preview"]
        .iter()
        .any(|word| namespace.split(['-', '_', '.']).any(|part| part == *word))
}

pub fn plan(graph: &CommGraph, tiers: ClusterTiers) -> Vec<Step> {
    let mut dependence: BTreeMap<String, Dependence> = BTreeMap::new();
    let mut callers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for endpoint in graph.endpoints() {
        if let (EndpointKind::Workload, Some(namespace)) = (endpoint.kind, &endpoint.namespace)
            && !SYSTEM_NAMESPACES.contains(&namespace.as_str())
        {
            dependence.entry(namespace.clone()).or_default();
        }
    }
    for (client, server, edge) in graph.edges() {
        let (Some(server_ns), client_ns) = (&server.namespace, &client.namespace) else {
            continue;
        };
        if client_ns.as_ref() == Some(server_ns) || !dependence.contains_key(server_ns) {
            continue;
        }
        callers
            .entry(server_ns.clone())
            .or_default()
            .insert(client.id.clone());
        dependence.entry(server_ns.clone()).or_default().connections +=
            edge.stats.volume().connections;
    }
    for (namespace, ids) in &callers {
        if let Some(entry) = dependence.get_mut(namespace) {
            entry.callers = ids.len();
        }
    }
    let mut order: Vec<(Dependence, String)> =
        dependence.into_iter().map(|(ns, d)| (d, ns)).collect();
    order.sort();

    let (first, last) = graph
        .edges()
        .iter()
        .fold((u64::MAX, 0), |(first, last), (_, _, e)| {
            (first.min(e.stats.first_seen), last.max(e.stats.last_seen))
        });
    let days: BTreeSet<String> = graph
        .edges()
        .iter()
        .flat_map(|(_, _, e)| e.stats.days_seen.dates())
        .collect();
    let mut steps = vec![Step {
        title: "Audit".into(),
        namespaces: Vec::new(),
        files: Vec::new(),
        advice: if graph.edge_count() == 0 {
            "no traffic recorded yet: record for a week (netflow-agent record --state-dir ...) before enforcing anything".into()
        } else {
            format!(
                "{} edges recorded on {} days ({} to {}); record for a full week so rare edges (nightly jobs) are in the graph",
                graph.edge_count(),
                days.len(),
                file_time(first),
                file_time(last)
            )
        },
    }];
    if tiers.admin {
        steps.push(Step {
            title: "Cluster admin tier: metadata deny, DNS allow".into(),
            namespaces: Vec::new(),
            files: vec![ADMIN_TIER_FILE.into()],
            advice: "before any namespace: their egress policies rely on its DNS allow; check findings.json for metadata-service contacts first, they stop here".into(),
        });
    }
    let production: Vec<&(Dependence, String)> =
        order.iter().filter(|(_, ns)| !is_staging(ns)).collect();
    let staging: Vec<String> = order
        .iter()
        .filter(|(_, ns)| is_staging(ns))
        .map(|(_, ns)| ns.clone())
        .collect();
    let mut remaining: Vec<String> = production.iter().map(|(_, ns)| ns.clone()).collect();
    if let Some((dependence, pilot)) = production.first() {
        steps.push(Step {
            title: "Pilot: one non-critical namespace".into(),
            namespaces: vec![pilot.clone()],
            files: Vec::new(),
            advice: format!(
                "{} workloads of other namespaces call into it ({} connections); apply, then run policy verify and the netassert tests, and watch for a few days",
                dependence.callers, dependence.connections
            ),
        });
        remaining.retain(|ns| ns != pilot);
    }
    if !staging.is_empty() {
        steps.push(Step {
            title: "Staging".into(),
            namespaces: staging,
            files: Vec::new(),
            advice: "the same policies as production will get; exercise the release process once with them applied".into(),
        });
    }
    if !remaining.is_empty() {
        steps.push(Step {
            title: "The rest, least depended on first".into(),
            namespaces: remaining,
            files: Vec::new(),
            advice: "one namespace at a time; the ones many others call come last".into(),
        });
    }
    steps.push(if tiers.baseline {
        Step {
            title: "Cluster-wide: the Baseline tier".into(),
            namespaces: Vec::new(),
            files: vec![BASELINE_TIER_FILE.into()],
            advice: "the default-deny for every namespace it selects, new ones included; namespaced allows still come first, so apply it only once every namespace above is in".into(),
        }
    } else {
        Step {
            title: "Cluster-wide".into(),
            namespaces: Vec::new(),
            files: Vec::new(),
            advice: "generate with --include-system for kube-system and friends (DNS stays open to every namespace), and give new namespaces a default-deny when they are created (or generate with --cluster-baseline)".into(),
        }
    });
    steps
}

/// The plan for people, with each namespace's policy file under `policies`.
pub fn render(steps: &[Step], policies: &str) -> String {
    render_with_denials(steps, policies, None)
}

/// As [`render`], each step followed by the staged denials its namespaces'
/// policies cause (`graph pull --denials`): what would break if it were
/// applied as it is.
pub fn render_with_denials(steps: &[Step], policies: &str, denials: Option<&Denials>) -> String {
    let mut out = String::new();
    for (index, step) in steps.iter().enumerate() {
        out.push_str(&format!(
            "{}. {}\n   {}\n",
            index + 1,
            step.title,
            step.advice
        ));
        for file in &step.files {
            out.push_str(&format!("   kubectl apply -f {policies}/{file}\n"));
        }
        for namespace in &step.namespaces {
            out.push_str(&format!(
                "   kubectl apply -f {policies}/{namespace}.yaml\n"
            ));
        }
        let Some(denials) = denials else {
            continue;
        };
        let breaking: Vec<(&String, &Denial)> = denials
            .denials
            .iter()
            .filter(|(_, denial)| step.namespaces.contains(&denial.refusal.policy_namespace))
            .collect();
        if breaking.is_empty() {
            out.push_str("   staged: no edge seen would break\n");
            continue;
        }
        out.push_str(&format!(
            "   staged: these {} edges would break; these policies would need to change:\n",
            breaking.len()
        ));
        for (edge, denial) in breaking {
            out.push_str(&format!(
                "     {edge} ({} connections): {}\n",
                denial.connections, denial.refusal.reason
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        graph::{
            EdgeKey,
            tests::{stats, workload},
        },
        model::Protocol,
    };

    #[test]
    fn each_step_lists_the_staged_denials_its_namespaces_cause() {
        let steps = vec![
            Step {
                title: "shop".into(),
                namespaces: vec!["shop".into()],
                files: vec![],
                advice: String::new(),
            },
            Step {
                title: "data".into(),
                namespaces: vec!["data".into()],
                files: vec![],
                advice: String::new(),
            },
        ];
        let mut denials = Denials::new();
        denials.denials.insert(
            "shop/web -> data/db tcp/5432".into(),
            Denial {
                refusal: crate::policy::staged::Refusal {
                    client: "workload:shop/Deployment/web".into(),
                    server: "workload:data/Deployment/db".into(),
                    protocol: "tcp".into(),
                    port: 5432,
                    reason: "ingress of data/db-0: no rule allows it".into(),
                    policy_namespace: "data".into(),
                },
                connections: 7,
                first_seen: 1,
                last_seen: 2,
            },
        );
        let text = render_with_denials(&steps, "policies", Some(&denials));
        let (shop, data) = text.split_once("2. data").unwrap();
        assert!(shop.contains("staged: no edge seen would break"), "{text}");
        assert!(
            data.contains("these 1 edges would break")
                && data
                    .contains("shop/web -> data/db tcp/5432 (7 connections): ingress of data/db-0"),
            "{text}"
        );
        assert_eq!(
            render(&steps, "policies"),
            render_with_denials(&steps, "policies", None)
        );
    }

    #[test]
    fn namespaces_go_from_least_to_most_depended_on() {
        let mut graph = CommGraph::new();
        let web = graph.upsert_endpoint(workload("frontend", "web"));
        let api = graph.upsert_endpoint(workload("backend", "api"));
        let db = graph.upsert_endpoint(workload("data", "db"));
        let batch = graph.upsert_endpoint(workload("reports", "nightly"));
        let stage = graph.upsert_endpoint(workload("shop-staging", "web"));
        let tcp = |port| EdgeKey {
            protocol: Protocol(6),
            port,
        };
        graph.observe(web, api, tcp(80), &stats(1_764_000_000, 1_764_100_000, 5));
        graph.observe(api, db, tcp(5432), &stats(1_764_000_000, 1_764_100_000, 5));
        graph.observe(
            batch,
            db,
            tcp(5432),
            &stats(1_764_000_000, 1_764_100_000, 1),
        );
        graph.observe(
            stage,
            stage,
            tcp(8080),
            &stats(1_764_000_000, 1_764_100_000, 1),
        );
        let steps = plan(&graph, ClusterTiers::default());
        let titles: Vec<&str> = steps.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            vec![
                "Audit",
                "Pilot: one non-critical namespace",
                "Staging",
                "The rest, least depended on first",
                "Cluster-wide"
            ]
        );
        // frontend and reports: no callers; frontend first by name.
        assert_eq!(steps[1].namespaces, vec!["frontend"]);
        assert_eq!(steps[2].namespaces, vec!["shop-staging"]);
        // backend (1 caller) before data (2 callers).
        assert_eq!(steps[3].namespaces, vec!["reports", "backend", "data"]);
        let text = render(&steps, "policies");
        assert!(text.contains("kubectl apply -f policies/frontend.yaml"));
    }
}
