//! `policy apply`: server-side apply of a policy directory. Every file is
//! read and checked before the first object is sent.

use std::path::Path;

use anyhow::bail;

use crate::policy::apply::{FIELD_MANAGER, apply, params, read};

pub fn run(
    dir: &Path,
    kubeconfig: Option<&Path>,
    dry_run: bool,
    force: bool,
) -> anyhow::Result<()> {
    let objects = read(dir)?;
    super::super::runtime()?.block_on(async {
        let client = crate::kube::client(kubeconfig).await?;
        let params = params(dry_run, force);
        let suffix = if dry_run { " (dry run)" } else { "" };
        let mut failed = Vec::new();
        for object in &objects {
            let shown = object.shown();
            match apply(&client, object, &params).await {
                Ok(()) => println!("applied {shown}{suffix}"),
                Err(err) => {
                    eprintln!(
                        "netflow-agent: cannot apply {shown}: {}",
                        crate::kube::describe(&err)
                    );
                    failed.push(shown);
                }
            }
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} policies were not applied: {}",
                failed.len(),
                objects.len(),
                failed.join(", ")
            );
        }
        eprintln!(
            "{} policies applied{suffix} with field manager {FIELD_MANAGER}",
            objects.len()
        );
        Ok(())
    })
}
