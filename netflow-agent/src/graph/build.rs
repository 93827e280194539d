//! Flow records to graph edges: client -> server on the server's port.
//!
//! The client's ephemeral port never reaches the graph. A flow whose client
//! side could not be decided, or whose ends could not be named, is counted
//! in the report (and unnamed ends appear as `unresolved` nodes), never
//! dropped silently.

use serde::Serialize;

use std::{collections::HashMap, net::IpAddr, ops::Range, sync::Arc};

use petgraph::graph::NodeIndex;

use super::{CommGraph, Days, EdgeKey, EdgeStats, Volume, http_calls::SeenBy};
use crate::{
    identity::{self, Identity, Named},
    inventory::{MESH_PROXIES, WorkloadRef},
    model::{EndpointKind, FlowRecord, Handshake, Protocol, Side},
};

/// What a build saw, for the user to check coverage.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BuildReport {
    pub flow_records: u64,
    /// Records whose client side could not be decided (no SYN, no port rule).
    pub undecided_direction: u64,
    /// Records whose local cgroup or address named nothing in the inventory.
    pub unresolved_local: u64,
    /// Records to a Service port with no backend in the inventory.
    pub unresolved_service: u64,
    /// Records whose remote address is no pod, node or Service and had no
    /// DNS name: an external host known only by its IP.
    pub unnamed_remote: u64,
    /// Records over loopback (127.0.0.0/8, ::1): a process talking to
    /// another of its own pod or node, such as a mesh sidecar's proxy and
    /// its app. No policy sees them; they are no edge.
    pub loopback: u64,
    /// Records of a meshed pod's inbound capture port whose pod declares
    /// several ports (or none): which one the client asked for is the
    /// client's record's to say. No edge from them.
    pub mesh_unattributed: u64,
}

fn is_unnamed(endpoint: &super::Endpoint) -> bool {
    endpoint.kind == EndpointKind::External && endpoint.dns_names.is_empty()
}

/// Adds every flow record to `graph`.
pub fn add_flows(
    graph: &mut CommGraph,
    identity: &Identity<'_>,
    flows: &[FlowRecord],
) -> BuildReport {
    let mut builder = Builder::new(graph, identity);
    for flow in flows {
        builder.add(flow);
    }
    builder.report
}

/// The caches' hashing: every record looks up its local end (a cgroup path
/// of ~80 bytes) and often a Service, and SipHash was a tenth of a build.
/// Seeded at random per process. The keys are ends the inventory or the
/// kernel names (a pod's own address and cgroup, a Service's address); only
/// a Service port is a client's choice, at most 65 536 per Service, and each
/// cache lives for one build (or one interval of the daemon).
type Hashing = foldhash::fast::RandomState;

/// A Service's address, port and protocol.
type ServicePort = (IpAddr, u16, Protocol);

/// A server a client's flow reached.
#[derive(Clone, Copy)]
struct Server {
    node: NodeIndex,
    /// The port it is reached on.
    port: u16,
    /// Kept here, not read from the node per record: an external server's
    /// edge carries the names its client resolved for it.
    external: bool,
}

/// The servers behind a Service port: inline for a few, since half of a
/// log's records are a client's and each takes a copy (a list of its own
/// was an allocation per record).
type Backends = smallvec::SmallVec<[Server; 4]>;

/// Flow records into a graph, one at a time (logs are streamed through it,
/// never held whole). It keeps the graph node of every end it has named: a
/// week's log names the same few thousand ends millions of times, and
/// building an endpoint (ids, labels) costs far more than finding its node.
pub struct Builder<'g, 'a> {
    graph: &'g mut CommGraph,
    identity: &'g Identity<'a>,
    pub report: BuildReport,
    workloads: HashMap<&'a WorkloadRef, NodeIndex, Hashing>,
    /// Local ends by address and cgroup id: the cgroup path (`""` for
    /// none), the node and whether the inventory named it. One probe per
    /// record, the path compared to make sure (ids of two nodes' logs may
    /// meet); a second path under one key is looked up, not kept.
    locals: HashMap<(IpAddr, u64), LocalEnd, Hashing>,
    /// A Service's backends on a port: they do not change with time.
    services: HashMap<ServicePort, Backends, Hashing>,
    /// Remote ends that are no Service by address: what a pod address
    /// names changes only when a pod holding it starts or ends.
    remotes: HashMap<IpAddr, RemoteEnd, Hashing>,
}

