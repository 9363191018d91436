//! The versioned hello: the first frame each way on every connection.
//!
//! Both sides send a [`Hello`](crate::generated::hello::Hello) built from
//! their [`HelloConfig`] and read the peer's; then each computes the same
//! [`Session`] with [`negotiate`], so no third message is needed:
//!
//! * the protocol names must be equal ([`WireError::ProtocolMismatch`]);
//! * the version is the highest one in both inclusive ranges
//!   ([`WireError::VersionMismatch`] if they do not overlap);
//! * the peer's role must be allowed, if the config restricts roles
//!   ([`WireError::RoleRejected`]);
//! * the maximum frame size is the smaller of the two (0 means
//!   [`DEFAULT_MAX_FRAME`]; less than [`MIN_MAX_FRAME`] is an
//!   [`WireError::InvalidHello`]; more than [`HARD_MAX_FRAME`] is clamped)
//!   and applies to both directions;
//! * capabilities are the intersection; the ring capacity is the smaller
//!   non-zero proposal when both offer [`Capability::ShmRing`], else 0.
//!
//! The side that finds a mismatch sends an error frame (`fatal = true`) with
//! the matching [`ErrorCode`] before returning the error, so the peer logs
//! why; a peer that answers the hello with an error frame yields
//! [`WireError::Remote`]. Hello frames are read with a 4 KiB limit, before
//! any larger maximum is agreed.
//!
//! [`exchange`] runs this over a blocking [`FrameReader`]/[`FrameWriter`]
//! pair and [`exchange_async`] over a tokio `Framed` with [`FrameCodec`]
//! (feature `tokio`); both leave the negotiated maximum set on the codec.
//! [`exchange`] and [`exchange_stream_async`] (a bare tokio stream) read the
//! peer's hello exactly, so file descriptors the peer passes right after it
//! (the ring's memfd and eventfds, `SCM_RIGHTS`) are not swallowed by
//! read-ahead; `Framed` reads ahead and must not be used when fds follow.
//!
//! ```
//! use wire::hello::{HelloConfig, negotiate_bytes};
//! use wire::generated::hello::{Capability, Role};
//!
//! let verifyd = HelloConfig::new("tern.verify", Role::Verifyd).versions(1, 3)
//!     .capabilities(Capability::ShmRing).max_frame(8 << 20);
//! let client = HelloConfig::new("tern.verify", Role::Client).versions(2, 5)
//!     .capabilities(Capability::ShmRing | Capability::Batching);
//! let mut fbb = flatbuffers::FlatBufferBuilder::new();
//! let from_verifyd = verifyd.encode(&mut fbb).to_vec();
//! let s = negotiate_bytes(&client, &from_verifyd)?; // what the client computes
//! assert_eq!(s.version, 3);
//! assert_eq!(s.max_frame, 8 << 20);
//! assert_eq!(s.capabilities, Capability::ShmRing);
//! # Ok::<(), wire::WireError>(())
//! ```

use std::io::{Read, Write};

use flatbuffers::FlatBufferBuilder;

use crate::error::{WireError, bounded_text};
use crate::frame::{
    self, DEFAULT_MAX_FRAME, FrameReader, FrameWriter, HARD_MAX_FRAME, HelloSchema, MIN_MAX_FRAME,
};
use crate::generated::error::ErrorCode;
use crate::generated::hello::{self as fb, Capability, Role};

#[cfg(feature = "tokio")]
use crate::frame::FrameCodec;

/// Longest protocol name or software string sent in a hello; longer ones
/// are cut so the hello always fits in [`MIN_MAX_FRAME`].
pub const MAX_HELLO_TEXT: usize = 256;

