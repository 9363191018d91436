//! The daemon: verify and admin sockets served on the shared hardened core
//! (`server-core`), the shared scheduler, the rayon worker pool, metrics.
//!
//! # Threads, and why
//!
//! * **I/O runtime** — a small tokio runtime ([`ServerConfig::io_threads`],
//!   default 2; on these 2-core hosts more would only contend with the
//!   workers) accepts on the verify and the admin socket through
//!   [`server_core::Listener`] under one daemon-wide [`Registry`]: a
//!   connection cap per listener, a descriptor budget from
//!   `RLIMIT_NOFILE`, the longest-idle connection giving way (else a
//!   refusal frame), back-off instead of a spin when `accept` fails. Each
//!   connection is a task: the hello runs under the core's hello deadline,
//!   frames are read with [`server_core::FrameReader`] (partial-frame
//!   deadline, buffers from the daemon-wide read [`Budget`]). An idle
//!   connection costs a task and a socket, never a thread. The task
//!   decodes a request, resolves its keys and offers it to the
//!   [`Scheduler`]; a batch of at most a few items runs right there (see
//!   `Shared::dispatch_keep`), so the I/O threads also verify small
//!   batches and decode keys a client sends for the first time.
//! * **Workers** — batches run on a rayon pool of `--threads` workers. A
//!   worker that finishes the last piece of a request writes the response
//!   itself with [`server_core::FrameSender::send`], which never blocks:
//!   what the socket does not take at once is queued (bounded per
//!   connection and by the daemon-wide response budget) and drained by the
//!   runtime. So a verdict leaves the daemon without a thread hand-off (on
//!   these VMs waking an idle thread costs tens of microseconds, as much as
//!   the hand-off saves), and a client that does not read cannot stall a
//!   worker.
//! * **Ring sessions** — a session on the shared-memory ring pair keeps one
//!   blocking thread for its consumer (`wire`'s parker sleeps on the
//!   socket and the peer's pidfd). Every ring session reserves both rings'
//!   mappings from the daemon-wide ring [`Budget`]
//!   ([`ServerConfig::ring_budget`]) for its lifetime, so these threads are
//!   bounded by the budget (64 MiB and 4 MiB rings: 7 sessions); when it is
//!   spent the daemon proposes ring capacity 0 in the hello and the client
//!   stays on frames (counted). A thread that cannot be started refuses the
//!   session (counted); the daemon keeps serving.
//! * A timer thread fires the scheduler's gathering deadline; a metrics
//!   endpoint (`--metrics-listen`) is served on the runtime too.
//!
//! The admin socket is served concurrently on the runtime, each request
//! under [`server_core::Limits::request_deadline`] (1 s), so it answers
//! while any number of idle or trickling clients are connected.
//!
//! The request frame is kept whole in its job; items are ranges into it, so
//! item bytes are never copied. Memory is bounded by the admission limit in
//! items, a byte budget for frames in flight (both answer `Busy`), and the
//! read, response and ring budgets (see `status` → `server.budgets`).
//!
//! Drain: [`ServerHandle::drain`] (SIGTERM in the binary) stops accepting
//! verify connections, answers new requests with `ShuttingDown`, and
//! [`Server::run`] returns once every admitted item has its verdict written
//! (queued responses flushed), or at the drain deadline.
//! [`ServerHandle::stop`] makes it return at once. Either way the runtime
//! and every frame connection go with it.

pub mod admin;
mod conn;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use server_core::{Budget, Limits, ListenerStats, Registry};

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
    /// Loopback address of the Prometheus endpoint (`GET /metrics`), if any.
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
    /// Responses that make no progress this long drop the connection: a
    /// full response ring, or queued frames the client does not read. It
    /// is the write deadline of both transports and overrides
    /// `limits.write_deadline`.
    pub write_timeout: Duration,
    /// Shared-memory ring capacity offered in the hello, bytes per
    /// direction; 0 (`--no-shm`) offers none and every session uses frames.
    pub ring_capacity: u32,
    /// Bytes of shared-memory ring mappings all ring sessions together may
    /// hold (each reserves both of its rings for its lifetime); a session
    /// that does not fit is offered no ring and runs on frames.
    pub ring_budget: usize,
    /// Threads of the I/O runtime (accept, hello, frame reads, admin).
    pub io_threads: usize,
    /// The start-up calibration that chose `backend`, reported in `status`
    /// (`None`: the backend was named, or calibration was off).
    pub calibration: Option<crate::calibrate::Calibration>,
    /// Limits of the verify socket: connection cap, hello, frame and write
    /// deadlines, per-connection response backlog.
    pub limits: Limits,
    /// Limits of the admin socket; `request_deadline` bounds each request.
    pub admin_limits: Limits,
    /// Bytes of read buffers all connections together may hold: frames
    /// being read and frames admitted but not answered (a job keeps its
    /// frame's share).
    pub read_budget: usize,
    /// Bytes of queued, unread responses all connections together may hold.
    pub response_budget: usize,
}

