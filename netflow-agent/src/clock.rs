//! Kernel timestamps to wall-clock time.
//!
//! The programs stamp packets with `bpf_ktime_get_boot_ns` (CLOCK_BOOTTIME,
//! which keeps counting across suspend), so the conversion reads the same clock.

use std::time::{Duration, SystemTime};

/// Converts boot-time nanoseconds to wall-clock times, anchored once per poll.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot_now_ns: u64,
    wall_now: SystemTime,
}

impl BootClock {
    pub fn now() -> Self {
        Self {
            boot_now_ns: boot_time_ns(),
            wall_now: SystemTime::now(),
        }
    }

    pub fn boot_now_ns(&self) -> u64 {
        self.boot_now_ns
    }

    pub fn wall_now(&self) -> SystemTime {
        self.wall_now
    }

    pub fn to_wall(&self, boot_ns: u64) -> SystemTime {
        if boot_ns <= self.boot_now_ns {
            self.wall_now - Duration::from_nanos(self.boot_now_ns - boot_ns)
        } else {
            self.wall_now + Duration::from_nanos(boot_ns - self.boot_now_ns)
        }
    }
}

/// CLOCK_BOOTTIME in nanoseconds.
pub fn boot_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
