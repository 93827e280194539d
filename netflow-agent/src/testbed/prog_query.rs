//! What the kernel says is attached to a cgroup (BPF_PROG_QUERY), so a test
//! or the lab can check that a stopped agent left nothing behind without
//! trusting the agent's own bookkeeping.

/// `BPF_CGROUP_INET_INGRESS` and `BPF_CGROUP_INET_EGRESS`.
pub const CGROUP_ATTACH_TYPES: [u32; 2] = [0, 1];

/// How many programs are attached directly to `cgroup` for one attach type,
/// asked of the kernel (BPF_PROG_QUERY), not of our own bookkeeping: the lab
/// and the tests use it to check that a stopped agent left nothing behind.
pub fn attached_programs(cgroup: &std::path::Path, attach_type: u32) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd as _;
    const BPF_PROG_QUERY: libc::c_long = 16;
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let dir = std::fs::File::open(cgroup)?;
    let mut attr = QueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type,
        ..QueryAttr::default()
    };
    // SAFETY: bpf(2) reads and writes `attr`, which lives for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            size_of::<QueryAttr>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.prog_cnt)
}
