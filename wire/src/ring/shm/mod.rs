//! The production ring: a sealed memfd mapping shared by two processes, two
//! eventfds for wake-ups, and the Unix socket they were passed over kept
//! open as the liveness channel.
//!
//! # Setup
//!
//! After the hello exchange on a connected Unix stream socket has agreed on
//! the ring's [`Geometry`] (its capacity and the record limit, bounded by the
//! negotiated max frame size), one side *creates* the ring and the other
//! *attaches*:
//!
//! 1. The creator makes a memfd of [`Geometry::mapping_len`] bytes, seals
//!    its size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), writes the
//!    header (magic, version, geometry) and makes two eventfds: `data` (the
//!    consumer sleeps on it) and `space` (the producer sleeps on it).
//! 2. It sends one *offer* message — 48 bytes: `"TERNROFR"`, version
//!    (u32 LE), the attacher's role (u32 LE: 1 producer, 2 consumer),
//!    capacity (u64 LE), max record (u64 LE), 16 reserved zero bytes — with
//!    the three fds attached as `SCM_RIGHTS` (memfd, data, space).
//! 3. The attacher checks everything before trusting it: the offer matches
//!    the agreed geometry and its own role, exactly three fds arrived, the
//!    memfd is sealed against resizing and has the expected size (so the
//!    peer cannot truncate it under us and turn our reads into `SIGBUS`),
//!    the other two are eventfds, and the mapped header agrees. It then
//!    answers with a 16-byte *ack*: `"TERNRACK"`, status (u32 LE, 0 = ok,
//!    otherwise a [`Refusal`] code), 4 reserved bytes. Any refusal closes
//!    every descriptor that arrived (the control buffer has room for
//!    `SCM_MAX_FD`, 253, so none is left half-received) before the ack goes
//!    out, and the creator turns a non-zero status into
//!    [`SetupError::Rejected`].
//!
//! The whole handshake runs against one deadline ([`Setup::timeout`], 5 s by
//! default) with non-blocking socket I/O and bounded `poll`s, so a silent
//! peer gives [`SetupError::Timeout`] instead of blocking forever.
//!
//! # Memory residency
//!
//! By default the mapping is faulted in lazily: an idle ring costs about one
//! page of RSS (header and control block), and each data page is faulted in
//! the first time the producer writes it, i.e. during the first lap.
//! [`Setup::prefault`] maps with `MAP_POPULATE` instead, which takes those
//! faults at setup and pins the whole capacity in RSS for the life of the
//! ring: worth it for a ring that streams at once, a waste for the many idle
//! sessions of a daemon.
//!
//! The messages are fixed-size structs rather than flatbuffers frames: they
//! carry nothing but the fds and numbers both sides already agreed on in the
//! hello, and a fixed layout keeps the `SCM_RIGHTS` handling simple.
//!
//! # Liveness
//!
//! Nothing else is sent on the socket; it stays open for as long as the ring
//! is used. A park polls the own eventfd together with the socket (hang-up
//! or end-of-file means the peer is gone) and a pidfd of the peer (from
//! `SO_PEERCRED`), which becomes readable when the process exits even if a
//! child inherited the socket. So a peer killed with `SIGKILL` wakes a
//! parked side at once; [`SpinConfig::park_timeout`] (100 ms by default) is
//! only the backstop. A new connection gets a new memfd, so a reconnecting
//! peer always starts from an empty ring.
//!
//! # Memory safety
//!
//! The mapping is treated like device memory: the control block is accessed
//! only through atomics (zero-initialised by the kernel, which is a valid
//! `AtomicU64`), and record bytes only by copying them in or out through raw
//! pointers at offsets the protocol has validated. No Rust reference to
//! record bytes is ever formed, so a peer scribbling on the mapping can make
//! us read garbage (which the checks in [`super::core`] turn into
//! [`super::Corrupt`]) but cannot make us read or write outside it.

mod setup;

use super::core::{Region, RingMemory};
use super::endpoint::{Consumer, Parker, Producer};
use super::error::PeerGone;
use super::layout::{CONTROL_OFFSET, Control, DATA_OFFSET, Geometry, MAGIC, VERSION};
use super::spin::SpinConfig;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{MsgFlags, getsockopt, recv, sockopt::PeerCredentials};
use setup::{attach, offer};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);

