//! A policy set on disk: `NAMESPACE.yaml` per namespace (multi-document
//! YAML), the cluster admin's tiers in `_cluster-admin.yaml` and
//! `_cluster-baseline.yaml` (no namespace name starts with `_`), and
//! `findings.json`. Every file is first written in full under a temporary
//! name ([`StagedDir`]: a namespace's file as soon as its policies are
//! generated, so a large cluster's policies are never all in memory), and
//! only when all are written are they renamed into place: a failure leaves
//! the directory as it was.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::Serialize;

use super::{
    generate::PolicySet,
    yaml_emit::{self, EmitError},
};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot render the policies")]
    Render(#[from] super::yaml_emit::EmitError),
    #[error("cannot render the findings")]
    Findings(#[from] serde_json::Error),
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Policies as one multi-document YAML text.
pub fn to_yaml<T: Serialize>(policies: &[T]) -> Result<String, EmitError> {
    let mut out = String::new();
    for policy in policies {
        out.push_str("---\n");
        out.push_str(&yaml_emit::to_string(policy)?);
    }
    Ok(out)
}

/// The Admin tier's file: applied before any namespace's.
pub const ADMIN_TIER_FILE: &str = "_cluster-admin.yaml";
/// The Baseline tier's file: applied last.
pub const BASELINE_TIER_FILE: &str = "_cluster-baseline.yaml";

/// Writes `set` into the directory `out` (made if missing). A tier file of
/// an earlier run that this set has no objects for is removed, so the
/// directory always reads back as this set.
pub fn write_dir<P: Serialize>(set: &PolicySet<P>, out: &Path) -> Result<(), WriteError> {
    let dir = StagedDir::new(out);
    for (namespace, policies) in &set.by_namespace {
        dir.stage_namespace(namespace, policies)?;
    }
    dir.commit(set)
}

/// A policy directory being written: files staged under temporary names
/// (by any number of threads at once), renamed into place together by
/// [`StagedDir::commit`], removed if it is dropped before.
pub struct StagedDir {
    out: PathBuf,
    /// (temporary, final) names of the files written so far.
    staged: Mutex<Vec<(PathBuf, PathBuf)>>,
    /// The directory did not exist before: removed again if nothing is
    /// committed.
    made: Mutex<bool>,
}

impl StagedDir {
    /// The directory `out`, made when the first file is staged.
    pub fn new(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            staged: Mutex::default(),
            made: Mutex::default(),
        }
    }

    /// Writes one namespace's policies (multi-document YAML) under a
    /// temporary name.
    pub fn stage_namespace<T: Serialize>(
        &self,
        namespace: &str,
        policies: &[T],
    ) -> Result<(), WriteError> {
        let name = format!("{namespace}.yaml");
        let path = self.out.join(&name);
        self.stage(&name, |writer| write_yaml(writer, policies, &path))
    }

    fn stage(
        &self,
        name: &str,
        write: impl FnOnce(&mut std::io::BufWriter<fs::File>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        {
            let mut made = lock(&self.made);
            if !*made && !self.out.is_dir() {
                fs::create_dir_all(&self.out).map_err(io_error(&self.out))?;
                *made = true;
            }
        }
        let path = self.out.join(name);
        let temporary = self.out.join(format!(".{name}.tmp-{}", std::process::id()));
        // Registered first: dropped unfinished, it is removed too.
        lock(&self.staged).push((temporary.clone(), path.clone()));
        let file = fs::File::create(&temporary).map_err(io_error(&path))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 16, file);
        write(&mut writer)?;
        writer.flush().map_err(io_error(&path))?;
        writer.get_ref().sync_all().map_err(io_error(&path))
    }

    /// Stages the tier files and `findings.json`, then renames every staged
    /// file into place and removes tier files this set has no objects for.
    pub fn commit<P>(self, set: &PolicySet<P>) -> Result<(), WriteError> {
        let mut stale = Vec::new();
        for (name, objects) in [
            (ADMIN_TIER_FILE, &set.admin_tier),
            (BASELINE_TIER_FILE, &set.baseline_tier),
        ] {
            if objects.is_empty() {
                stale.push(self.out.join(name));
            } else {
                let path = self.out.join(name);
                self.stage(name, |writer| write_yaml(writer, objects, &path))?;
            }
        }
        let path = self.out.join("findings.json");
        self.stage("findings.json", |writer| {
            serde_json::to_writer_pretty(&mut *writer, &set.findings)?;
            writer.write_all(b"\n").map_err(io_error(&path))
        })?;
        let staged = std::mem::take(&mut *lock(&self.staged));
        for (temporary, path) in staged {
            fs::rename(&temporary, &path).map_err(io_error(&path))?;
        }
        for path in &stale {
            match fs::remove_file(path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error(path)(err));
                }
                _ => {}
            }
        }
        *lock(&self.made) = false;
        // The renames are durable once the directory is synced.
        fs::File::open(&self.out)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.out))
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        for (temporary, _) in lock(&self.staged).iter() {
            let _ = fs::remove_file(temporary);
        }
        if *lock(&self.made) {
            let _ = fs::remove_dir(&self.out);
        }
    }
}

/// Policies as multi-document YAML, written to `path` as they are rendered.
fn write_yaml<T: Serialize>(
    writer: &mut impl std::io::Write,
    policies: &[T],
    path: &Path,
) -> Result<(), WriteError> {
    for policy in policies {
        writer.write_all(b"---\n").map_err(io_error(path))?;
        yaml_emit::to_writer(&mut *writer, policy)?;
    }
    Ok(())
}

/// A staged directory's lists stay consistent whatever a writer did.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(findings: usize) -> PolicySet<String> {
        let mut set = PolicySet::default();
        set.by_namespace
            .insert("shop".into(), vec!["a policy".to_string()]);
        set.findings = (0..findings)
            .map(|index| super::super::generate::Finding {
                kind: "test".into(),
                workload: format!("shop/w{index}"),
                detail: String::new(),
            })
            .collect();
        set
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn nothing_is_in_place_until_everything_is_written() {
        let root = std::env::temp_dir().join(format!("netflow-write-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let out = root.join("policies");
        // Given up half-way: no directory, no temporary file.
        let dir = StagedDir::new(&out);
        dir.stage_namespace("shop", &["a policy"]).unwrap();
        assert_eq!(
            listing(&out),
            [".shop.yaml.tmp-".to_string() + &std::process::id().to_string()]
        );
        drop(dir);
        assert!(!out.exists());

        write_dir(&set(1), &out).unwrap();
        assert_eq!(listing(&out), ["findings.json", "shop.yaml"]);
        assert_eq!(
            fs::read_to_string(out.join("shop.yaml")).unwrap(),
            "---\na policy\n"
        );
        // A second run given up keeps the first run's files as they were.
        let before = fs::read_to_string(out.join("findings.json")).unwrap();
        let dir = StagedDir::new(&out);
        dir.stage_namespace("shop", &["another"]).unwrap();
        drop(dir);
        assert_eq!(listing(&out), ["findings.json", "shop.yaml"]);
        assert_eq!(
            fs::read_to_string(out.join("findings.json")).unwrap(),
            before
        );
        assert_eq!(
            fs::read_to_string(out.join("shop.yaml")).unwrap(),
            "---\na policy\n"
        );
        fs::remove_dir_all(root).unwrap();
    }
}
