//! The offer/attach handshake that sets a ring up over a connected Unix
//! stream socket: the creator sends a memfd and two eventfds with
//! `SCM_RIGHTS`, the attacher checks them and answers with an ack. The wire
//! format is documented on [`super`].
//!
//! Every step runs against one [`Deadline`] for the whole handshake: socket
//! I/O is non-blocking (`MSG_DONTWAIT`, so the socket's own flags and
//! timeouts, shared with its other handles, are left alone) and waits are
//! `poll` calls bounded by what is left of the deadline.
//!
//! The attacher receives with a control buffer sized for `SCM_MAX_FD`
//! descriptors, the most one message can carry, takes ownership of every
//! descriptor that arrived before looking at anything else, and drops them
//! all on any refusal, so a hostile offer cannot leave descriptors behind.

use super::{Refusal, Role, SetupError, ShmConsumer, ShmMapping, ShmParker, ShmProducer};
use crate::ring::endpoint::{Consumer, Producer};
use crate::ring::layout::{Geometry, VERSION};
use crate::ring::spin::SpinConfig;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EfdFlags;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, recv, send, sendmsg};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const OFFER_MAGIC: &[u8; 8] = b"TERNROFR";
const ACK_MAGIC: &[u8; 8] = b"TERNRACK";
const OFFER_LEN: usize = 48;
const ACK_LEN: usize = 16;
/// Descriptors an honest offer carries: memfd, data eventfd, space eventfd.
const OFFER_FDS: usize = 3;
/// The most descriptors one message can carry (Linux `SCM_MAX_FD`). A control
/// buffer this large receives every descriptor a peer can attach to one
/// `sendmsg`, so surplus ones are owned (and closed) by us rather than
/// silently dropped or, worse, installed behind our back.
pub(super) const SCM_MAX_FD: usize = 253;
/// Bytes of a control buffer for [`SCM_MAX_FD`] descriptors.
// SAFETY: `CMSG_SPACE` is pure arithmetic on its argument.
const CMSG_BUF_LEN: usize =
    unsafe { libc::CMSG_SPACE((SCM_MAX_FD * size_of::<RawFd>()) as libc::c_uint) } as usize;

/// A control-message buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_LEN]);

/// One deadline for a whole handshake.
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    // Setup is a driver: it owns the clock that bounds a silent peer.
    #[allow(clippy::disallowed_methods)]
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            // A timeout too large for the clock is "a day", not a panic.
            at: now
                .checked_add(timeout)
                .or_else(|| now.checked_add(Duration::from_secs(86_400)))
                .unwrap_or(now),
            timeout,
        }
    }

    /// Waits until `sock` is ready for `events` or the deadline passes.
    #[allow(clippy::disallowed_methods)]
    fn wait(&self, sock: &UnixStream, events: PollFlags) -> Result<(), SetupError> {
        loop {
            let left = self.at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SetupError::Timeout {
                    after: self.timeout,
                });
            }
            // Round up so a wait never ends (and spins) just before the deadline.
            let ms = left.as_nanos().div_ceil(1_000_000);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(sock.as_fd(), events)];
            match poll(&mut fds, timeout) {
                // Ready, hung up or in error: the I/O call that follows tells which.
                Ok(n) if n > 0 => return Ok(()),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(SetupError::Os(e)),
            }
        }
    }
}

fn closed_or_os(e: Errno) -> SetupError {
    match e {
        Errno::EPIPE | Errno::ECONNRESET => SetupError::Closed,
        e => SetupError::Os(e),
    }
}

/// Sends `msg` with `fds` attached to its first byte.
fn send_all(
    sock: &UnixStream,
    msg: &[u8],
    fds: &[RawFd],
    deadline: &Deadline,
) -> Result<(), SetupError> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let mut sent = 0;
    while sent < msg.len() {
        let res = if sent == 0 && !fds.is_empty() {
            let cmsg = [ControlMessage::ScmRights(fds)];
            sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(msg)], &cmsg, flags, None)
        } else {
            send(sock.as_raw_fd(), &msg[sent..], flags)
        };
        match res {
            Ok(n) => sent += n,
            Err(Errno::EAGAIN) => deadline.wait(sock, PollFlags::POLLOUT)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(closed_or_os(e)),
        }
    }
    Ok(())
}

