//! Verify requests and responses, and their encoding in `wire`'s
//! `tern.verify` flatbuffers schema.
//!
//! [`decode_request`] is the one place the daemon reads untrusted request
//! bytes: it runs the flatbuffers verifier with bounded options, checks the
//! schema rules (item count, algorithm, context length) and returns plain
//! byte *ranges* into the frame, so the frame is kept once and never copied
//! per item. It is a pure function of its input, which makes the fuzz target
//! one line. Every error carries the request id when one could be read, so
//! the server can answer that request and keep serving the connection.
//!
//! The same module encodes and decodes the other direction for the client.

use std::ops::Range;

use flatbuffers::{FlatBufferBuilder, Vector, VerifierOptions, WIPOffset};
use wire::generated::error as fe;
use wire::generated::verify as fv;

use crate::Verdict;

/// Protocol name carried in the hello.
pub const PROTOCOL: &str = "tern.verify";
/// Protocol versions this crate speaks.
pub const VERSION: u16 = 1;
/// Most items in one `VerifyBatch`; larger batches are refused as a whole
/// (`BatchTooLarge`) without reading their items.
pub const MAX_BATCH_ITEMS: usize = 4096;
/// Longest ML-DSA context string (FIPS 204).
pub const MAX_CONTEXT_LEN: usize = 255;

/// Where an item's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A registered key id.
    Id(u64),
    /// Key bytes inside the frame.
    Inline(Range<usize>),
    /// Neither (key id 0 and no inline key): the item is malformed.
    Missing,
}

/// One item, as ranges into the request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawItem {
    /// The key.
    pub key: KeyRef,
    /// The message bytes.
    pub msg: Range<usize>,
    /// The signature bytes.
    pub sig: Range<usize>,
}

/// A decoded request; ranges index into the bytes given to [`decode_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a key, answer its id.
    RegisterKey {
        /// Client-chosen id.
        request_id: u64,
        /// The key bytes.
        key: Range<usize>,
    },
    /// Verify items.
    VerifyBatch {
        /// Client-chosen id.
        request_id: u64,
        /// ML-DSA context applied to every item.
        context: Range<usize>,
        /// Items in order.
        items: Vec<RawItem>,
    },
}

impl Request {
    /// The client's request id.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        match self {
            Request::RegisterKey { request_id, .. } | Request::VerifyBatch { request_id, .. } => {
                *request_id
            }
        }
    }
}

/// A request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a `tern.verify` frame (wrong file identifier).
    #[error("not a tern.verify frame")]
    WrongSchema,
    /// The flatbuffers verifier rejected the bytes.
    #[error("invalid flatbuffer: {0}")]
    Invalid(String),
    /// A valid frame of a message clients must not send (e.g. a result).
    #[error("unexpected message type {0}")]
    Unexpected(u8),
    /// More than [`MAX_BATCH_ITEMS`] items.
    #[error("request {request_id}: batch of {items} items exceeds the limit of {MAX_BATCH_ITEMS}")]
    BatchTooLarge {
        /// The request.
        request_id: u64,
        /// Items it carried.
        items: usize,
    },
    /// An algorithm this daemon does not implement.
    #[error("request {request_id}: unsupported algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// The request.
        request_id: u64,
        /// Raw value.
        algorithm: u8,
    },
    /// Context longer than [`MAX_CONTEXT_LEN`].
    #[error("request {request_id}: context of {len} bytes exceeds {MAX_CONTEXT_LEN}")]
    ContextTooLong {
        /// The request.
        request_id: u64,
        /// Its length.
        len: usize,
    },
}

impl DecodeError {
    /// The request this error answers, if the id could be read (0 otherwise,
    /// which the error frame uses for "the connection").
    #[must_use]
    pub fn request_id(&self) -> u64 {
        match self {
            DecodeError::BatchTooLarge { request_id, .. }
            | DecodeError::UnsupportedAlgorithm { request_id, .. }
            | DecodeError::ContextTooLong { request_id, .. } => *request_id,
            _ => 0,
        }
    }

