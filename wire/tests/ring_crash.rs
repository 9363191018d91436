//! Crash test with real processes: a consumer process is killed with SIGKILL
//! mid-stream; the producer's blocked push returns a typed peer-gone error
//! (designed to take well under a second: the park polls the control
//! socket's hang-up and the peer's pidfd, so it wakes at once); a new
//! consumer process then connects and starts from a clean, empty ring.
//! Capability: P2.
//!
//! The consumer is this test binary re-executed with `crash_child` selected
//! (an ignored test that only acts when the parent sets its environment).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test owns the clock: it measures how fast the death is reported.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wire::ring::shm;
use wire::ring::{Geometry, PeerGone, PushError, SpinConfig};

const SOCK_ENV: &str = "TERN_RING_CRASH_SOCK";
const EXPECT_ENV: &str = "TERN_RING_CRASH_EXPECT";
const ITEM: usize = 5517;

fn geo() -> Geometry {
    Geometry::new(1 << 18, 8192).unwrap()
}

fn record(seq: u64) -> Vec<u8> {
    let mut v = vec![(seq % 251) as u8; ITEM];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

/// The consumer process. Without [`EXPECT_ENV`] it pops forever, reporting
/// progress on stdout; with it, it checks that exactly that many records
/// arrive numbered from zero (a clean ring), then exits.
#[test]
#[ignore = "helper process for the crash test; does nothing unless spawned by it"]
fn crash_child() {
    let Ok(path) = std::env::var(SOCK_ENV) else {
        return;
    };
    let expect: Option<u64> = std::env::var(EXPECT_ENV).ok().map(|v| v.parse().unwrap());
    let sock = UnixStream::connect(path).unwrap();
    let mut c = shm::attach_consumer(sock, geo(), SpinConfig::default()).unwrap();
    let mut out = Vec::new();
    let mut stdout = std::io::stdout();
    for seq in 0.. {
        c.pop(&mut out).unwrap();
        assert_eq!(out, record(seq), "record {seq}");
        if seq == 1_000 {
            writeln!(stdout, "popped {seq}").unwrap();
            stdout.flush().unwrap();
        }
        if expect == Some(seq + 1) {
            writeln!(stdout, "clean {}", seq + 1).unwrap();
            stdout.flush().unwrap();
            return;
        }
    }
}

fn spawn_child(path: &std::path::Path, expect: Option<u64>) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(SOCK_ENV, path)
    .stdout(Stdio::piped());
    if let Some(n) = expect {
        cmd.env(EXPECT_ENV, n.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn accept(listener: &UnixListener) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "consumer process never connected"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn killed_consumer_is_reported_and_a_new_one_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.sock");
    let listener = UnixListener::bind(&path).unwrap();

    // 1. Stream to a consumer process; kill it once it has popped 1,000.
    let (mut child, lines) = spawn_child(&path, None);
    let mut p = shm::create_producer(accept(&listener), geo(), SpinConfig::default()).unwrap();
    let mut killed_at = None;
    let mut seq = 0u64;
    let err = loop {
        if let Err(e) = p.push(record(seq)) {
            break e;
        }
        seq += 1;
        if killed_at.is_none() && lines.try_recv().is_ok_and(|l| l.contains("popped")) {
            child.kill().unwrap(); // SIGKILL
            killed_at = Some(Instant::now());
        }
        assert!(seq < 10_000_000, "the consumer never reported progress");
    };
    let detected = killed_at.expect("push failed before the kill").elapsed();
    child.wait().unwrap();
    eprintln!(
        "peer death reported after {detected:?} as {err:?} ({seq} records pushed); {:?}",
        p.stats()
    );
    assert!(
        matches!(
            err,
            PushError::PeerGone(_, PeerGone::Hangup | PeerGone::Exited)
        ),
        "{err:?}"
    );
    assert_eq!(
        err.into_inner(),
        record(seq),
        "the failed record is handed back"
    );
    // Designed for well under 1 s; generous here because CI machines are shared.
    assert!(detected < Duration::from_secs(3), "took {detected:?}");
    drop(p);

    // 2. A reconnecting consumer gets a fresh ring: records from zero only.
    let (mut child, lines) = spawn_child(&path, Some(100));
    let mut p = shm::create_producer(accept(&listener), geo(), SpinConfig::default()).unwrap();
    for seq in 0..100 {
        p.push(record(seq)).unwrap();
    }
    assert_eq!(p.stats().pushed, 100);
    let status = child.wait().unwrap();
    assert!(status.success(), "reconnected consumer failed: {status:?}");
    // The child has exited, so its stdout reaches end-of-file and the reader
    // thread hangs up: this collects every line it printed.
    let got: Vec<String> = lines.iter().collect();
    assert!(got.iter().any(|l| l.contains("clean 100")), "{got:?}");
}
