//! The `ack_message` fuzz target's seed corpus (`fuzz/corpus/ack_message/`):
//! valid requests and responses of every shape plus hostile ones (oversize
//! length, bad hash, truncated, trailing bytes, unknown outcome). This test
//! checks each committed seed decodes as named; with
//! `TERN_WRITE_FUZZ_SEEDS=1` it (re)writes them first.

#![allow(clippy::unwrap_used)] // seed builders are test code

use std::time::Duration;

use libtransport::Kind;
use libtransport::proto::ack::{
    AckWireError, Outcome, REQUEST_HEADER_LEN, Request, RequestId, Response,
};

/// Must match `MAX_PAYLOAD` in `fuzz/fuzz_targets/ack_message.rs`.
const MAX_PAYLOAD: u32 = 4096;

fn request(payload: &[u8], retry: bool) -> Vec<u8> {
    let r = Request::new(Kind::DM, RequestId([0xab; 16]), payload, retry)
        .unwrap()
        .with_retry_window(Duration::from_secs(2));
    let mut b = vec![0u8];
    b.extend_from_slice(&r.header().to_bytes());
    b.extend_from_slice(payload);
    b
}

fn response(outcome: Outcome, replayed: bool, retry_after: Option<Duration>) -> Vec<u8> {
    let r = Response {
        id: RequestId([0xcd; 16]),
        outcome,
        replayed,
        retry_after,
    };
    let mut b = vec![1u8];
    b.extend_from_slice(&r.to_bytes());
    b
}

/// Seeds by name, with what the decoder must say about each.
fn seeds() -> Vec<(&'static str, Vec<u8>, Result<(), AckWireError>)> {
    let ok = Ok(());
    let mut oversize = request(b"x", false);
    // The length field is the header's last 8 bytes but the window's 4
    // (after the one selector byte).
    oversize[REQUEST_HEADER_LEN - 7..REQUEST_HEADER_LEN - 3]
        .copy_from_slice(&u32::MAX.to_be_bytes());
    let mut bad_hash = request(b"hello", false);
    *bad_hash.last_mut().unwrap() ^= 1;
    let mut trailing = request(b"hello", false);
    trailing.push(0);
    let truncated = request(b"hello", false)[..20].to_vec();
    let mut unknown = response(Outcome::Accepted, false, None);
    unknown[1 + 1 + 16] = 9;
    vec![
        ("request_small", request(b"hello", false), ok),
        ("request_retry_empty", request(b"", true), ok),
        ("request_1k", request(&[7u8; 1024], false), ok),
        (
            "request_oversize",
            oversize,
            Err(AckWireError::Oversize {
                len: u32::MAX,
                max: MAX_PAYLOAD,
            }),
        ),
        (
            "request_bad_hash",
            bad_hash,
            Err(AckWireError::HashMismatch),
        ),
        ("request_trailing", trailing, Err(AckWireError::Trailing(1))),
        (
            "request_truncated",
            truncated,
            Err(AckWireError::Truncated {
                need: REQUEST_HEADER_LEN,
                got: 19,
            }),
        ),
        (
            "response_accepted",
            response(Outcome::Accepted, false, None),
            ok,
        ),
        (
            "response_replayed",
            response(Outcome::Accepted, true, None),
            ok,
        ),
        (
            "response_backpressured",
            response(
                Outcome::Backpressured,
                false,
                Some(Duration::from_millis(250)),
            ),
            ok,
        ),
        (
            "response_conflict",
            response(Outcome::Conflict, false, None),
            ok,
        ),
        (
            "response_unknown_outcome",
            unknown,
            Err(AckWireError::UnknownOutcome(9)),
        ),
    ]
}

fn decode(seed: &[u8]) -> Result<(), AckWireError> {
    let (mode, msg) = seed.split_first().unwrap();
    if mode & 1 == 0 {
        Request::parse(msg, MAX_PAYLOAD).map(|_| ())
    } else {
        Response::parse(msg).map(|_| ())
    }
}

/// R1: the committed corpus is current and every seed decodes as named.
#[test]
fn ack_message_seeds_decode_as_named() {
    let seeds = seeds();
    test_support::seeds::check_committed("ack_message", seeds.iter().map(|(n, b, _)| (*n, &b[..])));
    for (name, bytes, want) in &seeds {
        assert_eq!(&decode(bytes), want, "{name}");
    }
}
