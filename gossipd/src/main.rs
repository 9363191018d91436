//! `gossipd`: the node's gossip daemon.
//!
//! ```text
//! gossipd [--config FILE] [--set SECTION.KEY=VALUE]... [--check]
//! ```
//!
//! Settings come from the node config's `[gossipd]` and `[node]` sections
//! (`docs/config.md`): defaults < file < `TERN_GOSSIPD_*` / `TERN_NODE_*`
//! variables < `--set`; a bad value exits with status 2 naming the key and
//! its range. `--check` prints the effective config and paths, and exits.
//!
//! At start gossipd loads the node identity key file (the one relayd uses;
//! whichever daemon starts first creates it, mode 0600), connects a verifyd
//! pool to `gossipd.verifyd_sockets` (in the background), attaches to
//! relayd's relay socket (in the background, retrying with backoff; it
//! reattaches and rejoins its topics when relayd restarts), runs the
//! libgossip runtime over that link, serves the admin socket (`status`,
//! `diagnostics`) and, with `gossipd.metrics_listen`, the same values as
//! Prometheus metrics on loopback (`gossipd::metrics`; a port it cannot
//! bind fails the start), and logs one `gossipd running` line. SIGTERM or
//! SIGINT stops it; its sockets are removed on a failed start as on
//! shutdown.
//! Capabilities: P2, P3, D1–D3, R1, R3.
#![forbid(unsafe_code)]
// The daemon is the driver: it owns the clock (uptime).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use gossipd::{RelayLink, RelayLinkConfig};
use libgossip::proto::TopicId;
use libgossip::runtime::{Gossip, IdentitySigner, Link, RuntimeConfig};
use libtransport::Identity;
use server_core::admin::{AdminSocket, AdminState, Daemon, serve_json};
use server_core::daemon::SocketFiles;
use server_core::{Budget, Limits, Listener, Registry, limits};
use tern_config::{ConfigArgs, Loaded};
use tokio::sync::watch;
use wire::generated::hello::Role;
use wire::hello::HelloConfig;
use wire::relay::IntakeConfig;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Tern gossip daemon: pubsub and direct messages over relayd"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    server_core::daemon::main("gossipd", &cli.config, start)
}

/// The daemon's settings from the checked config.
#[derive(Debug, Clone)]
struct Settings {
    node: String,
    identity_key: PathBuf,
    /// Peers' key records kept across restarts (next to the identity key).
    keys_dir: PathBuf,
    relay_socket: PathBuf,
    admin_socket: PathBuf,
    api_socket: PathBuf,
    verifyd_sockets: Vec<PathBuf>,
    /// The Prometheus endpoint (checked loopback), off when `None`.
    metrics_listen: Option<std::net::SocketAddr>,
    subscriber_queue: usize,
    admin_limits: Limits,
    api_limits: Limits,
}

