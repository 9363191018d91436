//! The relay socket: one gossipd session at a time (ADR 0060). The hello
//! and every frame run on server-core (hello and partial-frame deadlines,
//! budgeted buffers, connection cap); the data channel's socketpair and
//! rings are set up on a blocking thread; control frames (`Consumed`) are
//! read here; the outbound ring has a thread of its own.
//! Capabilities: P2, P3, R1, R3.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use server_core::{Accepted, FrameReader, FrameSender, Listener, ReadError};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tracing::Instrument as _;
use wire::frame::RelayMsg;
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;
use wire::relay::{self, RelaydRings};
use wire::ring::{Geometry, PopError, SpinConfig};

use super::stats::bump;
use super::{Attached, Shared, error_frame, outbound};

/// Outbound records between the ring thread and the send task; a full
/// channel stops the thread, which leaves gossipd's ring full.
const OUTBOUND_QUEUE: usize = 1024;

/// Accepts on the relay socket until the daemon stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: Listener) {
    let s = shared.clone();
    let stop = async move { s.stopped().await };
    listener
        .serve_until(stop, |conn| {
            tokio::spawn(connection(shared.clone(), conn));
        })
        .await;
}

/// Releases the single-session flag when the session (or its attempt)
/// ends, however it ends.
struct Taken<'a>(&'a Shared);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.0.session_taken.store(false, Ordering::Release);
    }
}

