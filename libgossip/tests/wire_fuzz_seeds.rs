//! The `gossip_message` fuzz target's seed corpus
//! (`fuzz/corpus/gossip_message/`): one valid frame of every kind (the
//! shared wire samples, with a few edge shapes), truncated copies, and
//! hostile ones (a 4 GiB payload claim, foreign version, unknown tag,
//! trailing byte, over-long list, a digest in the retired ageless layout).
//! This test checks that every committed seed is current and decodes as
//! named under the target's limits; with `TERN_WRITE_FUZZ_SEEDS=1` it
//! (re)writes them first (V5: the decoder is fuzzed from a corpus that
//! reaches every kind).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod wire_support;

use bytes::Bytes;
use libgossip::wire::{ErrorClass, Frame, Limits, VERSION};
use wire_support::{eager, samples};

/// Must match the limits in `fuzz/fuzz_targets/gossip_message.rs`.
fn target_limits() -> Limits {
    let mut l = Limits::default();
    l.max_frame = 64 << 10;
    l.max_payload = 16 << 10;
    l.max_signature = 4 << 10;
    l.max_key = 2 << 10;
    l.max_dm_body = 16 << 10;
    l
}

/// Seeds by name, with the error class the decoder must give (`None`: the
/// seed is a valid frame).
fn seeds() -> Vec<(String, Vec<u8>, Option<ErrorClass>)> {
    let mut out: Vec<(String, Vec<u8>, Option<ErrorClass>)> = Vec::new();
    for (name, f) in samples() {
        out.push((name.to_string(), f.to_bytes().unwrap().to_vec(), None));
    }
    // Truncated copies of a few kinds: in the header, inside a length
    // field's data, one byte short.
    for (name, f) in samples() {
        if !matches!(
            name,
            "eager_64" | "ihave_64" | "shuffle_7" | "key_response" | "dm_signed"
        ) {
            continue;
        }
        let b = f.to_bytes().unwrap();
        for (what, cut) in [("head", 1), ("half", b.len() / 2), ("short", b.len() - 1)] {
            out.push((
                format!("trunc_{what}_{name}"),
                b[..cut].to_vec(),
                Some(ErrorClass::Truncated),
            ));
        }
    }
    let good = Frame::Topic(eager(16)).to_bytes().unwrap().to_vec();
    // The payload length field follows version, tag, topic, origin, seqno, hops.
    let at = 2 + 32 + 32 + 8 + 2;
    let mut claim = good[..at].to_vec();
    claim.extend_from_slice(&u32::MAX.to_be_bytes());
    out.push((
        "hostile_payload_4gib".into(),
        claim,
        Some(ErrorClass::Oversize),
    ));
    let mut v = good.clone();
    v[0] = VERSION + 1;
    out.push(("hostile_version".into(), v, Some(ErrorClass::BadVersion)));
    let mut v = good.clone();
    v[1] = 0x7e;
    out.push(("hostile_tag".into(), v, Some(ErrorClass::UnknownTag)));
    let mut v = good.clone();
    v.push(0);
    out.push(("hostile_trailing".into(), v, Some(ErrorClass::Trailing)));
    let mut v = good[..2 + 32].to_vec();
    v[1] = 0x03; // IWANT
    v.extend_from_slice(&u16::MAX.to_be_bytes());
    out.push(("hostile_list_count".into(), v, Some(ErrorClass::Oversize)));
    // A digest as builds before ages wrote it (tag 0x06, ids only): the
    // tag is retired, so it is refused rather than misread.
    let mut v = good[..2 + 32].to_vec();
    v[1] = 0x06;
    v.extend_from_slice(&2u16.to_be_bytes());
    v.extend_from_slice(&[0x11; 2 * 32]);
    out.push(("hostile_digest_v1".into(), v, Some(ErrorClass::UnknownTag)));
    out
}

/// The committed corpus is current, every seed decodes as named, and every
/// valid seed re-encodes to its own bytes.
#[test]
fn gossip_message_seeds_decode_as_named() {
    let seeds = seeds();
    test_support::seeds::check_committed(
        "gossip_message",
        seeds.iter().map(|(n, b, _)| (n.as_str(), &b[..])),
    );
    let lim = target_limits();
    let mut kinds = std::collections::BTreeSet::new();
    for (name, bytes, want) in &seeds {
        let b = Bytes::from(bytes.clone());
        match (Frame::parse(&b, &lim), want) {
            (Ok(f), None) => {
                assert_eq!(f.to_bytes().unwrap(), b, "{name}: round trip");
                kinds.insert((b[0], b[1]));
            }
            (Err(e), Some(c)) => assert_eq!(e.class(), *c, "{name}: {e}"),
            (got, _) => panic!("{name}: {got:?}, want {want:?}"),
        }
    }
    assert_eq!(kinds.len(), 16, "a valid seed of each of the 16 kinds");
}
