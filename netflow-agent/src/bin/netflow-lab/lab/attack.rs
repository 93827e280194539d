//! The attacker's path, replayed: the scenario's `phase: attack` steps run
//! after the policies are generated, each destination tried for real from
//! the chosen pod (recorded apart, in `attack-graph.json`), then judged
//! against every generated variant: would it have been blocked, and by
//! what. The report is `OUT/attack.json`, one entry per destination tried,
//! and a table.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{
    layout::{LabPlan, PodPlan},
    scenario::{Expect, ScanTargets, TrafficSpec, protocol_of},
    variants::Variant,
};
use crate::peer::ProbeReport;
use netflow_agent::{
    graph::CommGraph,
    inventory::Inventory,
    policy::{
        evaluate::{End, Evaluator},
        verify::{VerifyReport, dns_names},
    },
};

/// One destination an attack step tries.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub address: SocketAddr,
    pub protocol: &'static str,
    /// What the address is, for people: `NS/WORKLOAD`, `svc:NS/NAME`,
    /// `ext:NAME`, or the address itself.
    pub to: String,
    /// Who would judge it: the pods the packets reach, each on its port
    /// (a Service's backends after DNAT), or nobody but the client's egress.
    pub servers: Servers,
}

#[derive(Clone, Debug)]
pub enum Servers {
    /// Pod indexes of the plan, each with the port the packets reach.
    Pods(Vec<(usize, u16)>),
    /// An address outside the pod network.
    Address,
}

/// The destinations of attack step `traffic`: its `to`, or every address
/// its scan covers. `running` says which pods exist now.
pub fn attempts(
    plan: &LabPlan,
    traffic: &TrafficSpec,
    running: impl Fn(usize) -> bool,
) -> anyhow::Result<Vec<Attempt>> {
    let protocol = protocol_of(&traffic.protocol).map_err(anyhow::Error::msg)?;
    let mut addresses = Vec::new();
    match &traffic.scan {
        Some(scan) => {
            for port in &scan.ports {
                match scan.targets {
                    ScanTargets::Pods => addresses.extend(
                        plan.pods
                            .iter()
                            .enumerate()
                            .filter(|(index, pod)| running(*index) && !pod.host_network)
                            .filter_map(|(_, pod)| plan.pod_ips(pod).first().copied())
                            .map(|ip| SocketAddr::new(ip, *port)),
                    ),
                    ScanTargets::Services => addresses.extend(
                        plan.services
                            .iter()
                            .filter_map(|service| {
                                service
                                    .cluster_ip
                                    .map(IpAddr::from)
                                    .or(service.cluster_ip_v6.map(IpAddr::from))
                            })
                            .map(|cluster_ip| SocketAddr::new(cluster_ip, *port)),
                    ),
                }
            }
        }
        None => addresses.push(plan.destination(&traffic.to)?),
    }
    Ok(addresses
        .into_iter()
        .map(|address| classify(plan, address, protocol, &running))
        .collect())
}

