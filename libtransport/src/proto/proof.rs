//! The identity proof exchange of one connection, as a sans-IO state
//! machine.
//!
//! After the TLS handshake each side signs the session's TLS exporter (and
//! its session epoch) with its ML-DSA-65 key and sends the proof on its
//! first unidirectional stream, then finishes that stream; the other side
//! checks it against its own view of the exporter. A proof is only valid
//! for the session it was made in, so a proof recorded from another
//! connection does not verify (see [`crate::identity`]).
//!
//! [`ProofExchange`] holds what the driver would otherwise spread over
//! flags: the inbound proof's bounded buffer, whether the stream finished,
//! the deadline, the dialled peer the proof must name, and the one
//! outcome. The driver feeds it:
//!
//! 1. [`ProofExchange::start`] when the QUIC handshake completed: starts the
//!    deadline and returns our proof to write.
//! 2. [`ProofExchange::read_stream`] whenever the peer's proof stream is
//!    readable (or, without quinn, [`ProofExchange::handle_bytes`],
//!    [`ProofExchange::handle_finished`] and [`ProofExchange::handle_reset`]
//!    by hand).
//! 3. [`ProofExchange::poll_timeout`] / [`ProofExchange::handle_timeout`]:
//!    no valid proof by the deadline fails the exchange.
//! 4. [`ProofExchange::poll_verified`] after any of these: `Some` exactly
//!    once, the verified peer or why not.
//!
//! The first failure is final; later inputs change nothing. Nothing here
//! panics, and the inbound buffer never grows past `PROOF_LEN` bytes
//! whatever the peer sends.

use std::time::{Duration, Instant};

use crate::identity::{
    EXPORTER_LEN, Identity, IdentityError, PROOF_LEN, PeerId, Role, Verified, verify_proof,
};

