//! Frames on an admitted connection: the hello under a deadline, a reader
//! that budgets its buffer and times out a started frame, and a sender that
//! never blocks its caller.
//!
//! * [`hello`] runs `wire::hello::exchange_stream_async` (which reads the
//!   peer's hello exactly, so descriptors passed right after it stay in the
//!   socket) and gives up at the hello deadline. [`open`] does that for an
//!   admitted connection and sets up its reader and sender.
//! * [`FrameReader::next`] waits for a frame as long as the peer likes
//!   (idle connections are the registry's business), but once the first
//!   byte of a length prefix arrives the whole frame must follow within the
//!   frame deadline. Its buffer grows with the bytes that actually arrive
//!   (64 KiB, doubling, up to the announced length), each step reserved
//!   from the daemon's read [`Budget`] first: a peer announcing 16 MiB and
//!   sending ten bytes holds ten bytes' worth, and a budget that is spent
//!   makes the reader wait for returns, at most until the frame deadline.
//!   The connection is held [`crate::Slot::busy`] while a frame is partly
//!   read. Cancel-safe: the partial frame stays in the reader.
//! * [`FrameSender::send`] may be called from any thread (workers answer
//!   directly). It writes at once if the socket takes it; otherwise the rest
//!   is queued — reserved from the daemon's backlog budget and capped per
//!   connection — and a task on the runtime drains it. A queue that makes
//!   no progress for the write deadline, or outgrows its cap, closes the
//!   connection.

use std::io;
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BufMut as _;
use tokio::net::UnixStream;
use tokio::time::Instant;
use wire::WireError;
use wire::hello::{HelloConfig, Session};

use crate::budget::{Budget, Reservation};
use crate::limits::Limits;
use crate::registry::{Busy, Slot};
use crate::stats::{ListenerStats, bump};

/// First buffer step for a frame body; later steps double.
const FIRST_CHUNK: usize = 64 << 10;

/// The hello failed or timed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Not completed within the hello deadline.
    #[error("hello not completed within {0:?}")]
    Timeout(std::time::Duration),
    /// The exchange failed (mismatch, garbage, peer gone); `wire` has
    /// already told the peer why where it could.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Runs the hello on `stream`, accepted at `accepted_at`, within the hello
/// deadline of `limits`; counted in `stats` when it fails.
pub async fn hello(
    stream: &mut UnixStream,
    local: &HelloConfig,
    limits: &Limits,
    accepted_at: Instant,
    stats: &ListenerStats,
) -> Result<Session, HelloError> {
    let deadline = accepted_at + limits.hello_deadline;
    match tokio::time::timeout_at(deadline, wire::hello::exchange_stream_async(stream, local)).await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            bump(&stats.hello_failures);
            Err(HelloError::Wire(e))
        }
        Err(_) => {
            bump(&stats.hello_timeouts);
            Err(HelloError::Timeout(limits.hello_deadline))
        }
    }
}

/// An admitted connection past its hello, ready for frames (see [`open`]).
#[derive(Debug)]
pub struct Opened {
    /// The socket, shared by the reader and the sender.
    pub stream: Arc<UnixStream>,
    /// Its place in the registry.
    pub slot: Slot,
    /// The listener's counters.
    pub stats: Arc<ListenerStats>,
    /// What the hello negotiated.
    pub session: Session,
    /// Reads request frames of at most the negotiated size.
    pub reader: FrameReader,
    /// Sends answers without blocking.
    pub tx: Arc<FrameSender>,
}

/// Runs the hello on an admitted connection under the hello deadline, then
/// builds its frame reader and sender for the negotiated frame size, with
/// `reads` and `responses` as their budgets.
pub async fn open(
    conn: crate::listen::Accepted,
    local: &HelloConfig,
    limits: &Limits,
    reads: Arc<Budget>,
    responses: Arc<Budget>,
) -> Result<Opened, HelloError> {
    let crate::listen::Accepted {
        mut stream,
        slot,
        at,
        ..
    } = conn;
    let stats = slot.stats().clone();
    let session = hello(&mut stream, local, limits, at, &stats).await?;
    let max = session.max_frame as usize;
    let stream = Arc::new(stream);
    let tx = FrameSender::new(stream.clone(), max, responses, limits, stats.clone());
    let reader = FrameReader::new(max, reads, limits, stats.clone());
    Ok(Opened {
        stream,
        slot,
        stats,
        session,
        reader,
        tx,
    })
}