/// What `address` is in the lab, and which pods would judge a connection.
fn classify(
    plan: &LabPlan,
    address: SocketAddr,
    protocol: &'static str,
    running: &impl Fn(usize) -> bool,
) -> Attempt {
    let attempt = |to: String, servers| Attempt {
        address,
        protocol,
        to,
        servers,
    };
    let port = address.port();
    if let Some((index, pod)) = plan.pods.iter().enumerate().find(|(index, pod)| {
        running(*index) && !pod.host_network && plan.pod_ips(pod).contains(&address.ip())
    }) {
        return attempt(pod_name(plan, pod), Servers::Pods(vec![(index, port)]));
    }
    if let Some(service) = plan.services.iter().find(|s| {
        s.cluster_ip.map(IpAddr::from) == Some(address.ip())
            || s.cluster_ip_v6.map(IpAddr::from) == Some(address.ip())
    }) {
        let name = format!("svc:{}/{}", service.namespace, service.name);
        // kube-proxy rewrites only the Service's own ports; on any other
        // the address leads nowhere, and only the client's egress judges.
        let Some(service_port) = service.ports.iter().find(|p| {
            p.port == port && protocol_of(&p.protocol).is_ok_and(|known| known == protocol)
        }) else {
            return attempt(name, Servers::Address);
        };
        let backends = plan
            .pods
            .iter()
            .enumerate()
            .filter(|(index, pod)| {
                running(*index)
                    && plan
                        .backends(service)
                        .iter()
                        .any(|backend| std::ptr::eq(*backend, *pod))
            })
            .filter_map(|(index, pod)| Some((index, LabPlan::target_port(service_port, pod)?)))
            .collect();
        return attempt(name, Servers::Pods(backends));
    }
    if let Some(external) = plan.externals.iter().find(|e| e.spec.ip == address.ip()) {
        return attempt(format!("ext:{}", external.spec.name), Servers::Address);
    }
    attempt(address.ip().to_string(), Servers::Address)
}

fn pod_name(plan: &LabPlan, pod: &PodPlan) -> String {
    match plan.workload_of(pod) {
        Some((namespace, name)) => format!("{namespace}/{name}"),
        None => format!("{}/{}", pod.namespace, pod.name),
    }
}

/// Whether the tries of one step came out as it expects.
pub fn check_expectation(
    index: usize,
    traffic: &TrafficSpec,
    probes: &[ProbeReport],
) -> anyhow::Result<()> {
    for probe in probes {
        let ok = match traffic.expect {
            Expect::Any => true,
            Expect::Connected => probe.connected,
            Expect::Refused => {
                !probe.connected
                    && probe
                        .error
                        .as_deref()
                        .is_some_and(|e| e.contains("refused"))
            }
        };
        if !ok {
            bail!(
                "traffic[{index}] {} -> {} ({}): expected {:?}, but {}",
                traffic.from,
                traffic.target(),
                probe.remote,
                traffic.expect,
                probe.error.as_deref().unwrap_or(if probe.connected {
                    "it connected"
                } else {
                    "it did not connect"
                })
            );
        }
    }
    Ok(())
}

/// One destination tried by an attack step, and what each variant of the
/// generated policies would have done to it.
#[derive(Debug, Serialize)]
pub struct AttackEntry {
    /// The step's index among the scenario's traffic.
    pub step: usize,
    pub from: String,
    pub to: String,
    pub address: SocketAddr,
    pub protocol: String,
    pub port: u16,
    /// Whether it connected in the lab (where nothing enforces).
    pub connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Variant name to whether its policies would block it.
    pub blocked: BTreeMap<String, bool>,
    /// Variant name to the policy and rule that would block it.
    pub by: BTreeMap<String, String>,
}

/// One step's tries, from one client pod.
pub struct StepResult {
    pub step: usize,
    pub client: usize,
    pub attempts: Vec<Attempt>,
    pub probes: Vec<ProbeReport>,
}