/// Why an identity proof exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Our own proof could not be made (no exporter, signing failed).
    #[error("cannot build our identity proof: {0}")]
    CannotProve(#[source] IdentityError),
    /// The peer's proof stream carried more than a proof.
    #[error("peer's identity proof is longer than {PROOF_LEN} bytes")]
    Oversize,
    /// The peer reset its proof stream.
    #[error("peer reset its identity proof stream")]
    Reset,
    /// The proof is malformed or its signature does not verify for this
    /// session (forged, truncated, or recorded from another connection).
    #[error("peer's identity proof rejected: {0}")]
    Invalid(#[source] IdentityError),
    /// A valid proof, but of another peer than the one dialled.
    #[error("peer proved {actual}, not the peer dialled")]
    Mismatch {
        /// The PeerId the peer proved.
        actual: PeerId,
    },
    /// No valid proof arrived before the deadline.
    #[error("no identity proof before the deadline")]
    TimedOut,
}

/// One connection's identity proof exchange (see the module docs).
#[derive(Debug)]
pub struct ProofExchange {
    role: Role,
    expected: Option<PeerId>,
    deadline: Option<Instant>,
    inbound: Vec<u8>,
    finished: bool,
    /// Set once: the verified peer or the failure.
    outcome: Option<Result<Verified, ProofError>>,
    /// Whether `poll_verified` handed the outcome out.
    reported: bool,
}

impl ProofExchange {
    /// An exchange for our side `role`; a dialler passes the peer it
    /// dialled as `expected`, an acceptor `None`.
    #[must_use]
    pub fn new(role: Role, expected: Option<PeerId>) -> Self {
        Self {
            role,
            expected,
            deadline: None,
            inbound: Vec::new(),
            finished: false,
            outcome: None,
            reported: false,
        }
    }

    /// The QUIC handshake completed at `now`: the peer has `timeout` to
    /// prove itself. Returns our proof over `own_exporter` (the exporter for
    /// our role) and `epoch`, to send on our first unidirectional stream.
    pub fn start(
        &mut self,
        identity: &Identity,
        own_exporter: &[u8; EXPORTER_LEN],
        epoch: u64,
        timeout: Duration,
        now: Instant,
    ) -> Result<Vec<u8>, ProofError> {
        self.deadline = Some(now + timeout);
        identity
            .prove(self.role, own_exporter, epoch)
            .map_err(|e| self.fail(ProofError::CannotProve(e)))
    }

    /// Bytes to read from the peer's proof stream next: one more than a
    /// proof can hold, so an oversize stream is seen without buffering it.
    #[must_use]
    pub fn read_limit(&self) -> usize {
        (PROOF_LEN + 1).saturating_sub(self.inbound.len())
    }

    /// Bytes read from the peer's proof stream. More than a proof fails
    /// the exchange with [`ProofError::Oversize`].
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.outcome.is_some() || self.finished {
            return;
        }
        if self.inbound.len() + bytes.len() > PROOF_LEN {
            self.inbound = Vec::new();
            self.fail(ProofError::Oversize);
            return;
        }
        self.inbound.extend_from_slice(bytes);
    }

    /// Reads what `conn` holds of the peer's proof stream `id` into the
    /// exchange (at most [`read_limit`](Self::read_limit) at a time, so an
    /// oversize stream is cut without buffering it), noting its end or
    /// reset. Call when the stream is accepted and whenever it is readable;
    /// then [`poll_verified`](Self::poll_verified).
    pub fn read_stream(&mut self, conn: &mut quinn_proto::Connection, id: quinn_proto::StreamId) {
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        while !self.failed() {
            match chunks.next(self.read_limit()) {
                Ok(Some(chunk)) => self.handle_bytes(&chunk.bytes),
                Ok(None) => {
                    self.handle_finished();
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(_)) => {
                    self.handle_reset();
                    break;
                }
            }
        }
        // Whether quinn wants a transmit (flow-control credit) is seen by
        // the driver's next poll of the connection.
        let _ = chunks.finalize();
    }

    /// The peer finished its proof stream.
    pub fn handle_finished(&mut self) {
        self.finished = true;
    }

    /// The peer reset its proof stream.
    pub fn handle_reset(&mut self) {
        if self.outcome.is_none() {
            self.fail(ProofError::Reset);
        }
    }

    /// The exchange's outcome, once: `None` while undecided (the peer's
    /// proof stream has not finished, or [`start`](Self::start) has not
    /// run), then the verified peer or the failure, then `None` again.
    /// `peer_exporter` gives the session's exporter for the peer's role;
    /// it is called only to verify a finished proof, and `None` from it
    /// fails the exchange.
    pub fn poll_verified(
        &mut self,
        peer_exporter: impl FnOnce() -> Option<[u8; EXPORTER_LEN]>,
    ) -> Option<Result<Verified, ProofError>> {
        if self.reported {
            return None;
        }
        if self.outcome.is_none() {
            if !self.finished || self.deadline.is_none() {
                return None;
            }
            let r = match peer_exporter() {
                None => Err(ProofError::Invalid(IdentityError::Exporter)),
                Some(ex) => verify_proof(&self.inbound, peer(self.role), &ex)
                    .map_err(ProofError::Invalid)
                    .and_then(|v| match self.expected {
                        Some(e) if e != v.peer => Err(ProofError::Mismatch { actual: v.peer }),
                        _ => Ok(v),
                    }),
            };
            self.inbound = Vec::new();
            self.outcome = Some(r);
        }
        self.reported = true;
        self.outcome.clone()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run: the
    /// deadline, while the exchange is undecided.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.outcome.is_none())
    }

    /// Fails the exchange with [`ProofError::TimedOut`] if `now` is past
    /// the deadline and it is still undecided.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            self.fail(ProofError::TimedOut);
        }
    }

    /// The verified peer, once the exchange succeeded.
    #[must_use]
    pub fn verified(&self) -> Option<&Verified> {
        self.outcome.as_ref().and_then(|r| r.as_ref().ok())
    }

    fn fail(&mut self, e: ProofError) -> ProofError {
        if self.outcome.is_none() {
            self.outcome = Some(Err(e.clone()));
        }
        e
    }

    /// Whether the exchange failed (reported or not).
    #[must_use]
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Some(Err(_)))
    }
}

fn peer(r: Role) -> Role {
    match r {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests own the clock and unwrap
mod tests;
