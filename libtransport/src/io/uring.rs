//! io_uring backend (cargo feature `uring`, Linux): UDP `recvmsg`/`sendmsg`
//! submitted to a ring, with GSO (`UDP_SEGMENT`), GRO (`UDP_GRO`) and ECN
//! control messages.
//!
//! Built on the `io-uring` crate rather than `tokio-uring`: tokio-uring 0.5's
//! `recvmsg` passes no control buffer, so it cannot report the GRO segment
//! size or the ECN bits, and it needs its own runtime instead of running
//! inside the driver's tokio task. See docs/adr/0035-uring-backend.md.
//!
//! # Design
//!
//! * **Receive.** [`RECV_SLOTS`] `recvmsg` operations stay posted, each with
//!   its own 64 KiB buffer, address and control buffer in a heap slot whose
//!   address never changes while the kernel owns it. `poll_recv` copies
//!   completed slots into the driver's buffers (whole GRO strides only,
//!   splitting a batch over several entries when a buffer is smaller) and
//!   re-posts each slot once it is consumed.
//! * **Send.** `poll_send` copies the transmit into a free slot, builds the
//!   `UDP_SEGMENT`/ECN control messages and queues the SQE. The sends of one
//!   burst go to the kernel together, with one `io_uring_enter`: when
//!   [`SUBMIT_BATCH`] are queued, or at the next `poll_recv`, which the
//!   driver runs after every burst and which `poll_send` guarantees by waking
//!   the task (callers outside the driver use [`UringSocket::flush`]).
//!   Submitting per transmit instead cost a third of the throughput. Completion is
//!   asynchronous: errors are counted (QUIC retransmits), and a kernel that
//!   refuses GSO (`EIO`/`EINVAL` with a segment size) turns GSO off. With no
//!   free slot the call is `Pending` — the driver's would-block path.
//! * **Wake-ups.** An eventfd registered with the ring is readable whenever a
//!   completion is posted; tokio's reactor watches it, so the backend runs
//!   inside the driver's ordinary tokio task.
//! * **Availability.** [`UringSocket::bind`] creates the ring first and
//!   probes the opcodes it needs; a kernel or sandbox that refuses io_uring
//!   gives [`UringError::Unavailable`] / [`UringError::Unsupported`] so the
//!   caller can fall back to the `udp` backend.
//! * **Shutdown.** Dropping the socket cancels posted operations and waits
//!   (bounded) for their completions before freeing the slots; a slot whose
//!   completion never came is leaked rather than freed under the kernel.

// The ring shares memory with the kernel: raw msghdr/iovec/cmsg pointers are
// the interface. Each unsafe block says what keeps it sound.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, types};
use tokio::io::unix::AsyncFd;

use super::{Ecn, RecvMeta, Socket, Transmit};

mod cmsg;
#[cfg(test)]
mod tests;

use cmsg::{CONTROL_WORDS, RecvInfo};

/// `recvmsg` operations kept posted.
pub const RECV_SLOTS: usize = 32;
/// Sends that may be in flight at once before `poll_send` is `Pending`.
pub const SEND_SLOTS: usize = 64;
/// Buffer per slot: the largest UDP payload (and so the largest GRO batch).
const SLOT_BYTES: usize = 1 << 16;
/// Largest GSO batch the kernel takes (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;
/// Largest payload of one `sendmsg` (IPv4 UDP).
const MAX_SEND_BYTES: usize = 65_507;
/// Tag in `user_data` for send slots; receive slots use their index.
const SEND_TAG: u64 = 1 << 32;
/// `user_data` of cancellation requests.
const CANCEL_TAG: u64 = u64::MAX;
/// Sends queued before `poll_send` enters the kernel itself; below this the
/// next `poll_recv` (which the driver runs after every burst of transmits,
/// and which `poll_send` guarantees by waking the task) submits them all
/// with one `io_uring_enter`.
pub const SUBMIT_BATCH: usize = 16;

