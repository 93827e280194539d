//! From a cgroup id (what the kernel records with each connection) to the
//! cgroup's path below the cgroup v2 mount.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Cgroup ids to paths (relative to the cgroup v2 mount), by walking the tree.
/// Paths of cgroups that went away are kept for a grace period: the flows
/// of a pod that just ended are still being read. Each path is shared with
/// the flow records that name it.
pub struct CgroupIndex {
    mount: PathBuf,
    paths: HashMap<u64, (Arc<str>, Instant)>,
    grace: Duration,
    /// Ids a walk did not find, and when: not walked for again for a while
    /// (a cgroup that is gone stays gone).
    missing: HashMap<u64, Instant>,
    /// When paths past the grace were last forgotten (a walk does it too;
    /// with the kernel's record of made cgroups, walks are rare).
    pruned_at: Instant,
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
            pruned_at: Instant::now(),
        }
    }

    /// As [`CgroupIndex::new`], having walked the tree once: the kernel
    /// records only cgroups made after the agent loaded, so one that
    /// existed before and is gone by the first poll (an init container
    /// that ran while the agent restarted) is known only from this walk.
    pub fn walked(mount: &Path, grace: Duration) -> Self {
        let mut index = Self::new(mount, grace);
        index.refresh();
        index
    }

    /// The path of cgroup `id`, walking the tree again if it is not known yet.
    pub fn path_of(&mut self, id: u64) -> Option<Arc<str>> {
        self.path_of_or_made(id, |_| None)
    }

    /// As [`CgroupIndex::path_of`], asking `made` first (the paths the
    /// kernel recorded as cgroups were made: a cgroup that is already gone
    /// is found there, and no walk is needed for one that is not).
    pub fn path_of_or_made(
        &mut self,
        id: u64,
        made: impl FnOnce(u64) -> Option<String>,
    ) -> Option<Arc<str>> {
        if self.pruned_at.elapsed() >= self.grace / 4 {
            self.prune(Instant::now());
        }
        if let Some((path, _)) = self.paths.get(&id) {
            return Some(path.clone());
        }
        if let Some(path) = made(id) {
            let path: Arc<str> = path.into();
            self.missing.remove(&id);
            self.paths.insert(id, (path.clone(), Instant::now()));
            return Some(path);
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
            self.paths.insert(meta.ino(), (relative.into(), now));
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        self.prune(now);
    }

    /// Forgets paths not seen within the grace, and missing ids past their
    /// retry time: memory stays bounded by what churns within the grace.
    fn prune(&mut self, now: Instant) {
        let grace = self.grace;
        self.paths
            .retain(|_, (_, seen)| now.duration_since(*seen) <= grace);
        self.missing
            .retain(|_, at| now.duration_since(*at) < MISSING_RETRY);
        self.pruned_at = now;
    }
}

#[cfg(test)]
mod tests {
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
        // ... unless the kernel recorded it when it was made: then it is
        // known (for the grace period) without a walk.
        let made = |id: u64| (id == u64::MAX).then(|| "/kubepods/gone".to_string());
        assert_eq!(
            index.path_of_or_made(u64::MAX, made).as_deref(),
            Some("/kubepods/gone")
        );
        assert_eq!(index.path_of(u64::MAX).as_deref(), Some("/kubepods/gone"));
    }

    #[test]
    fn paths_learned_without_a_walk_are_forgotten_after_the_grace() {
        let root =
            std::env::temp_dir().join(format!("netflow-cgroups-prune-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let grace = Duration::from_millis(40);
        let mut index = CgroupIndex::new(&root, grace);
        let made = |id: u64| Some(format!("/kubepods/pod{id}"));
        for id in 1_000_000..1_000_100 {
            index.path_of_or_made(id, made);
        }
        assert!(index.paths.len() >= 100);
        std::thread::sleep(grace * 2);
        // Any lookup past a quarter of the grace forgets what is past it.
        index.path_of_or_made(2_000_000, made);
        assert!(
            index.paths.len() < 10,
            "{} paths kept past the grace",
            index.paths.len()
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