/// Judges every try against every variant. The DNS names the evaluator
/// knows (for Cilium's `toFQDNs`) are those of the audit recording.
pub fn judge(
    plan: &LabPlan,
    inventory: &Inventory,
    audit: &CommGraph,
    variants: &[Variant],
    results: &[StepResult],
) -> anyhow::Result<Vec<AttackEntry>> {
    let dns = dns_names(audit);
    let evaluators: Vec<(&str, Evaluator)> = variants
        .iter()
        .map(|v| (v.name, Evaluator::for_set(&v.policies, inventory, &dns)))
        .collect();
    let end_of = |index: usize| -> anyhow::Result<End> {
        let pod = &plan.pods[index];
        if pod.host_network {
            return Ok(End::Address(pod.ip.into()));
        }
        inventory
            .pod_by_uid(&pod.uid)
            .map(End::Pod)
            .with_context(|| format!("pod {}/{} is not in the inventory", pod.namespace, pod.name))
    };
    let mut entries = Vec::new();
    for result in results {
        let client = end_of(result.client)?;
        let from = pod_name(plan, &plan.pods[result.client]);
        for (attempt, probe) in result.attempts.iter().zip(&result.probes) {
            let mut blocked = BTreeMap::new();
            let mut by = BTreeMap::new();
            for (name, evaluator) in &evaluators {
                let verdict = match &attempt.servers {
                    Servers::Address => evaluator
                        .check(
                            client,
                            End::Address(attempt.address.ip()),
                            attempt.address.port(),
                            attempt.protocol,
                        )
                        .denied(),
                    // Blocked when no backend would take it.
                    Servers::Pods(backends) => {
                        let mut reasons = Vec::new();
                        for (index, port) in backends {
                            match evaluator
                                .check(client, end_of(*index)?, *port, attempt.protocol)
                                .denied()
                            {
                                Some(reason) => reasons.push(reason),
                                None => {
                                    reasons.clear();
                                    break;
                                }
                            }
                        }
                        reasons.into_iter().next()
                    }
                };
                blocked.insert(name.to_string(), verdict.is_some());
                if let Some(reason) = verdict {
                    by.insert(name.to_string(), reason);
                }
            }
            entries.push(AttackEntry {
                step: result.step,
                from: from.clone(),
                to: attempt.to.clone(),
                address: attempt.address,
                protocol: attempt.protocol.to_ascii_lowercase(),
                port: attempt.address.port(),
                connected: probe.connected,
                error: probe.error.clone(),
                blocked,
                by,
            });
        }
    }
    Ok(entries)
}

/// The report's table: per step, what connected in the lab and what each
/// variant would block; under it, how much of the audit traffic each
/// variant still allows.
pub fn table(
    plan: &LabPlan,
    entries: &[AttackEntry],
    variants: &[Variant],
    audit: &[(&str, VerifyReport)],
) -> String {
    let mut out = String::new();
    let names: Vec<&str> = variants.iter().map(|v| v.name).collect();
    let mut steps: Vec<usize> = entries.iter().map(|e| e.step).collect();
    steps.dedup();
    let rows: Vec<(String, usize, &[AttackEntry])> = steps
        .iter()
        .map(|&step| {
            let first = entries.iter().position(|e| e.step == step).unwrap_or(0);
            let count = entries[first..]
                .iter()
                .take_while(|e| e.step == step)
                .count();
            let traffic = &plan.scenario.traffic[step];
            let label = format!(
                "[{step}] {} -> {} ({count})",
                traffic.from,
                traffic.target()
            );
            (label, step, &entries[first..first + count])
        })
        .collect();
    let width = rows
        .iter()
        .map(|(label, _, _)| label.len())
        .max()
        .unwrap_or(0)
        .max(28);
    let _ = write!(out, "{:<width$} {:>9}", "attack step (tries)", "connected");
    for name in &names {
        let _ = write!(out, " {name:>16}");
    }
    out.push('\n');
    for (label, _, tries) in &rows {
        let connected = tries.iter().filter(|e| e.connected).count();
        let _ = write!(
            out,
            "{label:<width$} {:>9}",
            format!("{connected}/{}", tries.len())
        );
        for name in &names {
            let blocked = tries
                .iter()
                .filter(|e| e.blocked.get(*name) == Some(&true))
                .count();
            let _ = write!(out, " {:>16}", format!("{blocked}/{} blocked", tries.len()));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<width$} {:>9}", "audit traffic still allowed", "");
    for name in &names {
        let cell = audit
            .iter()
            .find(|(variant, _)| variant == name)
            .map(|(_, report)| {
                format!(
                    "{}/{}",
                    report.allowed,
                    report.allowed + report.blocked.len()
                )
            })
            .unwrap_or_default();
        let _ = write!(out, " {cell:>16}");
    }
    out.push('\n');
    out
}
