//! Stream kinds, their priorities and the two-byte stream header.
//!
//! Every stream starts with `[kind, version]`. Unidirectional streams then
//! carry length-prefixed messages (`u32` big-endian length, then payload);
//! bidirectional streams belong to the kind's handler after the header.
//! Parsing here is pure and checked: a hostile length is compared against
//! the kind's limit before anything is allocated.

/// Current stream header version.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 2;
/// Message length prefix in bytes.
pub const LEN_PREFIX: usize = 4;

/// A stream kind: the first byte of every stream.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Kind(pub u8);

impl Kind {
    /// Control traffic (highest priority).
    pub const CONTROL: Self = Self(0);
    /// Receive acknowledgements.
    pub const ACK: Self = Self(1);
    /// Direct messages.
    pub const DM: Self = Self(2);
    /// Pubsub traffic.
    pub const PUBSUB: Self = Self(3);
    /// Bulk transfers.
    pub const BULK: Self = Self(4);
    /// Probes (lowest priority).
    pub const PROBE: Self = Self(5);

    /// quinn-proto stream priority (higher is sent first):
    /// control > ack/dm > pubsub > bulk > probe; unnamed kinds sit with pubsub.
    #[must_use]
    pub fn priority(self) -> i32 {
        match self {
            Self::CONTROL => 40,
            Self::ACK | Self::DM => 30,
            Self::PUBSUB => 20,
            Self::BULK => 10,
            Self::PROBE => 0,
            _ => 20,
        }
    }
}

/// What to do when a kind's receive queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Overflow {
    /// Drop the new message and count it (pubsub-like traffic).
    DropAndCount,
    /// Stop reading the stream until the queue drains; QUIC flow control
    /// then pushes back on the sender.
    BackPressure,
}

/// Per-kind receive settings.
#[derive(Clone, Copy, Debug)]
pub struct KindConfig {
    /// Messages (and incoming bidirectional streams) the queue holds.
    pub capacity: usize,
    /// Overflow policy for messages. Bidirectional streams beyond capacity are
    /// always reset and counted.
    pub overflow: Overflow,
    /// Largest accepted message; larger ones reset the stream.
    pub max_message: u32,
}

impl Default for KindConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::BackPressure,
            max_message: 16 << 20,
        }
    }
}

/// Reason a stream header or message was rejected; also the reset code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamReject {
    /// No handler is registered for the kind.
    #[error("unknown stream kind")]
    UnknownKind,
    /// The header version is not supported.
    #[error("unsupported stream version")]
    BadVersion,
    /// The stream ended inside the header or a message.
    #[error("truncated stream")]
    Truncated,
    /// A message length exceeds the kind's limit.
    #[error("oversize message")]
    Oversize,
    /// The kind's queue was full (bidirectional streams).
    #[error("kind queue full")]
    QueueFull,
}

impl StreamReject {
    /// QUIC application error code used to reset/stop the stream.
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Self::UnknownKind => 0x10,
            Self::BadVersion => 0x11,
            Self::Truncated => 0x12,
            Self::Oversize => 0x13,
            Self::QueueFull => 0x14,
        }
    }
}

/// Encodes a stream header.
#[must_use]
pub fn header(kind: Kind) -> [u8; HEADER_LEN] {
    [kind.0, VERSION]
}

/// Checks a complete header; `known` says whether a handler exists.
pub fn check_header(
    h: [u8; HEADER_LEN],
    known: impl Fn(Kind) -> bool,
) -> Result<Kind, StreamReject> {
    let kind = Kind(h[0]);
    if !known(kind) {
        return Err(StreamReject::UnknownKind);
    }
    if h[1] != VERSION {
        return Err(StreamReject::BadVersion);
    }
    Ok(kind)
}

/// Checks a message length prefix against the kind's limit.
pub fn check_len(prefix: [u8; LEN_PREFIX], max: u32) -> Result<usize, StreamReject> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(StreamReject::Oversize);
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_rejects() {
        let known = |k: Kind| k.0 < 6;
        assert_eq!(check_header(header(Kind::DM), known), Ok(Kind::DM));
        assert_eq!(
            check_header([9, VERSION], known),
            Err(StreamReject::UnknownKind)
        );
        assert_eq!(check_header([1, 7], known), Err(StreamReject::BadVersion));
        assert_eq!(check_len(10u32.to_be_bytes(), 10), Ok(10));
        assert_eq!(
            check_len(u32::MAX.to_be_bytes(), 10),
            Err(StreamReject::Oversize)
        );
    }

    #[test]
    fn priorities_are_ordered() {
        let order = [
            Kind::CONTROL,
            Kind::DM,
            Kind::PUBSUB,
            Kind::BULK,
            Kind::PROBE,
        ];
        assert!(order.windows(2).all(|w| w[0].priority() > w[1].priority()));
        assert_eq!(Kind::ACK.priority(), Kind::DM.priority());
    }
}