fn start(loaded: &Loaded, paths: &tern_config::NodePaths) -> Result<()> {
    let g = &loaded.config.gossipd;
    let settings = Settings {
        node: loaded.config.node.name.clone(),
        identity_key: paths.identity_key.clone(),
        keys_dir: paths
            .identity_key
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("gossipd-keys"),
        relay_socket: paths.relayd_socket.clone(),
        admin_socket: paths.gossipd_admin.clone(),
        api_socket: paths.gossipd_socket.clone(),
        verifyd_sockets: paths.gossipd_verifyd.clone(),
        metrics_listen: g.metrics_listen,
        // Checked: 1..=1048576.
        subscriber_queue: usize::try_from(g.subscriber_queue)
            .context("gossipd.subscriber_queue")?,
        admin_limits: Limits::admin(Duration::from_secs(1)),
        // Checked: 1..=4096.
        api_limits: Limits::default()
            .max_connections(usize::try_from(g.max_clients).context("gossipd.max_clients")?),
    };
    let key = &settings.identity_key;
    server_core::daemon::create_private_parent(key)
        .with_context(|| format!("creating the directory of {}", key.display()))?;
    // The same file relayd loads: the id peers see on the QUIC connection
    // is the key gossip signs with. Whichever daemon starts first creates it.
    server_core::daemon::create_private_parent(&settings.keys_dir.join("x"))
        .with_context(|| format!("creating {}", settings.keys_dir.display()))?;
    let (identity, created) = Identity::load_or_generate(key)
        .with_context(|| format!("identity key {}", key.display()))?;
    let rt = server_core::daemon::runtime("gossipd-io").context("starting the runtime")?;
    let result = rt.block_on(run(settings, identity, created));
    // The relay supervisor thread may be parked in a ring pop; do not wait
    // for blocking work on the way out.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// What the admin socket and the rejoin task share.
struct Shared {
    instance: u64,
    started: Instant,
    link: Arc<RelayLink>,
    /// Topics joined, rejoined after every reattach to relayd.
    topics: Arc<Mutex<BTreeSet<[u8; 32]>>>,
    stop: watch::Receiver<bool>,
    reads: Arc<Budget>,
    responses: Arc<Budget>,
    admin_stats: Arc<server_core::ListenerStats>,
    api_stats: Arc<server_core::ListenerStats>,
    api: Arc<gossipd::api::Api>,
}

impl Shared {
    async fn stopped(&self) {
        let mut rx = self.stop.clone();
        // `wait_for` errs only when the sender is gone, which is also a stop.
        let _ = rx.wait_for(|s| *s).await;
    }
}

async fn run(cfg: Settings, identity: Identity, created: bool) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut files = SocketFiles::default();
    let admin_std = files
        .bind(&cfg.admin_socket)
        .with_context(|| format!("binding {}", cfg.admin_socket.display()))?;
    let api_std = files
        .bind(&cfg.api_socket)
        .with_context(|| format!("binding {}", cfg.api_socket.display()))?;
    let metrics = cfg
        .metrics_listen
        .map(tern_metrics::bind_loopback)
        .transpose()
        .context("binding the metrics endpoint")?;
    let registry = Registry::new(limits::fd_cap(limits::raise_nofile_limit()));
    let policy = server_core::daemon::local_policy();
    let admin = Listener::new(
        admin_std,
        &registry,
        "admin",
        cfg.admin_limits.clone(),
        policy.clone(),
    )
    .context("admin listener")?;
    let api_listener = Listener::new(api_std, &registry, "client", cfg.api_limits.clone(), policy)
        .context("application listener")?;
    // In the background: verifyd may start after gossipd; until one
    // instance answers the link checks signatures in-process (counted).
    let pool = verifyd::client::Pool::connect_nonblocking(
        cfg.verifyd_sockets.clone(),
        verifyd::client::PoolConfig::default(),
    )
    .context("starting the verifyd pool")?;
    let instance = server_core::daemon::instance();
    let peer_id = identity.peer_id();
    let link = Arc::new(
        RelayLink::start(
            RelayLinkConfig {
                relay_socket: cfg.relay_socket.clone(),
                instance,
                intake: IntakeConfig::default(),
                me: peer_id.0,
                keys_dir: Some(cfg.keys_dir.clone()),
            },
            pool,
        )
        .context("starting the relay link")?,
    );
    let runtime_cfg = RuntimeConfig {
        subscriber_queue: cfg.subscriber_queue,
        ..RuntimeConfig::default()
    };
    let gossip = Gossip::spawn(
        link.clone() as Arc<dyn Link>,
        Box::new(IdentitySigner::new(identity)),
        runtime_cfg,
    );
    // Subscribed before the link opens: the runtime drops DMs nobody
    // subscribed to, and relayd re-sends retained ones right at attach.
    let dms = gossip
        .dms_with_capacity(IntakeConfig::default().max_pending)
        .await
        .context("subscribing to DMs")?;
    // Peers' key records from the last run: DMs relayd re-sends from its
    // retention verify without waiting for the peers to reconnect.
    let mut keys = 0;
    for k in gossipd::keys::KeyStore::load(&cfg.keys_dir) {
        if gossip.add_kem_key(k).await.is_ok() {
            keys += 1;
        }
    }
    link.open();
    let (stop_tx, stop_rx) = watch::channel(false);
    let topics = Arc::new(Mutex::new(BTreeSet::new()));
    let api = Arc::new(gossipd::api::Api::new(
        gossip.clone(),
        link.clone(),
        topics.clone(),
        gossipd::api::ApiConfig {
            subscriber_queue: cfg.subscriber_queue,
            limits: cfg.api_limits.clone(),
            ..gossipd::api::ApiConfig::default()
        },
    ));
    let shared = Arc::new(Shared {
        instance,
        started: Instant::now(),
        link: link.clone(),
        topics: topics.clone(),
        stop: stop_rx,
        reads: Budget::new("read_buffers", 16 << 20),
        responses: Budget::new("responses", 16 << 20),
        admin_stats: admin.stats().clone(),
        api_stats: api_listener.stats().clone(),
        api: api.clone(),
    });
    let stopped = || {
        let s = shared.clone();
        async move { s.stopped().await }
    };
    let mut tasks = vec![
        tokio::spawn(serve_admin(shared.clone(), admin, cfg.admin_limits.clone())),
        tokio::spawn(rejoin(shared.clone(), gossip.clone())),
        tokio::spawn(gossipd::api::collect_dms(api.clone(), dms)),
        tokio::spawn(gossipd::api::serve(api.clone(), api_listener, stopped())),
    ];
    if let Some(l) = metrics {
        tasks.push(tokio::spawn(gossipd::metrics::serve(api, l, stopped())));
    }
    tracing::info!(
        node = %cfg.node,
        peer_id = %peer_id,
        identity_created = created,
        relay_socket = %cfg.relay_socket.display(),
        admin_socket = %cfg.admin_socket.display(),
        api_socket = %cfg.api_socket.display(),
        metrics = ?cfg.metrics_listen,
        keys_loaded = keys,
        verifyd_sockets = ?cfg.verifyd_sockets,
        "gossipd running"
    );
    let sig = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = sig, "shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = gossip.shutdown().await {
        tracing::debug!(error = %e, "gossip runtime already stopped");
    }
    link.close().await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    drop(files);
    tracing::info!("gossipd stopped");
    Ok(())
}

