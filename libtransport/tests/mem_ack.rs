//! Receive-ACKed delivery on the in-process network with impairments and
//! virtual time: a lossy long path, a receiver killed and restarted during a
//! send, and a one-way blackhole on a live connection (the stuck detector).
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod mem_support;

use std::collections::BTreeSet;
use std::time::Duration;

use libtransport::io::mem::LinkConfig;
use libtransport::proto::ack::{AckError, ReconnectReason};
use libtransport::{Bytes, Config, Event, Identity, Kind, KindConfig};
use mem_support::*;

/// R1, R3, R5: 300 ms RTT with 5 % loss each way; 200 ACKed
/// sends (ten waves of 20 at once) each end with exactly one outcome, (nearly) all `Accepted`, and no
/// message is delivered twice — retries are answered by replay.
#[tokio::test(start_paused = true)]
async fn lossy_long_path_one_outcome_each_no_double_delivery() {
    const N: u32 = 200;
    const WAVE: u32 = 20;
    let net = network(31);
    let link = LinkConfig {
        loss: 0.05,
        ..LinkConfig::with_delay(Duration::from_millis(150))
    };
    let (a_at, b_at) = linked_hosts(&net, link);
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    a.connect(b_at, b.peer_id()).await.unwrap();
    let bp = b.peer_id();
    let mut ok = BTreeSet::new();
    let mut failed = Vec::new();
    for wave in 0..N / WAVE {
        let mut tasks = Vec::new();
        for i in wave * WAVE..(wave + 1) * WAVE {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let r = a
                    .send_with_receive_ack(
                        &bp,
                        Kind::DM,
                        Bytes::from(i.to_be_bytes().to_vec()),
                        Duration::from_secs(20),
                    )
                    .await;
                (i, r)
            }));
        }
        for t in tasks {
            let (i, r) = t.await.unwrap();
            match r {
                Ok(_) => {
                    ok.insert(i);
                }
                Err(e) => failed.push((i, e)),
            }
        }
    }
    assert!(failed.len() <= 2, "too many failures: {failed:?}");
    // Let any stray copy arrive before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut seen = BTreeSet::new();
    while let Some(m) = dm.try_recv() {
        let i = u32::from_be_bytes(m.data[..].try_into().unwrap());
        assert!(seen.insert(i), "message {i} delivered twice");
    }
    assert!(ok.is_subset(&seen), "an Accepted message is missing");
    let d = b.diagnostics().ack.snapshot.receiver;
    assert_eq!(d.admitted, seen.len() as u64);
    let s = a.diagnostics().ack.snapshot.sender;
    assert!(net.stats().dropped_loss > 0, "the link did lose packets");
    assert_eq!(s.registered, u64::from(N));
    assert_eq!(
        s.accepted + s.rejected + s.timed_out + s.closed + s.failed,
        u64::from(N)
    );
}

