//! Hardening of the shared-memory ring's setup and of its endpoints against
//! a hostile or silent peer, over real Unix socket pairs and real memfds:
//! offers with surplus or truncated descriptors are refused with an ack and
//! leave no descriptor open, a silent peer times out, refusals reach the
//! creator typed, corruption stays reported whatever the peer does next, and
//! an unused ring is not resident. Capability: P2.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The timeout tests own the clock: they measure how long setup blocks.
#![allow(clippy::disallowed_methods)]

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::MFdFlags;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg, setsockopt, sockopt::PassCred};
use nix::sys::uio::pwrite;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use wire::ring::shm::{self, Refusal, Setup, SetupError};
use wire::ring::{Geometry, PopError, PushError, SpinConfig, TryPushError};

/// Descriptor counts and RSS are process-wide: under `cargo test` (threads)
/// the tests of this file must not overlap. Under nextest each runs alone.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn geo() -> Geometry {
    Geometry::new(4096, 2040).unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The offer in the documented wire format; `attacher` 1 producer, 2 consumer.
fn offer_bytes(g: Geometry, attacher: u32) -> [u8; 48] {
    let mut m = [0u8; 48];
    m[0..8].copy_from_slice(b"TERNROFR");
    m[8..12].copy_from_slice(&1u32.to_le_bytes());
    m[12..16].copy_from_slice(&attacher.to_le_bytes());
    m[16..24].copy_from_slice(&(g.capacity() as u64).to_le_bytes());
    m[24..32].copy_from_slice(&(g.max_record() as u64).to_le_bytes());
    m
}

/// A memfd exactly as an honest creator makes it: sized, sealed, with the
/// ring header written.
fn ring_memfd(g: Geometry) -> OwnedFd {
    let memfd = nix::sys::memfd::memfd_create(
        c"forged",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .unwrap();
    nix::unistd::ftruncate(&memfd, g.mapping_len() as i64).unwrap();
    fcntl(
        &memfd,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    )
    .unwrap();
    let header: Vec<u8> = [
        u64::from_le_bytes(*b"TERNRING"),
        1,
        g.capacity() as u64,
        g.max_record() as u64,
    ]
    .iter()
    .flat_map(|w| w.to_ne_bytes())
    .collect();
    pwrite(&memfd, &header, 0).unwrap();
    memfd
}

fn eventfd() -> OwnedFd {
    nix::sys::eventfd::EventFd::new().unwrap().into()
}

/// Sends `msg` with `fds` as one raw `sendmsg` + `SCM_RIGHTS`.
fn send_raw(sock: &UnixStream, msg: &[u8], fds: &[RawFd]) {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(msg)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, msg.len());
}

fn read_ack(sock: &UnixStream) -> u32 {
    let mut ack = [0u8; 16];
    let mut s = sock;
    s.read_exact(&mut ack).unwrap();
    assert_eq!(&ack[..8], b"TERNRACK");
    u32::from_le_bytes(ack[8..12].try_into().unwrap())
}

/// A valid ring (memfd + two eventfds) padded with eventfds to `n` descriptors,
/// offered to a consumer; returns its result, the ack status, and the open
/// descriptor counts before the offer and after the refusal.
fn offer_with(n: usize, passcred: bool) -> (Result<(), SetupError>, u32, usize, usize) {
    let (a, b) = UnixStream::pair().unwrap();
    if passcred {
        setsockopt(&b, PassCred, &true).unwrap();
    }
    let mut fds = vec![ring_memfd(geo())];
    fds.extend((1..n).map(|_| eventfd()));
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let before = open_fds();
    send_raw(&a, &offer_bytes(geo(), 2), &raw);
    let res = shm::attach_consumer(b, geo(), SpinConfig::default()).map(|_| ());
    let status = read_ack(&a);
    let after = open_fds();
    (res, status, before, after)
}

