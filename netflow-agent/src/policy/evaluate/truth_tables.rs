//! NetworkPolicy semantics case by case, as the API reference defines them:
//! one table per rule kind and per defaulting case. Each row is a policy
//! set, a connection and the verdict the API gives.

use super::*;

/// Namespaces `shop` (team=web), `data` (team=data), `other` (no labels: the
/// API server still gives it `kubernetes.io/metadata.name`). Pods:
/// - shop/web  app=web; http 8080/TCP, metrics 8125/UDP, diameter 3868/SCTP
/// - shop/api  app=api; 9000/TCP, metrics 9090/TCP
/// - data/db   app=db, tier=primary; pg 5432/TCP, pg-udp 5432/UDP
/// - other/tool app=tool
/// - shop/agent app=agent, hostNetwork on node n1 (192.168.0.10)
const INVENTORY: &str = r#"{"kind":"List","items":[
  {"kind":"Namespace","metadata":{"name":"shop","labels":{"team":"web"}}},
  {"kind":"Namespace","metadata":{"name":"data","labels":{"team":"data"}}},
  {"kind":"Namespace","metadata":{"name":"other"}},
  {"kind":"Node","metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"192.168.0.10"}]}},
  {"kind":"Pod","metadata":{"name":"web","namespace":"shop","uid":"1","labels":{"app":"web"}},
    "spec":{"nodeName":"n1","containers":[{"name":"c","ports":[
      {"name":"http","containerPort":8080},
      {"name":"metrics","containerPort":8125,"protocol":"UDP"},
      {"name":"diameter","containerPort":3868,"protocol":"SCTP"}]}]},
    "status":{"podIP":"10.0.0.1"}},
  {"kind":"Pod","metadata":{"name":"api","namespace":"shop","uid":"2","labels":{"app":"api"}},
    "spec":{"nodeName":"n1","containers":[{"name":"c","ports":[{"containerPort":9000},
      {"name":"metrics","containerPort":9090,"protocol":"TCP"}]}]},
    "status":{"podIP":"10.0.0.2"}},
  {"kind":"Pod","metadata":{"name":"db","namespace":"data","uid":"3","labels":{"app":"db","tier":"primary"}},
    "spec":{"nodeName":"n2","containers":[{"name":"c","ports":[
      {"name":"pg","containerPort":5432},
      {"name":"pg-udp","containerPort":5432,"protocol":"UDP"}]}]},
    "status":{"podIP":"10.0.1.3"}},
  {"kind":"Pod","metadata":{"name":"tool","namespace":"other","uid":"4","labels":{"app":"tool"}},
    "spec":{"nodeName":"n2","containers":[{"name":"c"}]},"status":{"podIP":"10.0.2.4"}}
]}"#;

/// One row: the policies' specs (each a NetworkPolicy in `shop` unless it
/// starts with `ns:`), a connection, the verdict.
struct Row {
    policies: &'static [&'static str],
    from: &'static str,
    to: &'static str,
    port: u16,
    protocol: &'static str,
    allowed: bool,
}

const fn row(
    policies: &'static [&'static str],
    from: &'static str,
    to: &'static str,
    port: u16,
    protocol: &'static str,
    allowed: bool,
) -> Row {
    Row {
        policies,
        from,
        to,
        port,
        protocol,
        allowed,
    }
}

fn policy_set(specs: &[&str]) -> Policies {
    let policies = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let (namespace, spec) = match spec.strip_prefix("ns:") {
                Some(rest) => rest.split_once(' ').expect("ns:<name> <spec>"),
                None => ("shop", *spec),
            };
            let yaml = format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{index}, namespace: {namespace}}}\nspec: {spec}\n"
            );
            let policy: k8s_openapi::api::networking::v1::NetworkPolicy =
                serde_norway::from_str(&yaml).unwrap_or_else(|err| panic!("{yaml}: {err}"));
            policy
        });
    Policies::from_network_policies(policies)
}