impl ServerConfig {
    /// Defaults: one worker per core, the default backend, 65,536 keys,
    /// 16 MiB frames, 256 MiB of frames in flight, 10 s drain deadline,
    /// 64 MiB of rings, 2 I/O threads, the core's default limits (admin:
    /// 64 connections, hello, frames and writes within the 1 s request
    /// deadline), 320 MiB of read buffers, 64 MiB of queued responses.
    #[must_use]
    pub fn new(socket: PathBuf) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let max_bytes_in_flight = 256 << 20;
        let request = Duration::from_secs(1);
        ServerConfig {
            socket,
            admin_socket: None,
            metrics_listen: None,
            threads,
            backend: BackendKind::DEFAULT,
            key_capacity: 65_536,
            max_frame: crate::session::DEFAULT_MAX_FRAME,
            max_bytes_in_flight,
            sched: SchedConfig::new(threads),
            drain_deadline: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            ring_capacity: crate::transport::DEFAULT_RING_CAPACITY,
            ring_budget: DEFAULT_RING_BUDGET,
            io_threads: threads.clamp(1, 2),
            calibration: None,
            limits: Limits::default(),
            admin_limits: Limits::admin(request),
            // Admitted frames keep their share, so the budget covers the
            // in-flight byte limit plus room for frames being read.
            read_budget: max_bytes_in_flight + (64 << 20),
            response_budget: 64 << 20,
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

/// Default [`ServerConfig::ring_budget`]: 64 MiB, seven sessions with the
/// default 4 MiB rings.
pub const DEFAULT_RING_BUDGET: usize = 64 << 20;

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
    /// Connections of both sockets, the descriptor budget.
    pub(crate) registry: Arc<Registry>,
    /// Read buffers (frames being read, frames admitted).
    pub(crate) reads: Arc<Budget>,
    /// Queued responses not yet read by their client.
    pub(crate) responses: Arc<Budget>,
    /// Shared-memory ring mappings of open ring sessions.
    pub(crate) rings: Arc<Budget>,
    /// Each listener's counters, by name, once it serves.
    pub(crate) listeners: Mutex<Vec<(&'static str, Arc<ListenerStats>)>>,
    /// Woken on drain and stop, so the runtime's tasks notice at once.
    pub(crate) wake: tokio::sync::Notify,
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

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Resolves once `cond` holds; re-checked whenever drain or stop is
    /// signalled.
    pub(crate) async fn until(&self, cond: impl Fn(&Shared) -> bool) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before the check, so a signal in between is seen.
            woken.as_mut().enable();
            if cond(self) {
                return;
            }
            woken.await;
        }
    }

    /// Records a listener's counters for `status` and metrics.
    pub(crate) fn add_listener(&self, name: &'static str, stats: Arc<ListenerStats>) {
        lock(&self.listeners).push((name, stats));
    }

    /// Starts every batch the scheduler wants to run now on the pool.
    pub(crate) fn dispatch(self: &Arc<Self>, sched: &mut Scheduler<Arc<Job>>, now: Instant) {
        let _ = self.dispatch_keep(sched, now, 0, None);
    }

