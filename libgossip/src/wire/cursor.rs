//! Bounds-checked reading and writing of the fixed fields.
//!
//! Every read asks for `n` bytes and gets them only if that many are left;
//! every write does the same against the output buffer. Neither indexes a
//! slice unchecked, so neither can panic, whatever the input.

use super::error::{EmitError, Field, WireError};
use bytes::Bytes;

/// Reads one frame front to back. Byte fields come out as [`Bytes`] slices
/// of the frame (no copy, no allocation).
pub(super) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, or `Truncated` when fewer are left.
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let buf: &'a [u8] = self.buf;
        let end = self.pos.checked_add(n);
        match end.and_then(|end| buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(WireError::Truncated {
                at: self.pos,
                need: n,
                got: self.remaining(),
            }),
        }
    }

    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// `len` bytes as a slice of the frame, after checking `len` against
    /// `max` (the receiver's limit) and against what is left.
    pub(super) fn bytes(&mut self, field: Field, len: u64, max: usize) -> Result<Bytes, WireError> {
        if len > max as u64 {
            return Err(WireError::Oversize {
                field,
                len,
                max: max as u64,
            });
        }
        // `len <= max`, a usize, so the cast is lossless.
        let n = len as usize;
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }

    /// A list count, checked against `max` entries and against the bytes
    /// left (`entry` bytes each) before anything is allocated for it: the
    /// count that comes back never exceeds `remaining / entry`.
    pub(super) fn count(&mut self, max: usize, entry: usize) -> Result<usize, WireError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(WireError::Oversize {
                field: Field::List,
                len: n as u64,
                max: max as u64,
            });
        }
        let need = n.saturating_mul(entry);
        if need > self.remaining() {
            return Err(WireError::Truncated {
                at: self.pos,
                need,
                got: self.remaining(),
            });
        }
        Ok(n)
    }

    /// Rejects bytes after the message.
    pub(super) fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// Writes one frame front to back into a caller's buffer.
pub(super) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(super) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn written(&self) -> usize {
        self.pos
    }

    pub(super) fn put(&mut self, src: &[u8]) -> Result<(), EmitError> {
        let got = self.buf.len();
        let end = self.pos.saturating_add(src.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(src);
                self.pos = end;
                Ok(())
            }
            None => Err(EmitError::BufferTooSmall { need: end, got }),
        }
    }

    pub(super) fn u8(&mut self, v: u8) -> Result<(), EmitError> {
        self.put(&[v])
    }

    pub(super) fn u16(&mut self, v: u16) -> Result<(), EmitError> {
        self.put(&v.to_be_bytes())
    }

    pub(super) fn u32(&mut self, v: u32) -> Result<(), EmitError> {
        self.put(&v.to_be_bytes())
    }

    pub(super) fn u64(&mut self, v: u64) -> Result<(), EmitError> {
        self.put(&v.to_be_bytes())
    }

    /// A length prefix of `N` bytes (2 or 4), refusing lengths it cannot state.
    pub(super) fn len_prefix<const N: usize>(
        &mut self,
        field: Field,
        len: usize,
    ) -> Result<(), EmitError> {
        let max = if N == 2 {
            u16::MAX as usize
        } else {
            u32::MAX as usize
        };
        if len > max {
            return Err(EmitError::TooLong { field, len, max });
        }
        let be = (len as u64).to_be_bytes();
        // `len <= max` fits the low N bytes of the big-endian u64.
        self.put(&be[8 - N..])
    }
}
