//! The sans-IO scheduler: admission, fair gathering into batches, adaptive
//! delay and admission limit.
//!
//! The server feeds every verify request into one [`Scheduler`] shared by
//! all clients, and runs the batches it emits on the worker pool. Nothing
//! here reads a clock or touches a socket: time comes in as `now`.
//!
//! Calling order (one driver holds the scheduler under a lock):
//!
//! 1. [`Scheduler::handle_submit`] for each request → [`Admission::Busy`]
//!    at once when admitting it would exceed the admission limit (never an
//!    unbounded queue), or accepted and queued.
//! 2. [`Scheduler::poll_batch`] until `None`; run each [`Batch`] on a free
//!    worker.
//! 3. [`Scheduler::handle_batch_done`] when a batch finished, then poll again.
//! 4. [`Scheduler::poll_timeout`] tells when to call `poll_batch` again if
//!    nothing else happens (the gathering deadline); calling early is harmless.
//!
//! **When to dispatch** (Nagle's rule): if every worker is idle, queued items
//! go out at once, so one item in flight waits for nobody. Otherwise a free
//! worker takes a batch when `target` items are queued or the oldest queued
//! item has waited `max_delay`. `max_delay` adapts: twice the measured
//! per-item verify time (EWMA), clamped to `[delay_floor, delay_ceiling]`;
//! gathering longer than two verify times gains nothing, since the
//! wake-up and hand-off cost it amortises is smaller than that.
//!
//! **Fairness**: each client has its own queue; a batch is filled round-robin
//! with a quantum of `ceil(size / active clients)` items, so a client sending
//! batches of 256 cannot starve one sending single items. Admission keeps a
//! client to its fair share of the limit (`limit / clients holding work`, at
//! least one full batch) once the daemon is at least half full; idle
//! connections do not count, so a lone busy client may use the whole limit.
//!
//! **Latency under a heavy client**: round-robin decides *whose* items go
//! in a batch, but a small client's request still waits for the batch
//! running ahead of it and then for its own batch to finish. So while two or
//! more clients submit work (two distinct clients within `share_window`,
//! 10 ms by default: a small client between two requests has nothing
//! queued, yet the batch about to run is the one it will wait for), a
//! batch is also capped at
//! `max_batch_time` of measured verify time (at least
//! [`MIN_SHARED_BATCH`] items): with 41 µs per item and the 500 µs default
//! that is 12 items, and a single-item request waits about a millisecond
//! behind a flood instead of two full 64-item batches (5 ms). A lone busy
//! client keeps full batches; the extra hand-off per 12 items costs well
//! under the 41 µs × 12 it is amortised over.
//!
//! **Admission limit**: items admitted and not yet verified. It adapts to the
//! measured throughput so that a newly admitted item waits at most about
//! `queue_target` (items/s × `queue_target`), clamped to `[limit_floor,
//! limit_ceiling]`, and only moves when the new value differs by more than
//! 25 % (hysteresis).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Smallest batch the shared-pool time cap produces: below this the
/// hand-off per batch is no longer small against the work in it.
pub const MIN_SHARED_BATCH: usize = 4;

/// A connected client, as the driver numbers them.
pub type ClientId = u64;

/// Scheduler settings. Defaults in [`SchedConfig::new`].
#[derive(Debug, Clone)]
pub struct SchedConfig {
    /// Workers in the pool (`--threads`).
    pub workers: usize,
    /// Most items in one dispatched batch.
    pub max_batch: usize,
    /// While two or more clients submit work, a batch holds at most this
    /// much measured verify time (see the module docs).
    pub max_batch_time: Duration,
    /// Two distinct clients submitting within this window count as
    /// sharing the pool.
    pub share_window: Duration,
    /// Lower clamp of the adaptive gathering delay.
    pub delay_floor: Duration,
    /// Upper clamp of the adaptive gathering delay.
    pub delay_ceiling: Duration,
    /// How long an admitted item may expect to queue; sets the limit.
    pub queue_target: Duration,
    /// Lower clamp of the admission limit (items).
    pub limit_floor: usize,
    /// Upper clamp of the admission limit (items); also the starting value
    /// until throughput has been measured.
    pub limit_ceiling: usize,
}