/// Which end of the ring a side holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Pushes records.
    Producer = 1,
    /// Pops records.
    Consumer = 2,
}

/// Setting up a ring failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A system call failed.
    #[error("ring setup system call failed: {0}")]
    Os(#[from] Errno),
    /// Socket I/O failed.
    #[error("ring setup socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The offer is malformed or not what the hello agreed.
    #[error("bad ring offer: {0}")]
    BadOffer(&'static str),
    /// The fds that came with the offer are not what the protocol sends.
    #[error("bad ring fds: {0}")]
    BadFds(&'static str),
    /// The mapped header does not match the offer.
    #[error("ring header does not match the offer")]
    BadHeader,
    /// The attacher refused the ring; its ack says why.
    #[error("peer rejected the ring: {0}")]
    Rejected(Refusal),
    /// The offer carried a number of descriptors other than three; all of
    /// them were closed.
    #[error("ring offer carried {fds} descriptors, expected 3")]
    FdCount {
        /// Descriptors received.
        fds: usize,
    },
    /// The offer's control message was truncated (`MSG_CTRUNC`); the
    /// descriptors that did arrive were closed.
    #[error("ring offer's descriptors were truncated ({fds} received)")]
    Truncated {
        /// Descriptors received before the truncation.
        fds: usize,
    },
    /// The ack is not one (wrong magic).
    #[error("malformed ring setup ack")]
    BadAck,
    /// The peer did not complete its part of the handshake in time.
    #[error("ring setup timed out after {after:?}")]
    Timeout {
        /// The handshake's timeout.
        after: Duration,
    },
    /// The peer closed the socket during setup.
    #[error("peer closed the socket during ring setup")]
    Closed,
}

/// Why an attacher refused an offer: the status code of its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Magic, version, role or geometry differ from what was agreed (1).
    #[error("offer does not match the agreed ring")]
    Offer,
    /// Not exactly three descriptors (2).
    #[error("wrong number of descriptors")]
    FdCount,
    /// A descriptor is not what the protocol sends, or no descriptors (3).
    #[error("descriptor of the wrong kind")]
    FdKind,
    /// The mapped header does not match the offer (4).
    #[error("mapped header does not match the offer")]
    Header,
    /// The descriptors were truncated in transit (5).
    #[error("descriptors truncated")]
    Truncated,
    /// The attacher failed for a reason of its own, e.g. a system call (6).
    #[error("attacher-side failure")]
    Local,
    /// A status this version does not know.
    #[error("unknown status {0}")]
    Unknown(u32),
}

impl Refusal {
    /// The ack status code.
    pub fn status(self) -> u32 {
        match self {
            Self::Offer => 1,
            Self::FdCount => 2,
            Self::FdKind => 3,
            Self::Header => 4,
            Self::Truncated => 5,
            Self::Local => 6,
            Self::Unknown(s) => s,
        }
    }

    /// The refusal an ack status stands for; `None` for 0 (accepted).
    pub fn from_status(status: u32) -> Option<Self> {
        Some(match status {
            0 => return None,
            1 => Self::Offer,
            2 => Self::FdCount,
            3 => Self::FdKind,
            4 => Self::Header,
            5 => Self::Truncated,
            6 => Self::Local,
            s => Self::Unknown(s),
        })
    }

    /// What an attacher that failed with `err` tells the creator.
    fn of(err: &SetupError) -> Self {
        match err {
            SetupError::BadOffer(_) => Self::Offer,
            SetupError::FdCount { .. } => Self::FdCount,
            SetupError::BadFds(_) => Self::FdKind,
            SetupError::BadHeader => Self::Header,
            SetupError::Truncated { .. } => Self::Truncated,
            _ => Self::Local,
        }
    }
}

/// A mapped ring.
#[derive(Debug)]
pub struct ShmMapping {
    base: NonNull<u8>,
    geo: Geometry,
    data: ShmRegion,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access
// goes through atomics or bounds-checked copies.
unsafe impl Send for ShmMapping {}
// SAFETY: as above; `&ShmMapping` only exposes atomics and checked copies.
unsafe impl Sync for ShmMapping {}

impl ShmMapping {
    fn map(fd: &OwnedFd, geo: Geometry, prefault: bool) -> Result<Self, SetupError> {
        let len = NonZeroUsize::new(geo.mapping_len()).ok_or(SetupError::BadOffer("empty"))?;
        // MAP_POPULATE (opt-in, see the module docs) faults every page in
        // now rather than during the first lap, at the price of RSS.
        let mut flags = MapFlags::MAP_SHARED;
        if prefault {
            flags |= MapFlags::MAP_POPULATE;
        }
        // SAFETY: a fresh shared mapping of a memfd whose size is sealed at
        // `len` (checked by the caller); nothing else in this process aliases it.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                fd,
                0,
            )
        }?;
        let base = ptr.cast::<u8>();
        // SAFETY: `DATA_OFFSET < len`, so the data pointer is inside the mapping.
        let data_ptr = unsafe { base.add(DATA_OFFSET) };
        Ok(Self {
            base,
            geo,
            data: ShmRegion {
                ptr: data_ptr,
                len: geo.capacity(),
            },
        })
    }

    fn header_word(&self, index: usize) -> u64 {
        // SAFETY: the header line is the first 128 bytes of a page-aligned
        // mapping; `index < 4` keeps the read inside it and aligned. Volatile
        // because the peer may write it (we only compare the value).
        unsafe { self.base.cast::<u64>().add(index).read_volatile() }
    }

    fn write_header(&self) {
        let words = [
            MAGIC,
            u64::from(VERSION),
            self.geo.capacity() as u64,
            self.geo.max_record() as u64,
        ];
        for (i, w) in words.into_iter().enumerate() {
            // SAFETY: as in `header_word`; the creator writes before sharing.
            unsafe { self.base.cast::<u64>().add(i).write_volatile(w) };
        }
    }

    fn header_matches(&self) -> bool {
        self.header_word(0) == MAGIC
            && self.header_word(1) == u64::from(VERSION)
            && self.header_word(2) == self.geo.capacity() as u64
            && self.header_word(3) == self.geo.max_record() as u64
    }
}

