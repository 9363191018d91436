//! Client side: a [`Pool`] over several verifyd instances, and the explicit
//! [`InProcess`] backend.
//!
//! **Submitting**: [`Pool::submit`] places a batch and returns a [`Ticket`];
//! placing may block the caller while every instance is backing off or
//! none is reachable (reconnecting on the caller's thread), for up to
//! [`PoolConfig::give_up_after`]. [`Pool::try_submit`] never blocks: it
//! checks that an instance is connected, hands the batch to the router
//! thread and returns a ticket at once, or returns a [`Rejected`] (with the
//! items, for an in-process fallback) at once when no instance is connected;
//! a reconnection attempt then starts in the background, so a later call
//! can succeed. [`Pool::connect_nonblocking`] likewise creates a pool without
//! waiting for any instance. A ticket from either is waited on with
//! [`Ticket::wait`], polled with [`Ticket::try_result`], or awaited: it is a
//! [`std::future::Future`], woken by the thread that records its last
//! verdict, so it works with any executor and needs no runtime.
//!
//! **Request size**: a batch is cut into requests that each fit the limits
//! of the session they go to ([`RequestLimits`]): the hello's negotiated
//! maximum frame, on a shared-memory ring also the ring's largest record,
//! and at most [`crate::proto::MAX_BATCH_ITEMS`] and
//! [`PoolConfig::max_request_items`] items. Sizes are added up from an upper
//! bound of each item's encoding ([`limits::item_bound`]) before anything
//! is encoded, so the transport a session runs on changes where requests are
//! cut, never which items are verified. An item that alone exceeds a
//! session's limit is encoded alone and, if it really does not fit, goes to
//! a session with a larger limit; if no connected session can take it, that
//! item alone gets [`ItemError::TooLarge`] ([`Ticket::wait_each`] shows it
//! next to the other items' verdicts; [`Ticket::wait`] reports it as
//! [`PoolError::ItemTooLarge`]).
//!
//! **Side connection**: a ring's largest record (about 2 MiB by default)
//! is smaller than the largest frame (16 MiB). So that the transport does
//! not change what can be verified, a ring session sends what its ring
//! cannot carry but a frame can over a second, frames-only connection to
//! the same instance (hello with ring capacity 0). It is opened on first
//! need, kept while used, and closed after [`PoolConfig::side_idle_after`]
//! without requests; a failed open is retried after
//! [`PoolConfig::reconnect_every`] (the router waits meanwhile, as for a
//! back-off). It registers its own keys and re-routes its pending requests
//! on its death like any connection. Only an item over the frame limit
//! gets [`ItemError::TooLarge`]. [`PoolStats::side_connections_opened`] and
//! [`PoolStats::requests_on_side_connection`] count its use.
//!
//! **Balancing**: each request goes to the connected instance with the
//! fewest outstanding items that is not backing off. **`Busy`**: the
//! instance backs off for the hinted time (clamped to 50 µs–50 ms) and the
//! request is routed to another; if every instance is busy the router waits
//! for the earliest back-off to end. Nothing is dropped: a request that
//! cannot be placed before [`PoolConfig::give_up_after`] fails *as a whole*
//! with [`PoolError::Exhausted`], which the caller sees.
//!
//! **Exactly one verdict per item**: each request id lives in exactly one
//! connection's pending map. A response removes it from that map before the
//! verdicts are written into the caller's slots by item index, and a dead
//! connection (socket EOF, write error, `ShuttingDown`) removes all its
//! entries at once and hands them to the router, which sends them elsewhere
//! under fresh request ids. A late answer can therefore never be delivered
//! twice or to the wrong item. Verdicts are a pure function of the item, so
//! re-verifying on another instance is always correct.
//!
//! **Keys**: registered once per connection (ids are per instance); an
//! `UnknownKey` verdict (the daemon evicted or restarted) makes the client
//! forget the id, register again and re-submit just those items, at most
//! [`PoolConfig::max_attempts`] times.
//!
//! Reader threads never block on another connection: anything that needs
//! re-routing goes through one router thread, so two dying instances cannot
//! deadlock each other.
//!
//! **In-process**: [`InProcess`] verifies on a local rayon pool with a
//! decoded-key cache. The pool never falls back to it by itself; a caller
//! that wants that does it on [`PoolError`] or [`Rejected`].

