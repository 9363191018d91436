//! Runtime task against an in-process fake [`Link`] whose sends are slow:
//! the live dispatch supervisor must add workers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use super::*;
use crate::proto::{SendOutcome, Verdict};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sends take `delay` and succeed; tracks the most sends in flight at once.
struct SlowLink {
    delay: Duration,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Link for SlowLink {
    fn send(&self, _to: PeerId, _frame: Bytes, _t: Duration) -> BoxFuture<'static, SendOutcome> {
        let (delay, now, peak) = (self.delay, self.now.clone(), self.peak.clone());
        Box::pin(async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            now.fetch_sub(1, Ordering::SeqCst);
            SendOutcome::Delivered { latency: delay }
        })
    }
    fn send_acked(
        &self,
        _to: PeerId,
        _frame: Bytes,
        _b: Duration,
    ) -> BoxFuture<'static, AckOutcome> {
        Box::pin(async { AckOutcome::Accepted })
    }
    fn next_event(&self) -> BoxFuture<'_, Option<LinkEvent>> {
        Box::pin(std::future::pending())
    }
    fn verify(&self, batch: Vec<VerifyItem>) -> BoxFuture<'static, Vec<Verdict>> {
        Box::pin(async move { vec![Verdict::Valid; batch.len()] })
    }
    fn close(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

struct KeySigner(u8);

impl crate::proto::Signer for KeySigner {
    fn public_key(&self) -> Bytes {
        Bytes::from(vec![self.0; 32])
    }
    fn sign(&mut self, _msg: &[u8]) -> Bytes {
        Bytes::from_static(b"sig")
    }
}

/// G13: with every send parked for 150 ms, the dispatch workers are busy
/// all the time; the supervisor, run live every 100 ms, raises the worker
/// target above its start of 1 and more sends run in parallel than one.
/// G4: every dispatched send's outcome is reported (none lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_adds_workers_when_sends_are_slow() {
    let peak = Arc::new(AtomicUsize::new(0));
    let link = Arc::new(SlowLink {
        delay: Duration::from_millis(150),
        now: Arc::new(AtomicUsize::new(0)),
        peak: peak.clone(),
    });
    let cfg = RuntimeConfig {
        initial_workers: 1,
        supervisor_interval: Duration::from_millis(100),
        ..RuntimeConfig::default()
    };
    let g = Gossip::spawn(link, Box::new(KeySigner(1)), cfg);
    let topic = TopicId::from_name("slow");
    g.join(topic, &[]).await.unwrap();
    for i in 0..6u8 {
        let p = PeerId::from_public_key(&[i + 10; 32]);
        g.connect(topic, p).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0u32;
    let s = loop {
        let _ = g.publish(topic, Bytes::from(format!("m{i}"))).await;
        i += 1;
        let s = g.snapshot().await.unwrap();
        if s.dispatch.workers_target > 1 && peak.load(Ordering::SeqCst) > 1 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline && i < 2000,
            "no scale-up: {:?}",
            s.dispatch
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(s.dispatch.supervisor_runs > 0);
    let d = &s.dispatch;
    assert_eq!(
        d.dispatched,
        d.delivered + d.timed_out + d.failed + d.in_flight as u64
    );
    g.shutdown().await.unwrap();
}