    /// The wire error code for this error.
    #[must_use]
    pub fn code(&self) -> fe::ErrorCode {
        match self {
            DecodeError::Unexpected(_) => fe::ErrorCode::UnexpectedMessage,
            DecodeError::UnsupportedAlgorithm { .. } => fe::ErrorCode::Unsupported,
            _ => fe::ErrorCode::Malformed,
        }
    }
}

/// Whether `buf` carries the 4-byte file identifier `ident`. Unlike
/// `flatbuffers::buffer_has_identifier` this does not panic on short input.
#[must_use]
pub fn has_identifier(buf: &[u8], ident: &str) -> bool {
    buf.len() >= 8 && &buf[4..8] == ident.as_bytes()
}

fn verifier_opts(len: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 8,
        // Each item is one table plus a few vectors; a frame cannot hold more
        // tables than it has bytes anyway, so this bounds verifier work.
        max_tables: 2 * MAX_BATCH_ITEMS + 16,
        max_apparent_size: len.saturating_mul(2),
        ..VerifierOptions::default()
    }
}

fn range_of(buf: &[u8], v: Option<Vector<'_, u8>>) -> Range<usize> {
    match v {
        Some(v) => {
            let bytes = v.bytes();
            // The verifier proved `bytes` lies inside `buf`.
            let start = bytes.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + bytes.len()
        }
        None => 0..0,
    }
}

/// Decodes one request frame (the flatbuffer, without the length prefix).
/// Never panics; work and allocation are bounded by `buf.len()` and
/// [`MAX_BATCH_ITEMS`].
pub fn decode_request(buf: &[u8]) -> Result<Request, DecodeError> {
    if !has_identifier(buf, fv::VERIFY_FRAME_IDENTIFIER) {
        return Err(DecodeError::WrongSchema);
    }
    let frame = fv::root_as_verify_frame_with_opts(&verifier_opts(buf.len()), buf)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if let Some(rk) = frame.msg_as_register_key() {
        let request_id = rk.request_id();
        if rk.algorithm() != fv::Algorithm::MlDsa65 {
            return Err(DecodeError::UnsupportedAlgorithm {
                request_id,
                algorithm: rk.algorithm().0,
            });
        }
        return Ok(Request::RegisterKey {
            request_id,
            key: range_of(buf, Some(rk.public_key())),
        });
    }
    if let Some(vb) = frame.msg_as_verify_batch() {
        let request_id = vb.request_id();
        if vb.algorithm() != fv::Algorithm::MlDsa65 {
            return Err(DecodeError::UnsupportedAlgorithm {
                request_id,
                algorithm: vb.algorithm().0,
            });
        }
        let context = range_of(buf, vb.context());
        if context.len() > MAX_CONTEXT_LEN {
            return Err(DecodeError::ContextTooLong {
                request_id,
                len: context.len(),
            });
        }
        let list = vb.items();
        if list.len() > MAX_BATCH_ITEMS {
            return Err(DecodeError::BatchTooLarge {
                request_id,
                items: list.len(),
            });
        }
        let mut items = Vec::with_capacity(list.len());
        for it in list.iter() {
            let inline = range_of(buf, it.public_key());
            let key = if !inline.is_empty() {
                KeyRef::Inline(inline)
            } else if it.key_id() != 0 {
                KeyRef::Id(it.key_id())
            } else {
                KeyRef::Missing
            };
            items.push(RawItem {
                key,
                msg: range_of(buf, it.message()),
                sig: range_of(buf, it.signature()),
            });
        }
        return Ok(Request::VerifyBatch {
            request_id,
            context,
            items,
        });
    }
    Err(DecodeError::Unexpected(frame.msg_type().0))
}

/// What the daemon answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A key's id.
    KeyRegistered {
        /// The request.
        request_id: u64,
        /// The id.
        key_id: u64,
    },
    /// Verdicts, one per item in order.
    VerifyResult {
        /// The request.
        request_id: u64,
        /// The verdicts.
        verdicts: Vec<Verdict>,
    },
    /// Not admitted; retry later or elsewhere.
    Busy {
        /// The request.
        request_id: u64,
        /// Hint.
        retry_after_us: u32,
        /// Items queued at the daemon.
        queued_items: u32,
    },
    /// A typed error for one request (or the connection, id 0).
    Error {
        /// The request (0 = the connection).
        request_id: u64,
        /// Raw `tern.error.ErrorCode`.
        code: u16,
        /// Whether the daemon closes the connection.
        fatal: bool,
        /// Human-readable detail.
        message: String,
    },
}

