//! Helpers shared by the `mem_*` tests: endpoints on the simulated network,
//! event tallies, and a raw `quinn-proto` client that speaks TLS but lets a
//! test write whatever it likes where the identity proof belongs.
#![allow(dead_code)] // each test crate uses a subset
// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::poll_fn;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libtransport::io::mem::{LinkConfig, MemNetwork, MemSocket, NetworkConfig};
use libtransport::io::{self, RecvMeta, Socket, Transmit};
use libtransport::{Config, Endpoint, Event, Identity, PeerId};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn network(seed: u64) -> MemNetwork {
    MemNetwork::new(seed, NetworkConfig::default())
}

/// The two hosts every two-party test uses, `10.0.0.1:1000` and
/// `10.0.0.2:2000`, joined both ways by `link`.
pub fn linked_hosts(net: &MemNetwork, link: LinkConfig) -> (SocketAddr, SocketAddr) {
    let (a_at, b_at) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    net.with(|n| n.set_link_both(a_at, b_at, link));
    (a_at, b_at)
}

/// An endpoint with `id` on a socket bound at `at`.
pub fn endpoint(net: &MemNetwork, at: SocketAddr, id: Identity, cfg: Config) -> Endpoint {
    let sock = net.bind(at).unwrap();
    Endpoint::with_socket(Box::new(sock), id, cfg).unwrap()
}

/// An endpoint with a fresh identity and the default config at `at`.
pub fn fresh_endpoint(net: &MemNetwork, at: &str) -> Endpoint {
    endpoint(
        net,
        addr(at),
        Identity::generate().unwrap(),
        Config::default(),
    )
}

pub fn endpoint_on(sock: MemSocket, id: Identity, cfg: Config) -> Endpoint {
    Endpoint::with_socket(Box::new(sock), id, cfg).unwrap()
}

/// Lifecycle events seen so far, by variant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub connected: Vec<(PeerId, u64)>,
    pub replaced: Vec<(PeerId, u64, u64)>,
    pub closed: Vec<(PeerId, u64, libtransport::CloseReason)>,
}

pub fn drain_events(ep: &Endpoint, t: &mut Tally) {
    while let Some(e) = ep.try_next_event() {
        match e {
            Event::Connected {
                peer, generation, ..
            } => t.connected.push((peer, generation)),
            Event::Replaced { peer, old, new } => t.replaced.push((peer, old, new)),
            Event::Closed {
                peer,
                generation,
                reason,
            } => t.closed.push((peer, generation, reason)),
            _ => {}
        }
    }
}

/// A bare QUIC client (quinn-proto over a mem socket) with libtransport's
/// TLS parameters but none of its identity logic.
pub struct RawClient {
    pub sock: MemSocket,
    endpoint: quinn_proto::Endpoint,
    pub conn: quinn_proto::Connection,
    ch: quinn_proto::ConnectionHandle,
    pub connected: bool,
    pub lost: Option<quinn_proto::ConnectionError>,
}

impl RawClient {
    pub fn dial(sock: MemSocket, to: SocketAddr) -> Self {
        let provider = libtransport::tls::provider();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth();
        tls.alpn_protocols = vec![libtransport::tls::ALPN.to_vec()];
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let cfg = quinn_proto::ClientConfig::new(Arc::new(crypto));
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            true,
            None,
        );
        let (ch, conn) = endpoint
            .connect(io::now(), cfg, to, libtransport::tls::SERVER_NAME)
            .unwrap();
        Self {
            sock,
            endpoint,
            conn,
            ch,
            connected: false,
            lost: None,
        }
    }

    /// The TLS exporter for `context`, as libtransport computes it.
    pub fn exporter(&self, context: &[u8]) -> [u8; libtransport::identity::EXPORTER_LEN] {
        let mut ex = [0u8; libtransport::identity::EXPORTER_LEN];
        self.conn
            .crypto_session()
            .export_keying_material(&mut ex, libtransport::identity::EXPORTER_LABEL, context)
            .unwrap();
        ex
    }

    /// Opens a unidirectional stream, writes `data` and finishes it.
    pub fn send_uni(&mut self, data: &[u8]) {
        let id = self.conn.streams().open(quinn_proto::Dir::Uni).unwrap();
        let mut s = self.conn.send_stream(id);
        let n = s.write(data).unwrap();
        assert_eq!(n, data.len(), "raw stream write must fit the window");
        s.finish().unwrap();
    }

    async fn flush(&mut self) {
        let mut buf = Vec::new();
        while let Some(t) = self.conn.poll_transmit(io::now(), 1, &mut buf) {
            send_transmit(&mut self.sock, &t, &buf).await;
            buf.clear();
        }
    }

    fn process_events(&mut self) {
        while let Some(ev) = self.conn.poll_endpoint_events() {
            if let Some(cev) = self.endpoint.handle_event(self.ch, ev) {
                self.conn.handle_event(cev);
            }
        }
        while let Some(ev) = self.conn.poll() {
            match ev {
                quinn_proto::Event::Connected => self.connected = true,
                quinn_proto::Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
    }

    /// Drives the connection for `d` of (virtual) time or until `stop`
    /// holds.
    pub async fn drive(&mut self, d: Duration, stop: impl Fn(&Self) -> bool) {
        let end = tokio::time::Instant::now() + d;
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            self.process_events();
            self.flush().await;
            if stop(self) || tokio::time::Instant::now() >= end {
                return;
            }
            let timeout = self.conn.poll_timeout().map(tokio::time::Instant::from_std);
            let wake = timeout.map_or(end, |t| t.min(end));
            let mut meta = [RecvMeta::empty(); 1];
            let got = {
                let mut bufs = [IoSliceMut::new(&mut rbuf)];
                let recv = poll_fn(|cx| self.sock.poll_recv(cx, &mut bufs, &mut meta));
                tokio::time::timeout_at(wake, recv).await
            };
            let now = io::now();
            match got {
                Ok(Ok(n)) if n > 0 => {
                    let m = meta[0];
                    for seg in rbuf[..m.len].chunks(m.stride.max(1)) {
                        let data = bytes::BytesMut::from(seg);
                        let mut resp = Vec::new();
                        match self
                            .endpoint
                            .handle(now, m.addr, None, None, data, &mut resp)
                        {
                            Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) => {
                                self.conn.handle_event(ev);
                            }
                            Some(quinn_proto::DatagramEvent::Response(t)) => {
                                send_transmit(&mut self.sock, &t, &resp).await;
                            }
                            _ => {}
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => self.conn.handle_timeout(now),
            }
        }
    }
}

/// Sends quinn-proto's transmit `t`, whose bytes start `buf`.
async fn send_transmit(sock: &mut MemSocket, t: &quinn_proto::Transmit, buf: &[u8]) {
    let tx = Transmit {
        destination: t.destination,
        ecn: None,
        contents: &buf[..t.size],
        segment_size: t.segment_size,
        src_ip: None,
    };
    poll_fn(|cx| sock.poll_send(cx, &tx)).await.unwrap();
}

/// Accepts any server certificate (as libtransport's own client does; who
/// the server is gets settled by the identity proof).
#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = libtransport::tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(m, c, d, &algs)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = libtransport::tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(m, c, d, &algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        libtransport::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
