//! `libgossip::wire` round trips and strictness: every kind encodes to its
//! exact `encoded_len`, parses back to itself and re-encodes to the same
//! bytes; every prefix, extension, foreign version or tag, set reserved bit
//! and over-limit length is a typed error (STYLE item 6: checked
//! constructors; a fuzzed decoder).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod wire_support;

use bytes::Bytes;
use libgossip::proto::{Body, Config, Message, MessageId, PeerId};
use libgossip::wire::{DmSeal, EmitError, Field, Frame, Limits, VERSION, WireError};
use wire_support::{dm, eager, ihave, samples, topic};

/// The default limits with one field changed (`Limits` is non-exhaustive).
fn with(set: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    set(&mut l);
    l
}

fn enc(f: &Frame) -> Bytes {
    f.to_bytes().unwrap()
}

#[test]
fn every_kind_round_trips_to_identical_bytes() {
    let lim = Limits::default();
    for (name, f) in samples() {
        let b = enc(&f);
        assert_eq!(b.len(), f.encoded_len(), "{name}: encoded_len");
        assert_eq!(b[0], VERSION, "{name}: version byte first");
        let back = Frame::parse(&b, &lim).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, f, "{name}: parse(emit(m)) == m");
        assert_eq!(enc(&back), b, "{name}: emit(parse(b)) == b");
    }
}

#[test]
fn emit_into_a_larger_buffer_writes_exactly_encoded_len() {
    for (name, f) in samples() {
        let mut buf = vec![0xeeu8; f.encoded_len() + 7];
        let n = f.emit(&mut buf).unwrap();
        assert_eq!(n, f.encoded_len(), "{name}");
        assert!(
            buf[n..].iter().all(|b| *b == 0xee),
            "{name}: wrote past its length"
        );
        assert_eq!(&buf[..n], &enc(&f)[..], "{name}");
    }
}

#[test]
fn parsed_byte_fields_are_slices_of_the_frame() {
    let b = enc(&Frame::Topic(eager(1024)));
    let Frame::Topic(Message {
        body: Body::Eager(g),
        ..
    }) = Frame::parse(&b, &Limits::default()).unwrap()
    else {
        panic!("not eager")
    };
    let range = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
    assert!(
        range.contains(&(g.payload.as_ptr() as usize)),
        "payload copied"
    );
    assert!(
        range.contains(&(g.signature.as_ptr() as usize)),
        "signature copied"
    );
}