/// Decodes a response frame (client side).
pub fn decode_response(buf: &[u8]) -> Result<Response, DecodeError> {
    if has_identifier(buf, fe::ERROR_FRAME_IDENTIFIER) {
        let e = fe::root_as_error_frame_with_opts(&verifier_opts(buf.len()), buf)
            .map_err(|e| DecodeError::Invalid(e.to_string()))?;
        return Ok(Response::Error {
            request_id: e.request_id(),
            code: e.code().0,
            fatal: e.fatal(),
            message: e.message().unwrap_or_default().to_owned(),
        });
    }
    if !has_identifier(buf, fv::VERIFY_FRAME_IDENTIFIER) {
        return Err(DecodeError::WrongSchema);
    }
    let frame = fv::root_as_verify_frame_with_opts(&verifier_opts(buf.len()), buf)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if let Some(r) = frame.msg_as_key_registered() {
        return Ok(Response::KeyRegistered {
            request_id: r.request_id(),
            key_id: r.key_id(),
        });
    }
    if let Some(r) = frame.msg_as_verify_result() {
        let verdicts = r
            .verdicts()
            .iter()
            .map(verdict_from_wire)
            .collect::<Option<Vec<_>>>();
        let verdicts =
            verdicts.ok_or_else(|| DecodeError::Invalid("unknown verdict value".into()))?;
        return Ok(Response::VerifyResult {
            request_id: r.request_id(),
            verdicts,
        });
    }
    if let Some(b) = frame.msg_as_busy() {
        return Ok(Response::Busy {
            request_id: b.request_id(),
            retry_after_us: b.retry_after_us(),
            queued_items: b.queued_items(),
        });
    }
    Err(DecodeError::Unexpected(frame.msg_type().0))
}

fn verdict_to_wire(v: Verdict) -> fv::Verdict {
    match v {
        Verdict::Valid => fv::Verdict::Valid,
        Verdict::Invalid => fv::Verdict::Invalid,
        Verdict::Malformed => fv::Verdict::Malformed,
        Verdict::UnknownKey => fv::Verdict::UnknownKey,
    }
}

fn verdict_from_wire(v: fv::Verdict) -> Option<Verdict> {
    Some(match v {
        fv::Verdict::Valid => Verdict::Valid,
        fv::Verdict::Invalid => Verdict::Invalid,
        fv::Verdict::Malformed => Verdict::Malformed,
        fv::Verdict::UnknownKey => Verdict::UnknownKey,
        _ => return None,
    })
}

fn finish<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    kind: fv::VerifyMessage,
    msg: WIPOffset<flatbuffers::UnionWIPOffset>,
) -> &'a [u8] {
    let root = fv::VerifyFrame::create(
        fbb,
        &fv::VerifyFrameArgs {
            msg_type: kind,
            msg: Some(msg),
        },
    );
    fv::finish_verify_frame_buffer(fbb, root);
    fbb.finished_data()
}

/// A `[ubyte]` vector written with one `memcpy` (`create_vector` pushes
/// element by element, which is slow for 3 KiB signatures in debug builds).
/// A byte string is a byte vector plus a trailing NUL outside its length,
/// so readers see exactly `data`.
fn bytes_vec<'a>(fbb: &mut FlatBufferBuilder<'a>, data: &[u8]) -> WIPOffset<Vector<'a, u8>> {
    WIPOffset::new(fbb.create_byte_string(data).value())
}

/// Encodes `RegisterKey` into `fbb` (reset first) and returns the frame.
pub fn encode_register_key<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    request_id: u64,
    key: &[u8],
) -> &'a [u8] {
    fbb.reset();
    let public_key = Some(bytes_vec(fbb, key));
    let m = fv::RegisterKey::create(
        fbb,
        &fv::RegisterKeyArgs {
            request_id,
            algorithm: fv::Algorithm::MlDsa65,
            public_key,
        },
    );
    finish(fbb, fv::VerifyMessage::RegisterKey, m.as_union_value())
}

