//! The daemon's I/O half: the libtransport endpoint, the relay socket that
//! gossipd attaches to, the admin socket, and the tasks between them.
//!
//! # Tasks, and why
//!
//! Everything runs on one small tokio runtime; the only other threads are
//! the ring threads (`wire`'s parker blocks) and the ring setup (blocking
//! until gossipd offers its ring, ADR 0060).
//!
//! * **Kind receivers** ([`inbound`]) — one task per forwarded stream kind
//!   takes messages from the endpoint and offers them to the
//!   [`crate::RecvPump`]. Pubsub, bulk: overflow is dropped and counted at
//!   once, so the transport never waits for gossipd (P4). Control,
//!   membership, DM: a refusal makes that one task wait for room, which
//!   leaves the message in the transport's bounded kind queue and pushes
//!   back through QUIC flow control on that kind only (R1).
//! * **Receive-ACKed DMs** ([`inbound`]) — the DM kind is registered for
//!   manual admission; each request is admitted into the `Retainer` and
//!   pushed into the inbound ring before its `Responder` answers
//!   `Accepted` (P2, P3). No gossipd: `ConsumerGone`.
//! * **Drainer** ([`inbound`]) — moves records from the retainer (re-sends
//!   to a newly attached gossipd first) and the pump into the inbound ring.
//!   The ring has no async "space" signal, so a full ring is retried after a
//!   millisecond; nothing else waits on it.
//! * **Session** ([`session`]) — one gossipd at a time on the relay socket
//!   (server-core listener); a second is refused with a `Busy` error frame
//!   and counted. Control frames (`Consumed`) are read on the runtime; the
//!   outbound ring is drained by a thread into a bounded channel.
//! * **Outbound** ([`outbound`]) — gossipd's sends go to the endpoint, at
//!   most [`MAX_SENDS`] at once; receive-ACKed ones answer with a
//!   `SendResult` control frame. Peer events go to gossipd as `PeerEvent`.
//! * **Admin** ([`admin`]) — `status` and `diagnostics` JSON, served
//!   concurrently on server-core with the request deadline.
//! * **Metrics** ([`metrics`]) — with `relayd.metrics_listen`, the same
//!   counters as Prometheus text on loopback (`tern-metrics`).
// The daemon is the driver: it owns the clock the sans-IO parts are fed.
#![allow(clippy::disallowed_methods)]

pub(crate) mod admin;
pub(crate) mod inbound;
pub(crate) mod metrics;
pub(crate) mod outbound;
pub(crate) mod session;
pub(crate) mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use flatbuffers::FlatBufferBuilder;
use libtransport::{Endpoint, Identity};
use relayd::{PumpConfig, RecvPump};
use server_core::daemon::SocketFiles;
use server_core::{Budget, Limits, Listener, Registry, limits};
use tokio::sync::{Notify, watch};
use wire::relay::{InboundRecord, RetainConfig, Retainer};
use wire::ring::shm::ShmProducer;

use stats::Counters;

/// Receive-ACKed sends to peers in flight at once; more wait (which stops
/// the outbound ring thread, which back-pressures gossipd's ring).
pub(crate) const MAX_SENDS: usize = 256;

/// Everything the daemon was configured with, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) node: String,
    pub(crate) listen: SocketAddr,
    pub(crate) relay_socket: PathBuf,
    pub(crate) admin_socket: PathBuf,
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Peers dialled at start and redialled while not connected.
    pub(crate) peers: Vec<(libtransport::PeerId, SocketAddr)>,
    pub(crate) identity_key: PathBuf,
    pub(crate) ring_capacity: u32,
    pub(crate) pump: PumpConfig,
    pub(crate) retain: RetainConfig,
    pub(crate) relay_limits: Limits,
    pub(crate) admin_limits: Limits,
}

