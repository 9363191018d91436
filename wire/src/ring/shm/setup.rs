//! The offer/attach handshake that sets a ring up over a connected Unix
//! stream socket: the creator sends a memfd and two eventfds with
//! `SCM_RIGHTS`, the attacher checks them and answers with an ack. The wire
//! format is documented on [`super`].

use super::{Role, SetupError, ShmConsumer, ShmMapping, ShmParker, ShmProducer};
use crate::ring::endpoint::{Consumer, Producer};
use crate::ring::layout::{Geometry, VERSION};
use crate::ring::spin::SpinConfig;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::sys::eventfd::EfdFlags;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const OFFER_MAGIC: &[u8; 8] = b"TERNROFR";
const ACK_MAGIC: &[u8; 8] = b"TERNRACK";
const OFFER_LEN: usize = 48;
const ACK_LEN: usize = 16;
/// How long the creator waits for the ack.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Room for more fds than expected, so surplus ones are received (and closed)
/// instead of truncating the control message.
const MAX_FDS: usize = 16;
/// Peer shut down its writing half; nix does not name this flag.
fn eventfd() -> Result<OwnedFd, Errno> {
    nix::sys::eventfd::EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(OwnedFd::from)
}

pub(super) struct Parts {
    mapping: ShmMapping,
    data: OwnedFd,
    space: OwnedFd,
}

impl Parts {
    /// The producer parks on `space` and wakes the consumer through `data`.
    pub(super) fn into_producer(self, sock: UnixStream, cfg: SpinConfig) -> ShmProducer {
        let parker = ShmParker::new(self.space, self.data, sock);
        Producer::new(self.mapping, parker, cfg)
    }

    /// The consumer parks on `data` and wakes the producer through `space`.
    pub(super) fn into_consumer(self, sock: UnixStream, cfg: SpinConfig) -> ShmConsumer {
        let parker = ShmParker::new(self.data, self.space, sock);
        Consumer::new(self.mapping, parker, cfg)
    }
}

pub(super) fn offer(
    sock: &mut UnixStream,
    geo: Geometry,
    attacher: Role,
) -> Result<Parts, SetupError> {
    let memfd = memfd_create(
        c"tern-ring",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let len = i64::try_from(geo.mapping_len()).map_err(|_| SetupError::BadOffer("too large"))?;
    nix::unistd::ftruncate(&memfd, len)?;
    fcntl(
        &memfd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    let mapping = ShmMapping::map(&memfd, geo)?;
    mapping.write_header();
    let data = eventfd()?;
    let space = eventfd()?;

    let mut msg = [0u8; OFFER_LEN];
    msg[0..8].copy_from_slice(OFFER_MAGIC);
    msg[8..12].copy_from_slice(&VERSION.to_le_bytes());
    msg[12..16].copy_from_slice(&(attacher as u32).to_le_bytes());
    msg[16..24].copy_from_slice(&(geo.capacity() as u64).to_le_bytes());
    msg[24..32].copy_from_slice(&(geo.max_record() as u64).to_le_bytes());
    let fds = [memfd.as_raw_fd(), data.as_raw_fd(), space.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&msg)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent < OFFER_LEN {
        sock.write_all(&msg[sent..])?;
    }

    let previous = sock.read_timeout()?;
    sock.set_read_timeout(Some(SETUP_TIMEOUT))?;
    let mut ack = [0u8; ACK_LEN];
    let read = sock.read_exact(&mut ack);
    sock.set_read_timeout(previous)?;
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(SetupError::Closed),
        other => other?,
    }
    if &ack[0..8] != ACK_MAGIC {
        return Err(SetupError::BadOffer("bad ack"));
    }
    let status = u32::from_le_bytes([ack[8], ack[9], ack[10], ack[11]]);
    if status != 0 {
        return Err(SetupError::Rejected(status));
    }
    Ok(Parts {
        mapping,
        data,
        space,
    })
}

fn fd_kind(fd: &OwnedFd) -> Option<String> {
    let link = nix::fcntl::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str()).ok()?;
    Some(link.to_string_lossy().into_owned())
}

pub(super) fn attach(sock: &mut UnixStream, geo: Geometry, me: Role) -> Result<Parts, SetupError> {
    let mut msg = [0u8; OFFER_LEN];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, mut fds) = {
        let mut iov = [IoSliceMut::new(&mut msg)];
        let r = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in r.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS just installed this fd in our
                    // table; taking ownership closes surplus ones on error.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (r.bytes, fds)
    };
    if got == 0 {
        return Err(SetupError::Closed);
    }
    if got < OFFER_LEN {
        sock.read_exact(&mut msg[got..])?;
    }
    let result = check_offer(&msg, geo, me, &mut fds);
    match &result {
        Ok(_) => tracing::debug!(
            role = ?me,
            capacity = geo.capacity(),
            max_record = geo.max_record(),
            "ring attached"
        ),
        Err(e) => tracing::warn!(role = ?me, error = %e, "ring offer refused"),
    }
    let status: u32 = if result.is_ok() { 0 } else { 1 };
    let mut ack = [0u8; ACK_LEN];
    ack[0..8].copy_from_slice(ACK_MAGIC);
    ack[8..12].copy_from_slice(&status.to_le_bytes());
    sock.write_all(&ack)?;
    result
}

fn check_offer(
    msg: &[u8; OFFER_LEN],
    geo: Geometry,
    me: Role,
    fds: &mut Vec<OwnedFd>,
) -> Result<Parts, SetupError> {
    let u32_at = |i: usize| u32::from_le_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&msg[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if &msg[0..8] != OFFER_MAGIC {
        return Err(SetupError::BadOffer("magic"));
    }
    if u32_at(8) != VERSION {
        return Err(SetupError::BadOffer("version"));
    }
    if u32_at(12) != me as u32 {
        return Err(SetupError::BadOffer("role"));
    }
    if u64_at(16) != geo.capacity() as u64 || u64_at(24) != geo.max_record() as u64 {
        return Err(SetupError::BadOffer("geometry differs from the agreed one"));
    }
    if fds.len() != 3 {
        return Err(SetupError::BadFds("expected exactly three fds"));
    }
    let space = fds.pop().ok_or(SetupError::BadFds("missing"))?;
    let data = fds.pop().ok_or(SetupError::BadFds("missing"))?;
    let memfd = fds.pop().ok_or(SetupError::BadFds("missing"))?;
    for efd in [&data, &space] {
        if fd_kind(efd).as_deref() != Some("anon_inode:[eventfd]") {
            return Err(SetupError::BadFds("wake-up fd is not an eventfd"));
        }
        // Our wake-ups must never block, whatever flags the peer chose.
        fcntl(efd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    let seals =
        fcntl(&memfd, FcntlArg::F_GET_SEALS).map_err(|_| SetupError::BadFds("not a memfd"))?;
    let needed = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
    if SealFlag::from_bits_truncate(seals) & needed != needed {
        return Err(SetupError::BadFds("memfd size is not sealed"));
    }
    let st = nix::sys::stat::fstat(&memfd)?;
    if u64::try_from(st.st_size).ok() != Some(geo.mapping_len() as u64) {
        return Err(SetupError::BadFds("memfd size differs from the geometry"));
    }
    let mapping = ShmMapping::map(&memfd, geo)?;
    if !mapping.header_matches() {
        return Err(SetupError::BadHeader);
    }
    Ok(Parts {
        mapping,
        data,
        space,
    })
}