/// Receives exactly `buf.len()` bytes, without accepting descriptors (the
/// kernel drops any that come along, as no control buffer is given).
fn recv_exact(sock: &UnixStream, buf: &mut [u8], deadline: &Deadline) -> Result<(), SetupError> {
    let mut got = 0;
    while got < buf.len() {
        match recv(sock.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Err(SetupError::Closed),
            Ok(n) => got += n,
            Err(Errno::EAGAIN) => deadline.wait(sock, PollFlags::POLLIN)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(closed_or_os(e)),
        }
    }
    Ok(())
}

/// One non-blocking `recvmsg` into `buf`, appending every descriptor that
/// arrived to `fds`. Returns the bytes read and whether the control message
/// was truncated (`MSG_CTRUNC`).
fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<(usize, bool), Errno> {
    let mut cbuf = CmsgBuf([0; CMSG_BUF_LEN]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero `msghdr` is valid (null pointers, zero lengths).
    let mut mhdr: libc::msghdr = unsafe { std::mem::zeroed() };
    mhdr.msg_iov = &mut iov;
    mhdr.msg_iovlen = 1;
    mhdr.msg_control = cbuf.0.as_mut_ptr().cast();
    mhdr.msg_controllen = CMSG_BUF_LEN as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: `mhdr` points at `iov` (into `buf`) and `cbuf`, both live and
    // of the lengths given, for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mhdr, flags) };
    if n < 0 {
        return Err(Errno::last());
    }
    // Own every descriptor before anything else can fail. With MSG_CTRUNC the
    // kernel installed only those that fit (and closed the rest); the last
    // header's length says how many, and `CMSG_NXTHDR` stays inside the
    // `msg_controllen` bytes the kernel filled.
    let base = cbuf.0.as_ptr() as usize;
    let end = base + (mhdr.msg_controllen as usize).min(CMSG_BUF_LEN);
    // SAFETY: `mhdr` is the header the kernel just filled.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&mhdr) };
    while !c.is_null() {
        // SAFETY: `CMSG_FIRSTHDR`/`CMSG_NXTHDR` only return headers that lie
        // inside the filled part of `cbuf`, which is aligned for `cmsghdr`.
        let hdr = unsafe { c.read() };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: as above; the data follows the header.
            let data = unsafe { libc::CMSG_DATA(c) };
            // SAFETY: pure arithmetic.
            let head = unsafe { libc::CMSG_LEN(0) } as usize;
            let len = (hdr.cmsg_len as usize).saturating_sub(head);
            let room = end.saturating_sub(data as usize);
            for i in 0..len.min(room) / size_of::<RawFd>() {
                // SAFETY: inside the filled control data (bounded by `room`).
                let fd = unsafe {
                    data.add(i * size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned()
                };
                if fd >= 0 {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table
                    // and nothing else knows of it; owning it closes it on
                    // every path that does not keep it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // SAFETY: `c` is a header inside `mhdr`'s control data.
        c = unsafe { libc::CMSG_NXTHDR(&mhdr, c) };
    }
    Ok((n as usize, mhdr.msg_flags & libc::MSG_CTRUNC != 0))
}

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

/// What the handshake needs besides the socket and the roles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    pub(super) geo: Geometry,
    pub(super) timeout: Duration,
    pub(super) prefault: bool,
}

pub(super) fn offer(
    sock: &UnixStream,
    params: Params,
    attacher: Role,
) -> Result<Parts, SetupError> {
    let deadline = Deadline::new(params.timeout);
    let geo = params.geo;
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
    let mapping = ShmMapping::map(&memfd, geo, params.prefault)?;
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
    send_all(sock, &msg, &fds, &deadline)?;

    let mut ack = [0u8; ACK_LEN];
    recv_exact(sock, &mut ack, &deadline)?;
    if &ack[0..8] != ACK_MAGIC {
        return Err(SetupError::BadAck);
    }
    let status = u32::from_le_bytes([ack[8], ack[9], ack[10], ack[11]]);
    if let Some(why) = Refusal::from_status(status) {
        tracing::warn!(%why, status, "ring refused by the attacher");
        return Err(SetupError::Rejected(why));
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

/// Receives the offer's bytes and every descriptor sent with any part of it.
fn recv_offer(
    sock: &UnixStream,
    msg: &mut [u8; OFFER_LEN],
    deadline: &Deadline,
) -> Result<Vec<OwnedFd>, (SetupError, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut got = 0;
    while got < OFFER_LEN {
        match recv_with_fds(sock, &mut msg[got..], &mut fds) {
            Ok((_, true)) => {
                let err = SetupError::Truncated { fds: fds.len() };
                return Err((err, fds));
            }
            Ok((0, false)) if got == 0 => return Err((SetupError::Closed, fds)),
            Ok((0, false)) => return Err((SetupError::BadOffer("offer cut short"), fds)),
            Ok((n, false)) => got += n,
            Err(Errno::EAGAIN) => {
                if let Err(e) = deadline.wait(sock, PollFlags::POLLIN) {
                    return Err((e, fds));
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err((closed_or_os(e), fds)),
        }
    }
    Ok(fds)
}

pub(super) fn attach(sock: &UnixStream, params: Params, me: Role) -> Result<Parts, SetupError> {
    let deadline = Deadline::new(params.timeout);
    let mut msg = [0u8; OFFER_LEN];
    let result = match recv_offer(sock, &mut msg, &deadline) {
        Ok(fds) => check_offer(&msg, params, me, fds),
        // Nobody is there to read an answer.
        Err((e @ (SetupError::Closed | SetupError::Timeout { .. }), _)) => return Err(e),
        // `fds` are dropped (closed) here, before the refusal goes out.
        Err((e, fds)) => {
            drop(fds);
            Err(e)
        }
    };
    let status = match &result {
        Ok(_) => {
            tracing::debug!(
                role = ?me,
                capacity = params.geo.capacity(),
                max_record = params.geo.max_record(),
                "ring attached"
            );
            0
        }
        Err(e) => {
            tracing::warn!(role = ?me, error = %e, "ring offer refused");
            Refusal::of(e).status()
        }
    };
    let mut ack = [0u8; ACK_LEN];
    ack[0..8].copy_from_slice(ACK_MAGIC);
    ack[8..12].copy_from_slice(&status.to_le_bytes());
    let acked = send_all(sock, &ack, &[], &deadline);
    match (result, acked) {
        (Ok(parts), Ok(())) => Ok(parts),
        (Ok(_), Err(e)) => Err(e),
        // The refusal is the more useful error; the ack was best effort.
        (Err(e), ack) => {
            if let Err(ack) = ack {
                tracing::debug!(error = %ack, "refusal ack not delivered");
            }
            Err(e)
        }
    }
}

/// Checks an offer; takes the descriptors so that every one not kept in the
/// returned ring is closed when this returns.
fn check_offer(
    msg: &[u8; OFFER_LEN],
    params: Params,
    me: Role,
    mut fds: Vec<OwnedFd>,
) -> Result<Parts, SetupError> {
    let geo = params.geo;
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
    if fds.is_empty() {
        return Err(SetupError::BadFds("no fds came with the offer"));
    }
    if fds.len() != OFFER_FDS {
        return Err(SetupError::FdCount { fds: fds.len() });
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
    let mapping = ShmMapping::map(&memfd, geo, params.prefault)?;
    if !mapping.header_matches() {
        return Err(SetupError::BadHeader);
    }
    Ok(Parts {
        mapping,
        data,
        space,
    })
}
