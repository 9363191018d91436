//! Fuzz target for libtransport's router stream decoder
//! (`libtransport::proto::stream::StreamDecoder`), which reads untrusted
//! bytes from every stream a peer opens. Input: byte 0 picks the stream
//! direction (bit 0: bidirectional) and how the stream is split into
//! chunks (the other bits); byte 1 sets the DM kind's message limit
//! (`byte * 64`, so oversize lengths are common); the rest is the stream.
//! The decoder must never panic; whatever it returns must re-encode to
//! exactly the bytes it consumed; the same stream in one chunk must give
//! the same frames and the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libtransport::Bytes;
use libtransport::kind::{self, Kind};
use libtransport::proto::stream::{Frame, Reject, StreamDecoder};

/// Frames, the verdict (`Ok` = clean end at FIN) and the bytes consumed.
fn decode(bi: bool, max: u32, stream: &Bytes, cuts: u8) -> (Vec<Frame>, Result<(), Reject>, usize) {
    let limit = |k: Kind| (k == Kind::DM).then_some(max);
    let mut dec = if bi {
        StreamDecoder::bi()
    } else {
        StreamDecoder::uni()
    };
    let mut frames = Vec::new();
    let mut consumed = 0;
    let mut at = 0;
    let mut step = 0usize;
    while at < stream.len() {
        // Chunk sizes 1..=32 picked by the mode bits, or everything at once.
        let size = match cuts {
            0 => stream.len(),
            c => 1 + usize::from(c).wrapping_mul(step + 7) % 32,
        };
        step += 1;
        let end = (at + size).min(stream.len());
        let mut chunk = stream.slice(at..end);
        let err = loop {
            match dec.push(&mut chunk, limit) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break None,
                Err(r) => break Some(r),
            }
        };
        consumed += (end - at) - chunk.len();
        if let Some(r) = err {
            assert_eq!(dec.push(&mut chunk, limit), Err(r), "a reject is sticky");
            assert_eq!(dec.finish(), Err(r), "a reject is sticky");
            return (frames, Err(r), consumed);
        }
        if !chunk.is_empty() {
            // Only a bidirectional stream's hand-off leaves bytes behind:
            // they belong to the kind's handler.
            assert!(bi && dec.kind().is_some() && dec.header_needed() == 0);
            break;
        }
        at = end;
    }
    (frames, dec.finish(), consumed)
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        match f {
            Frame::Header(k) => out.extend_from_slice(&kind::header(*k)),
            Frame::Message(m) => {
                out.extend_from_slice(&u32::try_from(m.len()).unwrap().to_be_bytes());
                out.extend_from_slice(m);
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, max, rest @ ..] = data else {
        return;
    };
    let bi = mode & 1 == 1;
    let max = u32::from(*max) * 64;
    let stream = Bytes::copy_from_slice(rest);
    let (frames, verdict, consumed) = decode(bi, max, &stream, mode >> 1);
    let (whole, whole_verdict, _) = decode(bi, max, &stream, 0);
    assert_eq!(frames, whole, "split changed the frames");
    assert_eq!(verdict, whole_verdict, "split changed the verdict");
    let back = encode(&frames);
    if verdict.is_ok() {
        // A clean end: the frames are exactly the consumed bytes.
        assert_eq!(back, stream[..consumed]);
    } else {
        assert!(
            stream.starts_with(&back),
            "frames are not a prefix of the stream"
        );
    }
    for f in &frames {
        if let Frame::Message(m) = f {
            assert!(m.len() <= max as usize);
        }
    }
});
