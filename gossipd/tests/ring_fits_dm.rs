//! The relay ring's smallest configurable size carries the largest DM the
//! gossip wire allows, checked with the real encoders (libgossip's DM
//! envelope, relayd's inbound record) against the ring's record limit, so
//! relayd can never answer `Backpressured` forever to a DM that is valid
//! but does not fit. Capabilities: P3, D1.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use libgossip::proto::PeerId;
use libgossip::wire::{DmEnvelope, DmSeal, Limits};
use wire::generated::relay::StreamKind;
use wire::relay::InboundRecord;
use wire::ring::Geometry;

/// The largest DM envelope [`Limits::default`] admits, as relayd would
/// push it into the ring (the record's fields at their widest).
fn largest_dm_record_len() -> usize {
    let limits = Limits::default();
    let env = DmEnvelope {
        from: PeerId([1; 32]),
        to: PeerId([2; 32]),
        id: [3; 16],
        ttl: u8::MAX,
        seal: DmSeal::Signed,
        body: Bytes::from(vec![0u8; limits.max_dm_body]),
        signature: Bytes::from(vec![0u8; limits.max_signature.min(usize::from(u16::MAX))]),
    };
    let mut frame = vec![0u8; env.encoded_len()];
    let n = env.emit(&mut frame).unwrap();
    let rec = InboundRecord {
        peer: [4; 32],
        generation: u64::MAX,
        kind: StreamKind::Dm,
        ack_id: Some([5; 16]),
        seq: u64::MAX,
        redelivered: true,
        payload: frame[..n].to_vec(),
    };
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    rec.encode(&mut fbb).len()
}

/// `tern_config::MIN_RELAY_RING` holds the largest DM in one record, and
/// the next smaller ring size would not (so the bound is the tight one,
/// not an arbitrary large value).
#[test]
fn the_smallest_relay_ring_holds_the_largest_dm() {
    let need = largest_dm_record_len();
    let min = usize::try_from(tern_config::MIN_RELAY_RING).unwrap();
    let fits = Geometry::max_record_for(min);
    assert!(
        need <= fits,
        "largest DM record {need} B > record limit {fits} B"
    );
    let half = Geometry::max_record_for(min / 2);
    assert!(
        need > half,
        "a {} B ring would do: {need} B <= {half} B",
        min / 2
    );
    // gossipd offers the default ring, which must not be smaller.
    assert!(u64::from(gossipd::link::RING_CAPACITY) >= tern_config::MIN_RELAY_RING);
}