impl SchedConfig {
    /// Defaults for `workers` threads: batches of at most 64 per worker
    /// hand-off (500 µs of verify time while clients share the pool), delay 20–200 µs, 100 ms queue target, limit between four full
    /// batches per worker and 65,536 items (the daemon starts at 4,096).
    #[must_use]
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        SchedConfig {
            workers,
            max_batch: 64,
            max_batch_time: Duration::from_micros(500),
            share_window: Duration::from_millis(10),
            delay_floor: Duration::from_micros(20),
            delay_ceiling: Duration::from_micros(200),
            queue_target: Duration::from_millis(100),
            limit_floor: 4 * 64 * workers,
            limit_ceiling: 65_536,
        }
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued; its items will appear in batches.
    Accepted,
    /// Not admitted: the daemon is at its limit (or the client is over its
    /// fair share). Nothing was queued; the caller should back off or try
    /// another instance.
    Busy,
}

/// A contiguous run of one request's items inside a batch.
#[derive(Debug, Clone)]
pub struct Piece<T> {
    /// Which client.
    pub client: ClientId,
    /// The request's payload as given to [`Scheduler::handle_submit`].
    pub request: T,
    /// First item index within the request.
    pub start: usize,
    /// Number of items.
    pub len: usize,
}

/// Work for one worker.
#[derive(Debug, Clone)]
pub struct Batch<T> {
    /// Pass back to [`Scheduler::handle_batch_done`].
    pub id: u64,
    /// The items, as runs of requests.
    pub pieces: Vec<Piece<T>>,
    /// Total items.
    pub items: usize,
}

#[derive(Debug)]
struct Queued<T> {
    request: T,
    next: usize,
    len: usize,
    enqueued: Instant,
}

#[derive(Debug)]
struct ClientQueue<T> {
    queue: VecDeque<Queued<T>>,
    /// Admitted, not yet finished.
    in_flight: usize,
    /// Disconnected; removed once its running items finish.
    gone: bool,
}

impl<T> ClientQueue<T> {
    fn new() -> Self {
        ClientQueue {
            queue: VecDeque::new(),
            in_flight: 0,
            gone: false,
        }
    }
}

/// Counters the admin socket reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedStats {
    /// Requests answered Busy.
    pub busy_rejections: u64,
    /// Items in those requests.
    pub busy_items: u64,
    /// Items admitted.
    pub admitted_items: u64,
    /// Items finished.
    pub done_items: u64,
    /// Items queued, not yet dispatched.
    pub queued: usize,
    /// Items admitted and not finished.
    pub in_flight: usize,
    /// Current admission limit.
    pub limit: usize,
    /// Current gathering delay, microseconds.
    pub delay_us: u64,
    /// Measured per-item verify time (EWMA), nanoseconds.
    pub item_ns: u64,
    /// Batches dispatched.
    pub batches: u64,
}

/// The scheduler. See the module docs.
#[derive(Debug)]
pub struct Scheduler<T> {
    cfg: SchedConfig,
    clients: HashMap<ClientId, ClientQueue<T>>,
    /// Clients with queued items, in round-robin order.
    ready: VecDeque<ClientId>,
    queued: usize,
    in_flight: usize,
    busy_workers: usize,
    next_batch: u64,
    running: HashMap<u64, Vec<(ClientId, usize)>>,
    /// EWMA of per-item verify time, nanoseconds (0 = not measured yet).
    item_ns: u64,
    limit: usize,
    /// The two most recent distinct submitters, newest first.
    recent: [Option<(ClientId, Instant)>; 2],
    stats: SchedStats,
}

impl<T: Clone> Scheduler<T> {
    /// A scheduler with nothing queued.
    #[must_use]
    pub fn new(cfg: SchedConfig) -> Self {
        let limit = cfg.limit_ceiling.min(4096).max(cfg.limit_floor);
        Scheduler {
            cfg,
            clients: HashMap::new(),
            ready: VecDeque::new(),
            queued: 0,
            in_flight: 0,
            busy_workers: 0,
            next_batch: 0,
            running: HashMap::new(),
            item_ns: 0,
            limit,
            recent: [None, None],
            stats: SchedStats::default(),
        }
    }

    /// A client connected (counts towards fair shares).
    pub fn handle_connect(&mut self, client: ClientId) {
        self.clients.entry(client).or_insert_with(ClientQueue::new);
    }

