//! The I/O backend seam: one trait, [`Socket`], for batched datagram send and
//! receive, implemented by every backend the driver can run on.
//!
//! # Note to the `mem` backend author (what `io/mem.rs` must provide)
//!
//! 1. A type implementing [`Socket`] (one per bound address) and a network
//!    object that creates them; `Endpoint::with_socket(Box::new(socket),
//!    identity, config)` runs the driver over any `Socket`.
//! 2. `poll_recv` fills `bufs[i]`/`meta[i]` and returns how many entries were
//!    filled; it may coalesce same-source datagrams of equal size into one
//!    entry with `meta.stride` (GRO) if it reports `max_receive_segments() > 1`.
//! 3. `poll_send` must honour `segment_size`: `contents` is then several
//!    datagrams of `segment_size` bytes (the last may be shorter).
//! 4. Return `Poll::Pending` after registering `cx.waker()`; never block.
//! 5. Time: use only `tokio::time` (sleep/Instant). Tests run under
//!    `#[tokio::test(start_paused = true)]`; the driver itself reads the clock
//!    through [`now`] only, so everything runs on the same virtual clock and
//!    tokio auto-advances it when every task is idle.
//!
//! # Contract
//!
//! The driver task is the only user of a socket, so methods take `&mut self`
//! and implementations need no locks of their own. The driver:
//!
//! * calls [`Socket::poll_recv`] with up to [`BATCH`] buffers, each at least
//!   `max_receive_segments() * max_udp_payload` bytes, and splits every filled
//!   entry into `len / stride` datagrams (GRO);
//! * calls [`Socket::poll_send`] once per [`Transmit`]; a transmit carries up
//!   to [`Socket::max_gso_segments`] datagrams of `segment_size` bytes (GSO).
//!   `Poll::Pending` means "would block": the driver keeps the transmit and
//!   retries it when woken, it is never dropped. An `Err` is counted and the
//!   datagram dropped (QUIC retransmits), as a real network would;
//! * never reads the wall clock directly: see [`now`].
//!
//! # Backends
//!
//! * `udp` — tokio (epoll) readiness + `quinn-udp` `sendmsg`/`recvmsg` with
//!   GSO, GRO and ECN control messages.
//! * `mem` — in-process network with virtual time and impairments (tests;
//!   only with the `test-util` feature).
//! * `uring` (cargo feature `uring`, Linux) — io_uring submission/completion.
//!
//! # Kernel bypass (AF_XDP, DPDK)
//!
//! A bypass backend implements the same trait. `poll_recv` pops completed
//! frames from the RX ring (AF_XDP: the UMEM fill/RX rings; DPDK:
//! `rte_eth_rx_burst`), strips Ethernet/IP/UDP headers, and copies the UDP
//! payload into the caller's buffers (or, with `stride`, lays several
//! same-sized payloads back to back), registering the waker on the ring's
//! event fd (AF_XDP `poll`able socket) or a busy-poll task (DPDK). `poll_send`
//! slices `contents` by `segment_size`, prepends headers into free UMEM/mbuf
//! frames and kicks the TX ring once per transmit, so one GSO batch becomes
//! one doorbell. `max_gso_segments` is the TX burst size; the driver needs
//! nothing else, which is why the trait speaks in datagrams and batches and
//! never in file descriptors.

use std::fmt;
use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

#[cfg(feature = "test-util")]
pub mod mem;
pub mod udp;
#[cfg(all(feature = "uring", target_os = "linux"))]
pub mod uring;

/// Receive batch size the driver uses (entries per `poll_recv`).
pub const BATCH: usize = 32;

/// The driver's clock: `tokio::time::Instant::now()` as a std `Instant`.
///
/// Under a paused tokio clock (`start_paused = true`) this is virtual time,
/// which makes the `mem` backend tests deterministic; in production it is the
/// monotonic clock. Every deadline the driver sets goes through tokio timers.
#[must_use]
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Explicit Congestion Notification codepoint (RFC 3168).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ecn {
    /// ECT(0).
    Ect0,
    /// ECT(1).
    Ect1,
    /// Congestion experienced.
    Ce,
}

/// Metadata of one received entry; `len / stride` datagrams (GRO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// Source address.
    pub addr: SocketAddr,
    /// Bytes written into the matching buffer.
    pub len: usize,
    /// Size of each datagram in the buffer (equal to `len` without GRO).
    pub stride: usize,
    /// ECN codepoint of the datagrams, if the backend can read it.
    pub ecn: Option<Ecn>,
    /// Local destination address, if known (multi-homed sockets).
    pub dst_ip: Option<IpAddr>,
}

impl RecvMeta {
    /// An empty entry, used to pre-size the driver's metadata array.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            addr: SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
            len: 0,
            stride: 0,
            ecn: None,
            dst_ip: None,
        }
    }
}

/// One outgoing batch: a single datagram, or with `segment_size` several
/// datagrams of that size (the last may be shorter) to one destination (GSO).
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    /// Destination address.
    pub destination: SocketAddr,
    /// ECN codepoint to set.
    pub ecn: Option<Ecn>,
    /// Payload of all datagrams, back to back.
    pub contents: &'a [u8],
    /// Datagram size when `contents` holds more than one datagram.
    pub segment_size: Option<usize>,
    /// Source address to send from, if the backend supports choosing it.
    pub src_ip: Option<IpAddr>,
}

impl Transmit<'_> {
    /// Number of datagrams in this transmit.
    #[must_use]
    pub fn segments(&self) -> usize {
        match self.segment_size {
            Some(s) if s > 0 => self.contents.len().div_ceil(s),
            _ => 1,
        }
    }
}

/// A datagram socket the driver can run on. See the module docs for the
/// contract every implementation keeps.
pub trait Socket: Send + fmt::Debug + 'static {
    /// Receives up to `bufs.len().min(meta.len())` entries. Returns the number
    /// filled, or `Pending` after registering the waker.
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>>;

    /// Sends one transmit (one or `segments()` datagrams). `Pending` = would
    /// block; the caller retries the same transmit when woken.
    fn poll_send(&mut self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<()>>;

    /// The bound local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Largest number of datagrams one transmit may carry (1 = no GSO).
    fn max_gso_segments(&self) -> usize {
        1
    }

    /// Largest number of datagrams one received entry may carry (1 = no GRO).
    fn max_receive_segments(&self) -> usize {
        1
    }

    /// Whether datagrams may be fragmented by the IP layer (no DF bit); QUIC
    /// path MTU discovery is then less reliable.
    fn may_fragment(&self) -> bool {
        false
    }

    /// Short backend name for diagnostics ("udp", "mem", "uring").
    fn backend(&self) -> &'static str;
}