/// Why the io_uring backend cannot be used here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UringError {
    /// The kernel or a sandbox (seccomp, `io_uring_disabled`) refused to
    /// create a ring.
    #[error("io_uring is unavailable: {0}")]
    Unavailable(#[source] io::Error),
    /// The ring exists but lacks an operation this backend needs.
    #[error("io_uring lacks the {0} operation")]
    Unsupported(&'static str),
    /// Creating or configuring the socket failed.
    #[error("socket setup failed: {0}")]
    Io(#[from] io::Error),
}

/// Counters of one io_uring socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UringStats {
    /// `io_uring_enter` calls that submitted work.
    pub submits: u64,
    /// Completed receives (each may carry a GRO batch).
    pub recv_completions: u64,
    /// Datagrams received (GRO batches split).
    pub recv_datagrams: u64,
    /// Receives that completed with an error (e.g. ICMP unreachable).
    pub recv_errors: u64,
    /// Receive bytes dropped because a driver buffer was smaller than one
    /// datagram (should stay 0: the driver sizes buffers for the MTU).
    pub recv_truncated: u64,
    /// Completed sends.
    pub send_completions: u64,
    /// Sends with more than one segment (GSO batches formed).
    pub gso_batches: u64,
    /// Datagrams in those GSO batches.
    pub gso_segments: u64,
    /// Sends that completed with an error (the datagrams are lost).
    pub send_errors: u64,
    /// Times GSO was switched off after the kernel refused it.
    pub gso_disabled: u64,
}

/// What one `recvmsg` or `sendmsg` needs in memory: the header and
/// everything it points to.
#[repr(C)]
struct MsgSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    control: [u64; CONTROL_WORDS],
    buf: [u8; SLOT_BYTES],
}

/// A heap slot the kernel may write to while an operation is posted, so it
/// is held through a raw pointer (no `Box` uniqueness claims) and freed only
/// when no operation uses it.
struct Slot {
    ptr: NonNull<MsgSlot>,
    in_flight: bool,
}

impl Slot {
    fn alloc() -> Self {
        // SAFETY: `MsgSlot` is plain C data for which all-zero is valid.
        let b: Box<MsgSlot> = unsafe { Box::new_zeroed().assume_init() };
        Self {
            ptr: NonNull::from(Box::leak(b)),
            in_flight: false,
        }
    }
}

/// A completed receive not yet fully handed to the driver.
struct Ready {
    slot: usize,
    result: i32,
    /// Bytes already handed out.
    offset: usize,
}

/// A UDP socket whose I/O goes through an io_uring.
pub struct UringSocket {
    // Field order matters for drop: the ring goes after the slots are dealt
    // with in `Drop::drop`; the socket outlives nothing the kernel needs.
    ring: IoUring,
    event: AsyncFd<OwnedFd>,
    sock: std::net::UdpSocket,
    local: SocketAddr,
    v6: bool,
    recv: Vec<Slot>,
    ready: VecDeque<Ready>,
    send: Vec<Slot>,
    free_send: Vec<usize>,
    /// SQEs pushed but not yet submitted.
    unsubmitted: usize,
    gso: bool,
    gro: bool,
    stats: UringStats,
}

// SAFETY: the raw slot pointers are owned exclusively by this socket (like a
// Box); moving the socket to another thread moves that ownership with it.
unsafe impl Send for UringSocket {}

