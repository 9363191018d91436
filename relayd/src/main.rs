//! `relayd`: the node's transport/relay daemon.
//!
//! ```text
//! relayd [--config FILE] [--set SECTION.KEY=VALUE]... [--check]
//! ```
//!
//! Settings come from the node config's `[relayd]` and `[node]` sections
//! (`docs/config.md`): defaults < file < `TERN_RELAYD_*` / `TERN_NODE_*`
//! variables < `--set`. Every value is range-checked before anything
//! starts; a bad one exits with status 2 and a message naming the key, its
//! valid range and where the value came from. `--check` prints the
//! effective config with origins and the resolved paths, and exits.
//!
//! At start relayd loads the node identity key file (creating it, mode
//! 0600, when absent), binds the QUIC endpoint on the `listen` address
//! (exactly one), serves the relay socket (one gossipd at a time, ADR 0060) and
//! the admin socket (`status`, `diagnostics`), and logs one
//! `relayd listening` line. SIGTERM or SIGINT stops it; its sockets are
//! removed on a failed start as on shutdown. Capabilities: P2–P5, R1, R3
//! (see the daemon module docs).
#![forbid(unsafe_code)]

mod daemon;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use libtransport::Identity;
use relayd::{PumpConfig, Stream};
use server_core::Limits;
use tern_config::{ConfigArgs, Loaded};
use wire::relay::RetainConfig;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Tern transport/relay daemon: owns the QUIC endpoint, feeds gossipd"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    server_core::daemon::main("relayd", &cli.config, start)
}

fn start(loaded: &Loaded, paths: &tern_config::NodePaths) -> Result<()> {
    let settings = settings(loaded, paths)?;
    let key = &settings.identity_key;
    server_core::daemon::create_private_parent(key)
        .with_context(|| format!("creating the directory of {}", key.display()))?;
    let (identity, created) = Identity::load_or_generate(key)
        .with_context(|| format!("identity key {}", key.display()))?;
    // Two threads: the endpoint driver and the sockets; ring threads and
    // the ring setup are blocking threads of their own.
    let rt = server_core::daemon::runtime("relayd-io").context("starting the runtime")?;
    let result = rt.block_on(daemon::run(settings, identity, created));
    // A ring setup still waiting for a stalled gossipd holds a blocking
    // thread; do not wait for it on the way out.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// The daemon's settings from the checked config.
fn settings(loaded: &Loaded, paths: &tern_config::NodePaths) -> Result<daemon::Settings> {
    let r = &loaded.config.relayd;
    // Checked: exactly one address.
    let listen = *r.listen.first().context("relayd.listen names no address")?;
    let request = std::time::Duration::from_secs(1);
    Ok(daemon::Settings {
        node: loaded.config.node.name.clone(),
        listen,
        relay_socket: paths.relayd_socket.clone(),
        admin_socket: paths.relayd_admin.clone(),
        metrics_listen: r.metrics_listen,
        // Checked: every entry parses.
        peers: r
            .peers
            .iter()
            .filter_map(|p| tern_config::parse_peer(p))
            .map(|(id, addr)| (libtransport::PeerId(id), addr))
            .collect(),
        identity_key: paths.identity_key.clone(),
        // Checked: a power of two in 64 KiB..=1 GiB.
        ring_capacity: u32::try_from(r.ring_capacity).context("relayd.ring_capacity")?,
        pump: pump_config(usize::try_from(r.pump_bytes).context("relayd.pump_bytes")?),
        retain: RetainConfig {
            max_records: usize::try_from(r.retain_records).context("relayd.retain_records")?,
            max_bytes: usize::try_from(r.retain_bytes).context("relayd.retain_bytes")?,
        },
        // One gossipd plus room for refusing others with a typed frame.
        relay_limits: Limits::default().max_connections(8),
        admin_limits: Limits::admin(request),
    })
}

/// The default pump layout scaled to `total` bytes: each kind's
/// reservation keeps its share of the default 32 MiB, so urgent kinds keep
/// their reserved room at any configured size.
fn pump_config(total: usize) -> PumpConfig {
    let mut cfg = PumpConfig::default();
    let default_total = cfg.total_bytes;
    for k in Stream::ALL {
        let l = &mut cfg.kinds[k.index()];
        let scaled = (l.reserved_bytes as u128 * total as u128) / default_total as u128;
        l.reserved_bytes = usize::try_from(scaled).unwrap_or(usize::MAX);
    }
    cfg.total_bytes = total;
    cfg
}

#[cfg(test)]
mod tests {
    use relayd::RecvPump;

    use super::*;

    /// Every configurable pump size (1 MiB..=4 GiB) gives a pump the
    /// library accepts, with the urgent kinds' reservations kept in
    /// proportion. Capability: R1.
    #[test]
    fn pump_config_scales_reservations_within_the_total() {
        for total in [1 << 20, 3 << 20, 32 << 20, 4 << 30] {
            let cfg = pump_config(total);
            let reserved: usize = cfg.kinds.iter().map(|k| k.reserved_bytes).sum();
            assert!(reserved <= total);
            assert_eq!(cfg.kinds[Stream::Dm.index()].reserved_bytes, total / 4);
            assert!(RecvPump::<()>::new(cfg).is_ok());
        }
    }
}