#[test]
fn every_strict_prefix_is_truncated() {
    let lim = Limits::default();
    for (name, f) in samples() {
        let b = enc(&f);
        for cut in 0..b.len() {
            match Frame::parse(&b.slice(..cut), &lim) {
                Err(WireError::Truncated { at, need, got }) => {
                    assert!(
                        at + got == cut && need > got,
                        "{name}[..{cut}]: {at} {need} {got}"
                    )
                }
                other => panic!("{name}[..{cut}]: {other:?}"),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    for (name, f) in samples() {
        let mut v = enc(&f).to_vec();
        v.extend_from_slice(&[0, 1, 2]);
        assert_eq!(
            Frame::parse(&Bytes::from(v), &Limits::default()),
            Err(WireError::Trailing(3)),
            "{name}"
        );
    }
}

#[test]
fn other_versions_are_rejected_before_anything_else() {
    let b = enc(&Frame::Topic(eager(64)));
    for v in (0..=255u8).filter(|v| *v != VERSION) {
        let mut x = b.to_vec();
        x[0] = v;
        assert_eq!(
            Frame::parse(&Bytes::from(x), &Limits::default()),
            Err(WireError::BadVersion(v))
        );
    }
}

#[test]
fn unknown_tags_are_rejected() {
    let known: Vec<u8> = samples().iter().map(|(_, f)| enc(f)[1]).collect();
    let mut rejected = 0;
    for t in 0..=255u8 {
        let mut x = enc(&Frame::Topic(ihave(1))).to_vec();
        x[1] = t;
        let r = Frame::parse(&Bytes::from(x), &Limits::default());
        if known.contains(&t) {
            assert!(!matches!(r, Err(WireError::UnknownTag(_))), "{t:#x}");
        } else {
            assert_eq!(r, Err(WireError::UnknownTag(t)));
            rejected += 1;
        }
    }
    assert_eq!(rejected, 256 - 16, "15 topic kinds and DM are known");
}

#[test]
fn reserved_flag_bits_are_rejected() {
    for body in [
        Body::Neighbor {
            high_priority: true,
        },
        Body::NeighborReply { accepted: false },
    ] {
        let f = Frame::Topic(Message {
            topic: topic(),
            body,
        });
        let mut x = enc(&f).to_vec();
        let last = x.len() - 1;
        for bit in 1..8 {
            x[last] |= 1 << bit;
            assert_eq!(
                Frame::parse(&Bytes::from(x.clone()), &Limits::default()),
                Err(WireError::ReservedBits(x[last]))
            );
        }
    }
}

#[test]
fn unknown_dm_seal_is_rejected() {
    let mut x = enc(&Frame::Dm(dm(DmSeal::Signed, 10))).to_vec();
    // version, tag, from, to, id, ttl, then the seal byte.
    let at = 2 + 32 + 32 + 16 + 1;
    x[at] = 7;
    assert_eq!(
        Frame::parse(&Bytes::from(x), &Limits::default()),
        Err(WireError::UnknownSeal(7))
    );
}

#[test]
fn each_limit_rejects_one_over_and_accepts_exactly_at() {
    let cases: Vec<(Frame, Field, usize, Limits, Limits)> = vec![
        (
            Frame::Topic(eager(100)),
            Field::Payload,
            100,
            with(|l| l.max_payload = 100),
            with(|l| l.max_payload = 99),
        ),
        (
            Frame::Topic(eager(1)),
            Field::Signature,
            3309,
            with(|l| l.max_signature = 3309),
            with(|l| l.max_signature = 3308),
        ),
        (
            Frame::Topic(ihave(10)),
            Field::List,
            10,
            with(|l| l.max_list = 10),
            with(|l| l.max_list = 9),
        ),
        (
            samples()
                .into_iter()
                .find(|(n, _)| *n == "key_response")
                .unwrap()
                .1,
            Field::Key,
            1952,
            with(|l| l.max_key = 1952),
            with(|l| l.max_key = 1951),
        ),
        (
            Frame::Dm(dm(DmSeal::Sealed, 500)),
            Field::DmBody,
            500,
            with(|l| l.max_dm_body = 500),
            with(|l| l.max_dm_body = 499),
        ),
    ];
    for (f, field, len, at, under) in cases {
        let b = enc(&f);
        assert_eq!(Frame::parse(&b, &at).as_ref(), Ok(&f), "{field:?} at limit");
        assert_eq!(
            Frame::parse(&b, &under),
            Err(WireError::Oversize {
                field,
                len: len as u64,
                max: len as u64 - 1
            })
        );
    }
    let b = enc(&Frame::Topic(eager(64)));
    let small = with(|l| l.max_frame = b.len() - 1);
    assert_eq!(
        Frame::parse(&b, &small),
        Err(WireError::Oversize {
            field: Field::Frame,
            len: b.len() as u64,
            max: b.len() as u64 - 1
        })
    );
}

#[test]
fn limits_follow_the_core_config() {
    let mut cfg = Config::default();
    cfg.list_max = 17;
    assert_eq!(Limits::from_config(&cfg).max_list, 17);
    assert_eq!(Limits::default().max_list, Config::default().list_max);
    let big = Limits::default().with_max_payload(8 << 20);
    assert!(big.max_frame > big.max_payload);
}

#[test]
fn emit_refuses_short_buffers_at_every_length() {
    for (name, f) in samples() {
        let need = f.encoded_len();
        for got in [0, 1, need / 2, need - 1] {
            let mut buf = vec![0u8; got];
            assert_eq!(
                f.emit(&mut buf),
                Err(EmitError::BufferTooSmall { need, got }),
                "{name}"
            );
        }
    }
}

#[test]
fn emit_refuses_fields_longer_than_their_prefix() {
    let long_list = Message {
        topic: topic(),
        body: Body::IWant(vec![MessageId([1; 32]); 65_536]),
    };
    assert_eq!(
        long_list.to_bytes(),
        Err(EmitError::TooLong {
            field: Field::List,
            len: 65_536,
            max: 65_535
        })
    );
    let ok_list = Message {
        topic: topic(),
        body: Body::ShuffleReply {
            peers: vec![PeerId([2; 32]); 65_535],
        },
    };
    assert_eq!(ok_list.to_bytes().unwrap().len(), ok_list.encoded_len());
    let mut m = eager(8);
    if let Body::Eager(g) = &mut m.body {
        g.signature = Bytes::from(vec![0u8; 65_536]);
    }
    assert_eq!(
        m.to_bytes(),
        Err(EmitError::TooLong {
            field: Field::Signature,
            len: 65_536,
            max: 65_535
        })
    );
}

/// Any single-bit flip of a valid frame parses to an error or to a frame
/// that re-encodes to exactly the flipped bytes (one encoding per frame).
#[test]
fn bit_flips_give_errors_or_canonical_frames() {
    let lim = Limits::default();
    let mut oks = 0;
    for (name, f) in samples() {
        let b = enc(&f).to_vec();
        // Flips in the header and the first fields, where lengths and tags live.
        for i in 0..b.len().min(160) {
            for bit in 0..8 {
                let mut x = b.clone();
                x[i] ^= 1 << bit;
                let x = Bytes::from(x);
                if let Ok(g) = Frame::parse(&x, &lim) {
                    assert_eq!(enc(&g), x, "{name} byte {i} bit {bit}");
                    oks += 1;
                }
            }
        }
    }
    assert!(oks > 0, "flips in ids and values keep frames valid");
}
