//! Overload from one peer: a flooder (in this test process: a libgossip
//! runtime over its own libtransport endpoint, joined to the topic like
//! any member) sends node 0 pubsub frames as fast as QUIC takes them —
//! every one a distinct message with a 1 KiB payload and a signature that
//! does not verify, so node 0 must decode and check each — while node 1,
//! a well-behaved full node, keeps sending node 0 DMs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libgossip::proto::{Body, Gossip as GossipMsg, Message, PeerId, TopicId};
use libgossip::runtime::{Gossip, IdentitySigner, Link, RuntimeConfig, TransportLink};
use libtransport::{Endpoint, Identity, Kind};
use tern_tests::{Daemon, Mesh, eventually, rss_kib};

/// DMs timed per phase.
const DMS: usize = 100;
/// The flood stops after this many frames or [`FLOOD_FOR`], whichever
/// comes first.
const FLOOD_MAX: u64 = 400_000;
const FLOOD_FOR: Duration = Duration::from_secs(20);

/// `send_dm` round trips from node 1's app to node 0 (receipt in hand),
/// and the calls that got no receipt.
fn dm_rtts(mesh: &Mesh, n: usize, phase: &str) -> (Vec<Duration>, Vec<String>) {
    let mut app = mesh.app(1);
    let to = mesh.id(0);
    let mut rtts = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for k in 0..n {
        let t = Instant::now();
        match app.send_dm(to, format!("{phase} dm {k}").as_bytes()) {
            Ok(_) => rtts.push(t.elapsed()),
            Err(e) => failed.push(format!("{phase} dm {k} after {:?}: {e}", t.elapsed())),
        }
    }
    (rtts, failed)
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn node_rss_mib(mesh: &Mesh) -> f64 {
    [Daemon::Relayd, Daemon::Gossipd, Daemon::Verifyd]
        .into_iter()
        .filter_map(|d| mesh.pid(0, d).and_then(rss_kib))
        .sum::<u64>() as f64
        / 1024.0
}

/// While the flood runs: node 0's three daemons stay up, every DM node 1
/// sends is answered with a receipt and reaches node 0's app, every flood
/// frame is either taken in by gossipd or counted as dropped (relayd's
/// transport queue or pump, gossipd's intake: nothing vanishes uncounted), and the summed
/// RSS stays under the daemons' configured budgets. The DM round trip
/// idle and under the flood (p50/p99), the flood rate, the drops and RSS
/// are printed; the 3× latency bar is a benchmark figure, not asserted
/// here. Capabilities: P4 (pubsub overflow never stalls the transport;
/// DMs keep reserved capacity), P5, R2 (bounded memory).
#[test]
fn a_pubsub_flood_is_dropped_and_counted_while_dms_flow() {
    let mesh = Mesh::start(2);
    let mut sink = mesh.app(0);
    sink.join("flood").unwrap();
    sink.subscribe("flood").unwrap();
    let mut dms0 = mesh.app(0);
    dms0.subscribe_dms().unwrap();
    let rss_idle = node_rss_mib(&mesh);
    let (mut idle, idle_failed) = dm_rtts(&mesh, DMS, "idle");
    assert!(idle_failed.is_empty(), "{idle_failed:?}");

    let (target, addr) = tern_config::parse_peer(&mesh.node(0).relayd_peer()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_rt = rt.enter();
    let id = Identity::generate().unwrap();
    let me = PeerId(id.peer_id().0);
    let signer = IdentitySigner::clone_of(&id).unwrap();
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        id,
        libtransport::Config::default(),
    )
    .unwrap();
    let topic = TopicId::from_name("flood");
    let (gossip, link) = rt.block_on(async {
        let link = Arc::new(TransportLink::new(ep.clone()).unwrap());
        link.connect(addr, PeerId(target)).await.unwrap();
        let gossip = Gossip::spawn(
            link.clone() as Arc<dyn Link>,
            Box::new(signer),
            RuntimeConfig::default(),
        );
        gossip.join(topic, &[PeerId(target)]).await.unwrap();
        (gossip, link)
    });
    eventually("node 0 has the flooder in its topic", || {
        sink.peers("flood").unwrap().contains(&me.0)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let ep = ep.clone();
        rt.spawn(async move {
            let to = libtransport::PeerId(target);
            let payload = Bytes::from(vec![0x5a; 1024]);
            let signature = Bytes::from(vec![0xa5; 3309]);
            let t0 = Instant::now();
            let mut n = 0u64;
            while !stop.load(Relaxed) && n < FLOOD_MAX && t0.elapsed() < FLOOD_FOR {
                n += 1;
                let msg = Message {
                    topic,
                    body: Body::Eager(GossipMsg {
                        origin: me,
                        // Far above anything published yet: all distinct.
                        seqno: 1_000_000 + n,
                        payload: payload.clone(),
                        signature: signature.clone(),
                        hops: 0,
                    }),
                };
                let frame = msg.to_bytes().unwrap();
                match ep.send(&to, Kind::PUBSUB, frame).await {
                    Ok(()) => sent.fetch_add(1, Relaxed),
                    Err(_) => failed.fetch_add(1, Relaxed),
                };
            }
            t0.elapsed()
        })
    };
    // Let the flood build up, then time DMs through it.
    std::thread::sleep(Duration::from_secs(2));
    let rss_mid = node_rss_mib(&mesh);
    let (mut flooded, flood_failed) = dm_rtts(&mesh, DMS, "flooded");
    let rss_flood = node_rss_mib(&mesh);
    let sent_during = sent.load(Relaxed);
    stop.store(true, Relaxed);
    let flood_time = rt.block_on(flood).unwrap();
    let sent = sent.load(Relaxed);

    assert!(
        flood_failed.is_empty(),
        "DMs without a receipt under the flood: {flood_failed:?}"
    );
    // Every DM (2 × DMS) reached node 0's app.
    let mut got = 0;
    while got < 2 * DMS {
        let dm = dms0.next_dm().unwrap();
        dms0.ack_dms(&[dm.id]).unwrap();
        got += 1;
    }
    for d in [Daemon::Relayd, Daemon::Gossipd, Daemon::Verifyd] {
        assert!(
            mesh.pid(0, d).and_then(rss_kib).is_some(),
            "{} died",
            d.name()
        );
    }
    // Quiescent: relayd's pump empty and gossipd's intake count still.
    let mut last = u64::MAX;
    eventually("node 0 drained what the flood left", || {
        let r = mesh.node(0).diag("relayd");
        let g = mesh.node(0).diag("gossipd");
        let now = g["link"]["inbound"].as_u64().unwrap_or(0);
        let still = now == last && r["pump"]["queued"] == 0;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        still
    });
    let r = mesh.node(0).diag("relayd");
    let g = mesh.node(0).diag("gossipd");
    let pump_dropped = r["pump"]["kinds"]["pubsub"]["dropped"]
        .as_u64()
        .unwrap_or(0);
    // The transport's own per-kind queue in relayd drops (and counts) what
    // relayd's pump has not taken yet.
    let transport_dropped: u64 = r["endpoint"]["kinds"]
        .as_array()
        .map(|ks| ks.iter().filter_map(|k| k["drops"].as_u64()).sum())
        .unwrap_or(0);
    let intake_full = g["intake"]["full"].as_u64().unwrap_or(0)
        + g["link"]["inbound_intake_full"].as_u64().unwrap_or(0);
    let inbound = g["link"]["inbound"].as_u64().unwrap_or(0);
    let (i50, i99) = (quantile(&mut idle, 0.5), quantile(&mut idle, 0.99));
    let (f50, f99) = (quantile(&mut flooded, 0.5), quantile(&mut flooded, 0.99));
    eprintln!(
        "flood: {sent} frames sent in {flood_time:?} ({:.0}/s; {sent_during} before the DMs \
         ended), {} send errors; node 0: relayd transport queue dropped {transport_dropped}, \
         pubsub pump dropped {pump_dropped}, gossipd \
         took in {inbound} records, intake full {intake_full}; DM round trip idle p50 {i50:?} \
         p99 {i99:?}, flooded p50 {f50:?} p99 {f99:?} (p99 ×{:.2}); RSS of relayd+gossipd+verifyd \
         idle {rss_idle:.1} MiB, flooded {rss_mid:.1} / {rss_flood:.1} MiB",
        sent as f64 / flood_time.as_secs_f64(),
        failed.load(Relaxed),
        f99.as_secs_f64() / i99.as_secs_f64(),
    );
    assert!(sent > 10_000, "the flood never got going: {sent} frames");
    // Every drop counted: each flood frame the transport took was either
    // taken in by gossipd or counted as dropped on the way (gossipd's
    // intake count also has node 1's DMs and membership, hence ≥).
    assert!(
        inbound + transport_dropped + pump_dropped + intake_full >= sent,
        "{sent} flood frames sent, {inbound} taken in, {transport_dropped} + {pump_dropped} + \
         {intake_full} counted as dropped: some went missing uncounted; relayd {r:#}; gossipd {g:#}"
    );
    // relayd's pump (32 MiB) and retention (32 MiB), gossipd's budgets and
    // verifyd's: far below this, which an unbounded queue of the flood
    // (≥ 4.3 KiB a frame) would pass.
    assert!(rss_flood < 512.0, "RSS {rss_flood:.1} MiB under the flood");
    drop(link);
    rt.block_on(async {
        let _ = gossip.shutdown().await;
    });
}