mod conn;
mod inproc;
pub mod limits;
mod ticket;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use bytes::Bytes;

use crate::Verdict;
pub use inproc::InProcess;
pub use limits::RequestLimits;
pub use ticket::{ItemError, ItemResult, Ticket};

use conn::Conn;
use ticket::BatchState;

/// One signature to check.
#[derive(Debug, Clone)]
pub struct Item {
    /// Encoded public key.
    pub key: Bytes,
    /// Signed message.
    pub msg: Bytes,
    /// Signature.
    pub sig: Bytes,
}

/// Why a batch got no verdicts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No instance could be reached.
    #[error("no verifyd instance is reachable")]
    NoInstances,
    /// Instances stayed busy or kept failing until the give-up time.
    #[error("could not place the batch within {0:?}")]
    Exhausted(Duration),
    /// An instance refused the request itself (e.g. unsupported context).
    #[error("request refused: {0}")]
    Refused(String),
    /// The pool was shut down.
    #[error("pool closed")]
    Closed,
    /// Item `index` alone is larger than any connected instance accepts
    /// (what [`Ticket::wait`] makes of an [`ItemError::TooLarge`]).
    #[error(
        "item {index} needs a request of {bytes} bytes; the largest any instance accepts is {limit}"
    )]
    ItemTooLarge {
        /// The item's index in the batch.
        index: usize,
        /// Bytes of the smallest request that carries it.
        bytes: usize,
        /// The largest request any connected instance accepts.
        limit: usize,
    },
}

/// [`Pool::try_submit`] did not take the batch; the items are handed back
/// so the caller can verify them elsewhere (e.g. [`InProcess`]) without
/// having kept a copy.
#[derive(Debug, thiserror::Error)]
#[error("batch not submitted: {reason}")]
pub struct Rejected {
    /// Why: [`PoolError::NoInstances`] when no instance is connected,
    /// [`PoolError::Closed`] when the pool is shutting down.
    pub reason: PoolError,
    /// The batch, unchanged.
    pub items: Vec<Item>,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most items in a request to one instance (capped at
    /// [`crate::proto::MAX_BATCH_ITEMS`]); bigger batches are split, and so
    /// is any request larger in bytes than its session accepts.
    pub max_request_items: usize,
    /// Give up placing a request after this long (it then fails as a whole).
    pub give_up_after: Duration,
    /// Attempts per item for `UnknownKey` re-registration.
    pub max_attempts: u32,
    /// Wait between reconnection attempts to a dead instance.
    pub reconnect_every: Duration,
    /// Shared-memory ring capacity offered to each instance, bytes per
    /// direction; 0 offers none and every connection uses socket frames.
    pub ring_capacity: u32,
    /// A ring session's side connection (see the module docs) is closed
    /// after this long with nothing pending and no new request.
    pub side_idle_after: Duration,
}

/// Default [`PoolConfig::side_idle_after`]: long enough that a stream of
/// large items keeps one side connection, short enough that an occasional
/// one does not hold a daemon connection slot for long.
pub const DEFAULT_SIDE_IDLE_AFTER: Duration = Duration::from_secs(5);

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_request_items: 256,
            give_up_after: Duration::from_secs(30),
            max_attempts: 3,
            reconnect_every: Duration::from_millis(200),
            ring_capacity: crate::transport::DEFAULT_RING_CAPACITY,
            side_idle_after: DEFAULT_SIDE_IDLE_AFTER,
        }
    }
}

