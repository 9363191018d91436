//! The relay session and its delivery contract over real Unix sockets,
//! real shared-memory rings and real processes: relayd (this test) admits
//! receive-ACKed DMs into the ring to a gossipd process that hands them to
//! its "app" (stdout, read by this test) and confirms them in batches (the
//! first one lagging behind its app); the gossipd process is SIGKILLed
//! mid-stream; a new one connects, gets every
//! admitted-but-unconfirmed record again (marked `redelivered`), and after
//! the app's dedupe by id every admitted DM arrived exactly once.
//! Capabilities: P2, P3 (an `Accepted` DM is never lost across a gossipd
//! crash), R3 (duplicates removed by id).
//!
//! The gossipd process is this test binary re-executed with
//! `gossipd_child` selected (an ignored test that only acts when the
//! parent sets its environment).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test owns the clock: every wait is bounded by a deadline.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use wire::frame::{self, FrameReader, FrameWriter, RelayMsg, RelaySchema};
use wire::generated::hello::Role;
use wire::generated::relay::StreamKind;
use wire::hello;
use wire::relay::{self, InboundRecord, Intake, IntakeConfig, Offer, RetainConfig, Retainer};
use wire::ring::{Geometry, PopError, SpinConfig, TryPushError};

const SOCK_ENV: &str = "TERN_RELAY_SESSION_SOCK";
/// Set for the first gossipd: it stops confirming after
/// [`CONFIRM_UNTIL`] deliveries, like one whose confirmations lag, so
/// the kill leaves DMs the app has but relayd still holds.
const LAG_ENV: &str = "TERN_RELAY_SESSION_LAG";
const CONFIRM_UNTIL: usize = 448;
/// DMs the test admits in all.
const N: u64 = 3000;
/// The first gossipd is killed once its app has this many.
const KILL_AFTER: usize = 500;
/// gossipd confirms consumption every this many DMs (so a kill leaves
/// delivered-but-unconfirmed records behind).
const ACK_BATCH: usize = 64;
const RING: u32 = 64 * 1024;

