//! Cgroup paths as cgroups are made: the `cgroup/cgroup_mkdir` tracepoint
//! writes each new cgroup v2 cgroup's id and path into `CGROUP_PATHS`, so
//! the agent can name the flows of a pod that started and ended between two
//! of its polls (its cgroup is gone before a walk of the tree could see it).
//! Off the packet path: it runs once per cgroup made, anywhere on the node.

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use netflow_common::{
    CGROUP_MKDIR_ID_OFFSET, CGROUP_MKDIR_PATH_OFFSET, CGROUP_MKDIR_ROOT_OFFSET,
    CGROUP_PATH_ENTRIES, CgroupPath,
};

/// Cgroup id -> path, for every cgroup v2 cgroup made since the load.
#[map]
pub static CGROUP_PATHS: LruHashMap<u64, CgroupPath> =
    LruHashMap::with_max_entries(CGROUP_PATH_ENTRIES, 0);

/// Room to build one entry (too large for the program's stack).
#[map]
static SCRATCH: PerCpuArray<CgroupPath> = PerCpuArray::with_max_entries(1, 0);

/// The cgroup v2 hierarchy's id (`0::` in `/proc/self/cgroup`): the v1
/// controllers' hierarchies make cgroups too, with ids of their own.
const CGROUP2_HIERARCHY: i32 = 0;

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn netflow_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = remember(&ctx);
    0
}

#[inline(always)]
fn remember(ctx: &TracePointContext) -> Result<(), i32> {
    let root: i32 = unsafe { ctx.read_at(CGROUP_MKDIR_ROOT_OFFSET) }?;
    if root != CGROUP2_HIERARCHY {
        return Ok(());
    }
    let id: u64 = unsafe { ctx.read_at(CGROUP_MKDIR_ID_OFFSET) }?;
    // `__data_loc`: the string's offset in the record (low 16 bits).
    let location: u32 = unsafe { ctx.read_at(CGROUP_MKDIR_PATH_OFFSET) }?;
    let offset = (location & 0xffff) as usize;
    let entry = SCRATCH.get_ptr_mut(0).ok_or(0)?;
    unsafe {
        let source = (ctx.as_ptr() as *const u8).add(offset);
        bpf_probe_read_kernel_str_bytes(source, &mut (*entry).path)?;
        CGROUP_PATHS.insert(&id, &*entry, 0)
    }
}