/// A local end's node, under its cgroup path.
struct LocalEnd {
    /// Shared with the records that name it (a log reader hands out one
    /// copy of each path): the same path is most often the same pointer.
    cgroup: Option<Arc<str>>,
    node: NodeIndex,
    named: bool,
}

impl LocalEnd {
    fn is_under(&self, cgroup: &Option<Arc<str>>) -> bool {
        match (&self.cgroup, cgroup) {
            (Some(known), Some(cgroup)) if Arc::ptr_eq(known, cgroup) => true,
            (known, cgroup) => {
                known.as_deref().unwrap_or_default() == cgroup.as_deref().unwrap_or_default()
            }
        }
    }
}

/// A remote end's node and the times over which its address names it.
struct RemoteEnd {
    steady: Range<i64>,
    node: NodeIndex,
    external: bool,
    /// An external host known only by its address (see
    /// [`BuildReport::unnamed_remote`]).
    unnamed: bool,
}

impl<'g, 'a> Builder<'g, 'a> {
    pub fn new(graph: &'g mut CommGraph, identity: &'g Identity<'a>) -> Self {
        Self {
            graph,
            identity,
            report: BuildReport::default(),
            workloads: HashMap::default(),
            locals: HashMap::default(),
            services: HashMap::default(),
            remotes: HashMap::default(),
        }
    }

    fn node(&mut self, named: Named<'a>) -> NodeIndex {
        match named {
            Named::Workload(workload) => {
                if let Some(&index) = self.workloads.get(workload) {
                    return index;
                }
                let index = self
                    .graph
                    .upsert_endpoint(self.identity.endpoint(Named::Workload(workload)));
                self.workloads.insert(workload, index);
                index
            }
            Named::Other(endpoint) => self.graph.upsert_endpoint(endpoint),
        }
    }

    /// The local end's node; counted when the inventory does not name it.
    fn local(&mut self, flow: &FlowRecord) -> NodeIndex {
        let key = (flow.local.ip, flow.cgroup_id);
        let (node, named) = match self.locals.get(&key) {
            Some(known) if known.is_under(&flow.cgroup) => (known.node, known.named),
            known => {
                let first = known.is_none();
                let (node, named) = self.name_local(flow);
                if first {
                    let end = LocalEnd {
                        cgroup: flow.cgroup.clone(),
                        node,
                        named,
                    };
                    self.locals.insert(key, end);
                }
                (node, named)
            }
        };
        if !named {
            self.report.unresolved_local += 1;
        }
        node
    }

    /// The local end's node and whether the inventory named it, found anew.
    fn name_local(&mut self, flow: &FlowRecord) -> (NodeIndex, bool) {
        match self
            .identity
            .local_named(flow.cgroup.as_deref(), flow.local.ip)
        {
            Some(named) => (self.node(named), true),
            None => {
                let endpoint = identity::unresolved_local(flow.cgroup.as_deref(), flow.local.ip);
                (self.graph.upsert_endpoint(endpoint), false)
            }
        }
    }

    /// The servers a client's flow reached, with the port each is reached on.
    fn servers(&mut self, flow: &FlowRecord, protocol: &str, at: i64) -> Backends {
        let (ip, port) = (flow.remote.ip, flow.remote.port);
        let service_key = (ip, port, flow.protocol);
        if let Some(known) = self.services.get(&service_key) {
            return known.clone();
        }
        if !self.identity.is_service(ip) {
            let (node, external) = self.remote(ip, at);
            return smallvec::smallvec![Server {
                node,
                port,
                external,
            }];
        }
        let backends: Backends = self
            .identity
            .remote_server_named(ip, port, protocol, at)
            .into_iter()
            .map(|(named, port)| {
                let node = self.node(named);
                Server {
                    node,
                    port,
                    external: self.is_external(node),
                }
            })
            .collect();
        self.services.insert(service_key, backends.clone());
        backends
    }

