//! Why a frame was rejected (parse side) or could not be written (emit side).

use crate::proto::TopicId;

/// A length-carrying field of the format, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The whole frame.
    Frame,
    /// An EAGER payload.
    Payload,
    /// A signature (EAGER or DM).
    Signature,
    /// A public key in a key response.
    Key,
    /// The entry count of an IHAVE, IWANT, GRAFT, digest or shuffle list.
    List,
    /// A DM body.
    DmBody,
}

/// Why bytes from a peer were rejected. Every variant is counted by
/// [`super::Decoder`] under its [`ErrorClass`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame ends before a field it declares.
    #[error("truncated: need {need} more bytes at offset {at}, {got} left")]
    Truncated {
        /// Offset of the field that did not fit.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes left in the frame.
        got: usize,
    },
    /// Bytes after the end of the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A version this build does not speak.
    #[error("unsupported gossip wire version {0}")]
    BadVersion(u8),
    /// An unknown message tag.
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    /// Reserved bits of a flags byte are set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedBits(u8),
    /// A declared length or count is above the receiver's limit.
    #[error("{field:?} of {len} exceeds the limit of {max}")]
    Oversize {
        /// Which field.
        field: Field,
        /// Declared length (bytes, or entries for lists).
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// An enumerated field holds a value this version does not define.
    #[error("unknown DM seal {0:#04x}")]
    UnknownSeal(u8),
    /// A well-formed frame for a topic this node has not joined.
    #[error("frame for topic {0}, which this node has not joined")]
    UnknownTopic(TopicId),
}

/// Counter bucket of a [`WireError`] (one per variant, without the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// [`WireError::Truncated`].
    Truncated,
    /// [`WireError::Trailing`].
    Trailing,
    /// [`WireError::BadVersion`].
    BadVersion,
    /// [`WireError::UnknownTag`].
    UnknownTag,
    /// [`WireError::ReservedBits`].
    ReservedBits,
    /// [`WireError::Oversize`].
    Oversize,
    /// [`WireError::UnknownSeal`].
    UnknownSeal,
    /// [`WireError::UnknownTopic`].
    UnknownTopic,
}

impl ErrorClass {
    /// Every class, in counter order.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Truncated,
        ErrorClass::Trailing,
        ErrorClass::BadVersion,
        ErrorClass::UnknownTag,
        ErrorClass::ReservedBits,
        ErrorClass::Oversize,
        ErrorClass::UnknownSeal,
        ErrorClass::UnknownTopic,
    ];

    /// Stable lower-case name (counters, tables, JSON).
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Truncated => "truncated",
            ErrorClass::Trailing => "trailing",
            ErrorClass::BadVersion => "bad_version",
            ErrorClass::UnknownTag => "unknown_tag",
            ErrorClass::ReservedBits => "reserved_bits",
            ErrorClass::Oversize => "oversize",
            ErrorClass::UnknownSeal => "unknown_seal",
            ErrorClass::UnknownTopic => "unknown_topic",
        }
    }
}

impl WireError {
    /// The counter this error is charged to.
    pub fn class(&self) -> ErrorClass {
        match self {
            WireError::Truncated { .. } => ErrorClass::Truncated,
            WireError::Trailing(_) => ErrorClass::Trailing,
            WireError::BadVersion(_) => ErrorClass::BadVersion,
            WireError::UnknownTag(_) => ErrorClass::UnknownTag,
            WireError::ReservedBits(_) => ErrorClass::ReservedBits,
            WireError::Oversize { .. } => ErrorClass::Oversize,
            WireError::UnknownSeal(_) => ErrorClass::UnknownSeal,
            WireError::UnknownTopic(_) => ErrorClass::UnknownTopic,
        }
    }
}

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The output buffer is shorter than [`crate::proto::Message::encoded_len`].
    #[error("buffer of {got} bytes, the message needs {need}")]
    BufferTooSmall {
        /// Bytes the message needs.
        need: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// A field is longer than its length prefix can state.
    #[error("{field:?} of {len} does not fit its length field (max {max})")]
    TooLong {
        /// Which field.
        field: Field,
        /// Its length (bytes, or entries for lists).
        len: usize,
        /// What the length prefix can hold.
        max: usize,
    },
}
