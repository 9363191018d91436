//! The session supervisor: the one thread that attaches to relayd (hello,
//! data channel, both rings), serves the session until relayd goes away,
//! detaches and attaches again with capped backoff, until the link is
//! closed. The session's state changes (attached, relayd's instance, the
//! intake's instance, open sends ended on detach) happen only here, so a
//! reattach is one place to read.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use libgossip::runtime::{AckOutcome, LinkEvent};
use tokio::sync::mpsc;
use wire::frame::{self, FrameReader, FrameWriter};
use wire::generated::hello::Role;
use wire::relay;
use wire::ring::{Geometry, PopError, SpinConfig};

use super::inbound::{inbound_event, read_control};
use super::stats::bump;
use super::{RING_CAPACITY, Session, State, lock};

/// First and largest wait between attach attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// Attaches, serves the session until relayd goes away, and again, until
/// the link is closed.
pub(super) fn supervise(state: &Arc<State>, tx: &mpsc::Sender<LinkEvent>) {
    let mut wait = BACKOFF.0;
    while !state.closed.load(Ordering::Relaxed) {
        match attach(state) {
            Ok((inbound, reader)) => {
                wait = BACKOFF.0;
                serve(state, tx, inbound, reader);
            }
            Err(e) => {
                bump(&state.stats.attach_failures);
                tracing::debug!(error = %e, socket = %state.cfg.relay_socket.display(), "attach to relayd failed");
                std::thread::sleep(wait);
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Why an attach attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    #[error("hello: {0}")]
    Hello(#[from] wire::WireError),
    #[error("data channel: {0}")]
    Channel(#[from] relay::ChannelError),
    #[error("ring geometry: {0}")]
    Geometry(String),
}

fn attach(state: &Arc<State>) -> Result<(wire::ring::shm::ShmConsumer, UnixStream), AttachError> {
    let control = UnixStream::connect(&state.cfg.relay_socket)?;
    control.set_read_timeout(Some(Duration::from_secs(10)))?;
    let session = {
        let mut r = FrameReader::new(&control, frame::MIN_MAX_FRAME);
        let mut w = FrameWriter::new(&control, frame::MIN_MAX_FRAME);
        let cfg = relay::hello_config(Role::Gossipd, RING_CAPACITY, state.cfg.instance);
        wire::hello::exchange(&mut r, &mut w, &cfg)?
    };
    let geo = Geometry::negotiated(session.ring_capacity, session.max_frame)
        .map_err(|e| AttachError::Geometry(e.to_string()))?;
    let rings = relay::channel::attach(&control, geo, SpinConfig::default())?;
    control.set_read_timeout(None)?;
    let reader = control.try_clone()?;
    let old = state
        .relayd_instance
        .swap(session.peer_instance, Ordering::Relaxed);
    // A new relayd numbers its seqs from 1 again: the intake must never
    // confirm an old instance's seq to it.
    lock(&state.intake).attach(session.peer_instance);
    *lock(&state.session) = Some(Session {
        outbound: rings.outbound,
        control,
        max_frame: session.max_frame,
        fbb: FlatBufferBuilder::new(),
    });
    state.stats.attached.store(true, Ordering::Relaxed);
    let n = state.stats.attaches.fetch_add(1, Ordering::Relaxed) + 1;
    state.attach_tx.send_replace(n);
    tracing::info!(
        relayd_instance = session.peer_instance,
        relayd_restarted = old != 0 && old != session.peer_instance,
        ring_capacity = session.ring_capacity,
        "attached to relayd"
    );
    Ok((rings.inbound, reader))
}

/// Runs one session: control frames on a thread of their own, inbound
/// records here; returns when relayd is gone.
fn serve(
    state: &Arc<State>,
    tx: &mpsc::Sender<LinkEvent>,
    mut inbound: wire::ring::shm::ShmConsumer,
    reader: UnixStream,
) {
    let s = state.clone();
    let ctx = tx.clone();
    let control = std::thread::Builder::new()
        .name("gossipd-control".into())
        .spawn(move || read_control(&s, &ctx, &reader));
    let mut buf = Vec::new();
    loop {
        match inbound.pop(&mut buf) {
            Ok(_) => {
                if let Some(ev) = inbound_event(state, &buf)
                    && tx.blocking_send(ev).is_err()
                {
                    bump(&state.stats.events_dropped);
                    break;
                }
            }
            Err(PopError::PeerGone(g)) => {
                tracing::info!(reason = %g, "relayd went away");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbound ring failed");
                break;
            }
        }
    }
    detach(state);
    if let Ok(h) = control {
        let _ = h.join();
    }
}

/// Forgets the session: sends fail fast, open receive-ACKed sends end
/// `NotConnected` (the DM engine retries or falls back).
pub(super) fn detach(state: &State) {
    if let Some(s) = lock(&state.session).take() {
        // Wakes the control reader (its read ends).
        let _ = s.control.shutdown(std::net::Shutdown::Both);
    }
    state.stats.attached.store(false, Ordering::Relaxed);
    lock(&state.connected).clear();
    for (_, tx) in lock(&state.acks).drain() {
        let _ = tx.send(AckOutcome::NotConnected);
    }
}