    fn is_external(&self, node: NodeIndex) -> bool {
        self.graph.node(node).kind == EndpointKind::External
    }

    /// The node of a remote end that is no Service (a client, or a server
    /// reached directly) and whether it is external; counted when it is
    /// unnamed.
    fn remote(&mut self, ip: IpAddr, at: i64) -> (NodeIndex, bool) {
        let known = self
            .remotes
            .get(&ip)
            .filter(|end| end.steady.contains(&at))
            .map(|end| (end.node, end.external, end.unnamed));
        let (node, external, unnamed) = match known {
            Some(known) => known,
            None => {
                let (named, steady) = self.identity.remote_named_steady(ip, at);
                let unnamed = matches!(&named, Named::Other(endpoint) if is_unnamed(endpoint));
                let node = self.node(named);
                let external = self.is_external(node);
                self.remotes.insert(
                    ip,
                    RemoteEnd {
                        steady,
                        node,
                        external,
                        unnamed,
                    },
                );
                (node, external, unnamed)
            }
        };
        self.report.unnamed_remote += u64::from(unnamed);
        (node, external)
    }

    /// The port a server-side record's client connected to: its local
    /// port, unless a mesh sidecar's redirect put the connection on its
    /// capture port (`None`: the pod cannot tell which of its ports).
    fn server_port(&self, flow: &FlowRecord) -> Option<u16> {
        let port = flow.local.port;
        if !MESH_PROXIES.iter().any(|(_, capture)| *capture == port) {
            return Some(port);
        }
        match self.identity.mesh_of(flow.cgroup.as_deref()) {
            Some(mesh) => mesh.inbound_app_port(port),
            None => Some(port),
        }
    }

