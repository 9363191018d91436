//! Fuzz target for verifyd's request decoder (`verifyd::proto::decode_request`),
//! the only function that reads untrusted request bytes in the daemon. Every
//! range the decoder returns must index inside the frame, and decoding must
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifyd::proto::{KeyRef, Request, decode_request};

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(Request::RegisterKey { key, .. }) => {
            std::hint::black_box(&data[key]);
        }
        Ok(Request::VerifyBatch { context, items, .. }) => {
            std::hint::black_box(&data[context]);
            for it in items {
                std::hint::black_box((&data[it.msg], &data[it.sig]));
                if let KeyRef::Inline(r) = it.key {
                    std::hint::black_box(&data[r]);
                }
            }
        }
        Err(e) => {
            std::hint::black_box((e.request_id(), e.code()));
        }
    }
});