/// Reading a frame failed; every variant ends the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Socket error, or end of file inside a frame.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The length prefix announces more than the negotiated maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Negotiated maximum.
        max: usize,
    },
    /// A zero length prefix (no frame is empty).
    #[error("zero-length frame")]
    ZeroLength,
    /// A started frame did not complete within the frame deadline.
    #[error("frame not completed within {0:?}")]
    Deadline(std::time::Duration),
    /// Buffer memory stayed unavailable until the frame deadline.
    #[error("no read-buffer memory within {0:?}")]
    NoBuffer(std::time::Duration),
}

/// A complete frame payload and the read-budget share its buffer holds;
/// keep the reservation for as long as the bytes are kept.
#[derive(Debug)]
pub struct Frame {
    /// The payload (length prefix excluded).
    pub bytes: Vec<u8>,
    /// Its share of the read budget.
    pub reservation: Reservation,
}

/// Reads frames from one connection. See the module docs.
#[derive(Debug)]
pub struct FrameReader {
    max_frame: usize,
    budget: Arc<Budget>,
    frame_deadline: std::time::Duration,
    stats: Arc<ListenerStats>,
    prefix: [u8; wire::frame::PREFIX_LEN],
    prefix_got: usize,
    /// Announced length once the prefix is complete.
    want: Option<usize>,
    body: Vec<u8>,
    reservation: Option<Reservation>,
    deadline: Option<Instant>,
    busy: Option<Busy>,
}

enum Step {
    Read(usize),
    Eof,
}

impl FrameReader {
    /// A reader accepting frames up to `max_frame` bytes, buffering from
    /// `budget`, with the frame deadline of `limits`.
    #[must_use]
    pub fn new(
        max_frame: usize,
        budget: Arc<Budget>,
        limits: &Limits,
        stats: Arc<ListenerStats>,
    ) -> Self {
        FrameReader {
            max_frame,
            budget,
            frame_deadline: limits.frame_deadline,
            stats,
            prefix: [0; wire::frame::PREFIX_LEN],
            prefix_got: 0,
            want: None,
            body: Vec::new(),
            reservation: None,
            deadline: None,
            busy: None,
        }
    }

    /// Whether a frame is partly read.
    #[must_use]
    pub fn in_frame(&self) -> bool {
        self.prefix_got > 0
    }

    fn fail(&mut self, e: ReadError) -> ReadError {
        match &e {
            ReadError::Deadline(_) => bump(&self.stats.frame_timeouts),
            ReadError::NoBuffer(_) => bump(&self.stats.buffer_timeouts),
            ReadError::TooLarge { .. } | ReadError::ZeroLength => bump(&self.stats.frame_too_large),
            ReadError::Io(_) => {}
        }
        self.reset();
        e
    }

    fn reset(&mut self) {
        self.prefix_got = 0;
        self.want = None;
        self.body = Vec::new();
        self.reservation = None;
        self.deadline = None;
        self.busy = None;
    }

