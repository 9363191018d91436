//! `stagebench gossip live [MESSAGES]`: the libgossip runtime over real
//! libtransport connections on 127.0.0.1, real ML-DSA-65 signatures signed
//! and verified in process.
//!
//! Five nodes, fully connected at the transport, join one topic through
//! node 0. Node 0 publishes `MESSAGES` (default 2,000; `--quick` 200)
//! signed 1 KiB messages, keeping at most [`WINDOW`] of them published but
//! not yet delivered to all four other nodes, so the figure is sustained
//! throughput, not how deep the queues are. Each of the four subscribers
//! notes when each message arrived.
//!
//! Reported: `live_publishes_per_s` (messages delivered to all four, per
//! second of the whole run), delivery latency from publish to each
//! subscriber's receive (`live_latency_p50_us`, `live_latency_p99_us`, over
//! every (message, subscriber) pair), messages delivered to all
//! (`live_delivered_all`), duplicates seen by any subscriber
//! (`live_duplicates`) and deliveries evicted from subscriber queues
//! (`live_evicted`). A message that never reaches everyone within
//! [`STALL`] ends the run with an error instead of a figure.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use libgossip::proto::TopicId;
use libgossip::runtime::{Gossip, IdentitySigner, RuntimeConfig, Subscription, TransportLink};
use libtransport::{Endpoint, Identity};
use serde_json::json;

use crate::stats::{micros, quantile};
use crate::{Outcome, SuiteOpts, Table};

/// Nodes in the overlay (one publisher, the rest subscribe).
pub const NODES: usize = 5;
/// Messages published and not yet delivered to every subscriber.
pub const WINDOW: usize = 64;
/// Payload bytes per message.
pub const PAYLOAD: usize = 1024;
/// Longest wait for progress before the run is called stalled.
pub const STALL: Duration = Duration::from_secs(30);

struct Node {
    gossip: Gossip,
    link: Arc<TransportLink>,
    addr: SocketAddr,
}

/// What the subscribers saw: per message, how many subscribers have it,
/// and each arrival's latency.
struct Seen {
    published: Vec<Option<Instant>>,
    copies: Vec<u8>,
    complete: usize,
    latencies: Vec<Duration>,
    duplicates: u64,
    seen: Vec<HashSet<usize>>,
}

/// Runs the case.
pub fn run(opts: &SuiteOpts) -> anyhow::Result<Outcome> {
    let messages: usize = match opts.args.get(1) {
        Some(n) => n.parse().context("MESSAGES must be a number")?,
        None if opts.quick => 200,
        None => 2_000,
    };
    ensure!(messages > 0, "MESSAGES must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(measure(messages))?;
    let mut table = Table::new(
        "gossip runtime over libtransport, 5 nodes on loopback (real ML-DSA-65)",
        &[
            "messages",
            "delivered to all",
            "publishes/s",
            "latency p50 µs",
            "latency p99 µs",
            "duplicates",
            "evicted",
            "wall s",
        ],
    );
    table.row(vec![
        messages.to_string(),
        r.delivered_all.to_string(),
        format!("{:.0}", r.rate),
        format!("{:.0}", r.p50),
        format!("{:.0}", r.p99),
        r.duplicates.to_string(),
        r.evicted.to_string(),
        format!("{:.2}", r.wall.as_secs_f64()),
    ]);
    Ok(Outcome {
        tables: vec![table],
        json: vec![json!({
            "case": "live",
            "nodes": NODES,
            "messages": messages,
            "window": WINDOW,
            "payload_bytes": PAYLOAD,
            "live_delivered_all": r.delivered_all,
            "live_publishes_per_s": r.rate,
            "live_latency_p50_us": r.p50,
            "live_latency_p99_us": r.p99,
            "live_duplicates": r.duplicates,
            "live_evicted": r.evicted,
            "wall_s": r.wall.as_secs_f64(),
        })],
    })
}

struct Measured {
    delivered_all: usize,
    rate: f64,
    p50: f64,
    p99: f64,
    duplicates: u64,
    evicted: u64,
    wall: Duration,
}

async fn spawn_node() -> anyhow::Result<Node> {
    let id = Identity::generate()?;
    let signer = IdentitySigner::clone_of(&id)?;
    let ep = Endpoint::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        id,
        libtransport::Config::default(),
    )?;
    let addr = ep.local_addr();
    let link = Arc::new(TransportLink::new(ep)?);
    let gossip = Gossip::spawn(link.clone(), Box::new(signer), RuntimeConfig::default());
    Ok(Node { gossip, link, addr })
}

