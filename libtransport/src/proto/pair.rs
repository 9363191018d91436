//! A two-endpoint test harness over real `quinn-proto` state: datagrams
//! move between a client and a server with a fixed one-way delay on a
//! virtual clock that jumps to the next timer, as quinn-proto's own test
//! `Pair` does. No sockets, no tokio, no wall clock: every run is the same.
//!
//! On top of the QUIC handshake each side runs the identity proof exchange
//! ([`ProofExchange`]) over real TLS exporters and real streams, reading the
//! peer's proof with the same [`ProofExchange::read_stream`] the endpoint
//! driver uses. A side can misbehave ([`Proof`]) to test the exchange's
//! refusals end to end.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event, ServerConfig,
    StreamEvent, StreamId,
};

use super::proof::{ProofError, ProofExchange};
use crate::identity::{EXPORTER_LABEL, EXPORTER_LEN, Identity, PeerId, Role, Verified};

/// What a side sends as its identity proof.
#[derive(Debug, Clone)]
pub(crate) enum Proof {
    /// Its own proof for this session.
    Honest,
    /// Nothing: the proof stream is never opened.
    Withhold,
    /// Its own proof with one signature bit flipped.
    Forge,
    /// These bytes (e.g. a proof recorded from another session).
    Replay(Vec<u8>),
}

pub(crate) struct Side {
    addr: SocketAddr,
    endpoint: quinn_proto::Endpoint,
    conn: Option<(ConnectionHandle, quinn_proto::Connection)>,
    role: Role,
    identity: Identity,
    behaviour: Proof,
    /// The exchange, created with the connection.
    pub(crate) proof: ProofExchange,
    proof_in: Option<StreamId>,
    /// What this side sent as its proof, for replays.
    pub(crate) sent: Option<Vec<u8>>,
    /// The exchange's outcome, once polled.
    pub(crate) outcome: Option<Result<Verified, ProofError>>,
    inbox: VecDeque<(Instant, SocketAddr, BytesMut)>,
}

/// Client and server over one virtual link.
pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) delay: Duration,
    pub(crate) client: Side,
    pub(crate) server: Side,
}

const IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);
const EPOCH: u64 = 42;

