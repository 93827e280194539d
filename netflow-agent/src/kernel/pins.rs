//! Where the kernel's counts outlive the agent: the connection table, the
//! per-socket counts and the drop counters pinned in a bpffs directory, so
//! a restarted agent (an upgrade, a crash) goes on with what the kernel
//! holds: each connection keeps who opened it and when, sockets keep the
//! counts not yet folded, and the drop counters stay totals.
//!
//! The directory is versioned by the maps' layout and keyed by the cgroup
//! the programs attach to: `<base>/v<MAPS_LAYOUT_VERSION>/cgroup-<id>`.
//! Two agents attached to different cgroups of one kernel (the lab's nodes)
//! never share a table, and an agent whose maps have another layout starts
//! afresh instead of reading bytes it does not understand. A pin whose map
//! does not match what this build would make (type, key, value or size: a
//! changed `--flow-entries`) is removed, said, and made again.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};

/// Moves whenever a pinned map's key or value layout changes.
pub const MAPS_LAYOUT_VERSION: u32 = 1;

/// statfs(2)'s magic number of a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted by convention; mounted here when it is not.
const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{path} is not on a bpffs, and one could not be mounted at {BPFFS} ({source}); mount one with `mount -t bpf bpf {BPFFS}` (in the DaemonSet: a hostPath volume of the node's {BPFFS})"
    )]
    NotBpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One agent's pin directory.
#[derive(Clone, Debug)]
pub struct PinDir {
    dir: PathBuf,
}

/// What a pinned map must be to be used again.
pub struct Shape {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl PinDir {
    /// The directory below `base` for programs attached to cgroup `cgroup_id`,
    /// made if needed (and bpffs mounted at its usual place if `base` is
    /// below it and nothing is mounted there).
    pub fn new(base: &Path, cgroup_id: u64) -> Result<Self, PinError> {
        if !on_bpffs(base) {
            let mounted = if base.starts_with(BPFFS) {
                mount_bpffs()
            } else {
                Err(std::io::Error::from_raw_os_error(libc::ENOTSUP))
            };
            let usable = mounted.and_then(|()| {
                on_bpffs(base)
                    .then_some(())
                    .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOTSUP))
            });
            if let Err(source) = usable {
                return Err(PinError::NotBpffs {
                    path: base.to_path_buf(),
                    source,
                });
            }
        }
        let dir = base
            .join(format!("v{MAPS_LAYOUT_VERSION}"))
            .join(format!("cgroup-{cgroup_id}"));
        std::fs::create_dir_all(&dir).map_err(|source| PinError::Create {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pin of map `name`. A pin there whose map is not `shape` is
    /// removed first (and said); returns whether a usable pin is there.
    pub fn prepare(&self, name: &str, shape: &Shape) -> (PathBuf, bool) {
        let path = self.dir.join(name);
        if !path.exists() {
            return (path, false);
        }
        let fits = MapInfo::from_pin(&path).is_ok_and(|info| {
            info.map_type().is_ok_and(|kind| kind == shape.map_type)
                && info.key_size() == shape.key_size
                && info.value_size() == shape.value_size
                && info.max_entries() == shape.max_entries
        });
        if fits {
            return (path, true);
        }
        tracing::warn!(
            pin = %path.display(),
            "a pinned map of another shape (an older build, or another --flow-entries): starting it afresh"
        );
        let _ = std::fs::remove_file(&path);
        (path, false)
    }

    /// Removes the directory and its pins: the counts go with them.
    pub fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

fn on_bpffs(path: &Path) -> bool {
    // The nearest existing ancestor decides (the directory may not exist yet).
    let existing = path.ancestors().find(|ancestor| ancestor.exists());
    let Some(existing) = existing else {
        return false;
    };
    let Ok(text) = CString::new(existing.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) writes one statfs struct through a valid pointer.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(text.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}

fn mount_bpffs() -> std::io::Result<()> {
    super::pseudo_fs::mount("bpf", Path::new(BPFFS))
}