/// What this side announces and accepts.
#[derive(Debug, Clone)]
pub struct HelloConfig {
    /// Protocol spoken after the hello, e.g. `"tern.verify"`.
    pub protocol: String,
    /// Lowest version spoken (default 1).
    pub min_version: u16,
    /// Highest version spoken (default 1).
    pub max_version: u16,
    /// Our role.
    pub role: Role,
    /// Our process id (default: this process).
    pub pid: u32,
    /// Random value chosen once per process start (default 0: set it).
    pub instance: u64,
    /// Capabilities offered (default none).
    pub capabilities: Capability,
    /// Largest payload we accept (default [`DEFAULT_MAX_FRAME`]).
    pub max_frame: u32,
    /// Ring data capacity proposed when offering `ShmRing` (default 0: none).
    pub ring_capacity: u32,
    /// Software name and version for the peer's logs.
    pub software: String,
    /// Roles accepted from the peer; empty accepts any.
    pub allowed_peer_roles: Vec<Role>,
}

impl HelloConfig {
    /// A config for `protocol` spoken as `role`, with the defaults above.
    pub fn new(protocol: impl Into<String>, role: Role) -> Self {
        Self {
            protocol: protocol.into(),
            min_version: 1,
            max_version: 1,
            role,
            pid: std::process::id(),
            instance: 0,
            capabilities: Capability::empty(),
            max_frame: DEFAULT_MAX_FRAME,
            ring_capacity: 0,
            software: concat!("wire ", env!("CARGO_PKG_VERSION")).to_owned(),
            allowed_peer_roles: Vec::new(),
        }
    }

    /// Sets the inclusive version range.
    #[must_use]
    pub fn versions(mut self, min: u16, max: u16) -> Self {
        self.min_version = min;
        self.max_version = max;
        self
    }

    /// Sets the capabilities offered.
    #[must_use]
    pub fn capabilities(mut self, caps: Capability) -> Self {
        self.capabilities = caps;
        self
    }

    /// Sets the largest payload accepted.
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> Self {
        self.max_frame = max;
        self
    }

    /// Sets the proposed ring capacity.
    #[must_use]
    pub fn ring_capacity(mut self, bytes: u32) -> Self {
        self.ring_capacity = bytes;
        self
    }

    /// Sets the per-process-start instance value.
    #[must_use]
    pub fn instance(mut self, instance: u64) -> Self {
        self.instance = instance;
        self
    }

    /// Sets the software string.
    #[must_use]
    pub fn software(mut self, software: impl Into<String>) -> Self {
        self.software = software.into();
        self
    }

    /// Restricts the roles accepted from the peer.
    #[must_use]
    pub fn allow_peer_roles(mut self, roles: &[Role]) -> Self {
        self.allowed_peer_roles = roles.to_vec();
        self
    }

    /// Builds this hello as a frame payload into `fbb` (reset first).
    pub fn encode<'b>(&self, fbb: &'b mut FlatBufferBuilder<'_>) -> &'b [u8] {
        fbb.reset();
        let protocol = fbb.create_string(cut(&self.protocol));
        let software = fbb.create_string(cut(&self.software));
        let root = fb::Hello::create(
            fbb,
            &fb::HelloArgs {
                protocol: Some(protocol),
                min_version: self.min_version,
                max_version: self.max_version,
                role: self.role,
                pid: self.pid,
                instance: self.instance,
                capabilities: self.capabilities,
                max_frame_size: self.max_frame,
                ring_capacity: self.ring_capacity,
                software: Some(software),
            },
        );
        frame::finish::<HelloSchema>(fbb, root);
        fbb.finished_data()
    }
}

fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_HELLO_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The agreed parameters of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Protocol name (equal on both sides).
    pub protocol: String,
    /// Highest common version.
    pub version: u16,
    /// Maximum payload size, both directions.
    pub max_frame: u32,
    /// Capabilities both sides offered.
    pub capabilities: Capability,
    /// Agreed ring capacity in bytes; 0 = no ring or no preference.
    pub ring_capacity: u32,
    /// The peer's role.
    pub peer_role: Role,
    /// The pid the peer announced (SO_PEERCRED is authoritative).
    pub peer_pid: u32,
    /// The peer's instance value (changes when it restarts).
    pub peer_instance: u64,
    /// The peer's software string (truncated).
    pub peer_software: String,
}

/// Announced maximum frame size after defaults and bounds.
fn effective_max(announced: u32) -> Result<u32, WireError> {
    match announced {
        0 => Ok(DEFAULT_MAX_FRAME),
        n if n < MIN_MAX_FRAME => Err(WireError::InvalidHello(
            "max_frame_size below the 4 KiB minimum",
        )),
        n => Ok(n.min(HARD_MAX_FRAME)),
    }
}

