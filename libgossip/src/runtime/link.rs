//! [`Link`]: what the runtime needs from the network and the verifier.
//!
//! The trait is object-safe (boxed futures), so the runtime holds an
//! `Arc<dyn Link>` and one implementation can be swapped for another
//! without generics leaking into [`super::Gossip`]. It is cut along the
//! lines an out-of-process deployment has: frames out (`send`, and
//! `send_acked` for direct messages, which need to know the recipient's
//! consumer took the frame), frames and peer events in (`next_event`),
//! signature batches out and verdicts back (`verify`). [`super::TransportLink`]
//! does all of it in-process over libtransport; an IPC link to relayd plus a
//! verifyd pool implements the same calls over its rings.

use crate::proto::{AttemptOutcome, PeerId, SendOutcome, Verdict};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future (keeps [`Link`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something the link reports to the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// One whole encoded frame from `from`.
    Frame {
        /// Sender (authenticated by the link).
        from: PeerId,
        /// The frame, to be decoded by the core's checked decoder.
        data: Bytes,
    },
    /// A connection to `peer` became usable.
    Up {
        /// Peer.
        peer: PeerId,
        /// Its public key, when the link learned it (the core then needs no
        /// key fetch for this origin).
        key: Option<Bytes>,
    },
    /// The connection to `peer` went away.
    Down {
        /// Peer.
        peer: PeerId,
    },
}

/// What the receiving side said about one receive-ACKed send
/// ([`Link::send_acked`]). The runtime hands it to the DM engine as the
/// attempt's outcome; anything but `Accepted` makes a direct DM fall back
/// to the relayed path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// The recipient's consumer queue admitted the frame (admission, not
    /// processing).
    Accepted,
    /// The recipient's queue was full, or it refused the stream as busy.
    Backpressured,
    /// Nobody consumes the frame's kind there, or the peer answered in a
    /// way that will not change on a retry (malformed answer, conflict).
    ConsumerGone,
    /// No connection to the peer within the budget.
    NotConnected,
    /// No answer within the budget while connected.
    TimedOut,
}

impl From<AckOutcome> for AttemptOutcome {
    fn from(o: AckOutcome) -> Self {
        match o {
            AckOutcome::Accepted => AttemptOutcome::Accepted,
            AckOutcome::Backpressured => AttemptOutcome::Backpressured,
            AckOutcome::ConsumerGone => AttemptOutcome::ConsumerGone,
            AckOutcome::NotConnected => AttemptOutcome::NotConnected,
            AckOutcome::TimedOut => AttemptOutcome::TimedOut,
        }
    }
}

/// One signature check of a batch.
#[derive(Clone, Debug)]
pub struct VerifyItem {
    /// The signer's public key.
    pub key: Bytes,
    /// The signed bytes.
    pub signed: [u8; 120],
    /// The signature.
    pub signature: Bytes,
}

/// The runtime's view of transport and verifier.
///
/// Contract: `send` resolves once (the runtime additionally bounds it by
/// `timeout`, so a link that never answers still yields exactly one
/// [`SendOutcome::TimedOut`]); `send_acked` likewise resolves once and is
/// bounded by the runtime by `budget` ([`AckOutcome::TimedOut`]); frames a
/// peer sent with either arrive as [`LinkEvent::Frame`]; `next_event` is called by one task only and
/// returns `None` when the link is gone for good; `verify` returns one
/// verdict per item, in order (a shorter answer marks the rest invalid).
pub trait Link: Send + Sync + 'static {
    /// Sends one encoded frame to `to`, giving up after `timeout`.
    fn send(&self, to: PeerId, frame: Bytes, timeout: Duration) -> BoxFuture<'static, SendOutcome>;
    /// Sends one encoded direct-message frame to `to` and waits, at most
    /// `budget`, for the receiving side to say whether its consumer took it.
    fn send_acked(
        &self,
        to: PeerId,
        frame: Bytes,
        budget: Duration,
    ) -> BoxFuture<'static, AckOutcome>;
    /// The link's round-trip estimate to `peer`, if it has one; the DM
    /// engine derives its per-attempt timeout from it.
    fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        let _ = peer;
        None
    }
    /// The next frame or peer event; `None` when the link is closed.
    fn next_event(&self) -> BoxFuture<'_, Option<LinkEvent>>;
    /// Verifies a batch.
    fn verify(&self, batch: Vec<VerifyItem>) -> BoxFuture<'static, Vec<Verdict>>;
    /// Closes the link (connections, sockets); later sends fail.
    fn close(&self) -> BoxFuture<'static, ()>;
}
