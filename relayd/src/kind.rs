//! The one mapping between the transport's stream kinds and the relay
//! protocol's.
//!
//! Two numberings exist for the same thing: the kind byte at the start of
//! every QUIC stream ([`libtransport::Kind`], what peers put on the wire)
//! and [`StreamKind`] in `relay.fbs` (what relayd tells gossipd). They
//! disagree — the transport has no membership kind and numbers ACK 1 where
//! the relay schema numbers it 2 — so every conversion goes through
//! [`Stream`], and nowhere else does relayd turn one number into the other.
//!
//! | [`Stream`] | transport [`Kind`] | relay [`StreamKind`] |
//! |---|---|---|
//! | `Control` | 0 (`CONTROL`) | 0 |
//! | `Membership` | 6 ([`MEMBERSHIP`], not yet named by libtransport) | 1 |
//! | `Ack` | 1 (`ACK`) | 2 |
//! | `Dm` | 2 (`DM`) | 3 |
//! | `Pubsub` | 3 (`PUBSUB`) | 4 |
//! | `Bulk` | 4 (`BULK`) | 5 |
//! | `Probe` | 5 (`PROBE`) | 6 |
//!
//! Every other number on either side is refused with a typed
//! [`UnknownKind`]: a peer or a newer gossipd using a kind this build does
//! not know gets a clear error, never a silent reinterpretation.

use libtransport::Kind;
use wire::generated::relay::StreamKind;

/// Transport kind byte for gossip membership traffic. libtransport does not
/// name it yet; until it does, this is the number relayd and gossipd agree
/// on (the transport schedules unnamed kinds at pubsub priority).
pub const MEMBERSHIP: Kind = Kind(6);

/// A stream kind, independent of either numbering, in priority order
/// (most urgent first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Connection control.
    Control,
    /// Gossip membership (joins, shuffles, neighbour requests).
    Membership,
    /// Receive acknowledgements.
    Ack,
    /// Direct messages.
    Dm,
    /// Pubsub gossip.
    Pubsub,
    /// Bulk transfers.
    Bulk,
    /// Path probes (scavenger).
    Probe,
}

/// A kind number that has no [`Stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnknownKind {
    /// A transport stream header byte this build does not know.
    #[error("unknown transport stream kind {0}")]
    Transport(u8),
    /// A relay-protocol `StreamKind` value this build does not know.
    #[error("unknown relay stream kind {0}")]
    Relay(u8),
}

impl Stream {
    /// Every kind, in priority order.
    pub const ALL: [Stream; 7] = [
        Stream::Control,
        Stream::Membership,
        Stream::Ack,
        Stream::Dm,
        Stream::Pubsub,
        Stream::Bulk,
        Stream::Probe,
    ];

    /// Number of kinds (the length of per-kind tables).
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`Self::ALL`]: a dense index for per-kind tables.
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name for logs, metrics labels and JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Stream::Control => "control",
            Stream::Membership => "membership",
            Stream::Ack => "ack",
            Stream::Dm => "dm",
            Stream::Pubsub => "pubsub",
            Stream::Bulk => "bulk",
            Stream::Probe => "probe",
        }
    }

    /// The kind of a transport stream header byte.
    pub fn from_transport(kind: Kind) -> Result<Self, UnknownKind> {
        Ok(match kind {
            Kind::CONTROL => Stream::Control,
            MEMBERSHIP => Stream::Membership,
            Kind::ACK => Stream::Ack,
            Kind::DM => Stream::Dm,
            Kind::PUBSUB => Stream::Pubsub,
            Kind::BULK => Stream::Bulk,
            Kind::PROBE => Stream::Probe,
            Kind(other) => return Err(UnknownKind::Transport(other)),
        })
    }

    /// The transport stream header byte of this kind.
    #[must_use]
    pub fn to_transport(self) -> Kind {
        match self {
            Stream::Control => Kind::CONTROL,
            Stream::Membership => MEMBERSHIP,
            Stream::Ack => Kind::ACK,
            Stream::Dm => Kind::DM,
            Stream::Pubsub => Kind::PUBSUB,
            Stream::Bulk => Kind::BULK,
            Stream::Probe => Kind::PROBE,
        }
    }

    /// The kind of a relay-protocol `StreamKind` (from gossipd).
    pub fn from_relay(kind: StreamKind) -> Result<Self, UnknownKind> {
        Ok(match kind {
            StreamKind::Control => Stream::Control,
            StreamKind::Membership => Stream::Membership,
            StreamKind::Ack => Stream::Ack,
            StreamKind::Dm => Stream::Dm,
            StreamKind::Pubsub => Stream::Pubsub,
            StreamKind::Bulk => Stream::Bulk,
            StreamKind::Probe => Stream::Probe,
            StreamKind(other) => return Err(UnknownKind::Relay(other)),
        })
    }

    /// The relay-protocol `StreamKind` of this kind (to gossipd).
    #[must_use]
    pub fn to_relay(self) -> StreamKind {
        match self {
            Stream::Control => StreamKind::Control,
            Stream::Membership => StreamKind::Membership,
            Stream::Ack => StreamKind::Ack,
            Stream::Dm => StreamKind::Dm,
            Stream::Pubsub => StreamKind::Pubsub,
            Stream::Bulk => StreamKind::Bulk,
            Stream::Probe => StreamKind::Probe,
        }
    }
}

