//! Which connections a daemon holds, and which one gives way when a new
//! one does not fit.
//!
//! A [`Registry`] is daemon-wide. Each listener registers with a
//! connection cap ([`Registry::add_listener`]); the daemon as a whole has a
//! descriptor cap derived from `RLIMIT_NOFILE` (see
//! [`crate::limits::fd_cap`]). Every accepted connection asks for a
//! [`Slot`] ([`Registry::admit`]), which counts it against both caps for as
//! long as the slot lives; extra descriptors a session opens (a ring pair's
//! eventfds, pidfds and socket clones) are reserved on the slot too
//! ([`Slot::reserve_fds`]).
//!
//! **When a new connection does not fit**, the connection that has been
//! *idle the longest* gives way: idle means no frame half read and no
//! request outstanding (see [`Slot::busy`]), and "the longest" is measured
//! from its last activity, not its age, so a client that keeps working is
//! never chosen, and an attacker's connections, idle since their hello, go
//! first. A connection still in its hello counts as idle since it was
//! accepted (the hello deadline bounds it anyway). If every connection is
//! busy the newcomer is refused with an error frame. Either way the event
//! is counted ([`crate::stats`]).
//!
//! The choice itself is [`choose_victim`], a pure function of the slots'
//! states and `now`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::stats::{ListenerStats, bump};

/// Identifies a listener within its [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(usize);

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The listener is at its cap and every connection on it is busy.
    #[error("connection cap reached ({0} connections, all busy)")]
    Cap(usize),
    /// The daemon's descriptor budget is spent and every connection is busy.
    #[error("descriptor budget spent ({0} descriptors, every connection busy)")]
    Fds(usize),
}

type EvictHook = Box<dyn FnOnce() + Send>;

/// What the registry and the connection's own code share about it.
pub(crate) struct SlotState {
    id: u64,
    listener: ListenerId,
    /// Nanoseconds since the registry's epoch of the last activity.
    last_active_ns: AtomicU64,
    /// Busy guards alive (a frame being read, requests outstanding).
    busy: AtomicU32,
    evicted: AtomicBool,
    wake: Notify,
    hook: Mutex<Option<EvictHook>>,
}

impl std::fmt::Debug for SlotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotState")
            .field("id", &self.id)
            .field("busy", &self.busy.load(Ordering::Relaxed))
            .field("evicted", &self.evicted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected state is plain counters and maps that every operation
    // leaves consistent; a panic elsewhere does not invalidate them.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct ListenerEntry {
    name: &'static str,
    cap: usize,
    open: usize,
    stats: Arc<ListenerStats>,
}

#[derive(Debug)]
struct Entry {
    state: Arc<SlotState>,
    fds: usize,
}

#[derive(Debug, Default)]
struct Inner {
    listeners: Vec<ListenerEntry>,
    slots: HashMap<u64, Entry>,
    fds_used: usize,
    next_id: u64,
}

/// The daemon-wide table of connections. See the module docs.
#[derive(Debug)]
pub struct Registry {
    epoch: Instant,
    fd_cap: usize,
    inner: Mutex<Inner>,
}

/// One connection's view of an idle candidate, for [`choose_victim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Slot id.
    pub id: u64,
    /// Whether anything is in progress on it.
    pub busy: bool,
    /// When it was last active.
    pub last_active: Instant,
}

/// The connection to close to make room: the one idle the longest, if any
/// connection is idle at all. Ties go to the lower id (the older slot).
#[must_use]
pub fn choose_victim(candidates: impl IntoIterator<Item = Candidate>) -> Option<u64> {
    candidates
        .into_iter()
        .filter(|c| !c.busy)
        .min_by_key(|c| (c.last_active, c.id))
        .map(|c| c.id)
}