    /// Like [`Self::dispatch`], but hands back one batch of at most
    /// `inline_max` items for the caller to run on its own thread. The batch
    /// holds a scheduler worker slot like any other, so at most `--threads`
    /// batches run at once; running it here saves waking a pool thread,
    /// which on these VMs costs about as much as the gathering it replaces.
    ///
    /// Only a batch entirely of `caller`'s own items with every key already
    /// decoded is kept: the caller is an I/O thread that serves every other
    /// connection too, so it must never spend its time on another client's
    /// work or on decoding keys (a flood of fresh inline keys would stall
    /// every read behind it).
    pub(crate) fn dispatch_keep(
        self: &Arc<Self>,
        sched: &mut Scheduler<Arc<Job>>,
        now: Instant,
        inline_max: usize,
        caller: Option<crate::sched::ClientId>,
    ) -> Option<Batch<Arc<Job>>> {
        let mut any = false;
        let mut keep = None;
        while let Some(batch) = sched.poll_batch(now) {
            any = true;
            self.metrics.batch_sizes.record(batch.items);
            let own_and_cheap = || {
                batch
                    .pieces
                    .iter()
                    .all(|p| Some(p.client) == caller && !p.request.needs_decode(p.start, p.len))
            };
            if keep.is_none() && batch.items <= inline_max && own_and_cheap() {
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
            piece.request.verify_range(&self, piece.start, piece.len);
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
        let server = &mut snap.server;
        server.io_threads = self.cfg.io_threads;
        for (name, stats) in lock(&self.listeners).iter() {
            server.listeners.insert(name, stats.snapshot());
        }
        for b in [&self.reads, &self.responses, &self.rings] {
            server.budgets.insert(b.name(), b.stats());
        }
        server.fds_used = self.registry.fds_used();
        server.fd_cap = self.registry.fd_cap();
        snap.calibration.clone_from(&self.cfg.calibration);
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
        self.0.wake.notify_waiters();
    }
    /// Stop now, abandoning admitted work.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.timer.notify_all();
        self.0.wake.notify_waiters();
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

/// Socket paths removed when this is dropped: by a failed [`Server::bind`]
/// on its way out, and by [`Server::run`] however it ends.
struct CreatedSockets(Vec<PathBuf>);

impl Drop for CreatedSockets {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
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
    ///
    /// When any step fails, the sockets this call created are removed again,
    /// so a failed start leaves nothing behind for the next one to trip on.
    pub fn bind(mut cfg: ServerConfig) -> std::io::Result<Server> {
        let mut created = CreatedSockets(Vec::new());
        let listener = bind_socket(&cfg.socket)?;
        created.0.push(cfg.socket.clone());
        let admin = match cfg.admin_socket.as_deref() {
            Some(a) => {
                let l = bind_socket(a)?;
                created.0.push(a.to_owned());
                Some(l)
            }
            None => None,
        };
        let metrics = match cfg.metrics_listen {
            Some(addr) => Some(tern_metrics::bind_loopback(addr).map_err(|e| {
                let kind = match &e {
                    tern_metrics::MetricsError::Bind { source, .. } => source.kind(),
                    _ => std::io::ErrorKind::InvalidInput,
                };
                std::io::Error::new(kind, format!("--metrics-listen: {e}"))
            })?),
            None => None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("verify-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        cfg.io_threads = cfg.io_threads.max(1);
        cfg.limits.write_deadline = cfg.write_timeout;
        let started = now();
        // Distinct per process start: pid and sub-second start time.
        #[allow(clippy::disallowed_methods)] // the driver owns the clock
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let instance = (u64::from(std::process::id()) << 32) ^ wall.as_nanos() as u64;
        let nofile = server_core::limits::raise_nofile_limit();
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
            registry: Registry::new(server_core::limits::fd_cap(nofile)),
            reads: Budget::new("read_buffers", cfg.read_budget),
            responses: Budget::new("responses", cfg.response_budget),
            rings: Budget::new("rings", cfg.ring_budget),
            listeners: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            cfg,
        });
        // Started: from here the sockets belong to `run`, which removes them
        // when it ends.
        created.0.clear();
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
        // Whichever way `run` ends, early error or drain, its sockets go.
        let _sockets = CreatedSockets(
            std::iter::once(shared.cfg.socket.clone())
                .chain(shared.cfg.admin_socket.clone())
                .collect(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(shared.cfg.io_threads)
            .thread_name("verify-io")
            .enable_io()
            .enable_time()
            .build()?;
        let t = shared.clone();
        std::thread::Builder::new()
            .name("verify-timer".into())
            .spawn(move || t.timer_loop())?;
        let served = runtime.block_on(async {
            let policy = wire::uds::PeerPolicy::same_user().allow_uid(0);
            let verify = server_core::Listener::new(
                listener,
                &shared.registry,
                "verify",
                shared.cfg.limits.clone(),
                policy.clone(),
            )?;
            shared.add_listener("verify", verify.stats().clone());
            tokio::spawn(conn::serve_listener(shared.clone(), verify));
            if let Some(a) = admin {
                let admin = server_core::Listener::new(
                    a,
                    &shared.registry,
                    "admin",
                    shared.cfg.admin_limits.clone(),
                    policy,
                )?;
                shared.add_listener("admin", admin.stats().clone());
                tokio::spawn(admin::serve_admin(shared.clone(), admin));
            }
            if let Some(m) = metrics {
                tokio::spawn(admin::serve_metrics(shared.clone(), m));
            }
            let c = &shared.cfg;
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                socket = %c.socket.display(),
                admin = ?c.admin_socket,
                metrics = ?c.metrics_listen,
                threads = c.threads,
                io_threads = c.io_threads,
                backend = %shared.backend.kind(),
                key_capacity = c.key_capacity,
                ring_capacity = c.ring_capacity,
                ring_budget = c.ring_budget,
                max_connections = c.limits.max_connections,
                "verifyd listening"
            );
            shared.until(|s| s.draining() || s.stopped()).await;
            // Draining (or stopped): wait for admitted work and its queued
            // responses, up to the deadline.
            let deadline = tokio::time::Instant::now() + shared.cfg.drain_deadline;
            while !shared.stopped()
                && (shared.open_jobs.load(Ordering::SeqCst) > 0 || shared.responses.used() > 0)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<(), std::io::Error>(())
        });
        let left = shared.open_jobs.load(Ordering::SeqCst);
        tracing::info!(unanswered = left, "verifyd stopped");
        shared.stop.store(true, Ordering::SeqCst);
        shared.timer.notify_all();
        shared.wake.notify_waiters();
        // Tasks are dropped, closing their connections; ring session
        // threads end when their peers notice.
        runtime.shutdown_background();
        served
    }
}
