//! kube-proxy's job on each node: a connection to a Service's ClusterIP
//! and port reaches one of its backend pods, in the mode the scenario names
//! (`kubeProxy`). The rules go in the node's namespace, where pod traffic
//! is routed (and bridged, with bridge netfilter on), as on a real node.
//!
//! - `iptables`: one DNAT rule per backend in `nat` PREROUTING (pods) and
//!   OUTPUT (the node's own processes), chosen at random by `statistic`.
//! - `nftables`: kube-proxy's nftables mode: a `service-ips` verdict map
//!   from ClusterIP, protocol and port to a Service chain, which picks a
//!   backend chain with `numgen`, which DNATs.
//! - `socket`: no rule at all; clients connect to a backend themselves
//!   (see `socket_lb`).

use std::{
    fmt::Write as _,
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{
    layout::{LabPlan, NodePlan},
    scenario::{KubeProxy, ServiceType, TrafficPolicy},
};
use crate::socket_lb::ServiceEntry;
use netflow_agent::testbed::ip;

/// Installs the scenario's Service routing on `node`.
pub fn install(plan: &LabPlan, node: &NodePlan) -> anyhow::Result<()> {
    let ports = plan.service_ports();
    let netns = node.netns.as_str();
    match plan.scenario.kube_proxy {
        KubeProxy::Iptables => iptables(&ports, netns)?,
        KubeProxy::Nftables => nftables(&ports, netns)?,
        KubeProxy::Socket => {}
        KubeProxy::Ipvs => bail!("kubeProxy: ipvs is not built by the lab"),
    }
    exposed(plan, node)
}

/// Connections from outside marked for masquerading (kube-proxy's bit).
const MASQUERADE_MARK: &str = "0x4000/0x4000";

/// NodePort and LoadBalancer Services, in every mode with iptables rules
/// (a kube-proxy replacement does the same in its own way; the pods see
/// the same): a connection to any of the node's addresses at a nodePort,
/// or to a load balancer address the node announces at the Service's
/// port, is sent to a backend. With `externalTrafficPolicy: Cluster` any
/// node's backend, the client's address replaced by the node's; with
/// `Local` only this node's backends, the client's address kept.
fn exposed(plan: &LabPlan, node: &NodePlan) -> anyhow::Result<()> {
    let netns = node.netns.as_str();
    let mut masquerade = false;
    for service in &plan.services {
        if !matches!(
            service.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) {
            continue;
        }
        let local = service.traffic_policy == TrafficPolicy::Local;
        for port in &service.ports {
            let Some(node_port) = port.node_port else {
                continue;
            };
            let protocol = port.protocol.to_ascii_lowercase();
            let backends: Vec<String> = plan
                .backends(service)
                .into_iter()
                .filter(|pod| !local || pod.node == node.index)
                .filter_map(|pod| Some(format!("{}:{}", pod.ip, LabPlan::target_port(port, pod)?)))
                .collect();
            let mut entries: Vec<Vec<String>> = vec![vec![
                "-m".into(),
                "addrtype".into(),
                "--dst-type".into(),
                "LOCAL".into(),
                "--dport".into(),
                node_port.to_string(),
            ]];
            if let (Some(ip), 0) = (service.load_balancer_ip, node.index) {
                entries.push(vec![
                    "-d".into(),
                    format!("{ip}/32"),
                    "--dport".into(),
                    port.port.to_string(),
                ]);
            }
            for entry in entries {
                let matches = [&["-p".to_string(), protocol.clone()][..], &entry].concat();
                if !local {
                    let mark = ["-j", "MARK", "--set-xmark", MASQUERADE_MARK].map(String::from);
                    nat_rule(
                        netns,
                        "iptables",
                        "PREROUTING",
                        &[&matches[..], &mark].concat(),
                    )?;
                    masquerade = true;
                }
                for pick in backend_picks(&backends) {
                    nat_rule(
                        netns,
                        "iptables",
                        "PREROUTING",
                        &[&matches[..], &pick].concat(),
                    )?;
                }
            }
        }
    }
    if masquerade {
        let masquerade = ["-m", "mark", "--mark", MASQUERADE_MARK, "-j", "MASQUERADE"];
        nat_rule(
            netns,
            "iptables",
            "POSTROUTING",
            &masquerade.map(String::from),
        )?;
    }
    Ok(())
}

fn iptables(ports: &[ServiceEntry], netns: &str) -> anyhow::Result<()> {
    for entry in ports {
        let (tables, cluster_ip) = match entry.service.ip() {
            std::net::IpAddr::V4(ip) => ("iptables", format!("{ip}/32")),
            std::net::IpAddr::V6(ip) => ("ip6tables", format!("{ip}/128")),
        };
        let matches = [
            "-d".to_string(),
            cluster_ip,
            "-p".into(),
            entry.protocol.to_ascii_lowercase(),
            "--dport".into(),
            entry.service.port().to_string(),
        ];
        for chain in ["PREROUTING", "OUTPUT"] {
            for pick in backend_picks(&entry.backends) {
                nat_rule(netns, tables, chain, &[&matches[..], &pick].concat())?;
            }
        }
    }
    Ok(())
}

/// One rule tail per backend, kube-proxy's way: each later rule takes what
/// the earlier ones left, so each backend gets an even share.
fn backend_picks(backends: &[impl std::fmt::Display]) -> Vec<Vec<String>> {
    backends
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            let remaining = backends.len() - index;
            let mut tail: Vec<String> = Vec::new();
            if remaining > 1 {
                tail.extend(
                    ["-m", "statistic", "--mode", "random", "--probability"].map(String::from),
                );
                tail.push(format!("{:.5}", 1.0 / remaining as f64));
            }
            tail.extend(["-j", "DNAT", "--to-destination"].map(String::from));
            tail.push(backend.to_string());
            tail
        })
        .collect()
}