fn end<'a>(inventory: &'a Inventory, name: &str) -> End<'a> {
    match name.parse() {
        Ok(ip) => End::Address(ip),
        Err(_) => End::Pod(
            inventory
                .pods
                .iter()
                .find(|pod| &*pod.name == name)
                .unwrap_or_else(|| panic!("no pod {name}")),
        ),
    }
}

fn check_table(table: &str, rows: &[Row]) {
    let inventory = Inventory::parse(INVENTORY).unwrap();
    let mut wrong = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let policies = policy_set(row.policies);
        let verdict = Evaluator::new(&policies, &inventory).check(
            end(&inventory, row.from),
            end(&inventory, row.to),
            row.port,
            row.protocol,
        );
        let allowed = verdict == Verdict::Allowed;
        if allowed != row.allowed {
            wrong.push(format!(
                "{table} row {index}: {} -> {} {}/{} under {:?}: expected {}, got {verdict:?}",
                row.from,
                row.to,
                row.protocol,
                row.port,
                row.policies,
                if row.allowed { "allowed" } else { "denied" },
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn policy_types_default_as_the_api_server_sets_them() {
    const DENY_ALL: &[&str] = &["{podSelector: {}}"];
    const EMPTY_EGRESS: &[&str] = &["{podSelector: {}, egress: []}"];
    const EGRESS_RULE: &[&str] = &[
        "{podSelector: {matchLabels: {app: web}}, egress: [{to: [{podSelector: {matchLabels: {app: api}}}]}]}",
    ];
    const EMPTY_TYPES: &[&str] = &["{podSelector: {}, policyTypes: []}"];
    const EMPTY_TYPES_WITH_EGRESS: &[&str] = &[
        "{podSelector: {matchLabels: {app: web}}, policyTypes: [], egress: [{to: [{podSelector: {}}]}]}",
    ];
    const EGRESS_ONLY: &[&str] = &["{podSelector: {}, policyTypes: [Egress]}"];
    const INGRESS_ONLY_WITH_EGRESS_RULES: &[&str] = &[
        "{podSelector: {}, policyTypes: [Ingress], egress: [{to: [{ipBlock: {cidr: 1.1.1.1/32}}]}]}",
    ];
    const BOTH: &[&str] = &["{podSelector: {}, policyTypes: [Ingress, Egress]}"];
    check_table(
        "policyTypes",
        &[
            // Omitted: Ingress always...
            row(DENY_ALL, "tool", "web", 8080, "TCP", false),
            // ... Egress only with egress rules.
            row(DENY_ALL, "web", "db", 5432, "TCP", true),
            // `egress: []` is no egress rule: egress stays open.
            row(EMPTY_EGRESS, "web", "db", 5432, "TCP", true),
            row(EMPTY_EGRESS, "tool", "web", 8080, "TCP", false),
            row(EGRESS_RULE, "web", "api", 9000, "TCP", true),
            row(EGRESS_RULE, "web", "db", 5432, "TCP", false),
            // `policyTypes: []` is defaulted like an omitted list.
            row(EMPTY_TYPES, "tool", "web", 8080, "TCP", false),
            row(EMPTY_TYPES, "web", "db", 5432, "TCP", true),
            row(EMPTY_TYPES_WITH_EGRESS, "web", "db", 5432, "TCP", false),
            row(EMPTY_TYPES_WITH_EGRESS, "web", "api", 9000, "TCP", true),
            // Explicit types win over the rules present.
            row(EGRESS_ONLY, "tool", "web", 8080, "TCP", true),
            row(EGRESS_ONLY, "web", "db", 5432, "TCP", false),
            row(
                INGRESS_ONLY_WITH_EGRESS_RULES,
                "web",
                "db",
                5432,
                "TCP",
                true,
            ),
            row(BOTH, "web", "api", 9000, "TCP", false),
            row(BOTH, "tool", "api", 9000, "TCP", false),
            // Only pods the podSelector picks are isolated.
            row(
                &["{podSelector: {matchLabels: {app: web}}}"],
                "tool",
                "api",
                9000,
                "TCP",
                true,
            ),
        ],
    );
}

#[test]
fn peers_empty_absent_and_combined() {
    const FROM_EMPTY: &[&str] = &["{podSelector: {}, ingress: [{from: []}]}"];
    const RULE_EMPTY: &[&str] = &["{podSelector: {}, ingress: [{}]}"];
    const NO_RULES: &[&str] = &["{podSelector: {}, ingress: []}"];
    const SAME_NS: &[&str] = &["{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"];
    const ANY_NS: &[&str] = &["{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"];
    const AND: &[&str] = &[
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: data}}, podSelector: {matchLabels: {tier: primary}}}]}]}",
    ];
    const AND_MISS: &[&str] = &[
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {tier: primary}}}]}]}",
    ];
    const OR: &[&str] = &[
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: data}}}, {podSelector: {matchLabels: {tier: primary}}}]}]}",
    ];
    const BY_NAME: &[&str] = &[
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}}]}]}",
    ];
    const EXPRESSIONS: &[&str] = &[
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [web]}]}, podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}}]}]}",
    ];
    check_table(
        "peers",
        &[
            row(FROM_EMPTY, "tool", "web", 8080, "TCP", true),
            row(FROM_EMPTY, "203.0.113.9", "web", 1, "UDP", true),
            row(RULE_EMPTY, "203.0.113.9", "web", 1, "SCTP", true),
            row(NO_RULES, "api", "web", 8080, "TCP", false),
            // A podSelector alone: pods of the policy's namespace only.
            row(SAME_NS, "api", "web", 8080, "TCP", true),
            row(SAME_NS, "db", "web", 8080, "TCP", false),
            row(SAME_NS, "203.0.113.9", "web", 8080, "TCP", false),
            // An empty namespaceSelector: every pod, no address outside.
            row(ANY_NS, "tool", "web", 8080, "TCP", true),
            row(ANY_NS, "203.0.113.9", "web", 8080, "TCP", false),
            // Both selectors in one peer: AND; in two peers: OR.
            row(AND, "db", "web", 8080, "TCP", true),
            row(AND_MISS, "db", "web", 8080, "TCP", false),
            row(AND_MISS, "api", "web", 8080, "TCP", false),
            row(OR, "db", "web", 8080, "TCP", true),
            row(OR, "api", "web", 8080, "TCP", false),
            // Every namespace carries its name as a label.
            row(BY_NAME, "tool", "web", 8080, "TCP", true),
            row(BY_NAME, "db", "web", 8080, "TCP", false),
            // NotIn and DoesNotExist match where the label is absent.
            row(EXPRESSIONS, "tool", "web", 8080, "TCP", true),
            row(EXPRESSIONS, "db", "web", 8080, "TCP", false),
            row(EXPRESSIONS, "api", "web", 8080, "TCP", false),
            // Rules of several policies add up.
            row(
                &[
                    "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]}",
                    "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: data}}}]}]}",
                ],
                "db",
                "web",
                8080,
                "TCP",
                true,
            ),
        ],
    );
}

