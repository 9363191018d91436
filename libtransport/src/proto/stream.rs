//! The checked stream decoder: a router stream's `[kind, version]` header,
//! then (unidirectional streams) `u32` big-endian length-prefixed messages,
//! reassembled across however the bytes arrive.
//!
//! Sans-IO: the driver feeds it the chunks quinn-proto hands out and acts on
//! what it returns; no tokio, no clock. Every check happens before anything
//! is allocated: a length prefix is compared with the kind's limit first,
//! and a message that spans chunks grows its buffer only as its bytes
//! arrive, never by the length the peer declared.
//!
//! ```
//! use bytes::{BufMut, Bytes, BytesMut};
//! use libtransport::kind::{self, Kind};
//! use libtransport::proto::stream::{Frame, StreamDecoder};
//!
//! // Encode: the header, then each message behind its length prefix.
//! let msgs: [&[u8]; 3] = [b"hello", b"", b"world!"];
//! let mut wire = BytesMut::new();
//! wire.put_slice(&kind::header(Kind::DM));
//! for m in msgs {
//!     wire.put_u32(m.len() as u32);
//!     wire.put_slice(m);
//! }
//! let wire = wire.freeze();
//!
//! // Decode it fed one byte at a time (any split gives the same frames).
//! let limit = |k: Kind| (k == Kind::DM).then_some(1024);
//! let mut dec = StreamDecoder::uni();
//! let mut frames = Vec::new();
//! for i in 0..wire.len() {
//!     let mut chunk = wire.slice(i..i + 1);
//!     while !chunk.is_empty() {
//!         if let Some(f) = dec.push(&mut chunk, limit).unwrap() {
//!             frames.push(f);
//!         }
//!     }
//! }
//! dec.finish().unwrap();
//! assert_eq!(frames[0], Frame::Header(Kind::DM));
//! let back: Vec<Bytes> = frames[1..]
//!     .iter()
//!     .map(|f| match f {
//!         Frame::Message(m) => m.clone(),
//!         other => panic!("{other:?}"),
//!     })
//!     .collect();
//! assert_eq!(back, msgs);
//! ```

use bytes::{Bytes, BytesMut};

use crate::kind::{self, HEADER_LEN, Kind, LEN_PREFIX};

/// Why a stream was rejected; the same type (and reset codes) as the
/// router's [`kind::StreamReject`]. The decoder itself gives `UnknownKind`,
/// `BadVersion`, `Truncated` and `Oversize`, never `QueueFull`.
pub type Reject = kind::StreamReject;

/// Buffer reserved when a message starts spanning chunks: room for several
/// small messages, so splitting one off leaves capacity for the next.
const SPAN_RESERVE: usize = 16 * 1024;

/// What a [`StreamDecoder::push`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The stream header is complete and the kind is known. On a
    /// bidirectional stream this is the decoder's last frame: the rest of
    /// the stream belongs to the kind's handler.
    Header(Kind),
    /// One complete message of a unidirectional stream.
    Message(Bytes),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the `[kind, version]` header.
    Header,
    /// Reading a length prefix (between messages when none of it is read).
    Prefix,
    /// Reading a message body: `want` bytes still missing.
    Body,
    /// A bidirectional stream's header is done; the decoder takes no more.
    Handed,
}

/// Decoder state of one router stream.
///
/// # Panics
///
/// Never, whatever the bytes and however they are split: every input byte
/// is consumed into bounded state, returned in a frame, or answered with a
/// [`Reject`]. After a `Reject` every call returns the same `Reject` (the
/// stream is dead); after a bidirectional stream's [`Frame::Header`],
/// `push` consumes nothing and returns `Ok(None)`.
///
/// # Memory
///
/// A fixed few bytes plus the buffer of one message spanning chunks, which
/// holds at most the bytes received of it (so at most the kind's limit),
/// with at least 16 KiB reserved when a message starts spanning.
#[derive(Debug)]
pub struct StreamDecoder {
    bi: bool,
    phase: Phase,
    kind: Option<Kind>,
    max: u32,
    header: [u8; HEADER_LEN],
    prefix: [u8; LEN_PREFIX],
    /// Bytes of `header` or `prefix` filled so far.
    have: usize,
    /// Body bytes still missing.
    want: usize,
    /// The part of a message that spans chunks.
    partial: BytesMut,
    failed: Option<Reject>,
}

impl StreamDecoder {
    /// A decoder for a unidirectional stream: header, then messages.
    #[must_use]
    pub fn uni() -> Self {
        Self::new(false)
    }

    /// A decoder for a bidirectional stream: the header only.
    #[must_use]
    pub fn bi() -> Self {
        Self::new(true)
    }

    fn new(bi: bool) -> Self {
        Self {
            bi,
            phase: Phase::Header,
            kind: None,
            max: 0,
            header: [0; HEADER_LEN],
            prefix: [0; LEN_PREFIX],
            have: 0,
            want: 0,
            partial: BytesMut::new(),
            failed: None,
        }
    }

