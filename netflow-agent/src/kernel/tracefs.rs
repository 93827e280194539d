//! The tracing filesystem, for the `cgroup/cgroup_mkdir` tracepoint: found
//! where the kernel's tracing files are (mounted by the host's init, or
//! from a hostPath in the DaemonSet), mounted at the standard place when
//! nothing is (and this process may), and the tracepoint's record layout
//! checked against what the program reads before it is attached.

use std::path::{Path, PathBuf};

use netflow_common::{CGROUP_MKDIR_ID_OFFSET, CGROUP_MKDIR_PATH_OFFSET, CGROUP_MKDIR_ROOT_OFFSET};

/// Where tracefs is found, the standard place first.
const TRACEFS_PLACES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// The tracepoint's description, below tracefs.
const CGROUP_MKDIR_FORMAT: &str = "events/cgroup/cgroup_mkdir/format";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "no tracefs is mounted (at {}) and it cannot be mounted here: {source}",
        TRACEFS_PLACES.join(" or ")
    )]
    NotMounted {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Format {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not have the layout netflow reads ({field} not at offset {offset})")]
    Layout {
        path: PathBuf,
        field: &'static str,
        offset: usize,
    },
    #[error("the tracepoint program is missing from the object")]
    MissingProgram,
    #[error("the kernel refused the tracepoint program")]
    Program(#[source] aya::programs::ProgramError),
}

/// The tracefs directory, mounting it at the standard place when none is.
pub fn tracefs() -> Result<PathBuf, TracefsError> {
    if let Some(found) = TRACEFS_PLACES
        .iter()
        .map(Path::new)
        .find(|place| place.join("events").is_dir())
    {
        return Ok(found.to_path_buf());
    }
    let place = TRACEFS_PLACES[0];
    super::pseudo_fs::mount("tracefs", Path::new(place))
        .map_err(|source| TracefsError::NotMounted { source })?;
    Ok(PathBuf::from(place))
}

/// Checks that `cgroup_mkdir`'s record holds what the program reads where
/// it reads it.
pub fn check_cgroup_mkdir_format() -> Result<(), TracefsError> {
    let path = tracefs()?.join(CGROUP_MKDIR_FORMAT);
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        source,
    })?;
    check_layout(&text).map_err(|(field, offset)| TracefsError::Layout {
        path,
        field,
        offset,
    })
}

/// The first field of `format` not where the program expects it.
fn check_layout(format: &str) -> Result<(), (&'static str, usize)> {
    let expected = [
        ("int root", CGROUP_MKDIR_ROOT_OFFSET, 4),
        ("u64 id", CGROUP_MKDIR_ID_OFFSET, 8),
        ("__data_loc char[] path", CGROUP_MKDIR_PATH_OFFSET, 4),
    ];
    for (field, offset, size) in expected {
        let line = format!("field:{field};\toffset:{offset};\tsize:{size};");
        if !format.lines().any(|text| text.trim().starts_with(&line)) {
            return Err((field, offset));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.18's format file.
    const FORMAT: &str = "name: cgroup_mkdir\nID: 544\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int level;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n";

    #[test]
    fn the_layout_read_is_the_kernels() {
        assert_eq!(check_layout(FORMAT), Ok(()));
        // Before 5.7 the id was an int at offset 16.
        let old = FORMAT.replace(
            "field:u64 id;\toffset:16;\tsize:8;",
            "field:int id;\toffset:16;\tsize:4;",
        );
        assert_eq!(check_layout(&old), Err(("u64 id", 16)));
        let moved = FORMAT.replace("path;\toffset:24;", "path;\toffset:32;");
        assert_eq!(check_layout(&moved), Err(("__data_loc char[] path", 24)));
    }
}
