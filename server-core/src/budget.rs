//! Budgets: a bounded pool of units (bytes of memory, file descriptors)
//! handed out as RAII [`Reservation`]s.
//!
//! Every piece of memory a daemon holds on behalf of a peer — a partly read
//! frame, an admitted request, responses the peer has not read yet, a
//! shared-memory ring — is reserved from a [`Budget`] before it is
//! allocated, and given back when the reservation drops. A reservation that
//! does not fit fails at once ([`Budget::try_reserve`]) and is counted; a
//! caller that can wait for others to finish uses [`Budget::reserve_until`],
//! which wakes whenever units are returned and gives up at a deadline.
//!
//! Budgets are lock-free (one atomic) and may be used from any thread; only
//! waiting needs a tokio runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

/// A bounded pool of units shared by everything that reserves from it.
#[derive(Debug)]
pub struct Budget {
    name: &'static str,
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refusals: AtomicU64,
    waits: AtomicU64,
    returned: Notify,
}

/// A budget's counters, for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BudgetStats {
    /// Units in the pool.
    pub limit: usize,
    /// Units reserved now.
    pub used: usize,
    /// Most units reserved at once since start.
    pub peak: usize,
    /// Reservations refused (did not fit, or waited past their deadline).
    pub refusals: u64,
    /// Reservations that had to wait for units to be returned.
    pub waits: u64,
}

impl Budget {
    /// A budget of `limit` units; `name` appears in logs and metrics.
    #[must_use]
    pub fn new(name: &'static str, limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            name,
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            returned: Notify::new(),
        })
    }

    /// The name given at creation.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Units in the pool.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Units reserved now.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            limit: self.limit,
            used: self.used(),
            peak: self.peak.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }

    /// Takes `n` units if they fit, without counting a refusal.
    fn take(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.returned.notify_waiters();
    }

    /// Counts a refusal decided by the caller (e.g. a per-connection cap hit
    /// before this budget was asked), so every refusal shows in one place.
    pub fn count_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves `n` units, or `None` (counted) if they do not fit now.
    pub fn try_reserve(self: &Arc<Self>, n: usize) -> Option<Reservation> {
        if self.take(n) {
            Some(Reservation {
                budget: self.clone(),
                units: n,
            })
        } else {
            self.count_refusal();
            None
        }
    }

    /// An empty reservation, to grow later.
    #[must_use]
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            units: 0,
        }
    }

    /// Reserves `n` units, waiting for other holders to return some, but
    /// not past `deadline` (then `None`, counted as a refusal).
    pub async fn reserve_until(
        self: &Arc<Self>,
        n: usize,
        deadline: Instant,
    ) -> Option<Reservation> {
        let mut r = self.empty();
        if r.grow_until(n, deadline).await {
            Some(r)
        } else {
            None
        }
    }
}

/// Units taken from a [`Budget`]; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    units: usize,
}

impl Reservation {
    /// Units held.
    #[must_use]
    pub fn units(&self) -> usize {
        self.units
    }

    /// The budget these units come from.
    #[must_use]
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Takes `n` more units if they fit now (a refusal is counted).
    pub fn try_grow(&mut self, n: usize) -> bool {
        if self.budget.take(n) {
            self.units += n;
            true
        } else {
            self.budget.count_refusal();
            false
        }
    }

    /// Takes `n` more units, waiting for returns until `deadline`.
    pub async fn grow_until(&mut self, n: usize, deadline: Instant) -> bool {
        if self.budget.take(n) {
            self.units += n;
            return true;
        }
        self.budget.waits.fetch_add(1, Ordering::Relaxed);
        loop {
            // Register for the wake-up before re-checking, so a return that
            // happens in between is not missed.
            let returned = self.budget.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if self.budget.take(n) {
                self.units += n;
                return true;
            }
            if tokio::time::timeout_at(deadline, returned).await.is_err() {
                self.budget.count_refusal();
                return false;
            }
        }
    }

    /// Gives back all but `n` units (no-op if it holds `n` or fewer).
    pub fn shrink_to(&mut self, n: usize) {
        if self.units > n {
            self.budget.give_back(self.units - n);
            self.units = n;
        }
    }

    /// Moves `n` units (at most what it holds) into a new reservation on the
    /// same budget, e.g. to hand part of a buffer's share to a request.
    #[must_use]
    pub fn split(&mut self, n: usize) -> Reservation {
        let n = n.min(self.units);
        self.units -= n;
        Reservation {
            budget: self.budget.clone(),
            units: n,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reservations_fit_the_limit_and_return_on_drop() {
        let b = Budget::new("t", 100);
        let a = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let mut c = b.try_reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        assert!(!c.try_grow(1));
        drop(a);
        assert!(c.try_grow(10));
        c.shrink_to(5);
        assert_eq!(b.used(), 5);
        let d = c.split(3);
        assert_eq!((c.units(), d.units(), b.used()), (2, 3, 5));
        drop(c);
        drop(d);
        let s = b.stats();
        assert_eq!((s.used, s.peak, s.refusals, s.limit), (0, 100, 2, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_reservation_wakes_on_return_or_gives_up_at_deadline() {
        let b = Budget::new("t", 10);
        let held = b.try_reserve(10).unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            b2.reserve_until(4, deadline).await.map(|r| r.units())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Some(4));
        let _full = b.try_reserve(10).unwrap();
        let t0 = Instant::now();
        assert!(
            b.reserve_until(1, t0 + Duration::from_secs(2))
                .await
                .is_none()
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        let s = b.stats();
        assert_eq!((s.waits, s.refusals), (2, 1));
    }
}