/// One item to encode: key id or inline key, message, signature.
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'a> {
    /// Registered key id (ignored when `inline_key` is `Some`).
    pub key_id: u64,
    /// Inline key bytes.
    pub inline_key: Option<&'a [u8]>,
    /// Message.
    pub msg: &'a [u8],
    /// Signature.
    pub sig: &'a [u8],
}

/// Encodes `VerifyBatch` into `fbb` (reset first) and returns the frame.
pub fn encode_verify_batch<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    request_id: u64,
    context: &[u8],
    items: &[ItemRef<'_>],
) -> &'a [u8] {
    fbb.reset();
    let mut offs = Vec::with_capacity(items.len());
    for it in items {
        let public_key = it.inline_key.map(|k| bytes_vec(fbb, k));
        let message = Some(bytes_vec(fbb, it.msg));
        let signature = Some(bytes_vec(fbb, it.sig));
        offs.push(fv::VerifyItem::create(
            fbb,
            &fv::VerifyItemArgs {
                key_id: it.key_id,
                public_key,
                message,
                signature,
            },
        ));
    }
    let items = Some(fbb.create_vector(&offs));
    let context = if context.is_empty() {
        None
    } else {
        Some(bytes_vec(fbb, context))
    };
    let m = fv::VerifyBatch::create(
        fbb,
        &fv::VerifyBatchArgs {
            request_id,
            algorithm: fv::Algorithm::MlDsa65,
            context,
            items,
        },
    );
    finish(fbb, fv::VerifyMessage::VerifyBatch, m.as_union_value())
}

/// Encodes `KeyRegistered`.
pub fn encode_key_registered(
    fbb: &mut FlatBufferBuilder<'static>,
    request_id: u64,
    key_id: u64,
) -> Vec<u8> {
    fbb.reset();
    let m = fv::KeyRegistered::create(fbb, &fv::KeyRegisteredArgs { request_id, key_id });
    finish(fbb, fv::VerifyMessage::KeyRegistered, m.as_union_value()).to_vec()
}

/// Encodes `VerifyResult`.
pub fn encode_verify_result(
    fbb: &mut FlatBufferBuilder<'static>,
    request_id: u64,
    verdicts: &[Verdict],
) -> Vec<u8> {
    fbb.reset();
    let wire: Vec<fv::Verdict> = verdicts.iter().copied().map(verdict_to_wire).collect();
    let verdicts = Some(fbb.create_vector(&wire));
    let m = fv::VerifyResult::create(
        fbb,
        &fv::VerifyResultArgs {
            request_id,
            verdicts,
        },
    );
    finish(fbb, fv::VerifyMessage::VerifyResult, m.as_union_value()).to_vec()
}

/// Encodes `Busy`.
pub fn encode_busy(
    fbb: &mut FlatBufferBuilder<'static>,
    request_id: u64,
    retry_after_us: u32,
    queued_items: u32,
) -> Vec<u8> {
    fbb.reset();
    let m = fv::Busy::create(
        fbb,
        &fv::BusyArgs {
            request_id,
            retry_after_us,
            queued_items,
        },
    );
    finish(fbb, fv::VerifyMessage::Busy, m.as_union_value()).to_vec()
}

