//! Loading netflow's eBPF object into the kernel and attaching it to a cgroup.
//!
//! Dropping a [`Probe`] detaches its programs and frees the maps: the links
//! are owned here and never pinned.

use std::{
    fs::File,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, ProgramError, TracePoint,
    },
};
use netflow_common::{
    CGROUP_MKDIR_PROG, CGROUP_PATHS_MAP, CgroupPath, DNS_MAP, DROPS_MAP, EGRESS_PROG, FLOWS_MAP,
    FOLD_INTERVAL_GLOBAL, FlowKey, FlowStats, HTTP_HEADS_GLOBAL, HTTP_MAP, INGRESS_PROG,
    OVERFLOW_MAP, RELEASE_PROG, SOCKETS_MAP, TICK_NS_GLOBAL,
};

use super::{
    pins::{PinDir, Shape},
    tracefs,
};

/// How often a busy socket's counts reach the table unless the caller says
/// (the daemon passes its poll interval).
pub const DEFAULT_FOLD_INTERVAL: Duration =
    Duration::from_nanos(netflow_common::DEFAULT_FOLD_INTERVAL_NS);

/// The eBPF object built by `build.rs` from `netflow-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netflow-ebpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "loading eBPF programs needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON); netflow-agent runs as uid {uid} without {missing}"
    )]
    NotRoot { uid: u32, missing: String },
    #[error(
        "seccomp refused bpf(2) although netflow-agent has CAP_BPF: this container's seccomp profile blocks it (podman's and CRI-O's default profile allow bpf only with CAP_SYS_ADMIN); run the container with the Localhost profile deploy/seccomp/netflow-agent.json (the runtime default plus bpf and perf_event_open), as docs/operations.md shows"
    )]
    Seccomp,
    #[error(
        "the kernel refused the eBPF object; BPF may be unavailable here (CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF) or disabled for this process"
    )]
    Object(#[source] aya::EbpfError),
    #[error("eBPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("the kernel refused to load eBPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot open cgroup {path}")]
    Cgroup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot attach {name} to cgroup {path}")]
    Attach {
        name: &'static str,
        path: String,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The maps a reader needs, taken out of the loaded object.
pub struct ProbeMaps {
    pub flows: HashMap<MapData, FlowKey, FlowStats>,
    /// A duplicate of the connection table's fd, for batch reads.
    pub flows_fd: OwnedFd,
    pub overflow: RingBuf<MapData>,
    pub dns: RingBuf<MapData>,
    /// Heads of plaintext HTTP requests.
    pub http: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
    /// Paths of cgroups made since the load (cgroup id -> path); filled
    /// only while the `cgroup_mkdir` tracepoint is attached.
    pub cgroup_paths: Option<HashMap<MapData, u64, CgroupPath>>,
    pub capacity: u32,
    /// The table was found pinned, as an earlier agent left it: what it
    /// holds was counted (and reported) before this agent started.
    pub reused: bool,
}

/// netflow's programs, loaded (and, after [`Probe::attach`], attached).
pub struct Probe {
    ebpf: Ebpf,
    capacity: u32,
    reused: bool,
}

impl Probe {
    /// Loads netflow's programs with a connection table of `flow_entries`
    /// entries; established sockets' counts reach the table at least once
    /// per `fold_interval` while they carry traffic (the reader's poll
    /// interval: what it reads is then exact to within one poll), and when
    /// they close.
    pub fn load(flow_entries: u32, fold_interval: Duration) -> Result<Self, LoadError> {
        Self::load_pinned(flow_entries, fold_interval, None, true)
    }

    /// As [`Probe::load`], with the connection table, the sockets' counts
    /// and the drop counters pinned in `pins` (see [`super::pins`]): taken
    /// over from an earlier agent when it left them there, else made there.
    /// Without `http_heads` no payload is looked at (no HTTP calls).
    pub fn load_pinned(
        flow_entries: u32,
        fold_interval: Duration,
        pins: Option<&PinDir>,
        http_heads: bool,
    ) -> Result<Self, LoadError> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        // All three are needed (checked on Linux 6.18): CAP_BPF to load,
        // CAP_NET_ADMIN to attach to a cgroup, and CAP_PERFMON, without which
        // the verifier must also prove every speculative path and gives up
        // on programs of this size.
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(LoadError::NotRoot {
                uid,
                missing: missing.join(", "),
            });
        }
        if bpf_refused_by_seccomp() {
            return Err(LoadError::Seccomp);
        }
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
        raise_memlock_limit();
        let tick_ns = kernel_tick_ns();
        let fold_interval_jiffies =
            (u64::try_from(fold_interval.as_nanos()).unwrap_or(u64::MAX) / tick_ns).max(1);
        let http_heads = u8::from(http_heads);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(FLOWS_MAP, flow_entries)
            .override_global(FOLD_INTERVAL_GLOBAL, &fold_interval_jiffies, true)
            .override_global(TICK_NS_GLOBAL, &tick_ns, true)
            .override_global(HTTP_HEADS_GLOBAL, &http_heads, true);
        let mut reused = false;
        if let Some(pins) = pins {
            for (name, shape) in pinned_shapes(flow_entries) {
                let (path, usable) = pins.prepare(name, &shape);
                reused |= name == FLOWS_MAP && usable;
                loader.map_pin_path(name, path);
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
        for name in [EGRESS_PROG, INGRESS_PROG] {
            let program: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram { name })?
                .try_into()
                .map_err(|source| LoadError::Program { name, source })?;
            program
                .load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        release_program(&mut ebpf)?
            .load()
            .map_err(|source| LoadError::Program {
                name: RELEASE_PROG,
                source,
            })?;
        Ok(Self {
            ebpf,
            capacity: flow_entries,
            reused,
        })
    }

    /// Attaches ingress, egress and socket release to the cgroup at `path`
    /// (and so to every cgroup below it). On kernels >= 5.7 aya attaches
    /// through a BPF link, which always lets other programs on the same cgroup
    /// keep running (a link takes no attach flags: `Single` is the only mode
    /// the kernel accepts).
    pub fn attach(&mut self, path: &Path) -> Result<(), LoadError> {
        // Release first: a socket must never carry counts that no program
        // would fold when it closes.
        let cgroup = open_cgroup(path)?;
        release_program(&mut self.ebpf)?
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|source| LoadError::Attach {
                name: RELEASE_PROG,
                path: path.display().to_string(),
                source,
            })?;
        self.attach_programs(
            &cgroup,
            path,
            [
                (EGRESS_PROG, CgroupSkbAttachType::Egress),
                (INGRESS_PROG, CgroupSkbAttachType::Ingress),
            ],
        )?;
        // Naming pods that end between polls is worth having, not worth
        // failing for: without it such a pod's flows are named by address.
        match self.attach_cgroup_mkdir() {
            Ok(()) => tracing::debug!("recording cgroup paths as cgroups are made"),
            Err(err) => tracing::warn!(
                error = %err,
                "cannot record cgroup paths as cgroups are made: pods that end between two polls are named by address only"
            ),
        }
        Ok(())
    }

    /// Loads and attaches the `cgroup/cgroup_mkdir` tracepoint program,
    /// once the running kernel's record has the layout it reads.
    fn attach_cgroup_mkdir(&mut self) -> Result<(), tracefs::TracefsError> {
        tracefs::check_cgroup_mkdir_format()?;
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(CGROUP_MKDIR_PROG)
            .ok_or(tracefs::TracefsError::MissingProgram)?
            .try_into()
            .map_err(tracefs::TracefsError::Program)?;
        program.load().map_err(tracefs::TracefsError::Program)?;
        program
            .attach("cgroup", "cgroup_mkdir")
            .map_err(tracefs::TracefsError::Program)?;
        Ok(())
    }

    /// Loads the benchmark's floor program (nothing but "allow").
    pub fn load_floor(&mut self) -> Result<(), LoadError> {
        let name = netflow_common::FLOOR_PROG;
        self.program_mut(name)?
            .load()
            .map_err(|source| LoadError::Program { name, source })
    }

    /// Attaches the floor program alone, in both directions, to `path`
    /// (after [`Probe::load_floor`]): the benchmark's "empty program" mode.
    pub fn attach_floor(&mut self, path: &Path) -> Result<(), LoadError> {
        let name = netflow_common::FLOOR_PROG;
        self.attach_programs(
            &open_cgroup(path)?,
            path,
            [
                (name, CgroupSkbAttachType::Egress),
                (name, CgroupSkbAttachType::Ingress),
            ],
        )
    }

    /// Attaches `programs` to `cgroup`, opened from `path` (named in errors).
    fn attach_programs(
        &mut self,
        cgroup: &File,
        path: &Path,
        programs: [(&'static str, CgroupSkbAttachType); 2],
    ) -> Result<(), LoadError> {
        for (name, attach_type) in programs {
            self.program_mut(name)?
                .attach(cgroup, attach_type, CgroupAttachMode::Single)
                .map_err(|source| LoadError::Attach {
                    name,
                    path: path.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    pub fn program(&self, name: &'static str) -> Result<&CgroupSkb, LoadError> {
        self.ebpf
            .program(name)
            .ok_or(LoadError::MissingProgram { name })?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })
    }

    fn program_mut(&mut self, name: &'static str) -> Result<&mut CgroupSkb, LoadError> {
        self.ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram { name })?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })
    }

    /// Takes the maps out of the object for the reader. The programs stay
    /// loaded (and attached) for as long as the `Probe` lives.
    pub fn take_maps(&mut self) -> Result<ProbeMaps, LoadError> {
        let flows = self.take_map(FLOWS_MAP)?;
        let flows_fd = match &flows {
            aya::maps::Map::HashMap(data) => {
                data.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|err| LoadError::Map {
                        name: FLOWS_MAP,
                        source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                            call: "dup",
                            io_error: err,
                        }),
                    })?
            }
            _ => {
                return Err(LoadError::Map {
                    name: FLOWS_MAP,
                    source: aya::maps::MapError::InvalidName {
                        name: FLOWS_MAP.into(),
                    },
                });
            }
        };
        let overflow = self.take_map(OVERFLOW_MAP)?;
        let dns = self.take_map(DNS_MAP)?;
        let http = self.take_map(HTTP_MAP)?;
        let drops = self.take_map(DROPS_MAP)?;
        let cgroup_paths = self
            .ebpf
            .take_map(CGROUP_PATHS_MAP)
            .and_then(|map| HashMap::try_from(map).ok());
        Ok(ProbeMaps {
            cgroup_paths,
            flows: HashMap::try_from(flows).map_err(|source| LoadError::Map {
                name: FLOWS_MAP,
                source,
            })?,
            overflow: RingBuf::try_from(overflow).map_err(|source| LoadError::Map {
                name: OVERFLOW_MAP,
                source,
            })?,
            dns: RingBuf::try_from(dns).map_err(|source| LoadError::Map {
                name: DNS_MAP,
                source,
            })?,
            http: RingBuf::try_from(http).map_err(|source| LoadError::Map {
                name: HTTP_MAP,
                source,
            })?,
            drops: PerCpuArray::try_from(drops).map_err(|source| LoadError::Map {
                name: DROPS_MAP,
                source,
            })?,
            flows_fd,
            capacity: self.capacity,
            reused: self.reused,
        })
    }

    fn take_map(&mut self, name: &'static str) -> Result<aya::maps::Map, LoadError> {
        self.ebpf
            .take_map(name)
            .ok_or(LoadError::MissingMap { name })
    }
}

