//! Inputs and outputs of the state machine as plain data.

use super::message::{Kind, Message};
use super::types::{MessageId, PeerId, TopicId};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// Something for the driver to do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send a message; report the result with [`crate::proto::Node::handle_send_outcome`].
    Transmit(Transmit),
    /// Hand a verified message to local subscribers.
    Deliver(Delivery),
    /// Verify a signature; answer with [`crate::proto::Node::handle_verdict`].
    Verify(VerifyRequest),
    /// Something the application may want to know.
    Event(Event),
}

/// One message to one peer.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Destination.
    pub to: PeerId,
    /// What.
    pub msg: Message,
    /// Give up (and report [`SendOutcome::TimedOut`]) after this long; derived
    /// from the peer's observed RTT.
    pub timeout: Duration,
    /// This send is the single recovery probe of a cooled (peer, topic);
    /// informational (the node tracks it by `id`).
    pub probe: bool,
    /// Handle to report the outcome with ([`crate::proto::Node::handle_send_outcome`]).
    /// Every transmit must be reported exactly once: its outbound-budget slot
    /// is held until then.
    pub id: u64,
}

/// A verified message for local subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Topic.
    pub topic: TopicId,
    /// Message id.
    pub id: MessageId,
    /// Origin (signature verified).
    pub origin: PeerId,
    /// Origin's sequence number.
    pub seqno: u64,
    /// Payload.
    pub payload: Bytes,
    /// Hops from the origin.
    pub hops: u16,
    /// Neighbour it came from (the node itself for own messages).
    pub from: PeerId,
}

/// A signature check to run (in `verifyd`, in-process, or a simulator stub).
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    /// Handle to answer with.
    pub req: u64,
    /// Whose signature.
    pub origin: PeerId,
    /// The origin's public key (matches `origin`).
    pub key: Bytes,
    /// The signed bytes.
    pub signed: [u8; 120],
    /// The signature.
    pub signature: Bytes,
}

/// Result of a signature check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signature valid.
    Valid,
    /// Signature invalid (or the key did not parse).
    Invalid,
}

/// What happened to a [`Transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted by the peer after `latency`.
    Delivered {
        /// Time from handing the message to the transport to its acceptance.
        latency: Duration,
    },
    /// No acceptance within the transmit's timeout.
    TimedOut,
    /// The peer is unreachable (connection refused or closed).
    Failed,
}

/// Notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer entered a topic's active view.
    NeighborUp {
        /// Topic.
        topic: TopicId,
        /// Peer.
        peer: PeerId,
    },
    /// A peer left a topic's active view.
    NeighborDown {
        /// Topic.
        topic: TopicId,
        /// Peer.
        peer: PeerId,
    },
    /// Sends to a slow peer on a topic are suppressed and it was demoted to LAZY.
    Cooled {
        /// Topic.
        topic: TopicId,
        /// Peer.
        peer: PeerId,
        /// Suppressed until (then one probe).
        until: Instant,
    },
    /// A cooled peer's probe succeeded; sends resume (it stays LAZY for a
    /// probation period).
    Recovered {
        /// Topic.
        topic: TopicId,
        /// Peer.
        peer: PeerId,
    },
}

/// Timers the node arms for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Flush a topic's batched IHAVEs.
    IHaveFlush(TopicId),
    /// An announced message has not arrived.
    IWant(TopicId, MessageId),
    /// Periodic maintenance.
    Maintenance,
}

/// Output queue, timer heap and per-kind send counters.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub queue: VecDeque<Output>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Frames sent, by [`Kind::index`].
    pub sent: [u64; 8],
    /// Bytes sent, by kind.
    pub sent_bytes: [u64; 8],
    /// Sends withheld by cooling, by kind.
    pub gated: [u64; 8],
    /// Sends refused by the outbound budget window (then queued, or for
    /// IHAVE kept in the next batch), by kind.
    pub over_budget: [u64; 8],
}

impl Outbox {
    /// Heap bytes of the output queue and the timer heap at their capacity.
    pub(crate) fn footprint(&self) -> usize {
        use std::mem::size_of;
        self.queue.capacity() * size_of::<Output>()
            + self.timers.capacity() * size_of::<Reverse<(Instant, Timer)>>()
    }

    pub(crate) fn transmit(
        &mut self,
        to: PeerId,
        msg: Message,
        timeout: Duration,
        probe: bool,
        id: u64,
    ) {
        let k = msg.kind().index();
        self.sent[k] += 1;
        self.sent_bytes[k] += msg.encoded_len() as u64;
        self.queue.push_back(Output::Transmit(Transmit {
            to,
            msg,
            timeout,
            probe,
            id,
        }));
    }

    pub(crate) fn push(&mut self, o: Output) {
        self.queue.push_back(o);
    }

    pub(crate) fn arm(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.timers.peek() {
            Some(Reverse((at, _))) if *at <= now => self.timers.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    pub(crate) fn timers_len(&self) -> usize {
        self.timers.len()
    }
}

/// Stable lower-case name of a kind (counters, tables, JSON).
pub fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::Eager => "eager",
        Kind::IHave => "ihave",
        Kind::IWant => "iwant",
        Kind::Prune => "prune",
        Kind::Graft => "graft",
        Kind::AntiEntropy => "anti_entropy",
        Kind::Membership => "membership",
        Kind::Key => "key",
    }
}