    /// A client went away: its queued items are dropped (there is nobody to
    /// answer) and counted as finished; running ones finish normally.
    /// Returns each request that lost items, with how many, so the driver
    /// can release them.
    pub fn handle_disconnect(&mut self, client: ClientId) -> Vec<(T, usize)> {
        let Some(q) = self.clients.get_mut(&client) else {
            return Vec::new();
        };
        let dropped: Vec<(T, usize)> = q
            .queue
            .drain(..)
            .map(|r| (r.request, r.len - r.next))
            .collect();
        let n: usize = dropped.iter().map(|d| d.1).sum();
        q.in_flight -= n;
        q.gone = true;
        if q.in_flight == 0 {
            self.clients.remove(&client);
        }
        self.ready.retain(|c| *c != client);
        self.queued -= n;
        self.in_flight -= n;
        self.stats.done_items += n as u64;
        dropped
    }

    /// Offers a request of `items` items from `client`.
    pub fn handle_submit(
        &mut self,
        now: Instant,
        client: ClientId,
        request: T,
        items: usize,
    ) -> Admission {
        match self.recent[0] {
            Some((c, _)) if c == client => self.recent[0] = Some((client, now)),
            _ => self.recent = [Some((client, now)), self.recent[0]],
        }
        // Share among clients that hold work now (and this one): an idle
        // connection must not shrink a busy client's share.
        let others = self
            .clients
            .iter()
            .filter(|(id, q)| **id != client && !q.gone && q.in_flight > 0)
            .count();
        let share = (self.limit / (others + 1)).max(self.cfg.max_batch);
        let q = self.clients.entry(client).or_insert_with(ClientQueue::new);
        let over_limit = self.in_flight + items > self.limit;
        let over_share = self.in_flight * 2 >= self.limit && q.in_flight + items > share;
        if over_limit || over_share {
            self.stats.busy_rejections += 1;
            self.stats.busy_items += items as u64;
            return Admission::Busy;
        }
        if items == 0 {
            return Admission::Accepted;
        }
        if q.queue.is_empty() {
            self.ready.push_back(client);
        }
        q.queue.push_back(Queued {
            request,
            next: 0,
            len: items,
            enqueued: now,
        });
        q.in_flight += items;
        self.queued += items;
        self.in_flight += items;
        self.stats.admitted_items += items as u64;
        Admission::Accepted
    }

    /// The current gathering delay.
    #[must_use]
    pub fn delay(&self) -> Duration {
        if self.item_ns == 0 {
            return self.cfg.delay_ceiling;
        }
        Duration::from_nanos(self.item_ns.saturating_mul(2))
            .clamp(self.cfg.delay_floor, self.cfg.delay_ceiling)
    }

    fn oldest(&self) -> Option<Instant> {
        self.ready
            .iter()
            .filter_map(|c| {
                self.clients
                    .get(c)
                    .and_then(|q| q.queue.front())
                    .map(|r| r.enqueued)
            })
            .min()
    }

    /// Whether two distinct clients submitted within `share_window`.
    fn shared(&self, now: Instant) -> bool {
        self.recent[1]
            .is_some_and(|(_, t)| now.saturating_duration_since(t) <= self.cfg.share_window)
    }

    /// The largest batch to form now: `max_batch`, or while clients share
    /// the pool, what fits in `max_batch_time` of measured verify time.
    fn target(&self, now: Instant) -> usize {
        if self.item_ns == 0 || !self.shared(now) {
            return self.cfg.max_batch;
        }
        let fit = self.cfg.max_batch_time.as_nanos() / u128::from(self.item_ns);
        usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .clamp(MIN_SHARED_BATCH.min(self.cfg.max_batch), self.cfg.max_batch)
    }

    /// Whether a batch should go out now.
    fn should_dispatch(&self, now: Instant) -> bool {
        if self.queued == 0 || self.busy_workers >= self.cfg.workers {
            return false;
        }
        if self.busy_workers == 0 || self.queued >= self.target(now) {
            return true;
        }
        self.oldest()
            .is_some_and(|t| now.saturating_duration_since(t) >= self.delay())
    }