/// The attached gossipd's inbound side.
#[derive(Debug)]
pub(crate) struct Attached {
    /// Which session (a counter), so a stale session's teardown cannot
    /// detach its successor.
    pub(crate) id: u64,
    pub(crate) inbound: ShmProducer,
    pub(crate) control: Arc<server_core::FrameSender>,
    pub(crate) peer_pid: i32,
}

/// State the tasks share under one lock; every operation under it is
/// non-blocking (ring pushes are `try_push`).
pub(crate) struct Inner {
    pub(crate) pump: RecvPump<InboundRecord>,
    pub(crate) retainer: Retainer,
    pub(crate) session: Option<Attached>,
    /// One encoded pump record the ring had no room for (or, if lossy, no
    /// room outside the urgent reserve), with whether it is lossy; pushed
    /// first next time (so a full ring never loses a record it was handed,
    /// except a lossy one an urgent record displaces, counted).
    pub(crate) pending: Option<(bool, Vec<u8>)>,
    pub(crate) fbb: FlatBufferBuilder<'static>,
}

/// The daemon-wide shared state.
pub(crate) struct Shared {
    pub(crate) cfg: Settings,
    pub(crate) instance: u64,
    pub(crate) started: Instant,
    pub(crate) endpoint: Endpoint,
    pub(crate) inner: Mutex<Inner>,
    /// Something to move into the ring: a pump push or a new session.
    pub(crate) wake_drain: Notify,
    /// The pump gave up room: refused urgent kinds try again.
    pub(crate) pump_space: Notify,
    pub(crate) counters: Counters,
    /// Queued control frames to gossipd and admin answers.
    pub(crate) responses: Arc<Budget>,
    /// Frames being read on the relay and admin sockets.
    pub(crate) reads: Arc<Budget>,
    /// A session holds (or is setting up) the relay: later ones are refused.
    pub(crate) session_taken: std::sync::atomic::AtomicBool,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) relay_stats: Mutex<Option<Arc<server_core::ListenerStats>>>,
    pub(crate) admin_stats: Mutex<Option<Arc<server_core::ListenerStats>>>,
}

