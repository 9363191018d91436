//! The shared-memory ring between two threads over a real Unix socket pair:
//! the memfd/eventfd setup with `SCM_RIGHTS`, streaming 5,517-byte records
//! through wrap-around, and typed rejection of offers that do not match the
//! hello or whose fds are not what the protocol sends. Capability: P2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::memfd::MFdFlags;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;
use wire::ring::shm::{self, SetupError};
use wire::ring::{Geometry, PeerGone, PopError, SpinConfig};

fn geo() -> Geometry {
    Geometry::new(1 << 16, 8192).unwrap()
}

fn record(seq: u64) -> Vec<u8> {
    let len = 1 + (seq as usize * 977) % 5517;
    let mut v: Vec<u8> = (0..len).map(|i| (seq as u8) ^ (i as u8)).collect();
    if len >= 8 {
        v[..8].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

fn stream(cfg: SpinConfig) {
    const N: u64 = 5_000;
    let (a, b) = UnixStream::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut c = shm::attach_consumer(b, geo(), cfg).unwrap();
        let mut out = Vec::new();
        for seq in 0..N {
            c.pop(&mut out).unwrap();
            assert_eq!(out, record(seq), "record {seq}");
        }
        // The producer closes after its last record: drained, then typed.
        assert_eq!(c.pop(&mut out), Err(PopError::PeerGone(PeerGone::Closed)));
        c.stats()
    });
    let mut p = shm::create_producer(a, geo(), cfg).unwrap();
    for seq in 0..N {
        p.push(record(seq)).unwrap();
    }
    let ps = p.stats();
    drop(p);
    let cs = consumer.join().unwrap();
    assert_eq!(ps.pushed, N);
    assert_eq!(cs.popped, N);
    eprintln!("producer {ps:?}\nconsumer {cs:?}");
}

#[test]
fn stream_over_memfd_parking_only() {
    stream(SpinConfig::park_only());
}

#[test]
fn stream_over_memfd_spinning() {
    stream(SpinConfig::default());
}

#[test]
fn consumer_may_create_and_producer_attach() {
    let (a, b) = UnixStream::pair().unwrap();
    let producer = thread::spawn(move || {
        let mut p = shm::attach_producer(b, geo(), SpinConfig::default()).unwrap();
        for seq in 0..100 {
            p.push(record(seq)).unwrap();
        }
    });
    let mut c = shm::create_consumer(a, geo(), SpinConfig::default()).unwrap();
    let mut out = Vec::new();
    for seq in 0..100 {
        c.pop(&mut out).unwrap();
        assert_eq!(out, record(seq));
    }
    producer.join().unwrap();
}

#[test]
fn try_push_on_a_full_shared_ring_hands_the_record_back() {
    let (a, b) = UnixStream::pair().unwrap();
    let small = Geometry::new(4096, 2040).unwrap();
    let t = thread::spawn(move || shm::attach_consumer(b, small, SpinConfig::default()).unwrap());
    let mut p = shm::create_producer(a, small, SpinConfig::default()).unwrap();
    let _c = t.join().unwrap();
    // Two 2,048-byte slots fill the 4,096-byte area.
    p.try_push(vec![1u8; 2040]).unwrap();
    p.try_push(vec![2u8; 2040]).unwrap();
    let back = p.try_push(vec![3u8; 2040]).unwrap_err().into_inner();
    assert_eq!(back, vec![3u8; 2040]);
    assert_eq!(p.stats().full_rejections, 1);
}

#[test]
fn offer_with_other_geometry_is_rejected_on_both_sides() {
    let (a, b) = UnixStream::pair().unwrap();
    let other = Geometry::new(1 << 15, 8192).unwrap();
    let t = thread::spawn(move || shm::attach_consumer(b, other, SpinConfig::default()));
    let created = shm::create_producer(a, geo(), SpinConfig::default());
    let attached = t.join().unwrap();
    assert!(
        matches!(attached, Err(SetupError::BadOffer(_))),
        "{attached:?}"
    );
    assert!(
        matches!(created, Err(SetupError::Rejected(shm::Refusal::Offer))),
        "{created:?}"
    );
}

/// A hand-made offer in the documented wire format (see `wire::ring::shm`).
fn offer_bytes(geo: Geometry) -> [u8; 48] {
    let mut m = [0u8; 48];
    m[0..8].copy_from_slice(b"TERNROFR");
    m[8..12].copy_from_slice(&1u32.to_le_bytes());
    m[12..16].copy_from_slice(&2u32.to_le_bytes()); // attacher = consumer
    m[16..24].copy_from_slice(&(geo.capacity() as u64).to_le_bytes());
    m[24..32].copy_from_slice(&(geo.max_record() as u64).to_le_bytes());
    m
}