#[test]
fn ip_blocks_match_addresses_and_pod_ips_minus_except() {
    const BLOCK: &[&str] = &[
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]}",
    ];
    const EGRESS: &[&str] = &[
        "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]}]}",
    ];
    check_table(
        "ipBlock",
        &[
            // Pod IPs count: a pod whose address is in the block is a peer.
            row(BLOCK, "api", "web", 8080, "TCP", true),
            row(BLOCK, "db", "web", 8080, "TCP", false),
            row(BLOCK, "10.0.200.1", "web", 8080, "TCP", true),
            row(BLOCK, "10.0.1.200", "web", 8080, "TCP", false),
            row(BLOCK, "fd00::1", "web", 8080, "TCP", false),
            row(EGRESS, "web", "203.0.113.10", 443, "TCP", true),
            row(EGRESS, "web", "db", 5432, "TCP", true),
            row(EGRESS, "web", "169.254.169.254", 80, "TCP", false),
            row(EGRESS, "web", "2001:db8::1", 443, "TCP", false),
        ],
    );
}

#[test]
fn ports_named_ranged_and_by_protocol() {
    const METRICS_TCP: &[&str] =
        &["{podSelector: {}, ingress: [{ports: [{port: metrics, protocol: TCP}]}]}"];
    const METRICS_UDP: &[&str] =
        &["{podSelector: {}, ingress: [{ports: [{port: metrics, protocol: UDP}]}]}"];
    const METRICS_DEFAULT: &[&str] = &["{podSelector: {}, ingress: [{ports: [{port: metrics}]}]}"];
    const RANGE: &[&str] =
        &["{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8080, protocol: TCP}]}]}"];
    const SCTP: &[&str] =
        &["{podSelector: {}, ingress: [{ports: [{port: 3868, protocol: SCTP}]}]}"];
    const NAMED_SCTP: &[&str] =
        &["{podSelector: {}, ingress: [{ports: [{port: diameter, protocol: SCTP}]}]}"];
    const PROTOCOL_ONLY: &[&str] = &["{podSelector: {}, ingress: [{ports: [{protocol: UDP}]}]}"];
    const NO_PORTS: &[&str] = &["{podSelector: {}, ingress: [{ports: []}]}"];
    const EGRESS_NAMED: &[&str] = &[
        "{podSelector: {matchLabels: {app: web}}, egress: [{ports: [{port: pg-udp, protocol: UDP}, {port: metrics}]}]}",
    ];
    check_table(
        "ports",
        &[
            // A named port carries its protocol: web's `metrics` is UDP.
            row(METRICS_TCP, "api", "web", 8125, "TCP", false),
            row(METRICS_TCP, "web", "api", 9090, "TCP", true),
            row(METRICS_UDP, "api", "web", 8125, "UDP", true),
            row(METRICS_UDP, "api", "web", 8125, "TCP", false),
            row(METRICS_UDP, "web", "api", 9090, "UDP", false),
            row(METRICS_DEFAULT, "api", "web", 8125, "TCP", false),
            row(METRICS_DEFAULT, "api", "web", 8125, "UDP", false),
            row(METRICS_DEFAULT, "web", "api", 9090, "TCP", true),
            // endPort: an inclusive range.
            row(RANGE, "api", "web", 8000, "TCP", true),
            row(RANGE, "api", "web", 8080, "TCP", true),
            row(RANGE, "api", "web", 8081, "TCP", false),
            row(RANGE, "api", "web", 7999, "TCP", false),
            row(RANGE, "api", "web", 8040, "UDP", false),
            // SCTP is a protocol of its own.
            row(SCTP, "api", "web", 3868, "SCTP", true),
            row(SCTP, "api", "web", 3868, "TCP", false),
            row(NAMED_SCTP, "api", "web", 3868, "SCTP", true),
            row(NAMED_SCTP, "api", "web", 3868, "TCP", false),
            // A protocol without a port: every port of it.
            row(PROTOCOL_ONLY, "api", "web", 1, "UDP", true),
            row(PROTOCOL_ONLY, "api", "web", 65535, "UDP", true),
            row(PROTOCOL_ONLY, "api", "web", 8080, "TCP", false),
            row(NO_PORTS, "api", "web", 3868, "SCTP", true),
            // Egress: the named port is the server's.
            row(EGRESS_NAMED, "web", "db", 5432, "UDP", true),
            row(EGRESS_NAMED, "web", "db", 5432, "TCP", false),
            row(EGRESS_NAMED, "web", "api", 9090, "TCP", true),
            row(EGRESS_NAMED, "web", "203.0.113.10", 9090, "TCP", false),
        ],
    );
}

