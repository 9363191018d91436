//! The receive-ACK wire format: one request and one response per
//! bidirectional stream of kind [`Kind::ACK`](crate::Kind::ACK).
//!
//! After the router's two-byte stream header the sender writes one request
//! and finishes its half; the receiver answers with one response and
//! finishes its half.
//!
//! ```text
//! request  = version:u8  flags:u8  kind:u8  request_id:[16]  payload_hash:[32]
//!            payload_len:u32be  retry_window_ms:u32be  payload:[payload_len]
//! response = version:u8  request_id:[16]  outcome:u8  flags:u8  retry_after_ms:u32be
//! ```
//!
//! * `flags` (request): bit 0 = this copy is a retry or re-issue of an id
//!   sent before (informational; dedupe never depends on it). Other bits are
//!   reserved and must be zero.
//! * `kind`: the application kind the payload is admitted into.
//! * `payload_hash`: SHA-256 of the payload. The receiver checks it, and its
//!   dedupe cache uses it to tell a retry (same id, same hash) from a
//!   conflicting reuse of an id (same id, other hash).
//! * `retry_window_ms`: how much longer the sender may send copies of this
//!   id (its remaining budget). The receiver remembers an admitted id for
//!   about twice this (within its own floor and ceiling), not for one fixed
//!   TTL, so short-budget traffic does not hold dedupe room for a minute.
//! * `flags` (response): bit 0 = the outcome is replayed from the dedupe
//!   cache (the payload was admitted by an earlier copy and not again).
//! * `retry_after_ms`: with `Backpressured`, how long the receiver expects
//!   to stay full (0 = no estimate); zero for every other outcome.
//!
//! # Panic contract
//!
//! Every `parse` function accepts any byte slice and returns a typed
//! [`AckWireError`] instead of panicking; nothing is allocated, and a hostile
//! `payload_len` is compared with the caller's limit before it is used.
//! The encoders never panic: their inputs are fixed-size or were checked
//! when the value was built ([`Request::new`]).
//!
//! ```
//! use libtransport::proto::ack::{Outcome, Request, RequestId, Response};
//! use libtransport::Kind;
//!
//! let req = Request::new(Kind::DM, RequestId([7; 16]), b"hello", false).unwrap();
//! let mut bytes = req.header().to_bytes().to_vec();
//! bytes.extend_from_slice(req.payload());
//! let back = Request::parse(&bytes, 1024).unwrap();
//! assert_eq!(back, req);
//!
//! let resp = Response::new(back.header().id, Outcome::Accepted);
//! assert_eq!(Response::parse(&resp.to_bytes()).unwrap(), resp);
//! ```

use std::fmt;
use std::time::Duration;

use aws_lc_rs::digest;

use crate::kind::Kind;

/// Wire version of requests and responses (2: requests carry the retry
/// window).
pub const VERSION: u8 = 2;
/// Request id length.
pub const REQUEST_ID_LEN: usize = 16;
/// Payload hash length (SHA-256).
pub const HASH_LEN: usize = 32;
/// Fixed request header: version, flags, kind, id, hash, payload length,
/// retry window.
pub const REQUEST_HEADER_LEN: usize = 3 + REQUEST_ID_LEN + HASH_LEN + 4 + 4;
/// Offset of the payload length in the request header.
const LEN_AT: usize = 3 + REQUEST_ID_LEN + HASH_LEN;
/// Encoded response length.
pub const RESPONSE_LEN: usize = 1 + REQUEST_ID_LEN + 2 + 4;

const FLAG_RETRY: u8 = 0x01;
const FLAG_REPLAYED: u8 = 0x01;

/// A 16-byte request id, chosen at random by the sender and kept across
/// retries and re-issues of the same message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; REQUEST_ID_LEN]);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId(")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// SHA-256 of a request's payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadHash(pub [u8; HASH_LEN]);