    /// The next batch to run on a free worker, if one should go now.
    #[must_use]
    pub fn poll_batch(&mut self, now: Instant) -> Option<Batch<T>> {
        if !self.should_dispatch(now) {
            return None;
        }
        let free = self.cfg.workers - self.busy_workers;
        // Spread what is queued over the free workers.
        let size = self.queued.div_ceil(free).clamp(1, self.target(now));
        let quantum = size.div_ceil(self.ready.len().max(1));
        let mut pieces = Vec::new();
        let mut taken = 0;
        let mut per_client: Vec<(ClientId, usize)> = Vec::new();
        while taken < size {
            let Some(client) = self.ready.pop_front() else {
                break;
            };
            let Some(q) = self.clients.get_mut(&client) else {
                continue;
            };
            let mut budget = quantum.min(size - taken);
            let mut got = 0;
            while budget > 0 {
                let Some(front) = q.queue.front_mut() else {
                    break;
                };
                let n = budget.min(front.len - front.next);
                pieces.push(Piece {
                    client,
                    request: front.request.clone(),
                    start: front.next,
                    len: n,
                });
                front.next += n;
                budget -= n;
                got += n;
                if front.next == front.len {
                    q.queue.pop_front();
                }
            }
            taken += got;
            per_client.push((client, got));
            if !q.queue.is_empty() {
                self.ready.push_back(client);
            }
        }
        if taken == 0 {
            return None;
        }
        self.queued -= taken;
        self.busy_workers += 1;
        self.next_batch += 1;
        self.stats.batches += 1;
        self.running.insert(self.next_batch, per_client);
        Some(Batch {
            id: self.next_batch,
            pieces,
            items: taken,
        })
    }

    /// A batch finished; `busy` is how long the worker spent verifying it.
    pub fn handle_batch_done(&mut self, _now: Instant, id: u64, busy: Duration) {
        let Some(per_client) = self.running.remove(&id) else {
            return;
        };
        self.busy_workers = self.busy_workers.saturating_sub(1);
        let mut items = 0;
        for (client, n) in per_client {
            items += n;
            if let Some(q) = self.clients.get_mut(&client) {
                q.in_flight -= n;
                if q.gone && q.in_flight == 0 {
                    self.clients.remove(&client);
                }
            }
        }
        self.in_flight -= items;
        self.stats.done_items += items as u64;
        if items > 0 {
            let per_item = (busy.as_nanos() / items as u128).min(u128::from(u32::MAX)) as u64;
            self.item_ns = if self.item_ns == 0 {
                per_item
            } else {
                (self.item_ns * 7 + per_item) / 8
            };
            self.adapt_limit();
        }
    }

    fn adapt_limit(&mut self) {
        if self.item_ns == 0 {
            return;
        }
        let per_s = 1_000_000_000u128 * self.cfg.workers as u128 / u128::from(self.item_ns);
        let want = (per_s * self.cfg.queue_target.as_nanos() / 1_000_000_000) as usize;
        let want = want.clamp(
            self.cfg.limit_floor,
            self.cfg.limit_ceiling.max(self.cfg.limit_floor),
        );
        // Hysteresis: move only on a change of more than 25 %.
        if want * 4 > self.limit * 5 || want * 5 < self.limit * 4 {
            self.limit = want;
        }
    }