    pub fn add(&mut self, flow: &FlowRecord) {
        self.report.flow_records += 1;
        if flow.remote.ip.is_loopback() || flow.local.ip.is_loopback() {
            self.report.loopback += 1;
            return;
        }
        // Within i64: seconds of a time before the year 10000.
        let first = flow.first_seen.unix_seconds() as i64;
        let last = (flow.last_seen.unix_seconds() as i64).max(first);
        let local = self.local(flow);
        let protocol = flow.protocol.policy_name().unwrap_or_default();
        let volume = Volume {
            connections: u64::from(flow.new),
            established: match flow.handshake {
                // A flow log from before handshakes were recorded: each
                // connection counts as answered, as it did then.
                Handshake::Unknown => u64::from(flow.new),
                _ => u64::from(flow.newly_established),
            },
            packets: flow.packets_in + flow.packets_out,
            bytes: flow.bytes_in + flow.bytes_out,
        };
        let mut stats = EdgeStats {
            first_seen: first as u64,
            last_seen: last as u64,
            days_seen: Days::of_span(first as u64, last as u64),
            ..EdgeStats::default()
        };
        let at = (flow.ts.unix_seconds() as i64).max(last) as u64;
        let seen_by = match flow.client {
            Side::Remote => SeenBy::Server,
            _ => SeenBy::Client,
        };
        for request in &flow.http {
            stats
                .http
                .add_request(&request.method, &request.path, at, seen_by);
        }
        if flow.http_connection {
            stats.http.add_connection(seen_by);
        }
        let key = |port| EdgeKey {
            protocol: flow.protocol,
            port,
        };
        match flow.client {
            Side::Local => {
                stats.seen_by_client = volume;
                let servers = self.servers(flow, protocol, first);
                if servers.is_empty() {
                    self.report.unresolved_service += 1;
                    let server = self
                        .graph
                        .upsert_endpoint(identity::unresolved_local(None, flow.remote.ip));
                    self.graph
                        .observe(local, server, key(flow.remote.port), &stats);
                }
                for Server {
                    node: server,
                    port,
                    external,
                } in servers
                {
                    if external {
                        let mut stats = stats.clone();
                        let client_id = &self.graph.node(local).id;
                        stats.dns_names = self
                            .identity
                            .names_resolved_by(client_id, flow.remote.ip)
                            .into();
                        self.graph.observe(local, server, key(port), &stats);
                    } else {
                        self.graph.observe(local, server, key(port), &stats);
                    }
                }
            }
            Side::Remote => {
                let Some(port) = self.server_port(flow) else {
                    self.report.mesh_unattributed += 1;
                    return;
                };
                stats.seen_by_server = volume;
                let (client, _) = self.remote(flow.remote.ip, first);
                self.graph.observe(client, local, key(port), &stats);
            }
            Side::Unknown => self.report.undecided_direction += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        inventory::Inventory,
        model::{Address, Basis, LabelMap, Protocol},
    };

    const UID_FRONTEND: &str = "11111111-1111-1111-1111-111111111111";
    const UID_CART: &str = "22222222-2222-2222-2222-222222222222";

    fn inventory() -> Inventory {
        let pod = |name: &str, uid: &str, app: &str, ip: &str, ports: &str| {
            format!(
                r#"{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","labels":{{"app":"{app}","pod-template-hash":"abc"}},
                  "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{app}-abc","uid":"r","controller":true}}]}},
                  "spec":{{"nodeName":"node-a","containers":[{{"name":"c","ports":{ports}}}]}},
                  "status":{{"podIP":"{ip}","startTime":"2026-11-01T00:00:00Z"}}}}"#
            )
        };
        let text = format!(
            r#"{{"kind":"List","items":[
              {{"kind":"Node","metadata":{{"name":"node-a"}},"status":{{"addresses":[{{"type":"InternalIP","address":"172.30.0.2"}}]}}}},
              {},{},
              {{"kind":"Service","metadata":{{"name":"cart","namespace":"shop"}},
                "spec":{{"clusterIP":"10.96.0.20","selector":{{"app":"cart"}},"ports":[{{"port":7070,"targetPort":"grpc","protocol":"TCP"}}]}}}}
            ]}}"#,
            pod(
                "frontend-abc-1",
                UID_FRONTEND,
                "frontend",
                "10.244.0.5",
                "[]"
            ),
            pod(
                "cart-abc-1",
                UID_CART,
                "cart",
                "10.244.0.6",
                r#"[{"name":"grpc","containerPort":9090}]"#
            ),
        );
        Inventory::parse(&text).unwrap()
    }

    fn flow(
        uid: &str,
        local: (&str, u16),
        remote: (&str, u16),
        client: Side,
        new: bool,
    ) -> FlowRecord {
        FlowRecord {
            ts: "2026-11-20T10:00:05Z".parse().unwrap(),
            cgroup_id: 1,
            cgroup: Some(format!("/kubepods/besteffort/pod{uid}/0123456789abcdef0123").into()),
            protocol: Protocol(6),
            local: Address {
                ip: local.0.parse().unwrap(),
                port: local.1,
            },
            remote: Address {
                ip: remote.0.parse().unwrap(),
                port: remote.1,
            },
            initiator: client,
            client,
            client_basis: Basis::TcpSyn,
            packets_in: 4,
            packets_out: 6,
            bytes_in: 400,
            bytes_out: 600,
            first_seen: "2026-11-20T10:00:00Z".parse().unwrap(),
            last_seen: "2026-11-20T10:00:01Z".parse().unwrap(),
            tcp_flags: String::new(),
            handshake: crate::model::Handshake::Established,
            newly_established: new,
            new,
            overflow: false,
            ended: false,
            http: Vec::new(),
            http_connection: false,
        }
    }

    #[test]
    fn both_sides_of_a_service_call_make_one_edge_on_the_pod_port() {
        let inventory = inventory();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        let flows = [
            // The client's egress sees the ClusterIP and the Service port...
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 41234),
                ("10.96.0.20", 7070),
                Side::Local,
                true,
            ),
            // ...the server's ingress sees the pod IP and the targetPort.
            flow(
                UID_CART,
                ("10.244.0.6", 9090),
                ("10.244.0.5", 41234),
                Side::Remote,
                true,
            ),
            // The same connection in a later interval: not a new connection.
            flow(
                UID_CART,
                ("10.244.0.6", 9090),
                ("10.244.0.5", 41234),
                Side::Remote,
                false,
            ),
        ];
        let report = add_flows(&mut graph, &identity, &flows);
        assert_eq!(
            report,
            BuildReport {
                flow_records: 3,
                ..BuildReport::default()
            }
        );
        let edges = graph.edges();
        assert_eq!(edges.len(), 1, "{edges:?}");
        let (client, server, edge) = edges[0];
        assert_eq!(client.id, "workload:shop/Deployment/frontend");
        assert_eq!(server.id, "workload:shop/Deployment/cart");
        assert_eq!(
            edge.key.port, 9090,
            "the pod's port, never the Service's or the client's"
        );
        assert_eq!(edge.stats.volume().connections, 1);
        assert_eq!(
            server.labels,
            LabelMap::from_iter([("app".to_string(), "cart".to_string())])
        );
    }

    #[test]
    fn ends_are_named_by_their_own_cgroup_when_ids_meet() {
        // Two nodes' logs: the same address and cgroup id, two pods' cgroups
        // (ids are per node). Each record is named by its own path, also
        // after the other was cached.
        let inventory = inventory();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        let from = |uid: &str| {
            flow(
                uid,
                ("10.244.0.5", 41234),
                ("203.0.113.9", 443),
                Side::Local,
                true,
            )
        };
        let report = add_flows(
            &mut graph,
            &identity,
            &[
                from(UID_FRONTEND),
                from(UID_CART),
                from(UID_FRONTEND),
                from(UID_CART),
            ],
        );
        assert_eq!(report.unresolved_local, 0);
        let mut clients: Vec<(String, u64)> = graph
            .edges()
            .iter()
            .map(|(client, _, edge)| (client.id.clone(), edge.stats.volume().connections))
            .collect();
        clients.sort();
        assert_eq!(
            clients,
            [
                ("workload:shop/Deployment/cart".to_string(), 2),
                ("workload:shop/Deployment/frontend".to_string(), 2)
            ]
        );
    }

    #[test]
    fn a_reused_pod_ip_names_whoever_held_it_at_the_time() {
        // cart-old held 10.244.0.7 until 10:30; payments-new got it at 11:00.
        let text = r#"{"kind":"List","items":[
          {"kind":"Pod","metadata":{"name":"cart-old","namespace":"shop","uid":"u-old","labels":{"app":"cart"},
            "deletionTimestamp":"2026-11-20T10:30:00Z"},"spec":{"containers":[{"name":"c"}]},
            "status":{"podIP":"10.244.0.7","startTime":"2026-11-19T00:00:00Z"}},
          {"kind":"Pod","metadata":{"name":"payments-new","namespace":"shop","uid":"u-new","labels":{"app":"payments"}},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.7","startTime":"2026-11-20T11:00:00Z"}},
          {"kind":"Pod","metadata":{"name":"web","namespace":"shop","uid":"11111111-1111-1111-1111-111111111111","labels":{"app":"web"}},
            "spec":{"containers":[{"name":"c"}]},"status":{"podIP":"10.244.0.5","startTime":"2026-11-19T00:00:00Z"}}
        ]}"#;
        let inventory = Inventory::parse(text).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let at = |time: &str, client: Side| FlowRecord {
            first_seen: time.parse().unwrap(),
            last_seen: time.parse().unwrap(),
            ..flow(
                UID_FRONTEND,
                ("10.244.0.5", 40000),
                ("10.244.0.7", 8080),
                client,
                true,
            )
        };
        // The logs of several nodes are not in time order: the builder
        // keeps each address's end only while the same pods hold it.
        let times = [
            "2026-11-20T10:00:00Z",
            "2026-11-20T12:00:00Z",
            "2026-11-20T10:15:00Z",
            "2026-11-20T10:45:00Z",
            "2026-11-20T10:29:59Z",
            "2026-11-20T11:00:00Z",
        ];
        let seconds = |time: &str| {
            time.parse::<crate::model::Timestamp>()
                .unwrap()
                .unix_seconds()
        };
        // Each end that held the address, the first and last record it names.
        let expected = [
            ("external:10.244.0.7", times[3], times[3]),
            ("workload:shop/Pod/cart-old", times[0], times[4]),
            ("workload:shop/Pod/payments-new", times[5], times[1]),
        ]
        .map(|(id, first, last)| (id, seconds(first), seconds(last)));
        for side in [Side::Local, Side::Remote] {
            let mut graph = CommGraph::new();
            let mut builder = Builder::new(&mut graph, &identity);
            let mut unnamed = Vec::new();
            for time in times {
                builder.add(&at(time, side));
                unnamed.push(builder.report.unnamed_remote);
            }
            assert_eq!(unnamed, [0, 0, 0, 1, 1, 1], "{side}: between the pods");
            let mut ends: Vec<(&str, u64, u64)> = graph
                .edges()
                .iter()
                .map(|(client, server, edge)| {
                    let other = if side == Side::Local { server } else { client };
                    (
                        other.id.as_str(),
                        edge.stats.first_seen,
                        edge.stats.last_seen,
                    )
                })
                .collect();
            ends.sort();
            assert_eq!(ends, expected, "{side}");
        }
    }

    #[test]
    fn unknown_ends_are_named_and_counted() {
        let inventory = inventory();
        let dns = BTreeMap::from([(
            "203.0.113.10".parse().unwrap(),
            ["api.payments.example".to_string()].into_iter().collect(),
        )]);
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        let flows = [
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 40000),
                ("203.0.113.10", 443),
                Side::Local,
                true,
            ),
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 40001),
                ("169.254.169.254", 80),
                Side::Local,
                true,
            ),
            flow(
                "99999999-9999-9999-9999-999999999999",
                ("10.244.0.9", 40002),
                ("10.244.0.6", 9090),
                Side::Local,
                true,
            ),
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 40003),
                ("10.96.0.20", 9999),
                Side::Local,
                true,
            ),
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 5000),
                ("10.244.0.6", 6000),
                Side::Unknown,
                true,
            ),
            // An external host no DNS answer named.
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 40004),
                ("198.51.100.7", 443),
                Side::Local,
                true,
            ),
            // kubelet (a node process, no pod cgroup) probing the cart pod.
            FlowRecord {
                cgroup: Some("/system.slice/kubelet.service".into()),
                ..flow(
                    UID_CART,
                    ("172.30.0.2", 50000),
                    ("10.244.0.6", 9090),
                    Side::Local,
                    true,
                )
            },
        ];
        let report = add_flows(&mut graph, &identity, &flows);
        assert_eq!(report.undecided_direction, 1);
        assert_eq!(report.unresolved_local, 1);
        assert_eq!(report.unresolved_service, 1);
        assert_eq!(report.unnamed_remote, 1);
        let kinds: BTreeMap<String, EndpointKind> = graph
            .endpoints()
            .into_iter()
            .map(|e| (e.id.clone(), e.kind))
            .collect();
        assert_eq!(kinds["external:203.0.113.10"], EndpointKind::External);
        assert_eq!(
            graph.endpoint("external:203.0.113.10").unwrap().name,
            "api.payments.example"
        );
        assert_eq!(kinds["metadata:169.254.169.254"], EndpointKind::Metadata);
        assert_eq!(kinds["node:node-a"], EndpointKind::Node);
        assert_eq!(kinds["unresolved:10.96.0.20"], EndpointKind::Unresolved);
        assert!(
            kinds
                .keys()
                .any(|id| id.starts_with("unresolved:/kubepods/")),
            "{kinds:?}"
        );
        assert_eq!(graph.edge_count(), 6);
    }

    #[test]
    fn traffic_inside_a_pod_over_loopback_is_no_edge() {
        // A mesh sidecar's plumbing: the app's connection redirected to the
        // proxy's 127.0.0.1:15001, and the proxy handing an inbound
        // connection to the app from 127.0.0.6 (IPv6 alike). None of it
        // crosses the network; none of it is an edge.
        let inventory = inventory();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        let flows = [
            flow(
                UID_FRONTEND,
                ("127.0.0.1", 41000),
                ("127.0.0.1", 15001),
                Side::Local,
                true,
            ),
            flow(
                UID_CART,
                ("127.0.0.1", 9090),
                ("127.0.0.6", 41001),
                Side::Remote,
                true,
            ),
            flow(UID_CART, ("::1", 9090), ("::1", 41002), Side::Remote, true),
        ];
        let report = add_flows(&mut graph, &identity, &flows);
        assert_eq!(
            report,
            BuildReport {
                flow_records: 3,
                loopback: 3,
                ..BuildReport::default()
            }
        );
        assert_eq!(graph.edge_count(), 0);
    }

    #[test]
    fn a_mesh_sidecars_capture_port_is_the_port_the_client_asked_for() {
        // cart and catalog run Istio's sidecar: every inbound connection is
        // redirected to its port 15006, where the kernel sees it. cart's
        // app declares one port (9090; the proxy's own 15090 is not the
        // app's), catalog's two.
        let pod = |name: &str, uid: &str, ip: &str, ports: &str| {
            format!(
                r#"{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","labels":{{"app":"{name}"}}}},
                  "spec":{{"containers":[{{"name":"app","ports":{ports}}},
                    {{"name":"istio-proxy","ports":[{{"containerPort":15090,"name":"http-envoy-prom"}}]}}],
                    "initContainers":[{{"name":"istio-init"}}]}},
                  "status":{{"podIP":"{ip}","startTime":"2026-11-01T00:00:00Z"}}}}"#
            )
        };
        let text = format!(
            r#"{{"kind":"List","items":[{},{},{},
              {{"kind":"Service","metadata":{{"name":"cart","namespace":"shop"}},
                "spec":{{"clusterIP":"10.96.0.20","selector":{{"app":"cart"}},"ports":[{{"port":7070,"targetPort":9090}}]}}}}]}}"#,
            pod("frontend", UID_FRONTEND, "10.244.0.5", "[]"),
            pod(
                "cart",
                UID_CART,
                "10.244.0.6",
                r#"[{"containerPort":9090}]"#
            ),
            pod(
                "catalog",
                "33333333-3333-3333-3333-333333333333",
                "10.244.0.7",
                r#"[{"containerPort":8081},{"containerPort":9091}]"#
            ),
        );
        let inventory = Inventory::parse(&text).unwrap();
        let dns = BTreeMap::new();
        let identity = Identity::new(&inventory, &dns);
        let mut graph = CommGraph::new();
        let flows = [
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 41000),
                ("10.96.0.20", 7070),
                Side::Local,
                true,
            ),
            flow(
                UID_CART,
                ("10.244.0.6", 15006),
                ("10.244.0.5", 41000),
                Side::Remote,
                true,
            ),
            flow(
                UID_FRONTEND,
                ("10.244.0.5", 41001),
                ("10.244.0.7", 8081),
                Side::Local,
                true,
            ),
            flow(
                "33333333-3333-3333-3333-333333333333",
                ("10.244.0.7", 15006),
                ("10.244.0.5", 41001),
                Side::Remote,
                true,
            ),
        ];
        let report = add_flows(&mut graph, &identity, &flows);
        let found: Vec<(String, String, u16)> = graph
            .edges()
            .iter()
            .map(|(client, server, edge)| (client.id.clone(), server.id.clone(), edge.key.port))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "workload:shop/Pod/frontend".to_string(),
                    "workload:shop/Pod/cart".to_string(),
                    9090
                ),
                (
                    "workload:shop/Pod/frontend".to_string(),
                    "workload:shop/Pod/catalog".to_string(),
                    8081
                ),
            ]
        );
        // Both ends saw cart's connection; catalog's own record could not
        // say which of its ports it was for: counted, the client's stands.
        let cart = graph.edges()[0].2.stats.clone();
        assert_eq!(cart.seen_by_server.connections, 1);
        assert_eq!(report.mesh_unattributed, 1);
    }
}
