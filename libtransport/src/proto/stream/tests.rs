//! Unit tests of the stream decoder: round trips over every split,
//! truncated / oversize / unknown / bad-version rejects, bidirectional
//! hand-off, zero-copy and allocation bounds. Capability T5.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::kind::VERSION;

const MAX: u32 = 64 * 1024;

fn limit(k: Kind) -> Option<u32> {
    (k == Kind::DM || k == Kind::BULK).then_some(MAX)
}

fn encode(k: Kind, msgs: &[Vec<u8>]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(&kind::header(k));
    for m in msgs {
        b.put_u32(u32::try_from(m.len()).unwrap());
        b.put_slice(m);
    }
    b.freeze()
}

/// Feeds `wire` split at `cuts` (sorted offsets); returns the frames and
/// the first reject.
fn feed(dec: &mut StreamDecoder, wire: &Bytes, cuts: &[usize]) -> (Vec<Frame>, Option<Reject>) {
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
        let mut chunk = wire.slice(start..end);
        start = end;
        while !chunk.is_empty() {
            match dec.push(&mut chunk, limit) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => assert!(chunk.is_empty(), "Ok(None) left bytes behind"),
                Err(r) => return (frames, Some(r)),
            }
        }
    }
    (frames, None)
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        b"a".to_vec(),
        Vec::new(),
        (0..=255u8).cycle().take(3000).collect(),
        b"tail".to_vec(),
    ]
}

fn expected(k: Kind, msgs: &[Vec<u8>]) -> Vec<Frame> {
    let mut f = vec![Frame::Header(k)];
    f.extend(msgs.iter().map(|m| Frame::Message(Bytes::from(m.clone()))));
    f
}

#[test]
fn round_trip_at_every_single_split() {
    let msgs = messages();
    let wire = encode(Kind::DM, &msgs);
    for cut in 0..=wire.len() {
        let mut dec = StreamDecoder::uni();
        let (frames, err) = feed(&mut dec, &wire, &[cut]);
        assert_eq!(err, None, "cut {cut}");
        assert_eq!(frames, expected(Kind::DM, &msgs), "cut {cut}");
        assert_eq!(dec.finish(), Ok(()));
        assert!(dec.at_message_boundary());
    }
}

#[test]
fn round_trip_over_pseudo_random_splits() {
    let msgs = messages();
    let wire = encode(Kind::BULK, &msgs);
    // A fixed LCG: reproducible splits without a runtime RNG.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        let mut cuts = Vec::new();
        let mut at = 0;
        loop {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            at += 1 + (x >> 33) as usize % 700;
            if at >= wire.len() {
                break;
            }
            cuts.push(at);
        }
        let mut dec = StreamDecoder::uni();
        let (frames, err) = feed(&mut dec, &wire, &cuts);
        assert_eq!(err, None, "{cuts:?}");
        assert_eq!(frames, expected(Kind::BULK, &msgs), "{cuts:?}");
    }
}

#[test]
fn truncated_streams_are_rejected_at_finish() {
    let wire = encode(Kind::DM, &[b"hello".to_vec()]);
    // Ends before any byte, inside the header, inside the prefix, inside
    // the body.
    for end in [0, 1, 3, 5, wire.len() - 1] {
        let mut dec = StreamDecoder::uni();
        let (_, err) = feed(&mut dec, &wire.slice(..end), &[]);
        assert_eq!(err, None, "end {end}");
        assert_eq!(dec.finish(), Err(Reject::Truncated), "end {end}");
    }
    // Between messages and after the header, the end is clean.
    for end in [HEADER_LEN, wire.len()] {
        let mut dec = StreamDecoder::uni();
        feed(&mut dec, &wire.slice(..end), &[]);
        assert_eq!(dec.finish(), Ok(()), "end {end}");
    }
}

#[test]
fn oversize_length_is_rejected_before_any_allocation() {
    let mut b = BytesMut::new();
    b.put_slice(&kind::header(Kind::DM));
    b.put_u32(MAX + 1);
    b.put_slice(b"xyz");
    let mut dec = StreamDecoder::uni();
    let (frames, err) = feed(&mut dec, &b.freeze(), &[]);
    assert_eq!(frames, vec![Frame::Header(Kind::DM)]);
    assert_eq!(err, Some(Reject::Oversize));
    assert_eq!(dec.partial.capacity(), 0);
    // A length at the limit is fine.
    let ok = encode(Kind::DM, &[vec![1u8; MAX as usize]]);
    let (frames, err) = feed(&mut StreamDecoder::uni(), &ok, &[]);
    assert_eq!((frames.len(), err), (2, None));
}

