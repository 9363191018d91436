//! Typed errors of the frame codec, the hello and the socket helpers.
//!
//! One enum, [`WireError`], so a caller can `?` through framing, schema
//! checks and the hello alike and still match on exactly what went wrong.
//! Every variant carries the facts a log line needs (lengths, limits, the
//! identifiers seen) and nothing derived from attacker-sized allocations:
//! strings copied out of a peer's frame are truncated to
//! [`MAX_REMOTE_TEXT`] bytes.

use crate::generated::error::ErrorCode;
use crate::generated::hello::Role;

/// Longest piece of peer-supplied text (error messages, protocol names) kept
/// in an error value; the rest is cut off at a character boundary.
pub const MAX_REMOTE_TEXT: usize = 512;

/// Everything that can go wrong reading, writing or negotiating frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The socket failed (other than a clean end of stream).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    /// The peer closed the connection where a frame was required (e.g.
    /// before its hello).
    #[error("peer closed the connection")]
    PeerClosed,

    /// A frame announced a length of zero; no valid flatbuffer is empty.
    #[error("zero-length frame")]
    ZeroLength,

    /// A frame announced more bytes than the negotiated maximum. Nothing was
    /// allocated for it; the connection must be closed (the stream can no
    /// longer be resynchronised).
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize {
        /// Announced payload length.
        len: u64,
        /// Negotiated maximum payload length.
        max: u32,
    },

    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {got} of {want} bytes")]
    Truncated {
        /// Bytes of the frame (prefix included) that arrived.
        got: usize,
        /// Bytes the frame needed (prefix included).
        want: usize,
    },

    /// The payload is shorter than a flatbuffer with a file identifier.
    #[error("frame of {len} bytes is too short for a flatbuffer with an identifier")]
    TooShort {
        /// Payload length.
        len: usize,
    },

    /// The payload's file identifier is not the expected schema's.
    #[error("frame has schema identifier {found:?}, expected {expected:?}")]
    WrongSchema {
        /// Identifier of the expected root table.
        expected: [u8; 4],
        /// Identifier found in the frame.
        found: [u8; 4],
    },

    /// The payload failed the flatbuffers verifier for its schema.
    #[error("invalid {schema} flatbuffer: {source}")]
    BadFlatbuffer {
        /// Name of the schema being verified.
        schema: &'static str,
        /// What the verifier rejected.
        #[source]
        source: flatbuffers::InvalidFlatbuffer,
    },

    /// A verified frame carried a message this side does not accept here
    /// (wrong direction, wrong phase, or an unknown union member).
    #[error("unexpected message {got} (expected {expected})")]
    UnexpectedMessage {
        /// What the caller was waiting for.
        expected: &'static str,
        /// What arrived.
        got: String,
    },

    /// The peer sent an error frame.
    #[error("peer reported {0}")]
    Remote(RemoteError),

    /// The hello named another protocol.
    #[error("protocol mismatch: we speak {ours:?}, peer speaks {theirs:?}")]
    ProtocolMismatch {
        /// Our protocol name.
        ours: String,
        /// The peer's protocol name (truncated).
        theirs: String,
    },

    /// The version ranges of the two hellos do not overlap.
    #[error("no common protocol version: we speak {ours:?}, peer speaks {theirs:?}")]
    VersionMismatch {
        /// Our inclusive version range.
        ours: (u16, u16),
        /// The peer's inclusive version range.
        theirs: (u16, u16),
    },

    /// The peer's role is not allowed on this socket.
    #[error("peer role {0:?} is not allowed here")]
    RoleRejected(Role),

    /// A hello field is out of range (empty version range, tiny frame limit).
    #[error("invalid hello: {0}")]
    InvalidHello(&'static str),

    /// The connecting process's credentials are not allowed.
    #[error("peer credentials rejected: uid {uid}, pid {pid}")]
    PeerRejected {
        /// The peer's effective user id (SO_PEERCRED).
        uid: u32,
        /// The peer's process id (SO_PEERCRED).
        pid: i32,
    },

    /// A socket path is in use by a live listener or is not a socket.
    #[error("socket path {path} is in use: {why}")]
    SocketInUse {
        /// The path that could not be taken over.
        path: std::path::PathBuf,
        /// Why it was left alone.
        why: &'static str,
    },

    /// A frame to send was empty or larger than the negotiated maximum.
    #[error("refusing to send a frame of {len} bytes (maximum {max})")]
    SendTooLarge {
        /// Payload length.
        len: usize,
        /// Negotiated maximum payload length.
        max: u32,
    },
}

/// An error frame received from the peer, copied out of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The peer's error code.
    pub code: ErrorCode,
    /// The request it answers; 0 for the connection.
    pub request_id: u64,
    /// True when the peer closes the connection after it.
    pub fatal: bool,
    /// The peer's message, truncated to [`MAX_REMOTE_TEXT`] bytes.
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.code.variant_name().unwrap_or("unknown code");
        write!(f, "{name} ({})", self.code.0)?;
        if self.request_id != 0 {
            write!(f, " for request {}", self.request_id)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Copies at most [`MAX_REMOTE_TEXT`] bytes of peer-supplied text, cut at a
/// character boundary.
pub(crate) fn bounded_text(s: &str) -> String {
    if s.len() <= MAX_REMOTE_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_REMOTE_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_cuts_at_char_boundary() {
        let long = "é".repeat(MAX_REMOTE_TEXT);
        let cut = bounded_text(&long);
        assert!(cut.len() <= MAX_REMOTE_TEXT);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded_text("short"), "short");
    }
}
