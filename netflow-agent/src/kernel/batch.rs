//! Reading and deleting many hash map entries per syscall
//! (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`, Linux 5.6).
//!
//! aya 0.14 walks a map one key at a time (two syscalls per entry). On a node
//! with tens of thousands of connections, polling every few seconds, that is
//! the agent's main cost; batches make it a handful of syscalls. Callers fall
//! back to aya's walk when the kernel has no batch support
//! ([`BatchError::Unsupported`]).

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("this kernel has no batch map operations")]
    Unsupported,
    #[error("batch map operation failed")]
    Failed(#[source] io::Error),
}

fn bpf(command: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: bpf(2) reads and writes `attr`, whose pointers (set by the
    // callers) point to buffers that live for the call and are large enough
    // for `count` keys and values.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn classify(err: io::Error) -> BatchError {
    match err.raw_os_error() {
        // 524 is the kernel's internal ENOTSUPP, which leaks out of bpf(2).
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524) => BatchError::Unsupported,
        _ => BatchError::Failed(err),
    }
}

/// Every entry of the hash map behind `map`, in batches of about `chunk`.
pub fn lookup_all<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    chunk: usize,
) -> Result<Vec<(K, V)>, BatchError> {
    let mut chunk = chunk.max(1);
    let mut entries = Vec::new();
    // The hash map's batch token is a bucket number; 8 bytes hold it.
    let mut token = 0u64;
    let mut next_token = 0u64;
    let mut first = true;
    loop {
        let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
        let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u64 as u64
            },
            out_batch: &mut next_token as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let done = match result {
            Ok(()) => false,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
            // One bucket holds more entries than fit: retry with more room.
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => {
                chunk *= 2;
                continue;
            }
            Err(err) => return Err(classify(err)),
        };
        let count = (attr.count as usize).min(chunk);
        // SAFETY: the kernel wrote `count` whole keys and values.
        unsafe {
            keys.set_len(count);
            values.set_len(count);
        }
        entries.extend(
            keys.into_iter()
                .zip(values)
                // SAFETY: initialised by the kernel (see above); K and V are Pod.
                .map(|(key, value)| unsafe { (key.assume_init(), value.assume_init()) }),
        );
        if done {
            return Ok(entries);
        }
        token = next_token;
        first = false;
    }
}

/// Deletes `keys` from the map; keys already gone are skipped.
pub fn delete<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => return Ok(()),
            // The batch stops at a key that is already gone: skip it, go on.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                let done = (attr.count as usize).min(rest.len());
                rest = &rest[(done + 1).min(rest.len())..];
            }
            Err(err) => return Err(classify(err)),
        }
    }
    Ok(())
}
