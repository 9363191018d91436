//! The verdict slots of one caller batch, and the [`Ticket`] the caller
//! holds for them: wait blocking, poll, or await it as a [`Future`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{Item, PoolError, now};
use crate::Verdict;

/// Why one item got no verdict while the rest of its batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// The item alone makes a request larger than every connected
    /// instance accepts (the hello's maximum frame, or a shared-memory
    /// ring's largest record), so no instance can be asked.
    #[error("item needs a request of {bytes} bytes; the largest any instance accepts is {limit}")]
    TooLarge {
        /// Bytes of the smallest request that carries the item (its real
        /// encoding, or its payload when that alone is over the limit).
        bytes: usize,
        /// The largest request any connected instance accepts.
        limit: usize,
    },
}

/// One item's outcome: its verdict, or why it has none.
pub type ItemResult = Result<Verdict, ItemError>;

/// Verdict slots for one caller batch.
#[derive(Debug)]
pub(crate) struct BatchState {
    pub(crate) items: Vec<Item>,
    slots: Mutex<Slots>,
    done: Condvar,
}

#[derive(Debug)]
struct Slots {
    results: Vec<Option<ItemResult>>,
    remaining: usize,
    error: Option<PoolError>,
    /// The task awaiting the batch as a future, woken once when it ends.
    waker: Option<Waker>,
}

impl Slots {
    fn finished(&self) -> bool {
        self.remaining == 0 || self.error.is_some()
    }

    /// The outcome once finished: the batch error, or one result per item.
    fn outcome(&self) -> Option<Result<Vec<ItemResult>, PoolError>> {
        if let Some(e) = &self.error {
            return Some(Err(e.clone()));
        }
        if self.remaining > 0 {
            return None;
        }
        // Every slot is Some once `remaining` hit 0 (each write decrements
        // it exactly once); a None here would be a bug, and Malformed is
        // the verdict that never lets a message through.
        Some(Ok(self
            .results
            .iter()
            .map(|r| r.unwrap_or(Ok(Verdict::Malformed)))
            .collect()))
    }
}

/// Folds per-item results into the all-or-nothing shape of
/// [`Ticket::wait`]: the first item without a verdict fails the batch.
fn all_verdicts(r: Result<Vec<ItemResult>, PoolError>) -> Result<Vec<Verdict>, PoolError> {
    r?.into_iter()
        .enumerate()
        .map(|(index, r)| {
            r.map_err(|e| match e {
                ItemError::TooLarge { bytes, limit } => PoolError::ItemTooLarge {
                    index,
                    bytes,
                    limit,
                },
            })
        })
        .collect()
}

impl BatchState {
    pub(crate) fn new(items: Vec<Item>) -> BatchState {
        let n = items.len();
        BatchState {
            items,
            slots: Mutex::new(Slots {
                results: vec![None; n],
                remaining: n,
                error: None,
                waker: None,
            }),
            done: Condvar::new(),
        }
    }

