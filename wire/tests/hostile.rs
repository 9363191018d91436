//! Hostile input never panics, always yields a typed error, and never makes
//! a reader allocate more than the negotiated maximum (P1, V5).
//!
//! This binary installs a counting global allocator that records, per
//! thread, the largest single allocation and the total bytes requested
//! while a check is armed; the tests arm it around reads of hostile streams.

// Tests may unwrap (STYLE.md); helpers outside #[test] fns need the allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use test_support::alloc::Counting;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wire::WireError;
use wire::frame::{
    self, AdminSchema, ErrorSchema, FrameReader, HelloSchema, RelaySchema, VerifySchema,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with allocation tracking on; returns (largest, total) bytes.
fn tracked<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    assert!(
        test_support::alloc::installed(),
        "counting allocator missing"
    );
    let t = test_support::alloc::tracked(f);
    (t.value, t.largest, t.total)
}

const MAX: u32 = 64 * 1024;

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads every frame of `stream` and decodes it as every schema, returning
/// the first framing error (or None at a clean end).
fn drain(stream: &[u8], max: u32) -> Option<WireError> {
    let mut r = FrameReader::new(stream, max);
    loop {
        match r.read_frame() {
            Ok(Some(p)) => {
                std::hint::black_box(common::walk::all(p));
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

#[test]
fn oversize_lengths_are_refused_before_allocating() {
    for announced in [MAX + 1, 1 << 24, u32::MAX] {
        let mut stream = announced.to_le_bytes().to_vec();
        stream.extend_from_slice(&[0xab; 10]);
        let (err, largest, total) = tracked(|| drain(&stream, MAX));
        match err {
            Some(WireError::Oversize { len, max }) => {
                assert_eq!((len, max), (u64::from(announced), MAX));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            largest <= 8 * 1024,
            "allocated {largest} for a refused frame"
        );
        assert!(total <= 16 * 1024, "allocated {total} in total");
    }
}

#[test]
fn a_large_announcement_with_few_bytes_costs_only_what_arrived() {
    // Within the limit, but only 100 bytes follow before the stream ends.
    let mut stream = MAX.to_le_bytes().to_vec();
    stream.extend_from_slice(&[1; 100]);
    let (err, largest, _) = tracked(|| drain(&stream, MAX));
    assert!(matches!(
        err,
        Some(WireError::Truncated { got: 104, want }) if want == MAX as usize + 4
    ));
    assert!(largest <= 8 * 1024, "allocated {largest} for 104 bytes");
}

#[test]
fn zero_length_is_typed() {
    assert!(matches!(
        drain(&[0, 0, 0, 0], MAX),
        Some(WireError::ZeroLength)
    ));
}

#[test]
fn every_truncation_of_every_sample_is_typed() {
    for (name, sample) in common::all_samples() {
        let stream = framed(&sample);
        let max = (stream.len() as u32).max(frame::MIN_MAX_FRAME);
        for cut in 1..stream.len() {
            match drain(&stream[..cut], max) {
                Some(WireError::Truncated { got, want }) => {
                    assert_eq!(got, cut, "{name} cut at {cut}");
                    assert_eq!(want, if cut < 4 { 4 } else { stream.len() });
                }
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
        assert!(drain(&[], max).is_none(), "empty stream is a clean end");
    }
}

#[test]
fn frames_of_the_wrong_schema_are_typed() {
    let verify = common::verify_result();
    let relay = common::relay_admission();
    let hello = common::hello();
    assert!(matches!(
        frame::decode::<RelaySchema>(&verify),
        Err(WireError::WrongSchema { expected, found }) if &expected == b"TRLY" && &found == b"TVFY"
    ));
    assert!(matches!(
        frame::decode::<VerifySchema>(&relay),
        Err(WireError::WrongSchema { .. })
    ));
    assert!(matches!(
        frame::decode::<AdminSchema>(&hello),
        Err(WireError::WrongSchema { .. })
    ));
    assert!(matches!(
        frame::decode::<HelloSchema>(&verify),
        Err(WireError::WrongSchema { .. })
    ));
    assert!(matches!(
        frame::decode::<VerifySchema>(&common::error_frame()),
        Err(WireError::Remote(_))
    ));
    // Too short to carry an identifier at all.
    for len in 0..8 {
        assert!(matches!(
            frame::decode::<VerifySchema>(&vec![b'T'; len]),
            Err(WireError::TooShort { len: l }) if l == len
        ));
    }
    // Right identifier, wrong contents: a relay Admission relabelled as
    // verify reads as a VerifyBatch (same union tag) whose fields do not
    // fit, which the verifier catches.
    let mut relabelled = relay.clone();
    relabelled[4..8].copy_from_slice(b"TVFY");
    match frame::decode::<VerifySchema>(&relabelled) {
        Err(WireError::BadFlatbuffer { schema, source }) => {
            assert_eq!(schema, "tern.verify", "{source}");
        }
        other => panic!("{other:?}"),
    }
}

/// An unknown union member verifies (old readers must tolerate new
/// messages) but matches no accessor: callers map it to UnexpectedMessage.
#[test]
fn unknown_union_member_reads_as_nothing() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let inner = wire::generated::verify::Busy::create(&mut fbb, &Default::default());
    let root = wire::generated::verify::VerifyFrame::create(
        &mut fbb,
        &wire::generated::verify::VerifyFrameArgs {
            msg_type: wire::generated::verify::VerifyMessage(200),
            msg: Some(inner.as_union_value()),
        },
    );
    frame::finish::<VerifySchema>(&mut fbb, root);
    let f = frame::decode::<VerifySchema>(fbb.finished_data()).unwrap();
    assert!(f.msg_as_busy().is_none() && f.msg_as_verify_batch().is_none());
    assert!(f.msg_type().variant_name().is_none());
    match frame::decode_verify(fbb.finished_data()) {
        Err(WireError::UnexpectedMessage { expected, got }) => {
            assert_eq!(expected, "a tern.verify message");
            assert_eq!(got, "unknown union member 200");
        }
        other => panic!("{other:?}"),
    }
}

/// Random streams and random mutations of valid frames: every outcome is a
/// value (Ok or a typed error), nothing panics, and no allocation exceeds
/// the negotiated maximum plus the prefix.
#[test]
fn random_and_mutated_input_never_panics_or_overallocates() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7e57_f00d);
    let samples = common::all_samples();
    let mut errors = 0usize;
    for round in 0..3000 {
        let stream: Vec<u8> = if round % 3 == 0 {
            // Pure noise, sometimes with a plausible small length prefix.
            let len = rng.random_range(0..2048);
            let mut v = vec![0; len];
            rng.fill_bytes(&mut v);
            if len >= 4 && rng.random_bool(0.5) {
                let l = rng.random_range(0..(len as u32));
                v[..4].copy_from_slice(&l.to_le_bytes());
            }
            v
        } else {
            // A valid frame with a few bytes flipped or overwritten.
            let (_, s) = &samples[rng.random_range(0..samples.len())];
            let mut v = framed(s);
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(4..v.len());
                v[at] = if rng.random_bool(0.5) {
                    v[at] ^ (1 << rng.random_range(0..8))
                } else {
                    rng.random()
                };
            }
            v
        };
        let (err, largest, _) = tracked(|| drain(&stream, MAX));
        errors += usize::from(err.is_some());
        assert!(
            largest <= MAX as usize + 4,
            "round {round}: allocation of {largest} bytes"
        );
        // The same bytes straight into each schema's verifier.
        let payload = stream.get(4..).unwrap_or_default();
        std::hint::black_box(common::walk::all(payload));
        for e in [
            frame::decode::<HelloSchema>(payload).err(),
            frame::decode::<ErrorSchema>(payload).err(),
            frame::decode::<VerifySchema>(payload).err(),
            frame::decode::<RelaySchema>(payload).err(),
            frame::decode::<AdminSchema>(payload).err(),
        ]
        .into_iter()
        .flatten()
        {
            // Display must work on every error (it is what gets logged).
            assert!(!e.to_string().is_empty());
        }
    }
    assert!(errors > 0, "the generator produced no hostile input");
}

/// The async codec over a real socket: a hostile prefix is refused with a
/// typed error and the read buffer stays at its initial size.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_codec_refuses_hostile_prefix_without_growing() {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Framed;
    use wire::frame::FrameCodec;

    for (prefix, zero) in [(u32::MAX, false), (MAX + 1, false), (0, true)] {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut hostile = prefix.to_le_bytes().to_vec();
        hostile.extend_from_slice(&[0x5a; 100]);
        a.write_all(&hostile).await.unwrap();
        let mut f = Framed::new(b, FrameCodec::new(MAX));
        match f.next().await {
            Some(Err(WireError::ZeroLength)) if zero => {}
            Some(Err(WireError::Oversize { len, max })) if !zero => {
                assert_eq!((len, max), (u64::from(prefix), MAX));
            }
            other => panic!("{other:?}"),
        }
        assert!(f.read_buffer().capacity() <= 8 * 1024);
    }
    // A frame cut short by the peer closing is Truncated.
    let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
    a.write_all(&[200, 0, 0, 0, 1, 2, 3]).await.unwrap();
    drop(a);
    let mut f = Framed::new(b, FrameCodec::new(MAX));
    assert!(matches!(
        f.next().await,
        Some(Err(WireError::Truncated { got: 7, want: 204 }))
    ));
}

fn batch_of<'a>(
    fbb: &mut flatbuffers::FlatBufferBuilder<'a>,
    items: &[flatbuffers::WIPOffset<wire::generated::verify::VerifyItem<'a>>],
) -> Vec<u8> {
    use wire::generated::verify as v;
    let items = fbb.create_vector(items);
    let b = v::VerifyBatch::create(
        fbb,
        &v::VerifyBatchArgs {
            request_id: 1,
            items: Some(items),
            ..Default::default()
        },
    );
    common::verify_frame(fbb, v::VerifyMessage::VerifyBatch, b.as_union_value())
}

/// The verifier limits scale with the frame: the densest honest batch (many
/// empty items) passes, while a "DAG bomb" — one item with a 64 KiB
/// signature referenced 1,000 times, 68 KB on the wire but 64 MB if
/// expanded — is rejected before anything reads it.
#[test]
fn verifier_limits_accept_dense_batches_and_reject_dag_bombs() {
    use wire::generated::verify as v;
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let empty: Vec<_> = (0..10_000)
        .map(|_| v::VerifyItem::create(&mut fbb, &Default::default()))
        .collect();
    let dense = batch_of(&mut fbb, &empty);
    match frame::decode_verify(&dense).unwrap() {
        frame::VerifyMsg::VerifyBatch(b) => assert_eq!(b.items().len(), 10_000),
        other => panic!("{other:?}"),
    }

    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let sig = fbb.create_vector(&[0x5a_u8; 64 * 1024]);
    let one = v::VerifyItem::create(
        &mut fbb,
        &v::VerifyItemArgs {
            key_id: 1,
            signature: Some(sig),
            ..Default::default()
        },
    );
    let bomb = batch_of(&mut fbb, &vec![one; 1000]);
    assert!(bomb.len() < 70 * 1024);
    match frame::decode::<VerifySchema>(&bomb) {
        Err(WireError::BadFlatbuffer { source, .. }) => assert!(matches!(
            source,
            flatbuffers::InvalidFlatbuffer::ApparentSizeTooLarge
        )),
        other => panic!("{other:?}"),
    }
}
