//! Keepalive against a NAT binding timeout, on the mem backend with virtual
//! time (capabilities T2, T7): a peer behind a NAT whose bindings expire
//! after 30 s of outbound silence stays reachable through 30 idle minutes
//! with the default keepalive, and a message from the far side arrives on
//! the first try. A control run with keepalives slower than the NAT shows
//! the same message being dropped, so the test can fail. A NAT rebinding
//! (new public port) migrates the connection instead of breaking it.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod mem_support;

use std::time::Duration;

use libtransport::io::mem::{MemNetwork, NatConfig, NatId};
use libtransport::{Bytes, Config, Endpoint, Identity, Kind, KindConfig, KindReceiver};
use mem_support::*;

const NAT_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(30 * 60);

struct Setup {
    net: MemNetwork,
    nat: NatId,
    inside: Endpoint,
    server: Endpoint,
    inside_rx: KindReceiver,
}

impl Setup {
    /// The far side speaks first: "still there?" from `server` to `inside`.
    async fn ask_still_there(&self) {
        self.server
            .send(
                &self.inside.peer_id(),
                Kind::DM,
                Bytes::from_static(b"still there?"),
            )
            .await
            .unwrap();
    }
}

/// `inside` sits behind a NAT and dials `server` (public), so only the NAT
/// binding lets the server reach it.
async fn setup(cfg: Config) -> Setup {
    let net = network(21);
    let nat = net.add_nat(NatConfig::new("198.51.100.7".parse().unwrap(), NAT_TIMEOUT));
    let link = libtransport::io::mem::LinkConfig::with_delay(Duration::from_millis(20));
    let (in_at, srv_at) = (addr("192.168.1.10:4000"), addr("203.0.113.5:443"));
    net.with(|n| n.set_link_both(in_at, srv_at, link));
    let inside = endpoint_on(
        net.bind_behind(in_at, nat).unwrap(),
        Identity::generate().unwrap(),
        cfg.clone(),
    );
    let server = endpoint(&net, srv_at, Identity::generate().unwrap(), cfg);
    let inside_rx = inside.register(Kind::DM, KindConfig::default()).unwrap();
    inside.connect(srv_at, server.peer_id()).await.unwrap();
    Setup {
        net,
        nat,
        inside,
        server,
        inside_rx,
    }
}

#[tokio::test(start_paused = true)]
async fn default_keepalive_survives_thirty_idle_minutes_behind_a_30s_nat() {
    let mut s = setup(Config::default()).await;
    let conn = s.server.connection(&s.inside.peer_id()).unwrap();
    let generation = conn.generation();
    let lost_before = conn.stats().lost_packets;

    tokio::time::sleep(IDLE).await;

    // The far side speaks first: this needs the NAT binding to be alive.
    let sent_at = tokio::time::Instant::now();
    s.ask_still_there().await;
    let m = tokio::time::timeout(Duration::from_secs(1), s.inside_rx.recv()).await;
    let m = m
        .expect("the message must arrive without waiting for a retransmission")
        .unwrap();
    assert_eq!(m.data, "still there?");
    // One-way delay is 20 ms: arrival well inside one PTO means first try.
    assert!(
        sent_at.elapsed() < Duration::from_millis(100),
        "took {:?}",
        sent_at.elapsed()
    );
    assert_eq!(
        conn.stats().lost_packets,
        lost_before,
        "nothing was lost on the way"
    );
    // Same connection all along: no reconnect, no NAT drop.
    assert_eq!(
        s.server
            .connection(&s.inside.peer_id())
            .unwrap()
            .generation(),
        generation
    );
    let nat = s.net.with(|n| n.nat_stats(s.nat)).unwrap();
    assert_eq!(nat.dropped_expired, 0, "{nat:?}");
    let mut t = Tally::default();
    drain_events(&s.server, &mut t);
    assert!(t.closed.is_empty() && t.replaced.is_empty(), "{t:?}");
}

/// The control: keepalives every 25 minutes (idle timeout 1 h so the
/// connection itself stays open). The binding expires 30 s after each
/// keepalive, so the same message 30 minutes in is dropped by the NAT.
#[tokio::test(start_paused = true)]
async fn control_keepalive_slower_than_the_nat_loses_the_message() {
    let cfg = Config::default()
        .keepalive_interval(Duration::from_secs(25 * 60))
        .idle_timeout(Duration::from_secs(60 * 60));
    let mut s = setup(cfg).await;
    tokio::time::sleep(IDLE).await;
    s.ask_still_there().await;
    let m = tokio::time::timeout(Duration::from_secs(1), s.inside_rx.recv()).await;
    assert!(
        m.is_err(),
        "without a fast enough keepalive the NAT must drop it"
    );
    let nat = s.net.with(|n| n.nat_stats(s.nat)).unwrap();
    assert!(nat.dropped_expired > 0, "{nat:?}");
}

/// The NAT reboots mid-connection and maps the inside host to a new public
/// port (a NAT rebinding). The next datagram from inside arrives from the new
/// address; QUIC validates the new path and both directions keep working on
/// the same connection — no reconnect, no new generation.
#[tokio::test(start_paused = true)]
async fn nat_rebinding_migrates_the_connection() {
    let mut s = setup(Config::default()).await;
    let mut server_rx = s.server.register(Kind::DM, KindConfig::default()).unwrap();
    let in_at = addr("192.168.1.10:4000");
    let before = s.net.with(|n| n.public_addr(in_at)).unwrap();
    s.net.with(|n| n.rebind_nat(in_at)).unwrap();
    let after = s.net.with(|n| n.public_addr(in_at)).unwrap();
    assert_ne!(before, after);
    let generation = s
        .server
        .connection(&s.inside.peer_id())
        .unwrap()
        .generation();

    let server_id = s.server.peer_id();
    s.inside
        .send(&server_id, Kind::DM, Bytes::from_static(b"moved"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), server_rx.recv()).await;
    assert_eq!(m.unwrap().unwrap().data, "moved");
    let inside_id = s.inside.peer_id();
    s.server
        .send(&inside_id, Kind::DM, Bytes::from_static(b"seen you"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), s.inside_rx.recv()).await;
    assert_eq!(m.unwrap().unwrap().data, "seen you");
    assert_eq!(
        s.server.connection(&inside_id).unwrap().generation(),
        generation
    );
    let nat = s.net.with(|n| n.nat_stats(s.nat)).unwrap();
    assert_eq!(nat.rebinds, 1);
}
