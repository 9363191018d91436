//! Receive-ACKed sends over libtransport on loopback UDP: the sequential
//! round trip of one 1 KiB `send_with_receive_ack`, the rate with 64 in
//! flight, and DM latency under load (a bulk transfer and a probe flood on
//! the same connection between the same two endpoints).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libtransport::{Bytes, Config, Endpoint, Kind, KindConfig, Overflow, PeerId};
use tokio::task::JoinSet;

use super::{ours, runtime};

/// Payload of each ACKed send.
pub const PAYLOAD: usize = 1024;
/// Sends before measuring (connection, RTT estimate and windows warm).
const WARMUP: usize = 50;
/// Budget of each ACKed send; far above any loopback round trip.
const BUDGET: Duration = Duration::from_secs(10);
/// ACKed sends in flight for the throughput figure.
pub const IN_FLIGHT: usize = 64;
/// Bulk messages of the load, and how much of them may be queued.
const BULK_MSG: usize = 64 * 1024;
/// Concurrent probe loops of the load (single flight per peer folds them
/// into one probe at a time; the rest are coalesced).
const PROBE_LOOPS: usize = 16;
/// Longest a loaded measurement may run before it is cut short.
const LOAD_CAP: Duration = Duration::from_secs(60);

/// A connected pair: the client endpoint, the server endpoint, the
/// server's PeerId. The server drains `DM` (and `BULK`) as fast as it can.
struct Pair {
    client: Endpoint,
    server: Endpoint,
    peer: PeerId,
    drains: JoinSet<()>,
}

impl Pair {
    async fn new(server_cfg: Config) -> Result<Self> {
        let server = ours::endpoint(server_cfg, ours::Backend::Tokio)?;
        let client = ours::endpoint(Config::default(), ours::Backend::Tokio)?;
        let mut drains = JoinSet::new();
        for kind in [Kind::DM, Kind::BULK] {
            let mut rx = server.register(
                kind,
                KindConfig {
                    capacity: 4096,
                    overflow: Overflow::BackPressure,
                    ..KindConfig::default()
                },
            )?;
            drains.spawn(async move { while rx.recv().await.is_some() {} });
        }
        let peer = ours::dial(&client, &server).await?;
        Ok(Self {
            client,
            server,
            peer,
            drains,
        })
    }

    async fn acked(&self, payload: &Bytes) -> Result<Duration> {
        let t = Instant::now();
        self.client
            .send_with_receive_ack(&self.peer, Kind::DM, payload.clone(), BUDGET)
            .await
            .context("receive-ACKed send")?;
        Ok(t.elapsed())
    }

    /// `n` sequential ACKed sends after the warm-up.
    async fn sequential(&self, n: usize, payload: &Bytes) -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let d = self.acked(payload).await?;
            if i >= WARMUP {
                samples.push(d);
            }
        }
        Ok(samples)
    }

    async fn close(mut self) {
        self.client.abort();
        self.server.abort();
        self.client.closed().await;
        self.drains.abort_all();
    }
}

fn payload() -> Bytes {
    Bytes::from(vec![0x5au8; PAYLOAD])
}

/// `n` sequential receive-ACKed 1 KiB sends: each sample is one round trip
/// from the call to the receiver's `Accepted`.
pub fn rtt(n: usize) -> Result<Vec<Duration>> {
    runtime()?.block_on(async {
        let p = Pair::new(Config::default()).await?;
        let samples = p.sequential(n, &payload()).await;
        p.close().await;
        samples
    })
}

/// `n` receive-ACKed 1 KiB sends with [`IN_FLIGHT`] outstanding at any
/// time: sends per second from the first call to the last answer.
pub fn throughput(n: usize) -> Result<f64> {
    runtime()?.block_on(async {
        let p = Arc::new(Pair::new(Config::default()).await?);
        let data = payload();
        p.sequential(0, &data).await?;
        let t = Instant::now();
        let mut set = JoinSet::new();
        let mut started = 0;
        let mut done = 0;
        while done < n {
            while started < n && set.len() < IN_FLIGHT {
                let (p, data) = (p.clone(), data.clone());
                set.spawn(async move { p.acked(&data).await });
                started += 1;
            }
            match set.join_next().await {
                Some(r) => {
                    r.context("ACKed send task")??;
                    done += 1;
                }
                None => break,
            }
        }
        let per_s = done as f64 / t.elapsed().as_secs_f64();
        if let Ok(p) = Arc::try_unwrap(p) {
            p.close().await;
        }
        Ok(per_s)
    })
}