impl Registry {
    /// A registry allowing `fd_cap` descriptors for connections in total
    /// (a connection costs one, plus what [`Slot::reserve_fds`] adds).
    #[must_use]
    #[allow(clippy::disallowed_methods)] // the registry's epoch: a driver clock
    pub fn new(fd_cap: usize) -> Arc<Registry> {
        Arc::new(Registry {
            epoch: Instant::now(),
            fd_cap: fd_cap.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Adds a listener allowing at most `cap` connections at once.
    pub fn add_listener(&self, name: &'static str, cap: usize) -> (ListenerId, Arc<ListenerStats>) {
        let stats = Arc::new(ListenerStats::default());
        let mut inner = lock(&self.inner);
        inner.listeners.push(ListenerEntry {
            name,
            cap: cap.max(1),
            open: 0,
            stats: stats.clone(),
        });
        (ListenerId(inner.listeners.len() - 1), stats)
    }

    /// The descriptor cap.
    #[must_use]
    pub fn fd_cap(&self) -> usize {
        self.fd_cap
    }

    /// Descriptors counted now.
    #[must_use]
    pub fn fds_used(&self) -> usize {
        lock(&self.inner).fds_used
    }

    /// A listener's connection cap.
    #[must_use]
    pub fn cap(&self, l: ListenerId) -> usize {
        lock(&self.inner).listeners.get(l.0).map_or(0, |e| e.cap)
    }

    fn ns_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    fn candidates<'a>(
        &'a self,
        inner: &'a Inner,
        only: Option<ListenerId>,
    ) -> impl Iterator<Item = Candidate> + 'a {
        inner
            .slots
            .values()
            .filter(move |e| only.is_none_or(|l| e.state.listener == l))
            .map(|e| Candidate {
                id: e.state.id,
                busy: e.state.busy.load(Ordering::Acquire) > 0,
                last_active: self.epoch
                    + Duration::from_nanos(e.state.last_active_ns.load(Ordering::Relaxed)),
            })
    }

    /// Removes `id` from the table and tells its connection to close.
    fn evict(inner: &mut Inner, id: u64) {
        let Some(e) = inner.slots.remove(&id) else {
            return;
        };
        inner.fds_used -= e.fds;
        if let Some(l) = inner.listeners.get_mut(e.state.listener.0) {
            l.open -= 1;
            l.stats.open.store(l.open as u64, Ordering::Relaxed);
            bump(&l.stats.evicted_idle);
            tracing::debug!(listener = l.name, slot = id, "idle connection evicted");
        }
        e.state.evicted.store(true, Ordering::Release);
        e.state.wake.notify_waiters();
        let hook = lock(&e.state.hook).take();
        if let Some(h) = hook {
            h();
        }
    }

    /// Evicts the longest-idle connection (of `only`, or any), if one is idle.
    fn evict_one(&self, inner: &mut Inner, only: Option<ListenerId>) -> bool {
        match choose_victim(self.candidates(inner, only)) {
            Some(id) => {
                Self::evict(inner, id);
                true
            }
            None => false,
        }
    }

    /// Closes the longest-idle connection anywhere, to get a descriptor back
    /// (the accept loop does this when `accept` itself fails for lack of
    /// descriptors). Returns whether one was idle.
    pub fn shed_one(&self) -> bool {
        let mut inner = lock(&self.inner);
        self.evict_one(&mut inner, None)
    }

    /// A slot for a connection accepted on `listener` at `now`, making room
    /// by evicting the longest-idle connection if needed.
    pub fn admit(self: &Arc<Self>, listener: ListenerId, now: Instant) -> Result<Slot, Refusal> {
        let mut inner = lock(&self.inner);
        let Some(l) = inner.listeners.get(listener.0) else {
            return Err(Refusal::Cap(0));
        };
        let (cap, stats) = (l.cap, l.stats.clone());
        if inner.listeners[listener.0].open >= cap && !self.evict_one(&mut inner, Some(listener)) {
            bump(&stats.refused_cap);
            return Err(Refusal::Cap(cap));
        }
        if inner.fds_used >= self.fd_cap && !self.evict_one(&mut inner, None) {
            bump(&stats.refused_fds);
            return Err(Refusal::Fds(self.fd_cap));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let state = Arc::new(SlotState {
            id,
            listener,
            last_active_ns: AtomicU64::new(self.ns_since_epoch(now)),
            busy: AtomicU32::new(0),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
            hook: Mutex::new(None),
        });
        inner.slots.insert(
            id,
            Entry {
                state: state.clone(),
                fds: 1,
            },
        );
        inner.fds_used += 1;
        let l = &mut inner.listeners[listener.0];
        l.open += 1;
        stats.open.store(l.open as u64, Ordering::Relaxed);
        stats.peak_open.fetch_max(l.open as u64, Ordering::Relaxed);
        bump(&stats.accepted);
        Ok(Slot {
            registry: self.clone(),
            state,
            stats,
        })
    }

    fn release(&self, id: u64) {
        let mut inner = lock(&self.inner);
        if let Some(e) = inner.slots.remove(&id) {
            inner.fds_used -= e.fds;
            if let Some(l) = inner.listeners.get_mut(e.state.listener.0) {
                l.open -= 1;
                l.stats.open.store(l.open as u64, Ordering::Relaxed);
            }
        }
    }
}

/// One admitted connection: counted against its listener's cap and the
/// descriptor budget until dropped.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Registry>,
    state: Arc<SlotState>,
    stats: Arc<ListenerStats>,
}

impl Slot {
    /// The slot's id (unique within the registry).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// The counters of the listener this connection came from.
    #[must_use]
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Marks the connection busy until the guard drops (then it is active
    /// as of that moment). Guards nest and may move to other threads, e.g.
    /// one per outstanding request.
    #[must_use]
    pub fn busy(&self) -> Busy {
        self.state.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            state: self.state.clone(),
            registry: Arc::downgrade(&self.registry),
        }
    }

    /// Whether a [`Busy`] guard is alive.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.state.busy.load(Ordering::Acquire) > 0
    }

    /// Records activity at `now` without holding the connection busy.
    pub fn touch(&self, now: Instant) {
        self.state
            .last_active_ns
            .store(self.registry.ns_since_epoch(now), Ordering::Relaxed);
    }

