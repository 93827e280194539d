//! The live inventory of the DaemonSet: one kube-rs watcher per kind the
//! index needs, kept in memory and turned into an [`Inventory`] whenever it
//! changed.
//!
//! Deleted pods are not forgotten at once: a flow read at the next poll may
//! still belong to them, and their IP may already be a new pod's. They stay
//! (with the time they ended) for [`ENDED_POD_RETENTION`], so names are given
//! by time, as with a dump.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::Job,
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::{Inventory, Objects, OwnerKind, Owners};

/// How long a deleted pod still names its IP and cgroup: longer than a poll
/// interval plus the idle timeout of the connection table.
pub const ENDED_POD_RETENTION: Duration = Duration::from_secs(15 * 60);

/// The objects of one kind as the watch has delivered them, by UID.
struct Collection<K> {
    objects: BTreeMap<String, K>,
    /// Objects of a (re)list in progress: they replace `objects` when it is
    /// complete, so a relist after a broken watch also tells deletions.
    relisting: Option<BTreeMap<String, K>>,
    synced: bool,
}

impl<K> Default for Collection<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relisting: None,
            synced: false,
        }
    }
}

fn key_of<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    match &meta.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        ),
    }
}

impl<K: Resource + Clone> Collection<K> {
    /// Applies one watch event and returns the objects that are gone.
    fn apply(&mut self, event: Event<K>) -> Vec<K> {
        match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let target = self.relisting.as_mut().unwrap_or(&mut self.objects);
                target.insert(key_of(&object), object);
                Vec::new()
            }
            Event::InitDone => {
                self.synced = true;
                let listed = self.relisting.take().unwrap_or_default();
                let before = std::mem::replace(&mut self.objects, listed);
                before
                    .into_iter()
                    .filter(|(key, _)| !self.objects.contains_key(key))
                    .map(|(_, object)| object)
                    .collect()
            }
            Event::Apply(object) => {
                self.objects.insert(key_of(&object), object);
                Vec::new()
            }
            Event::Delete(object) => {
                self.objects.remove(&key_of(&object));
                vec![object]
            }
        }
    }

    fn items(&self) -> Vec<K> {
        self.objects.values().cloned().collect()
    }
}

/// Everything the watches delivered so far.
#[derive(Default)]
pub struct ClusterState {
    pods: Collection<Pod>,
    services: Collection<Service>,
    endpoint_slices: Collection<EndpointSlice>,
    nodes: Collection<Node>,
    namespaces: Collection<Namespace>,
    replica_sets: Collection<ReplicaSet>,
    deployments: Collection<Deployment>,
    stateful_sets: Collection<StatefulSet>,
    daemon_sets: Collection<DaemonSet>,
    jobs: Collection<Job>,
    /// Deleted pods with the Unix second their deletion reached us, kept
    /// for [`ENDED_POD_RETENTION`] from then (the time they ended is their
    /// deletion timestamp).
    ended_pods: Vec<(i64, Pod)>,
    /// Bumped by every change; the inventory is rebuilt only when it moved.
    generation: u64,
    built: Option<(u64, Arc<Inventory>)>,
    /// Watch requests that failed (each is retried with a backoff).
    pub watch_errors: u64,
}

