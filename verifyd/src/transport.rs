//! How requests and responses travel once the hello is done: length-prefixed
//! frames on the Unix socket, or records in a pair of shared-memory rings.
//!
//! When both sides offer [`Capability::ShmRing`] in the hello (and propose a
//! non-zero ring capacity), the session sets up two rings from `wire::ring`
//! over the same socket, in a fixed order both sides know:
//!
//! 1. the client *creates* the request ring (client → daemon) and the
//!    daemon attaches its consumer;
//! 2. the daemon creates the response ring (daemon → client) and the client
//!    attaches its consumer.
//!
//! Each record is exactly one frame payload of the same protocol
//! (`RegisterKey`, `VerifyBatch`, their answers), so the request decoder
//! and everything behind it is shared with the frame path. After setup the
//! socket carries no more bytes: it is the liveness channel. `wire`'s
//! parker polls it (and a pidfd of the peer) whenever a side sleeps and
//! discards whatever arrives, which is why control messages travel in the
//! rings too rather than on the socket. A dead peer or a corrupt ring ends
//! the session with a [`TransportError`], just as a broken socket does.
//!
//! Either side disables the ring by proposing capacity 0; the hello then
//! agrees on no ring and both stay on frames.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use wire::WireError;
use wire::frame::{FrameReader, FrameWriter};
use wire::hello::Session;
use wire::ring::shm::{self, SetupError, ShmConsumer, ShmProducer};
use wire::ring::{Corrupt, Geometry, PeerGone, PopError, SpinConfig, TryPushError};

pub use wire::generated::hello::Capability;

/// Default ring capacity proposed in the hello: 4 MiB per direction, so the
/// largest record is just under 2 MiB — a full 256-item request (~1.4 MB)
/// fits with room for a second one in flight.
pub const DEFAULT_RING_CAPACITY: u32 = 4 << 20;

/// Which transport a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Length-prefixed frames on the Unix socket.
    Frames,
    /// A shared-memory ring pair; the socket only watches liveness.
    Ring,
}

impl Transport {
    /// The name used in diagnostics and benchmark output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Transport::Frames => "frames",
            Transport::Ring => "ring",
        }
    }
}

