//! Client side: a [`Pool`] over several verifyd instances, and the explicit
//! [`InProcess`] backend.
//!
//! **Balancing**: a batch goes to the connected instance with the fewest
//! outstanding items that is not backing off. **`Busy`**: the instance backs
//! off for the hinted time (clamped to 50 µs–50 ms) and the request is routed
//! to another; if every instance is busy the router waits for the earliest
//! back-off to end. Nothing is dropped: a request that cannot be placed
//! before [`PoolConfig::give_up_after`] fails *as a whole* with
//! [`PoolError::Exhausted`], which the caller sees.
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
//! that wants that does it on [`PoolError`].

mod conn;
mod inproc;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

pub use bytes::Bytes;

use crate::Verdict;
pub use inproc::InProcess;

use conn::Conn;

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
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Largest request sent to one instance; bigger batches are split.
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
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_request_items: 256,
            give_up_after: Duration::from_secs(30),
            max_attempts: 3,
            reconnect_every: Duration::from_millis(200),
            ring_capacity: crate::transport::DEFAULT_RING_CAPACITY,
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
    /// Connections opened on socket frames.
    pub frame_conns: AtomicU64,
    /// Verdicts that arrived for an item that already had one and were
    /// ignored. Always 0 unless there is a bug; tests assert it.
    pub duplicate_verdicts: AtomicU64,
}

/// Verdict slots for one caller batch.
#[derive(Debug)]
pub(crate) struct BatchState {
    pub(crate) items: Vec<Item>,
    slots: Mutex<Slots>,
    done: Condvar,
}

#[derive(Debug)]
struct Slots {
    verdicts: Vec<Option<Verdict>>,
    remaining: usize,
    error: Option<PoolError>,
}

impl BatchState {
    /// Records verdicts for item indices; each slot is written once.
    /// Returns how many verdicts were duplicates (ignored).
    pub(crate) fn deliver(&self, idx: &[u32], verdicts: &[Verdict]) -> u64 {
        let mut s = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut dup = 0;
        for (&i, &v) in idx.iter().zip(verdicts) {
            let slot = &mut s.verdicts[i as usize];
            if slot.is_none() {
                *slot = Some(v);
                s.remaining -= 1;
            } else {
                dup += 1;
            }
        }
        if s.remaining == 0 {
            self.done.notify_all();
        }
        dup
    }

    pub(crate) fn fail(&self, e: PoolError) {
        let mut s = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.error.get_or_insert(e);
        self.done.notify_all();
    }
}

/// Part of a caller batch on its way to an instance.
#[derive(Debug)]
pub(crate) struct Sub {
    pub(crate) batch: Arc<BatchState>,
    pub(crate) idx: Vec<u32>,
    pub(crate) attempts: u32,
    pub(crate) since: Instant,
}

const SPIN_MAX_ITEMS: usize = 4;
const SPIN_FOR: Duration = Duration::from_micros(300);

/// A submitted batch; [`Ticket::wait`] returns its verdicts in item order.
#[derive(Debug)]
pub struct Ticket(Arc<BatchState>);

impl Ticket {
    /// Blocks until every item has its verdict (or the batch failed).
    pub fn wait(self) -> Result<Vec<Verdict>, PoolError> {
        self.wait_timeout(Duration::MAX)
            .unwrap_or(Err(PoolError::Closed))
    }

    /// Items still without a verdict.
    #[must_use]
    pub fn pending_items(&self) -> usize {
        self.0
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remaining
    }

