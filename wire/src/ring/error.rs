//! Typed errors of the ring. Pushing hands the record back in every error.

use std::fmt;

/// The shared mapping holds something the protocol never writes: the peer is
/// buggy or hostile. The ring stops at the first one (it is poisoned) rather
/// than guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corrupt {
    /// Capacity or record limit out of range (or not what was offered).
    #[error("ring geometry out of range: capacity {capacity}, max record {max_record}")]
    Geometry {
        /// Data area size.
        capacity: u64,
        /// Record size limit.
        max_record: u64,
    },
    /// The mapping's header is not a ring of our version.
    #[error("ring header mismatch (magic or version)")]
    BadMagic,
    /// A record header with an unknown tag.
    #[error("unknown record header word {word:#018x}")]
    BadTag {
        /// The header word as read.
        word: u64,
    },
    /// A record header claims more than the record limit.
    #[error("record length {len} exceeds the limit {max}")]
    RecordTooLong {
        /// Claimed length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A record (or skip) extends past what was published or past the end of
    /// the data area.
    #[error(
        "record at offset {offset} of {len} bytes extends past the published data or the data area"
    )]
    RecordOutOfBounds {
        /// Offset in the data area.
        offset: u64,
        /// Bytes the record would occupy.
        len: u64,
    },
    /// The peer's index moved backwards or implies more than the capacity.
    #[error("peer index out of range: head {head}, tail {tail}")]
    IndexOutOfRange {
        /// Consumer position.
        head: u64,
        /// Producer position.
        tail: u64,
    },
}

/// Why the peer is known to be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerGone {
    /// The peer closed its end of the ring cleanly.
    #[error("peer closed the ring")]
    Closed,
    /// The control socket reached end-of-file or hung up.
    #[error("peer hung up the control socket")]
    Hangup,
    /// The peer process exited (seen through its pidfd).
    #[error("peer process exited")]
    Exited,
    /// Waiting on the peer failed with an OS error.
    #[error("waiting on the peer failed: errno {0}")]
    Os(i32),
}

/// A non-blocking push failed; the record is handed back.
#[derive(PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryPushError<T> {
    /// Not enough free space right now.
    #[error("ring is full")]
    Full(T),
    /// Longer than the ring's record limit; can never be pushed.
    #[error("record longer than the ring's limit")]
    TooLarge(T),
    /// The consumer is gone.
    #[error("consumer gone: {1}")]
    PeerGone(T, PeerGone),
    /// The consumer corrupted the shared indices.
    #[error("ring corrupt: {1}")]
    Corrupt(T, Corrupt),
}

/// A blocking push failed; the record is handed back.
#[derive(PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError<T> {
    /// Longer than the ring's record limit; can never be pushed.
    #[error("record longer than the ring's limit")]
    TooLarge(T),
    /// The consumer is gone.
    #[error("consumer gone: {1}")]
    PeerGone(T, PeerGone),
    /// The consumer corrupted the shared indices.
    #[error("ring corrupt: {1}")]
    Corrupt(T, Corrupt),
}

impl<T> TryPushError<T> {
    /// The record that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t) | Self::TooLarge(t) | Self::PeerGone(t, _) | Self::Corrupt(t, _) => t,
        }
    }
}

impl<T> PushError<T> {
    /// The record that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            Self::TooLarge(t) | Self::PeerGone(t, _) | Self::Corrupt(t, _) => t,
        }
    }
}

// Manual `Debug` so records need not be `Debug` (and large ones are not dumped).
impl<T> fmt::Debug for TryPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::TooLarge(_) => f.write_str("TooLarge(..)"),
            Self::PeerGone(_, why) => write!(f, "PeerGone(.., {why:?})"),
            Self::Corrupt(_, why) => write!(f, "Corrupt(.., {why:?})"),
        }
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(_) => f.write_str("TooLarge(..)"),
            Self::PeerGone(_, why) => write!(f, "PeerGone(.., {why:?})"),
            Self::Corrupt(_, why) => write!(f, "Corrupt(.., {why:?})"),
        }
    }
}

/// Popping failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// The producer is gone and everything it published has been read.
    #[error("producer gone: {0}")]
    PeerGone(PeerGone),
    /// The producer wrote something the protocol does not allow.
    #[error("ring corrupt: {0}")]
    Corrupt(Corrupt),
}

impl From<Corrupt> for PopError {
    fn from(c: Corrupt) -> Self {
        Self::Corrupt(c)
    }
}
