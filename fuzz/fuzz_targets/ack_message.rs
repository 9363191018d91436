//! Fuzz target for libtransport's receive-ACK decoders
//! (`libtransport::proto::ack::{Request, RequestHeader, Response}::parse`),
//! which read untrusted bytes from a peer's bidirectional ACK stream. The
//! first byte picks the decoder (even: request, odd: response); the rest is
//! the message. Parsing must never panic, and whatever parses must encode
//! back to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libtransport::proto::ack::{REQUEST_HEADER_LEN, Request, RequestHeader, Response};

/// The receiver's payload limit in this target.
const MAX_PAYLOAD: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, msg)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let header = RequestHeader::parse(msg, MAX_PAYLOAD);
        match Request::parse(msg, MAX_PAYLOAD) {
            Ok(r) => {
                assert_eq!(header, Ok(*r.header()));
                let mut back = r.header().to_bytes().to_vec();
                back.extend_from_slice(r.payload());
                assert_eq!(back, msg);
            }
            Err(e) => {
                std::hint::black_box(e.code());
                if let Ok(h) = header {
                    assert!(h.len <= MAX_PAYLOAD);
                    assert!(msg.len() >= REQUEST_HEADER_LEN);
                }
            }
        }
    } else {
        match Response::parse(msg) {
            Ok(r) => {
                let again = Response::parse(&r.to_bytes());
                assert_eq!(again, Ok(r));
            }
            Err(e) => {
                std::hint::black_box(e.code());
            }
        }
    }
});