/// Converts a transport kind straight to the relay protocol's number.
pub fn transport_to_relay(kind: Kind) -> Result<StreamKind, UnknownKind> {
    Stream::from_transport(kind).map(Stream::to_relay)
}

/// Converts a relay-protocol kind straight to the transport's number.
pub fn relay_to_transport(kind: StreamKind) -> Result<Kind, UnknownKind> {
    Stream::from_relay(kind).map(Stream::to_transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping, written out once more by hand: (transport byte, relay
    /// byte, kind). Capability: P3 (one numbering per process boundary).
    const TABLE: [(u8, u8, Stream); 7] = [
        (0, 0, Stream::Control),
        (6, 1, Stream::Membership),
        (1, 2, Stream::Ack),
        (2, 3, Stream::Dm),
        (3, 4, Stream::Pubsub),
        (4, 5, Stream::Bulk),
        (5, 6, Stream::Probe),
    ];

    /// Every one of the 256 transport bytes maps to the table's kind or is
    /// refused with its own number, and every mapped one round-trips.
    /// Capability: P3.
    #[test]
    fn every_transport_byte_maps_or_is_refused() {
        let mut mapped = 0;
        for b in 0..=u8::MAX {
            let want = TABLE.iter().find(|(t, _, _)| *t == b);
            match (Stream::from_transport(Kind(b)), want) {
                (Ok(s), Some((_, r, k))) => {
                    assert_eq!(s, *k, "transport {b}");
                    assert_eq!(s.to_transport(), Kind(b));
                    assert_eq!(transport_to_relay(Kind(b)), Ok(StreamKind(*r)));
                    mapped += 1;
                }
                (Err(e), None) => assert_eq!(e, UnknownKind::Transport(b)),
                (got, want) => panic!("transport {b}: got {got:?}, table says {want:?}"),
            }
        }
        assert_eq!(mapped, Stream::COUNT);
    }

    /// Every one of the 256 relay `StreamKind` bytes maps to the table's
    /// kind or is refused, and every mapped one round-trips. Capability: P3.
    #[test]
    fn every_relay_byte_maps_or_is_refused() {
        let mut mapped = 0;
        for b in 0..=u8::MAX {
            let want = TABLE.iter().find(|(_, r, _)| *r == b);
            match (Stream::from_relay(StreamKind(b)), want) {
                (Ok(s), Some((t, _, k))) => {
                    assert_eq!(s, *k, "relay {b}");
                    assert_eq!(s.to_relay(), StreamKind(b));
                    assert_eq!(relay_to_transport(StreamKind(b)), Ok(Kind(*t)));
                    mapped += 1;
                }
                (Err(e), None) => assert_eq!(e, UnknownKind::Relay(b)),
                (got, want) => panic!("relay {b}: got {got:?}, table says {want:?}"),
            }
        }
        assert_eq!(mapped, Stream::COUNT);
    }

    /// The generated schema's names agree with ours (a schema renumbering
    /// would be caught here), and the dense index follows `ALL`.
    /// Capability: P3.
    #[test]
    fn names_and_indices_agree_with_the_schema() {
        for (i, s) in Stream::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            let schema_name = s.to_relay().variant_name().unwrap().to_ascii_lowercase();
            assert_eq!(schema_name, s.name());
        }
        // The transport's named kinds are all covered.
        for k in [
            Kind::CONTROL,
            Kind::ACK,
            Kind::DM,
            Kind::PUBSUB,
            Kind::BULK,
            Kind::PROBE,
        ] {
            assert!(Stream::from_transport(k).is_ok(), "{k:?}");
        }
    }
}