/// Client-side counters.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests re-sent after an instance died or shut down.
    pub resubmitted: AtomicU64,
    /// `Busy` answers received.
    pub busy: AtomicU64,
    /// Items re-sent after `UnknownKey`.
    pub unknown_key_retries: AtomicU64,
    /// Connections lost.
    pub conns_lost: AtomicU64,
    /// Registration rounds repeated because a concurrent `UnknownKey`
    /// answer made the connection forget a key it had just registered.
    pub key_reregistrations: AtomicU64,
    /// Connections opened on a shared-memory ring pair.
    pub ring_conns: AtomicU64,
    /// Connections opened on socket frames (side connections not counted).
    pub frame_conns: AtomicU64,
    /// Side connections opened: frames-only connections a ring session
    /// opens for requests over its ring's record limit.
    pub side_connections_opened: AtomicU64,
    /// Side connections closed after [`PoolConfig::side_idle_after`]
    /// unused.
    pub side_connections_closed_idle: AtomicU64,
    /// Verify requests written on a side connection (also counted in
    /// `requests`).
    pub requests_on_side_connection: AtomicU64,
    /// Verify requests written to an instance (a batch is cut into as
    /// many as its size needs; re-sent requests count again).
    pub requests: AtomicU64,
    /// Requests whose real encoding came out larger than the size bound
    /// they were cut by, and were halved instead of sent. Always 0 unless
    /// the bound is wrong; tests assert it.
    pub bound_misses: AtomicU64,
    /// Items that got [`ItemError::TooLarge`]: alone they make a request
    /// larger than every connected instance accepts (over a side
    /// connection included).
    pub too_large_items: AtomicU64,
    /// Verdicts that arrived for an item that already had one and were
    /// ignored. Always 0 unless there is a bug; tests assert it.
    pub duplicate_verdicts: AtomicU64,
}

/// Part of a caller batch on its way to an instance.
#[derive(Debug)]
pub(crate) struct Sub {
    pub(crate) batch: Arc<BatchState>,
    pub(crate) idx: Vec<u32>,
    pub(crate) attempts: u32,
    pub(crate) since: Instant,
    /// Smallest request size in bytes an instance must accept to take this
    /// sub: 0 until a one-item sub turned out larger than some session's
    /// limit, then the size it needs, so the router only offers it to
    /// sessions that can carry it.
    pub(crate) need: usize,
}

impl Sub {
    /// A fresh sub for items `idx` of `batch`.
    pub(crate) fn new(batch: Arc<BatchState>, idx: Vec<u32>, since: Instant) -> Sub {
        Sub {
            batch,
            idx,
            attempts: 0,
            since,
            need: 0,
        }
    }

    /// Splits off everything after the first `at` items as a sub of its own
    /// (same batch, attempts and start time); `None` if nothing is left.
    pub(crate) fn split_off(&mut self, at: usize) -> Option<Sub> {
        if at >= self.idx.len() {
            return None;
        }
        Some(Sub {
            batch: self.batch.clone(),
            idx: self.idx.split_off(at),
            attempts: self.attempts,
            since: self.since,
            need: 0,
        })
    }
}

pub(crate) enum RouterMsg {
    Route(Sub),
}

pub(crate) struct PoolInner {
    pub(crate) cfg: PoolConfig,
    pub(crate) conns: Mutex<Vec<Arc<Conn>>>,
    /// Every connection whose reader may still run, including dead ones
    /// `conns` no longer lists (a daemon that said `ShuttingDown` is still
    /// answering) and side connections: the drop hangs them all up, and
    /// the router retires idle side connections from here.
    opened: Mutex<Vec<Weak<Conn>>>,
    pub(crate) targets: Targets,
    pub(crate) stats: PoolStats,
    pub(crate) router: Mutex<mpsc::Sender<RouterMsg>>,
    pub(crate) next_req: AtomicU64,
    last_reconnect: Mutex<Option<Instant>>,
    /// Held while connecting: one reconnection round at a time, so a
    /// background round (which may wait out a silent listener's hello)
    /// and the router never open two sessions to one instance.
    connecting: Mutex<()>,
    /// A background reconnection thread is running.
    reconnecting: AtomicBool,
}

/// Where instances are found.
#[derive(Debug, Clone)]
pub(crate) enum Targets {
    Paths(Vec<PathBuf>),
    Dir(PathBuf),
}

impl Targets {
    fn list(&self) -> Vec<PathBuf> {
        match self {
            Targets::Paths(p) => p.clone(),
            Targets::Dir(d) => {
                use std::os::unix::fs::FileTypeExt as _;
                let Ok(rd) = std::fs::read_dir(d) else {
                    return Vec::new();
                };
                let mut v: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                    .map(|e| e.path())
                    .collect();
                v.sort();
                v
            }
        }
    }
}

/// A pool of verifyd instances. See the module docs.
///
/// Clones share one pool. Dropping the last clone hangs up every session:
/// its reader and router threads exit and ring mappings are released
/// promptly, and tickets still outstanding fail with [`PoolError::Closed`].
#[derive(Clone)]
pub struct Pool(Arc<PoolInner>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("instances", &self.connected())
            .finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)] // the client drives real sockets and owns the clock
