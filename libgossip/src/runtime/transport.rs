//! [`TransportLink`]: the [`Link`] over libtransport, in-process.
//!
//! Frames travel as messages of [`Kind::PUBSUB`] (one unidirectional stream
//! per frame, the transport's own length prefix and size cap). Direct-message
//! frames go with [`Endpoint::send_with_receive_ack`] on [`Kind::DM`], so the
//! sender learns whether the recipient's DM queue admitted the frame; both
//! kinds arrive as [`LinkEvent::Frame`] and the runtime's decoder tells them
//! apart by their tag. Signatures are
//! checked with ML-DSA-65 through aws-lc-rs
//! ([`libtransport::identity::verify_signature`]) on tokio's blocking pool so
//! a batch never stalls the runtime task. Both crates define a peer as the
//! SHA-256 of its ML-DSA-65 public key, so the id maps byte for byte
//! ([`to_transport`], [`from_transport`]).

use super::link::{AckOutcome, BoxFuture, Link, LinkEvent, VerifyItem};
use crate::proto::{PeerId, SendOutcome, Signer, Verdict};
use bytes::Bytes;
use libtransport::proto::ack::{AckError, Delivered, Outcome};
use libtransport::{Endpoint, Event, Identity, Kind, KindConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// Events buffered between the transport and the runtime task. When full,
/// the pump waits, which back-pressures the transport's own bounded queue.
pub const LINK_EVENT_QUEUE: usize = 1024;

/// The libtransport id of a gossip peer (same bytes: both hash the key).
pub fn to_transport(p: PeerId) -> libtransport::PeerId {
    libtransport::PeerId(p.0)
}

/// The gossip id of a libtransport peer.
pub fn from_transport(p: libtransport::PeerId) -> PeerId {
    PeerId(p.0)
}

/// A libtransport [`Identity`] as the core's [`Signer`].
pub struct IdentitySigner {
    id: Identity,
    public: Bytes,
    /// Signatures that failed (aws-lc error); each yields an empty signature
    /// that every verifier rejects.
    pub failures: u64,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigner")
            .field("peer", &self.id.peer_id())
            .finish_non_exhaustive()
    }
}

impl IdentitySigner {
    /// Signs with `id`.
    pub fn new(id: Identity) -> Self {
        let public = Bytes::copy_from_slice(id.public_key());
        Self {
            id,
            public,
            failures: 0,
        }
    }

    /// A signer holding the same key as `id` (the endpoint owns the original).
    pub fn clone_of(id: &Identity) -> Result<Self, libtransport::identity::IdentityError> {
        Ok(Self::new(Identity::from_pkcs8(&id.to_pkcs8()?)?))
    }
}

impl Signer for IdentitySigner {
    fn public_key(&self) -> Bytes {
        self.public.clone()
    }

    fn sign(&mut self, msg: &[u8]) -> Bytes {
        match self.id.sign(msg) {
            Ok(s) => Bytes::from(s),
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error = %e, "signing failed");
                Bytes::new()
            }
        }
    }
}

/// [`Link`] over a libtransport [`Endpoint`].
pub struct TransportLink {
    ep: Endpoint,
    events: Mutex<mpsc::Receiver<LinkEvent>>,
    pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TransportLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportLink")
            .field("peer", &self.ep.peer_id())
            .finish_non_exhaustive()
    }
}

