//! In-process network with deterministic virtual time and impairments.
//!
//! Two layers:
//!
//! * [`Network`] (in `net`, with `link` and `nat`) is a plain sans-IO state
//!   machine: hosts with bounded inboxes, directional links with delay,
//!   jitter, loss, reorder, duplication, a bandwidth cap with a drop-tail
//!   queue, partitions and one-way blackholes, and NATs whose bindings expire
//!   without outbound traffic (optionally rebinding to a new port). It takes
//!   `now` and a seed, so it is unit-tested without a runtime.
//! * [`MemNetwork`] shares one `Network` between [`MemSocket`]s, each of which
//!   implements the driver's [`Socket`] trait. Time is tokio's clock (through
//!   [`super::now`]), so under `#[tokio::test(start_paused = true)]` a
//!   30-minute idle period costs no real time and every run with the same
//!   seed and the same inputs behaves the same.
//!
//! # How sockets move virtual time forward
//!
//! There is no background task. A socket whose inbox is empty registers its
//! waker and arms a tokio timer for the network's next arrival; when it
//! fires, that socket delivers everything due (`Network::handle_timeout`) and
//! wakes the sockets that got mail. A send that creates an earlier arrival
//! than any armed timer wakes one waiting socket so it re-arms. So at least
//! one waiting socket always holds a timer for the next arrival, and tokio's
//! paused clock jumps straight to it when every task is idle.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::{Ecn, RecvMeta, Socket, Transmit};

mod link;
mod nat;
mod net;

pub use link::LinkConfig;
pub use nat::{Nat, NatConfig, NatFiltering, NatStats};
pub use net::{Datagram, NatId, Network, NetworkConfig, NetworkError, NetworkStats};

/// Per-socket options of the simulated UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemSocketOptions {
    /// Datagrams one transmit may carry (1 = no GSO).
    pub gso_segments: usize,
    /// Same-source, same-size datagrams coalesced into one received entry
    /// (1 = no GRO), as the kernel's UDP GRO does.
    pub gro_segments: usize,
}

impl Default for MemSocketOptions {
    fn default() -> Self {
        Self {
            gso_segments: 10,
            gro_segments: 10,
        }
    }
}

#[derive(Debug)]
struct Waiter {
    waker: Waker,
    /// The arrival this socket's timer is armed for, if any.
    armed: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    net: Network,
    waiting: HashMap<SocketAddr, Waiter>,
}

impl Shared {
    /// Delivers everything due and wakes the sockets that got mail.
    fn advance(&mut self, now: Instant) {
        for host in self.net.handle_timeout(now) {
            if let Some(w) = self.waiting.remove(&host) {
                w.waker.wake();
            }
        }
    }

    /// After a send: make sure some waiting socket holds a timer for the
    /// (possibly earlier) next arrival, waking one to re-arm if none does.
    fn ensure_timer(&mut self) {
        let Some(next) = self.net.poll_timeout() else {
            return;
        };
        if self
            .waiting
            .values()
            .any(|w| w.armed.is_some_and(|a| a <= next))
        {
            return;
        }
        // Deterministic choice: the lowest address.
        if let Some(&addr) = self.waiting.keys().min()
            && let Some(w) = self.waiting.remove(&addr)
        {
            w.waker.wake();
        }
    }
}

/// A shared handle to a simulated network; clones see the same network.
#[derive(Debug, Clone)]
pub struct MemNetwork {
    shared: Arc<Mutex<Shared>>,
}

