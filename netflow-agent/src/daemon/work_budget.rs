//! How much of the agent's time its periodic whole-graph work may take:
//! writing the state file, rendering `/graph`. Each grows with the graph,
//! not with the traffic: at a million edges one save writes ~400 MB, and
//! doing it every interval would keep a core and the disk busy on every
//! node. A job that took `t` (past [`FREE`]) waits `t * (SHARE - 1)` before
//! it runs again, so it takes at most a `SHARE`th of the time; below that it
//! runs every interval, as before.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

/// The job takes at most one `SHARE`th of the agent's time.
const SHARE: u32 = 20;

/// A job shorter than this never waits (a small graph is saved and
/// rendered every interval that changed it).
const FREE: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
pub(super) struct WorkBudget {
    /// When the job may run again; `None`: now.
    next: Cell<Option<Instant>>,
}

impl WorkBudget {
    /// Whether the job may run at `now`.
    pub(super) fn allows(&self, now: Instant) -> bool {
        self.next.get().is_none_or(|next| now >= next)
    }

    /// Notes a run from `started` to `finished`.
    pub(super) fn spent(&self, started: Instant, finished: Instant) {
        let took = finished.saturating_duration_since(started);
        self.next
            .set((took > FREE).then(|| finished + took * (SHARE - 1)));
    }

    /// Runs `job` now and notes its time.
    pub(super) fn run<T>(&self, job: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let done = job();
        self.spent(started, Instant::now());
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_job_waits_nineteen_times_its_length_and_a_short_one_never() {
        let budget = WorkBudget::default();
        let start = Instant::now();
        assert!(budget.allows(start));
        // A short job: the next may run at once.
        budget.spent(start, start + FREE);
        assert!(budget.allows(start + FREE));
        // A 2 s job: the next waits 38 s after it ended.
        let ended = start + Duration::from_secs(2);
        budget.spent(start, ended);
        assert!(!budget.allows(ended));
        assert!(!budget.allows(ended + Duration::from_secs(37)));
        assert!(budget.allows(ended + Duration::from_secs(38)));
        // A job that ran on time is judged by its own length.
        let later = ended + Duration::from_secs(40);
        budget.spent(later, later + Duration::from_millis(10));
        assert!(budget.allows(later + Duration::from_millis(10)));
    }
}
