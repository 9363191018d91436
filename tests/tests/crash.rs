//! Crash safety of a whole node under traffic: node 0's application sends
//! DMs and publishes to node 1 without pause while node 1's relayd, then
//! its gossipd, then its verifyd are SIGKILLed and started again, one at a
//! time. Real binaries, real UDP, real Unix sockets and rings.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use gossipd::client::Client;
use tern_tests::{Daemon, Mesh, eventually};

/// What the receiving app saw.
#[derive(Debug, Default)]
struct Seen {
    /// DM id -> (copies without the `redelivered` flag, copies with it,
    /// first arrival).
    dms: BTreeMap<[u8; 16], (u32, u32, Instant)>,
    /// Message id -> (copies, first arrival).
    pubs: BTreeMap<[u8; 32], (u32, Instant)>,
}

/// What the sending app had answered.
#[derive(Debug, Default)]
struct Sent {
    /// DM id -> when its `send_dm` started; only DMs answered with a
    /// receipt (the receiver's relayd admitted them: `Accepted`).
    accepted: BTreeMap<[u8; 16], Instant>,
    /// `send_dm` calls that failed (no receipt: nothing was promised).
    dm_failed: u64,
    /// Message id -> when its `publish` started.
    published: BTreeMap<[u8; 32], Instant>,
}

/// The receivers' read timeout: longer than any pause in traffic the
/// test causes, so a receiver re-connects only when gossipd went away
/// (and, at the end, notices `stop` within it).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(path: &Path) -> Option<Client> {
    Client::connect(path, READ_TIMEOUT).ok()
}

/// The receiving app: reads DMs (acknowledging each at once) or
/// deliveries on a connection it re-opens whenever gossipd goes away or a
/// read times out, until `stop`.
fn receive(path: &Path, dms: bool, seen: &Mutex<Seen>, stop: &AtomicBool, reconnects: &AtomicU64) {
    while !stop.load(Relaxed) {
        let Some(mut c) = connect(path) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let set_up = if dms {
            c.subscribe_dms().map(|_| ())
        } else {
            c.join("news")
                .and_then(|()| c.subscribe("news").map(|_| ()))
        };
        if set_up.is_err() {
            continue;
        }
        reconnects.fetch_add(1, Relaxed);
        while !stop.load(Relaxed) {
            if dms {
                let Ok(dm) = c.next_dm() else { break };
                {
                    let mut s = seen.lock().unwrap();
                    let e = s.dms.entry(dm.id).or_insert((0, 0, Instant::now()));
                    if dm.redelivered {
                        e.1 += 1;
                    } else {
                        e.0 += 1;
                    }
                }
                if c.ack_dms(&[dm.id]).is_err() {
                    break;
                }
            } else {
                let Ok(d) = c.next_delivery() else { break };
                let mut s = seen.lock().unwrap();
                s.pubs.entry(d.id).or_insert((0, Instant::now())).0 += 1;
            }
        }
    }
}