async fn refuse(mut stream: tokio::net::UnixStream, code: ErrorCode, text: &str) {
    let frame = error_frame(code, text);
    // Best effort within a bound: the peer is being closed anyway.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}

async fn connection(shared: Arc<Shared>, conn: Accepted) {
    let pid = conn.peer.pid;
    // Fast path: with a gossipd attached, refuse before the hello, so the
    // newcomer's hello itself reports `Busy`.
    if shared.session_taken.load(Ordering::Acquire) {
        refuse_second(&shared, conn.stream, pid).await;
        return;
    }
    let span = tracing::info_span!("gossipd", pid);
    match run(&shared, conn).instrument(span).await {
        Ok(()) => tracing::info!(pid, "gossipd detached"),
        Err(SessionError::Busy) => {}
        Err(e) => {
            bump(&shared.counters.sessions_failed);
            tracing::info!(pid, error = %e, "gossipd session ended");
        }
    }
}

async fn refuse_second(shared: &Shared, stream: tokio::net::UnixStream, pid: i32) {
    bump(&shared.counters.sessions_refused_busy);
    tracing::warn!(pid, "second gossipd refused: one session at a time");
    refuse(stream, ErrorCode::Busy, "a gossipd is already attached").await;
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("hello: {0}")]
    Hello(#[from] server_core::HelloError),
    #[error("peer offered no shared-memory ring")]
    NoRing,
    #[error("data channel: {0}")]
    Channel(#[from] relay::ChannelError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control frame: {0}")]
    Read(#[from] ReadError),
    #[error("setup thread failed")]
    Thread,
    #[error("another gossipd is attached")]
    Busy,
}

async fn run(shared: &Arc<Shared>, conn: Accepted) -> Result<(), SessionError> {
    let Accepted {
        mut stream,
        slot,
        at,
        peer,
    } = conn;
    let limits = &shared.cfg.relay_limits;
    let stats = slot.stats().clone();
    let hello = relay::hello_config(Role::Relayd, shared.cfg.ring_capacity, shared.instance);
    let session = server_core::framed::hello(&mut stream, &hello, limits, at, &stats).await?;
    // The session is taken only after a hello, so a client that stalls in
    // its hello never keeps gossipd out; of two that both finished it, the
    // later is refused here (after its hello: an error frame in place of
    // the data-channel offer).
    if shared
        .session_taken
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        refuse_second(shared, stream, peer.pid).await;
        return Err(SessionError::Busy);
    }
    let _taken = Taken(shared);
    let Ok(geo) = Geometry::negotiated(session.ring_capacity, session.max_frame) else {
        refuse(stream, ErrorCode::Unsupported, "tern.relay needs ShmRing").await;
        return Err(SessionError::NoRing);
    };
    // The ring setup is blocking (it waits for gossipd's ring offer), so it
    // runs on a blocking thread with a std handle of the control socket.
    let std = stream.into_std()?;
    std.set_nonblocking(false)?;
    let (std, rings) = tokio::task::spawn_blocking(move || {
        let rings = relay::channel::serve(&std, geo, SpinConfig::default());
        (std, rings)
    })
    .await
    .map_err(|_| SessionError::Thread)?;
    let RelaydRings { inbound, outbound } = rings?;
    std.set_nonblocking(true)?;
    let stream = Arc::new(tokio::net::UnixStream::from_std(std)?);
    let max = session.max_frame as usize;
    let control = FrameSender::new(
        stream.clone(),
        max,
        shared.responses.clone(),
        limits,
        stats.clone(),
    );
    // An attached gossipd may be silent on this socket for hours (data
    // travels in the rings): busy keeps it from being evicted as idle.
    let _busy = slot.busy();
    let id = shared.counters.sessions.inc() + 1;
    {
        let mut st = shared.lock();
        st.retainer.attach();
        st.session = Some(Attached {
            id,
            inbound,
            control: control.clone(),
            peer_pid: peer.pid,
        });
    }
    shared.wake_drain.notify_one();
    super::outbound::announce_connections(shared, &control);
    tracing::info!(
        pid = peer.pid,
        session = id,
        ring = geo.capacity(),
        peer_instance = session.peer_instance,
        "gossipd attached"
    );
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let ring_thread = std::thread::Builder::new()
        .name("relay-outbound".into())
        .spawn(move || outbound_ring(outbound, tx));
    let sends = match ring_thread {
        Ok(_) => Some(tokio::spawn(outbound::serve(
            shared.clone(),
            control.clone(),
            rx,
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "no outbound ring thread; gossipd cannot send");
            None
        }
    };
    let mut reader = FrameReader::new(max, shared.reads.clone(), limits, stats);
    let result = loop {
        let next = tokio::select! {
            r = reader.next(&stream, &slot) => r,
            () = shared.stopped() => break Ok(()),
        };
        match next {
            Ok(Some(frame)) => control_frame(shared, &control, &frame.bytes),
            Ok(None) => break Ok(()),
            Err(e) => {
                let code = match e {
                    ReadError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                    ReadError::ZeroLength => Some(ErrorCode::Malformed),
                    _ => None,
                };
                if let Some(code) = code {
                    let _ =
                        control.send(&error_frame(code, &e.to_string())[wire::frame::PREFIX_LEN..]);
                }
                break Err(e.into());
            }
        }
    };
    detach(shared, id);
    if let Some(t) = sends {
        t.abort();
    }
    result
}

/// Applies one control frame from gossipd.
fn control_frame(shared: &Shared, control: &Arc<FrameSender>, bytes: &[u8]) {
    match wire::frame::decode_relay(bytes) {
        Ok(RelayMsg::Consumed(c)) => shared.lock().retainer.consumed(c.seqs().iter()),
        Ok(other) => {
            bump(&shared.counters.control_unexpected);
            tracing::debug!(msg = ?std::mem::discriminant(&other), "unexpected control frame");
            let text = "the relay control socket carries only Consumed from gossipd";
            let _ = control
                .send(&error_frame(ErrorCode::UnexpectedMessage, text)[wire::frame::PREFIX_LEN..]);
        }
        Err(e) => {
            bump(&shared.counters.control_unexpected);
            let _ = control.send(
                &error_frame(ErrorCode::Malformed, &e.to_string())[wire::frame::PREFIX_LEN..],
            );
        }
    }
}

/// Forgets session `id` if it is still the attached one. Retained DMs stay
/// (for the next gossipd); a record left over from a full ring is not
/// retained and is lost, counted.
fn detach(shared: &Shared, id: u64) {
    let mut st = shared.lock();
    if st.session.as_ref().is_some_and(|a| a.id == id) {
        st.session = None;
        if st.pending.take().is_some() {
            bump(&shared.counters.inbound_lost_on_detach);
        }
    }
}

/// The outbound ring thread: pops gossipd's records (blocking, woken by
/// the ring's parker) into the bounded channel until gossipd hangs up or
/// the send task is gone.
fn outbound_ring(mut ring: wire::ring::shm::ShmConsumer, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = Vec::new();
    loop {
        match ring.pop(&mut buf) {
            Ok(_) => {
                if tx.blocking_send(std::mem::take(&mut buf)).is_err() {
                    return;
                }
            }
            Err(PopError::PeerGone(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "outbound ring failed");
                return;
            }
        }
    }
}
