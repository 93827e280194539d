//! Mounting one of the kernel's pseudo filesystems (bpffs, tracefs) where
//! the agent needs one and none is mounted.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

/// `mount -t KIND KIND TARGET`.
pub fn mount(kind: &str, target: &Path) -> std::io::Result<()> {
    let invalid = |_| std::io::Error::from_raw_os_error(libc::EINVAL);
    let target = CString::new(target.as_os_str().as_bytes()).map_err(invalid)?;
    let kind = CString::new(kind).map_err(invalid)?;
    // SAFETY: mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