/// Capability P2: an offer with 17 descriptors is refused with a non-zero
/// ack naming the count, as `SetupError::FdCount`, and every received
/// descriptor is closed (the table has as many entries as before the offer;
/// the socket handed to the attacher is gone too, so `after` is one lower).
#[test]
fn offer_with_17_fds_is_refused_and_closes_them_all() {
    let _g = serial();
    let (res, status, before, after) = offer_with(17, false);
    assert!(
        matches!(res, Err(SetupError::FdCount { fds: 17 })),
        "{res:?}"
    );
    assert_eq!(Refusal::from_status(status), Some(Refusal::FdCount));
    // The attacher consumed (and closed) its socket `b`.
    assert_eq!(after, before - 1, "descriptors leaked");
}

/// Capability P2: the same with 40 descriptors, more than the old 16-slot
/// control buffer held (which failed with ENOBUFS and leaked them).
#[test]
fn offer_with_40_fds_is_refused_and_closes_them_all() {
    let _g = serial();
    let (res, status, before, after) = offer_with(40, false);
    assert!(
        matches!(res, Err(SetupError::FdCount { fds: 40 })),
        "{res:?}"
    );
    assert_eq!(Refusal::from_status(status), Some(Refusal::FdCount));
    assert_eq!(after, before - 1, "descriptors leaked");
}

/// Capability P2: a control message truncated by the kernel (`SCM_MAX_FD`
/// descriptors plus credentials, because the caller left `SO_PASSCRED` on)
/// is refused as `Truncated` with an ack, and the descriptors that did
/// arrive are all closed.
#[test]
fn truncated_offer_is_refused_and_closes_what_arrived() {
    let _g = serial();
    let (res, status, before, after) = offer_with(253, true);
    assert!(
        matches!(res, Err(SetupError::Truncated { fds }) if fds > 3 && fds < 253),
        "{res:?}"
    );
    assert_eq!(Refusal::from_status(status), Some(Refusal::Truncated));
    assert_eq!(after, before - 1, "descriptors leaked");
}

/// Capability P2: an honest three-descriptor offer still works with
/// `SO_PASSCRED` on (the credentials message is ignored).
#[test]
fn honest_offer_with_passcred_is_accepted() {
    let _g = serial();
    let (a, b) = UnixStream::pair().unwrap();
    setsockopt(&b, PassCred, &true).unwrap();
    let t = thread::spawn(move || shm::attach_consumer(b, geo(), SpinConfig::default()));
    let mut p = shm::create_producer(a, geo(), SpinConfig::default()).unwrap();
    let mut c = t.join().unwrap().unwrap();
    p.push(b"hello").unwrap();
    let mut out = Vec::new();
    assert_eq!(c.pop(&mut out), Ok(5));
    assert_eq!(out, b"hello");
}

/// Asserts `elapsed` is at least `timeout` and well under ten times it.
fn assert_bounded(elapsed: Duration, timeout: Duration) {
    assert!(elapsed >= timeout, "returned early: {elapsed:?}");
    assert!(elapsed < timeout * 10, "took {elapsed:?}");
}

/// Capability P2: a creator that never sends its offer makes
/// `attach_consumer` fail with `Timeout` after the timeout, not never.
#[test]
fn silent_creator_times_out_attach_consumer() {
    let _g = serial();
    let (_a, b) = UnixStream::pair().unwrap();
    let timeout = Duration::from_millis(200);
    let t = Instant::now();
    let res = Setup::new(geo()).timeout(timeout).attach_consumer(b);
    assert_bounded(t.elapsed(), timeout);
    assert!(
        matches!(res, Err(SetupError::Timeout { after }) if after == timeout),
        "{res:?}"
    );
}

