//! Direct messages through the gossip runtime over real libtransport
//! connections on 127.0.0.1, with real ML-DSA-65 signatures and ML-KEM-768
//! sealing: loopback (D1), direct with receive-ACK and the relayed fallback
//! (D2), and bounded drop-oldest DM subscribers (D3).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod runtime_support;

use bytes::Bytes;
use libgossip::proto::{
    AttemptOutcome, AttemptRecord, DmConfig, DmDelivery, DmPath, PeerId, Verdict,
};
use libgossip::runtime::{
    AckOutcome, BoxFuture, DmSubscription, Gossip, Link, LinkEvent, RuntimeConfig, RuntimeSnapshot,
    TransportLink, VerifyItem, to_transport,
};
use libgossip::wire::{DmSeal, Frame, Limits};
use libtransport::Kind;
use runtime_support::{Peer, assert_drop_oldest, numbered, spawn_wrapped};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// Liveness bound for anything the nodes must do; wide on purpose (a
/// shared 2-core machine), not a performance figure.
const LIVENESS: Duration = Duration::from_secs(40);

async fn spawn_node() -> Peer {
    runtime_support::spawn_node(RuntimeConfig::default()).await
}

/// Connects every pair, then waits until every node has verified the KEM
/// key record of each other node (sent on link up), so DMs between them
/// can be verified and sealed.
async fn mesh(peers: &[Peer]) {
    for i in 0..peers.len() {
        for j in i + 1..peers.len() {
            peers[i]
                .link
                .connect(peers[j].addr, peers[j].gossip.id())
                .await
                .expect("connect");
        }
    }
    let want = (peers.len() - 1) as u64;
    for p in peers {
        wait_for(&p.gossip, "KEM key records from every peer", |s| {
            s.dm.kem_keys_accepted >= want
        })
        .await;
    }
}

/// A receipt's attempts without their timings (which vary from run to run).
fn tried(attempts: &[AttemptRecord]) -> Vec<(DmPath, PeerId, AttemptOutcome)> {
    attempts
        .iter()
        .map(|a| (a.path, a.via, a.outcome))
        .collect()
}

async fn wait_for(g: &Gossip, what: &str, ok: impl Fn(&RuntimeSnapshot) -> bool) {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let s = g.snapshot().await.expect("snapshot");
        if ok(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:?} {:?}",
            s.dm,
            s.dispatch
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recv(sub: &mut DmSubscription) -> DmDelivery {
    timeout(LIVENESS, sub.recv())
        .await
        .expect("DM within the liveness bound")
        .expect("subscription open")
}

async fn shutdown(peers: &[Peer]) {
    for p in peers {
        p.gossip.shutdown().await.expect("shutdown");
    }
}

/// D1: a DM to self never touches the network: the receipt says
/// `Loopback` with no attempts, and the DM comes back on `dms()` as the
/// same `DmDelivery` a remote DM is, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_to_self_is_loopback() {
    let peers = [spawn_node().await];
    let g = &peers[0].gossip;
    let mut dms = g.dms().await.expect("dms");
    let body = Bytes::from_static(b"note to self");
    let r = g.send_dm(g.id(), body.clone()).await.expect("send_dm");
    assert_eq!(r.path, Some(DmPath::Loopback));
    assert_eq!(r.to, g.id());
    assert!(r.attempts.is_empty(), "{r:?}");
    let d = recv(&mut dms).await;
    assert_eq!(
        (d.from, d.id, &d.payload, d.path),
        (g.id(), r.id, &body, DmPath::Loopback)
    );
    assert!(dms.try_recv().is_none(), "delivered twice");
    let s = g.snapshot().await.expect("snapshot");
    assert_eq!((s.dm.loopback, s.dispatch.dm_sends), (1, 0));
    shutdown(&peers).await;
}

