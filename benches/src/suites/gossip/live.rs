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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use libgossip::proto::{Signer, TopicId};
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

/// One runtime over its own libtransport endpoint on loopback.
pub(crate) struct Node {
    /// The runtime.
    pub(crate) gossip: Gossip,
    /// Its link (to dial other endpoints).
    pub(crate) link: Arc<TransportLink>,
    /// The endpoint's UDP address.
    pub(crate) addr: SocketAddr,
}

/// What the subscribers saw: per message, how many subscribers have it,
/// and each arrival's latency.
pub(crate) struct Seen {
    subscribers: usize,
    published: Vec<Option<Instant>>,
    copies: Vec<u8>,
    complete: usize,
    /// Publish-to-receive latency of every first arrival, in arrival order.
    pub(crate) latencies: Vec<Duration>,
    /// Copies a subscriber had already seen.
    pub(crate) duplicates: u64,
    seen: Vec<Vec<bool>>,
}

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// A copy this subscriber already had.
    Duplicate,
    /// A first copy; others still lack the message.
    First,
    /// The first copy that completed the message at every subscriber.
    Complete,
}

impl Seen {
    /// Nothing seen yet of `messages` messages by `subscribers` subscribers.
    pub(crate) fn new(messages: usize, subscribers: usize) -> Self {
        Self {
            subscribers,
            published: vec![None; messages],
            copies: vec![0; messages],
            complete: 0,
            latencies: Vec::new(),
            duplicates: 0,
            seen: vec![vec![false; messages]; subscribers],
        }
    }

    /// Messages every subscriber has.
    pub(crate) fn complete(&self) -> usize {
        self.complete
    }

    /// Subscriber `s` received message `seq` at `at`.
    pub(crate) fn arrive(&mut self, s: usize, seq: usize, at: Instant) -> anyhow::Result<Arrival> {
        let Some(have) = self.seen.get_mut(s).and_then(|v| v.get_mut(seq)) else {
            bail!("subscriber {s} got message {seq}, beyond the run");
        };
        if std::mem::replace(have, true) {
            self.duplicates += 1;
            return Ok(Arrival::Duplicate);
        }
        let Some(published) = self.published[seq] else {
            bail!("message {seq} arrived before it was published");
        };
        self.latencies.push(at.duration_since(published));
        self.copies[seq] += 1;
        if usize::from(self.copies[seq]) == self.subscribers {
            self.complete += 1;
            return Ok(Arrival::Complete);
        }
        Ok(Arrival::First)
    }
}

/// [`Seen`] shared between the publisher and the subscribers' readers,
/// with the wake-up a completed message sends the publisher.
pub(crate) struct Progress {
    seen: Mutex<Seen>,
    notify: tokio::sync::Notify,
}

impl Progress {
    /// Tracking `messages` messages to `subscribers` subscribers.
    pub(crate) fn new(messages: usize, subscribers: usize) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Seen::new(messages, subscribers)),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// The tracker, locked.
    pub(crate) fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Seen>> {
        self.seen
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))
    }

    /// Records an arrival (from any thread) and wakes the publisher when
    /// it completed a message.
    pub(crate) fn arrive(&self, s: usize, seq: usize, at: Instant) -> anyhow::Result<Arrival> {
        let a = self.lock()?.arrive(s, seq, at)?;
        if a == Arrival::Complete {
            self.notify.notify_one();
        }
        Ok(a)
    }

    /// Waits until `n` messages are complete; an error after [`STALL`]
    /// without a completion.
    pub(crate) async fn wait_complete(&self, n: usize) -> anyhow::Result<()> {
        loop {
            let notified = self.notify.notified();
            let done = self.lock()?.complete;
            if done >= n {
                return Ok(());
            }
            if tokio::time::timeout(STALL, notified).await.is_err() {
                bail!("{done} of {n} messages reached every subscriber (stalled {STALL:?})");
            }
        }
    }

    /// Publishes messages `range` (payloads [`payload`]) from `gossip`,
    /// each once fewer than [`WINDOW`] earlier ones are incomplete.
    pub(crate) async fn publish(
        &self,
        gossip: &Gossip,
        topic: TopicId,
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<()> {
        for i in range {
            self.wait_complete((i + 1).saturating_sub(WINDOW)).await?;
            self.lock()?.published[i] = Some(Instant::now());
            gossip.publish(topic, payload(i)).await?;
        }
        Ok(())
    }
}

/// The payload of message `i`: [`PAYLOAD`] bytes, `i` in the first eight.
pub(crate) fn payload(i: usize) -> Bytes {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(p)
}