pub(crate) fn now() -> Instant {
    Instant::now()
}

impl Pool {
    /// Connects to the verifyd sockets at `paths`. Blocks while connecting
    /// (up to a second per instance that accepts but never answers the
    /// hello) and fails with [`PoolError::NoInstances`] if none answers.
    pub fn connect(paths: Vec<PathBuf>, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Self::start(Targets::Paths(paths), cfg, true)
    }

    /// Connects to every socket in `dir` (rescanned when reconnecting).
    pub fn connect_dir(dir: &Path, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Self::start(Targets::Dir(dir.to_owned()), cfg, true)
    }

    /// Like [`Pool::connect`], but returns at once and connects on a
    /// background thread: for an event loop that must not wait for the
    /// hello. Until an instance is connected, [`Pool::try_submit`] answers
    /// [`PoolError::NoInstances`] and [`Pool::submit`] waits for one (up
    /// to [`PoolConfig::give_up_after`]). Fails only if a thread cannot be
    /// started.
    pub fn connect_nonblocking(paths: Vec<PathBuf>, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Self::start(Targets::Paths(paths), cfg, false)
    }

    /// [`Pool::connect_nonblocking`] for every socket in `dir`.
    pub fn connect_dir_nonblocking(dir: &Path, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Self::start(Targets::Dir(dir.to_owned()), cfg, false)
    }