impl MemNetwork {
    /// A network whose randomness is fixed by `seed`.
    pub fn new(seed: u64, cfg: NetworkConfig) -> Self {
        let shared = Shared {
            net: Network::new(seed, cfg),
            waiting: HashMap::new(),
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data in a consistent
        // state (every mutation is a single push/pop or counter), so a
        // poisoned lock is still usable.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the network state (impairments, partitions, counters).
    /// Mail that becomes deliverable as a result is picked up by the next
    /// timer; call [`MemNetwork::kick`] after changes that must take effect
    /// before the next arrival.
    pub fn with<R>(&self, f: impl FnOnce(&mut Network) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g.net);
        g.ensure_timer();
        r
    }

    /// Wakes every waiting socket so they re-read the network.
    pub fn kick(&self) {
        let mut g = self.lock();
        for (_, w) in g.waiting.drain() {
            w.waker.wake();
        }
    }

    /// Binds a public host at `addr`.
    pub fn bind(&self, addr: SocketAddr) -> Result<MemSocket, NetworkError> {
        self.bind_with(addr, None, MemSocketOptions::default())
    }

    /// Binds a host at private `addr` behind `nat`.
    pub fn bind_behind(&self, addr: SocketAddr, nat: NatId) -> Result<MemSocket, NetworkError> {
        self.bind_with(addr, Some(nat), MemSocketOptions::default())
    }

    /// Binds a host with explicit options, behind `nat` if given.
    pub fn bind_with(
        &self,
        addr: SocketAddr,
        nat: Option<NatId>,
        opts: MemSocketOptions,
    ) -> Result<MemSocket, NetworkError> {
        let mut g = self.lock();
        match nat {
            None => g.net.add_host(addr)?,
            Some(n) => g.net.add_host_behind(addr, n)?,
        }
        Ok(MemSocket {
            net: self.clone(),
            addr,
            opts: MemSocketOptions {
                gso_segments: opts.gso_segments.max(1),
                gro_segments: opts.gro_segments.max(1),
            },
            timer: None,
            pending: None,
        })
    }

    /// Adds a NAT.
    pub fn add_nat(&self, cfg: NatConfig) -> NatId {
        self.lock().net.add_nat(cfg)
    }

    /// Network-wide counters.
    pub fn stats(&self) -> NetworkStats {
        self.lock().net.stats()
    }
}

/// A simulated UDP socket bound in a [`MemNetwork`]. Dropping it unbinds
/// the address (a crashed process); mail still in flight is then dropped.
#[derive(Debug)]
pub struct MemSocket {
    net: MemNetwork,
    addr: SocketAddr,
    opts: MemSocketOptions,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A datagram popped from the inbox that did not fit the current GRO
    /// entry; it starts the next one.
    pending: Option<Datagram>,
}

impl MemSocket {
    /// The network this socket lives in.
    pub fn network(&self) -> &MemNetwork {
        &self.net
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        let mut g = self.net.lock();
        g.waiting.remove(&self.addr);
        // Removing can only fail if the host is already gone, which is the
        // state we want.
        let _ = g.net.remove_host(self.addr);
        // This socket may have held the timer others rely on.
        g.ensure_timer();
    }
}

fn ecn_bits(e: Option<Ecn>) -> u8 {
    match e {
        None => 0b00,
        Some(Ecn::Ect1) => 0b01,
        Some(Ecn::Ect0) => 0b10,
        Some(Ecn::Ce) => 0b11,
    }
}

fn ecn_of(bits: u8) -> Option<Ecn> {
    match bits & 0b11 {
        0b01 => Some(Ecn::Ect1),
        0b10 => Some(Ecn::Ect0),
        0b11 => Some(Ecn::Ce),
        _ => None,
    }
}

impl MemSocket {
    /// Fills one receive entry from `first` plus, with GRO, following
    /// datagrams of the same source, ECN and size. Returns the entry's meta.
    fn fill_entry(&mut self, g: &mut Shared, first: Datagram, buf: &mut [u8]) -> RecvMeta {
        let stride = first.payload.len();
        let n = stride.min(buf.len());
        buf[..n].copy_from_slice(&first.payload[..n]);
        let mut len = n;
        let mut segs = 1;
        // Coalesce only full-size strides, like the kernel; a shorter datagram
        // may end the batch.
        while segs < self.opts.gro_segments && n == stride && stride > 0 {
            let Some(next) = g.net.recv(self.addr) else {
                break;
            };
            let fits = len + next.payload.len() <= buf.len();
            if next.src != first.src
                || next.ecn != first.ecn
                || next.payload.len() > stride
                || !fits
            {
                self.pending = Some(next);
                break;
            }
            buf[len..len + next.payload.len()].copy_from_slice(&next.payload);
            len += next.payload.len();
            segs += 1;
            if next.payload.len() < stride {
                break;
            }
        }
        RecvMeta {
            addr: first.src,
            len,
            stride,
            ecn: ecn_of(first.ecn),
            dst_ip: Some(first.dst.ip()),
        }
    }
}

impl Socket for MemSocket {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let net = self.net.clone();
        let mut g = net.lock();
        let now = super::now();
        g.advance(now);
        let max = bufs.len().min(meta.len());
        let mut filled = 0;
        while filled < max {
            let Some(d) = self.pending.take().or_else(|| g.net.recv(self.addr)) else {
                break;
            };
            meta[filled] = self.fill_entry(&mut g, d, &mut bufs[filled]);
            filled += 1;
        }
        if filled > 0 {
            g.waiting.remove(&self.addr);
            return Poll::Ready(Ok(filled));
        }
        if !g.net.has_host(self.addr) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "simulated host was removed from the network",
            )));
        }
        // Nothing yet: wait for the next arrival anywhere (we may be the one
        // who must deliver it) or for a wake-up from another socket.
        let next = g.net.poll_timeout();
        if let Some(at) = next {
            let deadline = tokio::time::Instant::from_std(at);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                // Due already (the clock moved while we looked): go round again.
                cx.waker().wake_by_ref();
            }
        }
        g.waiting.insert(
            self.addr,
            Waiter {
                waker: cx.waker().clone(),
                armed: next,
            },
        );
        Poll::Pending
    }

    fn poll_send(&mut self, _cx: &mut Context<'_>, t: &Transmit<'_>) -> Poll<io::Result<()>> {
        let mut g = self.net.lock();
        let now = super::now();
        let payload = Bytes::copy_from_slice(t.contents);
        let seg = t.segment_size;
        match g
            .net
            .send(now, self.addr, t.destination, ecn_bits(t.ecn), payload, seg)
        {
            Ok(()) => {
                g.ensure_timer();
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, e))),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn max_gso_segments(&self) -> usize {
        self.opts.gso_segments
    }

    fn max_receive_segments(&self) -> usize {
        self.opts.gro_segments
    }

    fn backend(&self) -> &'static str {
        "mem"
    }
}

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
