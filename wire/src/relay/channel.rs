//! Setting up a relay session's data channel: a socketpair passed over the
//! control socket, and the two rings set up over that socketpair.
//!
//! The ring layer keeps the socket it was set up over as its liveness
//! channel and reads (and discards) anything that arrives on it, so control
//! frames cannot share that socket. relayd therefore makes a fresh
//! `socketpair(AF_UNIX, SOCK_STREAM)` per session and passes one end to
//! gossipd over the control socket, right after the hello:
//!
//! ```text
//! relayd → gossipd (control socket): 16 bytes "TERNRDCH", version u32 LE, 0u32
//!                                     + one fd (SCM_RIGHTS): gossipd's end
//! then, on the socketpair:
//!   relayd creates the inbound ring (relayd produces), gossipd attaches;
//!   gossipd creates the outbound ring (gossipd produces), relayd attaches.
//! ```
//!
//! The control socket then carries only frames; the socketpair carries
//! nothing after the ring setup. When gossipd dies its end of the pair
//! closes, which wakes relayd's parked ring side at once.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, getsockopt,
    recvmsg, sendmsg, socketpair, sockopt,
};

use crate::ring::shm::{self, SetupError, ShmConsumer, ShmProducer};
use crate::ring::{Geometry, SpinConfig};

const MAGIC: &[u8; 8] = b"TERNRDCH";
/// Version of the data-channel offer.
pub const CHANNEL_VERSION: u32 = 1;
const OFFER_LEN: usize = 16;
/// Room for more fds than expected, so surplus ones are received and
/// closed instead of truncating the control message.
const MAX_FDS: usize = 8;

/// relayd's end of a session's data channel.
#[derive(Debug)]
pub struct RelaydRings {
    /// relayd → gossipd: inbound records.
    pub inbound: ShmProducer,
    /// gossipd → relayd: outbound records.
    pub outbound: ShmConsumer,
}

/// gossipd's end of a session's data channel.
#[derive(Debug)]
pub struct GossipdRings {
    /// relayd → gossipd: inbound records.
    pub inbound: ShmConsumer,
    /// gossipd → relayd: outbound records.
    pub outbound: ShmProducer,
}

/// Setting up the data channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A socket system call failed.
    #[error("data channel system call failed: {0}")]
    Os(#[from] nix::errno::Errno),
    /// Socket I/O failed.
    #[error("data channel socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The offer is not what this protocol sends.
    #[error("bad data channel offer: {0}")]
    BadOffer(&'static str),
    /// The control socket closed during setup.
    #[error("peer closed the control socket during data channel setup")]
    Closed,
    /// Setting up a ring over the channel failed.
    #[error("ring setup failed: {0}")]
    Ring(#[from] SetupError),
}

fn offer_bytes() -> [u8; OFFER_LEN] {
    let mut msg = [0u8; OFFER_LEN];
    msg[..8].copy_from_slice(MAGIC);
    msg[8..12].copy_from_slice(&CHANNEL_VERSION.to_le_bytes());
    msg
}

/// relayd: makes the socketpair, passes one end over `control` (right
/// after the hello agreed on `ShmRing`) and sets up both rings of `geo`.
pub fn serve(
    control: &UnixStream,
    geo: Geometry,
    spin: SpinConfig,
) -> Result<RelaydRings, ChannelError> {
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let msg = offer_bytes();
    let fds = [theirs.as_raw_fd()];
    let sent = sendmsg::<()>(
        control.as_raw_fd(),
        &[IoSlice::new(&msg)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != OFFER_LEN {
        // A 16-byte write to a Unix stream socket is not split in practice;
        // if it were, the fd went with the first part and the rest follows.
        let mut w = control;
        std::io::Write::write_all(&mut w, &msg[sent..])?;
    }
    drop(theirs);
    let data = UnixStream::from(mine);
    let inbound = shm::create_producer(data.try_clone()?, geo, spin)?;
    let outbound = shm::attach_consumer(data, geo, spin)?;
    tracing::debug!(capacity = geo.capacity(), "relay data channel served");
    Ok(RelaydRings { inbound, outbound })
}

/// gossipd: receives the socketpair end relayd passed over `control` and
/// sets up both rings of `geo` over it.
pub fn attach(
    control: &UnixStream,
    geo: Geometry,
    spin: SpinConfig,
) -> Result<GossipdRings, ChannelError> {
    let data = receive_end(control)?;
    let inbound = shm::attach_consumer(data.try_clone()?, geo, spin)?;
    let outbound = shm::create_producer(data, geo, spin)?;
    tracing::debug!(capacity = geo.capacity(), "relay data channel attached");
    Ok(GossipdRings { inbound, outbound })
}

fn receive_end(control: &UnixStream) -> Result<UnixStream, ChannelError> {
    let mut msg = [0u8; OFFER_LEN];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, mut fds) = {
        let mut iov = [IoSliceMut::new(&mut msg)];
        let r = recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in r.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table
                    // and nothing else refers to it; owning it closes it on
                    // every error path below.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (r.bytes, fds)
    };
    if got == 0 {
        return Err(ChannelError::Closed);
    }
    if got < OFFER_LEN {
        let mut r = control;
        std::io::Read::read_exact(&mut r, &mut msg[got..])?;
    }
    if &msg[..8] != MAGIC {
        return Err(ChannelError::BadOffer("magic"));
    }
    if msg[8..12] != CHANNEL_VERSION.to_le_bytes() {
        return Err(ChannelError::BadOffer("version"));
    }
    if fds.len() != 1 {
        return Err(ChannelError::BadOffer("expected exactly one fd"));
    }
    let fd = fds
        .pop()
        .ok_or(ChannelError::BadOffer("expected exactly one fd"))?;
    let is_unix_stream = getsockopt(&fd, sockopt::SockType).ok() == Some(SockType::Stream)
        && nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd.as_raw_fd()).is_ok();
    if !is_unix_stream {
        return Err(ChannelError::BadOffer("the fd is not a Unix stream socket"));
    }
    Ok(UnixStream::from(fd))
}