/// The maps that outlive the agent when it pins them, as this build makes
/// them.
fn pinned_shapes(flow_entries: u32) -> [(&'static str, Shape); 3] {
    let size = |bytes: usize| u32::try_from(bytes).unwrap_or(u32::MAX);
    [
        (
            FLOWS_MAP,
            Shape {
                map_type: aya::maps::MapType::Hash,
                key_size: size(std::mem::size_of::<FlowKey>()),
                value_size: size(std::mem::size_of::<FlowStats>()),
                max_entries: flow_entries,
            },
        ),
        (
            SOCKETS_MAP,
            Shape {
                map_type: aya::maps::MapType::SkStorage,
                key_size: size(std::mem::size_of::<i32>()),
                value_size: size(std::mem::size_of::<netflow_common::SocketCounts>()),
                max_entries: 0,
            },
        ),
        (
            DROPS_MAP,
            Shape {
                map_type: aya::maps::MapType::PerCpuArray,
                key_size: size(std::mem::size_of::<u32>()),
                value_size: size(std::mem::size_of::<u64>()),
                max_entries: netflow_common::Drop::COUNT,
            },
        ),
    ]
}

/// The kernel's tick (1/HZ) in ns: the resolution of the coarse clocks,
/// which advance once per tick.
fn kernel_tick_ns() -> u64 {
    let mut resolution = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes one timespec through a valid pointer.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) } == 0;
    let tick = resolution.tv_sec as u64 * 1_000_000_000 + resolution.tv_nsec as u64;
    if ok && tick > 0 {
        tick
    } else {
        netflow_common::DEFAULT_TICK_NS
    }
}