impl PayloadHash {
    /// The hash of `payload`.
    #[must_use]
    pub fn of(payload: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, payload);
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

impl fmt::Debug for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayloadHash(")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// Why request or response bytes were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckWireError {
    /// Fewer bytes than the fixed part (or the declared payload) needs.
    #[error("truncated: need {need} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// Bytes after the end of the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Unsupported version byte.
    #[error("unsupported receive-ACK version {0}")]
    BadVersion(u8),
    /// A reserved flag bit is set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// The declared payload is longer than the receiver's limit.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    Oversize {
        /// Declared length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The payload does not hash to the declared hash.
    #[error("payload hash mismatch")]
    HashMismatch,
    /// Unknown outcome code in a response.
    #[error("unknown outcome code {0}")]
    UnknownOutcome(u8),
    /// A payload too long for the 32-bit length field (sender side).
    #[error("payload too long for a receive-ACK request")]
    TooLong,
}

impl AckWireError {
    /// QUIC application error code the receiver stops the request stream
    /// with when it rejects a request for this reason.
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Self::Truncated { .. } => 0x30,
            Self::Trailing(_) => 0x31,
            Self::BadVersion(_) => 0x32,
            Self::ReservedFlags(_) => 0x33,
            Self::Oversize { .. } => 0x34,
            Self::HashMismatch => 0x35,
            Self::UnknownOutcome(_) => 0x36,
            Self::TooLong => 0x37,
        }
    }
}

/// The fixed part of a request, parsed before the payload is read so the
/// driver can bound the read by `len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Kind the payload is admitted into.
    pub kind: Kind,
    /// Request id.
    pub id: RequestId,
    /// SHA-256 of the payload.
    pub hash: PayloadHash,
    /// Payload length.
    pub len: u32,
    /// Whether the sender sent this id before (retry or re-issue).
    pub retry: bool,
    /// How much longer the sender may send copies of this id, to the
    /// millisecond (saturating at `u32::MAX` ms).
    pub retry_window: Duration,
}

impl RequestHeader {
    /// Parses the first [`REQUEST_HEADER_LEN`] bytes of `buf` (more may
    /// follow) and checks the payload length against `max_payload`.
    pub fn parse(buf: &[u8], max_payload: u32) -> Result<Self, AckWireError> {
        let Some(h) = buf.get(..REQUEST_HEADER_LEN) else {
            return Err(AckWireError::Truncated {
                need: REQUEST_HEADER_LEN,
                got: buf.len(),
            });
        };
        if h[0] != VERSION {
            return Err(AckWireError::BadVersion(h[0]));
        }
        if h[1] & !FLAG_RETRY != 0 {
            return Err(AckWireError::ReservedFlags(h[1]));
        }
        let mut id = [0u8; REQUEST_ID_LEN];
        id.copy_from_slice(&h[3..3 + REQUEST_ID_LEN]);
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&h[3 + REQUEST_ID_LEN..3 + REQUEST_ID_LEN + HASH_LEN]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&h[LEN_AT..LEN_AT + 4]);
        let len = u32::from_be_bytes(len);
        let mut window = [0u8; 4];
        window.copy_from_slice(&h[LEN_AT + 4..LEN_AT + 8]);
        let retry_window = Duration::from_millis(u64::from(u32::from_be_bytes(window)));
        if len > max_payload {
            return Err(AckWireError::Oversize {
                len,
                max: max_payload,
            });
        }
        Ok(Self {
            kind: Kind(h[2]),
            id: RequestId(id),
            hash: PayloadHash(hash),
            len,
            retry: h[1] & FLAG_RETRY != 0,
            retry_window,
        })
    }

    /// Total encoded request length (header + payload).
    #[must_use]
    pub fn total_len(&self) -> usize {
        REQUEST_HEADER_LEN + self.len as usize
    }

    /// Encodes the header.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0u8; REQUEST_HEADER_LEN];
        out[0] = VERSION;
        out[1] = if self.retry { FLAG_RETRY } else { 0 };
        out[2] = self.kind.0;
        out[3..3 + REQUEST_ID_LEN].copy_from_slice(&self.id.0);
        out[3 + REQUEST_ID_LEN..3 + REQUEST_ID_LEN + HASH_LEN].copy_from_slice(&self.hash.0);
        out[LEN_AT..LEN_AT + 4].copy_from_slice(&self.len.to_be_bytes());
        let window = u32::try_from(self.retry_window.as_millis()).unwrap_or(u32::MAX);
        out[LEN_AT + 4..].copy_from_slice(&window.to_be_bytes());
        out
    }
}

