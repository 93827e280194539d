//! The agent's metrics, in one registry (prometheus-client), exposed on
//! `/metrics` in the OpenMetrics text format. Nothing here names a workload
//! (the labels are the kernel's drop reasons and which end went unnamed),
//! except in staged mode, which the user turns on: the connections the
//! staged policies would refuse, by client workload (at most
//! [`MAX_STAGED_LABEL_SETS`] label sets; the rest counted as `_other`).

use std::{collections::BTreeMap, sync::atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct End {
    end: &'static str,
}

/// A client workload the staged policies would refuse, and the namespace
/// whose policies refuse it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Staged {
    namespace: String,
    workload: String,
    policy_namespace: String,
}

/// Label sets of `netflow_staged_denied_total` at most.
pub const MAX_STAGED_LABEL_SETS: usize = 1_000;

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the agent exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub attached: Gauge,
    pub flow_records: Counter,
    pub graph_edges: Gauge,
    pub table_entries: Gauge,
    pub table_capacity: Gauge,
    table_fill_ratio: FloatGauge,
    overflowed_connections: Counter,
    packets_not_recorded: Family<Reason, Counter>,
    unresolved: Family<End, Counter>,
    pub edges_evicted: Counter,
    pub loopback_flow_records: Counter,
    pub mesh_unattributed_flow_records: Counter,
    pub edges_over_budget: Counter,
    pub inventory_synced: Gauge,
    inventory_watch_errors: Counter,
    pub pending_flow_records: Gauge,
    pending_flow_records_dropped: Counter,
    pub poll_duration_seconds: FloatGauge,
    graph_files_set_aside: Counter,
    graph_save_failures: Counter,
    dns_refused: Family<Reason, Counter>,
    staged_denied: Family<Staged, Counter>,
    staged_label_sets: std::sync::Mutex<std::collections::HashSet<Staged>>,
}