impl ClusterState {
    /// Every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.pods.synced
            && self.services.synced
            && self.endpoint_slices.synced
            && self.nodes.synced
            && self.namespaces.synced
            && self.replica_sets.synced
            && self.deployments.synced
            && self.stateful_sets.synced
            && self.daemon_sets.synced
            && self.jobs.synced
    }

    pub fn apply_pod(&mut self, event: Event<Pod>, now: i64) {
        for mut pod in self.pods.apply(event) {
            // The pod held its IP until it was deleted: its deletion
            // timestamp, or now for a pod removed without one (forced).
            let ended = pod
                .metadata
                .deletion_timestamp
                .as_ref()
                .map_or(now, |time| time.0.as_second().min(now));
            if pod.metadata.deletion_timestamp.is_none()
                && let Ok(timestamp) = k8s_openapi::jiff::Timestamp::from_second(ended)
            {
                pod.metadata.deletion_timestamp = Some(Time(timestamp));
            }
            self.ended_pods.push((now, pod));
        }
        self.generation += 1;
    }

    fn apply_other<K: Resource + Clone>(
        &mut self,
        collection: fn(&mut Self) -> &mut Collection<K>,
        event: Event<K>,
    ) {
        collection(self).apply(event);
        self.generation += 1;
    }

    /// What the index reads of the owner kinds.
    fn owners(&self) -> Owners {
        let mut owners = Owners::default();
        add_owners(
            &mut owners,
            OwnerKind::ReplicaSet,
            &self.replica_sets,
            |o| o.spec.as_ref().map(|spec| &spec.selector),
        );
        add_owners(&mut owners, OwnerKind::Deployment, &self.deployments, |o| {
            o.spec.as_ref().map(|spec| &spec.selector)
        });
        add_owners(
            &mut owners,
            OwnerKind::StatefulSet,
            &self.stateful_sets,
            |o| o.spec.as_ref().map(|spec| &spec.selector),
        );
        add_owners(&mut owners, OwnerKind::DaemonSet, &self.daemon_sets, |o| {
            o.spec.as_ref().map(|spec| &spec.selector)
        });
        // A Job's selector names one run: never a workload's.
        add_owners(&mut owners, OwnerKind::Job, &self.jobs, |_| None);
        owners
    }

    /// The index as of now (rebuilt only when something changed).
    pub fn inventory(&mut self, now: i64) -> Arc<Inventory> {
        let cutoff = now.saturating_sub(ENDED_POD_RETENTION.as_secs() as i64);
        let before = self.ended_pods.len();
        self.ended_pods.retain(|(removed, _)| *removed >= cutoff);
        if self.ended_pods.len() != before {
            self.generation += 1;
        }
        if let Some((generation, inventory)) = &self.built
            && *generation == self.generation
        {
            return inventory.clone();
        }
        let mut pods = self.pods.items();
        pods.extend(self.ended_pods.iter().map(|(_, pod)| pod.clone()));
        let inventory = Arc::new(Inventory::from_objects(Objects {
            pods,
            services: self.services.items(),
            endpoint_slices: self.endpoint_slices.items(),
            nodes: self.nodes.items(),
            namespaces: self.namespaces.items(),
            owners: self.owners(),
        }));
        self.built = Some((self.generation, inventory.clone()));
        inventory
    }
}

/// Adds every object of `collection` to `owners`.
fn add_owners<K: Resource>(
    owners: &mut Owners,
    kind: OwnerKind,
    collection: &Collection<K>,
    selector: impl Fn(&K) -> Option<&LabelSelector>,
) {
    for object in collection.objects.values() {
        owners.add(kind, object.meta(), selector(object));
    }
}

/// The live inventory: watches running on the current Tokio runtime.
#[derive(Clone)]
pub struct LiveInventory {
    state: Arc<Mutex<ClusterState>>,
}

impl LiveInventory {
    /// Starts one watcher per kind (all namespaces) on the current runtime.
    pub fn start(client: &Client) -> Self {
        let state = Arc::new(Mutex::new(ClusterState::default()));
        let live = Self { state };
        live.follow(
            Api::<Pod>::all(client.clone()),
            "pods",
            slim_pod,
            |s, e, now| s.apply_pod(e, now),
        );
        live.follow(
            Api::<Service>::all(client.clone()),
            "services",
            slim_meta,
            |s, e, _| s.apply_other(|s| &mut s.services, e),
        );
        live.follow(
            Api::<EndpointSlice>::all(client.clone()),
            "endpointslices",
            slim_meta,
            |s, e, _| s.apply_other(|s| &mut s.endpoint_slices, e),
        );
        live.follow(
            Api::<Node>::all(client.clone()),
            "nodes",
            slim_node,
            |s, e, _| s.apply_other(|s| &mut s.nodes, e),
        );
        live.follow(
            Api::<Namespace>::all(client.clone()),
            "namespaces",
            slim_meta,
            |s, e, _| s.apply_other(|s| &mut s.namespaces, e),
        );
        live.follow(
            Api::<ReplicaSet>::all(client.clone()),
            "replicasets",
            |rs: &mut ReplicaSet| {
                slim_meta(rs);
                if let Some(spec) = rs.spec.as_mut() {
                    spec.template = None;
                }
                rs.status = None;
            },
            |s, e, _| s.apply_other(|s| &mut s.replica_sets, e),
        );
        live.follow(
            Api::<Deployment>::all(client.clone()),
            "deployments",
            |deployment: &mut Deployment| {
                slim_meta(deployment);
                if let Some(spec) = deployment.spec.as_mut() {
                    spec.template = Default::default();
                }
                deployment.status = None;
            },
            |s, e, _| s.apply_other(|s| &mut s.deployments, e),
        );
        live.follow(
            Api::<StatefulSet>::all(client.clone()),
            "statefulsets",
            |set: &mut StatefulSet| {
                slim_meta(set);
                if let Some(spec) = set.spec.as_mut() {
                    spec.template = Default::default();
                    spec.volume_claim_templates = None;
                }
                set.status = None;
            },
            |s, e, _| s.apply_other(|s| &mut s.stateful_sets, e),
        );
        live.follow(
            Api::<DaemonSet>::all(client.clone()),
            "daemonsets",
            |set: &mut DaemonSet| {
                slim_meta(set);
                if let Some(spec) = set.spec.as_mut() {
                    spec.template = Default::default();
                }
                set.status = None;
            },
            |s, e, _| s.apply_other(|s| &mut s.daemon_sets, e),
        );
        live.follow(
            Api::<Job>::all(client.clone()),
            "jobs",
            |job: &mut Job| {
                slim_meta(job);
                job.spec = None;
                job.status = None;
            },
            |s, e, _| s.apply_other(|s| &mut s.jobs, e),
        );
        live
    }

