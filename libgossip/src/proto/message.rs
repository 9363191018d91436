//! Protocol messages as plain data.
//!
//! Their byte format is [`crate::wire`]; budgets and metrics use the exact
//! encoded size, [`Message::encoded_len`]. Every
//! list a peer can send is bounded by [`crate::proto::Config`] limits and the
//! receiver truncates rather than trusting a length.

use super::types::{MessageId, PeerId, TopicId};
use bytes::Bytes;

/// A signed broadcast message.
///
/// Carries the origin's id and signature, not its 1,952-byte key: receivers
/// that lack the key fetch it once from the forwarding neighbour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gossip {
    /// Who signed it.
    pub origin: PeerId,
    /// Per-(origin, topic) sequence number, starting at 1.
    pub seqno: u64,
    /// Application bytes.
    pub payload: Bytes,
    /// ML-DSA-65 signature over [`super::types::signed_bytes`].
    pub signature: Bytes,
    /// Hops travelled so far (unsigned; only steers tree optimisation).
    pub hops: u16,
}

/// One message announced lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IHaveEntry {
    /// The message.
    pub id: MessageId,
    /// Hops at the announcer.
    pub hops: u16,
}

/// One message listed in an anti-entropy digest.
///
/// The age is relative (how long ago the sender stored the message, as of
/// sending), so the peers need no synchronised clocks: the receiver
/// estimates when the sender first had the message as `now − age`, and asks
/// only for messages stored since it joined the topic itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    /// The message.
    pub id: MessageId,
    /// Milliseconds since the sender stored it (saturating at `u32::MAX`,
    /// about 49 days, far beyond any store retention).
    pub age_ms: u32,
}

/// Everything one peer sends another about one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// HyParView: ask a bootstrap peer to admit us.
    Join,
    /// HyParView: random walk announcing a new peer.
    ForwardJoin {
        /// The joining peer.
        peer: PeerId,
        /// Remaining walk length.
        ttl: u8,
    },
    /// HyParView: ask to become an active neighbour.
    Neighbor {
        /// High priority: the sender has no active neighbours left.
        high_priority: bool,
    },
    /// Answer to [`Body::Neighbor`].
    NeighborReply {
        /// Whether the receiver added us to its active view.
        accepted: bool,
    },
    /// HyParView: we removed you from our active view.
    Disconnect,
    /// HyParView: passive-view exchange (random walk).
    Shuffle {
        /// Who started the shuffle.
        origin: PeerId,
        /// Remaining walk length.
        ttl: u8,
        /// Sample of the origin's views.
        peers: Vec<PeerId>,
    },
    /// Answer to a shuffle, sent straight to its origin.
    ShuffleReply {
        /// Sample of the answering peer's passive view.
        peers: Vec<PeerId>,
    },
    /// PlumTree eager push.
    Eager(Gossip),
    /// PlumTree lazy announcement (batched).
    IHave(Vec<IHaveEntry>),
    /// Ask for messages by id (after an IHAVE timeout or an anti-entropy digest).
    IWant(Vec<MessageId>),
    /// Make the link eager again (and implies IWANT for `ids`).
    Graft {
        /// Messages the grafting peer is missing.
        ids: Vec<MessageId>,
    },
    /// Make the link lazy.
    Prune,
    /// Ask for an origin's public key.
    KeyRequest {
        /// Whose key.
        origin: PeerId,
    },
    /// An origin's public key (checked against its id on receipt).
    KeyResponse {
        /// Whose key.
        origin: PeerId,
        /// The encoded public key.
        key: Bytes,
    },
    /// Anti-entropy digest: recent messages the sender holds, with their
    /// ages at the sender.
    Digest(Vec<DigestEntry>),
}

/// Message kinds, for counters and budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Full message pushed eagerly (or answering an IWANT).
    Eager,
    /// Lazy announcement.
    IHave,
    /// Request for messages.
    IWant,
    /// Link demotion.
    Prune,
    /// Link promotion.
    Graft,
    /// Anti-entropy digest.
    AntiEntropy,
    /// HyParView membership traffic.
    Membership,
    /// Key fetch traffic.
    Key,
}

impl Kind {
    /// All kinds, in counter order.
    pub const ALL: [Kind; 8] = [
        Kind::Eager,
        Kind::IHave,
        Kind::IWant,
        Kind::Prune,
        Kind::Graft,
        Kind::AntiEntropy,
        Kind::Membership,
        Kind::Key,
    ];

    /// Index into per-kind counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A topic-scoped message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Which overlay.
    pub topic: TopicId,
    /// What.
    pub body: Body,
}

impl Message {
    /// The message's kind.
    pub fn kind(&self) -> Kind {
        match &self.body {
            Body::Eager(_) => Kind::Eager,
            Body::IHave(_) => Kind::IHave,
            Body::IWant(_) => Kind::IWant,
            Body::Graft { .. } => Kind::Graft,
            Body::Prune => Kind::Prune,
            Body::Digest(_) => Kind::AntiEntropy,
            Body::KeyRequest { .. } | Body::KeyResponse { .. } => Kind::Key,
            _ => Kind::Membership,
        }
    }
}
