//! Pubsub through the node and in one process, with the same publisher,
//! payloads, window and pre-signed signatures.
//!
//! The publisher is a libgossip runtime over its own libtransport endpoint
//! (`gossip live`'s `spawn_node_with`) signing from a
//! `Presigned` table. In process it publishes to a second runtime
//! (`inproc`); through the node (`Peer`) it dials relayd and joins the
//! topic with the node's peer id as bootstrap, and an application
//! connection to gossipd (`gossipd::client::Client`, read on its own
//! thread) receives. Either way at most `WINDOW` messages are published
//! and not yet delivered (`Progress`), the first `warm` messages are not
//! timed, and `Window` is the measured rest: messages delivered per
//! second, publish-to-receive latency, CPU time of every process involved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use gossipd::client::Client;
use libgossip::proto::TopicId;
use libgossip::runtime::from_transport;
use libtransport::Identity;

use super::daemons::{NodeUnderTest, cpu_ns};
use super::presign::{Go, Presigned, Table};
use crate::stats::{micros, quantile};
use crate::suites::gossip::live::{
    self, Arrival, Node, Progress, STALL, WINDOW, has_neighbour, overlay, seq_of, spawn_node,
    spawn_node_with,
};

/// The topic (gossipd names topics by string; the core by its hash).
pub(crate) const TOPIC: &str = "stagebench-node";

/// One measured window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// Messages timed (after the warm-up).
    pub(crate) messages: usize,
    /// From the first timed publish to the last delivery.
    pub(crate) wall: Duration,
    /// Messages delivered per second of `wall`.
    pub(crate) per_s: f64,
    /// Publish-to-receive latency, µs.
    pub(crate) p50_us: f64,
    /// Publish-to-receive latency, µs.
    pub(crate) p99_us: f64,
    /// Copies the subscriber had already seen.
    pub(crate) duplicates: u64,
    /// Signatures the publisher made live during the window (0: all
    /// pre-signed).
    pub(crate) live_signatures: u64,
    /// CPU time of each process during the window, ns (the caller's
    /// order).
    pub(crate) cpu_ns: Vec<u64>,
}

/// A copy of `id` (an endpoint owns its identity).
pub(crate) fn clone_identity(id: &Identity) -> Result<Identity> {
    Ok(Identity::from_pkcs8(&id.to_pkcs8()?)?)
}

/// Publishes messages `0..warm` untimed, then times `warm..end` until the
/// last is delivered; `cpu` reads the CPU time of the processes involved.
async fn windowed(
    progress: &Progress,
    publisher: &Node,
    topic: TopicId,
    (warm, end): (usize, usize),
    live: &AtomicU64,
    cpu: impl Fn() -> Result<Vec<u64>>,
) -> Result<Window> {
    progress.publish(&publisher.gossip, topic, 0..warm).await?;
    progress.wait_complete(warm).await?;
    progress.lock()?.latencies.clear();
    let (live0, cpu0) = (live.load(Ordering::Relaxed), cpu()?);
    let t = Instant::now();
    progress
        .publish(&publisher.gossip, topic, warm..end)
        .await?;
    progress.wait_complete(end).await?;
    let wall = t.elapsed();
    let cpu_ns = cpu()?
        .iter()
        .zip(&cpu0)
        .map(|(b, a)| b.saturating_sub(*a))
        .collect();
    let mut g = progress.lock()?;
    let mut at = |q| quantile(&mut g.latencies, q).map_or(f64::NAN, micros);
    let (p50_us, p99_us) = (at(0.50), at(0.99));
    Ok(Window {
        messages: end - warm,
        wall,
        per_s: (end - warm) as f64 / wall.as_secs_f64(),
        p50_us,
        p99_us,
        duplicates: g.duplicates,
        live_signatures: live.load(Ordering::Relaxed) - live0,
        cpu_ns,
    })
}

/// The publisher: a runtime signing from `signer`, which holds `id`'s key.
fn publisher(id: &Identity, signer: Presigned) -> Result<(Node, Arc<AtomicU64>)> {
    let live = signer.live();
    Ok((
        spawn_node_with(clone_identity(id)?, Box::new(signer))?,
        live,
    ))
}

/// Two runtimes in this process, publisher and subscriber, over
/// libtransport on loopback with in-process ML-DSA-65 verification:
/// `warm` untimed messages, then `window` timed. CPU: this process.
pub(crate) async fn inproc(
    id: &Identity,
    table: Arc<Table>,
    warm: usize,
    window: usize,
) -> Result<Window> {
    let topic = TopicId::from_name(TOPIC);
    let (publisher, live) = publisher(id, Presigned::new(id, table)?)?;
    let nodes = [publisher, spawn_node().await?];
    overlay(&nodes, topic).await?;
    let total = warm + window;
    let progress = Progress::new(total, 1);
    let sub = nodes[1]
        .gossip
        .subscribe_with_capacity(topic, WINDOW * 4)
        .await?;
    let reader = tokio::spawn(live::read(sub, 0, total, progress.clone()));
    let w = windowed(&progress, &nodes[0], topic, (warm, total), &live, || {
        Ok(vec![cpu_ns(std::process::id())?])
    })
    .await?;
    let evicted = reader.await??;
    ensure!(evicted == 0, "the in-process subscriber evicted {evicted}");
    for n in &nodes {
        n.gossip.shutdown().await?;
    }
    Ok(w)
}