/// A complete request borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    header: RequestHeader,
    payload: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request for `payload`, hashing it, with a zero retry window (set
    /// it with [`Request::with_retry_window`]). Fails only for payloads of
    /// 4 GiB or more.
    pub fn new(
        kind: Kind,
        id: RequestId,
        payload: &'a [u8],
        retry: bool,
    ) -> Result<Self, AckWireError> {
        let len = u32::try_from(payload.len()).map_err(|_| AckWireError::TooLong)?;
        Ok(Self {
            header: RequestHeader {
                kind,
                id,
                hash: PayloadHash::of(payload),
                len,
                retry,
                retry_window: Duration::ZERO,
            },
            payload,
        })
    }

    /// Parses a whole request (the stream's bytes up to its FIN): header,
    /// length limit, exact length and payload hash.
    pub fn parse(buf: &'a [u8], max_payload: u32) -> Result<Self, AckWireError> {
        let header = RequestHeader::parse(buf, max_payload)?;
        Self::with_payload(header, &buf[REQUEST_HEADER_LEN..])
    }

    /// Joins a parsed header with the payload bytes read after it, checking
    /// the length and the hash.
    pub fn with_payload(header: RequestHeader, payload: &'a [u8]) -> Result<Self, AckWireError> {
        let len = header.len as usize;
        if payload.len() < len {
            return Err(AckWireError::Truncated {
                need: header.total_len(),
                got: REQUEST_HEADER_LEN + payload.len(),
            });
        }
        if payload.len() > len {
            return Err(AckWireError::Trailing(payload.len() - len));
        }
        if PayloadHash::of(payload) != header.hash {
            return Err(AckWireError::HashMismatch);
        }
        Ok(Self { header, payload })
    }

    /// The header.
    #[must_use]
    pub fn header(&self) -> &RequestHeader {
        &self.header
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The same request announcing that copies of its id may follow for
    /// `window` (the sender's remaining budget).
    #[must_use]
    pub fn with_retry_window(mut self, window: Duration) -> Self {
        self.header.retry_window = window;
        self
    }

    /// The same request marked as a retry (for the second copy).
    #[must_use]
    pub fn as_retry(mut self) -> Self {
        self.header.retry = true;
        self
    }
}

/// The receiver's answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Admitted into the kind's bounded consumer queue (or by the
    /// application's responder). Not "processed": admission only.
    Accepted,
    /// The consumer queue (or the dedupe cache) is full: not admitted. Safe
    /// to send again later with the same id.
    Backpressured,
    /// No consumer: the kind is not registered or its receiver is gone. Not
    /// admitted.
    ConsumerGone,
    /// Another copy of this request id is being admitted right now and this
    /// copy was dropped without an outcome of its own; the outcome goes to
    /// the copy in admission. Not a delivery.
    Duplicate,
    /// This request id was seen with a different payload: rejected, the
    /// earlier payload stands.
    Conflict,
}

impl Outcome {
    /// Wire code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Accepted => 1,
            Self::Backpressured => 2,
            Self::ConsumerGone => 3,
            Self::Duplicate => 4,
            Self::Conflict => 5,
        }
    }

    /// The outcome for a wire code.
    pub fn from_code(c: u8) -> Result<Self, AckWireError> {
        Ok(match c {
            1 => Self::Accepted,
            2 => Self::Backpressured,
            3 => Self::ConsumerGone,
            4 => Self::Duplicate,
            5 => Self::Conflict,
            other => return Err(AckWireError::UnknownOutcome(other)),
        })
    }
}

/// A response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request id answered.
    pub id: RequestId,
    /// The outcome.
    pub outcome: Outcome,
    /// The outcome was replayed from the dedupe cache.
    pub replayed: bool,
    /// With `Backpressured`: the receiver's estimate of how long it stays
    /// full, at millisecond precision. `None` otherwise.
    pub retry_after: Option<Duration>,
}