fn id_of(n: u64) -> [u8; 16] {
    let mut id = [0xa5u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id
}

fn n_of(id: &[u8; 16]) -> u64 {
    u64::from_le_bytes(id[..8].try_into().unwrap())
}

fn session(stream: &UnixStream, role: Role, instance: u64) -> (hello::Session, Geometry) {
    let mut r = FrameReader::new(stream, frame::MIN_MAX_FRAME);
    let mut w = FrameWriter::new(stream, frame::MIN_MAX_FRAME);
    let s = hello::exchange(&mut r, &mut w, &relay::hello_config(role, RING, instance)).unwrap();
    let geo = Geometry::negotiated(s.ring_capacity, s.max_frame).unwrap();
    (s, geo)
}

/// The gossipd process: pops inbound records, hands new ones to the app
/// (a stdout line), confirms them in batches with `Consumed`.
#[test]
#[ignore = "helper process for the relay session test; does nothing unless spawned by it"]
fn gossipd_child() {
    let Ok(path) = std::env::var(SOCK_ENV) else {
        return;
    };
    let stream = UnixStream::connect(path).unwrap();
    let (s, geo) = session(&stream, Role::Gossipd, u64::from(std::process::id()));
    let mut rings = relay::channel::attach(&stream, geo, SpinConfig::default()).unwrap();
    let mut intake = Intake::new(IntakeConfig::default());
    intake.attach(s.peer_instance);
    // One outbound record proves the other direction.
    let mut fbb = FlatBufferBuilder::new();
    let out = relay::OutboundSend {
        peer: [2; 32],
        kind: StreamKind::Dm,
        generation: 0,
        send_id: None,
        budget_ms: 0,
        payload: b"hello relayd",
    };
    rings.outbound.push(out.encode(&mut fbb)).unwrap();

    let mut control = FrameWriter::new(&stream, s.max_frame);
    let mut stdout = std::io::stdout();
    let mut unconfirmed: Vec<u64> = Vec::new();
    let mut buf = Vec::new();
    let lag = std::env::var_os(LAG_ENV).is_some();
    let mut delivered = 0usize;
    loop {
        // Confirm what the app has before waiting for more, so the last
        // partial batch is not held back.
        let ready = match rings.inbound.try_pop(&mut buf) {
            Ok(got) => got.is_some(),
            Err(PopError::PeerGone(_)) => break,
            Err(e) => panic!("try_pop: {e}"),
        };
        if !ready {
            if !unconfirmed.is_empty() && !lag {
                let (bytes, taken) = relay::encode_consumed(&mut fbb, &unconfirmed);
                control.write_frame(bytes).unwrap();
                unconfirmed.drain(..taken);
            }
            match rings.inbound.pop(&mut buf) {
                Ok(_) => {}
                Err(PopError::PeerGone(_)) => break,
                Err(e) => panic!("pop: {e}"),
            }
        }
        let RelayMsg::Inbound(m) = frame::decode_relay(&buf).unwrap() else {
            panic!("not an inbound record");
        };
        let rec = InboundRecord::from_table(&m);
        let id = rec.ack_id.unwrap();
        match intake.offer(rec.ack_id, rec.seq) {
            Offer::Deliver => {
                writeln!(stdout, "dm {} {} {}", n_of(&id), rec.seq, rec.redelivered).unwrap();
                stdout.flush().unwrap();
                delivered += 1;
                // The app has it (the line is in the pipe): confirmable.
                unconfirmed.extend(intake.app_has(&id));
            }
            Offer::Duplicate { consume_now } => unconfirmed.extend(consume_now),
            Offer::Full => panic!("the app acknowledges at once; never full"),
        }
        if unconfirmed.len() >= ACK_BATCH && (!lag || delivered <= CONFIRM_UNTIL) {
            let (bytes, taken) = relay::encode_consumed(&mut fbb, &unconfirmed);
            control.write_frame(bytes).unwrap();
            unconfirmed.drain(..taken);
        }
    }
    while !unconfirmed.is_empty() {
        let (bytes, taken) = relay::encode_consumed(&mut fbb, &unconfirmed);
        let _ = control.write_frame(bytes);
        unconfirmed.drain(..taken);
    }
    writeln!(stdout, "clean").unwrap();
}

fn spawn_child(path: &std::path::Path, tag: u8, lines: mpsc::Sender<(u8, String)>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "gossipd_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(SOCK_ENV, path)
    .stdout(Stdio::piped());
    if tag == 1 {
        cmd.env(LAG_ENV, "1");
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send((tag, line)).is_err() {
                break;
            }
        }
    });
    child
}

fn accept(listener: &UnixListener, deadline: Instant) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "gossipd never connected");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// One app delivery from a `dm <n> <seq> <redelivered>` line. The first
/// line may follow libtest's `test gossipd_child ... ` on the same line.
fn parse(tag: u8, line: &str) -> Option<(u8, u64, u64, bool)> {
    let rest = line.split("dm ").nth(1)?;
    let f: Vec<&str> = rest.split(' ').collect();
    Some((
        tag,
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2] == "true",
    ))
}

enum Ctl {
    Consumed(Vec<u64>),
    Gone,
}

/// Reads gossipd's control frames into `tx` until the connection ends.
fn control_reader(stream: UnixStream, max: u32, tx: mpsc::Sender<Ctl>) {
    std::thread::spawn(move || {
        let mut r = FrameReader::new(&stream, max);
        while let Ok(Some(p)) = r.read_frame() {
            match frame::decode_relay(p) {
                Ok(RelayMsg::Consumed(c)) => {
                    if tx.send(Ctl::Consumed(c.seqs().iter().collect())).is_err() {
                        return;
                    }
                }
                other => panic!("unexpected control frame {other:?}"),
            }
        }
        let _ = tx.send(Ctl::Gone);
    });
}

fn dm(n: u64) -> InboundRecord {
    InboundRecord {
        peer: [7; 32],
        generation: 1,
        kind: StreamKind::Dm,
        ack_id: Some(id_of(n)),
        seq: 0,
        redelivered: false,
        payload: vec![(n % 251) as u8; 200],
    }
}