impl Side {
    fn new(port: u16, role: Role, identity: Identity, behaviour: Proof, seed: u8) -> Self {
        let server = match role {
            Role::Server => {
                let (s, _) = crate::tls::configs().expect("TLS configs");
                Some(Arc::new(ServerConfig::with_crypto(s)))
            }
            Role::Client => None,
        };
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(EndpointConfig::default()),
            server,
            true,
            Some([seed; 32]),
        );
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            endpoint,
            conn: None,
            role,
            identity,
            behaviour,
            proof: ProofExchange::new(role, None),
            proof_in: None,
            sent: None,
            outcome: None,
            inbox: VecDeque::new(),
        }
    }

    fn exporter(&self, role: Role) -> Option<[u8; EXPORTER_LEN]> {
        let (_, c) = self.conn.as_ref()?;
        let mut ex = [0u8; EXPORTER_LEN];
        c.crypto_session()
            .export_keying_material(&mut ex, EXPORTER_LABEL, role.context())
            .ok()?;
        Some(ex)
    }

    /// The handshake is done: start the exchange and send the proof.
    fn on_connected(&mut self, now: Instant) {
        let Some(own) = self.exporter(self.role) else {
            return;
        };
        let proof = self
            .proof
            .start(&self.identity, &own, EPOCH, IDENTITY_TIMEOUT, now)
            .expect("our proof");
        let bytes = match &self.behaviour {
            Proof::Honest => proof,
            Proof::Withhold => return,
            Proof::Forge => {
                let mut p = proof;
                if let Some(b) = p.last_mut() {
                    *b ^= 1;
                }
                p
            }
            Proof::Replay(b) => b.clone(),
        };
        self.sent = Some(bytes.clone());
        let Some((_, c)) = self.conn.as_mut() else {
            return;
        };
        let id = c.streams().open(Dir::Uni).expect("a uni stream");
        let mut chunks = [Bytes::from(bytes)];
        let mut s = c.send_stream(id);
        s.write_chunks(&mut chunks).expect("proof fits the window");
        s.finish().expect("finish the proof stream");
    }

    fn on_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Connected => self.on_connected(now),
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                let Some((_, c)) = self.conn.as_mut() else {
                    return;
                };
                if self.proof_in.is_none()
                    && let Some(id) = c.streams().accept(Dir::Uni)
                {
                    self.proof_in = Some(id);
                    self.proof.read_stream(c, id);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) if Some(id) == self.proof_in => {
                if let Some((_, c)) = self.conn.as_mut() {
                    self.proof.read_stream(c, id);
                }
            }
            _ => {}
        }
        self.poll_outcome();
    }

    fn poll_outcome(&mut self) {
        let peer = match self.role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let ex = self.exporter(peer);
        if let Some(r) = self.proof.poll_verified(|| ex) {
            self.outcome = Some(r);
        }
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        let quic = self.conn.as_mut().and_then(|(_, c)| c.poll_timeout());
        [
            quic,
            self.proof.poll_timeout(),
            self.inbox.front().map(|i| i.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Pair {
    /// A client (`client_behaviour`) dialling a server (`server_behaviour`),
    /// the client expecting `expected` (the server's own id by default).
    pub(crate) fn new(client: (Identity, Proof), server: (Identity, Proof)) -> Self {
        #[allow(clippy::disallowed_methods)] // the harness's virtual clock starts anywhere
        let now = Instant::now();
        Self {
            now,
            delay: Duration::from_millis(10),
            client: Side::new(4433, Role::Client, client.0, client.1, 1),
            server: Side::new(4434, Role::Server, server.0, server.1, 2),
        }
    }

    /// Starts the client's dial; the client's exchange expects `expected`.
    pub(crate) fn connect(&mut self, expected: Option<PeerId>) {
        let (_, c) = crate::tls::configs().expect("TLS configs");
        let cfg = ClientConfig::new(c);
        let (ch, conn) = self
            .client
            .endpoint
            .connect(self.now, cfg, self.server.addr, crate::tls::SERVER_NAME)
            .expect("connect");
        self.client.conn = Some((ch, conn));
        self.client.proof = ProofExchange::new(Role::Client, expected);
    }

    /// Runs until both sides have an outcome or nothing is left to do
    /// before `limit` of virtual time.
    pub(crate) fn drive(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            self.step();
            if self.client.outcome.is_some() && self.server.outcome.is_some() {
                return;
            }
            let next = [self.client.next_timeout(), self.server.next_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => return,
            }
        }
    }

    /// One pass: timers, received datagrams, events, transmits.
    fn step(&mut self) {
        let now = self.now;
        for side in [&mut self.client, &mut self.server] {
            side.proof.handle_timeout(now);
            side.poll_outcome();
            if let Some((_, c)) = side.conn.as_mut()
                && c.poll_timeout().is_some_and(|t| t <= now)
            {
                c.handle_timeout(now);
            }
            receive(side, now);
            while let Some(e) = side.conn.as_mut().and_then(|(_, c)| c.poll()) {
                side.on_event(e, now);
            }
        }
        let delay = self.delay;
        let (c, s) = (&mut self.client, &mut self.server);
        transmit(c, s, now, delay);
        transmit(s, c, now, delay);
    }
}

/// Feeds `side` every datagram that has arrived by `now`.
fn receive(side: &mut Side, now: Instant) {
    while side.inbox.front().is_some_and(|d| d.0 <= now) {
        let Some((_, from, data)) = side.inbox.pop_front() else {
            break;
        };
        let mut buf = Vec::new();
        match side.endpoint.handle(now, from, None, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(_, ev)) => {
                if let Some((_, c)) = side.conn.as_mut() {
                    c.handle_event(ev);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let mut buf = Vec::new();
                if let Ok((ch, conn)) = side.endpoint.accept(incoming, now, &mut buf, None) {
                    side.conn = Some((ch, conn));
                }
            }
            Some(DatagramEvent::Response(_)) | None => {}
        }
    }
}

/// Moves `from`'s pending datagrams into `to`'s inbox, `delay` later.
fn transmit(from: &mut Side, to: &mut Side, now: Instant, delay: Duration) {
    let Some((ch, c)) = from.conn.as_mut() else {
        return;
    };
    while let Some(ev) = c.poll_endpoint_events() {
        if let Some(back) = from.endpoint.handle_event(*ch, ev) {
            c.handle_event(back);
        }
    }
    let mut buf = Vec::new();
    while let Some(t) = c.poll_transmit(now, 1, &mut buf) {
        to.inbox
            .push_back((now + delay, from.addr, BytesMut::from(&buf[..t.size])));
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::generate().unwrap()
    }

    /// T3: two honest sides prove each other over a real QUIC session; the
    /// client's exchange names the server it dialled and vice versa.
    #[test]
    fn honest_proofs_are_accepted_both_ways() {
        let (a, b) = (id(), id());
        let (pa, pb) = (a.peer_id(), b.peer_id());
        let mut p = Pair::new((a, Proof::Honest), (b, Proof::Honest));
        p.connect(Some(pb));
        p.drive(Duration::from_secs(10));
        let c = p.client.outcome.clone().expect("client decided").unwrap();
        let s = p.server.outcome.clone().expect("server decided").unwrap();
        assert_eq!((c.peer, c.epoch), (pb, EPOCH));
        assert_eq!(s.peer, pa);
    }

    /// T3: a flipped signature bit is refused by the server; the honest
    /// client still verifies the server.
    #[test]
    fn a_forged_proof_is_refused() {
        let (a, b) = (id(), id());
        let pb = b.peer_id();
        let mut p = Pair::new((a, Proof::Forge), (b, Proof::Honest));
        p.connect(Some(pb));
        p.drive(Duration::from_secs(10));
        assert!(matches!(
            p.server.outcome,
            Some(Err(ProofError::Invalid(_)))
        ));
        assert_eq!(p.client.outcome.clone().unwrap().unwrap().peer, pb);
    }

    /// T3: a proof recorded from one session and replayed in another, by
    /// the same key, is refused: it signs the first session's exporter.
    #[test]
    fn a_proof_replayed_into_a_new_session_is_refused() {
        let a = id();
        let pkcs8 = a.to_pkcs8().unwrap();
        let (b1, b2) = (id(), id());
        let mut first = Pair::new((a, Proof::Honest), (b1, Proof::Honest));
        first.connect(None);
        first.drive(Duration::from_secs(10));
        assert!(matches!(first.server.outcome, Some(Ok(_))));
        let recorded = first.client.sent.clone().expect("the client sent a proof");

        let again = Identity::from_pkcs8(&pkcs8).unwrap();
        let mut second = Pair::new((again, Proof::Replay(recorded)), (b2, Proof::Honest));
        second.connect(None);
        second.drive(Duration::from_secs(10));
        assert_eq!(
            second.server.outcome,
            Some(Err(ProofError::Invalid(
                crate::identity::IdentityError::BadSignature
            )))
        );
    }

    /// T3: a side that never sends its proof is refused at the deadline,
    /// measured on the virtual clock from the end of the handshake.
    #[test]
    fn a_missing_proof_times_out() {
        let (a, b) = (id(), id());
        let mut p = Pair::new((a, Proof::Withhold), (b, Proof::Honest));
        let start = p.now;
        p.connect(None);
        p.drive(Duration::from_secs(30));
        assert_eq!(p.server.outcome, Some(Err(ProofError::TimedOut)));
        let waited = p.now - start;
        assert!(
            waited >= IDENTITY_TIMEOUT && waited < IDENTITY_TIMEOUT + Duration::from_secs(1),
            "decided after {waited:?}"
        );
    }

    /// T3: the server's proof names another key than the one dialled.
    #[test]
    fn a_server_of_another_key_is_a_mismatch() {
        let (a, b) = (id(), id());
        let wanted = id().peer_id();
        let pb = b.peer_id();
        let mut p = Pair::new((a, Proof::Honest), (b, Proof::Honest));
        p.connect(Some(wanted));
        p.drive(Duration::from_secs(10));
        assert_eq!(
            p.client.outcome,
            Some(Err(ProofError::Mismatch { actual: pb }))
        );
    }
}
