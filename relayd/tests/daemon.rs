//! The relayd binary, spawned for real: its config handling, admin socket,
//! relay socket (a fake gossipd over the real socket and shared-memory
//! rings) and QUIC endpoint (a libtransport peer over real UDP loopback).
//! Every test has its own temp dir; the daemon is killed when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The tests own the clock: every wait is bounded by a deadline.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::Bytes;
use common::{AttachError, Daemon, Gossipd, Peer, hello_as_gossipd, read_to_close, run_to_end};
use libtransport::Kind;
use libtransport::proto::ack::{AckError, Outcome};
use rand::RngCore as _;
use wire::WireError;
use wire::frame::RelayMsg;
use wire::generated::error::ErrorCode;
use wire::generated::relay::{PeerEventKind, SendStatus, StreamKind};

const BUDGET: Duration = Duration::from_secs(10);

/// relayd starts, answers `status` on its admin socket, and on SIGTERM —
/// with a gossipd attached — stops and removes both sockets. Capability:
/// R1 (operable, observable).
#[test]
fn starts_answers_status_and_removes_sockets_on_sigterm() {
    let mut d = Daemon::start();
    let s = common::status_json(&d.admin_path()).unwrap();
    assert_eq!(s["daemon"], "relayd");
    assert_eq!(s["gossipd_attached"], false);
    assert!(d.dir.path().join("state/identity.key").exists());
    // An attached gossipd does not hold the shutdown up.
    let g = Gossipd::attach(&d.relay_path());
    d.wait_for("gossipd attached", |j| j["gossipd_attached"] == true);
    // kill(1) keeps the test free of a signal-sending dependency.
    let st = std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = d.child.wait().unwrap();
    assert!(status.success(), "relayd exit: {status}");
    assert!(!d.relay_path().exists(), "relay socket left behind");
    assert!(!d.admin_path().exists(), "admin socket left behind");
    drop(g);
}

/// With `relayd.metrics_listen` set, the counters are scraped as
/// Prometheus text on loopback. Capability: R1 (observable).
#[test]
fn metrics_endpoint_serves_the_counters() {
    use std::io::Read as _;
    // A free loopback port (released just before relayd binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start_with(&[&format!("relayd.metrics_listen=127.0.0.1:{port}")]);
    let body = {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(common::PATIENCE)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for name in [
        "relayd_build_info",
        "relayd_dm_accepted_total",
        "relayd_sessions_refused_busy_total",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    drop(d);
}

/// A start that fails after the sockets were bound (here: the metrics
/// port is taken) exits non-zero with the reason and leaves no socket
/// behind.
#[test]
fn failed_start_removes_its_sockets() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path());
    let set = format!("relayd.metrics_listen=127.0.0.1:{port}");
    let out = run_to_end(&["--config", cfg.to_str().unwrap(), "--set", &set]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("metrics"), "{err}");
    assert!(
        dir.path().join("run/t").exists(),
        "the sockets were never bound"
    );
    assert!(!dir.path().join("run/t/relayd.sock").exists());
    assert!(!dir.path().join("run/t/relayd-admin.sock").exists());
    drop(taken);
}