    /// The batch's items back, for a batch never submitted.
    pub(crate) fn into_items(self) -> Vec<Item> {
        self.items
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes blocking waiters and the awaiting task if the batch just
    /// ended; called with the slots locked, the waker runs after unlock.
    fn notify_if_finished(&self, mut s: MutexGuard<'_, Slots>) {
        if s.finished() {
            self.done.notify_all();
            let w = s.waker.take();
            drop(s);
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Records verdicts for item indices; each slot is written once.
    /// Returns how many verdicts were duplicates (ignored).
    pub(crate) fn deliver(&self, idx: &[u32], verdicts: &[Verdict]) -> u64 {
        self.deliver_each(idx.iter().zip(verdicts).map(|(&i, &v)| (i, Ok(v))))
    }

    /// Records the same per-item error for item indices (each slot is
    /// written once); returns how many slots already had a result.
    pub(crate) fn deliver_error(&self, idx: &[u32], e: ItemError) -> u64 {
        self.deliver_each(idx.iter().map(|&i| (i, Err(e))))
    }

    fn deliver_each(&self, results: impl Iterator<Item = (u32, ItemResult)>) -> u64 {
        let mut s = self.lock();
        let mut dup = 0;
        for (i, r) in results {
            let Some(slot) = s.results.get_mut(i as usize) else {
                // Indices come from this batch's own subs; never out of range.
                dup += 1;
                continue;
            };
            if slot.is_none() {
                *slot = Some(r);
                s.remaining -= 1;
            } else {
                dup += 1;
            }
        }
        self.notify_if_finished(s);
        dup
    }

    /// Fails the whole batch (the first error wins).
    pub(crate) fn fail(&self, e: PoolError) {
        let mut s = self.lock();
        s.error.get_or_insert(e);
        self.notify_if_finished(s);
    }

    fn remaining(&self) -> usize {
        self.lock().remaining
    }
}

const SPIN_MAX_ITEMS: usize = 4;
const SPIN_FOR: Duration = Duration::from_micros(300);

/// A submitted batch. Its verdicts come back in item order: block for them
/// with [`Ticket::wait`], poll with [`Ticket::try_result`], or `.await` the
/// ticket (it is a [`Future`] woken by the reader thread that delivers the
/// last verdict, with no runtime needed).
#[derive(Debug)]
pub struct Ticket(pub(crate) Arc<BatchState>);

impl Ticket {
    /// Blocks until every item has its verdict (or the batch failed). An
    /// item no instance can take fails the batch with
    /// [`PoolError::ItemTooLarge`]; [`Ticket::wait_each`] keeps the other
    /// items' verdicts instead.
    pub fn wait(self) -> Result<Vec<Verdict>, PoolError> {
        all_verdicts(self.wait_each())
    }

    /// Like [`Ticket::wait`], but with one result per item, so an item
    /// that got an [`ItemError`] does not hide the others' verdicts.
    pub fn wait_each(self) -> Result<Vec<ItemResult>, PoolError> {
        self.wait_each_timeout(Duration::MAX)
            .unwrap_or(Err(PoolError::Closed))
    }

    /// The verdicts if the batch has finished, without blocking; `None`
    /// while items are still outstanding.
    #[must_use]
    pub fn try_result(&self) -> Option<Result<Vec<Verdict>, PoolError>> {
        self.0.lock().outcome().map(all_verdicts)
    }

    /// Items still without a verdict.
    #[must_use]
    pub fn pending_items(&self) -> usize {
        self.0.remaining()
    }

    /// Like [`Ticket::wait`], but gives the ticket back after `timeout`.
    pub fn wait_timeout(
        self,
        timeout: Duration,
    ) -> Result<Result<Vec<Verdict>, PoolError>, Ticket> {
        self.wait_each_timeout(timeout).map(all_verdicts)
    }

    /// Like [`Ticket::wait_each`], but gives the ticket back after `timeout`.
    pub fn wait_each_timeout(
        self,
        timeout: Duration,
    ) -> Result<Result<Vec<ItemResult>, PoolError>, Ticket> {
        let deadline = now().checked_add(timeout);
        // Tiny batches come back within a few hundred microseconds: spin
        // briefly (yielding) before parking, which saves a thread wake-up
        // that costs tens of microseconds on these VMs. Larger batches park
        // at once so waiting costs no CPU.
        if self.0.items.len() <= SPIN_MAX_ITEMS {
            let t = now();
            while t.elapsed() < SPIN_FOR {
                if self.0.lock().finished() {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let mut s = self.0.lock();
        loop {
            if let Some(out) = s.outcome() {
                return Ok(out);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                drop(s);
                return Err(self);
            }
            s = self
                .0
                .done
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// Awaiting a ticket gives what [`Ticket::wait`] returns. The waker of the
/// latest poll is kept and woken once, when the last verdict (or the batch
/// error) is recorded; the ticket may be polled again afterwards and gives
/// the same result.
impl Future for Ticket {
    type Output = Result<Vec<Verdict>, PoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock();
        if let Some(out) = s.outcome() {
            return Poll::Ready(all_verdicts(out));
        }
        // Checked and registered under the lock that every delivery takes,
        // so the last verdict cannot slip in between and be missed.
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
