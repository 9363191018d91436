//! The daemon: Unix-socket listener, per-connection readers, the shared
//! scheduler, the rayon worker pool, admin socket and metrics.
//!
//! Threads, and why blocking ones: each connection has a reader thread that
//! decodes requests, resolves key ids and offers the request to the
//! [`Scheduler`]; batches run on a rayon pool of `--threads` workers; a timer
//! thread fires the scheduler's gathering deadline. A worker that finishes
//! the last piece of a request writes the response itself, so a verdict
//! leaves the daemon without another thread hand-off (on these VMs waking an
//! idle thread costs tens of microseconds, as much as the hand-off saves).
//!
//! The request frame is kept whole in its job; items are ranges into it, so
//! item bytes are never copied. Memory is bounded by the admission limit in
//! items and a byte budget for frames in flight; both answer `Busy`.
//!
//! Drain: [`ServerHandle::drain`] (SIGTERM in the binary) stops accepting
//! connections, answers new requests with `ShuttingDown`, and [`Server::run`]
//! returns once every admitted item has its verdict written, or at the drain
//! deadline. [`ServerHandle::stop`] returns at once.

pub mod admin;
mod conn;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendKind};
use crate::keys::KeyCache;
use crate::metrics::{Metrics, Snapshot};
use crate::sched::{Batch, SchedConfig, Scheduler};

pub use conn::Job;

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Verify socket path.
    pub socket: PathBuf,
    /// Admin socket path (JSON status and diagnostics), if any.
    pub admin_socket: Option<PathBuf>,
    /// Loopback address for Prometheus text, if any.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Worker threads.
    pub threads: usize,
    /// Which ML-DSA implementation.
    pub backend: BackendKind,
    /// Keys held in the cache.
    pub key_capacity: usize,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Frame bytes admitted and not yet answered, beyond which requests get `Busy`.
    pub max_bytes_in_flight: usize,
    /// Scheduler settings.
    pub sched: SchedConfig,
    /// How long a drain may take before the daemon stops anyway.
    pub drain_deadline: Duration,
    /// A response write that blocks this long drops the connection.
    pub write_timeout: Duration,
    /// Shared-memory ring capacity offered in the hello, bytes per
    /// direction; 0 (`--no-shm`) offers none and every session uses frames.
    pub ring_capacity: u32,
}

impl ServerConfig {
    /// Defaults: one worker per core, the default backend, 65,536 keys,
    /// 16 MiB frames, 256 MiB of frames in flight, 10 s drain deadline.
    #[must_use]
    pub fn new(socket: PathBuf) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        ServerConfig {
            socket,
            admin_socket: None,
            metrics_listen: None,
            threads,
            backend: BackendKind::DEFAULT,
            key_capacity: 65_536,
            max_frame: crate::session::DEFAULT_MAX_FRAME,
            max_bytes_in_flight: 256 << 20,
            sched: SchedConfig::new(threads),
            drain_deadline: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            ring_capacity: crate::transport::DEFAULT_RING_CAPACITY,
        }
    }

    /// Sets the worker count (and the scheduler's).
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self.sched = SchedConfig {
            workers: self.threads,
            limit_floor: 4 * 64 * self.threads,
            ..self.sched
        };
        self
    }
}

/// Default socket directory: `$XDG_RUNTIME_DIR/tern`, else `/run/tern`.
#[must_use]
pub fn default_socket_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR").map_or_else(
        || PathBuf::from("/run/tern"),
        |d| PathBuf::from(d).join("tern"),
    )
}

