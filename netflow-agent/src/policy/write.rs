//! A policy set on disk: `NAMESPACE.yaml` per namespace (multi-document
//! YAML), the cluster admin's tiers in `_cluster-admin.yaml` and
//! `_cluster-baseline.yaml` (no namespace name starts with `_`), and
//! `findings.json`. Everything is rendered before the first file is written,
//! and each file is written atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::generate::PolicySet;
use crate::graph::file::write_atomically;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot render the policies")]
    Render(#[from] serde_norway::Error),
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
pub fn to_yaml<T: Serialize>(policies: &[T]) -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for policy in policies {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(policy)?);
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
    let mut files = set
        .by_namespace
        .iter()
        .map(|(namespace, policies)| {
            Ok((out.join(format!("{namespace}.yaml")), to_yaml(policies)?))
        })
        .collect::<Result<Vec<_>, serde_norway::Error>>()?;
    let mut stale = Vec::new();
    for (name, objects) in [
        (ADMIN_TIER_FILE, &set.admin_tier),
        (BASELINE_TIER_FILE, &set.baseline_tier),
    ] {
        if objects.is_empty() {
            stale.push(out.join(name));
        } else {
            files.push((out.join(name), to_yaml(objects)?));
        }
    }
    let mut findings = serde_json::to_vec_pretty(&set.findings)?;
    findings.push(b'\n');
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    for (path, yaml) in &files {
        write_atomically(path, yaml.as_bytes()).map_err(io(path))?;
    }
    for path in &stale {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(err)),
            _ => {}
        }
    }
    let path = out.join("findings.json");
    write_atomically(&path, &findings).map_err(io(&path))
}
