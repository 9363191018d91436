//! `verifyd`: the batched ML-DSA-65 verification daemon.
//!
//! ```text
//! verifyd [--socket PATH] [--admin-socket PATH] [--metrics-listen 127.0.0.1:9464]
//!         [--threads N] [--backend aws-lc|rustcrypto|libcrux|pqcrypto] [--key-capacity N]
//!         [--no-calibrate] [--calibrate-budget-ms N]
//!         [--ring-capacity BYTES] [--ring-budget BYTES] [--no-shm]
//!         [--io-threads N] [--max-connections N]
//! ```
//!
//! Without `--backend`, the daemon times every backend built in on a small
//! corpus at start (about 300 ms; see `verifyd::calibrate`) and uses the
//! fastest; `--no-calibrate` skips that and uses the default (aws-lc).
//!
//! `libcrux` and `pqcrypto` exist only when built with the cargo feature of
//! the same name.
//!
//! SIGTERM (or SIGINT) drains: no new work, admitted items get their
//! verdicts, then exit. A second signal, or the drain deadline, stops at once.
//!
//! Every numeric flag is range-checked before anything starts, with the
//! node config's limits (`tern_config::check`): an out-of-range value exits
//! with status 2 and a message naming the flag and its valid range. Logs go
//! to stderr at `info` unless `RUST_LOG` says otherwise, with colour only on
//! a terminal; one `verifyd listening` line gives the effective settings.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use tern_config::check::{MAX_KEYS, MAX_RING, MAX_THREADS, MIN_RING};
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
    #[arg(long, env = "TERN_VERIFYD_THREADS", value_parser = in_range(1, MAX_THREADS))]
    threads: Option<usize>,
    /// ML-DSA-65 implementation [default: the fastest one measured at start].
    #[arg(long, env = "TERN_VERIFYD_BACKEND")]
    backend: Option<BackendKind>,
    /// Skip the start-up calibration and use the default backend (aws-lc)
    /// unless `--backend` names one.
    #[arg(long, env = "TERN_VERIFYD_NO_CALIBRATE")]
    no_calibrate: bool,
    /// Time budget of the start-up calibration, milliseconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    calibrate_budget_ms: u64,
    /// Decoded keys kept in the cache.
    #[arg(long, default_value_t = 65_536, value_parser = in_range(1, MAX_KEYS))]
    key_capacity: usize,
    /// Upper bound of the adaptive admission limit (items admitted and not
    /// yet verified) [default: 65536].
    #[arg(long, env = "TERN_VERIFYD_MAX_IN_FLIGHT", value_parser = in_range(1, 1 << 24))]
    max_in_flight: Option<usize>,
    /// Seconds a drain may take before the daemon stops anyway.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_deadline_s: u64,
    /// Do not offer shared-memory rings: every session uses socket frames.
    #[arg(long)]
    no_shm: bool,
    /// Shared-memory ring capacity offered per direction, bytes.
    /// A power of two in 64 KiB..=1 GiB; `--no-shm` turns rings off.
    #[arg(long, default_value_t = verifyd::transport::DEFAULT_RING_CAPACITY, value_parser = ring_bytes)]
    ring_capacity: u32,
    /// Bytes of shared-memory rings all ring sessions together may hold
    /// (each holds both its rings); past it, new sessions run on frames.
    #[arg(long, default_value_t = verifyd::server::DEFAULT_RING_BUDGET, value_parser = in_range(0, 1 << 40))]
    ring_budget: usize,
    /// Threads of the I/O runtime (accept, hello, reads, admin) [default: 2,
    /// or 1 on a single core].
    #[arg(long, env = "TERN_VERIFYD_IO_THREADS", value_parser = in_range(1, 64))]
    io_threads: Option<usize>,
    /// Verify connections open at once (beyond: the longest-idle one gives
    /// way, else the newcomer gets a `Busy` refusal frame).
    #[arg(long, default_value_t = 4096, value_parser = in_range(1, 1 << 20))]
    max_connections: usize,
}

/// A clap parser for a `usize` flag in `lo..=hi`; the error names the range.
fn in_range(lo: u64, hi: u64) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| {
        let v: u64 = s
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{s:?} is not a whole number"))?;
        if !(lo..=hi).contains(&v) {
            return Err(format!("{v} is out of range: valid range is {lo}..={hi}"));
        }
        usize::try_from(v).map_err(|_| format!("{v} does not fit this machine's usize"))
    }
}

/// A ring capacity: a power of two in the node config's ring range.
fn ring_bytes(s: &str) -> Result<u32, String> {
    let v: u64 = s
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of bytes"))?;
    if !(v.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&v)) {
        return Err(format!(
            "{v} is out of range: a power of two in {MIN_RING}..={MAX_RING} bytes (use --no-shm for no rings)"
        ));
    }
    u32::try_from(v).map_err(|_| format!("{v} does not fit in 32 bits"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // `info` unless RUST_LOG says otherwise; no colour codes in files or
    // journald.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
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
    let (backend, calibration) =
        choose_backend(cli.backend, cli.no_calibrate, cli.calibrate_budget_ms)?;
    cfg.backend = backend;
    cfg.calibration = calibration;
    cfg.key_capacity = cli.key_capacity;
    cfg.drain_deadline = Duration::from_secs(cli.drain_deadline_s);
    cfg.ring_capacity = if cli.no_shm { 0 } else { cli.ring_capacity };
    cfg.ring_budget = cli.ring_budget;
    if let Some(n) = cli.io_threads {
        cfg.io_threads = n;
    }
    cfg.limits = cfg.limits.max_connections(cli.max_connections);
    if let Some(n) = cli.max_in_flight {
        cfg.sched.limit_ceiling = n;
        cfg.sched.limit_floor = cfg.sched.limit_floor.min(n);
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

/// The backend named on the command line, else the default when calibration
/// is off, else the fastest one measured now (with the calibration, which
/// `status` reports).
fn choose_backend(
    named: Option<BackendKind>,
    no_calibrate: bool,
    budget_ms: u64,
) -> Result<(BackendKind, Option<verifyd::calibrate::Calibration>)> {
    if let Some(kind) = named {
        tracing::info!(backend = %kind, "backend named on the command line; not calibrating");
        return Ok((kind, None));
    }
    if no_calibrate {
        tracing::info!(backend = %BackendKind::DEFAULT, "calibration off; default backend");
        return Ok((BackendKind::DEFAULT, None));
    }
    let budget = Duration::from_millis(budget_ms);
    let cal = verifyd::calibrate::calibrate_built_in(budget).context("calibrating backends")?;
    for t in &cal.timings {
        tracing::info!(
            backend = %t.backend,
            verify_ns = t.verify_ns,
            rounds = t.rounds,
            excluded = t.excluded.as_deref(),
            "calibration"
        );
    }
    tracing::info!(picked = %cal.picked, elapsed_ms = cal.elapsed_ms, "calibrated");
    Ok((cal.picked, Some(cal)))
}
