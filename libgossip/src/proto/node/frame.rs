//! [`Node::handle_frame`]: bytes from a peer, through the checked decoder.

use super::Node;
use crate::proto::PeerId;
use crate::wire::{DmEnvelope, Frame, WireError, WireStats};
use bytes::Bytes;
use std::time::Instant;

/// What became of an accepted frame.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub enum Received {
    /// A topic message, handled by the core (drain [`Node::poll_output`]).
    Handled,
    /// A direct message: the core does not route DMs, the caller does.
    Dm(DmEnvelope),
}

impl Node {
    /// A frame from `from`, as bytes off the wire.
    ///
    /// Decodes it with the node's [`crate::wire::Decoder`] (limits from
    /// [`crate::wire::Limits::from_config`]) and hands topic messages to
    /// [`Node::handle_message`]. A malformed frame, or a well-formed one for
    /// a topic this node has not joined, is refused with the [`WireError`]
    /// and counted in [`crate::proto::Snapshot::wire`]; it changes no other
    /// state. Never panics.
    pub fn handle_frame(
        &mut self,
        from: PeerId,
        frame: &Bytes,
        now: Instant,
    ) -> Result<Received, WireError> {
        let topics = &self.topics;
        match self.wire.decode(frame, |t| topics.contains_key(t))? {
            Frame::Topic(m) => {
                self.handle_message(from, m, now);
                Ok(Received::Handled)
            }
            Frame::Dm(d) => Ok(Received::Dm(d)),
        }
    }

    /// The frame decoder's counters.
    pub fn wire_stats(&self) -> WireStats {
        self.wire.stats()
    }
}