    /// When to call [`Self::poll_batch`] next if nothing else happens.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.queued == 0 || self.busy_workers >= self.cfg.workers {
            return None;
        }
        self.oldest().map(|t| t + self.delay())
    }

    /// Whether nothing is admitted and unfinished (drain complete).
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SchedStats {
        SchedStats {
            queued: self.queued,
            in_flight: self.in_flight,
            limit: self.limit,
            delay_us: self.delay().as_micros() as u64,
            item_ns: self.item_ns,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(workers: usize) -> SchedConfig {
        SchedConfig {
            limit_floor: 8,
            limit_ceiling: 1000,
            ..SchedConfig::new(workers)
        }
    }

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)] // tests need an origin; all later times are offsets
        Instant::now()
    }

    /// V3: an idle pool dispatches a single item at once (no gathering delay).
    #[test]
    fn idle_pool_dispatches_immediately() {
        let now = t0();
        let mut s = Scheduler::new(cfg(2));
        assert_eq!(s.handle_submit(now, 1, "a", 1), Admission::Accepted);
        let b = s.poll_batch(now).expect("dispatch at once");
        assert_eq!(b.items, 1);
        assert!(s.poll_batch(now).is_none());
    }

    /// V3: with a busy worker, a small batch gathers until the delay passes.
    #[test]
    fn busy_pool_gathers_until_delay() {
        let now = t0();
        let mut s = Scheduler::new(cfg(2));
        s.handle_submit(now, 1, "a", 1);
        let first = s.poll_batch(now).unwrap();
        s.handle_submit(now, 2, "b", 3);
        assert!(s.poll_batch(now).is_none(), "gathering");
        let deadline = s.poll_timeout().unwrap();
        assert_eq!(deadline, now + s.delay());
        assert!(s.poll_batch(deadline - Duration::from_micros(1)).is_none());
        let b = s.poll_batch(deadline).unwrap();
        assert_eq!(b.items, 3);
        // Both workers busy: nothing dispatches, no timer.
        s.handle_submit(now, 2, "c", 100);
        assert!(s.poll_batch(deadline).is_none());
        assert!(s.poll_timeout().is_none());
        // Past the share window (client 1 last submitted at `now`), so the
        // batch is not capped by verify time.
        let late = deadline + Duration::from_millis(11);
        s.handle_batch_done(late, first.id, Duration::from_micros(50));
        let b = s.poll_batch(late).unwrap();
        assert_eq!(b.items, 64, "full batch goes at once, capped at max_batch");
    }

    /// V3: while two clients submit work, a batch holds at most
    /// `max_batch_time` of measured verify time, so a single-item client
    /// waits behind small batches; a lone client still gets full batches.
    #[test]
    fn shared_pool_caps_batches_by_verify_time() {
        let now = t0();
        let mut s = Scheduler::new(cfg(1));
        // Measure 50 µs per item: one batch of 10 items that took 500 µs.
        s.handle_submit(now, 1, "m", 10);
        let b = s.poll_batch(now).unwrap();
        s.handle_batch_done(now, b.id, Duration::from_micros(500));
        // Lone heavy client: full batches.
        s.handle_submit(now, 1, "heavy", 200);
        let b = s.poll_batch(now).unwrap();
        assert_eq!(b.items, 64, "a lone client keeps full batches");
        s.handle_batch_done(now, b.id, Duration::from_micros(64 * 50));
        // A second client arrives: 500 µs / 50 µs = 10 items per batch, and
        // the small client's item is in the very next one.
        s.handle_submit(now, 2, "small", 1);
        let b = s.poll_batch(now).unwrap();
        assert_eq!(b.items, 10, "capped at max_batch_time while shared");
        assert!(
            b.pieces.iter().any(|p| p.client == 2),
            "round robin takes the small client"
        );
        s.handle_batch_done(now, b.id, Duration::from_micros(500));
        // While the small client submitted within the share window, the
        // heavy one's batches stay capped even with nothing else queued: the
        // small client's next request will wait for the batch running now.
        let b = s.poll_batch(now).unwrap();
        assert_eq!(b.items, 10, "still shared within the window");
        s.handle_batch_done(now, b.id, Duration::from_micros(500));
        // Past the window the heavy client is alone again: full batches.
        let later = now + Duration::from_millis(11);
        let b = s.poll_batch(later).unwrap();
        assert_eq!(b.items, 64);
        // A slow backend (400 µs per item) still forms MIN_SHARED_BATCH.
        let mut slow = Scheduler::new(cfg(1));
        slow.handle_submit(now, 1, "m", 1);
        let b = slow.poll_batch(now).unwrap();
        slow.handle_batch_done(now, b.id, Duration::from_micros(400));
        slow.handle_submit(now, 1, "a", 50);
        slow.handle_submit(now, 2, "b", 50);
        let b = slow.poll_batch(now).unwrap();
        assert_eq!(b.items, MIN_SHARED_BATCH);
    }

    /// V3: the delay adapts to the measured verify time within its clamps.
    #[test]
    fn delay_adapts_to_measured_verify_time() {
        let now = t0();
        let mut s: Scheduler<&str> = Scheduler::new(cfg(1));
        assert_eq!(
            s.delay(),
            Duration::from_micros(200),
            "ceiling before any measurement"
        );
        for _ in 0..50 {
            s.handle_submit(now, 1, "a", 10);
            let b = s.poll_batch(now).unwrap();
            s.handle_batch_done(now, b.id, Duration::from_micros(450)); // 45 µs/item
        }
        assert_eq!(s.delay(), Duration::from_micros(90));
        for _ in 0..50 {
            s.handle_submit(now, 1, "a", 10);
            let b = s.poll_batch(now).unwrap();
            s.handle_batch_done(now, b.id, Duration::from_micros(10));
        }
        assert_eq!(s.delay(), Duration::from_micros(20), "floor");
    }

    /// V3: a client with a huge backlog does not starve one sending singles.
    #[test]
    fn round_robin_across_clients() {
        let now = t0();
        let mut s = Scheduler::new(SchedConfig {
            max_batch: 8,
            ..cfg(1)
        });
        s.handle_submit(now, 1, "big", 200);
        s.handle_submit(now, 2, "small", 1);
        let b = s.poll_batch(now).unwrap();
        assert_eq!(b.items, 8);
        let small: usize = b
            .pieces
            .iter()
            .filter(|p| p.client == 2)
            .map(|p| p.len)
            .sum();
        assert_eq!(small, 1, "the single item rides in the first batch");
        // Pieces cover the big request contiguously, in order.
        let big: Vec<_> = b
            .pieces
            .iter()
            .filter(|p| p.client == 1)
            .map(|p| (p.start, p.len))
            .collect();
        assert_eq!(big, vec![(0, 4), (4, 3)]);
    }

    /// V3: admission limit answers Busy at once and queues nothing.
    #[test]
    fn busy_beyond_limit_and_recovers() {
        let now = t0();
        let mut s = Scheduler::new(SchedConfig {
            limit_floor: 100,
            limit_ceiling: 100,
            ..cfg(1)
        });
        assert_eq!(s.handle_submit(now, 1, "a", 60), Admission::Accepted);
        assert_eq!(s.handle_submit(now, 1, "b", 41), Admission::Busy);
        assert_eq!(s.stats().queued, 60);
        assert_eq!(s.stats().busy_rejections, 1);
        assert_eq!(s.stats().busy_items, 41);
        assert_eq!(s.handle_submit(now, 2, "c", 40), Admission::Accepted);
        let b = s.poll_batch(now).unwrap();
        s.handle_batch_done(now, b.id, Duration::from_micros(64 * 45));
        assert_eq!(s.handle_submit(now, 1, "d", 41), Admission::Accepted);
    }

    /// V3: once half full, a client cannot take more than its fair share.
    #[test]
    fn fair_share_when_loaded() {
        let now = t0();
        let mut s = Scheduler::new(SchedConfig {
            limit_floor: 256,
            limit_ceiling: 256,
            max_batch: 16,
            ..cfg(1)
        });
        s.handle_connect(1);
        s.handle_connect(2);
        s.handle_connect(3); // connected but idle: does not shrink shares
        assert_eq!(s.handle_submit(now, 2, "x", 8), Admission::Accepted);
        assert_eq!(s.handle_submit(now, 1, "a", 128), Admission::Accepted);
        assert_eq!(
            s.handle_submit(now, 1, "b", 16),
            Admission::Busy,
            "over its share of 128 (two active clients)"
        );
        assert_eq!(s.handle_submit(now, 2, "c", 100), Admission::Accepted);
    }

    /// A lone active client may use the whole limit even with idle connections.
    #[test]
    fn lone_client_gets_the_whole_limit() {
        let now = t0();
        let mut s = Scheduler::new(SchedConfig {
            limit_floor: 256,
            limit_ceiling: 256,
            max_batch: 16,
            ..cfg(1)
        });
        s.handle_connect(1);
        s.handle_connect(2);
        assert_eq!(s.handle_submit(now, 1, "a", 200), Admission::Accepted);
        assert_eq!(s.handle_submit(now, 1, "b", 56), Admission::Accepted);
        assert_eq!(s.handle_submit(now, 1, "c", 1), Admission::Busy);
    }

    /// The admission limit follows measured throughput, with hysteresis.
    #[test]
    fn limit_adapts_with_hysteresis() {
        let now = t0();
        let mut s = Scheduler::new(SchedConfig {
            limit_floor: 10,
            limit_ceiling: 100_000,
            ..cfg(2)
        });
        let start = s.stats().limit;
        s.handle_submit(now, 1, "a", 10);
        let b = s.poll_batch(now).unwrap();
        // 25 µs/item, 2 workers → 80,000/s × 100 ms = 8,000 items.
        s.handle_batch_done(now, b.id, Duration::from_micros(25 * b.items as u64));
        assert_ne!(start, 8000);
        assert_eq!(s.stats().limit, 8000);
        s.handle_submit(now, 1, "a", 10);
        let b = s.poll_batch(now).unwrap();
        s.handle_batch_done(now, b.id, Duration::from_micros(27 * b.items as u64)); // small change
        assert_eq!(s.stats().limit, 8000, "hysteresis holds");
    }

    #[test]
    fn disconnect_drops_queued_and_balances_counts() {
        let now = t0();
        let mut s = Scheduler::new(cfg(1));
        s.handle_submit(now, 1, "a", 10);
        let b = s.poll_batch(now).unwrap();
        s.handle_submit(now, 1, "b", 5);
        assert_eq!(s.handle_disconnect(1), vec![("b", 5)]);
        assert!(!s.is_idle());
        s.handle_batch_done(now, b.id, Duration::from_micros(1));
        assert!(s.is_idle());
        assert_eq!(s.stats().queued, 0);
    }
}