/// Capability P2: the same for `attach_producer`.
#[test]
fn silent_creator_times_out_attach_producer() {
    let _g = serial();
    let (_a, b) = UnixStream::pair().unwrap();
    let timeout = Duration::from_millis(200);
    let t = Instant::now();
    let res = Setup::new(geo()).timeout(timeout).attach_producer(b);
    assert_bounded(t.elapsed(), timeout);
    assert!(matches!(res, Err(SetupError::Timeout { .. })), "{res:?}");
}

/// Capability P2: an attacher that never acks makes `create_producer` fail
/// with `Timeout`, even though the socket has a blocking read with no
/// timeout configured.
#[test]
fn silent_attacher_times_out_create_producer() {
    let _g = serial();
    let (a, _b) = UnixStream::pair().unwrap();
    a.set_read_timeout(None).unwrap();
    let timeout = Duration::from_millis(200);
    let t = Instant::now();
    let res = Setup::new(geo()).timeout(timeout).create_producer(a);
    assert_bounded(t.elapsed(), timeout);
    assert!(matches!(res, Err(SetupError::Timeout { .. })), "{res:?}");
}

/// Capability P2: a refusal ack reaches the creator as a typed
/// `Rejected(Refusal)` carrying the attacher's reason.
#[test]
fn refusal_ack_is_typed_on_the_creator() {
    let _g = serial();
    let (a, b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut offer = [0u8; 48];
        (&b).read_exact(&mut offer).unwrap();
        let mut ack = [0u8; 16];
        ack[..8].copy_from_slice(b"TERNRACK");
        ack[8..12].copy_from_slice(&4u32.to_le_bytes());
        (&b).write_all(&ack).unwrap();
        b
    });
    let res = shm::create_consumer(a, geo(), SpinConfig::default());
    let _b = t.join().unwrap();
    assert!(
        matches!(res, Err(SetupError::Rejected(Refusal::Header))),
        "{res:?}"
    );
}

/// A forged creator: a valid offer for an attacher of `role`, accepted;
/// returns the creator's socket and the memfd to scribble through.
fn forged(role: u32) -> (UnixStream, UnixStream, OwnedFd, [OwnedFd; 2]) {
    let (a, b) = UnixStream::pair().unwrap();
    let memfd = ring_memfd(geo());
    let e = [eventfd(), eventfd()];
    send_raw(
        &a,
        &offer_bytes(geo(), role),
        &[memfd.as_raw_fd(), e[0].as_raw_fd(), e[1].as_raw_fd()],
    );
    (a, b, memfd, e)
}

// Offsets in the mapping (see `wire::ring::layout`).
const TAIL: u64 = 128;
const PRODUCER_CLOSED: u64 = 136;
const HEAD: u64 = 256;
const CONSUMER_CLOSED: u64 = 264;
const DATA: u64 = 1024;

fn scribble(memfd: &OwnedFd, off: u64, word: u64) {
    pwrite(memfd, &word.to_ne_bytes(), off as i64).unwrap();
}

/// Capability P2: once the producer has seen a corrupt `head`, every later
/// push reports `Corrupt` — after the consumer also sets its closed flag,
/// "repairs" its index, and hangs up the socket — never `PeerGone`.
#[test]
fn corrupt_stays_sticky_on_the_producer() {
    let _g = serial();
    let (a, b, memfd, _e) = forged(1);
    let ack = thread::spawn(move || (read_ack(&a), a));
    let mut p = shm::attach_producer(b, geo(), SpinConfig::park_only()).unwrap();
    let (status, a) = ack.join().unwrap();
    assert_eq!(status, 0);
    // Two 2,048-byte slots fill the 4,096-byte area; a third reloads `head`.
    p.try_push([1u8; 2040]).unwrap();
    p.try_push([2u8; 2040]).unwrap();
    scribble(&memfd, HEAD, u64::MAX);
    let err = p.try_push([3u8; 8]).unwrap_err();
    assert!(matches!(err, TryPushError::Corrupt(..)), "{err:?}");
    scribble(&memfd, CONSUMER_CLOSED, 1);
    let err = p.try_push([3u8; 8]).unwrap_err();
    assert!(
        matches!(err, TryPushError::Corrupt(..)),
        "after close: {err:?}"
    );
    let err = p.push([3u8; 8]).unwrap_err();
    assert!(
        matches!(err, PushError::Corrupt(..)),
        "after close: {err:?}"
    );
    // A "repaired" head (everything consumed) does not un-poison.
    scribble(&memfd, HEAD, 4096);
    let err = p.push([3u8; 8]).unwrap_err();
    assert!(
        matches!(err, PushError::Corrupt(..)),
        "after repair: {err:?}"
    );
    // Neither does the peer hanging up (the creator's socket is dropped).
    drop(a);
    let err = p.push([3u8; 8]).unwrap_err();
    assert!(
        matches!(err, PushError::Corrupt(..)),
        "after hang-up: {err:?}"
    );
    let err = p.try_push_deferred([3u8; 8]).unwrap_err();
    assert!(matches!(err, TryPushError::Corrupt(..)), "{err:?}");
}