#[test]
fn a_declared_length_does_not_size_the_buffer() {
    // The peer announces a 64 KiB message and sends one byte of it.
    let mut b = BytesMut::new();
    b.put_slice(&kind::header(Kind::DM));
    b.put_u32(MAX);
    b.put_u8(7);
    let mut dec = StreamDecoder::uni();
    let (_, err) = feed(&mut dec, &b.freeze(), &[]);
    assert_eq!(err, None);
    assert!(
        dec.partial.capacity() <= 2 * SPAN_RESERVE,
        "{}",
        dec.partial.capacity()
    );
    assert_eq!(dec.finish(), Err(Reject::Truncated));
}

#[test]
fn unknown_kind_and_bad_version_are_rejected() {
    let cases = [
        ([9u8, VERSION], Reject::UnknownKind),
        ([Kind::DM.0, VERSION + 1], Reject::BadVersion),
        // The kind is checked first, as the reset code says.
        ([9u8, VERSION + 1], Reject::UnknownKind),
    ];
    for (header, want) in cases {
        for bi in [false, true] {
            let mut dec = if bi {
                StreamDecoder::bi()
            } else {
                StreamDecoder::uni()
            };
            let mut chunk = Bytes::copy_from_slice(&header);
            assert_eq!(dec.push(&mut chunk, limit), Err(want));
            assert_eq!(dec.kind(), None);
        }
    }
}

#[test]
fn a_reject_is_sticky() {
    let mut dec = StreamDecoder::uni();
    let mut chunk = Bytes::from_static(&[9, VERSION]);
    assert_eq!(dec.push(&mut chunk, limit), Err(Reject::UnknownKind));
    let mut more = encode(Kind::DM, &[b"x".to_vec()]);
    assert_eq!(dec.push(&mut more, limit), Err(Reject::UnknownKind));
    assert_eq!(dec.finish(), Err(Reject::UnknownKind));
    assert!(!dec.at_message_boundary());
}

#[test]
fn limit_is_asked_once_with_the_header_kind() {
    let wire = encode(Kind::DM, &[b"one".to_vec(), b"two".to_vec()]);
    let mut asked = Vec::new();
    let mut dec = StreamDecoder::uni();
    for i in 0..wire.len() {
        let mut chunk = wire.slice(i..=i);
        while !chunk.is_empty() {
            dec.push(&mut chunk, |k| {
                asked.push(k);
                Some(MAX)
            })
            .unwrap();
        }
    }
    assert_eq!(asked, vec![Kind::DM]);
}

#[test]
fn bidirectional_stream_hands_off_after_the_header() {
    let mut chunk = Bytes::from_static(&[Kind::DM.0, VERSION, 0xde, 0xad]);
    let mut dec = StreamDecoder::bi();
    assert_eq!(dec.header_needed(), HEADER_LEN);
    assert_eq!(
        dec.push(&mut chunk, limit),
        Ok(Some(Frame::Header(Kind::DM)))
    );
    // The handler's bytes are left alone.
    assert_eq!(&chunk[..], &[0xde, 0xad]);
    assert_eq!(dec.push(&mut chunk, limit), Ok(None));
    assert_eq!(chunk.len(), 2);
    assert_eq!((dec.header_needed(), dec.finish()), (0, Ok(())));
}

#[test]
fn whole_messages_are_zero_copy_slices_of_the_chunk() {
    let wire = encode(Kind::DM, &[vec![3u8; 100]]);
    let base = wire.as_ptr() as usize;
    let (frames, _) = feed(&mut StreamDecoder::uni(), &wire, &[]);
    let Frame::Message(m) = &frames[1] else {
        panic!("{frames:?}")
    };
    let at = m.as_ptr() as usize;
    assert!(at >= base && at < base + wire.len(), "copied");
}

#[test]
fn boundary_and_header_progress_are_reported() {
    let wire = encode(Kind::DM, &[b"abc".to_vec()]);
    let mut dec = StreamDecoder::uni();
    assert!(!dec.at_message_boundary());
    let mut one = wire.slice(..1);
    assert_eq!(dec.push(&mut one, limit), Ok(None));
    assert_eq!(dec.header_needed(), 1);
    let mut rest = wire.slice(1..);
    assert_eq!(
        dec.push(&mut rest, limit),
        Ok(Some(Frame::Header(Kind::DM)))
    );
    assert!(dec.at_message_boundary());
    assert_eq!(
        dec.push(&mut rest, limit),
        Ok(Some(Frame::Message(Bytes::from_static(b"abc"))))
    );
    assert!(dec.at_message_boundary() && rest.is_empty());
}