    /// Like [`Ticket::wait`], but gives the ticket back after `timeout`.
    pub fn wait_timeout(
        self,
        timeout: Duration,
    ) -> Result<Result<Vec<Verdict>, PoolError>, Ticket> {
        let deadline = now().checked_add(timeout);
        // Tiny batches come back within a few hundred microseconds: spin
        // briefly (yielding) before parking, which saves a thread wake-up
        // that costs tens of microseconds on these VMs. Larger batches park
        // at once so waiting costs no CPU.
        if self.0.items.len() <= SPIN_MAX_ITEMS {
            let t = now();
            while t.elapsed() < SPIN_FOR {
                if self.pending_items() == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let mut s = self
            .0
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while s.remaining > 0 && s.error.is_none() {
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
        if let Some(e) = s.error.clone() {
            return Ok(Err(e));
        }
        // Every slot is Some once remaining hit 0.
        Ok(Ok(s
            .verdicts
            .iter()
            .map(|v| v.unwrap_or(Verdict::Malformed))
            .collect()))
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
    /// answering): the drop hangs them all up.
    opened: Mutex<Vec<Weak<Conn>>>,
    pub(crate) targets: Targets,
    pub(crate) stats: PoolStats,
    pub(crate) router: Mutex<mpsc::Sender<RouterMsg>>,
    pub(crate) next_req: AtomicU64,
    last_reconnect: Mutex<Option<Instant>>,
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
    /// Connects to the verifyd sockets at `paths`.
    pub fn connect(paths: Vec<PathBuf>, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Self::start(Targets::Paths(paths), cfg)
    }

    /// Connects to every socket in `dir` (rescanned when reconnecting).
    pub fn connect_dir(dir: &Path, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Self::start(Targets::Dir(dir.to_owned()), cfg)
    }

    fn start(targets: Targets, cfg: PoolConfig) -> Result<Pool, PoolError> {
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(PoolInner {
            cfg,
            conns: Mutex::new(Vec::new()),
            opened: Mutex::new(Vec::new()),
            targets,
            stats: PoolStats::default(),
            router: Mutex::new(tx),
            next_req: AtomicU64::new(1),
            last_reconnect: Mutex::new(None),
        });
        inner.reconnect(true);
        if inner.live().is_empty() {
            return Err(PoolError::NoInstances);
        }
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("verify-router".into())
            .spawn(move || {
                // Ends when the pool is dropped (it owns the only sender);
                // anything still queued then fails instead of vanishing.
                while let Ok(RouterMsg::Route(sub)) = rx.recv() {
                    match weak.upgrade() {
                        Some(inner) => inner.route(sub),
                        None => sub.batch.fail(PoolError::Closed),
                    }
                }
            })
            .map_err(|_| PoolError::NoInstances)?;
        Ok(Pool(inner))
    }

    /// Submits a batch; verdicts come back in item order through the ticket.
    #[must_use]
    pub fn submit(&self, items: Vec<Item>) -> Ticket {
        let n = items.len();
        let batch = Arc::new(BatchState {
            items,
            slots: Mutex::new(Slots {
                verdicts: vec![None; n],
                remaining: n,
                error: None,
            }),
            done: Condvar::new(),
        });
        let t = now();
        let max = self.0.cfg.max_request_items.max(1);
        for start in (0..n).step_by(max) {
            let idx: Vec<u32> = (start..(start + max).min(n)).map(|i| i as u32).collect();
            self.0.route(Sub {
                batch: batch.clone(),
                idx,
                attempts: 0,
                since: t,
            });
        }
        Ticket(batch)
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

    /// (Re)connects to targets not currently connected, at most every
    /// `reconnect_every` unless `force`.
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
        let have: Vec<PathBuf> = self.live().iter().map(|c| c.path.clone()).collect();
        for path in self.targets.list() {
            if have.contains(&path) {
                continue;
            }
            match Conn::open(self, &path) {
                Ok(c) => {
                    let mut opened = self
                        .opened
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    opened.retain(|w| w.strong_count() > 0);
                    opened.push(Arc::downgrade(&c));
                    drop(opened);
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

    /// Places a sub-batch on the least-loaded instance, retrying on failure
    /// and waiting out back-offs, until `give_up_after`.
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
            let ready = live
                .iter()
                .filter(|c| c.ready_at() <= t)
                .min_by_key(|c| c.outstanding());
            let Some(conn) = ready else {
                let wake = live.iter().map(|c| c.ready_at()).min().unwrap_or(t);
                std::thread::sleep(
                    wake.saturating_duration_since(t)
                        .max(Duration::from_micros(20)),
                );
                continue;
            };
            match conn.send(self, sub) {
                Ok(()) => return,
                Err(back) => sub = back,
            }
        }
    }
}
