//! The gossip wire format: checked `parse` / `emit` for every frame a peer
//! sends another (smoltcp style: lengths checked before slicing, typed
//! errors, no panics).
//!
//! A frame is one transport message (libtransport delimits them). All
//! integers are big-endian; ids (`topic`, `origin`, `peer`, `id`) are 32
//! bytes; `n:u16` counts list entries. Version 1:
//!
//! ```text
//! frame        = version:u8 (=1)  tag:u8  rest
//! topic frames : rest = topic:[32] body
//!   0x01 EAGER           origin seqno:u64 hops:u16 payload_len:u32 payload sig_len:u16 sig
//!   0x02 IHAVE           n:u16 (id hops:u16)*n
//!   0x03 IWANT           n:u16 id*n
//!   0x04 GRAFT           n:u16 id*n
//!   0x05 PRUNE           -
//!   0x07 DIGEST          n:u16 (id age_ms:u32)*n   (anti-entropy)
//!   0x10 JOIN            -
//!   0x11 FORWARD_JOIN    peer ttl:u8
//!   0x12 NEIGHBOR        flags:u8             (bit 0: high priority)
//!   0x13 NEIGHBOR_REPLY  flags:u8             (bit 0: accepted)
//!   0x14 DISCONNECT      -
//!   0x15 SHUFFLE         origin ttl:u8 n:u16 peer*n
//!   0x16 SHUFFLE_REPLY   n:u16 peer*n
//!   0x20 KEY_REQUEST     origin
//!   0x21 KEY_RESPONSE    origin key_len:u16 key
//! 0x40 DM (no topic)     from to id:[16] ttl:u8 seal:u8 body_len:u32 body sig_len:u16 sig
//! 0x41 KEM_KEY record    serial:u64 ik_len:u16 ik kk_len:u16 kk sig_len:u16 sig
//! ```
//!
//! A DIGEST entry is 36 bytes: the message id and how many milliseconds
//! ago the sender stored it, as of sending (saturating; relative, so no
//! clock sync is needed), from which the receiver tells a gap it must
//! repair from history it is not owed (see `docs/gossip.md`). Tag 0x06, the
//! digest of earlier builds (ids only), is retired and never reused.
//!
//! A KEM_KEY record is not a [`Frame`]: it is a payload the runtime carries
//! however it publishes keys, parsed with [`KemKey::parse`].
//!
//! Reserved flag bits must be zero, and bytes after the message are an
//! error, so every accepted frame has exactly one encoding (`emit(parse(b))
//! == b`, which `tests/wire_codec.rs` checks on flipped bits). A new version or message kind is a
//! new version byte or tag; an old receiver rejects it with
//! [`WireError::BadVersion`] / [`WireError::UnknownTag`] rather than
//! misreading it; a changed layout of an existing kind is a new tag too
//! (the DIGEST above), so the other kinds keep working across a rolling
//! upgrade. The layout is hand-written rather than flatbuffers so that
//! the parser borrows from the frame and checks every length itself
//! (`docs/adr/0041-gossip-wire-encoding.md` weighs the two with measured
//! encode/decode costs).
//!
//! # Panic contract
//!
//! [`Frame::parse`] and [`Decoder::decode`] accept any byte string and never
//! panic: every read is bounds-checked and malformed input gives a
//! [`WireError`]. They never allocate by a declared length: byte fields are
//! zero-copy slices of the input, and a list is allocated only once its
//! count has been checked against [`Limits`] and against the bytes actually
//! left, so a hostile length costs at most what the frame itself occupies.
//! The emitters ([`crate::proto::Message::emit`], [`DmEnvelope::emit`],
//! [`Frame::emit`]) never panic either: a short buffer or an over-long field
//! is an [`EmitError`].
//!
//! ```
//! use bytes::Bytes;
//! use libgossip::proto::{Body, Gossip, Message, PeerId, TopicId};
//! use libgossip::wire::{Frame, Limits};
//!
//! let msg = Message {
//!     topic: TopicId::from_name("chat"),
//!     body: Body::Eager(Gossip {
//!         origin: PeerId([7; 32]),
//!         seqno: 1,
//!         payload: Bytes::from_static(b"hello"),
//!         signature: Bytes::from_static(&[9; 64]),
//!         hops: 0,
//!     }),
//! };
//! let bytes = msg.to_bytes().unwrap();
//! assert_eq!(bytes.len(), msg.encoded_len());
//! let back = Frame::parse(&bytes, &Limits::default()).unwrap();
//! assert_eq!(back, Frame::Topic(msg));
//!
//! // A digest: 36 bytes per entry after the 34-byte head and the count.
//! use libgossip::proto::{DigestEntry, MessageId};
//! let digest = Message {
//!     topic: TopicId::from_name("chat"),
//!     body: Body::Digest(vec![
//!         DigestEntry { id: MessageId([1; 32]), age_ms: 250 },
//!         DigestEntry { id: MessageId([2; 32]), age_ms: u32::MAX },
//!     ]),
//! };
//! let bytes = digest.to_bytes().unwrap();
//! assert_eq!(bytes.len(), 2 + 32 + 2 + 2 * 36);
//! assert_eq!((bytes[1], &bytes[bytes.len() - 4..]), (0x07, &[0xff; 4][..]));
//! let back = Frame::parse(&bytes, &Limits::default()).unwrap();
//! assert_eq!(back, Frame::Topic(digest));
//! ```

mod codec;
mod cursor;
mod decoder;
mod dm;
mod error;

pub use decoder::{Decoder, WireStats};
pub use dm::{DmEnvelope, DmSeal, KemKey};
pub use error::{EmitError, ErrorClass, Field, WireError};

use crate::proto::{Config, Message};

/// The wire version this build writes and reads.
pub const VERSION: u8 = 1;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A topic-scoped gossip or membership message.
    Topic(Message),
    /// A direct message.
    Dm(DmEnvelope),
}

/// What a receiver accepts. Every declared length or count is compared with
/// these before it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Whole frame, bytes.
    pub max_frame: usize,
    /// EAGER payload, bytes.
    pub max_payload: usize,
    /// Signature, bytes (ML-DSA-65 is 3,309; ML-DSA-87 4,627).
    pub max_signature: usize,
    /// Public key in a key response, bytes (ML-DSA-65 is 1,952).
    pub max_key: usize,
    /// Entries per IHAVE / IWANT / GRAFT / digest / shuffle list.
    pub max_list: usize,
    /// DM body, bytes (room for a KEM ciphertext and AEAD overhead on top
    /// of a payload as large as a gossip one).
    pub max_dm_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 2 << 20,
            max_payload: 1 << 20,
            max_signature: 8 << 10,
            max_key: 4 << 10,
            max_list: Config::default().list_max,
            max_dm_body: (1 << 20) + (8 << 10),
        }
    }
}

impl Limits {
    /// The defaults, with the list bound of `cfg` (the core reads no more
    /// than `list_max` entries, so a longer list is rejected at the wire).
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            max_list: cfg.list_max,
            ..Self::default()
        }
    }

    /// Sets the payload bound (and widens the frame bound to fit it).
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self.max_frame = self.max_frame.max(bytes.saturating_add(64 << 10));
        self
    }
}
