//! Finding the cgroup v2 hierarchy and the cgroups in it.
//!
//! The mount point differs between machines (`/sys/fs/cgroup` on most
//! Kubernetes nodes, `/sys/fs/cgroup/unified` on hybrid systems), so it is read
//! from `/proc/self/mountinfo`, never assumed.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Mountinfo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 filesystem is mounted (none listed in {0}); netflow attaches to cgroup v2: mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2(PathBuf),
    #[error("cgroup {0} does not exist")]
    Missing(PathBuf),
    #[error("{path} is not inside the cgroup v2 hierarchy mounted at {mount}")]
    Outside { path: PathBuf, mount: PathBuf },
    #[error("cannot read cgroup {path}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The mount point of the cgroup v2 hierarchy of this process.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Mountinfo {
        path: MOUNTINFO.into(),
        source,
    })?;
    parse_mountinfo(&text).ok_or_else(|| CgroupError::NoCgroup2(MOUNTINFO.into()))
}

/// The first `cgroup2` mount point in mountinfo text (see proc(5)).
pub fn parse_mountinfo(text: &str) -> Option<PathBuf> {
    parse_mountinfo_all(text).into_iter().next()
}

/// Every cgroup v2 mount point, in mount order. In a container there are
/// usually two: the container's own view at /sys/fs/cgroup and the host's
/// hierarchy mounted from a hostPath (which is where netflow attaches).
pub fn parse_mountinfo_all(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            if fstype != "cgroup2" {
                return None;
            }
            let mount_point = before.split_whitespace().nth(4)?;
            Some(PathBuf::from(unescape_octal(mount_point)))
        })
        .collect()
}

/// The cgroup to attach to and the cgroup v2 mount it is in: `requested`
/// (absolute, or relative to the first mount), or the first mount's root.
pub fn locate(requested: Option<&Path>) -> Result<(PathBuf, PathBuf), CgroupError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Mountinfo {
        path: MOUNTINFO.into(),
        source,
    })?;
    let mounts = parse_mountinfo_all(&text);
    let first = mounts
        .first()
        .ok_or_else(|| CgroupError::NoCgroup2(MOUNTINFO.into()))?;
    let mount = match requested {
        Some(path) if path.is_absolute() => {
            let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            let canonical_mounts: Vec<(PathBuf, &PathBuf)> = mounts
                .iter()
                .filter_map(|mount| Some((mount.canonicalize().ok()?, mount)))
                .collect();
            // The deepest mount holding the path (mounts can nest).
            let holding = canonical_mounts
                .iter()
                .filter(|(real, _)| canonical.starts_with(real))
                .max_by_key(|(real, _)| real.components().count());
            if let Some((_, mount)) = holding {
                mount
            } else if let [(_, only)] = canonical_mounts
                .iter()
                .filter(|(real, _)| real.starts_with(&canonical))
                .collect::<Vec<_>>()[..]
            {
                // A hybrid host's /sys/fs/cgroup (v1 controllers on tmpfs)
                // mounted whole, as the DaemonSet's hostPath does: its
                // cgroup v2 tree is the one mount below it (`unified`).
                return Ok(((*only).clone(), resolve(only, None)?));
            } else {
                first
            }
        }
        _ => first,
    };
    let cgroup = resolve(mount, requested)?;
    Ok((mount.clone(), cgroup))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &field[i + 1..i + 4];
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves the cgroup to attach to: the hierarchy root when `requested` is
/// `None`; otherwise an absolute path inside the mount, or a path relative to it.
pub fn resolve(mount: &Path, requested: Option<&Path>) -> Result<PathBuf, CgroupError> {
    let path = match requested {
        None => mount.to_path_buf(),
        Some(path) if path.is_absolute() => path.to_path_buf(),
        Some(path) => mount.join(path),
    };
    if !path.exists() {
        return Err(CgroupError::Missing(path));
    }
    let canonical = path.canonicalize().map_err(|source| CgroupError::Stat {
        path: path.clone(),
        source,
    })?;
    let mount = mount.canonicalize().map_err(|source| CgroupError::Stat {
        path: mount.to_path_buf(),
        source,
    })?;
    if !canonical.starts_with(&mount) || !canonical.join("cgroup.procs").exists() {
        return Err(CgroupError::Outside {
            path: canonical,
            mount,
        });
    }
    Ok(canonical)
}

/// The kernel's id of a cgroup v2 directory: its inode number on cgroupfs,
/// the same value `bpf_skb_cgroup_id` reports.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    fs::metadata(path)
        .map(|meta| meta.ino())
        .map_err(|source| CgroupError::Stat {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn lists_every_cgroup2_mount_of_a_container() {
        let text = "\
40 30 0:35 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
41 30 0:35 / /host/sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_mountinfo_all(text),
            vec![
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/host/sys/fs/cgroup")
            ]
        );
    }

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        assert_eq!(
            parse_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_a_unified_mount_with_optional_fields() {
        let text = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(text), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn v1_only_is_not_mistaken_for_v2() {
        let text = "35 33 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(parse_mountinfo(text), None);
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let text = "34 33 0:29 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(text), Some(PathBuf::from("/mnt/my cgroup")));
    }

    #[test]
    fn a_missing_cgroup_is_named() {
        let err = resolve(Path::new("/"), Some(Path::new("/no/such/cgroup"))).unwrap_err();
        assert_eq!(err.to_string(), "cgroup /no/such/cgroup does not exist");
    }
}