    /// One read into the prefix or the body, bounded by the frame deadline
    /// once a frame has started.
    async fn read_some(&mut self, stream: &UnixStream) -> Result<Step, ReadError> {
        let deadline = self.deadline;
        let fut = async {
            loop {
                stream.readable().await?;
                let r = if self.want.is_none() {
                    stream.try_read(&mut self.prefix[self.prefix_got..])
                } else {
                    let left = self.body.capacity() - self.body.len();
                    stream.try_read_buf(&mut (&mut self.body).limit(left))
                };
                match r {
                    Ok(0) => return Ok(Step::Eof),
                    Ok(n) => return Ok(Step::Read(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
        };
        match deadline {
            None => fut.await,
            Some(d) => match tokio::time::timeout_at(d, fut).await {
                Ok(r) => r,
                Err(_) => Err(ReadError::Deadline(self.frame_deadline)),
            },
        }
    }

    /// Makes room for at least one more body byte, reserving it first.
    async fn grow(&mut self, want: usize) -> Result<(), ReadError> {
        let cap = self.body.capacity();
        let target = want.min(cap.saturating_mul(2).max(FIRST_CHUNK));
        let extra = target - cap;
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        let res = self.reservation.get_or_insert_with(|| self.budget.empty());
        if !res.try_grow(extra) && !res.grow_until(extra, deadline).await {
            return Err(ReadError::NoBuffer(self.frame_deadline));
        }
        self.body.reserve_exact(target - self.body.len());
        // The allocator may round up; account for what it really gave.
        let over = self.body.capacity().saturating_sub(target);
        if over > 0 {
            let _ = res.try_grow(over);
        }
        Ok(())
    }

    /// The next frame; `Ok(None)` when the peer closed cleanly between
    /// frames. `slot` is held busy while a frame is partly read.
    pub async fn next(
        &mut self,
        stream: &UnixStream,
        slot: &Slot,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(want) = self.want {
                if self.body.len() == want {
                    let bytes = std::mem::take(&mut self.body);
                    let reservation = self
                        .reservation
                        .take()
                        .unwrap_or_else(|| self.budget.empty());
                    self.reset();
                    return Ok(Some(Frame { bytes, reservation }));
                }
                if self.body.len() == self.body.capacity()
                    && let Err(e) = self.grow(want).await
                {
                    return Err(self.fail(e));
                }
            }
            match self.read_some(stream).await {
                Ok(Step::Read(n)) => {
                    if self.want.is_some() {
                        continue;
                    }
                    if self.prefix_got == 0 {
                        self.deadline = Some(Instant::now() + self.frame_deadline);
                        self.busy = Some(slot.busy());
                    }
                    self.prefix_got += n;
                    if self.prefix_got == self.prefix.len() {
                        let len = u32::from_le_bytes(self.prefix) as usize;
                        if len == 0 {
                            return Err(self.fail(ReadError::ZeroLength));
                        }
                        if len > self.max_frame {
                            let max = self.max_frame;
                            return Err(self.fail(ReadError::TooLarge { len, max }));
                        }
                        self.want = Some(len);
                    }
                }
                Ok(Step::Eof) if self.prefix_got == 0 => {
                    self.reset();
                    return Ok(None);
                }
                Ok(Step::Eof) => {
                    let e =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed inside a frame");
                    return Err(self.fail(ReadError::Io(e)));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

/// Sending a frame failed; the connection is (being) closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection was closed (by us, the peer, or a failed write).
    #[error("connection closed")]
    Closed,
    /// Unread responses would exceed the per-connection cap or the backlog
    /// budget; the connection is closed.
    #[error("unread responses over budget")]
    Overflow,
    /// The frame is larger than the negotiated maximum.
    #[error("frame of {0} bytes exceeds the negotiated maximum")]
    TooLarge(usize),
    /// Socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
struct SendState {
    backlog: Vec<u8>,
    sent: usize,
    reservation: Option<Reservation>,
    flushing: bool,
    closed: bool,
}

/// The sending side of a connection, shareable across threads. See the
/// module docs.
#[derive(Debug)]
pub struct FrameSender {
    stream: Arc<UnixStream>,
    runtime: tokio::runtime::Handle,
    max_frame: usize,
    max_backlog: usize,
    write_deadline: std::time::Duration,
    budget: Arc<Budget>,
    stats: Arc<ListenerStats>,
    state: Mutex<SendState>,
}

fn lock(m: &Mutex<SendState>) -> MutexGuard<'_, SendState> {
    // Every update leaves the state consistent (bytes and offsets only).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FrameSender {
    /// A sender on `stream` for frames up to `max_frame` bytes, queueing
    /// from `budget` under the backlog cap and write deadline of `limits`.
    /// Must be created inside a tokio runtime (its drain task runs there).
    #[must_use]
    pub fn new(
        stream: Arc<UnixStream>,
        max_frame: usize,
        budget: Arc<Budget>,
        limits: &Limits,
        stats: Arc<ListenerStats>,
    ) -> Arc<FrameSender> {
        Arc::new(FrameSender {
            stream,
            runtime: tokio::runtime::Handle::current(),
            max_frame,
            max_backlog: limits.max_backlog,
            write_deadline: limits.write_deadline,
            budget,
            stats,
            state: Mutex::new(SendState {
                backlog: Vec::new(),
                sent: 0,
                reservation: None,
                flushing: false,
                closed: false,
            }),
        })
    }

    /// Whether the connection is closed for sending.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Queued bytes not yet written.
    #[must_use]
    pub fn backlog(&self) -> usize {
        let s = lock(&self.state);
        s.backlog.len() - s.sent
    }

    /// Sends one frame (the length prefix is added). Never blocks.
    pub fn send(self: &Arc<Self>, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > self.max_frame || payload.is_empty() {
            return Err(SendError::TooLarge(payload.len()));
        }
        let prefix = (payload.len() as u32).to_le_bytes();
        let mut s = lock(&self.state);
        if s.closed {
            return Err(SendError::Closed);
        }
        let mut written = 0;
        let total = prefix.len() + payload.len();
        if s.backlog.len() == s.sent {
            loop {
                let r = if written < prefix.len() {
                    self.stream.try_write_vectored(&[
                        io::IoSlice::new(&prefix[written..]),
                        io::IoSlice::new(payload),
                    ])
                } else {
                    self.stream.try_write(&payload[written - prefix.len()..])
                };
                match r {
                    Ok(n) => {
                        written += n;
                        if written == total {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.close_locked(&mut s);
                        return Err(SendError::Io(e));
                    }
                }
            }
        }
        // Queue what is left.
        let left = total - written;
        let queued = s.backlog.len() - s.sent;
        let res = s.reservation.get_or_insert_with(|| self.budget.empty());
        if queued + left > self.max_backlog || !res.try_grow(left) {
            bump(&self.stats.backlog_overflows);
            tracing::debug!(queued, left, "response backlog over budget; closing");
            self.close_locked(&mut s);
            return Err(SendError::Overflow);
        }
        if written < prefix.len() {
            s.backlog.extend_from_slice(&prefix[written..]);
            s.backlog.extend_from_slice(payload);
        } else {
            s.backlog
                .extend_from_slice(&payload[written - prefix.len()..]);
        }
        if !s.flushing {
            s.flushing = true;
            let me = self.clone();
            self.runtime.spawn(async move { me.drain().await });
        }
        Ok(())
    }

    async fn drain(self: Arc<Self>) {
        loop {
            let ready = tokio::time::timeout(self.write_deadline, self.stream.writable()).await;
            let mut s = lock(&self.state);
            match ready {
                Err(_) => {
                    bump(&self.stats.write_timeouts);
                    tracing::debug!(deadline = ?self.write_deadline, "peer not reading; closing");
                    self.close_locked(&mut s);
                    return;
                }
                Ok(Err(_)) => {
                    self.close_locked(&mut s);
                    return;
                }
                Ok(Ok(())) => {}
            }
            if s.closed {
                return;
            }
            loop {
                let sent = s.sent;
                match self.stream.try_write(&s.backlog[sent..]) {
                    Ok(n) => {
                        s.sent += n;
                        if s.sent == s.backlog.len() {
                            s.backlog = Vec::new();
                            s.sent = 0;
                            s.reservation = None;
                            s.flushing = false;
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.close_locked(&mut s);
                        return;
                    }
                }
            }
            // Give memory back as the queue drains.
            if s.sent > s.backlog.len() / 2 {
                let sent = s.sent;
                s.backlog.drain(..sent);
                s.sent = 0;
                let keep = s.backlog.len();
                if let Some(r) = s.reservation.as_mut() {
                    r.shrink_to(keep);
                }
            }
        }
    }

    fn close_locked(&self, s: &mut SendState) {
        if !s.closed {
            s.closed = true;
            s.backlog = Vec::new();
            s.sent = 0;
            s.reservation = None;
            shutdown(&self.stream);
        }
    }

    /// Closes the connection both ways (the reader sees end of file).
    pub fn close(&self) {
        let mut s = lock(&self.state);
        self.close_locked(&mut s);
    }
}

/// Shuts a socket down both ways; the peer and our own reader notice at once.
pub fn shutdown(stream: &UnixStream) {
    let _ = nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    struct Setup {
        ours: UnixStream,
        peer: UnixStream,
        slot: Slot,
        stats: Arc<ListenerStats>,
        limits: Limits,
    }

    #[allow(clippy::disallowed_methods)] // the slot's admission time
    fn setup() -> Setup {
        let (ours, peer) = UnixStream::pair().unwrap();
        let reg = Registry::new(100);
        let (l, stats) = reg.add_listener("t", 10);
        let slot = reg.admit(l, std::time::Instant::now()).unwrap();
        let limits = Limits::default()
            .frame_deadline(Duration::from_millis(150))
            .write_deadline(Duration::from_millis(150))
            .max_backlog(256 << 10);
        Setup {
            ours,
            peer,
            slot,
            stats,
            limits,
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn frames_arrive_in_pieces_idle_gaps_are_free_and_budget_returns() {
        let mut s = setup();
        let budget = Budget::new("read", 1 << 20);
        let mut r = FrameReader::new(1 << 20, budget.clone(), &s.limits, s.stats.clone());
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let bytes = framed(&big);
        let writer = tokio::spawn(async move {
            // Idle longer than the frame deadline before starting: allowed.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for chunk in bytes.chunks(7_001) {
                s.peer.write_all(chunk).await.unwrap();
            }
            s.peer.write_all(&framed(b"small")).await.unwrap();
            s.peer
        });
        let f = r.next(&s.ours, &s.slot).await.unwrap().unwrap();
        assert_eq!(f.bytes, big);
        assert!(f.reservation.units() >= big.len());
        assert_eq!(budget.used(), f.reservation.units());
        drop(f);
        let f = r.next(&s.ours, &s.slot).await.unwrap().unwrap();
        assert_eq!(f.bytes, b"small");
        drop(f);
        assert_eq!(budget.used(), 0);
        drop(writer.await.unwrap());
        assert!(
            r.next(&s.ours, &s.slot).await.unwrap().is_none(),
            "clean end"
        );
    }

    #[tokio::test]
    async fn a_started_frame_must_finish_within_the_deadline() {
        let mut s = setup();
        let budget = Budget::new("read", 1 << 20);
        let mut r = FrameReader::new(1 << 20, budget.clone(), &s.limits, s.stats.clone());
        s.peer.write_all(&1000u32.to_le_bytes()[..2]).await.unwrap();
        let t0 = Instant::now();
        assert!(matches!(
            r.next(&s.ours, &s.slot).await,
            Err(ReadError::Deadline(_))
        ));
        assert!(t0.elapsed() >= Duration::from_millis(150));
        // Prefix complete, body trickled: same.
        let mut s = setup();
        let mut r = FrameReader::new(1 << 20, budget.clone(), &s.limits, s.stats.clone());
        s.peer.write_all(&framed(&[1; 1000])[..500]).await.unwrap();
        assert!(matches!(
            r.next(&s.ours, &s.slot).await,
            Err(ReadError::Deadline(_))
        ));
        assert_eq!(s.stats.snapshot().frame_timeouts, 1);
        assert_eq!(budget.used(), 0, "the partial buffer was returned");
    }

    #[tokio::test]
    async fn spent_budget_waits_then_gives_up_and_bad_prefixes_are_typed() {
        let mut s = setup();
        let budget = Budget::new("read", 100 << 10);
        let mut r = FrameReader::new(1 << 20, budget.clone(), &s.limits, s.stats.clone());
        let payload = vec![9u8; 200 << 10];
        let w = tokio::spawn(async move {
            let _ = s.peer.write_all(&framed(&payload)).await;
            s.peer
        });
        assert!(matches!(
            r.next(&s.ours, &s.slot).await,
            Err(ReadError::NoBuffer(_))
        ));
        assert_eq!(s.stats.snapshot().buffer_timeouts, 1);
        assert_eq!(budget.used(), 0);
        drop(w.await.unwrap());

        for (prefix, zero) in [(0u32, true), (2 << 20, false)] {
            let mut s = setup();
            let mut r = FrameReader::new(1 << 20, budget.clone(), &s.limits, s.stats.clone());
            s.peer.write_all(&prefix.to_le_bytes()).await.unwrap();
            let e = r.next(&s.ours, &s.slot).await.unwrap_err();
            assert_eq!(matches!(e, ReadError::ZeroLength), zero, "{e}");
            assert_eq!(
                matches!(e, ReadError::TooLarge { len, max: 1_048_576 } if len == 2 << 20),
                !zero
            );
            assert_eq!(s.stats.snapshot().frame_too_large, 1);
        }
    }

    #[tokio::test]
    async fn partly_read_frame_holds_the_slot_busy() {
        let mut s = setup();
        let budget = Budget::new("read", 1 << 20);
        let mut r = FrameReader::new(1 << 20, budget, &s.limits, s.stats.clone());
        let bytes = framed(b"abcdef");
        s.peer.write_all(&bytes[..6]).await.unwrap();
        // Cancelled mid-frame: the partial state stays and so does `busy`.
        let t = tokio::time::timeout(Duration::from_millis(20), r.next(&s.ours, &s.slot)).await;
        assert!(t.is_err());
        assert!(r.in_frame());
        assert!(s.slot.is_busy());
        s.peer.write_all(&bytes[6..]).await.unwrap();
        let f = r.next(&s.ours, &s.slot).await.unwrap().unwrap();
        assert_eq!(f.bytes, b"abcdef");
        assert!(!r.in_frame());
        assert!(!s.slot.is_busy());
    }

    #[tokio::test]
    async fn sender_queues_without_blocking_and_closes_a_peer_that_never_reads() {
        let mut s = setup();
        let budget = Budget::new("backlog", 1 << 20);
        let tx = FrameSender::new(
            Arc::new(s.ours),
            1 << 20,
            budget.clone(),
            &s.limits,
            s.stats.clone(),
        );
        // From a thread outside the runtime, as a worker would.
        let tx2 = tx.clone();
        let sent = std::thread::spawn(move || {
            let mut n = 0;
            let frame = vec![5u8; 16 << 10];
            loop {
                match tx2.send(&frame) {
                    Ok(()) => n += 1,
                    Err(SendError::Overflow) => return n,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .join()
        .unwrap();
        assert!(sent > 2);
        assert!(tx.is_closed());
        assert_eq!(budget.used(), 0);
        assert_eq!(s.stats.snapshot().backlog_overflows, 1);
        // The peer gets whole frames, then end of file.
        let mut all = Vec::new();
        s.peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len() % (4 + (16 << 10)), 0);

        // A small backlog nobody reads closes at the write deadline.
        let s = setup();
        let tx = FrameSender::new(
            Arc::new(s.ours),
            1 << 20,
            budget.clone(),
            &s.limits,
            s.stats.clone(),
        );
        let frame = vec![1u8; 64 << 10];
        while tx.backlog() == 0 {
            tx.send(&frame).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(tx.is_closed());
        assert_eq!(s.stats.snapshot().write_timeouts, 1);
        assert!(matches!(tx.send(b"x"), Err(SendError::Closed)));
        drop(s.peer);
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_frame_in_order() {
        let mut s = setup();
        let budget = Budget::new("backlog", 1 << 20);
        let tx = FrameSender::new(
            Arc::new(s.ours),
            1 << 20,
            budget.clone(),
            &s.limits,
            s.stats.clone(),
        );
        let frames: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; 5_000 + usize::from(i) * 100])
            .collect();
        for f in &frames {
            tx.send(f).unwrap();
        }
        let mut got = Vec::new();
        for f in &frames {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut len = [0u8; 4];
            s.peer.read_exact(&mut len).await.unwrap();
            let mut body = vec![0; u32::from_le_bytes(len) as usize];
            s.peer.read_exact(&mut body).await.unwrap();
            assert_eq!(&body, f);
            got.push(body);
        }
        assert_eq!(got.len(), 40);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(tx.backlog(), 0);
        assert_eq!(budget.used(), 0);
        assert!(!tx.is_closed());
    }
}
