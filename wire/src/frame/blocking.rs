//! Blocking frame I/O over `std::io::Read` / `Write` (e.g. a `UnixStream`).
//!
//! [`FrameReader`] keeps one buffer and reads as much as the socket offers
//! into its free space, so small frames cost one `read` per batch of frames
//! rather than two per frame; frames are handed out as slices of that buffer.
//! The buffer starts at 8 KiB and grows only when it is full of bytes that
//! arrived, to at most twice those bytes and never past the frame being
//! assembled (so never past `max + 4`). It is kept for reuse, so its size is
//! the high-water mark of the frames seen.

use std::io::{self, IoSlice, Read, Write};

use super::{INITIAL_BUFFER, PREFIX_LEN, check_len, prefix_for};
use crate::error::WireError;

/// Reads length-prefixed frames from a blocking reader.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// Initialised storage; `buf[start..end]` holds bytes not yet handed out.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
}

impl<R: Read> FrameReader<R> {
    /// A reader accepting payloads of at most `max_frame` bytes.
    pub fn new(inner: R, max_frame: u32) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame,
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

    /// Bytes of buffer currently allocated (for tests and diagnostics).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Unwraps the reader. Bytes already buffered are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes read from the socket but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads the next frame's payload. `Ok(None)` means the stream ended
    /// cleanly between frames; an end inside a frame is
    /// [`WireError::Truncated`].
    pub fn read_frame(&mut self) -> Result<Option<&[u8]>, WireError> {
        self.read_frame_inner(false)
    }

    /// Like [`Self::read_frame`], but never reads past the end of this frame.
    ///
    /// Use it for the last frame before file descriptors are passed on the
    /// same socket (e.g. the hello before a ring's `SCM_RIGHTS`): a plain
    /// `read` that reaches a message carrying descriptors discards them.
    /// Costs one extra `read` per frame.
    pub fn read_frame_exact(&mut self) -> Result<Option<&[u8]>, WireError> {
        self.read_frame_inner(true)
    }

    fn read_frame_inner(&mut self, exact: bool) -> Result<Option<&[u8]>, WireError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if !self.fill_to(PREFIX_LEN, exact)? {
            return Ok(None);
        }
        let mut prefix = [0; PREFIX_LEN];
        prefix.copy_from_slice(&self.buf[self.start..self.start + PREFIX_LEN]);
        let len = check_len(u32::from_le_bytes(prefix), self.max_frame)?;
        let want = PREFIX_LEN + len;
        if !self.fill_to(want, exact)? {
            return Err(WireError::Truncated {
                got: self.end - self.start,
                want,
            });
        }
        let at = self.start + PREFIX_LEN;
        self.start += want;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Ensures `buf[start..]` holds at least `want` bytes, reading no
    /// further than that when `exact`. Returns `false` at end of stream
    /// with nothing buffered (a clean end); an end after some bytes is
    /// `Truncated`.
    fn fill_to(&mut self, want: usize, exact: bool) -> Result<bool, WireError> {
        while self.end - self.start < want {
            if self.buf.len() - self.start < want {
                self.make_room(want);
            }
            let stop = if exact {
                (self.start + want).min(self.buf.len())
            } else {
                self.buf.len()
            };
            let n = match self.inner.read(&mut self.buf[self.end..stop]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if self.end == self.start {
                    return Ok(false);
                }
                return Err(WireError::Truncated {
                    got: self.end - self.start,
                    want,
                });
            }
            self.end += n;
        }
        Ok(true)
    }

    /// Moves pending bytes to the front and, if the storage is full of
    /// arrived bytes, grows it: to twice what is pending (at least the
    /// initial size), capped at the frame being assembled. `want <= max + 4`
    /// always holds here because lengths were checked first.
    fn make_room(&mut self, want: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end < self.buf.len() {
            return; // free space left; read into it first
        }
        let cap_limit = self.max_frame as usize + PREFIX_LEN;
        // `end < want <= cap_limit`, so `end + 1` fits under the cap.
        debug_assert!(self.end < want && want <= cap_limit);
        // Never more than this frame needs (or the initial size while only
        // the prefix is awaited), so the buffer is bounded by the largest
        // frame actually received, not by the maximum allowed.
        let limit = want.max(INITIAL_BUFFER).min(cap_limit);
        let grown = self
            .end
            .saturating_mul(2)
            .max(INITIAL_BUFFER)
            .min(limit)
            .max(self.end + 1);
        self.buf.reserve_exact(grown - self.buf.len());
        self.buf.resize(grown, 0);
    }
}

/// Writes length-prefixed frames to a blocking writer.
///
/// Each frame goes out with one vectored write (prefix + payload) in the
/// common case. Wrap the writer in a `BufWriter` to coalesce many small
/// frames, and flush it.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    max_frame: u32,
}

impl<W: Write> FrameWriter<W> {
    /// A writer refusing payloads larger than `max_frame` bytes.
    pub fn new(inner: W, max_frame: u32) -> Self {
        Self { inner, max_frame }
    }

    /// Changes the maximum payload size, e.g. after the hello.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// The maximum payload size in force.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Writes one frame. Empty or oversize payloads are refused with
    /// [`WireError::SendTooLarge`] before anything is written.
    pub fn write_frame(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let prefix = prefix_for(payload, self.max_frame)?;
        let mut slices = [IoSlice::new(&prefix), IoSlice::new(payload)];
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.inner.write_vectored(rest) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Flushes the wrapped writer.
    pub fn flush(&mut self) -> Result<(), WireError> {
        self.inner.flush().map_err(Into::into)
    }
}