    /// Whether the registry has evicted this connection.
    #[must_use]
    pub fn is_evicted(&self) -> bool {
        self.state.evicted.load(Ordering::Acquire)
    }

    /// Resolves once the connection is evicted (select on it next to reads).
    pub async fn evicted(&self) {
        loop {
            let n = self.state.wake.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_evicted() {
                return;
            }
            n.await;
        }
    }

    /// Runs `hook` when the connection is evicted (at once if it already
    /// was): how a session served on a blocking thread is told to stop,
    /// e.g. by shutting its socket down.
    pub fn on_evict(&self, hook: impl FnOnce() + Send + 'static) {
        let mut h = lock(&self.state.hook);
        if self.is_evicted() {
            drop(h);
            hook();
        } else {
            *h = Some(Box::new(hook));
        }
    }

    /// Counts `n` more descriptors against the daemon's budget for as long
    /// as this slot lives; false (nothing counted) if they do not fit.
    pub fn reserve_fds(&self, n: usize) -> bool {
        let mut inner = lock(&self.registry.inner);
        if inner.fds_used + n > self.registry.fd_cap {
            return false;
        }
        let Some(e) = inner.slots.get_mut(&self.state.id) else {
            return false;
        };
        e.fds += n;
        inner.fds_used += n;
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.release(self.state.id);
    }
}

/// Holds a connection busy (see [`Slot::busy`]).
#[derive(Debug)]
pub struct Busy {
    state: Arc<SlotState>,
    registry: std::sync::Weak<Registry>,
}

impl Drop for Busy {
    #[allow(clippy::disallowed_methods)] // a driver clock: when the work ended
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            self.state
                .last_active_ns
                .store(r.ns_since_epoch(Instant::now()), Ordering::Relaxed);
        }
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests start their synthetic clocks from now
mod tests {
    use super::*;

    #[test]
    fn victim_is_the_longest_idle_never_a_busy_one() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let c = |id, busy, ms| Candidate {
            id,
            busy,
            last_active: at(ms),
        };
        assert_eq!(
            choose_victim([c(1, false, 30), c(2, false, 10), c(3, true, 0)]),
            Some(2)
        );
        assert_eq!(choose_victim([c(1, true, 0), c(2, true, 5)]), None);
        assert_eq!(choose_victim([c(4, false, 7), c(3, false, 7)]), Some(3));
        assert_eq!(choose_victim([]), None);
    }

    #[test]
    fn cap_evicts_idle_and_refuses_when_all_busy() {
        let r = Registry::new(100);
        let (l, stats) = r.add_listener("v", 2);
        let t0 = Instant::now();
        let a = r.admit(l, t0).unwrap();
        let b = r.admit(l, t0 + Duration::from_millis(1)).unwrap();
        // `a` did something recently; `b` is the longest idle.
        a.touch(t0 + Duration::from_millis(5));
        let c = r.admit(l, t0 + Duration::from_millis(6)).unwrap();
        assert!(b.is_evicted() && !a.is_evicted());
        let _ga = a.busy();
        let _gc = c.busy();
        assert_eq!(
            r.admit(l, t0 + Duration::from_millis(7)).unwrap_err(),
            Refusal::Cap(2)
        );
        let s = stats.snapshot();
        assert_eq!(
            (
                s.accepted,
                s.evicted_idle,
                s.refused_cap,
                s.open,
                s.peak_open
            ),
            (3, 1, 1, 2, 2)
        );
        drop(b); // the evicted slot's late drop changes nothing
        assert_eq!(stats.snapshot().open, 2);
        drop(_ga);
        drop(a);
        assert_eq!(stats.snapshot().open, 1);
    }

    #[test]
    fn descriptor_budget_spans_listeners_and_counts_extra_fds() {
        let r = Registry::new(4);
        let (v, vs) = r.add_listener("v", 10);
        let (adm, _) = r.add_listener("admin", 10);
        let t0 = Instant::now();
        let a = r.admit(v, t0).unwrap();
        assert!(a.reserve_fds(2));
        assert!(!a.reserve_fds(2), "over the budget");
        let _g = a.busy();
        let b = r.admit(adm, t0).unwrap();
        assert_eq!(r.fds_used(), 4);
        // Full: the idle admin connection gives way to a verify one.
        let c = r.admit(v, t0 + Duration::from_millis(1)).unwrap();
        assert!(b.is_evicted());
        let _gc = c.busy();
        assert_eq!(r.admit(adm, t0).unwrap_err(), Refusal::Fds(4));
        assert_eq!(vs.snapshot().accepted, 2);
        drop(_g);
        drop(a);
        assert_eq!(r.fds_used(), 1);
    }

    #[tokio::test]
    async fn eviction_wakes_the_connection_and_runs_its_hook() {
        let r = Registry::new(10);
        let (l, _) = r.add_listener("v", 1);
        let t0 = Instant::now();
        let a = r.admit(l, t0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        a.on_evict(move || tx.send(()).unwrap());
        let waiter = async { a.evicted().await };
        let _b = r.admit(l, t0).unwrap();
        waiter.await;
        rx.try_recv().unwrap();
    }
}