    fn start(targets: Targets, cfg: PoolConfig, wait: bool) -> Result<Pool, PoolError> {
        let (tx, rx) = mpsc::channel();
        let side_idle = cfg.side_idle_after;
        let inner = Arc::new(PoolInner {
            cfg,
            conns: Mutex::new(Vec::new()),
            opened: Mutex::new(Vec::new()),
            targets,
            stats: PoolStats::default(),
            router: Mutex::new(tx),
            next_req: AtomicU64::new(1),
            last_reconnect: Mutex::new(None),
            connecting: Mutex::new(()),
            reconnecting: AtomicBool::new(false),
        });
        if wait {
            inner.reconnect(true);
            if inner.live().is_empty() {
                return Err(PoolError::NoInstances);
            }
        }
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("verify-router".into())
            .spawn(move || {
                // Wakes at least every `tick` to retire idle side
                // connections; ends when the pool is dropped (it owns the
                // only sender), and anything still queued then fails
                // instead of vanishing.
                let tick = (side_idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
                let mut swept = now();
                loop {
                    match rx.recv_timeout(tick) {
                        Ok(RouterMsg::Route(sub)) => match weak.upgrade() {
                            Some(inner) => inner.route(sub),
                            None => sub.batch.fail(PoolError::Closed),
                        },
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    if now().duration_since(swept) >= tick {
                        swept = now();
                        match weak.upgrade() {
                            Some(inner) => inner.retire_idle_sides(),
                            None => {
                                // Fail whatever is still queued, then exit.
                                while let Ok(RouterMsg::Route(sub)) = rx.recv() {
                                    sub.batch.fail(PoolError::Closed);
                                }
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|_| PoolError::NoInstances)?;
        if !wait && !inner.reconnect_in_background() {
            return Err(PoolError::NoInstances);
        }
        Ok(Pool(inner))
    }

    /// Submits a batch; verdicts come back in item order through the ticket.
    ///
    /// Places the batch on the calling thread: while every instance is
    /// backing off, or none is connected (it then reconnects here), this
    /// blocks for up to [`PoolConfig::give_up_after`], after which the
    /// ticket fails with [`PoolError::Exhausted`]. [`Pool::try_submit`]
    /// never blocks.
    #[must_use]
    pub fn submit(&self, items: Vec<Item>) -> Ticket {
        let batch = Arc::new(BatchState::new(items));
        let n = batch.items.len();
        if n > 0 {
            // One sub for the whole batch: the route cuts it into requests
            // that fit the session each part goes to.
            let idx: Vec<u32> = (0..n).map(|i| i as u32).collect();
            self.0.route(Sub::new(batch.clone(), idx, now()));
        }
        Ticket(batch)
    }

    /// Submits a batch without ever blocking: if no instance is connected
    /// it returns [`Rejected`] with [`PoolError::NoInstances`] (and the
    /// items) at once, and starts a reconnection attempt in the background
    /// so a later call can succeed. Otherwise the router thread places the
    /// batch (cut to fit each session, as [`Pool::submit`] does) and the
    /// returned ticket can be waited on, polled, or awaited.
    ///
    /// The check is for a *connected* instance: if the instances die after
    /// it, the batch is re-routed as with `submit`, and the ticket fails
    /// with [`PoolError::Exhausted`] after [`PoolConfig::give_up_after`]
    /// if none comes back.
    pub fn try_submit(&self, items: Vec<Item>) -> Result<Ticket, Rejected> {
        if self.0.live().is_empty() {
            self.0.reconnect_in_background();
            return Err(Rejected {
                reason: PoolError::NoInstances,
                items,
            });
        }
        let batch = Arc::new(BatchState::new(items));
        let n = batch.items.len();
        if n > 0 {
            let idx: Vec<u32> = (0..n).map(|i| i as u32).collect();
            let sub = Sub::new(batch.clone(), idx, now());
            let tx = self
                .0
                .router
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(mpsc::SendError(RouterMsg::Route(sub))) = tx.send(RouterMsg::Route(sub)) {
                drop(tx);
                drop(sub);
                // The router is gone only once the pool is being dropped;
                // no other clone holds the batch yet, so it comes back whole.
                let items = Arc::try_unwrap(batch)
                    .map(BatchState::into_items)
                    .unwrap_or_default();
                return Err(Rejected {
                    reason: PoolError::Closed,
                    items,
                });
            }
        }
        Ok(Ticket(batch))
    }

    /// Submits and waits.
    pub fn verify(&self, items: Vec<Item>) -> Result<Vec<Verdict>, PoolError> {
        self.submit(items).wait()
    }

    /// Instances currently connected.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.0.live().len()
    }

    /// Client-side counters.
    #[must_use]
    pub fn stats(&self) -> &PoolStats {
        &self.0.stats
    }

    /// Items outstanding per connected instance.
    #[must_use]
    pub fn outstanding(&self) -> Vec<(PathBuf, usize)> {
        self.0
            .live()
            .iter()
            .map(|c| (c.path.clone(), c.outstanding()))
            .collect()
    }

    /// What each connected instance accepts in one request on its main
    /// session (the pool cuts batches to fit), for diagnostics. On a ring
    /// session this is the ring's record limit; larger requests, up to the
    /// frame limit, go over the instance's side connection (see the module
    /// docs).
    #[must_use]
    pub fn limits(&self) -> Vec<(PathBuf, RequestLimits)> {
        self.0
            .live()
            .iter()
            .map(|c| (c.path.clone(), c.limits()))
            .collect()
    }

    /// The transport of each connected instance (frames or shared-memory
    /// ring), for diagnostics.
    #[must_use]
    pub fn transports(&self) -> Vec<(PathBuf, crate::transport::Transport)> {
        self.0
            .live()
            .iter()
            .map(|c| (c.path.clone(), c.transport()))
            .collect()
    }
}

/// Dropping the last [`Pool`] handle tears everything down at once rather
/// than when the daemons go away: every session is hung up, so each reader
/// thread wakes, fails what is still pending with [`PoolError::Closed`] and
/// exits, dropping its ring mappings; the router's channel closes with the
/// sender dropped here, so it exits too. Nothing blocks: the threads are not
/// joined, they finish on their own.
impl Drop for PoolInner {
    fn drop(&mut self) {
        let opened = std::mem::take(
            self.opened
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // `conns` is a subset of `opened`.
        for c in opened.iter().filter_map(Weak::upgrade) {
            c.close();
        }
    }
}

impl PoolInner {
    pub(crate) fn live(&self) -> Vec<Arc<Conn>> {
        let c = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.iter().filter(|c| c.is_alive()).cloned().collect()
    }

    /// Whether `reconnect_every` has passed since the last attempt.
    fn reconnect_due(&self) -> bool {
        let last = self
            .last_reconnect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.is_none_or(|l| now().duration_since(l) >= self.cfg.reconnect_every)
    }

    /// Starts a reconnection round on a thread of its own unless one is
    /// running or the last round was less than `reconnect_every` ago, so a
    /// caller polling in a loop starts at most one thread per interval.
    /// Returns false only if the thread could not be started.
    fn reconnect_in_background(self: &Arc<Self>) -> bool {
        if !self.reconnect_due()
            || self
                .reconnecting
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return true;
        }
        let weak = Arc::downgrade(self);
        let started = std::thread::Builder::new()
            .name("verify-reconnect".into())
            .spawn(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.reconnect(false);
                    inner
                        .reconnecting
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            });
        if started.is_err() {
            self.reconnecting
                .store(false, std::sync::atomic::Ordering::Release);
            return false;
        }
        true
    }

    /// (Re)connects to targets not currently connected, at most every
    /// `reconnect_every` unless `force`. Returns at once if another round
    /// is connecting.
    fn reconnect(self: &Arc<Self>, force: bool) {
        {
            let mut last = self
                .last_reconnect
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let t = now();
            if !force && last.is_some_and(|l| t.duration_since(l) < self.cfg.reconnect_every) {
                return;
            }
            *last = Some(t);
        }
        let _round = match self.connecting.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let have: Vec<PathBuf> = self.live().iter().map(|c| c.path.clone()).collect();
        for path in self.targets.list() {
            if have.contains(&path) {
                continue;
            }
            match Conn::open(self, &path) {
                Ok(c) => {
                    self.track(&c);
                    let mut conns = self
                        .conns
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    conns.retain(|c| c.is_alive());
                    conns.push(c);
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "verifyd not reachable")
                }
            }
        }
    }

    /// Records a newly opened connection, so the pool's drop hangs it up.
    pub(crate) fn track(&self, c: &Arc<Conn>) {
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        opened.retain(|w| w.strong_count() > 0);
        opened.push(Arc::downgrade(c));
    }

    /// Closes every side connection unused for `side_idle_after`.
    fn retire_idle_sides(&self) {
        let sides: Vec<Arc<Conn>> = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| c.kind() == conn::Kind::Side)
            .collect();
        for s in sides {
            s.retire_if_idle(self, self.cfg.side_idle_after);
        }
    }

    /// Hands a sub-batch to the router thread (used by reader threads).
    pub(crate) fn reroute(&self, sub: Sub) {
        let tx = self
            .router
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(mpsc::SendError(RouterMsg::Route(sub))) = tx.send(RouterMsg::Route(sub)) {
            sub.batch.fail(PoolError::Closed);
        }
    }

    /// Places a sub-batch on the least-loaded instance that can carry it,
    /// a request at a time (each cut to fit its session), retrying on
    /// failure and waiting out back-offs, until `give_up_after`.
    pub(crate) fn route(self: &Arc<Self>, mut sub: Sub) {
        loop {
            let t = now();
            if t.duration_since(sub.since) > self.cfg.give_up_after {
                sub.batch.fail(PoolError::Exhausted(self.cfg.give_up_after));
                return;
            }
            let live = self.live();
            if live.is_empty() {
                self.reconnect(false);
                if self.live().is_empty() {
                    std::thread::sleep(self.cfg.reconnect_every / 4);
                }
                continue;
            }
            let fits: Vec<&Arc<Conn>> = live
                .iter()
                .filter(|c| c.max_accepted() >= sub.need)
                .collect();
            if fits.is_empty() {
                // Only a one-item sub has a `need`: that item is larger than
                // every session can carry. Waiting would not help, and the
                // rest of its batch is unaffected.
                let limit = live.iter().map(|c| c.max_accepted()).max().unwrap_or(0);
                tracing::debug!(
                    bytes = sub.need,
                    limit,
                    "item larger than every session accepts"
                );
                self.stats
                    .too_large_items
                    .fetch_add(sub.idx.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let dup = sub.batch.deliver_error(
                    &sub.idx,
                    ItemError::TooLarge {
                        bytes: sub.need,
                        limit,
                    },
                );
                self.stats
                    .duplicate_verdicts
                    .fetch_add(dup, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            let ready = fits
                .iter()
                .filter(|c| c.ready_for(&sub) <= t)
                .min_by_key(|c| c.outstanding());
            let Some(conn) = ready else {
                let wake = fits.iter().map(|c| c.ready_for(&sub)).min().unwrap_or(t);
                std::thread::sleep(
                    wake.saturating_duration_since(t)
                        .max(Duration::from_micros(20)),
                );
                continue;
            };
            match conn.send(self, sub) {
                Ok(None) => return,
                // A request's worth went out; the rest picks its own
                // instance, so one batch still spreads over the pool.
                Ok(Some(rest)) | Err(rest) => sub = rest,
            }
        }
    }
}
