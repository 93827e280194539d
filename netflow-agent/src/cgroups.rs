//! From a cgroup id (what the kernel records) to a cgroup path, and from a
//! path to the pod and container kubelet put there.
//!
//! kubelet lays out pod cgroups in two ways (cgroup drivers), and runtimes
//! name containers their own way:
//!
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID with _>.slice/cri-containerd-<ID>.scope`
//!   (Guaranteed pods skip the QoS level; CRI-O uses `crio-<ID>.scope`, Docker `docker-<ID>.scope`);
//! - cgroupfs: `/kubepods/burstable/pod<UID>/<ID>`;
//! - crun may add one more level below the container (`.../<ID>/container`).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The pod (and container) a cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupPod {
    pub pod_uid: String,
    pub container_id: Option<String>,
}

/// Reads the pod UID and container id out of a cgroup path, or `None` when
/// the path is not a pod's (a system service, the root, a node process).
pub fn pod_of_cgroup(path: &str) -> Option<CgroupPod> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (index, pod_uid) = components
        .iter()
        .enumerate()
        .find_map(|(index, component)| pod_uid_of(component).map(|uid| (index, uid)))?;
    let container_id = components
        .get(index + 1)
        .and_then(|component| container_id_of(component));
    Some(CgroupPod {
        pod_uid,
        container_id,
    })
}

fn pod_uid_of(component: &str) -> Option<String> {
    // systemd: kubepods[-qos]-pod<uid with _>.slice
    if let Some(slice) = component.strip_suffix(".slice") {
        let position = slice.rfind("-pod")?;
        let uid = &slice[position + 4..];
        return is_uid(uid).then(|| uid.replace('_', "-"));
    }
    // cgroupfs: pod<uid>
    let uid = component.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_string())
}

fn is_uid(text: &str) -> bool {
    text.len() >= 8
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
}

fn container_id_of(component: &str) -> Option<String> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    // CRI-O's conmon monitor sits beside the container: it is not the container.
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-", "cri-dockerd-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Cgroup ids to paths (relative to the cgroup v2 mount), by walking the tree.
/// Paths of cgroups that went away are kept for a grace period: the flows
/// of a pod that just ended are still being read.
pub struct CgroupIndex {
    mount: PathBuf,
    paths: HashMap<u64, (String, Instant)>,
    grace: Duration,
    /// Ids a walk did not find, and when: not walked for again for a while
    /// (a cgroup that is gone stays gone).
    missing: HashMap<u64, Instant>,
}

/// How long an id that a walk did not find is not looked for again.
const MISSING_RETRY: Duration = Duration::from_secs(10);

impl CgroupIndex {
    pub fn new(mount: &Path, grace: Duration) -> Self {
        Self {
            mount: mount.to_path_buf(),
            paths: HashMap::new(),
            grace,
            missing: HashMap::new(),
        }
    }

    /// The path of cgroup `id`, walking the tree again if it is not known yet.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if let Some((path, _)) = self.paths.get(&id) {
            return Some(path.clone());
        }
        // Every id not yet seen walks the tree once (a cgroup made since the
        // last walk); one a walk did not find is not walked for again soon.
        if self
            .missing
            .get(&id)
            .is_some_and(|at| at.elapsed() < MISSING_RETRY)
        {
            return None;
        }
        self.refresh();
        let found = self.paths.get(&id).map(|(path, _)| path.clone());
        if found.is_none() {
            self.missing.insert(id, Instant::now());
        }
        found
    }

    /// Walks the whole tree; forgets cgroups gone for longer than the grace.
    pub fn refresh(&mut self) {
        let now = Instant::now();
        self.missing
            .retain(|_, at| now.duration_since(*at) < MISSING_RETRY);
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let relative = dir
                .strip_prefix(&self.mount)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_default();
            let relative = if relative == "/" {
                "/".to_string()
            } else {
                relative
            };
            self.paths.insert(meta.ino(), (relative, now));
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        let grace = self.grace;
        self.paths
            .retain(|_, (_, seen)| now.duration_since(*seen) <= grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6a3f2e-8c1d-4e5f-9a7b-123456789abc";
    const ID: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

    fn pod(container: Option<&str>) -> Option<CgroupPod> {
        Some(CgroupPod {
            pod_uid: UID.into(),
            container_id: container.map(str::to_string),
        })
    }

    #[test]
    fn systemd_driver_with_containerd() {
        let uid = UID.replace('-', "_");
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(pod_of_cgroup(&path), pod(Some(ID)));
    }

    #[test]
    fn systemd_driver_guaranteed_pod_with_crio_and_conmon() {
        let uid = UID.replace('-', "_");
        let path = format!("/kubepods.slice/kubepods-pod{uid}.slice/crio-{ID}.scope");
        assert_eq!(pod_of_cgroup(&path), pod(Some(ID)));
        let conmon = format!("/kubepods.slice/kubepods-pod{uid}.slice/crio-conmon-{ID}.scope");
        assert_eq!(pod_of_cgroup(&conmon), pod(None));
    }

    #[test]
    fn cgroupfs_driver_and_crun_sub_cgroup() {
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            pod(Some(ID))
        );
        assert_eq!(
            pod_of_cgroup(&format!("/kubepods/pod{UID}/{ID}/container")),
            pod(Some(ID))
        );
        assert_eq!(pod_of_cgroup(&format!("/kubepods/pod{UID}")), pod(None));
    }

    #[test]
    fn other_cgroups_are_not_pods() {
        assert_eq!(pod_of_cgroup("/system.slice/kubelet.service"), None);
        assert_eq!(pod_of_cgroup("/"), None);
        assert_eq!(pod_of_cgroup("/user.slice/user-0.slice/podman.slice"), None);
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn ids_are_inode_numbers_of_the_tree() {
        let root = std::env::temp_dir().join(format!("netflow-cgroups-{}", std::process::id()));
        let pod = root.join("kubepods/pod0b6a3f2e-8c1d-4e5f-9a7b-123456789abc");
        fs::create_dir_all(&pod).unwrap();
        let mut index = CgroupIndex::new(&root, Duration::from_secs(60));
        let id = fs::metadata(&pod).unwrap().ino();
        assert_eq!(
            index.path_of(id).as_deref(),
            Some("/kubepods/pod0b6a3f2e-8c1d-4e5f-9a7b-123456789abc")
        );
        assert_eq!(
            index.path_of(fs::metadata(&root).unwrap().ino()).as_deref(),
            Some("/")
        );
        // A cgroup made right after a walk is found at once.
        let later = root.join("kubepods/later");
        fs::create_dir_all(&later).unwrap();
        assert_eq!(
            index
                .path_of(fs::metadata(&later).unwrap().ino())
                .as_deref(),
            Some("/kubepods/later")
        );
        // A cgroup that went away is still known during the grace period.
        fs::remove_dir_all(&root).unwrap();
        index.refresh();
        assert!(index.path_of(id).is_some());
        // An id no walk finds is remembered as missing.
        assert!(index.path_of(u64::MAX).is_none());
        assert!(index.missing.contains_key(&u64::MAX));
    }
}