/// Capability P2: once the consumer has seen a corrupt `tail`, every later
/// pop reports `Corrupt` — after the producer publishes a valid record,
/// sets its closed flag and hangs up.
#[test]
fn corrupt_stays_sticky_on_the_consumer() {
    let _g = serial();
    let (a, b, memfd, _e) = forged(2);
    let mut c = shm::attach_consumer(b, geo(), SpinConfig::park_only()).unwrap();
    assert_eq!(read_ack(&a), 0);
    let mut out = Vec::new();
    scribble(&memfd, TAIL, 1 << 40);
    assert!(matches!(c.try_pop(&mut out), Err(PopError::Corrupt(_))));
    // A valid 8-byte record and a valid tail: still corrupt.
    scribble(&memfd, DATA, (0x5245_4331u64 << 32) | 8);
    scribble(&memfd, DATA + 8, 42);
    scribble(&memfd, TAIL, 16);
    assert!(matches!(c.try_pop(&mut out), Err(PopError::Corrupt(_))));
    scribble(&memfd, PRODUCER_CLOSED, 1);
    assert!(matches!(c.try_pop(&mut out), Err(PopError::Corrupt(_))));
    assert!(matches!(c.pop(&mut out), Err(PopError::Corrupt(_))));
    drop(a);
    assert!(matches!(c.pop(&mut out), Err(PopError::Corrupt(_))));
    assert!(matches!(c.try_pop(&mut out), Err(PopError::Corrupt(_))));
}

/// Resident kB of this process's ring mappings (`/proc/self/smaps`).
fn ring_rss_kb() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_ring = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_ring = line.contains("memfd:tern-ring");
        } else if in_ring && let Some(v) = line.strip_prefix("Rss:") {
            kb += v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    kb
}

/// Sets up a 64 MiB ring pair in-process and returns its RSS in kB.
fn rss_of_setup(prefault: bool) -> u64 {
    let g = Geometry::new(64 << 20, 8192).unwrap();
    let setup = Setup::new(g).prefault(prefault);
    let (a, b) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || setup.attach_consumer(b).unwrap());
    let p = setup.create_producer(a).unwrap();
    let c = t.join().unwrap();
    let kb = ring_rss_kb();
    drop((p, c));
    kb
}

/// Capability P2: without prefaulting (the default) a fresh 64 MiB ring is
/// not resident — both mappings together hold well under 1 MiB — while with
/// `.prefault(true)` the creator's mapping alone holds the full capacity
/// (which shows the measurement can see it).
#[test]
fn lazy_ring_is_not_resident_before_use() {
    let _g = serial();
    let lazy = rss_of_setup(false);
    assert!(lazy < 1024, "lazy ring resident: {lazy} kB");
    let eager = rss_of_setup(true);
    assert!(eager >= 64 * 1024, "prefaulted ring resident: {eager} kB");
}
