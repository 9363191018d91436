//! Crash and drain with real `verifyd` processes.
//!
//! Proves V4: with 10,000 items in flight across two instances, SIGKILL one;
//! every item gets exactly one verdict, equal to the ground truth (the test
//! knows which items it tampered). Run twice: killing an instance whose
//! session is a shared-memory ring pair (the other on frames, `--no-shm`),
//! and the other way round, so both transports' deaths go through the same
//! re-submission. Also: SIGTERM drains admitted work.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns unwrap too
#![allow(clippy::disallowed_methods)] // the test owns the clock

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use verifyd::Verdict;
use verifyd::client::{Pool, PoolConfig, Ticket};
use verifyd::transport::Transport;

/// V4: SIGKILL a ring-session instance mid-stream; exactly one true verdict per item.
#[test]
fn sigkill_ring_instance_every_item_one_true_verdict() {
    sigkill_one_instance(true);
}

/// V4: SIGKILL a frame-session instance mid-stream; exactly one true verdict per item.
#[test]
fn sigkill_frames_instance_every_item_one_true_verdict() {
    sigkill_one_instance(false);
}

/// Instance `b` (killed) runs on the ring when `kill_ring`, else on frames;
/// instance `a` (survivor) on the other transport.
fn sigkill_one_instance(kill_ring: bool) {
    let dir = tempfile::tempdir().unwrap();
    let rc = ["--backend", "rustcrypto"];
    let rc_frames = ["--backend", "rustcrypto", "--no-shm"];
    let (a_args, b_args) = if kill_ring {
        (&rc_frames[..], &rc[..])
    } else {
        (&rc[..], &rc_frames[..])
    };
    let a = common::Daemon::start(dir.path(), "a.sock", 1, a_args);
    let mut b = common::Daemon::start(dir.path(), "b.sock", 1, b_args);
    let (items, truth) = common::items(&common::corpus(10_000));
    assert!(truth.iter().filter(|v| **v == Verdict::Invalid).count() > 1000);
    let pool = Pool::connect_dir(
        dir.path(),
        PoolConfig {
            max_request_items: 50,
            // The debug-built pure-Rust backend is slow and CI machines are
            // shared: never give up on a batch within the test's lifetime.
            give_up_after: Duration::from_secs(600),
            ..PoolConfig::default()
        },
    )
    .unwrap();
    // The directory also holds the admin sockets, which refuse the verify
    // hello; only the two verify sockets connect.
    assert_eq!(pool.connected(), 2);
    let b_transport = if kill_ring {
        Transport::Ring
    } else {
        Transport::Frames
    };
    assert!(
        pool.transports().contains(&(b.socket.clone(), b_transport)),
        "{:?}",
        pool.transports()
    );
    assert_eq!(pool.stats().ring_conns.load(Ordering::Relaxed), 1);

    // 200 requests of 50 items, all submitted before any answer is awaited;
    // the daemons run the slower pure-Rust backend so that most items are
    // still unanswered when b is killed right after the last submission.
    let mut tickets = Vec::new();
    for c in items.chunks(50) {
        tickets.push(pool.submit(c.to_vec()));
    }
    let on_b_at_kill = pool.outstanding();
    let in_flight: usize = tickets.iter().map(Ticket::pending_items).sum();
    kill(Pid::from_raw(b.child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = b.child.wait();
    assert!(
        in_flight >= 5000,
        "only {in_flight} items in flight at the kill"
    );
    eprintln!("items in flight at kill: {in_flight}");

    let mut got = Vec::with_capacity(truth.len());
    for t in tickets {
        let v = t
            .wait_timeout(Duration::from_secs(600))
            .expect("ticket timed out")
            .unwrap_or_else(|e| panic!("batch failed: {e}"));
        got.extend(v);
    }
    assert_eq!(got.len(), truth.len());
    let wrong: Vec<usize> = (0..truth.len()).filter(|&i| got[i] != truth[i]).collect();
    assert!(
        wrong.is_empty(),
        "{} items with a wrong verdict, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let s = pool.stats();
    assert_eq!(s.duplicate_verdicts.load(Ordering::Relaxed), 0);
    assert!(s.conns_lost.load(Ordering::Relaxed) >= 1);
    assert!(
        s.resubmitted.load(Ordering::Relaxed) >= 1,
        "outstanding at kill: {on_b_at_kill:?}"
    );
    eprintln!(
        "outstanding at kill {on_b_at_kill:?}; resubmitted {} busy {}",
        s.resubmitted.load(Ordering::Relaxed),
        s.busy.load(Ordering::Relaxed)
    );
    drop(a);
}

/// Submits 2,000 items to `d` in requests of 100 and waits (up to 10 s)
/// until the daemon holds some of them. Returns the pool, the tickets in
/// order and the ground truth.
fn load(d: &common::Daemon) -> (Pool, Vec<Ticket>, Vec<Verdict>) {
    let (items, truth) = common::items(&common::corpus(2000));
    let pool = d.pool(100);
    let tickets: Vec<_> = items.chunks(100).map(|c| pool.submit(c.to_vec())).collect();
    let t = Instant::now();
    while pool.outstanding().first().map_or(0, |x| x.1) == 0
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_micros(100));
    }
    (pool, tickets, truth)
}

/// SIGTERM drains: admitted items are answered, new connections refused, the
/// process exits 0.
#[test]
fn sigterm_drains_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = common::Daemon::start(dir.path(), "d.sock", 1, &[]);
    // Wait until the daemon holds work, then ask it to drain.
    let (_pool, tickets, truth) = load(&d);
    kill(Pid::from_raw(d.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Whatever was admitted before the drain was answered; what was not
    // admitted (Busy or refused while draining) has no instance left and
    // fails as a whole rather than vanishing.
    let mut answered = 0;
    for (i, t) in tickets.into_iter().enumerate() {
        if let Ok(Ok(v)) = t.wait_timeout(Duration::from_secs(2)) {
            assert_eq!(v, truth[i * 100..(i + 1) * 100]);
            answered += 1;
        }
    }
    assert!(answered > 0);
}

/// A second signal stops at once, abandoning admitted work (exit status 1).
///
/// The drain may finish within milliseconds on a fast machine, so the test
/// does not race two `kill`s against it: it stops the daemon (SIGSTOP) while
/// it still holds admitted work, queues SIGTERM and SIGINT (two distinct
/// signals, so the kernel cannot merge them into one), and continues it. The
/// signal thread then takes both in consecutive `sigwait`s, microseconds
/// apart, while the rest of the held work needs far longer.
#[test]
fn second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // The pure-Rust backend is the slower one: plenty of admitted work is
    // still held when the signals arrive.
    let mut d = common::Daemon::start(dir.path(), "d.sock", 1, &["--backend", "rustcrypto"]);
    let (pool, _tickets, _) = load(&d);
    let pid = Pid::from_raw(d.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let held = pool.outstanding().first().map_or(0, |x| x.1);
    assert!(held > 0, "the daemon holds admitted work when stopped");
    kill(pid, Signal::SIGTERM).unwrap();
    kill(pid, Signal::SIGINT).unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    let t = Instant::now();
    let status = d.child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "stopped promptly");
    assert_eq!(status.code(), Some(1), "{status:?} with {held} items held");
}