impl Response {
    /// A fresh (not replayed) response without a retry hint.
    #[must_use]
    pub fn new(id: RequestId, outcome: Outcome) -> Self {
        Self {
            id,
            outcome,
            replayed: false,
            retry_after: None,
        }
    }

    /// Parses exactly one response.
    pub fn parse(buf: &[u8]) -> Result<Self, AckWireError> {
        if buf.len() < RESPONSE_LEN {
            return Err(AckWireError::Truncated {
                need: RESPONSE_LEN,
                got: buf.len(),
            });
        }
        if buf.len() > RESPONSE_LEN {
            return Err(AckWireError::Trailing(buf.len() - RESPONSE_LEN));
        }
        if buf[0] != VERSION {
            return Err(AckWireError::BadVersion(buf[0]));
        }
        let mut id = [0u8; REQUEST_ID_LEN];
        id.copy_from_slice(&buf[1..1 + REQUEST_ID_LEN]);
        let outcome = Outcome::from_code(buf[1 + REQUEST_ID_LEN])?;
        let flags = buf[2 + REQUEST_ID_LEN];
        if flags & !FLAG_REPLAYED != 0 {
            return Err(AckWireError::ReservedFlags(flags));
        }
        let mut ms = [0u8; 4];
        ms.copy_from_slice(&buf[RESPONSE_LEN - 4..]);
        let ms = u32::from_be_bytes(ms);
        Ok(Self {
            id: RequestId(id),
            outcome,
            replayed: flags & FLAG_REPLAYED != 0,
            // A hint only means something with Backpressured; ignore it on
            // other outcomes rather than reject the answer.
            retry_after: (outcome == Outcome::Backpressured && ms > 0)
                .then(|| Duration::from_millis(u64::from(ms))),
        })
    }

    /// Encodes the response. A retry hint is sent only with
    /// `Backpressured`, rounded up to whole milliseconds and capped at
    /// `u32::MAX` ms.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        let mut out = [0u8; RESPONSE_LEN];
        out[0] = VERSION;
        out[1..1 + REQUEST_ID_LEN].copy_from_slice(&self.id.0);
        out[1 + REQUEST_ID_LEN] = self.outcome.code();
        out[2 + REQUEST_ID_LEN] = if self.replayed { FLAG_REPLAYED } else { 0 };
        let ms = match (self.outcome, self.retry_after) {
            (Outcome::Backpressured, Some(d)) => {
                let ms = d.as_micros().div_ceil(1000);
                u32::try_from(ms).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        out[RESPONSE_LEN - 4..].copy_from_slice(&ms.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_bytes(r: &Request<'_>) -> Vec<u8> {
        let mut b = r.header().to_bytes().to_vec();
        b.extend_from_slice(r.payload());
        b
    }

    /// R1: a request survives encode → parse with every field intact,
    /// including the retry flag and an empty payload.
    #[test]
    fn request_roundtrip() {
        for (payload, retry) in [(&b"payload"[..], false), (&b""[..], true)] {
            let r = Request::new(Kind(9), RequestId([3; 16]), payload, retry)
                .unwrap()
                .with_retry_window(Duration::from_millis(2_500));
            let b = req_bytes(&r);
            assert_eq!(b.len(), r.header().total_len());
            let back = Request::parse(&b, 64).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.header().retry, retry);
            assert_eq!(back.header().kind, Kind(9));
            assert_eq!(back.header().retry_window, Duration::from_millis(2_500));
        }
        // A window too long for the field saturates rather than wrapping.
        let r = Request::new(Kind(9), RequestId([3; 16]), b"", false)
            .unwrap()
            .with_retry_window(Duration::from_secs(u64::MAX / 2));
        let b = req_bytes(&r);
        let back = Request::parse(&b, 64).unwrap();
        assert_eq!(
            back.header().retry_window,
            Duration::from_millis(u64::from(u32::MAX))
        );
    }

    /// R1: every malformed request gets its own typed error, and a hostile
    /// length is refused against the limit before any payload is needed.
    #[test]
    fn request_rejects() {
        let r = Request::new(Kind::DM, RequestId([1; 16]), b"abcdef", false).unwrap();
        let good = req_bytes(&r);
        assert!(matches!(
            Request::parse(&good[..10], 64),
            Err(AckWireError::Truncated {
                need: REQUEST_HEADER_LEN,
                got: 10
            })
        ));
        assert!(matches!(
            Request::parse(&good[..good.len() - 1], 64),
            Err(AckWireError::Truncated { .. })
        ));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Request::parse(&long, 64), Err(AckWireError::Trailing(1)));
        // Version 1 (no retry window) is refused, not misread.
        for bad in [1, 3] {
            let mut v = good.clone();
            v[0] = bad;
            assert_eq!(Request::parse(&v, 64), Err(AckWireError::BadVersion(bad)));
        }
        let mut f = good.clone();
        f[1] = 0x80;
        assert_eq!(
            Request::parse(&f, 64),
            Err(AckWireError::ReservedFlags(0x80))
        );
        assert_eq!(
            Request::parse(&good, 5),
            Err(AckWireError::Oversize { len: 6, max: 5 })
        );
        let mut huge = r.header().to_bytes();
        huge[LEN_AT..LEN_AT + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            RequestHeader::parse(&huge, 1 << 20),
            Err(AckWireError::Oversize {
                len: u32::MAX,
                max: 1 << 20
            })
        );
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            Request::parse(&tampered, 64),
            Err(AckWireError::HashMismatch)
        );
    }