/// `--check` prints the effective config with its origins; an
/// out-of-range value is refused with the key and its valid range, exit 2.
#[test]
fn check_prints_config_and_rejects_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let out = run_to_end(&["--config", cfg, "--check"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[relayd]"), "{text}");
    assert!(text.contains("retain_records = 16384  # default"), "{text}");
    assert!(
        text.contains("listen = [\"127.0.0.1:0\"]  # file"),
        "{text}"
    );
    assert!(text.contains("relayd socket:"), "{text}");

    let out = run_to_end(&["--config", cfg, "--set", "relayd.ring_capacity=1000"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("relayd.ring_capacity = 1000"), "{err}");
    assert!(err.contains("power of two"), "{err}");
    assert!(!dir.path().join("run/t/relayd.sock").exists());
}

/// A message a peer sends over real UDP reaches the attached gossipd
/// through the inbound ring, with the sender's id and kind, and the
/// connection is announced as a `PeerEvent`. Capabilities: P2 (relay
/// path), P4 (pubsub flows through the pump), P5 (peer lifecycle).
#[test]
fn gossipd_receives_a_message_a_peer_sent_over_udp() {
    let d = Daemon::start();
    let mut g = Gossipd::attach(&d.relay_path());
    d.wait_for("gossipd attached", |j| j["gossipd_attached"] == true);
    let peer = Peer::new();
    let relayd_id = peer.connect(&d);
    peer.rt
        .block_on(peer.ep.send(
            &relayd_id,
            Kind::PUBSUB,
            Bytes::from_static(b"hello gossip"),
        ))
        .unwrap();
    let rec = g.next();
    assert_eq!(rec.payload, b"hello gossip");
    assert_eq!(rec.kind, StreamKind::Pubsub);
    assert_eq!(rec.peer, peer.ep.peer_id().0);
    assert_eq!((rec.seq, rec.ack_id), (0, None));
    // The connection itself was announced on the control socket (P5).
    g.control_frame(|m| match m.unwrap() {
        RelayMsg::PeerEvent(e) => {
            assert_eq!(e.kind(), PeerEventKind::Connected);
            assert_eq!(
                e.peer().bytes().iter().collect::<Vec<_>>(),
                peer.ep.peer_id().0.to_vec()
            );
        }
        other => panic!("expected a PeerEvent, got {other:?}"),
    });
    let j = d.diagnostics();
    assert_eq!(j["counters"]["inbound_forwarded"], 1);
}

/// With no gossipd draining, a pubsub flood overflows the pump: the
/// excess is dropped and counted, and the transport keeps going — a
/// control message sent after the flood still finds room (its reserved
/// bytes) and arrives ahead of the queued pubsub (strict priority) once
/// gossipd attaches. Capabilities:
/// P4, R1.
#[test]
fn pubsub_overflow_is_dropped_and_counted_without_stalling_the_transport() {
    // The smallest pump: 1 MiB, 640 KiB of it the pool pubsub may use.
    let d = Daemon::start_with(&["relayd.pump_bytes=1048576"]);
    let peer = Peer::new();
    let id = peer.connect(&d);
    let chunk = Bytes::from(vec![7u8; 16 << 10]);
    peer.rt.block_on(async {
        for _ in 0..80 {
            peer.ep
                .send(&id, Kind::PUBSUB, chunk.clone())
                .await
                .unwrap();
        }
        peer.ep
            .send(&id, Kind::CONTROL, Bytes::from_static(b"after the flood"))
            .await
            .unwrap();
    });
    // The control message may overtake the flood (its own stream, higher
    // priority): wait for both.
    let j = d.wait_for("flood and control message offered", |j| {
        j["pump"]["kinds"]["control"]["enqueued"] == 1
            && j["pump"]["kinds"]["pubsub"]["produced"] == 80
    });
    let pubsub = &j["pump"]["kinds"]["pubsub"];
    let dropped = pubsub["dropped"].as_u64().unwrap();
    let queued = pubsub["depth"].as_u64().unwrap();
    assert!(dropped > 0, "{pubsub}");
    assert_eq!(dropped + queued, 80, "{pubsub}");
    let mut g = Gossipd::attach(&d.relay_path());
    assert_eq!(g.next().payload, b"after the flood");
    for _ in 0..queued {
        assert_eq!(g.next().kind, StreamKind::Pubsub);
    }
}

/// A receive-ACKed DM: `ConsumerGone` with no gossipd; with one attached,
/// `Accepted` and delivered with a seq; held until `Consumed`, and an
/// unconsumed one is re-sent, flagged, to the next gossipd. Capabilities:
/// P2, P3 (an Accepted DM is never lost across a gossipd detach), R3.
#[test]
fn acked_dm_consumer_gone_then_accepted_retained_and_redelivered() {
    let d = Daemon::start();
    let peer = Peer::new();
    let id = peer.connect(&d);
    let send = |body: &'static [u8]| peer.send_dm(&id, body, BUDGET);
    match send(b"nobody home") {
        Err(AckError::Rejected {
            outcome: Outcome::ConsumerGone,
            ..
        }) => {}
        other => panic!("expected ConsumerGone, got {other:?}"),
    }

    let mut g = Gossipd::attach(&d.relay_path());
    d.wait_for("gossipd attached", |j| j["gossipd_attached"] == true);
    send(b"dm one").unwrap();
    let one = g.next();
    assert_eq!(one.payload, b"dm one");
    assert_eq!(one.kind, StreamKind::Dm);
    assert!(one.ack_id.is_some() && one.seq >= 1 && !one.redelivered);
    g.consumed(&[one.seq]);
    d.wait_for("dm one released", |j| j["retention"]["held"] == 0);

    send(b"dm two").unwrap();
    let two = g.next();
    assert_eq!(two.payload, b"dm two");
    // gossipd goes away before confirming: relayd keeps the record.
    drop(g);
    d.wait_for("detached", |j| j["gossipd_attached"] == false);
    assert_eq!(d.diagnostics()["retention"]["held"], 1);
    let mut g2 = Gossipd::attach(&d.relay_path());
    let again = g2.next();
    assert_eq!(
        (again.payload.as_slice(), again.seq),
        (&b"dm two"[..], two.seq)
    );
    assert!(again.redelivered);
    g2.consumed(&[again.seq]);
    let j = d.wait_for("dm two released", |j| j["retention"]["held"] == 0);
    assert_eq!(j["counters"]["dm_accepted"], 2);
    assert_eq!(j["counters"]["dm_consumer_gone"], 1);
    assert_eq!(j["counters"]["resent"], 1);
}

/// Retention is a hard bound: with room for one record, a second DM while
/// the first is unconfirmed is answered `Backpressured` (nothing
/// promised, counted), and admitted once the first is consumed.
/// Capabilities: P3, R1.
#[test]
fn acked_dm_beyond_retention_is_backpressured_until_consumed() {
    let d = Daemon::start_with(&["relayd.retain_records=1"]);
    let peer = Peer::new();
    let id = peer.connect(&d);
    let send = |body: &'static [u8]| peer.send_dm(&id, body, Duration::from_millis(500));
    let mut g = Gossipd::attach(&d.relay_path());
    d.wait_for("gossipd attached", |j| j["gossipd_attached"] == true);
    send(b"first").unwrap();
    let first = g.next();
    match send(b"second") {
        Err(AckError::Rejected {
            outcome: Outcome::Backpressured,
            ..
        }) => {}
        other => panic!("expected Backpressured, got {other:?}"),
    }
    let j = d.diagnostics();
    assert!(
        j["retention"]["refused_records"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    assert!(
        j["counters"]["dm_backpressured"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    g.consumed(&[first.seq]);
    d.wait_for("first released", |j| j["retention"]["held"] == 0);
    send(b"second").unwrap();
    assert_eq!(g.next().payload, b"second");
}

/// gossipd's sends reach the peer; an acknowledged one answers with a
/// `SendResult` on the control socket. Capability: P2.
#[test]
fn gossipd_sends_reach_the_peer_and_acked_ones_report() {
    let d = Daemon::start();
    let peer = Peer::new();
    let mut dm_rx = peer.rt.block_on(async {
        peer.ep
            .register(Kind::DM, libtransport::KindConfig::default())
            .unwrap()
    });
    let _ = peer.connect(&d);
    let mut g = Gossipd::attach(&d.relay_path());
    let me = peer.ep.peer_id();
    g.send(&me, StreamKind::Dm, None, b"plain out");
    let got = peer
        .rt
        .block_on(async { tokio::time::timeout(common::PATIENCE, dm_rx.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(&got.data[..], b"plain out");
    g.send(&me, StreamKind::Dm, Some([9; 16]), b"acked out");
    let got = peer
        .rt
        .block_on(async { tokio::time::timeout(common::PATIENCE, dm_rx.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(&got.data[..], b"acked out");
    // Control frames may include PeerEvents first; find the SendResult.
    loop {
        let done = g.control_frame(|m| match m.unwrap() {
            RelayMsg::SendResult(r) => {
                assert_eq!(
                    r.send_id().bytes().iter().collect::<Vec<_>>(),
                    vec![9u8; 16]
                );
                assert_eq!(r.status(), SendStatus::Acked);
                true
            }
            RelayMsg::PeerEvent(_) => false,
            other => panic!("unexpected control frame {other:?}"),
        });
        if done {
            break;
        }
    }
}

/// One gossipd at a time: a second gets a typed `Busy` refusal, counted,
/// and the first keeps being served. Capability: R1.
#[test]
fn second_gossipd_is_refused_with_busy() {
    let d = Daemon::start();
    let mut g = Gossipd::attach(&d.relay_path());
    d.wait_for("gossipd attached", |j| j["gossipd_attached"] == true);
    match hello_as_gossipd(&d.relay_path()) {
        Err(WireError::Remote(r)) => assert_eq!(r.code, ErrorCode::Busy),
        other => panic!("expected a Busy refusal, got {other:?}"),
    }
    let j = d.wait_for("refusal counted", |j| {
        j["counters"]["sessions_refused_busy"] == 1
    });
    assert_eq!(j["gossipd_attached"], true);
    // The first session still works.
    let peer = Peer::new();
    let id = peer.connect(&d);
    peer.send_dm(&id, b"still", BUDGET).unwrap();
    assert_eq!(g.next().payload, b"still");
}

/// A client that finishes the hello and then never sets up its rings
/// holds the session only until the ring setup's deadline: a real gossipd
/// retrying meanwhile (refused `Busy`) attaches after it. Capability: R1.
#[test]
fn a_gossipd_stalled_in_ring_setup_does_not_lock_the_relay() {
    let d = Daemon::start();
    let (stalled, _) = hello_as_gossipd(&d.relay_path()).unwrap();
    d.wait_for("the stalled client holds the session", |j| {
        j["session_taken"] == true && j["gossipd_attached"] == false
    });
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut g = loop {
        match Gossipd::try_attach(&d.relay_path()) {
            Ok(g) => break g,
            Err(AttachError::Hello(WireError::Remote(r))) if r.code == ErrorCode::Busy => {}
            // Refused after its hello: the stalled one was just let go and
            // another attempt raced it; try again.
            Err(AttachError::Channel(_)) => {}
            Err(e) => panic!("unexpected refusal: {e:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "relay stayed locked");
        std::thread::sleep(Duration::from_millis(100));
    };
    let j = d.diagnostics();
    assert!(
        j["counters"]["sessions_failed"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    let peer = Peer::new();
    let id = peer.connect(&d);
    peer.rt
        .block_on(
            peer.ep
                .send(&id, Kind::PUBSUB, Bytes::from_static(b"after")),
        )
        .unwrap();
    assert_eq!(g.next().payload, b"after");
    drop(stalled);
}

/// Hostile input on the relay socket — random bytes, a 4 GiB length
/// prefix, half a frame then silence — ends in a typed error frame or a
/// closed connection, never a crash, while a good gossipd is served.
/// Capability: R1.
#[test]
fn bad_input_on_the_relay_socket_is_contained() {
    use rand::SeedableRng as _;
    let d = Daemon::start();
    let path = d.relay_path();
    // Half a frame, then silence: held open while the good client attaches.
    let half = UnixStream::connect(&path).unwrap();
    (&half).write_all(&200u32.to_le_bytes()).unwrap();
    (&half).write_all(&[0u8; 50]).unwrap();

    let mut noise = [0u8; 4096];
    rand_chacha::ChaCha8Rng::seed_from_u64(13).fill_bytes(&mut noise);
    let random = UnixStream::connect(&path).unwrap();
    let _ = (&random).write_all(&noise);
    let reply = read_to_close(&random);
    if !reply.is_empty() {
        // Random bytes read as a length prefix are most likely huge.
        assert_error_frame(&reply, &[ErrorCode::Malformed, ErrorCode::FrameTooLarge]);
    }
    let huge = UnixStream::connect(&path).unwrap();
    (&huge).write_all(&u32::MAX.to_le_bytes()).unwrap();
    let reply = read_to_close(&huge);
    assert_error_frame(&reply, &[ErrorCode::FrameTooLarge]);

    // The silent one is still in its hello: it holds no session, so a
    // good gossipd attaches and is served meanwhile.
    let mut g = Gossipd::attach(&path);
    let peer = Peer::new();
    let id = peer.connect(&d);
    peer.rt
        .block_on(peer.ep.send(&id, Kind::PUBSUB, Bytes::from_static(b"good")))
        .unwrap();
    assert_eq!(g.next().payload, b"good");
    // The hello deadline closes the silent one (whatever it may say first).
    let _ = read_to_close(&half);

    let j = d.diagnostics();
    assert_eq!(j["gossipd_attached"], true);
    let relay = &j["relay_socket"];
    assert!(
        relay["hello_failures"].as_u64().unwrap() + relay["hello_timeouts"].as_u64().unwrap() >= 3,
        "{relay}"
    );
    assert!(d_alive(&d));
}

/// After the session is up, a garbage control frame is answered with a
/// typed `Malformed` error and the session goes on; a 4 GiB length prefix
/// gets `FrameTooLarge` and ends the session, and the next gossipd is
/// served. Capability: R1.
#[test]
fn bad_control_frames_from_an_attached_gossipd_are_contained() {
    let d = Daemon::start();
    let mut g = Gossipd::attach(&d.relay_path());
    wire::frame::FrameWriter::new(&g.control, g.session.max_frame)
        .write_frame(b"definitely not a flatbuffer")
        .unwrap();
    g.control_frame(|m| match m {
        Err(WireError::Remote(r)) => assert_eq!(r.code, ErrorCode::Malformed),
        other => panic!("expected a Malformed error frame, got {other:?}"),
    });
    let peer = Peer::new();
    let id = peer.connect(&d);
    peer.send_dm(&id, b"still attached", BUDGET).unwrap();
    assert_eq!(g.next().payload, b"still attached");

    (&g.control).write_all(&u32::MAX.to_le_bytes()).unwrap();
    // Skip PeerEvents until the error frame.
    loop {
        let code = g.control_frame(|m| match m {
            Err(WireError::Remote(r)) => Some(r.code),
            Ok(RelayMsg::PeerEvent(_)) => None,
            other => panic!("unexpected control frame {other:?}"),
        });
        if let Some(code) = code {
            assert_eq!(code, ErrorCode::FrameTooLarge);
            break;
        }
    }
    d.wait_for("detached", |j| j["gossipd_attached"] == false);
    drop(g);
    let mut g2 = Gossipd::attach(&d.relay_path());
    // The first gossipd never confirmed its DM: it comes again, flagged.
    let again = g2.next();
    assert_eq!(again.payload, b"still attached");
    assert!(again.redelivered);
    peer.send_dm(&id, b"next gossipd", BUDGET).unwrap();
    assert_eq!(g2.next().payload, b"next gossipd");
}

fn d_alive(d: &Daemon) -> bool {
    // `try_wait` needs `&mut`; a status request proves the process serves.
    common::status_json(&d.admin_path()).is_ok()
}

/// relayd's hello comes first; the error frame after it names one of
/// `codes`.
fn assert_error_frame(mut bytes: &[u8], codes: &[ErrorCode]) {
    while bytes.len() > 4 {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let payload = &bytes[4..4 + len];
        if let Err(WireError::Remote(r)) = wire::frame::decode_relay(payload) {
            assert!(codes.contains(&r.code), "{:?}: {}", r.code, r.message);
            return;
        }
        bytes = &bytes[4 + len..];
    }
    panic!("no error frame in relayd's reply");
}
