//! Fuzz target for libgossip's wire codec (`libgossip::wire::Frame::parse`
//! and `Frame::emit`), which reads every gossip frame a peer sends. Parsing
//! must never panic; whatever parses must emit to exactly `encoded_len`
//! bytes, and those bytes must be the input (one encoding per frame) and
//! parse back to the same frame. The `Decoder` must agree with `parse` and
//! count each outcome once.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use libgossip::wire::{Decoder, Frame, Limits};

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches the over-limit paths of every
    // field with short inputs; the list limit matches the core's default.
    let mut limits = Limits::default();
    limits.max_frame = 64 << 10;
    limits.max_payload = 16 << 10;
    limits.max_signature = 4 << 10;
    limits.max_key = 2 << 10;
    limits.max_dm_body = 16 << 10;
    let bytes = Bytes::copy_from_slice(data);
    let parsed = Frame::parse(&bytes, &limits);

    let mut dec = Decoder::new(limits);
    let decoded = dec.decode(&bytes, |_| true);
    assert_eq!(
        decoded, parsed,
        "Decoder (all topics joined) agrees with parse"
    );
    let stats = dec.stats();
    assert_eq!(stats.accepted + stats.rejected_total(), 1);

    match parsed {
        Ok(frame) => {
            assert_eq!(stats.accepted, 1);
            let len = frame.encoded_len();
            assert_eq!(len, data.len(), "encoded_len of a parsed frame");
            let mut buf = vec![0u8; len];
            let n = frame.emit(&mut buf).expect("a parsed frame always emits");
            assert_eq!(n, len);
            assert_eq!(buf, data, "emit(parse(b)) == b");
            let again = Frame::parse(&Bytes::from(buf), &limits).expect("re-parse");
            assert_eq!(again, frame, "parse(emit(f)) == f");
        }
        Err(e) => {
            assert_eq!(stats.rejected(e.class()), 1);
            std::hint::black_box(e.to_string());
        }
    }
});