/// The bench peer joined to the node's topic and the application
/// subscribed to it through gossipd.
pub(crate) struct Peer {
    /// The peer's runtime.
    pub(crate) node: Node,
    live: Arc<AtomicU64>,
    progress: Arc<Progress>,
    topic: TopicId,
    total: usize,
    app: Option<Client>,
    reader: Option<JoinHandle<Result<u64>>>,
    go: Go,
}

impl Peer {
    /// Subscribes an application connection to [`TOPIC`] on `node`,
    /// starts the peer (signing from `table`), dials relayd and joins the
    /// topic through the node; returns once both sides list each other
    /// in the topic. `total` messages will be published in all.
    pub(crate) fn join(
        rt: &tokio::runtime::Runtime,
        node: &NodeUnderTest,
        id: &Identity,
        table: Arc<Table>,
        total: usize,
    ) -> Result<Self> {
        let mut app = Client::connect(&node.sock("gossipd.sock"), STALL)
            .context("connecting to gossipd's application socket")?;
        let (node_id, up) = app.status()?;
        ensure!(up, "gossipd reports no relayd session");
        ensure!(
            node_id == node.peer_id.0,
            "gossipd and relayd report different peer ids"
        );
        app.join(TOPIC)?;
        app.subscribe(TOPIC)?;
        let topic = TopicId::from_name(TOPIC);
        let boot = from_transport(node.peer_id);
        let signed = table.len();
        let (signer, go) = Presigned::new(id, table)?.with_ahead(id, topic, signed..total)?;
        let (peer, live) = rt.block_on(async {
            let (peer, live) = publisher(id, signer)?;
            peer.link
                .connect(node.listen, boot)
                .await
                .context("dialling relayd")?;
            peer.gossip.join(topic, &[boot]).await?;
            has_neighbour(&peer.gossip, topic)
                .await
                .context("the bench peer")?;
            anyhow::Ok((peer, live))
        })?;
        let me = peer.gossip.id().0;
        let deadline = Instant::now() + STALL;
        while !app.peers(TOPIC)?.contains(&me) {
            if Instant::now() >= deadline {
                bail!("gossipd never listed the bench peer in {TOPIC} within {STALL:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            node: peer,
            live,
            progress: Progress::new(total, 1),
            topic,
            total,
            app: Some(app),
            reader: None,
            go,
        })
    }

    /// Starts the application's reader thread (once).
    fn start_reader(&mut self) {
        if let Some(app) = self.app.take() {
            let (progress, total) = (self.progress.clone(), self.total);
            self.reader = Some(std::thread::spawn(move || {
                app_reader(app, total, &progress)
            }));
        }
    }

    /// `r`'s error, with the reader's own error if it failed first.
    fn explain<T>(&mut self, r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            match self
                .reader
                .take_if(|h| h.is_finished())
                .map(JoinHandle::join)
            {
                Some(Ok(Err(re))) => e.context(format!("the application's reader: {re:#}")),
                _ => e,
            }
        })
    }

    /// The timed window: `warm` untimed messages, then messages up to
    /// `end`. CPU: relayd, verifyd, gossipd, this process.
    pub(crate) fn window(
        &mut self,
        rt: &tokio::runtime::Runtime,
        node: &NodeUnderTest,
        warm: usize,
        end: usize,
    ) -> Result<Window> {
        self.start_reader();
        let r = rt.block_on(windowed(
            &self.progress,
            &self.node,
            self.topic,
            (warm, end),
            &self.live,
            || node.cpu_ns(),
        ));
        self.explain(r)
    }

    /// Publishes messages `from..total` (beyond the table: signed by the
    /// ahead thread, which starts now) in
    /// `checkpoints` steps, calling `sample(published)` after each; the
    /// wall time until the last is delivered. Then waits for the reader:
    /// the deliveries the application was told it lost.
    pub(crate) fn fill(
        &mut self,
        rt: &tokio::runtime::Runtime,
        from: usize,
        checkpoints: usize,
        mut sample: impl FnMut(usize) -> Result<()>,
    ) -> Result<(Duration, u64)> {
        self.start_reader();
        self.go.go();
        let (total, topic) = (self.total, self.topic);
        let step = (total.saturating_sub(from) / checkpoints.max(1)).max(1);
        let t = Instant::now();
        let r = rt.block_on(async {
            let mut at = from;
            while at < total {
                let next = (at + step).min(total);
                self.progress
                    .publish(&self.node.gossip, topic, at..next)
                    .await?;
                sample(next)?;
                at = next;
            }
            self.progress.wait_complete(total).await
        });
        let wall = t.elapsed();
        self.explain(r)?;
        let lost = match self.reader.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => bail!("the application's reader panicked"),
            None => bail!("the application's reader was not running"),
        };
        Ok((wall, lost))
    }
}

/// The application: reads deliveries until it has all `total` messages;
/// returns the count gossipd said it dropped for this subscription.
fn app_reader(mut app: Client, total: usize, progress: &Progress) -> Result<u64> {
    let (mut have, mut lost) = (0, 0);
    while have < total {
        let d = app
            .next_delivery()
            .with_context(|| format!("after {have} of {total} deliveries"))?;
        let at = Instant::now();
        lost += d.dropped_before;
        let Some(seq) = seq_of(&d.payload, total) else {
            bail!("a delivery without a sequence number");
        };
        if progress.arrive(0, seq, at)? != Arrival::Duplicate {
            have += 1;
        }
    }
    Ok(lost)
}