/// R5: the receiver crashes mid-send and restarts on the same address with
/// the same key; the send re-issues on the new connection and returns `Ok`
/// within 500 ms of it, and the message is delivered once.
#[tokio::test(start_paused = true)]
async fn receiver_restart_mid_send_reissues_on_new_connection() {
    let net = network(32);
    let (a_at, b_at) = linked_hosts(&net, LinkConfig::with_delay(Duration::from_millis(20)));
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b_id = Identity::generate().unwrap();
    let pkcs8 = b_id.to_pkcs8().unwrap();
    let b1 = endpoint(&net, b_at, b_id, Config::default());
    a.connect(b_at, b1.peer_id()).await.unwrap();
    let bp = b1.peer_id();

    // Crash: nothing b1 says reaches a, then its socket goes away.
    net.with(|n| n.set_blackhole(b_at, a_at, true));
    b1.abort();
    b1.closed().await;
    drop(b1);
    net.with(|n| n.set_blackhole(b_at, a_at, false));

    let a2 = a.clone();
    let send = tokio::spawn(async move {
        a2.send_with_receive_ack(
            &bp,
            Kind::DM,
            Bytes::from_static(b"survives"),
            Duration::from_secs(20),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!send.is_finished(), "no receiver yet, the send waits");

    let b2 = endpoint(
        &net,
        b_at,
        Identity::from_pkcs8(&pkcs8).unwrap(),
        Config::default(),
    );
    let mut dm = b2.register(Kind::DM, KindConfig::default()).unwrap();
    b2.connect(a_at, a.peer_id()).await.unwrap();
    let connected = tokio::time::Instant::now();
    let d = send.await.unwrap().unwrap();
    let took = connected.elapsed();
    assert!(
        took <= Duration::from_millis(500),
        "took {took:?} after the new connection"
    );
    assert!(d.attempts >= 2, "{d:?}");
    assert_eq!(dm.recv().await.unwrap().data, "survives");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(dm.try_recv().is_none(), "delivered once");
}

/// R6: a one-way blackhole (b → a) on a live connection: consecutive ACK
/// timeouts make the stuck detector close it (counted, `Event::Stuck`), and
/// once the path heals the next send reconnects and is accepted.
#[tokio::test(start_paused = true)]
async fn one_way_blackhole_forces_reconnect() {
    let net = network(33);
    let (a_at, b_at) = linked_hosts(&net, LinkConfig::with_delay(Duration::from_millis(20)));
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    let first = a.connect(b_at, b.peer_id()).await.unwrap();
    let bp = b.peer_id();
    a.send_with_receive_ack(
        &bp,
        Kind::DM,
        Bytes::from_static(b"0"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(dm.recv().await.unwrap().data, "0");

    net.with(|n| n.set_blackhole(b_at, a_at, true));
    let mut timeouts = 0;
    for i in 0..4u8 {
        let r = a
            .send_with_receive_ack(&bp, Kind::DM, Bytes::from(vec![i]), Duration::from_secs(1))
            .await;
        match r {
            Err(AckError::TimedOut { .. } | AckError::ConnectionLost { .. }) => timeouts += 1,
            other => panic!("send {i} over the blackhole: {other:?}"),
        }
        if a.diagnostics().ack.snapshot.sender.stuck_reconnects > 0 {
            break;
        }
    }
    assert!(timeouts >= 2, "the threshold needs several timeouts");
    assert_eq!(a.diagnostics().ack.snapshot.sender.stuck_reconnects, 1);
    let mut stuck = None;
    while let Some(e) = a.try_next_event() {
        if let Event::Stuck(r) = e {
            stuck = Some(r);
        }
    }
    let r = stuck.expect("Event::Stuck reported");
    assert_eq!(r.generation, first.generation());
    assert_eq!(r.peer, bp);
    assert!(matches!(
        r.reason,
        ReconnectReason::AckTimeouts { consecutive: 3 }
    ));
    assert!(
        first.close_reason().is_some(),
        "the stuck connection was closed"
    );

    net.with(|n| n.set_blackhole(b_at, a_at, false));
    let d = a
        .send_with_receive_ack(
            &bp,
            Kind::DM,
            Bytes::from_static(b"after"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_ne!(
        d.generation,
        first.generation(),
        "answered on a new connection"
    );
    // Copies sent into the blackhole may have been admitted; "after" is
    // delivered exactly once.
    let mut got = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some(m) = dm.try_recv() {
        got.push(m.data);
    }
    assert_eq!(
        got.iter().filter(|m| m[..] == b"after"[..]).count(),
        1,
        "{got:?}"
    );
}

/// R3: the receiver keeps a dedupe entry for twice its sender's remaining
/// budget, not one fixed TTL. With a 40-entry share per peer, 40 sends
/// with a 2 s budget fill it (the 41st is `Backpressured`, never a
/// duplicate); 5 s later their entries are gone and 40 more are accepted.
/// Sends with the 30 s maximum budget still hold their entries 5 s later.
#[tokio::test(start_paused = true)]
async fn dedupe_entries_live_as_long_as_their_senders_may_retry() {
    use libtransport::proto::ack::{AckConfig, Outcome, ReceiverConfig};
    let net = network(37);
    let (a_at, b_at) = linked_hosts(&net, LinkConfig::with_delay(Duration::from_millis(5)));
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    b.set_ack_config(AckConfig {
        receiver: ReceiverConfig {
            dedupe_per_peer: 40,
            ..ReceiverConfig::default()
        },
        ..AckConfig::default()
    });
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    a.connect(b_at, b.peer_id()).await.unwrap();
    let bp = b.peer_id();
    let send = |i: u32, budget: Duration| {
        let a = a.clone();
        async move {
            a.send_with_receive_ack(&bp, Kind::DM, Bytes::from(i.to_be_bytes().to_vec()), budget)
                .await
        }
    };
    let short = Duration::from_secs(2);
    for i in 0..40 {
        send(i, short).await.unwrap();
        dm.recv().await.unwrap();
    }
    let full = send(40, short).await.unwrap_err();
    assert!(
        matches!(
            full,
            AckError::Rejected {
                outcome: Outcome::Backpressured,
                ..
            }
        ),
        "{full:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 100..140 {
        send(i, short).await.unwrap();
        dm.recv().await.unwrap();
    }
    // The same share with long budgets: still held 5 s later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let long = Duration::from_secs(30);
    for i in 200..240 {
        send(i, long).await.unwrap();
        dm.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(matches!(
        send(240, long).await,
        Err(AckError::Rejected {
            outcome: Outcome::Backpressured,
            ..
        })
    ));
    assert!(dm.try_recv().is_none(), "nothing delivered twice or extra");
}
