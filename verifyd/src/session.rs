//! Blocking frame I/O and the hello exchange for one verify connection.
//!
//! Frames are `[u32 little-endian length][flatbuffer]` as specified by
//! `wire` (docs/protocols/ipc.md); the hello is `wire`'s `tern.hello.Hello`
//! table. This is a thin adapter over the schema: it reads a length, refuses
//! anything over the negotiated maximum *before* allocating, then reads the
//! body into a caller-owned buffer. Both sides send their hello first and
//! then read the peer's; the session uses the highest common version and the
//! smaller maximum frame size. This daemon offers no capabilities (in
//! particular no shared-memory ring), so the session stays on the socket.

use std::io::{self, Read, Write};

use flatbuffers::FlatBufferBuilder;
use wire::generated::error as fe;
use wire::generated::hello as fh;

#[cfg(doc)]
use crate::proto::PROTOCOL;
use crate::proto::VERSION;

/// Default largest frame, length prefix excluded (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// Largest hello we read before the maximum is negotiated.
const MAX_HELLO: usize = 4096;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A frame announced more bytes than the negotiated maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The peer's hello was not a valid hello.
    #[error("bad hello: {0}")]
    BadHello(String),
    /// The peer speaks another protocol.
    #[error("peer speaks {0:?}, not the protocol of this socket")]
    ProtocolMismatch(String),
    /// No common version.
    #[error("no common version: peer speaks {min}..={max}, we speak {VERSION}")]
    VersionMismatch {
        /// Peer's lowest.
        min: u16,
        /// Peer's highest.
        max: u16,
    },
    /// The peer refused us with an error frame.
    #[error("peer refused: {0}")]
    Refused(String),
}

/// Reads one frame body into `buf` (resized to the frame length).
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> Result<(), SessionError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(SessionError::FrameTooLarge { len, max });
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(())
}

/// Writes one frame (length prefix and body) in one write call where the
/// kernel allows, so concurrent writers holding a lock never interleave.
pub fn write_frame<W: Write + ?Sized>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame over 4 GiB"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)
}

/// What the hello negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Protocol version in use.
    pub version: u16,
    /// Largest frame either side may send.
    pub max_frame: usize,
    /// The peer's process id (diagnostics only).
    pub peer_pid: u32,
    /// The peer's instance value (changes when it restarts).
    pub peer_instance: u64,
}

/// Our side of the hello.
#[derive(Debug, Clone, Copy)]
pub struct HelloParams {
    /// Protocol on this socket ([`PROTOCOL`] or `tern.admin`).
    pub protocol: &'static str,
    /// Who we are.
    pub role: fh::Role,
    /// Random per process start.
    pub instance: u64,
    /// Largest frame we accept.
    pub max_frame: usize,
}

fn encode_hello(p: &HelloParams) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let protocol = Some(fbb.create_string(p.protocol));
    let software = Some(fbb.create_string(concat!("verifyd ", env!("CARGO_PKG_VERSION"))));
    let root = fh::Hello::create(
        &mut fbb,
        &fh::HelloArgs {
            protocol,
            min_version: VERSION,
            max_version: VERSION,
            role: p.role,
            pid: std::process::id(),
            instance: p.instance,
            capabilities: fh::Capability::empty(),
            max_frame_size: u32::try_from(p.max_frame).unwrap_or(u32::MAX),
            ring_capacity: 0,
            software,
        },
    );
    fh::finish_hello_buffer(&mut fbb, root);
    fbb.finished_data().to_vec()
}

/// Sends our hello, reads the peer's, and negotiates. On a mismatch a fatal
/// error frame is sent before the error is returned.
pub fn handshake(s: &mut (impl Read + Write), p: &HelloParams) -> Result<Negotiated, SessionError> {
    write_frame(s, &encode_hello(p))?;
    let mut buf = Vec::new();
    read_frame(s, &mut buf, MAX_HELLO)?;
    if crate::proto::has_identifier(&buf, fe::ERROR_FRAME_IDENTIFIER) {
        let msg = fe::root_as_error_frame(&buf)
            .map(|e| e.message().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| e.to_string());
        return Err(SessionError::Refused(msg));
    }
    if !crate::proto::has_identifier(&buf, fh::HELLO_IDENTIFIER) {
        return Err(SessionError::BadHello("not a hello frame".into()));
    }
    let h = fh::root_as_hello(&buf).map_err(|e| SessionError::BadHello(e.to_string()))?;
    let refuse = |s: &mut dyn Write, code, msg: &str| {
        let mut fbb = FlatBufferBuilder::new();
        let frame = crate::proto::encode_error(&mut fbb, 0, code, true, msg);
        let _ = write_frame(s, &frame);
    };
    if h.protocol() != p.protocol {
        let e = SessionError::ProtocolMismatch(h.protocol().to_owned());
        refuse(s, fe::ErrorCode::ProtocolMismatch, &e.to_string());
        return Err(e);
    }
    if h.min_version() > VERSION || h.max_version() < VERSION {
        let e = SessionError::VersionMismatch {
            min: h.min_version(),
            max: h.max_version(),
        };
        refuse(s, fe::ErrorCode::VersionMismatch, &e.to_string());
        return Err(e);
    }
    let peer_max = match h.max_frame_size() {
        0 => DEFAULT_MAX_FRAME,
        n => n as usize,
    };
    Ok(Negotiated {
        version: VERSION,
        max_frame: peer_max.min(p.max_frame),
        peer_pid: h.pid(),
        peer_instance: h.instance(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn hello_negotiates_smaller_max_frame() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            handshake(
                &mut b,
                &HelloParams {
                    protocol: "tern.verify",
                    role: fh::Role::Verifyd,
                    instance: 2,
                    max_frame: 1 << 20,
                },
            )
        });
        let n = handshake(
            &mut a,
            &HelloParams {
                protocol: "tern.verify",
                role: fh::Role::Client,
                instance: 1,
                max_frame: 1 << 24,
            },
        )
        .unwrap();
        let m = t.join().unwrap().unwrap();
        assert_eq!(n.max_frame, 1 << 20);
        assert_eq!(m.max_frame, 1 << 20);
        assert_eq!(n.peer_instance, 2);
        assert_eq!(m.peer_instance, 1);
    }

    #[test]
    fn oversize_frame_refused_before_allocating() {
        let mut bytes: &[u8] = &[0xFF, 0xFF, 0xFF, 0x7F];
        let mut buf = Vec::new();
        let e = read_frame(&mut bytes, &mut buf, 1024).unwrap_err();
        assert!(matches!(
            e,
            SessionError::FrameTooLarge {
                len: 0x7FFF_FFFF,
                max: 1024
            }
        ));
        assert_eq!(buf.capacity(), 0);
    }
}