#[test]
fn both_ends_decide_and_the_node_reaches_its_pods() {
    const CLIENT_OPEN_SERVER_CLOSED: &[&str] = &[
        "{podSelector: {matchLabels: {app: web}}, egress: [{}]}",
        "ns:data {podSelector: {}}",
    ];
    const DENY_ALL: &[&str] = &[
        "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        "ns:data {podSelector: {}}",
    ];
    check_table(
        "ends",
        &[
            row(CLIENT_OPEN_SERVER_CLOSED, "web", "db", 5432, "TCP", false),
            row(CLIENT_OPEN_SERVER_CLOSED, "web", "api", 9000, "TCP", true),
            // A pod's own node always reaches it (kubelet probes); another
            // node is an address like any other.
            row(DENY_ALL, "192.168.0.10", "web", 8080, "TCP", true),
            row(DENY_ALL, "192.168.0.10", "db", 5432, "TCP", false),
        ],
    );
}

/// A policy set of any kinds, from YAML documents, read as `policy verify`
/// reads files.
fn mixed_set(yaml: &str) -> Policies {
    let dir = std::env::temp_dir().join(format!(
        "netflow-tiers-{}-{:x}",
        std::process::id(),
        yaml.len() as u64 * 31 + yaml.bytes().map(u64::from).sum::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("set.yaml"), yaml).unwrap();
    let set = load_policy_set(&dir).unwrap_or_else(|err| panic!("{yaml}: {err}"));
    std::fs::remove_dir_all(&dir).unwrap();
    set
}

const CNP: &str = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n";
const ANP: &str = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n";
const BANP: &str =
    "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n";
const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";

fn check_tiers(table: &str, rows: &[(String, &str, &str, u16, &str, bool)]) {
    let inventory = Inventory::parse(INVENTORY).unwrap();
    let dns = BTreeMap::new();
    let mut wrong = Vec::new();
    for (index, (yaml, from, to, port, protocol, expected)) in rows.iter().enumerate() {
        let set = mixed_set(yaml);
        let verdict = Evaluator::for_set(&set, &inventory, &dns).check(
            end(&inventory, from),
            end(&inventory, to),
            *port,
            protocol,
        );
        if (verdict == Verdict::Allowed) != *expected {
            wrong.push(format!(
                "{table} row {index}: {from} -> {to} {protocol}/{port}: expected {}, got {verdict:?}\n{yaml}",
                if *expected { "allowed" } else { "denied" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn admin_tier_decides_first_and_pass_hands_over() {
    let deny_metadata_allow_world = format!(
        "{CNP}metadata: {{name: metadata}}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {{namespaces: {{}}}}\n  egress:\n  - {{action: Deny, to: [{{networks: [169.254.169.254/32]}}]}}\n---\n{NP}metadata: {{name: open, namespace: shop}}\nspec: {{podSelector: {{}}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}]}}]}}\n"
    );
    let shop_deny_all =
        format!("{NP}metadata: {{name: deny, namespace: shop}}\nspec: {{podSelector: {{}}}}\n");
    let accept_other = format!(
        "{CNP}metadata: {{name: other}}\nspec:\n  tier: Admin\n  priority: 5\n  subject: {{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: web}}}}}}}}\n  ingress:\n  - {{action: Accept, from: [{{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: other}}}}}}]}}\n---\n{shop_deny_all}"
    );
    let pass_other = accept_other.replace("action: Accept", "action: Pass");
    // Lower priority first; within a policy, rules in order.
    let by_priority = format!(
        "{CNP}metadata: {{name: late}}\nspec:\n  tier: Admin\n  priority: 20\n  subject: {{namespaces: {{}}}}\n  ingress: [{{action: Accept, from: [{{namespaces: {{}}}}]}}]\n---\n{CNP}metadata: {{name: early}}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {{namespaces: {{}}}}\n  ingress:\n  - {{name: tool-ok, action: Accept, from: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: tool}}}}}}}}]}}\n  - {{name: rest, action: Deny, from: [{{namespaces: {{}}}}]}}\n"
    );
    // networks match pod IPs too.
    let deny_data_network = format!(
        "{CNP}metadata: {{name: data-net}}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {{namespaces: {{matchLabels: {{team: web}}}}}}\n  egress: [{{action: Deny, to: [{{networks: [10.0.1.0/24]}}]}}]\n"
    );
    check_tiers(
        "admin",
        &[
            (
                deny_metadata_allow_world.clone(),
                "web",
                "169.254.169.254",
                80,
                "TCP",
                false,
            ),
            (
                deny_metadata_allow_world,
                "web",
                "203.0.113.10",
                443,
                "TCP",
                true,
            ),
            (accept_other.clone(), "tool", "web", 8080, "TCP", true),
            (accept_other.clone(), "db", "web", 8080, "TCP", false),
            (accept_other, "tool", "api", 9000, "TCP", false),
            (pass_other, "tool", "web", 8080, "TCP", false),
            (by_priority.clone(), "tool", "web", 8080, "TCP", true),
            (by_priority.clone(), "db", "web", 8080, "TCP", false),
            (by_priority, "203.0.113.10", "web", 8080, "TCP", true),
            (deny_data_network.clone(), "web", "db", 5432, "TCP", false),
            (deny_data_network.clone(), "web", "api", 9000, "TCP", true),
            (deny_data_network, "tool", "db", 5432, "TCP", true),
        ],
    );
}

#[test]
fn baseline_tier_applies_only_where_no_network_policy_isolates() {
    let baseline = format!(
        "{CNP}metadata: {{name: default-deny}}\nspec:\n  tier: Baseline\n  priority: 0\n  subject: {{namespaces: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: NotIn, values: [other]}}]}}}}\n  ingress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]\n  egress: [{{action: Deny, to: [{{networks: [0.0.0.0/0, '::/0']}}]}}]\n"
    );
    let with_allow = format!(
        "{baseline}---\n{NP}metadata: {{name: web, namespace: shop}}\nspec: {{podSelector: {{matchLabels: {{app: web}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{app: api}}}}}}]}}]}}\n"
    );
    let with_admin_accept = format!(
        "{baseline}---\n{CNP}metadata: {{name: to-db}}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {{namespaces: {{}}}}\n  egress: [{{action: Accept, to: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: db}}}}}}}}], protocols: [{{tcp: {{destinationPort: {{number: 5432}}}}}}]}}]\n"
    );
    let with_admin_accept_both = format!(
        "{with_admin_accept}  ingress: [{{action: Accept, from: [{{namespaces: {{}}}}], protocols: [{{tcp: {{destinationPort: {{number: 5432}}}}}}]}}]\n"
    );
    check_tiers(
        "baseline",
        &[
            (baseline.clone(), "api", "web", 8080, "TCP", false),
            (baseline.clone(), "web", "203.0.113.10", 443, "TCP", false),
            // Baseline ingress peers are pods only: an outside address passes.
            (baseline.clone(), "203.0.113.10", "db", 5432, "TCP", true),
            // `other` is not a subject.
            (baseline.clone(), "db", "tool", 80, "TCP", false),
            (baseline.clone(), "tool", "192.0.2.1", 80, "TCP", true),
            // The namespaced policy decides for the pods it selects.
            (with_allow.clone(), "api", "web", 8080, "TCP", false),
            (with_allow.clone(), "tool", "web", 8080, "TCP", false),
            (with_allow, "web", "api", 9000, "TCP", false),
            // An Admin Accept goes before the baseline, one direction at a
            // time: web's egress is accepted, db's ingress is still the
            // baseline's...
            (with_admin_accept.clone(), "web", "db", 5432, "TCP", false),
            // ... until the Admin tier accepts that too.
            (
                with_admin_accept_both.clone(),
                "web",
                "db",
                5432,
                "TCP",
                true,
            ),
            (with_admin_accept_both, "web", "db", 5433, "TCP", false),
        ],
    );
}

#[test]
fn v1alpha1_admin_and_baseline_and_their_ports() {
    let anp = format!(
        "{ANP}metadata: {{name: ports}}\nspec:\n  priority: 3\n  subject: {{namespaces: {{matchLabels: {{team: web}}}}}}\n  ingress:\n  - action: Allow\n    from: [{{namespaces: {{}}}}]\n    ports: [{{portNumber: {{protocol: TCP, port: 8080}}}}, {{portRange: {{protocol: UDP, start: 9000, end: 9100}}}}, {{namedPort: metrics}}]\n  - {{action: Deny, from: [{{namespaces: {{}}}}]}}\n---\n{BANP}metadata: {{name: default}}\nspec:\n  subject: {{namespaces: {{}}}}\n  ingress: [{{action: Allow, from: [{{namespaces: {{matchLabels: {{team: data}}}}}}]}}, {{action: Deny, from: [{{namespaces: {{}}}}]}}]\n"
    );
    let cnp_ports = format!(
        "{CNP}metadata: {{name: ports}}\nspec:\n  tier: Admin\n  priority: 3\n  subject: {{namespaces: {{matchLabels: {{team: web}}}}}}\n  ingress:\n  - action: Accept\n    from: [{{namespaces: {{}}}}]\n    protocols: [{{tcp: {{destinationPort: {{number: 8080}}}}}}, {{udp: {{destinationPort: {{range: {{start: 9000, end: 9100}}}}}}}}, {{destinationNamedPort: metrics}}, {{sctp: {{destinationPort: {{number: 3868}}}}}}]\n  - {{action: Deny, from: [{{namespaces: {{}}}}]}}\n"
    );
    check_tiers(
        "v1alpha1",
        &[
            (anp.clone(), "tool", "web", 8080, "TCP", true),
            (anp.clone(), "tool", "web", 8080, "UDP", false),
            (anp.clone(), "tool", "api", 9050, "UDP", true),
            // namedPort: web's metrics is 8125/UDP.
            (anp.clone(), "tool", "web", 8125, "UDP", true),
            (anp.clone(), "tool", "web", 8125, "TCP", false),
            (anp.clone(), "tool", "web", 9999, "TCP", false),
            // Baseline: data allowed, everyone else denied where no
            // NetworkPolicy isolates.
            (anp.clone(), "web", "db", 5432, "TCP", false),
            (anp.clone(), "db", "tool", 80, "TCP", true),
            (anp, "web", "tool", 80, "TCP", false),
            (cnp_ports.clone(), "tool", "web", 8080, "TCP", true),
            (cnp_ports.clone(), "tool", "web", 8125, "UDP", true),
            (cnp_ports.clone(), "tool", "web", 3868, "SCTP", true),
            (cnp_ports.clone(), "tool", "web", 3868, "TCP", false),
            (cnp_ports.clone(), "tool", "api", 9100, "UDP", true),
            (cnp_ports, "tool", "api", 9101, "UDP", false),
        ],
    );
}

#[test]
fn cluster_wide_fields_netflow_cannot_judge_are_refused_by_file() {
    let dir = std::env::temp_dir().join(format!("netflow-tiers-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, yaml, expected) in [
        (
            "nodes.yaml",
            format!(
                "{CNP}metadata: {{name: n}}\nspec: {{tier: Admin, priority: 1, subject: {{namespaces: {{}}}}, egress: [{{action: Deny, to: [{{nodes: {{}}}}]}}]}}\n"
            ),
            "nodes",
        ),
        (
            "tier.yaml",
            format!(
                "{CNP}metadata: {{name: t}}\nspec: {{tier: Middle, priority: 1, subject: {{namespaces: {{}}}}}}\n"
            ),
            "Middle",
        ),
        (
            "action.yaml",
            format!(
                "{BANP}metadata: {{name: default}}\nspec: {{subject: {{namespaces: {{}}}}, ingress: [{{action: Pass, from: [{{namespaces: {{}}}}]}}]}}\n"
            ),
            "Pass",
        ),
        (
            "two.yaml",
            format!(
                "{ANP}metadata: {{name: a}}\nspec: {{priority: 1, subject: {{namespaces: {{}}}}, egress: [{{action: Deny, to: [{{namespaces: {{}}, networks: [10.0.0.0/8]}}]}}]}}\n"
            ),
            "exactly one",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        let err = load_policy_set(&path).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(expected),
            "{name}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
