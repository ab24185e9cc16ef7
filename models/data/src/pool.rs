//! The ordered, bounded worker pool that the loader, the runtime's batch preparation and the video CLI
//! share: `N` workers map the items of one input iterator in parallel, each with a state of its own,
//! and the results come back in input order.
//!
//! - Bounded: at most `workers + ahead` items are out at any time (taken from the input and not yet
//!   handed to the consumer: being worked on, or done and waiting), so memory stays at a few results
//!   whatever the input's length, and a slow consumer stops the input from being read further.
//! - Errors: a `Result` is a result like any other and comes back in its place; what to do with an
//!   `Err` (stop, skip) is the consumer's choice. A worker that panics makes the consumer's next call
//!   panic with the same payload, rather than leaving it waiting for an item that never comes.
//! - Dropping the [`Ordered`] stops the workers: each finishes the item it holds and exits.
//!   [`Ordered::finish`] does the same, waits for them and gives the input back.
//!
//! The input is read under a lock, one item at a time, so an item's position is the order in which
//! the input gave it and the input itself needs only be `Send`.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// How many items may be out, and whether the workers should stop.
struct Slots {
    free: usize,
    /// The consumer is gone (or finishing).
    closed: bool,
    /// The input has no more items.
    ended: bool,
}

struct Input<I> {
    items: I,
    /// Position of the next item the input gives.
    next: usize,
    ended: bool,
}

struct Shared<I> {
    input: Mutex<Input<I>>,
    slots: Mutex<Slots>,
    /// Signalled when a slot frees or the workers should stop.
    changed: Condvar,
}

enum Message<T> {
    Done(usize, T),
    Panicked(Box<dyn Any + Send>),
}

/// The slots are only held for a few instructions, never across user code: a poisoned lock still
/// holds consistent counts.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps `items` with `work` on one thread per entry of `states` (each thread owns one state), with at
/// most `states.len() + ahead` items out at a time; the results come back in input order.
///
/// # Panics
/// When `states` is empty: a pool needs at least one worker.
pub fn map_ordered<I, S, T, F>(items: I, states: Vec<S>, ahead: usize, work: F) -> Ordered<T, I>
where
    I: Iterator + Send + 'static,
    S: Send + 'static,
    T: Send + 'static,
    F: Fn(&mut S, I::Item) -> T + Send + Sync + 'static,
{
    assert!(!states.is_empty(), "a worker pool needs at least one worker");
    let shared = Arc::new(Shared {
        input: Mutex::new(Input { items, next: 0, ended: false }),
        slots: Mutex::new(Slots { free: states.len() + ahead, closed: false, ended: false }),
        changed: Condvar::new(),
    });
    let work = Arc::new(work);
    let (tx, rx) = channel();
    let threads = states
        .into_iter()
        .map(|mut state| {
            let (shared, work, tx) = (shared.clone(), work.clone(), tx.clone());
            std::thread::spawn(move || {
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| worker(&shared, &mut state, &*work, &tx))) {
                    let _ = tx.send(Message::Panicked(payload));
                }
            })
        })
        .collect();
    Ordered { shared, rx, pending: BTreeMap::new(), next: 0, threads }
}

fn worker<I: Iterator, S, T>(shared: &Shared<I>, state: &mut S, work: &impl Fn(&mut S, I::Item) -> T, tx: &Sender<Message<T>>) {
    loop {
        {
            let mut slots = lock(&shared.slots);
            while slots.free == 0 && !slots.closed && !slots.ended {
                slots = shared.changed.wait(slots).unwrap_or_else(PoisonError::into_inner);
            }
            if slots.closed || slots.ended {
                return;
            }
            slots.free -= 1;
        }
        let taken = {
            // poisoned: the input panicked in another worker, which reports it
            let Ok(mut input) = shared.input.lock() else { return };
            match if input.ended { None } else { input.items.next() } {
                Some(item) => {
                    input.next += 1;
                    Some((input.next - 1, item))
                }
                None => {
                    input.ended = true;
                    None
                }
            }
        };
        let Some((index, item)) = taken else {
            lock(&shared.slots).ended = true;
            shared.changed.notify_all();
            return;
        };
        if tx.send(Message::Done(index, work(state, item))).is_err() {
            return; // the consumer is gone
        }
    }
}

/// The results of [`map_ordered`], in input order.
pub struct Ordered<T, I> {
    shared: Arc<Shared<I>>,
    rx: Receiver<Message<T>>,
    /// Results that came back before an earlier one.
    pending: BTreeMap<usize, T>,
    next: usize,
    threads: Vec<JoinHandle<()>>,
}

impl<T, I> Ordered<T, I> {
    fn close(&self) {
        lock(&self.shared.slots).closed = true;
        self.shared.changed.notify_all();
    }

    /// Stops the workers (the items they hold are finished and dropped), waits for them and returns
    /// the input with the items no worker took.
    pub fn finish(mut self) -> I {
        self.close();
        for t in std::mem::take(&mut self.threads) {
            // workers catch their panics and send them: joining cannot fail
            let _ = t.join();
        }
        if let Some(payload) = self.rx.try_iter().find_map(|m| if let Message::Panicked(p) = m { Some(p) } else { None }) {
            panic::resume_unwind(payload);
        }
        let shared = self.shared.clone();
        drop(self);
        match Arc::try_unwrap(shared) {
            Ok(s) => s.input.into_inner().unwrap_or_else(PoisonError::into_inner).items,
            Err(_) => unreachable!("every worker has exited and dropped its handle"),
        }
    }
}

