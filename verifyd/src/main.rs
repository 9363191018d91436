//! `verifyd`: the batched ML-DSA-65 verification daemon.
//!
//! ```text
//! verifyd [--socket PATH] [--admin-socket PATH] [--metrics-listen 127.0.0.1:9464]
//!         [--threads N] [--backend aws-lc|rustcrypto|libcrux|pqcrypto] [--key-capacity N]
//! ```
//!
//! `libcrux` and `pqcrypto` exist only when built with the cargo feature of
//! the same name.
//!
//! SIGTERM (or SIGINT) drains: no new work, admitted items get their
//! verdicts, then exit. A second signal, or the drain deadline, stops at once.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use verifyd::BackendKind;
use verifyd::server::{Server, ServerConfig, default_socket_dir};

#[derive(Debug, Parser)]
#[command(version, about = "Batched ML-DSA-65 signature verification daemon")]
struct Cli {
    /// Verify socket [default: $XDG_RUNTIME_DIR/tern/verifyd.sock or /run/tern/verifyd.sock].
    #[arg(long, env = "TERN_VERIFYD_SOCKET")]
    socket: Option<PathBuf>,
    /// Admin socket (status and diagnostics as JSON) [default: <socket>.admin].
    #[arg(long, env = "TERN_VERIFYD_ADMIN_SOCKET")]
    admin_socket: Option<PathBuf>,
    /// Serve Prometheus text on this loopback address.
    #[arg(long, env = "TERN_VERIFYD_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Worker threads [default: number of cores].
    #[arg(long, env = "TERN_VERIFYD_THREADS")]
    threads: Option<usize>,
    /// ML-DSA-65 implementation.
    #[arg(long, env = "TERN_VERIFYD_BACKEND", default_value = "aws-lc")]
    backend: BackendKind,
    /// Decoded keys kept in the cache.
    #[arg(long, default_value_t = 65_536)]
    key_capacity: usize,
    /// Upper bound of the adaptive admission limit (items admitted and not
    /// yet verified) [default: 65536].
    #[arg(long, env = "TERN_VERIFYD_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Seconds a drain may take before the daemon stops anyway.
    #[arg(long, default_value_t = 10)]
    drain_deadline_s: u64,
    /// Do not offer shared-memory rings: every session uses socket frames.
    #[arg(long)]
    no_shm: bool,
    /// Shared-memory ring capacity offered per direction, bytes.
    #[arg(long, default_value_t = verifyd::transport::DEFAULT_RING_CAPACITY)]
    ring_capacity: u32,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let socket = cli
        .socket
        .unwrap_or_else(|| default_socket_dir().join("verifyd.sock"));
    let admin = cli.admin_socket.unwrap_or_else(|| {
        let mut s = socket.clone().into_os_string();
        s.push(".admin");
        PathBuf::from(s)
    });
    let mut cfg = ServerConfig::new(socket);
    if let Some(t) = cli.threads {
        cfg = cfg.threads(t);
    } else {
        let t = cfg.threads;
        cfg = cfg.threads(t);
    }
    cfg.admin_socket = Some(admin);
    cfg.metrics_listen = cli.metrics_listen;
    cfg.backend = cli.backend;
    cfg.key_capacity = cli.key_capacity;
    cfg.drain_deadline = Duration::from_secs(cli.drain_deadline_s);
    cfg.ring_capacity = if cli.no_shm { 0 } else { cli.ring_capacity };
    if let Some(n) = cli.max_in_flight {
        cfg.sched.limit_ceiling = n.max(1);
        cfg.sched.limit_floor = cfg.sched.limit_floor.min(n.max(1));
    }

    // Block the signals in every thread (threads inherit the mask) and take
    // them synchronously on one thread.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    sigs.thread_block().context("blocking signals")?;

    let server = Server::bind(cfg).context("binding sockets")?;
    let handle = server.handle();
    std::thread::Builder::new()
        .name("verify-signals".into())
        .spawn(move || {
            let mut seen = 0;
            while let Ok(sig) = sigs.wait() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(?sig, "draining");
                    handle.drain();
                } else {
                    tracing::warn!(?sig, "second signal: stopping now");
                    handle.stop();
                    std::process::exit(1);
                }
            }
        })?;
    server.run().context("serving")?;
    Ok(())
}