/// D2 (direct): between two connected nodes a DM goes straight to the
/// recipient with a receive-ACK (one attempt, `Direct`, `Accepted`) and
/// arrives exactly once with its sender and path, each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_between_connected_nodes_is_direct_and_once() {
    let peers = [spawn_node().await, spawn_node().await];
    mesh(&peers).await;
    let (a, b) = (&peers[0].gossip, &peers[1].gossip);
    let mut at_a = a.dms().await.expect("dms");
    let mut at_b = b.dms().await.expect("dms");
    for (from, to, sub) in [(a, b, &mut at_b), (b, a, &mut at_a)] {
        let body = Bytes::from(format!("hello from {}", from.id()));
        let r = from.send_dm(to.id(), body.clone()).await.expect("send_dm");
        assert_eq!(r.path, Some(DmPath::Direct), "{r:?}");
        assert_eq!(
            tried(&r.attempts),
            vec![(DmPath::Direct, to.id(), AttemptOutcome::Accepted)]
        );
        assert!(r.attempts[0].elapsed > Duration::ZERO, "{r:?}");
        let d = recv(sub).await;
        assert_eq!(
            (d.from, d.id, &d.payload, d.path),
            (from.id(), r.id, &body, DmPath::Direct)
        );
    }
    // Exactly once: time for any retry or stray copy to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(at_a.try_recv().is_none() && at_b.try_recv().is_none());
    for g in [a, b] {
        let s = g.snapshot().await.expect("snapshot");
        assert_eq!((s.dm.delivered, s.dm.duplicates), (1, 0), "{:?}", s.dm);
        assert_eq!(s.dispatch.dm_accepted, 1, "{:?}", s.dispatch);
        // The peer's KEM key record and its DM, checked in the runtime's
        // verify batches like pubsub.
        assert_eq!(s.dm.verify_requested, 2, "{:?}", s.dm);
        assert!(s.dispatch.verify_items >= 2, "{:?}", s.dispatch);
    }
    shutdown(&peers).await;
}

/// A test [`Link`] around the node's TransportLink that can blackhole the
/// direct path to one peer, delay its plain (non-DM) sends, and records
/// every frame the node receives.
///
/// Blackholing: a DM-kind send to `blackhole` never answers (it waits out
/// its budget, then reports a timeout), while everything else, plain frames
/// to that peer included, passes through. A wrapper rather than a dropped
/// connection because the connection must stay up: the engine only tries
/// direct to a connected peer, and the key exchange and the forwarder's
/// links must stay intact. Recording shows what a forwarder saw. Delaying
/// plain sends holds back the node's KEM key record (sent on link up).
struct Spy {
    inner: Arc<TransportLink>,
    blackhole: Option<PeerId>,
    delay_plain: Duration,
    swallowed: AtomicU64,
    seen: Mutex<Vec<Bytes>>,
}

impl Spy {
    /// Wraps `inner`; keeps a handle on the wrapper in `slot` for the test.
    fn wrap(
        inner: Arc<TransportLink>,
        blackhole: Option<PeerId>,
        delay_plain: Duration,
        slot: &OnceLock<Arc<Spy>>,
    ) -> Arc<dyn Link> {
        let w = Arc::new(Spy {
            inner,
            blackhole,
            delay_plain,
            swallowed: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let _ = slot.set(w.clone());
        w
    }
}

impl Link for Spy {
    fn send(
        &self,
        to: PeerId,
        frame: Bytes,
        t: Duration,
    ) -> BoxFuture<'static, libgossip::proto::SendOutcome> {
        let (delay, send) = (self.delay_plain, self.inner.send(to, frame, t));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            send.await
        })
    }
    fn send_acked(&self, to: PeerId, frame: Bytes, b: Duration) -> BoxFuture<'static, AckOutcome> {
        if Some(to) != self.blackhole {
            return self.inner.send_acked(to, frame, b);
        }
        self.swallowed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(b).await;
            AckOutcome::TimedOut
        })
    }
    fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        self.inner.rtt(peer)
    }
    fn next_event(&self) -> BoxFuture<'_, Option<LinkEvent>> {
        Box::pin(async move {
            let e = self.inner.next_event().await;
            if let Some(LinkEvent::Frame { data, .. }) = &e {
                self.seen.lock().unwrap().push(data.clone());
            }
            e
        })
    }
    fn verify(&self, batch: Vec<VerifyItem>) -> BoxFuture<'static, Vec<Verdict>> {
        self.inner.verify(batch)
    }
    fn close(&self) -> BoxFuture<'static, ()> {
        self.inner.close()
    }
}

/// Sends `frame` as a DM-kind, receive-ACKed message from `via`'s endpoint
/// to `to`, as a hostile forwarder could.
async fn inject(via: &Peer, to: PeerId, frame: Bytes) {
    via.link
        .endpoint()
        .send_with_receive_ack(&to_transport(to), Kind::DM, frame, Duration::from_secs(10))
        .await
        .expect("injected copy admitted by the transport");
}