impl Drop for ShmMapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and hand out no references
        // that outlive `self`.
        let _ = unsafe { munmap(self.base.cast::<c_void>(), self.geo.mapping_len()) };
    }
}

impl RingMemory for ShmMapping {
    type Data = ShmRegion;

    fn control(&self) -> &Control {
        // SAFETY: `Control` is `repr(C)` atomics, 128-byte aligned; the
        // mapping is page-aligned so `base + 128` is too, and the block ends
        // before `DATA_OFFSET` (asserted in `layout`). The memory starts
        // zeroed (a valid value for every atomic) and is only ever accessed
        // atomically, by either process, for the life of `self`.
        unsafe { &*self.base.add(CONTROL_OFFSET).cast::<Control>().as_ptr() }
    }

    fn data(&self) -> &ShmRegion {
        &self.data
    }

    fn geometry(&self) -> Geometry {
        self.geo
    }
}

/// The data area of a mapping, accessed only by bounds-checked copies.
#[derive(Debug)]
pub struct ShmRegion {
    ptr: NonNull<u8>,
    len: usize,
}

impl ShmRegion {
    fn in_bounds(&self, off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len)
    }
}

impl Region for ShmRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn load_word(&self, off: usize) -> Option<u64> {
        if !off.is_multiple_of(8) || !self.in_bounds(off, 8) {
            return None;
        }
        // SAFETY: in bounds and 8-aligned (the data area is page-aligned + 512).
        Some(unsafe { self.ptr.add(off).cast::<u64>().read_volatile() })
    }

    fn store_word(&self, off: usize, word: u64) -> bool {
        if !off.is_multiple_of(8) || !self.in_bounds(off, 8) {
            return false;
        }
        // SAFETY: as in `load_word`; the protocol gives us this word.
        unsafe { self.ptr.add(off).cast::<u64>().write_volatile(word) };
        true
    }

    fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.in_bounds(off, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the mapping and cannot overlap
        // `dst` (a Rust allocation). The bytes may be changed concurrently
        // by a misbehaving peer; we only copy them, never reference them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(off).as_ptr(), dst.as_mut_ptr(), dst.len())
        };
        true
    }

    fn write(&self, off: usize, src: &[u8]) -> bool {
        if !self.in_bounds(off, src.len()) {
            return false;
        }
        // SAFETY: as in `read`, in the other direction; the protocol gives us
        // this range until we publish it.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off).as_ptr(), src.len())
        };
        true
    }
}