pub(crate) struct Shared {
    pub(crate) cfg: ServerConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) keys: Mutex<KeyCache>,
    pub(crate) sched: Mutex<Scheduler<Arc<Job>>>,
    pub(crate) timer: Condvar,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    pub(crate) instance: u64,
    pub(crate) draining: AtomicBool,
    pub(crate) stop: AtomicBool,
    pub(crate) next_client: AtomicU64,
    pub(crate) bytes_in_flight: AtomicUsize,
    /// Requests admitted whose response is not written yet.
    pub(crate) open_jobs: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("socket", &self.cfg.socket)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks would be a bug in this crate; the
    // state is still consistent enough to keep answering, so continue.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[allow(clippy::disallowed_methods)] // the daemon's driver owns the clock
pub(crate) fn now() -> Instant {
    Instant::now()
}

impl Shared {
    pub(crate) fn sched(&self) -> MutexGuard<'_, Scheduler<Arc<Job>>> {
        lock(&self.sched)
    }
    pub(crate) fn keys(&self) -> MutexGuard<'_, KeyCache> {
        lock(&self.keys)
    }

    /// Starts every batch the scheduler wants to run now on the pool.
    pub(crate) fn dispatch(self: &Arc<Self>, sched: &mut Scheduler<Arc<Job>>, now: Instant) {
        let _ = self.dispatch_keep(sched, now, 0);
    }

    /// Like [`Self::dispatch`], but hands back one batch of at most
    /// `inline_max` items for the caller to run on its own thread. The batch
    /// holds a scheduler worker slot like any other, so at most `--threads`
    /// batches run at once; running it here saves waking a pool thread,
    /// which on these VMs costs about as much as the gathering it replaces.
    pub(crate) fn dispatch_keep(
        self: &Arc<Self>,
        sched: &mut Scheduler<Arc<Job>>,
        now: Instant,
        inline_max: usize,
    ) -> Option<Batch<Arc<Job>>> {
        let mut any = false;
        let mut keep = None;
        while let Some(batch) = sched.poll_batch(now) {
            any = true;
            self.metrics.batch_sizes.record(batch.items);
            if keep.is_none() && batch.items <= inline_max {
                keep = Some(batch);
                continue;
            }
            let me = self.clone();
            self.pool.spawn(move || me.run_batch(batch));
        }
        if !any && sched.poll_timeout().is_some() {
            self.timer.notify_one();
        }
        keep
    }

    pub(crate) fn run_batch(self: Arc<Self>, batch: Batch<Arc<Job>>) {
        let start = now();
        for piece in &batch.pieces {
            piece.request.verify_range(piece.start, piece.len);
        }
        // One clock read for both: `start.elapsed()` would be a second.
        let done = now();
        let busy = done.saturating_duration_since(start);
        // Count before answering, so a client that saw its verdicts also
        // sees them counted.
        self.metrics
            .items
            .fetch_add(batch.items as u64, Ordering::Relaxed);
        for piece in &batch.pieces {
            if piece.request.finish_items(piece.len) {
                piece.request.respond(&self, done);
            }
        }
        match rayon::current_thread_index() {
            Some(i) => {
                if let Some(b) = self.metrics.worker_busy_ns.get(i) {
                    b.fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
                }
            }
            None => {
                self.metrics
                    .inline_busy_ns
                    .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
            }
        }
        let mut s = self.sched();
        s.handle_batch_done(done, batch.id, busy);
        self.dispatch(&mut s, done);
    }

    fn timer_loop(self: Arc<Self>) {
        let mut s = self.sched();
        while !self.stop.load(Ordering::Relaxed) {
            let t = now();
            self.dispatch(&mut s, t);
            let wait = s.poll_timeout().map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(t)
            });
            s = self
                .timer
                .wait_timeout(s, wait.max(Duration::from_micros(5)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let sched = self.sched().stats();
        let keys = self.keys().stats();
        let mut snap = Snapshot::take(
            &self.metrics,
            self.backend.kind().name(),
            self.started.elapsed(),
            self.draining.load(Ordering::Relaxed),
            sched,
            keys,
        );
        if self.cfg.ring_capacity > 0 {
            snap.transport_offered = "ring";
        }
        snap
    }
}