/// D2 (fallback): A's direct path to B is blackholed, so A's DM times out
/// there and goes sealed through C; the receipt says `Relayed` and lists
/// the failed direct attempt first. B gets it once, from A, as relayed. C,
/// the forwarder, saw only ciphertext: no frame it received contains the
/// body. Copies C could make are refused: the exact sealed frame replayed
/// to B is a duplicate (not delivered again), with its id changed it does
/// not open at B, re-addressed to A it does not open at A, and a plaintext
/// DM forged in A's name fails ML-DSA-65 verification at B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_direct_falls_back_to_relayed_sealed() {
    let b = spawn_node().await;
    let b_id = b.gossip.id();
    let (hole, tap) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let h = hole.clone();
    let cfg = RuntimeConfig::default();
    let a = spawn_wrapped(cfg.clone(), move |l| {
        Spy::wrap(l, Some(b_id), Duration::ZERO, &h)
    })
    .await;
    let t = tap.clone();
    let c = spawn_wrapped(cfg, move |l| Spy::wrap(l, None, Duration::ZERO, &t)).await;
    let peers = [a, b, c];
    mesh(&peers).await;
    let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
    let (a_id, c_id) = (a.gossip.id(), c.gossip.id());
    let mut at_a = a.gossip.dms().await.expect("dms");
    let mut at_b = b.gossip.dms().await.expect("dms");
    let mut at_c = c.gossip.dms().await.expect("dms");

    let body = Bytes::from_static(b"the secret body of a relayed DM, 0123456789");
    let r = a.gossip.send_dm(b_id, body.clone()).await.expect("send_dm");
    assert_eq!(r.path, Some(DmPath::Relayed), "{r:?}");
    let attempts = tried(&r.attempts);
    assert_eq!(
        attempts.first(),
        Some(&(DmPath::Direct, b_id, AttemptOutcome::TimedOut)),
        "{r:?}"
    );
    assert!(
        attempts.contains(&(DmPath::Relayed, c_id, AttemptOutcome::Accepted)),
        "{r:?}"
    );
    // The first direct try, and any retry (a timeout reads as slow, so it
    // is tried again alongside the relayed copy) made before the relayed
    // copy was accepted.
    let swallowed = hole.get().unwrap().swallowed.load(Ordering::SeqCst);
    assert!((1..=1 + u64::from(DmConfig::default().direct_retries)).contains(&swallowed));
    let d = recv(&mut at_b).await;
    assert_eq!(
        (d.from, d.id, &d.payload, d.path),
        (a_id, r.id, &body, DmPath::Relayed)
    );

    // What the forwarder received: the sealed envelope, and nowhere the body.
    let seen = tap.get().unwrap().seen.lock().unwrap().clone();
    assert!(
        !seen
            .iter()
            .any(|f| f.windows(body.len()).any(|w| w == &body[..])),
        "plaintext reached the forwarder"
    );
    let sealed = seen
        .iter()
        .find_map(|f| match Frame::parse(f, &Limits::default()) {
            Ok(Frame::Dm(env)) if env.id == r.id.0 => Some(env),
            _ => None,
        })
        .expect("the forwarder received the DM");
    assert_eq!(
        (sealed.from, sealed.to, sealed.seal, sealed.signature.len()),
        (a_id, b_id, DmSeal::Sealed, 0)
    );

    let before_b = b.gossip.snapshot().await.expect("snapshot").dm;
    let before_a = a.gossip.snapshot().await.expect("snapshot").dm;
    // Replayed verbatim (one hop less) to the recipient.
    let mut replay = sealed.clone();
    replay.ttl = replay.ttl.saturating_sub(1);
    inject(c, b_id, replay.to_bytes().unwrap()).await;
    // Under another id: the AEAD binds the id.
    let mut other_id = sealed.clone();
    other_id.id[0] ^= 1;
    inject(c, b_id, other_id.to_bytes().unwrap()).await;
    // Re-addressed to another node: sealed to B's key, it cannot open.
    let mut readdressed = sealed.clone();
    readdressed.to = a_id;
    inject(c, a_id, readdressed.to_bytes().unwrap()).await;
    // Opened or not, a forwarder cannot sign as A: a plaintext DM "from A"
    // with a signature of its own making fails verification at B.
    let forged = libgossip::wire::DmEnvelope {
        id: [7; 16],
        ttl: 0,
        seal: DmSeal::Signed,
        body: body.clone(),
        signature: Bytes::from(vec![1u8; 3309]),
        ..sealed.clone()
    };
    inject(c, b_id, forged.to_bytes().unwrap()).await;
    wait_for(&b.gossip, "replay and re-id refused at B", |s| {
        s.dm.duplicates > before_b.duplicates
            && s.dm.open_failed > before_b.open_failed
            && s.dm.invalid_signature > before_b.invalid_signature
    })
    .await;
    wait_for(&a.gossip, "re-addressed copy refused at A", |s| {
        s.dm.open_failed > before_a.open_failed
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(at_b.try_recv().is_none(), "a copy was delivered again");
    assert!(
        at_a.try_recv().is_none(),
        "a re-addressed copy was delivered"
    );
    assert!(at_c.try_recv().is_none(), "the forwarder got a DM");
    let s = b.gossip.snapshot().await.expect("snapshot");
    assert_eq!(s.dm.delivered, 1, "{:?}", s.dm);
    let s = c.gossip.snapshot().await.expect("snapshot");
    assert!(s.dm.forwarded >= 1, "{:?}", s.dm);
    shutdown(&peers).await;
}

/// D3: a DM subscriber that never reads keeps only its newest `capacity`
/// DMs and counts the evicted ones, while a second subscriber on the same
/// node receives every DM; the DM stream stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_dm_subscriber_loses_only_its_own_oldest() {
    const N: usize = 12;
    const CAP: usize = 4;
    let peers = [spawn_node().await, spawn_node().await];
    mesh(&peers).await;
    let (a, b) = (&peers[0].gossip, &peers[1].gossip);
    let mut lazy = b.dms_with_capacity(CAP).await.expect("dms");
    let mut reader = b.dms().await.expect("dms");
    let sent = numbered(N);
    for body in &sent {
        let r = a.send_dm(b.id(), body.clone()).await.expect("send_dm");
        assert_eq!(r.path, Some(DmPath::Direct));
    }
    let mut arrival = Vec::new();
    while arrival.len() < N {
        arrival.push(recv(&mut reader).await.payload);
    }
    let s = b.snapshot().await.expect("snapshot");
    let stats = |id| s.dm_subscribers.iter().find(|x| x.id == id).copied();
    let st = stats(lazy.stats().id).expect("lazy listed");
    assert_eq!(stats(reader.stats().id).expect("listed").evicted, 0);
    let mut kept = Vec::new();
    while let Some(d) = lazy.try_recv() {
        kept.push(d.payload);
    }
    assert_drop_oldest(
        &sent,
        &arrival,
        &kept,
        CAP,
        (st.queued, st.evicted, st.delivered),
    );
    // Still open: one more DM reaches the lazy subscriber too.
    a.send_dm(b.id(), Bytes::from_static(b"after"))
        .await
        .expect("send_dm");
    assert_eq!(recv(&mut lazy).await.payload, Bytes::from_static(b"after"));
    shutdown(&peers).await;
}