#[test]
fn killed_gossipd_reconnects_and_every_accepted_dm_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (line_tx, lines) = mpsc::channel();
    let mut retainer = Retainer::new(RetainConfig {
        max_records: 128,
        max_bytes: 1 << 20,
    });
    let mut fbb = FlatBufferBuilder::new();
    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    let mut refused_full = 0u64;
    let mut next = 0u64;
    let mut outbound_seen = 0;
    let mut got: Vec<(u8, u64, u64, bool)> = Vec::new();
    let mut children = Vec::new();
    let mut out_buf = Vec::new();

    for tag in 1..=2u8 {
        children.push(spawn_child(&path, tag, line_tx.clone()));
        let ctl = accept(&listener, deadline);
        let (s, geo) = session(&ctl, Role::Relayd, 42);
        let mut rings = relay::channel::serve(&ctl, geo, SpinConfig::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        control_reader(ctl.try_clone().unwrap(), s.max_frame, tx);
        retainer.attach();
        let mut killed = false;
        loop {
            assert!(Instant::now() < deadline, "session {tag} stalled");
            let mut gone = false;
            // Apply control frames; wait a little for one when stuck.
            let mut progressed = false;
            while let Ok(c) = rx.try_recv() {
                match c {
                    Ctl::Consumed(seqs) => retainer.consumed(seqs),
                    Ctl::Gone => gone = true,
                }
            }
            while let Ok((t, line)) = lines.try_recv() {
                got.extend(parse(t, &line));
            }
            if let Ok(Some(_)) = rings.outbound.try_pop(&mut out_buf) {
                assert!(matches!(
                    frame::decode_relay(&out_buf),
                    Ok(RelayMsg::Outbound(_))
                ));
                outbound_seen += 1;
            }
            if tag == 1 && !killed && got.iter().filter(|g| g.0 == 1).count() >= KILL_AFTER {
                children[0].kill().unwrap(); // SIGKILL, mid-stream
                killed = true;
            }
            if gone {
                break;
            }
            // Re-send what the previous gossipd did not confirm, then admit
            // new DMs; a record is Accepted only once it is in the ring.
            if let Some(rec) = retainer.next_to_resend() {
                let seq = rec.seq;
                match rings.inbound.try_push(rec.encode(&mut fbb)) {
                    Ok(()) => {
                        retainer.resent(seq);
                        progressed = true;
                    }
                    Err(TryPushError::Full(_)) => {}
                    Err(TryPushError::PeerGone(..)) => break,
                    Err(e) => panic!("{e:?}"),
                }
            } else if next < N {
                match retainer.admit(dm(next)) {
                    Ok(rec) => {
                        let seq = rec.seq;
                        match rings.inbound.try_push(rec.encode(&mut fbb)) {
                            Ok(()) => {
                                accepted.insert(next); // answer the sender Accepted
                                next += 1;
                                progressed = true;
                            }
                            Err(e) => {
                                // Backpressured / ConsumerGone: nothing promised;
                                // the sender retries the same id later.
                                retainer.cancel(seq);
                                if matches!(e, TryPushError::PeerGone(..)) {
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) => refused_full += 1, // Backpressured
                }
            } else if retainer.is_empty() {
                break; // everything admitted is confirmed
            }
            if !progressed {
                if killed {
                    // A dead consumer may leave the ring full; ask the OS.
                    if rings.inbound.check_peer().is_err() {
                        break;
                    }
                }
                if let Ok(c) = rx.recv_timeout(Duration::from_millis(2)) {
                    match c {
                        Ctl::Consumed(seqs) => retainer.consumed(seqs),
                        Ctl::Gone => break,
                    }
                }
            }
        }
        if tag == 1 {
            assert!(killed, "the first gossipd finished before it was killed");
            children[0].wait().unwrap();
        }
        // Session over (killed) or done: drop the rings; a live gossipd sees
        // the ring closed after draining and exits.
        drop(rings);
    }
    let status = children[1].wait().unwrap();
    assert!(status.success(), "second gossipd failed: {status:?}");
    drop(line_tx);
    for (t, line) in lines.iter() {
        got.extend(parse(t, &line));
    }

    // Every admitted (Accepted) DM reached the app.
    assert_eq!(accepted.len() as u64, N);
    let mut copies: BTreeMap<u64, Vec<(u8, bool)>> = BTreeMap::new();
    for &(t, n, _, redelivered) in &got {
        copies.entry(n).or_default().push((t, redelivered));
    }
    let delivered: BTreeSet<u64> = copies.keys().copied().collect();
    let lost: Vec<_> = accepted.difference(&delivered).take(10).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {lost:?}",
        accepted.len() - delivered.len()
    );
    assert_eq!(
        delivered.len(),
        accepted.len(),
        "delivered ids that were never accepted"
    );
    // Within one gossipd nothing is delivered twice; across the crash a DM
    // may reach the app twice only as a flagged redelivery, which the app
    // removes by id — leaving each DM exactly once.
    let mut twice = 0;
    for (n, c) in &copies {
        match c.as_slice() {
            [_] => {}
            [(1, false), (2, true)] => twice += 1,
            other => panic!("dm {n} delivered as {other:?}"),
        }
    }
    let st = retainer.stats();
    eprintln!(
        "admitted {N} DMs; first gossipd killed after {KILL_AFTER}; {} re-sent, {twice} reached the app twice (flagged, removed by id); {refused_full} refused while retention was full; {st:?}",
        st.redelivered
    );
    assert!(
        st.redelivered > 0,
        "the kill left nothing unconfirmed: {st:?}"
    );
    // The first gossipd's app had at least KILL_AFTER DMs and confirmed
    // only the first CONFIRM_UNTIL: the rest reached the app again.
    assert!(
        twice >= KILL_AFTER - CONFIRM_UNTIL,
        "only {twice} flagged redeliveries"
    );
    assert_eq!(st.admitted - st.cancelled, N);
    assert_eq!(
        st.consumed, N,
        "each admitted record confirmed exactly once"
    );
    assert_eq!((st.held, st.unknown_consumed), (0, 0));
    assert_eq!(outbound_seen, 2, "each gossipd's outbound record arrived");
}

/// A bad data-channel offer is a typed error, never a hang or a panic:
/// wrong magic, no fd, a closed socket; and the relay hello refuses any
/// role but the other daemon's. Capability: P1, P3.
#[test]
fn bad_offers_and_wrong_roles_are_refused() {
    use relay::ChannelError;
    let geo = Geometry::new(1 << 16, 4096).unwrap();
    let spin = SpinConfig::default();
    let (a, b) = UnixStream::pair().unwrap();
    (&a).write_all(&[0u8; 16]).unwrap();
    assert!(matches!(
        relay::channel::attach(&b, geo, spin),
        Err(ChannelError::BadOffer("magic"))
    ));
    let mut good = [0u8; 16];
    good[..8].copy_from_slice(b"TERNRDCH");
    good[8..12].copy_from_slice(&relay::channel::CHANNEL_VERSION.to_le_bytes());
    (&a).write_all(&good).unwrap();
    assert!(matches!(
        relay::channel::attach(&b, geo, spin),
        Err(ChannelError::BadOffer("expected exactly one fd"))
    ));
    let mut v2 = good;
    v2[8] = 2;
    (&a).write_all(&v2).unwrap();
    assert!(matches!(
        relay::channel::attach(&b, geo, spin),
        Err(ChannelError::BadOffer("version"))
    ));
    drop(a);
    assert!(matches!(
        relay::channel::attach(&b, geo, spin),
        Err(ChannelError::Closed)
    ));

    let (a, b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut r = FrameReader::new(&b, frame::MIN_MAX_FRAME);
        let mut w = FrameWriter::new(&b, frame::MIN_MAX_FRAME);
        let verifyd = relay::hello_config(Role::Verifyd, RING, 1);
        // Our side accepts relayd's role; relayd refuses ours and says why.
        hello::exchange(&mut r, &mut w, &verifyd).unwrap();
        let p = r.read_frame().unwrap().unwrap().to_vec();
        frame::decode::<RelaySchema>(&p).map(|_| ())
    });
    let mut r = FrameReader::new(&a, frame::MIN_MAX_FRAME);
    let mut w = FrameWriter::new(&a, frame::MIN_MAX_FRAME);
    let relayd = relay::hello_config(Role::Relayd, RING, 1);
    assert!(matches!(
        hello::exchange(&mut r, &mut w, &relayd),
        Err(wire::WireError::RoleRejected(Role::Verifyd))
    ));
    drop((r, w));
    drop(a);
    match t.join().unwrap() {
        Err(wire::WireError::Remote(e)) => {
            assert_eq!(e.code, wire::generated::error::ErrorCode::RoleRejected);
            assert!(e.fatal);
        }
        other => panic!("{other:?}"),
    }
}
