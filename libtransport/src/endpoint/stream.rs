//! Application stream handles. Each call locks the endpoint state, works on
//! the `quinn-proto` stream in place, and parks its waker with the
//! connection when the stream is blocked; the driver wakes it on the
//! matching `Readable`/`Writable` event.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, ReadError, StreamId, VarInt, WriteError};

use super::state::{CloseReason, Conn, Phase, Shared, State};
use super::{BiStream, Error, IncomingBi};

fn conn(st: &mut State, ch: ConnectionHandle, uid: u64) -> Result<&mut Conn, Error> {
    match st.conns.get_mut(&ch).filter(|c| c.uid == uid) {
        Some(c) if c.phase != Phase::Closing => {
            // The caller is about to act on the connection: the driver must
            // poll it for transmits.
            c.dirty = true;
            Ok(c)
        }
        Some(c) => Err(Error::Closed(
            c.close_reason.clone().unwrap_or(CloseReason::Local),
        )),
        None => Err(Error::Closed(CloseReason::Local)),
    }
}

/// The sending half of a stream.
#[derive(Debug)]
pub struct SendStream {
    ep: Arc<Shared>,
    ch: ConnectionHandle,
    uid: u64,
    id: StreamId,
    done: bool,
}

impl SendStream {
    pub(crate) fn new(ep: Arc<Shared>, ch: ConnectionHandle, uid: u64, id: StreamId) -> Self {
        Self {
            ep,
            ch,
            uid,
            id,
            done: false,
        }
    }

    /// Writes some of `data`; returns how much was accepted.
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        poll_fn(|cx| {
            let mut st = self.ep.lock();
            let c = match conn(&mut st, self.ch, self.uid) {
                Ok(c) => c,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match c.inner.send_stream(self.id).write(data) {
                Ok(n) => {
                    st.wake_driver();
                    Poll::Ready(Ok(n))
                }
                Err(WriteError::Blocked) => {
                    c.writers.insert(self.id, cx.waker().clone());
                    Poll::Pending
                }
                Err(WriteError::Stopped(code)) => {
                    Poll::Ready(Err(Error::Stopped(code.into_inner())))
                }
                Err(WriteError::ClosedStream) => Poll::Ready(Err(Error::StreamClosed)),
            }
        })
        .await
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes a chunk without copying it.
    pub async fn write_chunk(&mut self, data: Bytes) -> Result<(), Error> {
        let mut bufs = [data];
        poll_fn(|cx| {
            let mut st = self.ep.lock();
            let c = match conn(&mut st, self.ch, self.uid) {
                Ok(c) => c,
                Err(e) => return Poll::Ready(Err(e)),
            };
            loop {
                if bufs[0].is_empty() {
                    st.wake_driver();
                    return Poll::Ready(Ok(()));
                }
                match c.inner.send_stream(self.id).write_chunks(&mut bufs) {
                    Ok(_) => continue,
                    Err(WriteError::Blocked) => {
                        c.writers.insert(self.id, cx.waker().clone());
                        st.wake_driver();
                        return Poll::Pending;
                    }
                    Err(WriteError::Stopped(code)) => {
                        return Poll::Ready(Err(Error::Stopped(code.into_inner())));
                    }
                    Err(WriteError::ClosedStream) => return Poll::Ready(Err(Error::StreamClosed)),
                }
            }
        })
        .await
    }

    /// Finishes the stream (FIN after the queued data).
    pub fn finish(&mut self) -> Result<(), Error> {
        self.done = true;
        let mut st = self.ep.lock();
        let c = conn(&mut st, self.ch, self.uid)?;
        let r = c
            .inner
            .send_stream(self.id)
            .finish()
            .map_err(|_| Error::StreamClosed);
        if r.is_ok() {
            // A drain waits until the peer acknowledged this stream.
            c.finishing.insert(self.id, None);
        }
        st.wake_driver();
        r
    }

    /// Resets the stream with `code`.
    pub fn reset(&mut self, code: u32) {
        self.done = true;
        let mut st = self.ep.lock();
        if let Ok(c) = conn(&mut st, self.ch, self.uid) {
            let _ = c.inner.send_stream(self.id).reset(VarInt::from_u32(code));
            // Abandoned: nothing left for a drain to wait for.
            if c.finishing.remove(&self.id).is_some() {
                st.wake_idle();
            }
            st.wake_driver();
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish();
        }
    }
}

/// Bytes a `RecvStream` takes from the connection per lock (amortises the
/// endpoint lock over many received frames).
const READ_AHEAD: usize = 256 * 1024;

/// The receiving half of a stream.
#[derive(Debug)]
pub struct RecvStream {
    ep: Arc<Shared>,
    ch: ConnectionHandle,
    uid: u64,
    id: StreamId,
    done: bool,
    /// Chunks taken from the connection but not yet returned (bounded by
    /// `READ_AHEAD` plus one frame).
    ahead: std::collections::VecDeque<Bytes>,
    fin: bool,
}

impl RecvStream {
    pub(crate) fn new(ep: Arc<Shared>, ch: ConnectionHandle, uid: u64, id: StreamId) -> Self {
        Self {
            ep,
            ch,
            uid,
            id,
            done: false,
            ahead: Default::default(),
            fin: false,
        }
    }

