//! Kernel timestamps to wall-clock time.
//!
//! The programs stamp packets with `bpf_ktime_get_coarse_ns`
//! (CLOCK_MONOTONIC_COARSE: no clock read per packet, tick resolution, which
//! is plenty for first/last seen), so the conversion reads the same clock.

use std::time::{Duration, SystemTime};

/// Converts kernel nanoseconds to wall-clock times, anchored once per poll.
#[derive(Clone, Copy, Debug)]
pub struct KernelClock {
    kernel_now_ns: u64,
    wall_now: SystemTime,
}

impl KernelClock {
    pub fn now() -> Self {
        Self {
            kernel_now_ns: kernel_time_ns(),
            wall_now: SystemTime::now(),
        }
    }

    pub fn kernel_now_ns(&self) -> u64 {
        self.kernel_now_ns
    }

    pub fn wall_now(&self) -> SystemTime {
        self.wall_now
    }

    pub fn to_wall(&self, kernel_ns: u64) -> SystemTime {
        if kernel_ns <= self.kernel_now_ns {
            self.wall_now - Duration::from_nanos(self.kernel_now_ns - kernel_ns)
        } else {
            self.wall_now + Duration::from_nanos(kernel_ns - self.kernel_now_ns)
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: what `bpf_ktime_get_coarse_ns` returns.
pub fn kernel_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_times_map_to_wall_times_around_now() {
        let clock = KernelClock::now();
        let second_ago = clock.to_wall(clock.kernel_now_ns() - 1_000_000_000);
        assert_eq!(
            clock.wall_now().duration_since(second_ago).unwrap(),
            Duration::from_secs(1)
        );
        let later = clock.to_wall(clock.kernel_now_ns() + 500);
        assert_eq!(
            later.duration_since(clock.wall_now()).unwrap(),
            Duration::from_nanos(500)
        );
    }
}