/// Controls a running server from another thread (or a signal handler thread).
#[derive(Debug, Clone)]
pub struct ServerHandle(Arc<Shared>);

impl ServerHandle {
    /// Begin draining: no new connections or requests; finish admitted work.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }
    /// Stop now, abandoning admitted work.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.timer.notify_all();
    }
    /// Metrics snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }
}

/// A bound, not yet running daemon.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listener: UnixListener,
    admin: Option<UnixListener>,
    metrics: Option<std::net::TcpListener>,
}

/// Binds a verify or admin socket with `wire`'s helper: stale socket
/// removed, mode 0660, directory created.
pub fn bind_socket(path: &Path) -> std::io::Result<UnixListener> {
    wire::uds::bind(path).map_err(|e| match e {
        wire::WireError::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    })
}

impl Server {
    /// Binds the sockets and starts the worker pool.
    pub fn bind(cfg: ServerConfig) -> std::io::Result<Server> {
        let listener = bind_socket(&cfg.socket)?;
        let admin = cfg.admin_socket.as_deref().map(bind_socket).transpose()?;
        let metrics = match cfg.metrics_listen {
            Some(addr) if !addr.ip().is_loopback() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "--metrics-listen must be loopback",
                ));
            }
            Some(addr) => Some(std::net::TcpListener::bind(addr)?),
            None => None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("verify-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let started = now();
        // Distinct per process start: pid and sub-second start time.
        #[allow(clippy::disallowed_methods)] // the driver owns the clock
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let instance = (u64::from(std::process::id()) << 32) ^ wall.as_nanos() as u64;
        let shared = Arc::new(Shared {
            backend: cfg.backend.build(),
            keys: Mutex::new(KeyCache::new(
                cfg.key_capacity,
                (instance ^ (instance >> 32)) as u32,
            )),
            sched: Mutex::new(Scheduler::new(SchedConfig {
                workers: cfg.threads,
                ..cfg.sched.clone()
            })),
            timer: Condvar::new(),
            pool,
            metrics: Metrics::new(cfg.threads),
            started,
            instance,
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            next_client: AtomicU64::new(1),
            bytes_in_flight: AtomicUsize::new(0),
            open_jobs: AtomicUsize::new(0),
            cfg,
        });
        Ok(Server {
            shared,
            listener,
            admin,
            metrics,
        })
    }

    /// A handle to drain or stop the server.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared.clone())
    }

    /// Serves until drained or stopped.
    pub fn run(self) -> std::io::Result<()> {
        let Server {
            shared,
            listener,
            admin,
            metrics,
        } = self;
        let t = shared.clone();
        std::thread::Builder::new()
            .name("verify-timer".into())
            .spawn(move || t.timer_loop())?;
        if let Some(a) = admin {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("verify-admin".into())
                .spawn(move || admin::serve_admin(&s, &a))?;
        }
        if let Some(m) = metrics {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("verify-metrics".into())
                .spawn(move || admin::serve_metrics(&s, &m))?;
        }
        tracing::info!(socket = %shared.cfg.socket.display(), threads = shared.cfg.threads, backend = %shared.backend.kind(), "verifyd listening");
        conn::accept_loop(&shared, &listener)?;
        // Draining (or stopped): wait for admitted work, up to the deadline.
        let deadline = now() + shared.cfg.drain_deadline;
        while !shared.stop.load(Ordering::SeqCst)
            && shared.open_jobs.load(Ordering::SeqCst) > 0
            && now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = shared.open_jobs.load(Ordering::SeqCst);
        tracing::info!(unanswered = left, "verifyd stopped");
        shared.stop.store(true, Ordering::SeqCst);
        shared.timer.notify_all();
        let _ = std::fs::remove_file(&shared.cfg.socket);
        if let Some(a) = &shared.cfg.admin_socket {
            let _ = std::fs::remove_file(a);
        }
        Ok(())
    }
}