    /// One watcher: list, then watch from the list's resourceVersion; a
    /// broken watch resumes (or relists when its version expired), with a
    /// backoff, forever.
    fn follow<K>(
        &self,
        api: Api<K>,
        kind: &'static str,
        slim: fn(&mut K),
        apply: fn(&mut ClusterState, Event<K>, i64),
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut events = watcher(api).default_backoff().boxed();
            let mut listed = false;
            while let Some(item) = events.next().await {
                match item {
                    Ok(event) => {
                        let done = matches!(event, Event::InitDone);
                        let event = event.modify(slim);
                        if let Ok(mut state) = state.lock() {
                            apply(&mut state, event, unix_now());
                        }
                        if done && !listed {
                            listed = true;
                            info!(kind, "inventory: listed");
                        }
                    }
                    Err(err) => {
                        warn!(kind, error = %err, "inventory: watch failed; retrying");
                        if let Ok(mut state) = state.lock() {
                            state.watch_errors += 1;
                        }
                    }
                }
            }
        });
    }

    pub fn synced(&self) -> bool {
        self.state.lock().is_ok_and(|state| state.synced())
    }

    pub fn watch_errors(&self) -> u64 {
        self.state.lock().map_or(0, |state| state.watch_errors)
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        match self.state.lock() {
            Ok(mut state) => state.inventory(unix_now()),
            Err(_) => Arc::new(Inventory::default()),
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// Drops what the index never reads, so a week of watching a large cluster
/// holds little more than names, labels, owners, IPs and ports.
fn slim_meta<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().clear();
}

fn slim_pod(pod: &mut Pod) {
    slim_meta(pod);
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        spec.affinity = None;
        spec.tolerations = None;
        for container in &mut spec.containers {
            *container = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut container.name),
                ports: container.ports.take(),
                ..Default::default()
            };
        }
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

