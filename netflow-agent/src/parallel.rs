//! Work spread over every core: policy sets are a file (and a namespace) at
//! a time, thousands of them, each independent of the others; a graph file
//! is a million edges, each written on its own.

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

/// `work` applied to every item, on as many threads as there are cores
/// (at most one per item), each thread with a `state` of its own (made by
/// `state`, handed back at the end); results in item order, whichever
/// thread made them. A panic in `work` is a panic here.
pub fn map_in_order<T, S, R>(
    items: &[T],
    state: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> R + Sync,
) -> (Vec<R>, Vec<S>)
where
    T: Sync,
    S: Send,
    R: Send,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(items.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = Vec::new();
    slots.resize_with(items.len(), || None);
    let slots = Mutex::new(slots);
    let states = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut own = state();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(index) else { break };
                        let result = work(&mut own, item);
                        slots
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())[index] = Some(result);
                    }
                    own
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let results = slots
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        // Every item was taken by a thread, and every thread finished.
        .flatten()
        .collect();
    (results, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_with_every_state() {
        let items: Vec<u64> = (0..1000).collect();
        let (squares, counts) = map_in_order(
            &items,
            || 0usize,
            |count, item| {
                *count += 1;
                item * item
            },
        );
        assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(counts.iter().sum::<usize>(), items.len());
        let (none, states) = map_in_order(&[] as &[u8], || (), |(), _| ());
        assert!(none.is_empty() && states.len() == 1);
    }
}