/// Appends `args` to `chain` of the nat table in `netns`.
fn nat_rule(netns: &str, tables: &str, chain: &str, args: &[String]) -> anyhow::Result<()> {
    let mut command = vec![
        "netns", "exec", netns, tables, "-w", "-t", "nat", "-A", chain,
    ];
    command.extend(args.iter().map(String::as_str));
    ip(&command)
}

/// The `kube-proxy` tables as kube-proxy's nftables mode lays them out:
/// one for IPv4 Services, one for IPv6 ones (dual-stack).
fn nftables_script(ports: &[ServiceEntry]) -> String {
    let (v6, v4): (Vec<ServiceEntry>, Vec<ServiceEntry>) = ports
        .iter()
        .cloned()
        .partition(|entry| entry.service.is_ipv6());
    let mut script = nftables_table(&v4, false);
    if !v6.is_empty() {
        script.push_str(&nftables_table(&v6, true));
    }
    script
}

fn nftables_table(ports: &[ServiceEntry], v6: bool) -> String {
    let (family, address_type, daddr) = if v6 {
        ("ip6", "ipv6_addr", "ip6 daddr")
    } else {
        ("ip", "ipv4_addr", "ip daddr")
    };
    let mut elements = Vec::new();
    let mut chains = String::new();
    for (service, entry) in ports.iter().enumerate() {
        if entry.backends.is_empty() {
            continue;
        }
        let protocol = entry.protocol.to_ascii_lowercase();
        elements.push(format!(
            "{} . {protocol} . {} : goto svc-{service}",
            entry.service.ip(),
            entry.service.port()
        ));
        let picks: Vec<String> = (0..entry.backends.len())
            .map(|backend| format!("{backend} : goto sep-{service}-{backend}"))
            .collect();
        let _ = writeln!(
            chains,
            "  chain svc-{service} {{\n    numgen random mod {} vmap {{ {} }}\n  }}",
            entry.backends.len(),
            picks.join(", ")
        );
        for (backend, address) in entry.backends.iter().enumerate() {
            let _ = writeln!(
                chains,
                "  chain sep-{service}-{backend} {{\n    meta l4proto {protocol} dnat {family} to {address}\n  }}"
            );
        }
    }
    let map_elements = if elements.is_empty() {
        String::new()
    } else {
        format!("    elements = {{ {} }}\n", elements.join(", "))
    };
    format!(
        "table {family} kube-proxy {{\n\
         \x20 map service-ips {{\n    type {address_type} . inet_proto . inet_service : verdict\n{map_elements}  }}\n\
         \x20 chain services {{\n    {daddr} . meta l4proto . th dport vmap @service-ips\n  }}\n\
         {chains}\
         \x20 chain nat-prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n\
         }}\n"
    )
}

fn nftables(ports: &[ServiceEntry], netns: &str) -> anyhow::Result<()> {
    let script = nftables_script(ports);
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed? run `cargo xtask setup`)")?;
    child
        .stdin
        .take()
        .context("nft has no stdin")?
        .write_all(script.as_bytes())
        .context("writing the kube-proxy table to nft")?;
    let output = child.wait_with_output().context("waiting for nft")?;
    if !output.status.success() {
        bail!(
            "nft refused the kube-proxy table in {netns}: {}\n{script}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nftables_table_maps_each_service_port_to_its_backends() {
        let script = nftables_script(&[
            ServiceEntry {
                service: "10.96.0.20:80".parse().unwrap(),
                protocol: "TCP".into(),
                backends: vec![
                    "10.244.0.11:8080".parse().unwrap(),
                    "10.244.1.10:8080".parse().unwrap(),
                ],
            },
            ServiceEntry {
                service: "10.96.0.21:53".parse().unwrap(),
                protocol: "UDP".into(),
                backends: vec![],
            },
        ]);
        assert!(
            script.contains("10.96.0.20 . tcp . 80 : goto svc-0"),
            "{script}"
        );
        assert!(script.contains("numgen random mod 2 vmap { 0 : goto sep-0-0, 1 : goto sep-0-1 }"));
        assert!(script.contains("meta l4proto tcp dnat ip to 10.244.1.10:8080"));
        // A Service port with no backend has no entry: it goes nowhere.
        assert!(!script.contains("10.96.0.21"), "{script}");
    }
}