/// Rejoins every joined topic after each reattach to relayd: a restarted
/// relayd has no connections, and membership starts over. Capability: R3.
async fn rejoin(shared: Arc<Shared>, gossip: Gossip) {
    let mut attaches = shared.link.attaches();
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            r = attaches.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let n = *attaches.borrow_and_update();
        if n <= 1 {
            continue;
        }
        let topics: Vec<[u8; 32]> = match shared.topics.lock() {
            Ok(t) => t.iter().copied().collect(),
            Err(p) => p.into_inner().iter().copied().collect(),
        };
        for t in topics {
            if let Err(e) = gossip.join(TopicId(t), &shared.link.connected()).await {
                tracing::warn!(error = %e, "rejoining a topic failed");
            }
        }
        tracing::info!(attaches = n, "reattached to relayd; topics rejoined");
    }
}

impl AdminState for Shared {
    fn daemon(&self) -> Daemon<'_> {
        Daemon {
            name: "gossipd",
            version: env!("CARGO_PKG_VERSION"),
            instance: self.instance,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            healthy: !*self.stop.borrow(),
        }
    }

    fn diagnostics_json(&self) -> String {
        diagnostics(self).to_string()
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        Shared::stopped(self)
    }
}

/// The admin socket (`tern.admin`: status and diagnostics as JSON) on
/// server-core. Capability: R1.
async fn serve_admin(shared: Arc<Shared>, listener: Listener, limits: Limits) {
    let socket = AdminSocket {
        hello: HelloConfig::new(server_core::admin::PROTOCOL, Role::Gossipd)
            .max_frame(64 << 10)
            .instance(shared.instance),
        limits,
        reads: shared.reads.clone(),
        responses: shared.responses.clone(),
    };
    serve_json(listener, socket, shared).await;
}

/// The diagnostics document: the daemon's identity, the link, intake,
/// verifyd-pool and API sections (`gossipd::metrics::VALUES`, the same
/// values the metrics endpoint serves), and the listeners' own counters.
/// Every drop on the way is here.
fn diagnostics(s: &Shared) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "daemon": "gossipd",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "instance": s.instance,
        "uptime_s": s.started.elapsed().as_secs(),
        "topics": s.topics.lock().map(|t| t.len()).unwrap_or(0),
        "relayd_attached": s.link.stats().attached.load(Ordering::Relaxed),
        "relayd_instance": s.link.relayd_instance(),
        "connected_peers": s.link.connected_peers(),
        "api_socket": serde_json::to_value(s.api_stats.snapshot())
            .unwrap_or(serde_json::Value::Null),
        "admin_socket": serde_json::to_value(s.admin_stats.snapshot())
            .unwrap_or(serde_json::Value::Null),
    });
    if let Some(doc) = doc.as_object_mut() {
        doc.extend(gossipd::metrics::sections(&s.api));
    }
    doc
}
