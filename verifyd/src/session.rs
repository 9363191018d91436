//! A verify (or admin) connection set up with `wire`'s hello and framed
//! with `wire`'s blocking codec.
//!
//! [`Established`] holds the two halves of one Unix stream: a
//! [`FrameReader`] and a [`FrameWriter`]. Clients (the pool, admin
//! queries, tests) use it; the daemon runs the same hello
//! ([`HelloParams::config`]) asynchronously under the serving core's
//! deadline instead. The hello is `wire::hello::exchange`; this daemon offers no
//! capability but [`Capability::ShmRing`], and that only when
//! [`HelloParams::ring_capacity`] is non-zero; what happens after a ring is
//! agreed is in [`crate::transport`].

use std::os::unix::net::UnixStream;

use wire::WireError;
use wire::frame::{FrameReader, FrameWriter};
use wire::generated::hello::{Capability, Role};
use wire::hello::{HelloConfig, Session};

use crate::proto::VERSION;

/// Default largest frame, length prefix excluded (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = wire::frame::DEFAULT_MAX_FRAME as usize;

/// Our side of the hello.
#[derive(Debug, Clone, Copy)]
pub struct HelloParams {
    /// Protocol on this socket ([`crate::proto::PROTOCOL`] or `tern.admin`).
    pub protocol: &'static str,
    /// Who we are.
    pub role: Role,
    /// Random per process start.
    pub instance: u64,
    /// Largest frame we accept.
    pub max_frame: usize,
    /// Shared-memory ring capacity to propose (bytes per direction); 0 offers
    /// no ring, so the session stays on frames.
    pub ring_capacity: u32,
}

impl HelloParams {
    /// The `wire` hello configuration these parameters describe.
    #[must_use]
    pub fn config(&self) -> HelloConfig {
        let mut c = HelloConfig::new(self.protocol, self.role)
            .versions(VERSION, VERSION)
            .instance(self.instance)
            .max_frame(u32::try_from(self.max_frame).unwrap_or(u32::MAX))
            .software(concat!("verifyd ", env!("CARGO_PKG_VERSION")));
        if self.ring_capacity > 0 {
            c.capabilities = Capability::ShmRing;
            c.ring_capacity = self.ring_capacity;
        } else {
            c.capabilities = Capability::empty();
            c.ring_capacity = 0;
        }
        c
    }
}

/// A connection after a successful hello.
#[derive(Debug)]
pub struct Established {
    /// Frames from the peer.
    pub reader: FrameReader<UnixStream>,
    /// Frames to the peer.
    pub writer: FrameWriter<UnixStream>,
    /// What the hello negotiated.
    pub session: Session,
}

impl Established {
    /// Runs the hello on `stream`. On a mismatch `wire` has already sent the
    /// peer a typed error frame.
    pub fn handshake(stream: UnixStream, p: &HelloParams) -> Result<Established, WireError> {
        let w = stream.try_clone()?;
        let mut reader = FrameReader::new(stream, wire::frame::MIN_MAX_FRAME);
        let mut writer = FrameWriter::new(w, wire::frame::MIN_MAX_FRAME);
        let session = wire::hello::exchange(&mut reader, &mut writer, &p.config())?;
        Ok(Established {
            reader,
            writer,
            session,
        })
    }

    /// The negotiated maximum frame size.
    #[must_use]
    pub fn max_frame(&self) -> usize {
        self.session.max_frame as usize
    }

    /// Writes one frame and flushes it.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), WireError> {
        self.writer.write_frame(frame)?;
        self.writer.flush()
    }

    /// Reads the next frame into an owned buffer; `Ok(None)` at a clean end.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        Ok(self.reader.read_frame()?.map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hello parameters that offer no ring.
    fn params(protocol: &'static str, role: Role, instance: u64, max_frame: usize) -> HelloParams {
        HelloParams {
            protocol,
            role,
            instance,
            max_frame,
            ring_capacity: 0,
        }
    }

    #[test]
    fn hello_negotiates_smaller_max_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let p = params("tern.verify", Role::Verifyd, 2, 1 << 20);
            Established::handshake(b, &p).map(|e| (e.max_frame(), e.session.peer_instance))
        });
        let p = params("tern.verify", Role::Client, 1, 1 << 24);
        let n = Established::handshake(a, &p).unwrap();
        let (m_max, m_peer) = t.join().unwrap().unwrap();
        assert_eq!(n.max_frame(), 1 << 20);
        assert_eq!(m_max, 1 << 20);
        assert_eq!(n.session.peer_instance, 2);
        assert_eq!(m_peer, 1);
        assert!(n.session.capabilities.is_empty(), "no ring offered");
    }

    #[test]
    fn protocol_mismatch_is_typed() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let p = params("tern.verify", Role::Verifyd, 2, 1 << 20);
            Established::handshake(b, &p).map(|_| ())
        });
        let p = params("tern.relay", Role::Client, 1, 1 << 20);
        assert!(Established::handshake(a, &p).is_err());
        assert!(matches!(
            t.join().unwrap(),
            Err(WireError::ProtocolMismatch { .. })
        ));
    }
}