/// Computes the session from our config and the peer's verified hello.
pub fn negotiate(local: &HelloConfig, peer: &fb::Hello<'_>) -> Result<Session, WireError> {
    if local.min_version > local.max_version {
        return Err(WireError::InvalidHello("local min_version > max_version"));
    }
    let theirs = (peer.min_version(), peer.max_version());
    if theirs.0 > theirs.1 {
        return Err(WireError::InvalidHello("peer min_version > max_version"));
    }
    if peer.protocol() != local.protocol {
        return Err(WireError::ProtocolMismatch {
            ours: local.protocol.clone(),
            theirs: bounded_text(peer.protocol()),
        });
    }
    if !local.allowed_peer_roles.is_empty() && !local.allowed_peer_roles.contains(&peer.role()) {
        return Err(WireError::RoleRejected(peer.role()));
    }
    let ours = (local.min_version, local.max_version);
    let version = ours.1.min(theirs.1);
    if version < ours.0.max(theirs.0) {
        return Err(WireError::VersionMismatch { ours, theirs });
    }
    let max_frame = effective_max(local.max_frame)?.min(effective_max(peer.max_frame_size())?);
    let capabilities = local.capabilities & peer.capabilities();
    let ring_capacity = if capabilities.contains(Capability::ShmRing) {
        match (local.ring_capacity, peer.ring_capacity()) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        }
    } else {
        0
    };
    Ok(Session {
        protocol: local.protocol.clone(),
        version,
        max_frame,
        capabilities,
        ring_capacity,
        peer_role: peer.role(),
        peer_pid: peer.pid(),
        peer_instance: peer.instance(),
        peer_software: peer.software().map(bounded_text).unwrap_or_default(),
    })
}

/// Verifies `payload` as a hello and negotiates with it.
pub fn negotiate_bytes(local: &HelloConfig, payload: &[u8]) -> Result<Session, WireError> {
    let peer = frame::decode::<HelloSchema>(payload)?;
    negotiate(local, &peer)
}

/// The error code telling the peer why its hello was refused, if we should.
fn refusal(err: &WireError) -> Option<ErrorCode> {
    Some(match err {
        WireError::ProtocolMismatch { .. } => ErrorCode::ProtocolMismatch,
        WireError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
        WireError::RoleRejected(_) => ErrorCode::RoleRejected,
        WireError::Oversize { .. } => ErrorCode::FrameTooLarge,
        WireError::InvalidHello(_)
        | WireError::BadFlatbuffer { .. }
        | WireError::TooShort { .. }
        | WireError::ZeroLength => ErrorCode::Malformed,
        WireError::WrongSchema { .. } => ErrorCode::UnexpectedMessage,
        // The peer already knows (Remote) or the socket is gone.
        _ => return None,
    })
}

/// Our hello could not be sent: a peer that refused us (e.g.
/// PermissionDenied) has written an error frame and closed, so prefer the
/// reason in its `reply` over our broken pipe.
fn send_failure(local: &HelloConfig, reply: Option<&[u8]>, send_err: WireError) -> WireError {
    match reply.map(|payload| negotiate_bytes(local, payload)) {
        Some(Err(remote @ WireError::Remote(_))) => remote,
        _ => send_err,
    }
}

/// The error frame telling the peer why the hello failed, if we should.
fn refusal_frame<'b>(fbb: &'b mut FlatBufferBuilder<'_>, err: &WireError) -> Option<&'b [u8]> {
    refusal(err).map(|code| frame::encode_error(fbb, code, 0, true, &err.to_string()))
}

fn log_session(session: &Session) {
    tracing::debug!(protocol = %session.protocol, version = session.version,
        peer_pid = session.peer_pid, max_frame = session.max_frame, "hello done");
}