impl std::fmt::Debug for UringSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSocket")
            .field("local", &self.local)
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl UringSocket {
    /// Binds `addr` and sets up the ring. Must be called inside a tokio
    /// runtime (the completion eventfd registers with its reactor).
    pub fn bind(addr: SocketAddr) -> Result<Self, UringError> {
        // The ring first: if io_uring is refused there is nothing to clean up.
        let entries = 2 * (RECV_SLOTS + SEND_SLOTS) as u32;
        let cq = 4 * (RECV_SLOTS + SEND_SLOTS) as u32;
        // Cooperative task running (5.19+) saves an interrupt per completion;
        // older kernels refuse the flag, so retry without it.
        let ring = IoUring::builder()
            .setup_cqsize(cq)
            .setup_coop_taskrun()
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(cq).build(entries))
            .map_err(UringError::Unavailable)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(UringError::Unavailable)?;
        for (code, name) in [
            (opcode::RecvMsg::CODE, "RECVMSG"),
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(UringError::Unsupported(name));
            }
        }
        // Blocking socket on purpose: io_uring waits for readiness itself,
        // while an O_NONBLOCK socket would complete receives with EAGAIN.
        let sock = std::net::UdpSocket::bind(addr)?;
        let local = sock.local_addr()?;
        let v6 = local.is_ipv6();
        let event_fd = cmsg::eventfd()?;
        ring.submitter().register_eventfd(event_fd.as_raw_fd())?;
        // SAFETY: an `OwnedFd` stays open and returns the same descriptor for
        // as long as the `AsyncFd` owns it.
        let event =
            unsafe { AsyncFd::register_with_interest(event_fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;

        let gro = cmsg::set_int(&sock, libc::SOL_UDP, cmsg::UDP_GRO, 1).is_ok();
        // ECN reporting; on a dual-stack socket both families may arrive.
        if v6 {
            cmsg::set_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
            let _ = cmsg::set_int(&sock, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
        } else {
            cmsg::set_int(&sock, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
        }
        // Don't fragment: QUIC does its own path MTU discovery.
        if v6 {
            let _ = cmsg::set_int(
                &sock,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            );
        }
        let _ = cmsg::set_int(
            &sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        );
        // Large kernel buffers absorb bursts; a capped maximum only costs speed.
        let _ = cmsg::set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        let _ = cmsg::set_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);

        let mut s = Self {
            ring,
            event,
            sock,
            local,
            v6,
            recv: (0..RECV_SLOTS).map(|_| Slot::alloc()).collect(),
            ready: VecDeque::new(),
            send: (0..SEND_SLOTS).map(|_| Slot::alloc()).collect(),
            free_send: (0..SEND_SLOTS).rev().collect(),
            unsubmitted: 0,
            // GSO was added with UDP_GRO's kernel generation (4.18 / 5.0);
            // the first refused send turns it off.
            gso: gro,
            gro,
            stats: UringStats::default(),
        };
        for i in 0..RECV_SLOTS {
            s.post_recv(i)?;
        }
        s.submit()?;
        Ok(s)
    }

    /// Turns GSO off (one datagram per transmit), for comparisons.
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// Counters.
    pub fn stats(&self) -> UringStats {
        self.stats
    }

    /// Hands queued sends to the kernel now. The driver never needs this
    /// (its next `poll_recv` does it); code that only sends does.
    pub fn flush(&mut self) -> io::Result<()> {
        self.submit()
    }

    /// Posts a `recvmsg` on receive slot `i`.
    fn post_recv(&mut self, i: usize) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        let slot = &mut self.recv[i];
        let p = slot.ptr.as_ptr();
        // SAFETY: the slot is not in flight (callers post only idle slots), so
        // we are its only user; every pointer set here points into the same
        // heap allocation, which stays put until `Drop` frees it.
        let entry = unsafe {
            (*p).iov = libc::iovec {
                iov_base: (&raw mut (*p).buf).cast(),
                iov_len: SLOT_BYTES,
            };
            (*p).hdr = std::mem::zeroed();
            (*p).hdr.msg_name = (&raw mut (*p).name).cast();
            (*p).hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            (*p).hdr.msg_iov = &raw mut (*p).iov;
            (*p).hdr.msg_iovlen = 1;
            (*p).hdr.msg_control = (&raw mut (*p).control).cast();
            (*p).hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>();
            opcode::RecvMsg::new(types::Fd(fd), &raw mut (*p).hdr)
                .build()
                .user_data(i as u64)
        };
        slot.in_flight = true;
        self.push(&entry)
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry we build points into a slot that stays
            // allocated and untouched until its completion is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.unsubmitted += 1;
                return Ok(());
            }
            // Queue full: hand what we have to the kernel and retry.
            self.submit()?;
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.unsubmitted == 0 {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => {
                self.unsubmitted = 0;
                self.stats.submits += 1;
                Ok(())
            }
            // The completion queue is momentarily full; reaping frees it and
            // the entries stay queued for the next submit.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                self.reap();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves completions into `ready` / frees send slots.
    fn reap(&mut self) {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in done {
            if ud == CANCEL_TAG {
                continue;
            }
            if ud & SEND_TAG != 0 {
                let i = (ud & !SEND_TAG) as usize;
                if let Some(slot) = self.send.get_mut(i) {
                    slot.in_flight = false;
                    self.free_send.push(i);
                }
                self.stats.send_completions += 1;
                if res < 0 {
                    self.stats.send_errors += 1;
                    // A kernel or device without UDP GSO refuses segmented
                    // sends; stop asking.
                    if self.gso && matches!(-res, libc::EIO | libc::EINVAL) {
                        self.gso = false;
                        self.stats.gso_disabled += 1;
                    }
                }
            } else if let Some(slot) = self.recv.get_mut(ud as usize) {
                slot.in_flight = false;
                self.stats.recv_completions += 1;
                self.ready.push_back(Ready {
                    slot: ud as usize,
                    result: res,
                    offset: 0,
                });
            }
        }
    }

    /// Fills driver entries from completed receives; returns how many.
    fn fill(&mut self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let max = bufs.len().min(meta.len());
        let mut n = 0;
        while n < max {
            let Some(r) = self.ready.front_mut() else {
                break;
            };
            let i = r.slot;
            if r.result < 0 {
                // Usually an ICMP error for an earlier send; not fatal.
                self.stats.recv_errors += 1;
                self.ready.pop_front();
                self.post_recv(i)?;
                continue;
            }
            let p = self.recv[i].ptr.as_ptr();
            // SAFETY: the slot's operation has completed (it came from a CQE)
            // and it is not re-posted until we are done reading it.
            let (hdr, data) = unsafe { (&(*p).hdr, &(*p).buf) };
            let total = (r.result as usize).min(SLOT_BYTES);
            if total == 0 {
                // An empty datagram carries nothing QUIC could use.
                self.ready.pop_front();
                self.post_recv(i)?;
                continue;
            }
            let Some(src) = cmsg::read_addr(
                // SAFETY: as above; the kernel wrote `msg_namelen` bytes.
                unsafe { &(*p).name },
                hdr.msg_namelen,
            ) else {
                self.stats.recv_errors += 1;
                self.ready.pop_front();
                self.post_recv(i)?;
                continue;
            };
            let RecvInfo { segment, ecn } = cmsg::read_recv_cmsgs(hdr);
            let stride = segment.unwrap_or(total).max(1);
            if r.offset == 0 {
                self.stats.recv_datagrams += total.div_ceil(stride) as u64;
            }
            let rest = &data[r.offset..total];
            let buf = &mut bufs[n];
            // Whole strides only, so every entry splits cleanly by `stride`.
            let mut take = (buf.len() / stride * stride).min(rest.len());
            if take == 0 {
                // A buffer smaller than one datagram: truncate, count.
                take = buf.len().min(rest.len()).min(stride);
                self.stats.recv_truncated += 1;
                buf[..take].copy_from_slice(&rest[..take]);
                r.offset += stride.min(rest.len());
            } else {
                buf[..take].copy_from_slice(&rest[..take]);
                r.offset += take;
            }
            meta[n] = RecvMeta {
                addr: src,
                len: take,
                stride: stride.min(take.max(1)),
                ecn: ecn_of(ecn),
                dst_ip: None,
            };
            n += 1;
            if r.offset >= total {
                self.ready.pop_front();
                self.post_recv(i)?;
            }
        }
        Ok(n)
    }

    /// Waits for the completion eventfd. `Ready` means completions may be
    /// waiting (reap again); `Pending` has registered the waker.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = match self.event.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(g)) => g,
            };
            match cmsg::drain_eventfd(self.event.get_ref().as_raw_fd()) {
                Ok(true) => return Poll::Ready(Ok(())),
                // Nothing new since we last looked: clear and wait again.
                Ok(false) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Queues one `sendmsg` of `data` (one datagram, or `segment`-sized GSO
    /// segments) to `dst` using free send slot `i`.
    fn queue_send(
        &mut self,
        i: usize,
        dst: SocketAddr,
        data: &[u8],
        segment: Option<u16>,
        ecn: Option<u8>,
    ) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        let p = self.send[i].ptr.as_ptr();
        let v4_dest = dst.is_ipv4();
        // SAFETY: slot `i` came from the free list, so no operation uses it;
        // the pointers set here all point into the slot's own allocation.
        let entry = unsafe {
            (&mut (*p).buf)[..data.len()].copy_from_slice(data);
            (*p).iov = libc::iovec {
                iov_base: (&raw mut (*p).buf).cast(),
                iov_len: data.len(),
            };
            (*p).hdr = std::mem::zeroed();
            (*p).hdr.msg_namelen = cmsg::write_addr(&mut (*p).name, dst, self.v6);
            (*p).hdr.msg_name = (&raw mut (*p).name).cast();
            (*p).hdr.msg_iov = &raw mut (*p).iov;
            (*p).hdr.msg_iovlen = 1;
            cmsg::write_send_cmsgs(&mut (*p).hdr, &mut (*p).control, segment, ecn, v4_dest);
            opcode::SendMsg::new(types::Fd(fd), &raw const (*p).hdr)
                .build()
                .user_data(SEND_TAG | i as u64)
        };
        self.send[i].in_flight = true;
        if let Some(seg) = segment {
            self.stats.gso_batches += 1;
            self.stats.gso_segments += data.len().div_ceil(usize::from(seg).max(1)) as u64;
        }
        self.push(&entry)
    }
}

fn ecn_bits(e: Option<Ecn>) -> Option<u8> {
    e.map(|e| match e {
        Ecn::Ect1 => 0b01,
        Ecn::Ect0 => 0b10,
        Ecn::Ce => 0b11,
    })
}

fn ecn_of(bits: u8) -> Option<Ecn> {
    match bits & 0b11 {
        0b01 => Some(Ecn::Ect1),
        0b10 => Some(Ecn::Ect0),
        0b11 => Some(Ecn::Ce),
        _ => None,
    }
}

/// Splits a transmit into `sendmsg` calls: with GSO, batches of whole
/// segments within the kernel's limits; without, one per datagram.
fn plan_sends(len: usize, segment: Option<usize>, gso: bool) -> (usize, usize) {
    match segment {
        Some(seg) if seg > 0 && seg < len => {
            let per = if gso {
                (MAX_SEND_BYTES / seg).clamp(1, MAX_GSO_SEGMENTS) * seg
            } else {
                seg
            };
            let per = per.min(len);
            (per, len.div_ceil(per))
        }
        _ => (len.max(1), 1),
    }
}

impl Socket for UringSocket {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            self.reap();
            let n = self.fill(bufs, meta)?;
            // Re-posted receive slots go to the kernel now.
            self.submit()?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            match self.poll_event(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r?,
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, t: &Transmit<'_>) -> Poll<io::Result<()>> {
        let (per, count) = plan_sends(t.contents.len(), t.segment_size, self.gso);
        if count > SEND_SLOTS || per > SLOT_BYTES {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "transmit larger than the io_uring backend's send slots",
            )));
        }
        loop {
            self.reap();
            if self.free_send.len() >= count {
                break;
            }
            // Every slot busy: wait for send completions (the would-block path).
            self.submit()?;
            match self.poll_event(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r?,
            }
        }
        let ecn = ecn_bits(t.ecn);
        for chunk in t.contents.chunks(per) {
            let seg = match t.segment_size {
                Some(s) if chunk.len() > s => u16::try_from(s).ok(),
                _ => None,
            };
            // Checked above: enough free slots for every chunk.
            let Some(i) = self.free_send.pop() else { break };
            self.queue_send(i, t.destination, chunk, seg, ecn)?;
        }
        if self.unsubmitted >= SUBMIT_BATCH {
            self.submit()?;
        } else {
            // Batch with the rest of this burst; the wake-up guarantees a
            // `poll_recv` (which submits) even if the driver had nothing else.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_gso_segments(&self) -> usize {
        if self.gso { MAX_GSO_SEGMENTS } else { 1 }
    }

    fn max_receive_segments(&self) -> usize {
        if self.gro { MAX_GSO_SEGMENTS } else { 1 }
    }

    fn backend(&self) -> &'static str {
        "uring"
    }
}