/// The sending app: a DM and a publish every 10 ms until `stop`.
fn send(path: &Path, to: [u8; 32], sent: &Mutex<Sent>, stop: &AtomicBool) {
    let mut c = Client::connect(path, Duration::from_secs(60)).unwrap();
    c.join("news").unwrap();
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        n += 1;
        let t = Instant::now();
        match c.send_dm(to, format!("dm {n}").as_bytes()) {
            Ok(r) => {
                sent.lock().unwrap().accepted.insert(r.id, t);
            }
            Err(_) => sent.lock().unwrap().dm_failed += 1,
        }
        let t = Instant::now();
        if let Ok(id) = c.publish("news", format!("pub {n}").as_bytes()) {
            sent.lock().unwrap().published.insert(id, t);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Time from `t0` to the first arrival of something sent at or after
/// `t0`, if it arrived.
fn recovery(sent: &Sent, seen: &Seen, t0: Instant) -> (Option<Duration>, Option<Duration>) {
    let dm = sent
        .accepted
        .iter()
        .filter(|(_, at)| **at >= t0)
        .filter_map(|(id, _)| seen.dms.get(id).map(|e| e.2))
        .min()
        .map(|t| t - t0);
    let pubsub = sent
        .published
        .iter()
        .filter(|(_, at)| **at >= t0)
        .filter_map(|(id, _)| seen.pubs.get(id).map(|e| e.1))
        .min()
        .map(|t| t - t0);
    (dm, pubsub)
}

/// `kill -9` of node 1's relayd, then its gossipd, then its verifyd, each
/// with DMs and publishes from node 0 running and the killed binary
/// started again by the test: every DM node 0 got a receipt for (relayd
/// answered `Accepted`) reaches node 1's app; no DM reaches it twice
/// without the `redelivered` flag (a flagged copy is a DM offered again
/// because the app's acknowledgement died with gossipd) and no publish
/// twice; and after each restart both a DM and a publish sent after the
/// restart arrive within 5 s. The figures are printed. Capabilities: P3
/// (an Accepted DM is never lost), R3 (restart of any daemon without
/// operator action), D2.
#[test]
fn kill_9_of_each_daemon_under_traffic_loses_no_accepted_dm() {
    let mut mesh = Mesh::start(2);
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let sent = Mutex::new(Sent::default());
    let reconnects = AtomicU64::new(0);
    let to = mesh.id(1);
    let (app0, app1) = (
        mesh.node(0).sock("gossipd.sock"),
        mesh.node(1).sock("gossipd.sock"),
    );
    let mut report = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| receive(&app1, true, &seen, &stop, &reconnects));
        s.spawn(|| receive(&app1, false, &seen, &stop, &reconnects));
        eventually("both receivers subscribed", || {
            reconnects.load(Relaxed) >= 2
        });
        eventually("node 1 in node 0's topic overlay", || {
            let mut c = mesh.app(0);
            c.join("news").unwrap();
            c.peers("news").unwrap() == vec![to]
        });
        s.spawn(|| send(&app0, to, &sent, &stop));
        eventually("traffic flows before the first kill", || {
            let s = seen.lock().unwrap();
            s.dms.len() >= 20 && s.pubs.len() >= 20
        });
        for d in [Daemon::Relayd, Daemon::Gossipd, Daemon::Verifyd] {
            std::thread::sleep(Duration::from_millis(500));
            mesh.kill(1, d);
            std::thread::sleep(Duration::from_secs(1));
            let t0 = Instant::now();
            mesh.restart(1, d);
            let ready = t0.elapsed();
            let deadline = t0 + Duration::from_secs(30);
            let (dm, pubsub) = loop {
                let r = recovery(&sent.lock().unwrap(), &seen.lock().unwrap(), t0);
                if (r.0.is_some() && r.1.is_some()) || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            eprintln!(
                "kill -9 {}: restarted binary answering after {ready:?}; first DM sent after \
                 the restart delivered after {dm:?}, first publish after {pubsub:?}",
                d.name()
            );
            report.push((d, dm, pubsub));
            mesh.wait_ready(1);
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Relaxed);
    });

    let sent = sent.into_inner().unwrap();
    let seen = seen.into_inner().unwrap();
    // Every accepted DM reaches the app, even those in flight at a kill:
    // the receivers stopped, so read what is left on a fresh connection.
    let missing: Vec<[u8; 16]> = sent
        .accepted
        .keys()
        .filter(|id| !seen.dms.contains_key(*id))
        .copied()
        .collect();
    let mut late = BTreeMap::new();
    if !missing.is_empty() {
        let mut c = Client::connect(&app1, Duration::from_secs(10)).unwrap();
        c.subscribe_dms().unwrap();
        while late.len() < missing.len() {
            let Ok(dm) = c.next_dm() else { break };
            late.insert(dm.id, dm.redelivered);
            let _ = c.ack_dms(&[dm.id]);
        }
    }
    let lost: Vec<_> = missing
        .iter()
        .filter(|id| !late.contains_key(*id))
        .collect();
    let unflagged_twice = seen.dms.values().filter(|e| e.0 > 1).count();
    let flagged = seen.dms.values().filter(|e| e.1 > 0).count();
    let pub_twice = seen.pubs.values().filter(|e| e.0 > 1).count();
    eprintln!(
        "DMs accepted {}, failed without a receipt {}, delivered {} (+{} read after the run), \
         lost {}, delivered twice without the flag {unflagged_twice}, offered again flagged \
         {flagged}; publishes {} sent, {} delivered, {pub_twice} twice",
        sent.accepted.len(),
        sent.dm_failed,
        seen.dms.len(),
        late.len(),
        lost.len(),
        sent.published.len(),
        seen.pubs.len(),
    );
    assert!(lost.is_empty(), "accepted DMs never delivered: {lost:?}");
    assert_eq!(unflagged_twice, 0, "a DM delivered twice without the flag");
    assert_eq!(pub_twice, 0, "a publish delivered twice to the app");
    // Every DM the app read after a kill and the run carried traffic again.
    for (d, dm, pubsub) in report {
        let bound = Duration::from_secs(5);
        assert!(
            dm.is_some_and(|t| t <= bound),
            "after kill -9 {}: DMs again after {dm:?}",
            d.name()
        );
        assert!(
            pubsub.is_some_and(|t| t <= bound),
            "after kill -9 {}: publishes again after {pubsub:?}",
            d.name()
        );
    }
}