impl Shared {
    /// The shared state's lock. Every update leaves it consistent (queues
    /// and counters), so a panic elsewhere does not make it unusable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when the daemon is stopping.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stop.clone();
        // `wait_for` errs only when the sender is gone, which is also a stop.
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The record of a received message (not retained: `seq` 0).
pub(crate) fn record(
    peer: &libtransport::PeerId,
    generation: u64,
    kind: relayd::Stream,
    ack_id: Option<[u8; 16]>,
    payload: &[u8],
) -> InboundRecord {
    InboundRecord {
        peer: peer.0,
        generation,
        kind: kind.to_relay(),
        ack_id,
        seq: 0,
        redelivered: false,
        payload: payload.to_vec(),
    }
}

/// Writes one encoded error frame (length prefix included) for a
/// connection being refused or closed.
pub(crate) fn error_frame(code: wire::generated::error::ErrorCode, text: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let payload = wire::frame::encode_error(&mut fbb, code, 0, true, text);
    let mut out = Vec::with_capacity(payload.len() + wire::frame::PREFIX_LEN);
    // An error frame with a short text is far below any frame limit.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// How long shutdown waits for the endpoint to hand queued data to peers.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);

fn bind(
    files: &mut SocketFiles,
    path: &std::path::Path,
) -> anyhow::Result<std::os::unix::net::UnixListener> {
    files
        .bind(path)
        .with_context(|| format!("binding {}", path.display()))
}

/// How often a configured peer without a connection is dialled again.
const REDIAL: Duration = Duration::from_secs(2);

/// Keeps a connection to a configured peer (`relayd.peers`): dials it, and
/// again every [`REDIAL`] while there is none, until the daemon stops.
async fn dial(shared: Arc<Shared>, peer: libtransport::PeerId, addr: SocketAddr) {
    let span = tracing::info_span!("dial", peer = %peer, %addr);
    let _ = tracing::Instrument::instrument(
        async {
            let mut stop = shared.stop.clone();
            loop {
                if shared.endpoint.connection(&peer).is_none() {
                    match shared.endpoint.connect(addr, peer).await {
                        Ok(_) => tracing::info!("connected to a configured peer"),
                        Err(e) => tracing::debug!(error = %e, "dialling a configured peer failed"),
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(REDIAL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        },
        span,
    )
    .await;
}

/// Runs the daemon until SIGTERM or SIGINT: binds the endpoint and both
/// sockets, starts every task, logs one startup line, and on the signal
/// stops the tasks, closes the endpoint (bounded) and removes the sockets.
pub(crate) async fn run(cfg: Settings, identity: Identity, created: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut files = SocketFiles::default();
    let endpoint = Endpoint::bind(cfg.listen, identity, libtransport::Config::default())
        .with_context(|| format!("binding the QUIC endpoint on {}", cfg.listen))?;
    let relay_std = bind(&mut files, &cfg.relay_socket)?;
    let admin_std = bind(&mut files, &cfg.admin_socket)?;
    let registry = Registry::new(limits::fd_cap(limits::raise_nofile_limit()));
    let policy = server_core::daemon::local_policy();
    let relay = Listener::new(
        relay_std,
        &registry,
        "relay",
        cfg.relay_limits.clone(),
        policy.clone(),
    )
    .context("relay listener")?;
    let admin = Listener::new(
        admin_std,
        &registry,
        "admin",
        cfg.admin_limits.clone(),
        policy,
    )
    .context("admin listener")?;
    let metrics = cfg
        .metrics_listen
        .map(tern_metrics::bind_loopback)
        .transpose()
        .context("binding the metrics endpoint")?;
    let pump = RecvPump::new(cfg.pump.clone()).context("recv pump settings")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        instance: server_core::daemon::instance(),
        started: Instant::now(),
        endpoint: endpoint.clone(),
        inner: Mutex::new(Inner {
            pump,
            retainer: Retainer::new(cfg.retain),
            session: None,
            pending: None,
            fbb: FlatBufferBuilder::new(),
        }),
        wake_drain: Notify::new(),
        pump_space: Notify::new(),
        counters: Counters::default(),
        responses: Budget::new("responses", 64 << 20),
        reads: Budget::new("read_buffers", 64 << 20),
        session_taken: std::sync::atomic::AtomicBool::new(false),
        stop: stop_rx,
        relay_stats: Mutex::new(Some(relay.stats().clone())),
        admin_stats: Mutex::new(Some(admin.stats().clone())),
        cfg,
    });
    inbound::start(&shared).context("registering stream kinds")?;
    let mut tasks = vec![
        tokio::spawn(session::serve(shared.clone(), relay)),
        tokio::spawn(admin::serve(shared.clone(), admin)),
        tokio::spawn(outbound::peer_events(shared.clone())),
    ];
    for &(peer, addr) in &shared.cfg.peers {
        tasks.push(tokio::spawn(dial(shared.clone(), peer, addr)));
    }
    if let Some(l) = metrics {
        tasks.push(tokio::spawn(metrics::serve(shared.clone(), l)));
    }
    let c = &shared.cfg;
    tracing::info!(
        node = %c.node,
        peer_id = %endpoint.peer_id(),
        identity_created = created,
        listen = %endpoint.local_addr(),
        relay_socket = %c.relay_socket.display(),
        admin_socket = %c.admin_socket.display(),
        metrics = ?c.metrics_listen,
        ring_capacity = c.ring_capacity,
        pump_bytes = c.pump.total_bytes,
        retain_records = c.retain.max_records,
        retain_bytes = c.retain.max_bytes,
        "relayd listening"
    );
    let sig = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = sig, "shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    match tokio::time::timeout(CLOSE_DEADLINE, endpoint.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "endpoint closed with data undelivered"),
        Err(_) => {
            tracing::info!("endpoint close deadline passed; aborting");
            endpoint.abort();
        }
    }
    drop(files);
    tracing::info!("relayd stopped");
    Ok(())
}