/// The socket-release program of a loaded object.
fn release_program(ebpf: &mut Ebpf) -> Result<&mut CgroupSock, LoadError> {
    ebpf.program_mut(RELEASE_PROG)
        .ok_or(LoadError::MissingProgram { name: RELEASE_PROG })?
        .try_into()
        .map_err(|source| LoadError::Program {
            name: RELEASE_PROG,
            source,
        })
}

fn open_cgroup(path: &Path) -> Result<File, LoadError> {
    File::open(path).map_err(|source| LoadError::Cgroup {
        path: path.display().to_string(),
        source,
    })
}

/// The capabilities netflow needs that this process lacks. CAP_SYS_ADMIN
/// stands in for CAP_BPF and CAP_PERFMON (kernels before 5.8 have only it).
fn missing_capabilities() -> Vec<&'static str> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Whether a seccomp filter, not the kernel, refuses bpf(2). Asked with a
/// request the kernel itself rejects as invalid (EINVAL: a map of no type);
/// with the capabilities present, EPERM can only be the filter's answer
/// (what podman's and CRI-O's default profile give without CAP_SYS_ADMIN).
fn bpf_refused_by_seccomp() -> bool {
    const BPF_MAP_CREATE: libc::c_long = 0;
    let attr = [0u8; 64];
    // SAFETY: bpf(2) reads `attr.len()` bytes from a valid buffer; a map of
    // type 0 is refused before anything is created.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            attr.len() as libc::c_long,
        )
    };
    if result >= 0 {
        // Not expected; never leak what was made.
        // SAFETY: closing a descriptor this function owns.
        unsafe { libc::close(result as libc::c_int) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one rlimit struct. Failure only matters on old
    // kernels, where the load below then reports the real error.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if rc != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}
