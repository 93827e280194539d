//! From a cgroup path (what the kernel stage records) to the pod and
//! container kubelet put there.
//!
//! kubelet lays out pod cgroups in two ways (cgroup drivers), and runtimes
//! name containers their own way:
//!
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID with _>.slice/cri-containerd-<ID>.scope`
//!   (Guaranteed pods skip the QoS level; CRI-O uses `crio-<ID>.scope`, Docker `docker-<ID>.scope`);
//! - cgroupfs: `/kubepods/burstable/pod<UID>/<ID>`;
//! - crun may add one more level below the container (`.../<ID>/container`).

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