/// Five nodes, fully connected, joined through node 0; returns once every
/// node has an active-view neighbour.
async fn overlay(topic: TopicId) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::with_capacity(NODES);
    for _ in 0..NODES {
        nodes.push(spawn_node().await?);
    }
    for i in 0..NODES {
        for j in i + 1..NODES {
            nodes[i]
                .link
                .connect(nodes[j].addr, nodes[j].gossip.id())
                .await
                .with_context(|| format!("connect node {i} to node {j}"))?;
        }
    }
    let boot = nodes[0].gossip.id();
    nodes[0].gossip.join(topic, &[]).await?;
    for n in &nodes[1..] {
        n.gossip.join(topic, &[boot]).await?;
    }
    let deadline = Instant::now() + STALL;
    for (i, n) in nodes.iter().enumerate() {
        while n.gossip.peers(topic).await?.is_empty() {
            if Instant::now() >= deadline {
                bail!("node {i} found no neighbour within {STALL:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(nodes)
}

async fn measure(messages: usize) -> anyhow::Result<Measured> {
    let topic = TopicId::from_name("stagebench-live");
    let nodes = overlay(topic).await?;
    let subscribers = NODES - 1;
    let seen = Arc::new(Mutex::new(Seen {
        published: vec![None; messages],
        copies: vec![0; messages],
        complete: 0,
        latencies: Vec::with_capacity(messages * subscribers),
        duplicates: 0,
        seen: vec![HashSet::new(); subscribers],
    }));
    let progress = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::new();
    for (s, n) in nodes[1..].iter().enumerate() {
        // Room for the whole window: a subscriber that keeps up never
        // evicts, so an eviction in the figures means it did not.
        let sub = n.gossip.subscribe_with_capacity(topic, WINDOW * 4).await?;
        readers.push(tokio::spawn(read(
            sub,
            s,
            messages,
            seen.clone(),
            progress.clone(),
        )));
    }

    let start = Instant::now();
    let mut payload = vec![0u8; PAYLOAD];
    for i in 0..messages {
        loop {
            let notified = progress.notified();
            let outstanding = {
                let g = seen.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
                i - g.complete
            };
            if outstanding < WINDOW {
                break;
            }
            if tokio::time::timeout(STALL, notified).await.is_err() {
                bail!("no message completed within {STALL:?} ({outstanding} outstanding)");
            }
        }
        payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
        {
            let mut g = seen.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            g.published[i] = Some(Instant::now());
        }
        nodes[0]
            .gossip
            .publish(topic, Bytes::copy_from_slice(&payload))
            .await?;
    }
    loop {
        let notified = progress.notified();
        let done = {
            let g = seen.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            g.complete
        };
        if done == messages {
            break;
        }
        if tokio::time::timeout(STALL, notified).await.is_err() {
            bail!("{} of {messages} messages reached every subscriber", done);
        }
    }
    let wall = start.elapsed();
    let mut evicted = 0;
    for r in readers {
        evicted += r.await??;
    }
    for n in &nodes {
        n.gossip.shutdown().await?;
    }
    let mut g = seen.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
    let mut at = |q| quantile(&mut g.latencies, q).map_or(f64::NAN, micros);
    let (p50, p99) = (at(0.50), at(0.99));
    Ok(Measured {
        delivered_all: g.complete,
        rate: messages as f64 / wall.as_secs_f64(),
        p50,
        p99,
        duplicates: g.duplicates,
        evicted,
        wall,
    })
}

/// One subscriber's reader: records each first arrival, counts
/// duplicates, returns its queue's eviction count once it has every
/// message.
async fn read(
    mut sub: Subscription,
    s: usize,
    messages: usize,
    seen: Arc<Mutex<Seen>>,
    progress: Arc<tokio::sync::Notify>,
) -> anyhow::Result<u64> {
    let mut have = 0;
    while have < messages {
        let d = tokio::time::timeout(STALL, sub.recv())
            .await
            .context("a subscriber stalled")?
            .context("subscription closed")?;
        let at = Instant::now();
        let Some(seq) = d
            .payload
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b) as usize)
            .filter(|&i| i < messages)
        else {
            bail!("a delivery without a sequence number");
        };
        let mut g = seen.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        if !g.seen[s].insert(seq) {
            g.duplicates += 1;
            continue;
        }
        have += 1;
        let Some(published) = g.published[seq] else {
            bail!("message {seq} arrived before it was published");
        };
        g.latencies.push(at.duration_since(published));
        g.copies[seq] += 1;
        if usize::from(g.copies[seq]) == NODES - 1 {
            g.complete += 1;
            progress.notify_one();
        }
    }
    Ok(sub.stats().evicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G2/G3 over real connections: in a short run every signed message reaches all
    /// four subscribers exactly once and no subscriber queue evicted.
    #[test]
    fn a_short_run_delivers_everything_once() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let m = rt.block_on(measure(50)).unwrap();
        assert_eq!(m.delivered_all, 50);
        assert_eq!((m.duplicates, m.evicted), (0, 0));
        assert!(m.p50 > 0.0 && m.p50 <= m.p99, "{} {}", m.p50, m.p99);
    }
}