/// Parks on an eventfd while watching the control socket and the peer's pidfd.
#[derive(Debug)]
pub struct ShmParker {
    /// From `SO_PEERCRED`, for logs.
    peer_pid: Option<i32>,
    own: OwnedFd,
    peer: OwnedFd,
    sock: UnixStream,
    pidfd: Option<OwnedFd>,
    epoch: Instant,
}

impl ShmParker {
    // The driver owns the clock (spin budgets); protocol code never reads it.
    #[allow(clippy::disallowed_methods)]
    fn new(own: OwnedFd, peer: OwnedFd, sock: UnixStream) -> Self {
        let peer_pid = getsockopt(&sock, PeerCredentials).ok().map(|c| c.pid());
        let pidfd = peer_pid.and_then(pidfd_open);
        tracing::debug!(peer_pid, pidfd = pidfd.is_some(), "ring parker ready");
        Self {
            peer_pid,
            own,
            peer,
            sock,
            pidfd,
            epoch: Instant::now(),
        }
    }

    /// Polls the socket, pidfd and (when `with_own`) the own eventfd.
    fn poll_fds(&mut self, timeout: PollTimeout, with_own: bool) -> Result<(), PeerGone> {
        let res = self.poll_fds_inner(timeout, with_own);
        if let Err(why) = &res {
            tracing::info!(peer_pid = self.peer_pid, ?why, "ring peer gone");
        }
        res
    }

    fn poll_fds_inner(&mut self, timeout: PollTimeout, with_own: bool) -> Result<(), PeerGone> {
        let sock_events = PollFlags::POLLIN | POLLRDHUP;
        let mut fds = Vec::with_capacity(3);
        fds.push(PollFd::new(self.sock.as_fd(), sock_events));
        if let Some(p) = &self.pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if with_own {
            fds.push(PollFd::new(self.own.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(PeerGone::Os(e as i32)),
        }
        // nix returns `None` for flags it does not name; the only such flag
        // we ask for is POLLRDHUP, so `None` means the peer hung up.
        let sock_rev = fds[0].revents().unwrap_or(POLLRDHUP);
        let pid_rev = if self.pidfd.is_some() {
            fds[1].revents()
        } else {
            None
        };
        drop(fds);
        if pid_rev.is_some_and(|r| !r.is_empty()) {
            return Err(PeerGone::Exited);
        }
        if sock_rev.intersects(PollFlags::POLLHUP | POLLRDHUP | PollFlags::POLLERR) {
            return Err(PeerGone::Hangup);
        }
        if sock_rev.contains(PollFlags::POLLIN) {
            // Nothing is sent after setup; read and discard (bounded) so a
            // chatty peer cannot keep the poll hot, and detect end-of-file.
            let mut buf = [0u8; 256];
            match recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(PeerGone::Hangup),
                Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => return Err(PeerGone::Hangup),
            }
        }
        Ok(())
    }
}

impl Parker for ShmParker {
    fn wake_peer(&mut self) {
        // EAGAIN means the counter is already huge: the peer is being woken.
        let _ = nix::unistd::write(&self.peer, &1u64.to_ne_bytes());
    }

    fn park(&mut self, timeout: Duration) -> Result<(), PeerGone> {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        self.poll_fds(timeout, true)?;
        // Reset the counter (non-blocking; EAGAIN when nothing was pending).
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.own, &mut buf);
        Ok(())
    }

    fn check_peer(&mut self) -> Result<(), PeerGone> {
        self.poll_fds(PollTimeout::ZERO, false)
    }

    fn now_ns(&self) -> u64 {
        super::spin::saturating_ns(self.epoch.elapsed())
    }
}

/// `pidfd_open(2)`; `None` where unsupported (old kernels, seccomp): then the
/// socket alone reports the peer's death.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Producer over shared memory.
pub type ShmProducer = Producer<ShmMapping, ShmParker>;
/// Consumer over shared memory.
pub type ShmConsumer = Consumer<ShmMapping, ShmParker>;

