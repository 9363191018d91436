//! Tokio (epoll) backend: readiness from tokio's reactor, the syscalls from
//! `quinn-udp` (`sendmsg` with `UDP_SEGMENT` for GSO, `recvmmsg` with
//! `UDP_GRO`, ECN and destination-address control messages).
//!
//! Readiness is cleared only when the syscall reports `WouldBlock` (tokio's
//! `try_io`), so a partially drained socket is never mistaken for an empty one.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use quinn_udp::{UdpSockRef, UdpSocketState};
use tokio::io::Interest;

use super::{Ecn, RecvMeta, Socket, Transmit};

/// A UDP socket driven by tokio and `quinn-udp`.
#[derive(Debug)]
pub struct UdpSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    metas: Vec<quinn_udp::RecvMeta>,
    gso: bool,
}

impl UdpSocket {
    /// Binds `addr` and configures it for QUIC (GRO, ECN, DF, large buffers).
    /// Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let std = std::net::UdpSocket::bind(addr)?;
        Self::from_std(std)
    }

    /// Wraps an already bound socket.
    pub fn from_std(sock: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        // Large kernel buffers absorb bursts between driver wake-ups; failure
        // (a capped rmem_max) only costs throughput, so it is not an error.
        let _ = state.set_send_buffer_size(UdpSockRef::from(&sock), 4 << 20);
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&sock), 4 << 20);
        sock.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(sock)?;
        Ok(Self {
            io,
            state,
            metas: Vec::new(),
            gso: true,
        })
    }

    /// Disables GSO (one datagram per transmit), for comparisons.
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }
}

fn ecn_out(e: Option<Ecn>) -> Option<quinn_udp::EcnCodepoint> {
    e.map(|e| match e {
        Ecn::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        Ecn::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        Ecn::Ce => quinn_udp::EcnCodepoint::Ce,
    })
}

fn ecn_in(e: Option<quinn_udp::EcnCodepoint>) -> Option<Ecn> {
    e.map(|e| match e {
        quinn_udp::EcnCodepoint::Ect0 => Ecn::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => Ecn::Ect1,
        quinn_udp::EcnCodepoint::Ce => Ecn::Ce,
    })
}

impl Socket for UdpSocket {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = bufs.len().min(meta.len());
        if self.metas.len() < n {
            self.metas.resize(n, quinn_udp::RecvMeta::default());
        }
        loop {
            if self.io.poll_recv_ready(cx).is_pending() {
                return Poll::Pending;
            }
            let (state, metas) = (&self.state, &mut self.metas[..n]);
            let res = self.io.try_io(Interest::READABLE, || {
                state.recv(UdpSockRef::from(&self.io), &mut bufs[..n], metas)
            });
            match res {
                Ok(got) => {
                    for (out, m) in meta.iter_mut().zip(&self.metas[..got]) {
                        *out = RecvMeta {
                            addr: m.addr,
                            len: m.len,
                            stride: m.stride,
                            ecn: ecn_in(m.ecn),
                            dst_ip: m.dst_ip,
                        };
                    }
                    return Poll::Ready(Ok(got));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, t: &Transmit<'_>) -> Poll<io::Result<()>> {
        let tx = quinn_udp::Transmit {
            destination: t.destination,
            ecn: ecn_out(t.ecn),
            contents: t.contents,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        loop {
            if self.io.poll_send_ready(cx).is_pending() {
                return Poll::Pending;
            }
            let state = &self.state;
            let res = self.io.try_io(Interest::WRITABLE, || {
                state.try_send(UdpSockRef::from(&self.io), &tx)
            });
            match res {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        if self.gso {
            self.state.max_gso_segments()
        } else {
            1
        }
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn backend(&self) -> &'static str {
        "udp"
    }
}
