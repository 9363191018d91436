//! Socket addresses, socket options and control messages for the io_uring
//! backend: the few `libc` calls that have no safe wrapper.
//!
//! Control messages are laid out and walked with the `CMSG_*` functions over
//! a buffer that the caller owns and keeps alive while the kernel uses it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use libc::{c_int, c_void, msghdr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// `SOL_UDP` option: send several datagrams of this size from one buffer.
pub(super) const UDP_SEGMENT: c_int = 103;
/// `SOL_UDP` option: coalesce received datagrams, reporting their size.
pub(super) const UDP_GRO: c_int = 104;

/// Control-buffer capacity (in `u64`s, for alignment): room for a segment
/// size and a TOS/TCLASS on send, GRO + TOS/TCLASS (+ slack) on receive.
pub(super) const CONTROL_WORDS: usize = 16;

/// Sets an integer socket option.
pub(super) fn set_int(fd: &impl AsRawFd, level: c_int, name: c_int, v: c_int) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed; the kernel
    // only reads it. An invalid fd or option is reported through errno.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast::<c_void>(),
            size_of::<c_int>() as socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `addr` into `storage`, returning the length to put in `msg_namelen`.
/// IPv4 destinations on an IPv6 socket are written as v4-mapped addresses.
pub(super) fn write_addr(
    storage: &mut sockaddr_storage,
    addr: SocketAddr,
    v6_socket: bool,
) -> socklen_t {
    let addr = match addr {
        SocketAddr::V4(a) if v6_socket => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        a => a,
    };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for
            // sockaddr_in (that is its purpose); all-zero is a valid value.
            let sin = unsafe { &mut *(storage as *mut sockaddr_storage).cast::<sockaddr_in>() };
            *sin = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            size_of::<sockaddr_in>() as socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(storage as *mut sockaddr_storage).cast::<sockaddr_in6>() };
            *sin6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<sockaddr_in6>() as socklen_t
        }
    }
}

/// Reads the source address the kernel wrote; v4-mapped IPv6 is unmapped so
/// it compares equal to the address the peer was dialled at.
pub(super) fn read_addr(storage: &sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    match c_int::from(storage.ss_family) {
        libc::AF_INET if len as usize >= size_of::<sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which
            // fits and is aligned inside sockaddr_storage.
            let sin = unsafe { &*(storage as *const sockaddr_storage).cast::<sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const sockaddr_storage).cast::<sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Appends control messages for a send: `UDP_SEGMENT` (when `segment` is
/// set) and the ECN bits as `IP_TOS` (IPv4 destinations, including
/// v4-mapped ones, which the kernel sends through its IPv4 path) or
/// `IPV6_TCLASS`. Points `hdr.msg_control` at `control` and sets its length.
pub(super) fn write_send_cmsgs(
    hdr: &mut msghdr,
    control: &mut [u64; CONTROL_WORDS],
    segment: Option<u16>,
    ecn: Option<u8>,
    v4_dest: bool,
) {
    *control = [0; CONTROL_WORDS];
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = size_of::<[u64; CONTROL_WORDS]>();
    let mut used = 0usize;
    // SAFETY: msg_control/msg_controllen describe `control`, which is large
    // enough for the two small messages written here (checked by the
    // null tests of CMSG_FIRSTHDR/CMSG_NXTHDR), and aligned for cmsghdr.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        if let Some(seg) = segment
            && !cmsg.is_null()
        {
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), seg);
            used += libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
        if let Some(bits) = ecn
            && !cmsg.is_null()
        {
            let (level, ty) = if v4_dest {
                (libc::IPPROTO_IP, libc::IP_TOS)
            } else {
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
            };
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = ty;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), c_int::from(bits));
            used += libc::CMSG_SPACE(size_of::<c_int>() as u32) as usize;
        }
    }
    hdr.msg_controllen = used;
    if used == 0 {
        hdr.msg_control = std::ptr::null_mut();
    }
}

/// What the receive control messages said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RecvInfo {
    /// GRO segment size (`UDP_GRO`), when the kernel coalesced.
    pub segment: Option<usize>,
    /// ECN bits of the TOS / traffic class byte.
    pub ecn: u8,
}

/// Walks the control messages the kernel wrote into `hdr.msg_control`.
pub(super) fn read_recv_cmsgs(hdr: &msghdr) -> RecvInfo {
    let mut info = RecvInfo::default();
    if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
        return info;
    }
    // SAFETY: after a completed recvmsg, msg_control/msg_controllen describe
    // the initialised part of our control buffer; the CMSG_* walk stays in it
    // and data is read unaligned with the size each type defines.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::SOL_UDP, UDP_GRO) => {
                    let seg = std::ptr::read_unaligned(data.cast::<c_int>());
                    info.segment = usize::try_from(seg).ok().filter(|&s| s > 0);
                }
                // IPv4 reports the TOS as one byte.
                (libc::IPPROTO_IP, libc::IP_TOS) => info.ecn = *data & 0b11,
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    info.ecn = (std::ptr::read_unaligned(data.cast::<c_int>()) & 0b11) as u8;
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    info
}

/// Creates a non-blocking eventfd for completion notifications.
pub(super) fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall; on success we take sole ownership of the fd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Reads (resets) an eventfd counter. `Ok(false)` when it was already zero.
pub(super) fn drain_eventfd(fd: RawFd) -> io::Result<bool> {
    let mut v = 0u64;
    // SAFETY: reads exactly 8 bytes into `v`, which lives across the call.
    let n = unsafe { libc::read(fd, (&raw mut v).cast::<c_void>(), size_of::<u64>()) };
    if n == size_of::<u64>() as isize {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_v4_is_mapped_on_v6_sockets() {
        // SAFETY: all-zero sockaddr_storage is valid.
        let mut st: sockaddr_storage = unsafe { zeroed() };
        for (a, v6) in [
            ("127.0.0.1:4433", false),
            ("[::1]:4433", true),
            ("127.0.0.1:9", true),
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let len = write_addr(&mut st, a, v6);
            assert_eq!(read_addr(&st, len), Some(a));
            if v6 {
                assert_eq!(c_int::from(st.ss_family), libc::AF_INET6);
            }
        }
    }

    #[test]
    fn send_cmsgs_parse_back() {
        // SAFETY: all-zero msghdr is valid (no buffers attached).
        let mut hdr: msghdr = unsafe { zeroed() };
        let mut control = [0u64; CONTROL_WORDS];
        write_send_cmsgs(&mut hdr, &mut control, Some(1200), Some(0b10), true);
        assert!(hdr.msg_controllen > 0);
        // Walk what we wrote: the segment comes back as a u16 (not the GRO
        // int), so check the raw layout through the same walker types.
        // SAFETY: hdr describes `control` as filled above.
        let (first_level, first_type) = unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            ((*c).cmsg_level, (*c).cmsg_type)
        };
        assert_eq!((first_level, first_type), (libc::SOL_UDP, UDP_SEGMENT));
        write_send_cmsgs(&mut hdr, &mut control, None, None, false);
        assert_eq!(hdr.msg_controllen, 0);
        assert!(hdr.msg_control.is_null());
        assert_eq!(read_recv_cmsgs(&hdr), RecvInfo::default());
    }
}