/// Runs the hello over a blocking reader/writer pair (e.g. two handles of
/// one `UnixStream`). On success both have the negotiated maximum set.
///
/// The peer's hello is read exactly (no read-ahead), so whatever the peer
/// sends next — e.g. ring descriptors with `SCM_RIGHTS` — is still in the
/// socket for the caller, and `reader.buffered()` is 0.
pub fn exchange<R: Read, W: Write>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    local: &HelloConfig,
) -> Result<Session, WireError> {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    writer.set_max_frame(MIN_MAX_FRAME);
    reader.set_max_frame(MIN_MAX_FRAME);
    let sent = writer
        .write_frame(local.encode(&mut fbb))
        .and_then(|()| writer.flush());
    if let Err(send_err) = sent {
        let reply = reader.read_frame_exact().ok().flatten();
        return Err(send_failure(local, reply, send_err));
    }
    let outcome = match reader.read_frame_exact() {
        Ok(Some(payload)) => negotiate_bytes(local, payload),
        Ok(None) => Err(WireError::PeerClosed),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(session) => {
            reader.set_max_frame(session.max_frame);
            writer.set_max_frame(session.max_frame);
            log_session(&session);
            Ok(session)
        }
        Err(err) => {
            if let Some(bytes) = refusal_frame(&mut fbb, &err) {
                // Best effort: the peer may already have closed.
                let _ = writer.write_frame(bytes).and_then(|()| writer.flush());
            }
            Err(err)
        }
    }
}

/// Runs the hello over a tokio `Framed` stream with [`FrameCodec`]. On
/// success the codec has the negotiated maximum set.
///
/// `Framed` reads ahead: if file descriptors follow the hello on this
/// socket, use [`exchange_stream_async`] instead.
#[cfg(feature = "tokio")]
pub async fn exchange_async<T>(
    framed: &mut tokio_util::codec::Framed<T, FrameCodec>,
    local: &HelloConfig,
) -> Result<Session, WireError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};

    let mut fbb = FlatBufferBuilder::with_capacity(512);
    framed.codec_mut().set_max_frame(MIN_MAX_FRAME);
    if let Err(send_err) = framed.send(local.encode(&mut fbb)).await {
        let reply = framed.next().await.and_then(Result::ok);
        return Err(send_failure(local, reply.as_deref(), send_err));
    }
    let outcome = match framed.next().await {
        Some(Ok(payload)) => negotiate_bytes(local, &payload),
        Some(Err(e)) => Err(e),
        None => Err(WireError::PeerClosed),
    };
    match outcome {
        Ok(session) => {
            framed.codec_mut().set_max_frame(session.max_frame);
            log_session(&session);
            Ok(session)
        }
        Err(err) => {
            if let Some(bytes) = refusal_frame(&mut fbb, &err) {
                // Best effort: the peer may already have closed.
                let _ = framed.send(bytes).await;
            }
            Err(err)
        }
    }
}