impl<T, I> Iterator for Ordered<T, I> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(t) = self.pending.remove(&self.next) {
                self.next += 1;
                lock(&self.shared.slots).free += 1;
                self.shared.changed.notify_one();
                return Some(t);
            }
            match self.rx.recv() {
                Ok(Message::Done(index, t)) => {
                    self.pending.insert(index, t);
                }
                Ok(Message::Panicked(payload)) => panic::resume_unwind(payload),
                // every worker has exited, and each sent every item it took
                Err(_) => return None,
            }
        }
    }
}

impl<T, I> Drop for Ordered<T, I> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn results_come_back_in_input_order_from_every_worker() {
        // later items finish first: item i sleeps (20 - i % 20) / 4 ms
        let out: Vec<(u64, usize)> = map_ordered(0..200u64, (0..4).collect(), 3, |id: &mut usize, i| {
            std::thread::sleep(Duration::from_micros(250 * (20 - i % 20)));
            (i * i, *id)
        })
        .collect();
        assert_eq!(out.iter().map(|r| r.0).collect::<Vec<_>>(), (0..200).map(|i| i * i).collect::<Vec<_>>());
        let workers: std::collections::BTreeSet<usize> = out.iter().map(|r| r.1).collect();
        assert!(workers.len() > 1 && workers.iter().all(|&w| w < 4), "{workers:?}");
    }

    #[test]
    fn a_state_belongs_to_one_worker() {
        // each state counts its own items; a shared state would count items twice or lose some
        let out: Vec<usize> = map_ordered(0..100, vec![0usize; 3], 0, |seen: &mut usize, _| {
            *seen += 1;
            *seen
        })
        .collect();
        // per worker the counts run 1, 2, 3, ...: the counts seen are a union of three such runs
        let mut counts = out.clone();
        counts.sort();
        let ones = counts.iter().filter(|&&c| c == 1).count();
        assert!((1..=3).contains(&ones), "{out:?}");
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn no_more_than_workers_plus_ahead_items_are_out() {
        let taken = Arc::new(AtomicUsize::new(0));
        let t = taken.clone();
        let input = (0..).inspect(move |_| {
            t.fetch_add(1, Ordering::SeqCst);
        });
        let mut results = map_ordered(input, vec![(); 3], 2, |_: &mut (), i: u64| i);
        // nobody consumes: the workers fill the 5 slots and stop reading the input
        wait_until("5 items are taken", || taken.load(Ordering::SeqCst) == 5);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(taken.load(Ordering::SeqCst), 5);
        // each item handed over frees one slot
        assert_eq!(results.next(), Some(0));
        assert_eq!(results.next(), Some(1));
        wait_until("7 items are taken", || taken.load(Ordering::SeqCst) == 7);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(taken.load(Ordering::SeqCst), 7);
        assert_eq!(results.by_ref().take(100).collect::<Vec<_>>(), (2..102).collect::<Vec<_>>());
    }

    #[test]
    fn errors_come_back_in_their_place_and_the_rest_goes_on() {
        let out: Vec<Result<u32, String>> =
            map_ordered(0..6u32, vec![(); 2], 1, |_: &mut (), i| if i % 3 == 1 { Err(format!("item {i} failed")) } else { Ok(10 * i) }).collect();
        assert_eq!(out, [Ok(0), Err("item 1 failed".into()), Ok(20), Ok(30), Err("item 4 failed".into()), Ok(50)]);
    }

    #[test]
    fn a_panicking_worker_panics_the_consumer_with_its_message() {
        let caught = panic::catch_unwind(|| {
            map_ordered(0..50u32, vec![(); 3], 2, |_: &mut (), i| {
                assert!(i != 17, "item {i} is cursed");
                i
            })
            .count()
        });
        let payload = caught.expect_err("the consumer panics");
        let message = payload.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(message, "item 17 is cursed");
    }

    #[test]
    fn dropping_the_results_stops_the_workers() {
        let taken = Arc::new(AtomicUsize::new(0));
        let t = taken.clone();
        let input = (0..).inspect(move |_| {
            t.fetch_add(1, Ordering::SeqCst);
        });
        // every worker's state holds a handle: it is dropped when the worker exits
        let alive = Arc::new(());
        let mut results = map_ordered(input, vec![alive.clone(); 4], 4, |_: &mut Arc<()>, i: u64| {
            std::thread::sleep(Duration::from_millis(1));
            i
        });
        assert_eq!(results.by_ref().take(20).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
        drop(results);
        wait_until("every worker has exited", || Arc::strong_count(&alive) == 1);
        let after = taken.load(Ordering::SeqCst);
        assert!(after <= 20 + 8, "{after} items taken from an endless input");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(taken.load(Ordering::SeqCst), after, "the input is not read any more");
    }

    #[test]
    fn finish_gives_the_input_back() {
        let mut results = map_ordered(0..100u32, vec![(); 2], 0, |_: &mut (), i| i + 1);
        assert_eq!(results.next(), Some(1));
        let rest: Vec<u32> = results.finish().collect();
        // item 0 was handed over; at most two more were out when the workers stopped
        assert!(rest.len() >= 97 && rest.len() <= 99 && rest.last() == Some(&99), "{rest:?}");
        // an exhausted input comes back exhausted
        let mut done = map_ordered(vec![1, 2, 3].into_iter(), vec![(); 3], 5, |_: &mut (), i: i32| -i);
        assert_eq!(done.by_ref().collect::<Vec<_>>(), [-1, -2, -3]);
        assert_eq!(done.finish().next(), None);
    }

    #[test]
    fn an_empty_input_gives_nothing() {
        assert_eq!(map_ordered(std::iter::empty::<u8>(), vec![(); 4], 0, |_: &mut (), i| i).count(), 0);
    }
}