/// The message number in a payload made by [`payload`], if below `messages`.
pub(crate) fn seq_of(payload: &[u8], messages: usize) -> Option<usize> {
    payload
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| u64::from_le_bytes(b) as usize)
        .filter(|&i| i < messages)
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

/// A runtime with a fresh identity.
pub(crate) async fn spawn_node() -> anyhow::Result<Node> {
    let id = Identity::generate()?;
    let signer = IdentitySigner::clone_of(&id)?;
    spawn_node_with(id, Box::new(signer))
}

/// A runtime whose endpoint proves `id` and whose core signs with `signer`
/// (which must hold the same key), on an ephemeral loopback port.
pub(crate) fn spawn_node_with(id: Identity, signer: Box<dyn Signer>) -> anyhow::Result<Node> {
    let ep = Endpoint::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        id,
        libtransport::Config::default(),
    )?;
    let addr = ep.local_addr();
    let link = Arc::new(TransportLink::new(ep)?);
    let gossip = Gossip::spawn(link.clone(), signer, RuntimeConfig::default());
    Ok(Node { gossip, link, addr })
}

/// Fully connects `nodes` and joins them to `topic` through node 0;
/// returns once every node has an active-view neighbour.
pub(crate) async fn overlay(nodes: &[Node], topic: TopicId) -> anyhow::Result<()> {
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate().skip(i + 1) {
            a.link
                .connect(b.addr, b.gossip.id())
                .await
                .with_context(|| format!("connect node {i} to node {j}"))?;
        }
    }
    let Some(boot) = nodes.first().map(|n| n.gossip.id()) else {
        return Ok(());
    };
    for (i, n) in nodes.iter().enumerate() {
        let bootstrap = if i == 0 { vec![] } else { vec![boot] };
        n.gossip.join(topic, &bootstrap).await?;
    }
    for (i, n) in nodes.iter().enumerate() {
        has_neighbour(&n.gossip, topic)
            .await
            .with_context(|| format!("node {i}"))?;
    }
    Ok(())
}

/// Waits (at most [`STALL`]) until `gossip` has a neighbour in `topic`.
pub(crate) async fn has_neighbour(gossip: &Gossip, topic: TopicId) -> anyhow::Result<()> {
    let deadline = Instant::now() + STALL;
    while gossip.peers(topic).await?.is_empty() {
        if Instant::now() >= deadline {
            bail!("no neighbour in the topic within {STALL:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn measure(messages: usize) -> anyhow::Result<Measured> {
    let topic = TopicId::from_name("stagebench-live");
    let mut nodes = Vec::with_capacity(NODES);
    for _ in 0..NODES {
        nodes.push(spawn_node().await?);
    }
    overlay(&nodes, topic).await?;
    let subscribers = NODES - 1;
    let progress = Progress::new(messages, subscribers);
    let mut readers = Vec::new();
    for (s, n) in nodes[1..].iter().enumerate() {
        // Room for the whole window: a subscriber that keeps up never
        // evicts, so an eviction in the figures means it did not.
        let sub = n.gossip.subscribe_with_capacity(topic, WINDOW * 4).await?;
        readers.push(tokio::spawn(read(sub, s, messages, progress.clone())));
    }

    let start = Instant::now();
    progress
        .publish(&nodes[0].gossip, topic, 0..messages)
        .await?;
    progress.wait_complete(messages).await?;
    let wall = start.elapsed();
    let mut evicted = 0;
    for r in readers {
        evicted += r.await??;
    }
    for n in &nodes {
        n.gossip.shutdown().await?;
    }
    let mut g = progress.lock()?;
    let mut at = |q| quantile(&mut g.latencies, q).map_or(f64::NAN, micros);
    let (p50, p99) = (at(0.50), at(0.99));
    Ok(Measured {
        delivered_all: g.complete(),
        rate: messages as f64 / wall.as_secs_f64(),
        p50,
        p99,
        duplicates: g.duplicates,
        evicted,
        wall,
    })
}

/// One subscriber's reader: records each arrival, returns its queue's
/// eviction count once it has every message.
pub(crate) async fn read(
    mut sub: Subscription,
    s: usize,
    messages: usize,
    progress: Arc<Progress>,
) -> anyhow::Result<u64> {
    let mut have = 0;
    while have < messages {
        let d = tokio::time::timeout(STALL, sub.recv())
            .await
            .context("a subscriber stalled")?
            .context("subscription closed")?;
        let at = Instant::now();
        let Some(seq) = seq_of(&d.payload, messages) else {
            bail!("a delivery without a sequence number");
        };
        if progress.arrive(s, seq, at)? != Arrival::Duplicate {
            have += 1;
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