/// Encodes an error frame (`tern.error`).
pub fn encode_error(
    fbb: &mut FlatBufferBuilder<'static>,
    request_id: u64,
    code: fe::ErrorCode,
    fatal: bool,
    message: &str,
) -> Vec<u8> {
    fbb.reset();
    let message = Some(fbb.create_string(message));
    let root = fe::ErrorFrame::create(
        fbb,
        &fe::ErrorFrameArgs {
            code,
            request_id,
            fatal,
            message,
        },
    );
    fe::finish_error_frame_buffer(fbb, root);
    fbb.finished_data().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip() {
        let mut fbb = FlatBufferBuilder::new();
        let key = [9u8; 5];
        let items = [
            ItemRef {
                key_id: 7,
                inline_key: None,
                msg: b"hello",
                sig: b"sig1",
            },
            ItemRef {
                key_id: 0,
                inline_key: Some(&key),
                msg: b"",
                sig: b"s",
            },
            ItemRef {
                key_id: 0,
                inline_key: None,
                msg: b"x",
                sig: b"",
            },
        ];
        let buf = encode_verify_batch(&mut fbb, 42, b"", &items).to_vec();
        let Request::VerifyBatch {
            request_id,
            context,
            items: got,
        } = decode_request(&buf).unwrap()
        else {
            panic!("wrong kind")
        };
        assert_eq!(request_id, 42);
        assert!(context.is_empty());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].key, KeyRef::Id(7));
        assert_eq!(&buf[got[0].msg.clone()], b"hello");
        assert_eq!(&buf[got[0].sig.clone()], b"sig1");
        let KeyRef::Inline(r) = got[1].key.clone() else {
            panic!("inline")
        };
        assert_eq!(&buf[r], &key);
        assert!(got[1].msg.is_empty());
        assert_eq!(got[2].key, KeyRef::Missing);
    }

    #[test]
    fn register_round_trip_and_responses() {
        let mut fbb = FlatBufferBuilder::new();
        let buf = encode_register_key(&mut fbb, 3, &[1, 2, 3]).to_vec();
        let Request::RegisterKey { request_id, key } = decode_request(&buf).unwrap() else {
            panic!()
        };
        assert_eq!((request_id, &buf[key]), (3, &[1u8, 2, 3][..]));
        let r = encode_verify_result(&mut fbb, 5, &[Verdict::Valid, Verdict::UnknownKey]);
        assert_eq!(
            decode_response(&r).unwrap(),
            Response::VerifyResult {
                request_id: 5,
                verdicts: vec![Verdict::Valid, Verdict::UnknownKey]
            }
        );
        let b = encode_busy(&mut fbb, 6, 100, 7);
        assert_eq!(
            decode_response(&b).unwrap(),
            Response::Busy {
                request_id: 6,
                retry_after_us: 100,
                queued_items: 7
            }
        );
        let e = encode_error(&mut fbb, 8, fe::ErrorCode::Malformed, false, "x");
        assert!(matches!(
            decode_response(&e).unwrap(),
            Response::Error {
                request_id: 8,
                code: 5,
                ..
            }
        ));
        // A response is not a request.
        assert_eq!(
            decode_request(&r),
            Err(DecodeError::Unexpected(fv::VerifyMessage::VerifyResult.0))
        );
    }

    /// V5: hostile bytes give typed errors, never a panic.
    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(decode_request(&[]), Err(DecodeError::WrongSchema));
        assert_eq!(decode_request(&[0; 3]), Err(DecodeError::WrongSchema));
        let mut fbb = FlatBufferBuilder::new();
        let good = encode_register_key(&mut fbb, 1, &[1; 64]).to_vec();
        // Truncations and bit flips of a valid frame.
        for cut in 0..good.len() {
            let _ = decode_request(&good[..cut]);
        }
        let mut x = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut b = good.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let at = x as usize % b.len();
            b[at] ^= (x >> 24) as u8 | 1;
            let _ = decode_request(&b);
        }
        let err =
            decode_request(&encode_error(&mut fbb, 1, fe::ErrorCode::Busy, false, "")).unwrap_err();
        assert_eq!(err, DecodeError::WrongSchema);
    }

    #[test]
    fn batch_over_limit_is_refused_with_its_id() {
        let mut fbb = FlatBufferBuilder::new();
        let items = vec![
            ItemRef {
                key_id: 1,
                inline_key: None,
                msg: b"",
                sig: b""
            };
            MAX_BATCH_ITEMS + 1
        ];
        let buf = encode_verify_batch(&mut fbb, 77, b"", &items).to_vec();
        let err = decode_request(&buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::BatchTooLarge {
                request_id: 77,
                items: MAX_BATCH_ITEMS + 1
            }
        );
        assert_eq!(err.request_id(), 77);
        let long = vec![0u8; 300];
        let buf = encode_verify_batch(&mut fbb, 78, &long, &items[..1]).to_vec();
        assert_eq!(
            decode_request(&buf).unwrap_err(),
            DecodeError::ContextTooLong {
                request_id: 78,
                len: 300
            }
        );
    }
}