    /// R1: every outcome, the replay flag and the retry hint round-trip; a
    /// hint is carried only by Backpressured.
    #[test]
    fn response_roundtrip_every_outcome() {
        for o in [
            Outcome::Accepted,
            Outcome::Backpressured,
            Outcome::ConsumerGone,
            Outcome::Duplicate,
            Outcome::Conflict,
        ] {
            for replayed in [false, true] {
                let r = Response {
                    id: RequestId([o.code(); 16]),
                    outcome: o,
                    replayed,
                    retry_after: Some(Duration::from_micros(1500)),
                };
                let back = Response::parse(&r.to_bytes()).unwrap();
                assert_eq!(back.outcome, o);
                assert_eq!(back.replayed, replayed);
                assert_eq!(back.id, r.id);
                let want = (o == Outcome::Backpressured).then(|| Duration::from_millis(2));
                assert_eq!(back.retry_after, want, "{o:?}");
            }
        }
    }

    /// R1: malformed responses are typed errors (the reference system's
    /// "invalid envelope" class is told apart by cause).
    #[test]
    fn response_rejects() {
        let good = Response::new(RequestId([5; 16]), Outcome::Accepted).to_bytes();
        assert_eq!(
            Response::parse(&[]),
            Err(AckWireError::Truncated {
                need: RESPONSE_LEN,
                got: 0
            })
        );
        assert!(matches!(
            Response::parse(&good[..RESPONSE_LEN - 1]),
            Err(AckWireError::Truncated { .. })
        ));
        let mut long = good.to_vec();
        long.push(1);
        assert_eq!(Response::parse(&long), Err(AckWireError::Trailing(1)));
        let mut b = good;
        b[0] = 0;
        assert_eq!(Response::parse(&b), Err(AckWireError::BadVersion(0)));
        let mut b = good;
        b[1 + REQUEST_ID_LEN] = 0;
        assert_eq!(Response::parse(&b), Err(AckWireError::UnknownOutcome(0)));
        let mut b = good;
        b[1 + REQUEST_ID_LEN] = 6;
        assert_eq!(Response::parse(&b), Err(AckWireError::UnknownOutcome(6)));
        let mut b = good;
        b[2 + REQUEST_ID_LEN] = 2;
        assert_eq!(Response::parse(&b), Err(AckWireError::ReservedFlags(2)));
    }

    #[test]
    fn error_codes_are_distinct() {
        let all = [
            AckWireError::Truncated { need: 0, got: 0 },
            AckWireError::Trailing(0),
            AckWireError::BadVersion(0),
            AckWireError::ReservedFlags(0),
            AckWireError::Oversize { len: 0, max: 0 },
            AckWireError::HashMismatch,
            AckWireError::UnknownOutcome(0),
            AckWireError::TooLong,
        ];
        let mut codes: Vec<u32> = all.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