/// How a ring is set up: its geometry, the endpoint's spin configuration,
/// the handshake's deadline and whether the mapping is prefaulted.
///
/// ```no_run
/// # use wire::ring::{Geometry, shm::Setup};
/// # use std::time::Duration;
/// # fn f(sock: std::os::unix::net::UnixStream) -> Result<(), Box<dyn std::error::Error>> {
/// let geo = Geometry::new(1 << 20, 8192)?;
/// let consumer = Setup::new(geo)
///     .timeout(Duration::from_secs(1))
///     .attach_consumer(sock)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Setup {
    geo: Geometry,
    spin: SpinConfig,
    timeout: Duration,
    prefault: bool,
}

impl Setup {
    /// The default deadline of a whole handshake: generous for a loaded
    /// machine, short enough that a silent peer does not hold a session slot.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A setup of `geo` (as agreed in the hello) with the default spin
    /// configuration, a [`Self::DEFAULT_TIMEOUT`] deadline and lazy faulting.
    pub fn new(geo: Geometry) -> Self {
        Self {
            geo,
            spin: SpinConfig::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            prefault: false,
        }
    }

    /// The endpoint's spin-then-park configuration.
    pub fn spin(mut self, cfg: SpinConfig) -> Self {
        self.spin = cfg;
        self
    }

    /// The deadline for the whole handshake (sending and receiving the offer
    /// and the ack); past it the call fails with [`SetupError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether to fault the whole mapping in at setup (`MAP_POPULATE`).
    /// Off by default: see the module docs for the trade-off (first-lap
    /// page faults against the RSS of idle rings).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    fn params(&self) -> setup::Params {
        setup::Params {
            geo: self.geo,
            timeout: self.timeout,
            prefault: self.prefault,
        }
    }

    /// Creates the ring, offers it over `sock` and returns its producer; the
    /// peer calls [`Self::attach_consumer`].
    pub fn create_producer(&self, sock: UnixStream) -> Result<ShmProducer, SetupError> {
        Ok(offer(&sock, self.params(), Role::Consumer)?.into_producer(sock, self.spin))
    }

    /// Creates the ring and returns its consumer; the peer calls
    /// [`Self::attach_producer`].
    pub fn create_consumer(&self, sock: UnixStream) -> Result<ShmConsumer, SetupError> {
        Ok(offer(&sock, self.params(), Role::Producer)?.into_consumer(sock, self.spin))
    }

    /// Receives a ring offered over `sock`, checks it against the geometry,
    /// and returns its consumer.
    pub fn attach_consumer(&self, sock: UnixStream) -> Result<ShmConsumer, SetupError> {
        Ok(attach(&sock, self.params(), Role::Consumer)?.into_consumer(sock, self.spin))
    }

    /// Receives a ring offered over `sock` and returns its producer.
    pub fn attach_producer(&self, sock: UnixStream) -> Result<ShmProducer, SetupError> {
        Ok(attach(&sock, self.params(), Role::Producer)?.into_producer(sock, self.spin))
    }
}

/// Creates a ring of `geo` (as agreed in the hello), sends it over `sock`
/// and returns its producer; the peer calls [`attach_consumer`]. Uses
/// [`Setup`]'s defaults (5 s deadline, lazy faulting).
pub fn create_producer(
    sock: UnixStream,
    geo: Geometry,
    cfg: SpinConfig,
) -> Result<ShmProducer, SetupError> {
    Setup::new(geo).spin(cfg).create_producer(sock)
}

/// Creates a ring and returns its consumer; the peer calls [`attach_producer`].
/// Uses [`Setup`]'s defaults.
pub fn create_consumer(
    sock: UnixStream,
    geo: Geometry,
    cfg: SpinConfig,
) -> Result<ShmConsumer, SetupError> {
    Setup::new(geo).spin(cfg).create_consumer(sock)
}

/// Receives a ring offered over `sock`, checks it against the agreed `geo`,
/// and returns its consumer. Uses [`Setup`]'s defaults.
pub fn attach_consumer(
    sock: UnixStream,
    geo: Geometry,
    cfg: SpinConfig,
) -> Result<ShmConsumer, SetupError> {
    Setup::new(geo).spin(cfg).attach_consumer(sock)
}

/// Receives a ring offered over `sock` and returns its producer. Uses
/// [`Setup`]'s defaults.
pub fn attach_producer(
    sock: UnixStream,
    geo: Geometry,
    cfg: SpinConfig,
) -> Result<ShmProducer, SetupError> {
    Setup::new(geo).spin(cfg).attach_producer(sock)
}