impl TransportLink {
    /// Takes over `ep`'s PUBSUB and DM kinds and its connection events.
    /// Must run inside a tokio runtime.
    pub fn new(ep: Endpoint) -> Result<Self, libtransport::Error> {
        let mut frames = ep.register(Kind::PUBSUB, KindConfig::default())?;
        // While the pump waits on a full event queue this kind's own bounded
        // queue fills, and receive-ACKed senders are told `Backpressured`.
        let mut dms = ep.register(Kind::DM, KindConfig::default())?;
        let (tx, rx) = mpsc::channel(LINK_EVENT_QUEUE);
        let ev = ep.clone();
        let pump = tokio::spawn(async move {
            loop {
                let out = tokio::select! {
                    m = frames.recv() => match m {
                        Some(m) => LinkEvent::Frame { from: from_transport(m.peer), data: m.data },
                        None => break,
                    },
                    m = dms.recv() => match m {
                        Some(m) => LinkEvent::Frame { from: from_transport(m.peer), data: m.data },
                        None => break,
                    },
                    e = ev.next_event() => match e {
                        Some(Event::Connected { peer, .. }) => {
                            LinkEvent::Up { peer: from_transport(peer), key: None }
                        }
                        Some(Event::Closed { peer, .. }) => {
                            LinkEvent::Down { peer: from_transport(peer) }
                        }
                        Some(_) => continue,
                        None => break,
                    },
                };
                if tx.send(out).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            ep,
            events: Mutex::new(rx),
            pump,
        })
    }

    /// The endpoint (to dial peers, read diagnostics).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Dials `peer` at `addr` (a bootstrap contact learned out of band).
    pub async fn connect(&self, addr: SocketAddr, peer: PeerId) -> Result<(), libtransport::Error> {
        self.ep.connect(addr, to_transport(peer)).await.map(|_| ())
    }
}

impl Drop for TransportLink {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// libtransport's receive-ACK result as the link's outcome. Refusals that a
/// later attempt may not meet again (busy reset, a duplicate in admission)
/// count as backpressure; answers that will not improve (conflict, garbage)
/// as a consumer that is not there for us.
fn ack_outcome(r: Result<Delivered, AckError>) -> AckOutcome {
    match r {
        Ok(_) => AckOutcome::Accepted,
        Err(AckError::Rejected { outcome, .. }) => match outcome {
            Outcome::Accepted => AckOutcome::Accepted,
            Outcome::Backpressured | Outcome::Duplicate => AckOutcome::Backpressured,
            Outcome::ConsumerGone | Outcome::Conflict => AckOutcome::ConsumerGone,
        },
        Err(AckError::TimedOut { .. }) => AckOutcome::TimedOut,
        Err(AckError::ConnectionLost { .. }) => AckOutcome::NotConnected,
        Err(AckError::Reset { .. }) => AckOutcome::Backpressured,
        Err(_) => AckOutcome::ConsumerGone,
    }
}

impl Link for TransportLink {
    fn send(&self, to: PeerId, frame: Bytes, timeout: Duration) -> BoxFuture<'static, SendOutcome> {
        let ep = self.ep.clone();
        Box::pin(async move {
            #[allow(clippy::disallowed_methods)] // a driver clock: send latency
            let start = Instant::now();
            match tokio::time::timeout(timeout, ep.send(&to_transport(to), Kind::PUBSUB, frame))
                .await
            {
                Ok(Ok(())) => SendOutcome::Delivered {
                    latency: start.elapsed(),
                },
                Ok(Err(e)) => {
                    tracing::debug!(peer = %to, error = %e, "send failed");
                    SendOutcome::Failed
                }
                // A send that ran out of time while the peer had no live
                // connection was waiting on a repair dial: the peer is
                // unreachable now (membership's business), not slow
                // (cooling's). Reporting it as a timeout would cool the peer
                // and stop the sends that would show it dead.
                Err(_) if ep.connection(&to_transport(to)).is_none() => {
                    tracing::debug!(peer = %to, "send timed out with no connection");
                    SendOutcome::Failed
                }
                Err(_) => SendOutcome::TimedOut,
            }
        })
    }

    fn send_acked(
        &self,
        to: PeerId,
        frame: Bytes,
        budget: Duration,
    ) -> BoxFuture<'static, AckOutcome> {
        let ep = self.ep.clone();
        Box::pin(async move {
            let r = ep
                .send_with_receive_ack(&to_transport(to), Kind::DM, frame, budget)
                .await;
            if let Err(e) = &r {
                tracing::debug!(peer = %to, error = %e, "receive-ACKed send failed");
            }
            ack_outcome(r)
        })
    }

    fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        self.ep
            .connection(&to_transport(*peer))
            .map(|c| c.stats().rtt)
    }

    fn next_event(&self) -> BoxFuture<'_, Option<LinkEvent>> {
        Box::pin(async move { self.events.lock().await.recv().await })
    }

    fn verify(&self, batch: Vec<VerifyItem>) -> BoxFuture<'static, Vec<Verdict>> {
        Box::pin(verify_in_process(batch))
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let ep = self.ep.clone();
        Box::pin(async move {
            if let Err(e) = ep.close().await {
                tracing::debug!(error = %e, "endpoint close");
            }
        })
    }
}

/// Checks a batch with ML-DSA-65 through aws-lc-rs on tokio's blocking
/// pool, so a batch never stalls the runtime task: [`TransportLink`]'s
/// verifier, and the fallback of links whose verifier is out of process.
pub async fn verify_in_process(batch: Vec<VerifyItem>) -> Vec<Verdict> {
    let n = batch.len();
    let job = tokio::task::spawn_blocking(move || {
        batch
            .iter()
            .map(|i| {
                if libtransport::identity::verify_signature(&i.key, &i.signed, &i.signature) {
                    Verdict::Valid
                } else {
                    Verdict::Invalid
                }
            })
            .collect::<Vec<_>>()
    });
    // A panicked verifier job rejects its whole batch.
    job.await.unwrap_or_else(|_| vec![Verdict::Invalid; n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(outcome: Outcome) -> Result<Delivered, AckError> {
        Err(AckError::Rejected {
            outcome,
            retry_after: None,
        })
    }

    /// D2: every receive-ACK result maps to the attempt outcome the DM
    /// engine falls back on; only an admission counts as accepted.
    #[test]
    fn ack_results_map_to_attempt_outcomes() {
        let ok = Ok(Delivered {
            attempts: 1,
            answered_by: 0,
            replayed: false,
            generation: 1,
            latency: Duration::from_millis(1),
        });
        use AckOutcome::*;
        let cases = [
            (ok, Accepted),
            (rejected(Outcome::Backpressured), Backpressured),
            (rejected(Outcome::Duplicate), Backpressured),
            (rejected(Outcome::ConsumerGone), ConsumerGone),
            (rejected(Outcome::Conflict), ConsumerGone),
            (
                Err(AckError::TimedOut {
                    attempts: 2,
                    generation: Some(1),
                }),
                TimedOut,
            ),
            (Err(AckError::ConnectionLost { attempts: 1 }), NotConnected),
            (Err(AckError::Reset { code: 0x10 }), Backpressured),
            (Err(AckError::WrongId), ConsumerGone),
        ];
        for (r, want) in cases {
            assert_eq!(ack_outcome(r), want, "{r:?}");
        }
    }
}