/// A session's transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Frame I/O or framing failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Setting up the ring pair failed.
    #[error("ring setup failed: {0}")]
    Setup(#[from] SetupError),
    /// The hello agreed on a ring the geometry rules reject.
    #[error("agreed ring geometry unusable: {0}")]
    Geometry(Corrupt),
    /// The peer closed, hung up or exited.
    #[error("ring peer gone: {0}")]
    PeerGone(PeerGone),
    /// The peer wrote something the ring protocol does not allow.
    #[error("ring corrupt: {0}")]
    Corrupt(Corrupt),
    /// A record longer than the ring accepts.
    #[error("record of {0} bytes exceeds the ring's limit")]
    TooLarge(usize),
    /// The ring stayed full past the write deadline (peer alive but stalled).
    #[error("ring stayed full for {0:?}")]
    Stalled(Duration),
    /// A ring failure this crate does not know by name.
    #[error("ring: {0}")]
    Other(String),
    /// Duplicating the socket handle failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

impl From<PopError> for TransportError {
    fn from(e: PopError) -> Self {
        match e {
            PopError::PeerGone(g) => TransportError::PeerGone(g),
            PopError::Corrupt(c) => TransportError::Corrupt(c),
            other => TransportError::Other(other.to_string()),
        }
    }
}

/// Whether the hello agreed on a ring.
#[must_use]
pub fn ring_agreed(session: &Session) -> bool {
    session.capabilities.contains(Capability::ShmRing) && session.ring_capacity > 0
}

/// The geometry both sides derive from the hello.
pub fn geometry(session: &Session) -> Result<Geometry, TransportError> {
    Geometry::negotiated(session.ring_capacity, session.max_frame).map_err(TransportError::Geometry)
}

/// How long each side waits for the other's ring offer: a peer that agreed
/// on a ring in the hello and then sends nothing must not hold a thread.
pub const RING_SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` with [`RING_SETUP_TIMEOUT`] as the socket's read timeout, then
/// restores the previous one (timeouts belong to the socket, shared by all
/// its handles).
fn with_setup_timeout<T>(
    sock: &UnixStream,
    f: impl FnOnce() -> Result<T, TransportError>,
) -> Result<T, TransportError> {
    let previous = sock.read_timeout()?;
    sock.set_read_timeout(Some(RING_SETUP_TIMEOUT))?;
    let out = f()?;
    sock.set_read_timeout(previous)?;
    Ok(out)
}

/// Sets up the ring pair on the client side: returns (requests, responses).
pub fn client_rings(
    sock: &UnixStream,
    session: &Session,
) -> Result<(ShmProducer, ShmConsumer), TransportError> {
    let geo = geometry(session)?;
    let cfg = SpinConfig::default();
    with_setup_timeout(sock, || {
        let tx = shm::create_producer(sock.try_clone()?, geo, cfg)?;
        let rx = shm::attach_consumer(sock.try_clone()?, geo, cfg)?;
        Ok((tx, rx))
    })
}

/// Sets up the ring pair on the daemon side: returns (responses, requests).
pub fn server_rings(
    sock: &UnixStream,
    session: &Session,
) -> Result<(ShmProducer, ShmConsumer), TransportError> {
    let geo = geometry(session)?;
    let cfg = SpinConfig::default();
    with_setup_timeout(sock, || {
        let rx = shm::attach_consumer(sock.try_clone()?, geo, cfg)?;
        let tx = shm::create_producer(sock.try_clone()?, geo, cfg)?;
        Ok((tx, rx))
    })
}

/// The sending half of a session.
#[derive(Debug)]
pub enum Tx {
    /// Frames on the socket.
    Frames(FrameWriter<UnixStream>),
    /// Records in the outgoing ring; `sock` is kept to hang up.
    Ring {
        /// The outgoing ring.
        producer: Box<ShmProducer>,
        /// A handle of the session socket.
        sock: UnixStream,
        /// How long a full ring may block one send.
        deadline: Duration,
    },
}

impl Tx {
    /// Sends one message (a frame payload or a ring record) and publishes it.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        match self {
            Tx::Frames(w) => {
                w.write_frame(msg)?;
                w.flush()?;
                Ok(())
            }
            Tx::Ring {
                producer, deadline, ..
            } => push_until(producer, msg, *deadline),
        }
    }

    /// Hangs up the session socket (the peer notices at once).
    pub fn hang_up(&mut self) {
        let s = match self {
            Tx::Frames(w) => w.get_mut(),
            Tx::Ring { sock, .. } => sock,
        };
        let _ = s.shutdown(std::net::Shutdown::Both);
    }

    /// Which transport this is.
    #[must_use]
    pub fn transport(&self) -> Transport {
        match self {
            Tx::Frames(_) => Transport::Frames,
            Tx::Ring { .. } => Transport::Ring,
        }
    }
}

/// Pushes `msg`, waiting while the ring is full, but at most `deadline`:
/// `Producer::push` would wait for as long as the consumer is alive, and a
/// live but stalled consumer must not pin a worker thread forever.
// The driver owns the clock here: a write deadline is I/O policy.
#[allow(clippy::disallowed_methods)]
fn push_until(p: &mut ShmProducer, msg: &[u8], deadline: Duration) -> Result<(), TransportError> {
    let mut rec = msg;
    let mut started: Option<Instant> = None;
    let mut nap = Duration::from_micros(20);
    loop {
        match p.try_push(rec) {
            Ok(()) => return Ok(()),
            Err(TryPushError::Full(r)) => {
                rec = r;
                let t0 = *started.get_or_insert_with(Instant::now);
                if t0.elapsed() >= deadline {
                    return Err(TransportError::Stalled(deadline));
                }
                // try_push cannot see a consumer that died (only one that closed).
                p.check_peer().map_err(TransportError::PeerGone)?;
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(1));
            }
            Err(TryPushError::TooLarge(r)) => return Err(TransportError::TooLarge(r.len())),
            Err(TryPushError::PeerGone(_, g)) => return Err(TransportError::PeerGone(g)),
            Err(TryPushError::Corrupt(_, c)) => return Err(TransportError::Corrupt(c)),
            Err(other) => return Err(TransportError::Other(other.to_string())),
        }
    }
}

/// The receiving half of a session.
#[derive(Debug)]
pub enum Rx {
    /// Frames on the socket.
    Frames(FrameReader<UnixStream>),
    /// Records from the incoming ring.
    Ring(Box<ShmConsumer>),
}

impl Rx {
    /// The next message, owned; `Ok(None)` when the peer ended the session
    /// cleanly (socket end-of-file, or the ring closed after its last record).
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        match self {
            Rx::Frames(r) => Ok(r.read_frame()?.map(<[u8]>::to_vec)),
            Rx::Ring(c) => {
                let mut out = Vec::new();
                match c.pop(&mut out) {
                    Ok(_) => Ok(Some(out)),
                    Err(PopError::PeerGone(PeerGone::Closed)) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Established, HelloParams};
    use wire::generated::hello::Role;

    fn params(role: Role, ring_capacity: u32) -> HelloParams {
        HelloParams {
            protocol: crate::proto::PROTOCOL,
            role,
            instance: 1,
            max_frame: 1 << 20,
            ring_capacity,
        }
    }

    /// Both sides' rings over one socket pair: messages each way, then a
    /// clean close on one side is a clean end on the other.
    #[test]
    fn ring_pair_carries_messages_both_ways_and_ends_cleanly() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut e = Established::handshake(b, &params(Role::Verifyd, 1 << 20)).unwrap();
            assert!(ring_agreed(&e.session));
            let (tx, rx) = server_rings(e.writer.get_mut(), &e.session).unwrap();
            let mut rx = Rx::Ring(Box::new(rx));
            let sock = e.writer.get_mut().try_clone().unwrap();
            let mut tx = Tx::Ring {
                producer: Box::new(tx),
                sock,
                deadline: Duration::from_secs(1),
            };
            let got = rx.recv().unwrap().unwrap();
            tx.send(&got.iter().rev().copied().collect::<Vec<u8>>())
                .unwrap();
            // The client dropped its producer: a clean end, not an error.
            assert!(rx.recv().unwrap().is_none());
        });
        let mut e = Established::handshake(a, &params(Role::Client, 1 << 22)).unwrap();
        // The smaller proposal wins.
        assert_eq!(e.session.ring_capacity, 1 << 20);
        let (tx, rx) = client_rings(e.writer.get_mut(), &e.session).unwrap();
        let sock = e.writer.get_mut().try_clone().unwrap();
        let mut tx = Tx::Ring {
            producer: Box::new(tx),
            sock,
            deadline: Duration::from_secs(1),
        };
        assert_eq!(tx.transport(), Transport::Ring);
        let mut rx = Rx::Ring(Box::new(rx));
        tx.send(b"abc").unwrap();
        assert_eq!(rx.recv().unwrap().unwrap(), b"cba");
        drop(tx);
        server.join().unwrap();
    }

    /// A record over the negotiated limit is a typed error, not a panic.
    #[test]
    fn oversize_record_is_typed() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut e = Established::handshake(b, &params(Role::Verifyd, 1 << 16)).unwrap();
            let rings = server_rings(e.writer.get_mut(), &e.session).unwrap();
            // Hold the rings until the client is done.
            let mut rx = Rx::Ring(Box::new(rings.1));
            let _ = rx.recv();
        });
        let mut e = Established::handshake(a, &params(Role::Client, 1 << 16)).unwrap();
        let (tx, _rx) = client_rings(e.writer.get_mut(), &e.session).unwrap();
        let limit = tx.max_record();
        let sock = e.writer.get_mut().try_clone().unwrap();
        let mut tx = Tx::Ring {
            producer: Box::new(tx),
            sock,
            deadline: Duration::from_secs(1),
        };
        assert!(matches!(
            tx.send(&vec![0u8; limit + 1]),
            Err(TransportError::TooLarge(n)) if n == limit + 1
        ));
        drop(tx);
        server.join().unwrap();
    }

    /// One side without the ring: the hello agrees on none.
    #[test]
    fn one_side_without_ring_means_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            Established::handshake(b, &params(Role::Verifyd, 1 << 20))
                .map(|e| ring_agreed(&e.session))
                .unwrap()
        });
        let e = Established::handshake(a, &params(Role::Client, 0)).unwrap();
        assert!(!ring_agreed(&e.session));
        assert!(!t.join().unwrap());
    }
}
