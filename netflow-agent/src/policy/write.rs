//! A policy set on disk: `NAMESPACE.yaml` per namespace (multi-document
//! YAML) and `findings.json`. Everything is rendered before the first file is
//! written, and each file is written atomically.

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

/// Writes `set` into the directory `out` (made if missing).
pub fn write_dir<P: Serialize>(set: &PolicySet<P>, out: &Path) -> Result<(), WriteError> {
    let files = set
        .by_namespace
        .iter()
        .map(|(namespace, policies)| {
            Ok((out.join(format!("{namespace}.yaml")), to_yaml(policies)?))
        })
        .collect::<Result<Vec<_>, serde_norway::Error>>()?;
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
    let path = out.join("findings.json");
    write_atomically(&path, &findings).map_err(io(&path))
}