/// DM latency idle and under load.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Sequential ACKed DM round trips, nothing else on the connection.
    pub idle: Vec<Duration>,
    /// The same while a bulk transfer and a probe flood run on it.
    pub loaded: Vec<Duration>,
    /// Bulk payload moved during the loaded phase, bytes.
    pub bulk_bytes: u64,
    /// Probes sent / coalesced / paused during the loaded phase.
    pub probes: (u64, u64, u64),
    /// Why the bulk sender stopped before the end of the loaded phase, if
    /// it did (then part of the phase ran without bulk load).
    pub bulk_error: Option<String>,
    /// ACK retries and stuck-connection reconnects during the loaded phase.
    pub retries: u64,
    /// Stuck-connection reconnects during the loaded phase.
    pub stuck: u64,
}

/// `n` sequential receive-ACKed 1 KiB DMs idle, then `n` while the same
/// client floods the same connection with `BULK` messages (64 KiB, as fast
/// as `send` takes them) and `PROBE_LOOPS` probe loops. Bounded: the load
/// stops when the loaded samples are taken, or after `LOAD_CAP`.
/// `stream_window` overrides the receiver's per-stream receive window
/// (which bounds the bulk bytes in flight ahead of a DM); `None` keeps the
/// default 4 MiB.
pub fn dm_under_load(n: usize, stream_window: Option<u32>) -> Result<Loaded> {
    runtime()?.block_on(async {
        let mut cfg = Config::default();
        if let Some(w) = stream_window {
            cfg.stream_receive_window = w;
        }
        let p = Pair::new(cfg).await?;
        let data = payload();
        let idle = p.sequential(n, &data).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = JoinSet::new();
        {
            let (c, peer, stop) = (p.client.clone(), p.peer, stop.clone());
            load.spawn(async move {
                let chunk = Bytes::from(vec![0xa5u8; BULK_MSG]);
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = c.send(&peer, Kind::BULK, chunk.clone()).await {
                        if !stop.load(Ordering::Relaxed) {
                            return (sent, Some(e.to_string()));
                        }
                        break;
                    }
                    sent += BULK_MSG as u64;
                }
                (sent, None)
            });
        }
        for _ in 0..PROBE_LOOPS {
            let (c, peer, stop) = (p.client.clone(), p.peer, stop.clone());
            load.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if c.probe(&peer).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                (0, None)
            });
        }
        // Let the bulk transfer reach its steady state first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let d0 = p.client.diagnostics();
        let loaded = tokio::time::timeout(LOAD_CAP, p.sequential(n, &data)).await;
        stop.store(true, Ordering::Relaxed);
        let d1 = p.client.diagnostics();
        let (before, after) = (d0.probe.counters, d1.probe.counters);
        let (s0, s1) = (d0.ack.snapshot.sender, d1.ack.snapshot.sender);
        let mut bulk_bytes = 0;
        let mut bulk_error = None;
        // The bulk sender may be waiting for queue space; abort what does
        // not end within a second.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(r) = load.join_next().await {
                if let Ok((bytes, err)) = r {
                    bulk_bytes += bytes;
                    if bulk_error.is_none() {
                        bulk_error = err;
                    }
                }
            }
        })
        .await;
        load.abort_all();
        p.close().await;
        let loaded = loaded.context("loaded DM measurement hit its time cap")??;
        Ok(Loaded {
            idle,
            loaded,
            bulk_bytes,
            probes: (
                after.sent - before.sent,
                after.coalesced - before.coalesced,
                after.paused - before.paused,
            ),
            bulk_error,
            retries: s1.retries - s0.retries,
            stuck: s1.stuck_reconnects - s0.stuck_reconnects,
        })
    })
}
