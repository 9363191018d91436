//! tokio-util codec for length-prefixed frames (feature `tokio`).
//!
//! Use with `tokio_util::codec::Framed` on a `tokio::net::UnixStream`. The
//! decoder yields each payload as a `BytesMut` split off the read buffer
//! (no copy); pass it to [`super::decode`]. It never reserves space for an
//! announced length: the read buffer grows only as `Framed` fills it with
//! bytes that arrived (by `BytesMut`'s amortised doubling), so a hostile
//! prefix costs nothing beyond the 8 KiB initial buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{PREFIX_LEN, check_len, prefix_for};
use crate::error::WireError;

/// Encoder and decoder of `[u32 LE length][flatbuffer]` frames.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: u32,
    /// Payload length of the frame being assembled, once its prefix arrived.
    pending: Option<usize>,
}

impl FrameCodec {
    /// A codec accepting and sending payloads of at most `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Self {
            max_frame,
            pending: None,
        }
    }

    /// Changes the maximum payload size, e.g. after the hello.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// The maximum payload size in force.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(prefix) = src.get(..PREFIX_LEN) else {
                    return Ok(None);
                };
                let mut raw = [0; PREFIX_LEN];
                raw.copy_from_slice(prefix);
                let len = check_len(u32::from_le_bytes(raw), self.max_frame)?;
                src.advance(PREFIX_LEN);
                self.pending = Some(len);
                len
            }
        };
        if src.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match self.pending {
            Some(len) => Err(WireError::Truncated {
                got: PREFIX_LEN + src.len(),
                want: PREFIX_LEN + len,
            }),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::Truncated {
                got: src.len(),
                want: PREFIX_LEN,
            }),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        let prefix = prefix_for(payload, self.max_frame)?;
        dst.reserve(PREFIX_LEN + payload.len());
        dst.put_slice(&prefix);
        dst.put_slice(payload);
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), WireError> {
        Encoder::<&[u8]>::encode(self, &payload, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_partial_arrivals() {
        let mut codec = FrameCodec::new(64);
        let mut wire = BytesMut::new();
        Encoder::<&[u8]>::encode(&mut codec, b"hello frame", &mut wire).unwrap();
        Encoder::<&[u8]>::encode(&mut codec, b"second", &mut wire).unwrap();
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            src.put_u8(b);
            while let Some(f) = codec.decode(&mut src).unwrap() {
                out.push(f.to_vec());
            }
        }
        assert_eq!(out, [b"hello frame".to_vec(), b"second".to_vec()]);
        assert!(codec.decode_eof(&mut src).unwrap().is_none());
    }

    #[test]
    fn eof_inside_frame_is_truncated() {
        let mut codec = FrameCodec::new(64);
        let mut src = BytesMut::from(&[10u8, 0, 0, 0, 1, 2][..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        match codec.decode_eof(&mut src) {
            Err(WireError::Truncated { got: 6, want: 14 }) => {}
            other => panic!("{other:?}"),
        }
        let mut src = BytesMut::from(&[10u8, 0][..]);
        let mut codec = FrameCodec::new(64);
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(WireError::Truncated { got: 2, want: 4 })
        ));
    }

    #[test]
    fn hostile_prefix_is_rejected_without_reserving() {
        let mut codec = FrameCodec::new(1024);
        let mut src = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let cap = src.capacity();
        assert!(matches!(
            codec.decode(&mut src),
            Err(WireError::Oversize {
                len: 0xffff_ffff,
                max: 1024
            })
        ));
        assert_eq!(src.capacity(), cap);
        let mut src = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            FrameCodec::new(1024).decode(&mut src),
            Err(WireError::ZeroLength)
        ));
        let mut out = BytesMut::new();
        assert!(matches!(
            Encoder::<&[u8]>::encode(&mut codec, &[0; 1025], &mut out),
            Err(WireError::SendTooLarge { .. })
        ));
        assert!(out.is_empty());
    }
}