/// D2 (direct, key race): a DM sent the moment the link is up overtakes
/// the sender's KEM key record (held back here by 1.5 s), so the recipient
/// cannot verify it yet; it is held, not lost, and delivered once the
/// record is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_overtaking_the_senders_key_is_held_then_delivered() {
    let slot = Arc::new(OnceLock::new());
    let s2 = slot.clone();
    let a = spawn_wrapped(RuntimeConfig::default(), move |l| {
        Spy::wrap(l, None, Duration::from_millis(1500), &s2)
    })
    .await;
    let b = spawn_node().await;
    let mut at_b = b.gossip.dms().await.expect("dms");
    a.link
        .connect(b.addr, b.gossip.id())
        .await
        .expect("connect");
    let body = Bytes::from_static(b"too early");
    let r = a
        .gossip
        .send_dm(b.gossip.id(), body.clone())
        .await
        .expect("send_dm");
    assert_eq!(r.path, Some(DmPath::Direct), "{r:?}");
    let d = recv(&mut at_b).await;
    assert_eq!((d.from, &d.payload), (a.gossip.id(), &body));
    let s = b.gossip.snapshot().await.expect("snapshot");
    assert_eq!(s.dispatch.dm_held, 1, "{:?}", s.dispatch);
    assert_eq!(s.dm.delivered, 1, "{:?}", s.dm);
    shutdown(&[a, b]).await;
}