    /// Reads the next chunk of at most `max` bytes; `None` at the end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, Error> {
        if let Some(mut b) = self.ahead.pop_front() {
            if b.len() > max {
                let rest = b.split_off(max);
                self.ahead.push_front(rest);
            }
            return Ok(Some(b));
        }
        if self.done || self.fin {
            self.done = true;
            return Ok(None);
        }
        let r = poll_fn(|cx| {
            let mut st = self.ep.lock();
            let c = match conn(&mut st, self.ch, self.uid) {
                Ok(c) => c,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let mut rs = c.inner.recv_stream(self.id);
            let mut chunks = match rs.read(true) {
                Ok(ch) => ch,
                Err(_) => return Poll::Ready(Err(Error::StreamClosed)),
            };
            let mut taken = 0;
            let mut out = Ok(());
            while taken < READ_AHEAD {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        taken += chunk.bytes.len();
                        self.ahead.push_back(chunk.bytes);
                    }
                    Ok(None) => {
                        self.fin = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        out = Err(Error::Stopped(code.into_inner()));
                        break;
                    }
                }
            }
            let tx = chunks.finalize();
            if tx.should_transmit() {
                st.wake_driver();
            }
            if let Err(e) = out {
                return Poll::Ready(Err(e));
            }
            if taken == 0 && !self.fin {
                if let Ok(c) = conn(&mut st, self.ch, self.uid) {
                    c.readers.insert(self.id, cx.waker().clone());
                }
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
        .await;
        if let Err(e) = r {
            self.done = true;
            return Err(e);
        }
        match self.ahead.pop_front() {
            Some(mut b) => {
                if b.len() > max {
                    let rest = b.split_off(max);
                    self.ahead.push_front(rest);
                }
                Ok(Some(b))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Reads into `buf`; `None` at the end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        // A chunk no larger than `buf` keeps this exact without buffering.
        match self.read_chunk(buf.len()).await? {
            Some(b) => {
                buf[..b.len()].copy_from_slice(&b);
                Ok(Some(b.len()))
            }
            None => Ok(None),
        }
    }

    /// Reads to the end; fails with [`Error::TooLong`] past `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(b) = self.read_chunk(usize::MAX).await? {
            if out.len() + b.len() > limit {
                self.stop(0);
                return Err(Error::TooLong);
            }
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Asks the peer to stop sending (STOP_SENDING with `code`).
    pub fn stop(&mut self, code: u32) {
        self.done = true;
        let mut st = self.ep.lock();
        if let Ok(c) = conn(&mut st, self.ch, self.uid) {
            let _ = c.inner.recv_stream(self.id).stop(VarInt::from_u32(code));
            c.readers.remove(&self.id);
            st.wake_driver();
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done && !self.fin {
            self.stop(0);
        }
    }
}

pub(crate) fn bi_stream(ep: &Arc<Shared>, b: IncomingBi) -> BiStream {
    BiStream {
        peer: b.peer,
        kind: b.kind,
        send: SendStream::new(ep.clone(), b.ch, b.uid, b.id),
        recv: RecvStream::new(ep.clone(), b.ch, b.uid, b.id),
    }
}
