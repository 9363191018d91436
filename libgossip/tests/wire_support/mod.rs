//! Sample frames of every kind for the wire tests; they also seed the
//! `gossip_message` fuzz corpus (`tests/wire_fuzz_seeds.rs` writes and
//! checks it).
#![allow(dead_code)]

use bytes::Bytes;
use libgossip::proto::{
    Body, DigestEntry, Gossip, IHaveEntry, Message, MessageId, PeerId, TopicId,
};
use libgossip::wire::{DmEnvelope, DmSeal, Frame};

/// The topic every sample is on.
pub fn topic() -> TopicId {
    TopicId::from_name("wire-samples")
}

fn id(i: u8) -> MessageId {
    MessageId([i; 32])
}

fn peer(i: u8) -> PeerId {
    PeerId([0x80 | i; 32])
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// An EAGER message with an ML-DSA-65-sized signature.
pub fn eager(payload_len: usize) -> Message {
    Message {
        topic: topic(),
        body: Body::Eager(Gossip {
            origin: peer(1),
            seqno: 42,
            payload: pattern(payload_len, 1),
            signature: pattern(3309, 2),
            hops: 3,
        }),
    }
}

/// An IHAVE batch of `n` entries.
pub fn ihave(n: usize) -> Message {
    Message {
        topic: topic(),
        body: Body::IHave(
            (0..n)
                .map(|i| IHaveEntry {
                    id: id(i as u8),
                    hops: i as u16,
                })
                .collect(),
        ),
    }
}

fn ids(n: usize) -> Vec<MessageId> {
    (0..n).map(|i| id(i as u8)).collect()
}

/// `n` digest entries with ages from 0 ms up, the last one saturated.
fn digest(n: usize) -> Vec<DigestEntry> {
    (0..n)
        .map(|i| DigestEntry {
            id: id(i as u8),
            age_ms: if i + 1 == n {
                u32::MAX
            } else {
                i as u32 * 7919
            },
        })
        .collect()
}

fn peers(n: usize) -> Vec<PeerId> {
    (0..n).map(|i| peer(i as u8)).collect()
}

fn m(body: Body) -> Frame {
    Frame::Topic(Message {
        topic: topic(),
        body,
    })
}

/// A DM envelope with `body_len` bytes of body.
pub fn dm(seal: DmSeal, body_len: usize) -> DmEnvelope {
    DmEnvelope {
        from: peer(1),
        to: peer(2),
        id: [0x5a; 16],
        ttl: 4,
        seal,
        body: pattern(body_len, 3),
        signature: match seal {
            DmSeal::Signed => pattern(3309, 4),
            _ => Bytes::new(),
        },
    }
}

/// One representative frame per kind (and a few edge shapes), by name.
pub fn samples() -> Vec<(&'static str, Frame)> {
    let edge = Message {
        topic: topic(),
        body: Body::Eager(Gossip {
            origin: peer(9),
            seqno: u64::MAX,
            payload: Bytes::new(),
            signature: Bytes::new(),
            hops: u16::MAX,
        }),
    };
    vec![
        ("eager_64", Frame::Topic(eager(64))),
        ("eager_1k", Frame::Topic(eager(1024))),
        ("eager_empty_max_fields", Frame::Topic(edge)),
        ("ihave_1", Frame::Topic(ihave(1))),
        ("ihave_64", Frame::Topic(ihave(64))),
        ("ihave_empty", Frame::Topic(ihave(0))),
        ("iwant_8", m(Body::IWant(ids(8)))),
        ("graft_2", m(Body::Graft { ids: ids(2) })),
        ("graft_empty", m(Body::Graft { ids: Vec::new() })),
        ("prune", m(Body::Prune)),
        ("digest_256", m(Body::Digest(digest(256)))),
        ("join", m(Body::Join)),
        (
            "forward_join",
            m(Body::ForwardJoin {
                peer: peer(3),
                ttl: 6,
            }),
        ),
        (
            "neighbor_high",
            m(Body::Neighbor {
                high_priority: true,
            }),
        ),
        (
            "neighbor_low",
            m(Body::Neighbor {
                high_priority: false,
            }),
        ),
        (
            "neighbor_reply_accepted",
            m(Body::NeighborReply { accepted: true }),
        ),
        (
            "neighbor_reply_refused",
            m(Body::NeighborReply { accepted: false }),
        ),
        ("disconnect", m(Body::Disconnect)),
        (
            "shuffle_7",
            m(Body::Shuffle {
                origin: peer(4),
                ttl: 3,
                peers: peers(7),
            }),
        ),
        ("shuffle_reply_4", m(Body::ShuffleReply { peers: peers(4) })),
        ("key_request", m(Body::KeyRequest { origin: peer(5) })),
        (
            "key_response",
            m(Body::KeyResponse {
                origin: peer(5),
                key: pattern(1952, 6),
            }),
        ),
        ("dm_signed", Frame::Dm(dm(DmSeal::Signed, 200))),
        ("dm_sealed", Frame::Dm(dm(DmSeal::Sealed, 1088 + 200 + 16))),
    ]
}