fn slim_node(node: &mut Node) {
    slim_meta(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.conditions = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, ip: &str, started: &str, owner: Option<&str>) -> Pod {
        let owner = owner.map(|rs| {
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": format!("uid-{rs}"), "controller": true}])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid,
                "labels": {"app": "web"}, "ownerReferences": owner},
            "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]}]},
            "status": {"podIP": ip, "startTime": started}
        }))
        .unwrap()
    }

    fn replica_set(name: &str, deployment: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": deployment, "uid": "d", "controller": true}]},
        }))
        .unwrap()
    }

    fn second(text: &str) -> i64 {
        k8s_openapi::jiff::Timestamp::from_str(text)
            .unwrap()
            .as_second()
    }

    use std::str::FromStr as _;

    #[test]
    fn a_deleted_pod_names_its_ip_until_it_ended_then_the_new_pod_does() {
        let mut state = ClusterState::default();
        let ip: std::net::IpAddr = "10.244.1.7".parse().unwrap();
        state.apply_pod(
            Event::Apply(pod("a", "old", "10.244.1.7", "2026-11-25T10:00:00Z", None)),
            second("2026-11-25T10:00:00Z"),
        );
        // Deleted (forced: no deletion timestamp) at 10:05, the IP reused at 10:06.
        state.apply_pod(
            Event::Delete(pod("a", "old", "10.244.1.7", "2026-11-25T10:00:00Z", None)),
            second("2026-11-25T10:05:00Z"),
        );
        state.apply_pod(
            Event::Apply(pod("b", "new", "10.244.1.7", "2026-11-25T10:06:00Z", None)),
            second("2026-11-25T10:06:00Z"),
        );
        let inventory = state.inventory(second("2026-11-25T10:06:10Z"));
        let name_at = |text: &str| {
            inventory
                .pod_by_ip(ip, second(text))
                .map(|pod| pod.name.clone())
        };
        assert_eq!(name_at("2026-11-25T10:04:00Z").as_deref(), Some("old"));
        assert_eq!(name_at("2026-11-25T10:05:30Z"), None);
        assert_eq!(name_at("2026-11-25T10:06:05Z").as_deref(), Some("new"));
        // The old pod's cgroup still names it.
        assert_eq!(&*inventory.pod_by_uid("a").unwrap().name, "old");
        // After the retention it is gone.
        let later = state.inventory(second("2026-11-25T11:00:00Z"));
        assert!(later.pod_by_uid("a").is_none());
        assert!(later.pod_by_uid("b").is_some());
    }

    #[test]
    fn a_relist_ends_the_pods_deleted_while_the_watch_was_down() {
        let mut state = ClusterState::default();
        let now = second("2026-11-25T10:00:00Z");
        state.apply_pod(Event::Init, now);
        state.apply_pod(
            Event::InitApply(pod("a", "one", "10.0.0.1", "2026-11-25T09:00:00Z", None)),
            now,
        );
        state.apply_pod(
            Event::InitApply(pod("b", "two", "10.0.0.2", "2026-11-25T09:00:00Z", None)),
            now,
        );
        state.apply_pod(Event::InitDone, now);
        assert!(state.pods.synced);
        // The watch broke; the relist no longer has "one".
        let later = second("2026-11-25T10:10:00Z");
        state.apply_pod(Event::Init, later);
        state.apply_pod(
            Event::InitApply(pod("b", "two", "10.0.0.2", "2026-11-25T09:00:00Z", None)),
            later,
        );
        // While the relist runs, the index still has both.
        assert!(state.inventory(later).pod_by_uid("a").is_some());
        state.apply_pod(Event::InitDone, later);
        assert_eq!(state.ended_pods.len(), 1);
        assert_eq!(state.ended_pods[0].0, later);
        let inventory = state.inventory(later);
        assert!(
            inventory
                .pod_by_ip("10.0.0.1".parse().unwrap(), later + 1)
                .is_none()
        );
    }

    #[test]
    fn a_rollout_keeps_naming_the_deployment() {
        let mut state = ClusterState::default();
        let now = second("2026-11-25T10:00:00Z");
        state.apply_other(
            |s| &mut s.replica_sets,
            Event::Apply(replica_set("web-1", "web")),
        );
        state.apply_pod(
            Event::Apply(pod(
                "a",
                "web-1-x",
                "10.0.0.1",
                "2026-11-25T09:00:00Z",
                Some("web-1"),
            )),
            now,
        );
        state.apply_other(
            |s| &mut s.replica_sets,
            Event::Apply(replica_set("web-2", "web")),
        );
        state.apply_pod(
            Event::Apply(pod(
                "b",
                "web-2-y",
                "10.0.0.2",
                "2026-11-25T10:00:00Z",
                Some("web-2"),
            )),
            now,
        );
        let inventory = state.inventory(now);
        for uid in ["a", "b"] {
            let workload = &inventory.pod_by_uid(uid).unwrap().workload;
            assert_eq!(
                (workload.kind.as_str(), workload.name.as_str()),
                ("Deployment", "web")
            );
        }
    }

    #[test]
    fn the_index_is_rebuilt_only_after_a_change() {
        let mut state = ClusterState::default();
        let first = state.inventory(0);
        assert!(Arc::ptr_eq(&first, &state.inventory(0)));
        state.apply_pod(
            Event::Apply(pod("a", "one", "10.0.0.1", "2026-11-25T09:00:00Z", None)),
            0,
        );
        assert!(!Arc::ptr_eq(&first, &state.inventory(0)));
    }

    #[test]
    fn a_tls_client_is_built_with_the_ring_provider() {
        // Every API server in a cluster speaks TLS; the scripted one in the
        // tests speaks plain HTTP, so the TLS setup is checked here: the
        // client builds (a missing rustls provider panics here) and a
        // request fails as a connection error, not a panic.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
            let client = Client::try_from(config).expect("TLS client");
            let err = client.apiserver_version().await.unwrap_err();
            assert!(!matches!(err, kube::Error::Api(_)), "{err}");
        });
    }

    #[test]
    fn pods_are_kept_without_what_the_index_never_reads() {
        let mut pod = pod("a", "one", "10.0.0.1", "2026-11-25T09:00:00Z", None);
        slim_pod(&mut pod);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.name, "c");
        assert!(container.env.is_none() && container.image.is_none());
        assert_eq!(pod.status.unwrap().pod_ip.as_deref(), Some("10.0.0.1"));
    }
}