impl Drop for UringSocket {
    fn drop(&mut self) {
        // Cancel posted receives; sends finish on their own.
        let posted: Vec<u64> = self
            .recv
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_flight)
            .map(|(i, _)| i as u64)
            .collect();
        for ud in posted {
            let e = opcode::AsyncCancel::new(ud).build().user_data(CANCEL_TAG);
            if self.push(&e).is_err() {
                break;
            }
        }
        let ts = types::Timespec::from(Duration::from_millis(100));
        for _ in 0..50 {
            let busy = self.recv.iter().filter(|s| s.in_flight).count()
                + self.send.iter().filter(|s| s.in_flight).count();
            if busy == 0 {
                break;
            }
            let args = types::SubmitArgs::new().timespec(&ts);
            // Waits for completions (bounded by the timeout); any error ends
            // the wait and leaves the busy slots leaked below.
            if self.ring.submitter().submit_with_args(1, &args).is_err()
                && self.ring.completion().is_empty()
            {
                break;
            }
            self.unsubmitted = 0;
            self.reap();
        }
        for s in self.recv.iter().chain(&self.send) {
            if !s.in_flight {
                // SAFETY: allocated by `Slot::alloc` from a Box and no longer
                // referenced by the kernel (its operation completed).
                drop(unsafe { Box::from_raw(s.ptr.as_ptr()) });
            }
        }
    }
}
