//! Frame decoder: arbitrary bytes as a socket stream. The first two bytes
//! pick the negotiated maximum (4 KiB .. 68 KiB) so oversize handling is
//! exercised; every frame read is decoded as every schema and walked.
#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;
use wire::frame::{FrameReader, MIN_MAX_FRAME};

#[path = "../../wire/tests/common/walk.rs"]
mod walk;

fuzz_target!(|data: &[u8]| {
    let (max, stream) = match data {
        [a, b, rest @ ..] => (
            MIN_MAX_FRAME + u32::from(u16::from_le_bytes([*a, *b])),
            rest,
        ),
        _ => (MIN_MAX_FRAME, data),
    };
    let mut reader = FrameReader::new(stream, max);
    // Each frame consumes at least 5 bytes, so this loop ends.
    while let Ok(Some(payload)) = reader.read_frame() {
        std::hint::black_box(walk::all(payload));
    }
    assert!(reader.buffer_capacity() <= max as usize + 4);
});