fn hostile_offer(fds: &[std::os::fd::RawFd]) -> Result<(), SetupError> {
    let (a, b) = UnixStream::pair().unwrap();
    let msg = offer_bytes(geo());
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        a.as_raw_fd(),
        &[IoSlice::new(&msg)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let res = shm::attach_consumer(b, geo(), SpinConfig::default()).map(|_| ());
    // The attacher always answers; a rejection carries a non-zero status.
    let mut ack = [0u8; 16];
    (&a).read_exact(&mut ack).unwrap();
    assert_eq!(&ack[..8], b"TERNRACK");
    assert_ne!(ack[8..12], [0, 0, 0, 0]);
    res
}

#[test]
fn offer_without_fds_is_rejected() {
    let res = hostile_offer(&[]);
    assert!(matches!(res, Err(SetupError::BadFds(_))), "{res:?}");
}

/// A memfd of `geo()`'s mapping size, created with `flags`.
fn sized_memfd(flags: MFdFlags) -> OwnedFd {
    let memfd = nix::sys::memfd::memfd_create(c"hostile", flags).unwrap();
    nix::unistd::ftruncate(&memfd, geo().mapping_len() as i64).unwrap();
    memfd
}

/// A memfd of the right size, sealed against resizing as an honest offer is.
fn sealed_memfd() -> OwnedFd {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    let memfd = sized_memfd(MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING);
    fcntl(
        &memfd,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    )
    .unwrap();
    memfd
}

#[test]
fn unsealed_memfd_is_rejected() {
    // A memfd the peer could still shrink: touching it after a shrink would
    // be SIGBUS, so it must be refused before mapping.
    let memfd = sized_memfd(MFdFlags::MFD_CLOEXEC);
    let e1 = nix::sys::eventfd::EventFd::new().unwrap();
    let e2 = nix::sys::eventfd::EventFd::new().unwrap();
    let res = hostile_offer(&[memfd.as_raw_fd(), e1.as_raw_fd(), e2.as_raw_fd()]);
    assert!(matches!(res, Err(SetupError::BadFds(_))), "{res:?}");
}

#[test]
fn wake_fd_that_is_not_an_eventfd_is_rejected() {
    let memfd = sized_memfd(MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING);
    let (r, w) = nix::unistd::pipe().unwrap();
    let res = hostile_offer(&[memfd.as_raw_fd(), r.as_raw_fd(), w.as_raw_fd()]);
    assert!(matches!(res, Err(SetupError::BadFds(_))), "{res:?}");
}

#[test]
fn header_mismatch_is_rejected() {
    // Sealed, right size, real eventfds, but the mapping holds no ring header.
    let memfd = sealed_memfd();
    let e1 = nix::sys::eventfd::EventFd::new().unwrap();
    let e2 = nix::sys::eventfd::EventFd::new().unwrap();
    let res = hostile_offer(&[memfd.as_raw_fd(), e1.as_raw_fd(), e2.as_raw_fd()]);
    assert!(matches!(res, Err(SetupError::BadHeader)), "{res:?}");
}

/// A hostile creator: a correct offer, then garbage written into the shared
/// memory (through the memfd, as another process would). The consumer must
/// answer with typed errors and never read outside the mapping.
fn hostile_ring(tail: u64, first_header: u64) -> PopError {
    use nix::sys::uio::pwrite;
    let g = geo();
    let memfd = sealed_memfd();
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
    let e1 = nix::sys::eventfd::EventFd::new().unwrap();
    let e2 = nix::sys::eventfd::EventFd::new().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let msg = offer_bytes(g);
    let fds = [memfd.as_raw_fd(), e1.as_raw_fd(), e2.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        a.as_raw_fd(),
        &[IoSlice::new(&msg)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let mut c = shm::attach_consumer(b, g, SpinConfig::default()).unwrap();
    // The data area starts at 1024, the producer's tail at 128 (layout docs).
    pwrite(&memfd, &first_header.to_ne_bytes(), 1024).unwrap();
    pwrite(&memfd, &tail.to_ne_bytes(), 128).unwrap();
    let mut out = Vec::new();
    let err = c.try_pop(&mut out).unwrap_err();
    assert!(
        out.capacity() <= g.max_record(),
        "allocation beyond the record limit"
    );
    // Poisoned: the same error again, never a read of the garbage.
    assert_eq!(c.try_pop(&mut out).unwrap_err(), err);
    drop(a);
    err
}

#[test]
fn hostile_mapping_gives_typed_errors() {
    let rec = |len: u64| (0x5245_4331u64 << 32) | len;
    let cases = [
        (1u64 << 40, rec(8)),        // tail far beyond one capacity
        (64, rec(1 << 31)),          // record longer than the limit
        (16, rec(4000)),             // record longer than what was published
        (64, 0xdead_beef_0000_0001), // unknown tag
    ];
    for (tail, header) in cases {
        let err = hostile_ring(tail, header);
        assert!(
            matches!(err, PopError::Corrupt(_)),
            "tail {tail} header {header:#x}: {err:?}"
        );
    }
}
