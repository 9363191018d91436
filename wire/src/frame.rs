//! Length-prefixed flatbuffers frames: `[u32 little-endian length][flatbuffer]`.
//!
//! The length counts the flatbuffer only (not the 4-byte prefix). It must be
//! non-zero and at most the maximum frame size negotiated in the hello
//! ([`DEFAULT_MAX_FRAME`] = 16 MiB unless both sides ask for less). Every
//! payload is a finished flatbuffer whose 4-byte file identifier names its
//! schema, so a reader can tell a verify frame from an error frame or from a
//! frame of the wrong protocol before it trusts anything else.
//!
//! # API summary
//!
//! * Encoding: build with a `flatbuffers::FlatBufferBuilder` and the generated
//!   `*Args` types, then [`finish`] (sets the schema's identifier); or use
//!   [`encode_error`] for an error frame. Send the finished bytes with
//!   [`FrameWriter::write_frame`] (blocking) or the [`FrameCodec`] encoder
//!   (tokio, feature `tokio`).
//! * Reading: [`FrameReader::read_frame`] (blocking) or the [`FrameCodec`]
//!   decoder yields the raw payload; [`decode`]`::<S>` checks the identifier,
//!   runs the flatbuffers verifier with limits derived from the payload
//!   length ([`verifier_options`]) and returns the zero-copy root table. An
//!   error frame from the peer becomes [`WireError::Remote`].
//!   [`decode_verify`], [`decode_relay`], [`decode_admin`] and
//!   [`decode_client`] go one step further and return the protocol's
//!   message as an enum ([`VerifyMsg`], [`RelayMsg`], [`AdminMsg`],
//!   [`ClientMsg`]); an unknown union member is
//!   [`WireError::UnexpectedMessage`].
//! * Schemas are named by marker types implementing [`Schema`]:
//!   [`HelloSchema`], [`ErrorSchema`], [`VerifySchema`], [`RelaySchema`],
//!   [`AdminSchema`], [`ClientSchema`].
//!
//! # Hostile input
//!
//! A length prefix is checked against the maximum before anything is
//! allocated for it, and readers grow their buffer only as bytes actually
//! arrive (at most doubling what has arrived, never past `max + 4`), so a
//! peer that announces 4 GiB and sends 10 bytes costs 8 KiB. Malformed
//! frames yield typed [`WireError`]s, never panics. An oversize or zero
//! length leaves the stream unsynchronised: close the connection.
//!
//! ```
//! use wire::frame::{self, FrameReader, FrameWriter, VerifySchema};
//! use wire::generated::verify::*;
//!
//! let mut fbb = flatbuffers::FlatBufferBuilder::new();
//! let verdicts = fbb.create_vector(&[Verdict::Valid, Verdict::Invalid]);
//! let result = VerifyResult::create(&mut fbb, &VerifyResultArgs { request_id: 7, verdicts: Some(verdicts) });
//! let root = VerifyFrame::create(&mut fbb, &VerifyFrameArgs {
//!     msg_type: VerifyMessage::VerifyResult,
//!     msg: Some(result.as_union_value()),
//! });
//! frame::finish::<VerifySchema>(&mut fbb, root);
//!
//! let mut wire_bytes = Vec::new();
//! FrameWriter::new(&mut wire_bytes, frame::DEFAULT_MAX_FRAME).write_frame(fbb.finished_data())?;
//!
//! let mut reader = FrameReader::new(&wire_bytes[..], frame::DEFAULT_MAX_FRAME);
//! let payload = reader.read_frame()?.expect("one frame");
//! let msg = frame::decode::<VerifySchema>(payload)?;
//! let result = msg.msg_as_verify_result().expect("a result");
//! assert_eq!(result.request_id(), 7);
//! assert_eq!(result.verdicts().iter().collect::<Vec<_>>(), [Verdict::Valid, Verdict::Invalid]);
//! # Ok::<(), wire::WireError>(())
//! ```

mod blocking;
#[cfg(feature = "tokio")]
mod codec;
mod messages;
mod schema;

pub use blocking::{FrameReader, FrameWriter};
#[cfg(feature = "tokio")]
pub use codec::FrameCodec;
pub use messages::{
    AdminMsg, ClientMsg, RelayMsg, VerifyMsg, decode_admin, decode_client, decode_relay,
    decode_verify,
};
pub use schema::{
    AdminSchema, ClientSchema, ErrorSchema, HelloSchema, RelaySchema, Schema, VerifySchema, decode,
    encode_error, finish, peek_identifier, verifier_options,
};

use crate::error::WireError;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Maximum payload size when the hello does not lower it: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Smallest maximum a hello may announce: enough for any hello or error
/// frame, so negotiation itself can never be starved.
pub const MIN_MAX_FRAME: u32 = 4 * 1024;

/// Largest maximum a hello may announce (1 GiB); larger asks are clamped.
pub const HARD_MAX_FRAME: u32 = 1 << 30;

/// Initial buffer of a reader, before any frame told it more is coming.
pub(crate) const INITIAL_BUFFER: usize = 8 * 1024;

/// Checks a frame's announced payload length against `max`.
pub fn check_len(len: u32, max: u32) -> Result<usize, WireError> {
    if len == 0 {
        return Err(WireError::ZeroLength);
    }
    if len > max {
        return Err(WireError::Oversize {
            len: u64::from(len),
            max,
        });
    }
    // u32 always fits usize on the 32- and 64-bit targets this crate supports.
    Ok(len as usize)
}

/// Checks a payload we are about to send and returns its length prefix.
pub fn prefix_for(payload: &[u8], max: u32) -> Result<[u8; PREFIX_LEN], WireError> {
    match u32::try_from(payload.len()) {
        Ok(len) if len != 0 && len <= max => Ok(len.to_le_bytes()),
        _ => Err(WireError::SendTooLarge {
            len: payload.len(),
            max,
        }),
    }
}