/// What one graph update could not name, by end (the build report's counts).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unnamed {
    pub local: u64,
    pub service: u64,
    pub direction: u64,
    pub remote_ip: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            attached: Gauge::default(),
            flow_records: Counter::default(),
            graph_edges: Gauge::default(),
            table_entries: Gauge::default(),
            table_capacity: Gauge::default(),
            table_fill_ratio: FloatGauge::default(),
            overflowed_connections: Counter::default(),
            packets_not_recorded: Family::default(),
            unresolved: Family::default(),
            edges_evicted: Counter::default(),
            loopback_flow_records: Counter::default(),
            mesh_unattributed_flow_records: Counter::default(),
            edges_over_budget: Counter::default(),
            inventory_synced: Gauge::default(),
            inventory_watch_errors: Counter::default(),
            pending_flow_records: Gauge::default(),
            pending_flow_records_dropped: Counter::default(),
            poll_duration_seconds: FloatGauge::default(),
            graph_files_set_aside: Counter::default(),
            graph_save_failures: Counter::default(),
            dns_refused: Family::default(),
            staged_denied: Family::default(),
            staged_label_sets: Default::default(),
            // Replaced below by the registry that holds the handles above.
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "netflow_attached",
            "1 while the programs are attached",
            m.attached.clone(),
        );
        registry.register(
            "netflow_flow_records",
            "Flow records read from the kernel",
            m.flow_records.clone(),
        );
        registry.register(
            "netflow_graph_edges",
            "Edges in this node's graph",
            m.graph_edges.clone(),
        );
        registry.register(
            "netflow_table_entries",
            "Connections in the kernel table",
            m.table_entries.clone(),
        );
        registry.register(
            "netflow_table_capacity",
            "Connections the kernel table holds",
            m.table_capacity.clone(),
        );
        registry.register(
            "netflow_table_fill_ratio",
            "Kernel table fill, 0 to 1",
            m.table_fill_ratio.clone(),
        );
        registry.register(
            "netflow_overflowed_connections",
            "Connections seen only through the overflow ring",
            m.overflowed_connections.clone(),
        );
        registry.register(
            "netflow_packets_not_recorded",
            "Packets the kernel could not record, by reason",
            m.packets_not_recorded.clone(),
        );
        registry.register(
            "netflow_unresolved",
            "Flow records whose ends could not be named, by which end (remote_ip: an external address with no DNS name)",
            m.unresolved.clone(),
        );
        registry.register(
            "netflow_loopback_flow_records",
            "Flow records over loopback (a pod's processes among themselves, such as a mesh sidecar and its app): no edge",
            m.loopback_flow_records.clone(),
        );
        registry.register(
            "netflow_mesh_unattributed_flow_records",
            "Server-side flow records on a mesh sidecar's capture port of a pod with several ports: the client's record names the port",
            m.mesh_unattributed_flow_records.clone(),
        );
        registry.register(
            "netflow_graph_edges_evicted",
            "Edges dropped because the graph reached --max-edges (least recently seen first)",
            m.edges_evicted.clone(),
        );
        registry.register(
            "netflow_graph_edges_over_budget",
            "Edges dropped because their client held more than --max-edges-per-client (a scan, a client spraying connections)",
            m.edges_over_budget.clone(),
        );
        registry.register(
            "netflow_inventory_synced",
            "1 once the inventory is loaded or every watch has listed",
            m.inventory_synced.clone(),
        );
        registry.register(
            "netflow_inventory_watch_errors",
            "Failed watch requests of the live inventory (each is retried)",
            m.inventory_watch_errors.clone(),
        );
        registry.register(
            "netflow_pending_flow_records",
            "Flow records held until the inventory has synced",
            m.pending_flow_records.clone(),
        );
        registry.register(
            "netflow_pending_flow_records_dropped",
            "Flow records dropped while waiting for the inventory (the hold was full)",
            m.pending_flow_records_dropped.clone(),
        );
        registry.register(
            "netflow_poll_duration_seconds",
            "Time the last poll of the kernel table took",
            m.poll_duration_seconds.clone(),
        );
        registry.register(
            "netflow_graph_files_set_aside",
            "Graph files found unreadable (corrupt, or of a newer layout) at start and moved aside",
            m.graph_files_set_aside.clone(),
        );
        registry.register(
            "netflow_graph_save_failures",
            "Saves of the graph that failed (each retried at the next interval)",
            m.graph_save_failures.clone(),
        );
        registry.register(
            "netflow_dns_answers_refused",
            "DNS answers not believed, by reason (unsolicited: no query of that socket asked it; untrusted_server: not the cluster's DNS; workload_cap: past the names one workload may hold; pending_full: too many queries in flight)",
            m.dns_refused.clone(),
        );
        registry.register(
            "netflow_staged_denied",
            "Connections the staged policies (run --staged) would refuse, by client namespace and workload and by the namespace whose policies refuse them",
            m.staged_denied.clone(),
        );
        // Every end is exported from the start, at 0.
        m.add_unnamed(Unnamed::default());
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// The kernel table's size and how full it is.
    pub fn set_table(&self, entries: u64, capacity: u32) {
        self.table_entries.set(gauge_value(entries));
        self.table_capacity.set(i64::from(capacity));
        let fill = if capacity == 0 {
            0.0
        } else {
            entries as f64 / f64::from(capacity)
        };
        self.table_fill_ratio.set(fill);
    }

    /// The kernel's running totals (since the programs were loaded): the
    /// counters move by what is new since the last call.
    pub fn set_kernel_totals(&self, overflowed_connections: u64, drops: &BTreeMap<String, u64>) {
        raise_to(&self.overflowed_connections, overflowed_connections);
        for (reason, total) in drops {
            let counter = self.packets_not_recorded.get_or_create(&Reason {
                reason: reason.clone(),
            });
            raise_to(&counter, *total);
        }
    }

    pub fn add_unnamed(&self, unnamed: Unnamed) {
        for (end, count) in [
            ("local", unnamed.local),
            ("service", unnamed.service),
            ("direction", unnamed.direction),
            ("remote_ip", unnamed.remote_ip),
        ] {
            self.unresolved.get_or_create(&End { end }).inc_by(count);
        }
    }

    /// Running totals kept elsewhere (the live inventory's watch errors, the
    /// hold's drops).
    pub fn set_inventory_totals(&self, watch_errors: u64, pending_dropped: u64) {
        raise_to(&self.inventory_watch_errors, watch_errors);
        raise_to(&self.pending_flow_records_dropped, pending_dropped);
    }

    /// DNS answers not believed: the reader's totals by reason, and those
    /// from servers that are not the cluster's DNS.
    pub fn set_dns_refused(
        &self,
        by_reason: &BTreeMap<String, u64>,
        untrusted_server: u64,
        workload_cap: u64,
    ) {
        let ours = [
            ("untrusted_server", untrusted_server),
            ("workload_cap", workload_cap),
        ];
        for (reason, total) in by_reason
            .iter()
            .map(|(reason, total)| (reason.as_str(), *total))
            .chain(ours)
        {
            let counter = self.dns_refused.get_or_create(&Reason {
                reason: reason.to_string(),
            });
            raise_to(&counter, total);
        }
    }

    /// `connections` more that the staged policies would refuse, from
    /// `workload` of `namespace`, refused by `policy_namespace`'s policies.
    pub fn add_staged_denied(
        &self,
        namespace: &str,
        workload: &str,
        policy_namespace: &str,
        connections: u64,
    ) {
        let mut labels = Staged {
            namespace: namespace.to_string(),
            workload: workload.to_string(),
            policy_namespace: policy_namespace.to_string(),
        };
        {
            let mut seen = self
                .staged_label_sets
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !seen.contains(&labels) {
                if seen.len() >= MAX_STAGED_LABEL_SETS {
                    labels = Staged {
                        namespace: "_other".into(),
                        workload: "_other".into(),
                        policy_namespace: "_other".into(),
                    };
                } else {
                    seen.insert(labels.clone());
                }
            }
        }
        self.staged_denied
            .get_or_create(&labels)
            .inc_by(connections);
    }

    /// The state directory's running totals.
    pub fn set_graph_file_totals(&self, set_aside: u64, save_failures: u64) {
        raise_to(&self.graph_files_set_aside, set_aside);
        raise_to(&self.graph_save_failures, save_failures);
    }
}

/// Moves a counter up to `total` (a counter never goes down: a smaller total
/// leaves it where it is).
fn raise_to(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

pub fn gauge_value(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_in_the_openmetrics_text_format() {
        let metrics = Metrics::default();
        metrics.attached.set(1);
        metrics.set_table(5, 10);
        metrics.set_kernel_totals(0, &BTreeMap::from([("map_full".to_string(), 3)]));
        metrics.set_kernel_totals(0, &BTreeMap::from([("map_full".to_string(), 7)]));
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE netflow_packets_not_recorded counter\n"),
            "{text}"
        );
        assert!(
            text.contains("netflow_packets_not_recorded_total{reason=\"map_full\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("netflow_table_fill_ratio 0.5\n"), "{text}");
        assert!(text.contains("netflow_attached 1\n"), "{text}");
        assert!(
            text.contains("netflow_unresolved_total{end=\"remote_ip\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_never_go_down() {
        let counter = Counter::default();
        raise_to(&counter, 5);
        raise_to(&counter, 3);
        assert_eq!(counter.get(), 5);
    }
}