/// Runs the hello directly on a tokio stream (e.g. `tokio::net::UnixStream`)
/// reading exactly the peer's hello, so descriptors sent right after it stay
/// in the socket. Wrap the stream in `Framed` with
/// `FrameCodec::new(session.max_frame)` afterwards.
#[cfg(feature = "tokio")]
pub async fn exchange_stream_async<S>(
    stream: &mut S,
    local: &HelloConfig,
) -> Result<Session, WireError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn send<S: tokio::io::AsyncWrite + Unpin>(
        stream: &mut S,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let prefix = frame::prefix_for(payload, MIN_MAX_FRAME)?;
        stream.write_all(&prefix).await?;
        stream.write_all(payload).await?;
        stream.flush().await?;
        Ok(())
    }

    async fn recv<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, WireError> {
        let mut prefix = [0; frame::PREFIX_LEN];
        match stream.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(WireError::PeerClosed);
            }
            Err(e) => return Err(e.into()),
        }
        // Bounded by the 4 KiB hello limit, checked before allocating.
        let len = frame::check_len(u32::from_le_bytes(prefix), MIN_MAX_FRAME)?;
        let mut payload = vec![0; len];
        match stream.read_exact(&mut payload).await {
            Ok(_) => Ok(payload),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated {
                got: frame::PREFIX_LEN,
                want: frame::PREFIX_LEN + len,
            }),
            Err(e) => Err(e.into()),
        }
    }

    let mut fbb = FlatBufferBuilder::with_capacity(512);
    if let Err(send_err) = send(stream, local.encode(&mut fbb)).await {
        let reply = recv(stream).await.ok();
        return Err(send_failure(local, reply.as_deref(), send_err));
    }
    let outcome = match recv(stream).await {
        Ok(payload) => negotiate_bytes(local, &payload),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(session) => {
            log_session(&session);
            Ok(session)
        }
        Err(err) => {
            if let Some(bytes) = refusal_frame(&mut fbb, &err) {
                // Best effort: the peer may already have closed.
                let _ = send(stream, bytes).await;
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_bytes(cfg: &HelloConfig) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        cfg.encode(&mut fbb).to_vec()
    }

    #[test]
    fn picks_highest_common_version_and_smaller_limits() {
        let a = HelloConfig::new("tern.relay", Role::Relayd)
            .versions(1, 4)
            .max_frame(1 << 20)
            .capabilities(Capability::ShmRing | Capability::Batching)
            .ring_capacity(1 << 22);
        let b = HelloConfig::new("tern.relay", Role::Gossipd)
            .versions(3, 9)
            .max_frame(0)
            .capabilities(Capability::ShmRing)
            .ring_capacity(1 << 20)
            .instance(42);
        let s = negotiate_bytes(&a, &hello_bytes(&b)).unwrap();
        assert_eq!(s.version, 4);
        assert_eq!(s.max_frame, 1 << 20);
        assert_eq!(s.capabilities, Capability::ShmRing);
        assert_eq!(s.ring_capacity, 1 << 20);
        assert_eq!(s.peer_role, Role::Gossipd);
        assert_eq!(s.peer_instance, 42);
        // Symmetric: the other side computes the same agreement.
        let t = negotiate_bytes(&b, &hello_bytes(&a)).unwrap();
        assert_eq!(
            (t.version, t.max_frame, t.capabilities, t.ring_capacity),
            (4, 1 << 20, Capability::ShmRing, 1 << 20)
        );
    }

    #[test]
    fn mismatches_are_typed() {
        let a = HelloConfig::new("tern.verify", Role::Verifyd).versions(1, 2);
        let b = HelloConfig::new("tern.verify", Role::Client).versions(3, 4);
        assert!(matches!(
            negotiate_bytes(&a, &hello_bytes(&b)),
            Err(WireError::VersionMismatch {
                ours: (1, 2),
                theirs: (3, 4)
            })
        ));
        let c = HelloConfig::new("tern.admin", Role::Nodectl);
        assert!(matches!(
            negotiate_bytes(&a, &hello_bytes(&c)),
            Err(WireError::ProtocolMismatch { .. })
        ));
        let strict = a.clone().allow_peer_roles(&[Role::Gossipd]);
        let d = HelloConfig::new("tern.verify", Role::Nodectl).versions(1, 1);
        assert!(matches!(
            negotiate_bytes(&strict, &hello_bytes(&d)),
            Err(WireError::RoleRejected(Role::Nodectl))
        ));
        let tiny = HelloConfig::new("tern.verify", Role::Client).max_frame(100);
        assert!(matches!(
            negotiate_bytes(&a, &hello_bytes(&tiny)),
            Err(WireError::InvalidHello(_))
        ));
        let backwards = HelloConfig::new("tern.verify", Role::Client).versions(5, 1);
        assert!(matches!(
            negotiate_bytes(&a, &hello_bytes(&backwards)),
            Err(WireError::InvalidHello(_))
        ));
    }

    #[test]
    fn huge_limits_are_clamped_and_text_is_cut() {
        let a = HelloConfig::new("tern.verify", Role::Verifyd).max_frame(u32::MAX);
        let b = HelloConfig::new("tern.verify", Role::Client)
            .max_frame(u32::MAX)
            .software("x".repeat(10_000));
        let bytes = hello_bytes(&b);
        assert!(bytes.len() < MIN_MAX_FRAME as usize);
        let s = negotiate_bytes(&a, &bytes).unwrap();
        assert_eq!(s.max_frame, HARD_MAX_FRAME);
        assert_eq!(s.peer_software.len(), MAX_HELLO_TEXT);
    }
}