    /// The stream's kind, once its header was accepted.
    #[must_use]
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// Header bytes still missing (0 once the header is complete). A caller
    /// reading a bidirectional stream takes no more than this from it, since
    /// the bytes after the header belong to the kind's handler.
    #[must_use]
    pub fn header_needed(&self) -> usize {
        match self.phase {
            Phase::Header => HEADER_LEN - self.have,
            _ => 0,
        }
    }

    /// Whether the next byte starts a new message (a unidirectional stream
    /// between messages): where a back-pressuring caller may pause.
    #[must_use]
    pub fn at_message_boundary(&self) -> bool {
        self.phase == Phase::Prefix && self.have == 0 && self.failed.is_none()
    }

    /// Consumes bytes from the front of `chunk` until one frame is complete
    /// (returned; the rest stays in `chunk` for the next call) or `chunk` is
    /// used up (`Ok(None)`). `limit` is asked once, when the header is
    /// complete, for the kind's largest message: `None` rejects the kind as
    /// unknown.
    ///
    /// A message that lies whole inside `chunk` is returned as a slice of
    /// it, without copying.
    pub fn push(
        &mut self,
        chunk: &mut Bytes,
        limit: impl FnOnce(Kind) -> Option<u32>,
    ) -> Result<Option<Frame>, Reject> {
        if let Some(r) = self.failed {
            return Err(r);
        }
        let mut limit = Some(limit);
        loop {
            if chunk.is_empty() || self.phase == Phase::Handed {
                return Ok(None);
            }
            match self.phase {
                Phase::Header => {
                    if !fill(&mut self.header, &mut self.have, chunk) {
                        continue;
                    }
                    let max = limit.take().and_then(|f| f(Kind(self.header[0])));
                    let k = kind::check_header(self.header, |_| max.is_some())
                        .map_err(|r| self.fail(r))?;
                    self.kind = Some(k);
                    self.max = max.unwrap_or(0);
                    self.have = 0;
                    self.phase = if self.bi {
                        Phase::Handed
                    } else {
                        Phase::Prefix
                    };
                    return Ok(Some(Frame::Header(k)));
                }
                Phase::Prefix => {
                    if !fill(&mut self.prefix, &mut self.have, chunk) {
                        continue;
                    }
                    self.want = kind::check_len(self.prefix, self.max).map_err(|r| self.fail(r))?;
                    self.have = 0;
                    if self.want == 0 {
                        return Ok(Some(Frame::Message(Bytes::new())));
                    }
                    self.phase = Phase::Body;
                }
                Phase::Body => {
                    if self.partial.is_empty() && chunk.len() >= self.want {
                        // Whole inside this chunk: a zero-copy slice.
                        let msg = chunk.split_to(self.want);
                        return Ok(Some(self.message_done(msg)));
                    }
                    let take = self.want.min(chunk.len());
                    if self.partial.is_empty() {
                        // Never by the declared length alone: a peer could
                        // announce the maximum and send one byte; larger
                        // messages grow as their data arrives.
                        self.partial
                            .reserve((take + self.want.min(SPAN_RESERVE)).max(SPAN_RESERVE));
                    }
                    self.partial.extend_from_slice(&chunk.split_to(take));
                    self.want -= take;
                    if self.want == 0 {
                        let msg = self.partial.split().freeze();
                        return Ok(Some(self.message_done(msg)));
                    }
                }
                Phase::Handed => return Ok(None),
            }
        }
    }

    /// The stream ended (FIN). `Err(Truncated)` if it ended inside the
    /// header, a length prefix or a message (a stream that ends before any
    /// header byte is truncated too); the earlier `Reject` if there was one.
    pub fn finish(&self) -> Result<(), Reject> {
        if let Some(r) = self.failed {
            return Err(r);
        }
        match self.phase {
            Phase::Handed => Ok(()),
            Phase::Prefix if self.have == 0 => Ok(()),
            _ => Err(Reject::Truncated),
        }
    }

    fn message_done(&mut self, msg: Bytes) -> Frame {
        self.want = 0;
        self.phase = Phase::Prefix;
        Frame::Message(msg)
    }

    fn fail(&mut self, r: Reject) -> Reject {
        self.failed = Some(r);
        // Nothing more will be decoded: give the span buffer back.
        self.partial = BytesMut::new();
        r
    }
}

/// Moves bytes from `chunk` into the fixed field `buf`, of which `have`
/// are filled; `true` once it is full.
fn fill(buf: &mut [u8], have: &mut usize, chunk: &mut Bytes) -> bool {
    let take = (buf.len() - *have).min(chunk.len());
    buf[*have..*have + take].copy_from_slice(&chunk.split_to(take));
    *have += take;
    *have == buf.len()
}

#[cfg(test)]
mod tests;
