//! The `stream_decoder` fuzz target's seed corpus
//! (`fuzz/corpus/stream_decoder/`): clean uni streams (whole and split,
//! empty and spanning messages), a bidirectional hand-off, and hostile ones
//! (oversize length, truncated header / prefix / body, unknown kind, bad
//! version). This test checks each committed seed decodes as named; with
//! `TERN_WRITE_FUZZ_SEEDS=1` it (re)writes them first.

#![allow(clippy::unwrap_used)] // seed builders are test code

use libtransport::Bytes;
use libtransport::kind::{self, Kind, VERSION};
use libtransport::proto::stream::{Frame, Reject, StreamDecoder};

/// Must match the target's reading of byte 1 (`fuzz/fuzz_targets/stream_decoder.rs`).
const LIMIT_UNIT: u32 = 64;

/// A seed: mode byte, limit byte, stream.
fn seed(mode: u8, limit: u8, stream: &[u8]) -> Vec<u8> {
    let mut s = vec![mode, limit];
    s.extend_from_slice(stream);
    s
}

fn uni(kind: Kind, msgs: &[&[u8]]) -> Vec<u8> {
    let mut s = kind::header(kind).to_vec();
    for m in msgs {
        s.extend_from_slice(&u32::try_from(m.len()).unwrap().to_be_bytes());
        s.extend_from_slice(m);
    }
    s
}

/// A named seed, the verdict and the frame count it must decode to.
type Seed = (&'static str, Vec<u8>, Result<(), Reject>, usize);

/// Seeds by name, with the verdict and the number of frames the decoder
/// must give for each.
fn seeds() -> Vec<Seed> {
    let three: [&[u8]; 3] = [b"hello", b"", b"world"];
    let big = vec![0x42u8; 1000];
    let mut oversize = uni(Kind::DM, &[]);
    oversize.extend_from_slice(&(16 * LIMIT_UNIT + 1).to_be_bytes());
    oversize.extend_from_slice(b"abc");
    let body_cut = uni(Kind::DM, &[b"hello"]);
    vec![
        ("uni_three", seed(0, 16, &uni(Kind::DM, &three)), Ok(()), 4),
        (
            "uni_three_split",
            seed(0x0a, 16, &uni(Kind::DM, &three)),
            Ok(()),
            4,
        ),
        (
            "uni_spanning",
            seed(0x3e, 16, &uni(Kind::DM, &[&big, b"x"])),
            Ok(()),
            3,
        ),
        (
            "uni_header_only",
            seed(0, 1, &uni(Kind::DM, &[])),
            Ok(()),
            1,
        ),
        (
            "bi_hand_off",
            seed(1, 16, &[Kind::DM.0, VERSION, 0xde, 0xad, 0xbe, 0xef]),
            Ok(()),
            1,
        ),
        ("oversize", seed(0, 16, &oversize), Err(Reject::Oversize), 1),
        (
            "truncated_header",
            seed(0, 16, &[Kind::DM.0]),
            Err(Reject::Truncated),
            0,
        ),
        (
            "truncated_prefix",
            seed(0, 16, &body_cut[..4]),
            Err(Reject::Truncated),
            1,
        ),
        (
            "truncated_body",
            seed(0x06, 16, &body_cut[..body_cut.len() - 1]),
            Err(Reject::Truncated),
            1,
        ),
        (
            "unknown_kind",
            seed(0, 16, &uni(Kind(9), &three)),
            Err(Reject::UnknownKind),
            0,
        ),
        (
            "bad_version",
            seed(1, 16, &[Kind::DM.0, VERSION + 1]),
            Err(Reject::BadVersion),
            0,
        ),
    ]
}

/// Decodes a seed as the target does with the whole stream in one chunk.
fn decode(seed: &[u8]) -> (Result<(), Reject>, usize) {
    let (mode, max, stream) = (seed[0], u32::from(seed[1]) * LIMIT_UNIT, &seed[2..]);
    let mut dec = if mode & 1 == 1 {
        StreamDecoder::bi()
    } else {
        StreamDecoder::uni()
    };
    let mut chunk = Bytes::copy_from_slice(stream);
    let mut frames = 0;
    loop {
        match dec.push(&mut chunk, |k| (k == Kind::DM).then_some(max)) {
            Ok(Some(Frame::Header(_) | Frame::Message(_))) => frames += 1,
            Ok(None) => return (dec.finish(), frames),
            Err(r) => return (Err(r), frames),
        }
    }
}

/// T5: the committed corpus is current and every seed decodes as named.
#[test]
fn stream_decoder_seeds_decode_as_named() {
    let seeds = seeds();
    test_support::seeds::check_committed(
        "stream_decoder",
        seeds.iter().map(|(n, b, ..)| (*n, &b[..])),
    );
    for (name, bytes, verdict, frames) in &seeds {
        assert_eq!(decode(bytes), (*verdict, *frames), "{name}");
    }
}
