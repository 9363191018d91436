//! Receive-ACK, sending side of the driver glue: runs one sans-IO
//! [`AckSend`] per [`Endpoint::send_with_receive_ack`] call and executes its
//! steps.
//!
//! * Each attempt is one bidirectional stream of kind `ACK`: the request
//!   (header, payload, FIN) out, the 23-byte response read back on the same
//!   stream. Attempts run as tasks owned by the call (aborted when it ends).
//! * The first attempt's timeout comes from the connection's
//!   [`RttEstimator`], seeded with quinn's smoothed RTT and fed with every
//!   request → response round trip; the retry and the budget are the state
//!   machine's (the budget is never clipped).
//! * The call watches the peer's live connection (woken by the same
//!   per-peer waiters `connect` uses): a new generation is `Replaced` (or
//!   `Connected` after a loss), no live connection is `Closed`; a send that
//!   needs a connection repairs it through the endpoint's repair dials (one
//!   dial per peer however many sends need it; after a failed dial it asks
//!   again when the peer's backoff ends, within the send's budget).
//! * Every ACK timeout goes to the connection's [`StuckDetector`]; when it
//!   decides [`Reconnect`], the connection is closed with
//!   [`ACK_STUCK_CODE`], [`Event::Stuck`] is queued and the send redials.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::handle::Connection;
use super::state::{CloseReason, Phase, Shared, State};
use super::{Endpoint, Error, Event};
use crate::identity::PeerId;
use crate::kind::Kind;
use crate::proto::ack::{
    AckError, AckSend, AckWireError, AttemptFailure, Cause, Delivered, Link, RESPONSE_LEN,
    Reconnect, Request, RequestHeader, RequestId, Response, RttEstimator, Step, StuckDetector,
};
use crate::proto::repair::RepairError;

/// Connection close code for a connection the stuck detector gave up on
/// (N consecutive receive-ACK timeouts while it looked live).
pub const ACK_STUCK_CODE: u32 = 0x107;

/// RTT estimate and stuck detector of one connection.
#[derive(Debug)]
pub(crate) struct LinkState {
    rtt: RttEstimator,
    stuck: StuckDetector,
}

impl Endpoint {
    /// Sends `payload` to `peer` for admission into its `kind` queue and
    /// waits for the receiver's answer, within `budget` (cut to
    /// `SenderConfig::max_budget`, 30 s by default).
    ///
    /// `Ok` means the receiver *admitted* the payload into the kind's
    /// bounded queue (or its manual responder accepted it) exactly once for
    /// this send — not that the application processed it. Refusals come
    /// back at once as [`AckError::Rejected`] (`Backpressured` when the
    /// queue is full, `ConsumerGone` when nobody consumes the kind). Only
    /// [`AckError::TimedOut`] leaves it unknown whether the payload was
    /// admitted. See `docs/adr/0037-receive-ack.md`.
    pub async fn send_with_receive_ack(
        &self,
        peer: &PeerId,
        kind: Kind,
        payload: Bytes,
        budget: Duration,
    ) -> Result<Delivered, AckError> {
        send(&self.shared, *peer, kind, payload, budget).await
    }
}

/// What an attempt task reports.
enum AttemptEnd {
    Answer(Response),
    Failed(AttemptFailure),
    /// Its connection is gone; the connection watch reports that.
    Closed,
}

struct AttemptDone {
    index: u8,
    generation: u64,
    issued: Instant,
    end: AttemptEnd,
    /// open, write, finish, response read (when reached).
    stages: [Option<Duration>; 4],
}

fn random_id(epoch: u64) -> RequestId {
    let mut id = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut id).is_err() {
        // The system RNG failed: the endpoint's random epoch and a counter
        // are still unique per sender, which is what the receiver's dedupe
        // (keyed by peer and id) needs.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id[..8].copy_from_slice(&epoch.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
    }
    RequestId(id)
}

/// The live connection to `peer`: its generation, handle and quinn's
/// smoothed RTT.
fn live_of(ep: &Arc<Shared>, st: &State, peer: &PeerId) -> Option<(u64, Connection, Duration)> {
    let l = st.manager.live(peer)?;
    let c = st.conns.get(&l.conn.key)?;
    (c.phase == Phase::Live).then(|| {
        (
            c.shared.info().generation,
            Connection {
                ep: ep.clone(),
                rec: c.shared.clone(),
            },
            c.inner.rtt(),
        )
    })
}

/// The [`Link`] for connection `generation`, creating its RTT estimate
/// (seeded by quinn's srtt) and stuck detector on first use.
fn link(st: &mut State, peer: PeerId, generation: u64, srtt: Duration) -> Link {
    if !st.ack.links.contains_key(&generation) {
        // Forget connections that are gone (bounded by live connections).
        let live: std::collections::HashSet<u64> = st
            .conns
            .values()
            .map(|c| c.shared.info().generation)
            .collect();
        st.ack.links.retain(|g, _| live.contains(g));
        let stuck = StuckDetector::new(st.ack.cfg.stuck, peer, generation);
        st.ack.links.insert(
            generation,
            LinkState {
                rtt: RttEstimator::new(srtt),
                stuck,
            },
        );
    }
    let policy = st.ack.cfg.sender.attempt;
    let attempt_timeout = st
        .ack
        .links
        .get(&generation)
        .map_or(policy.ceiling, |l| l.rtt.attempt_timeout(&policy));
    Link {
        generation,
        attempt_timeout,
    }
}

fn link_now(ep: &Arc<Shared>, peer: PeerId) -> Option<Link> {
    let mut st = ep.lock();
    let (generation, _, srtt) = live_of(ep, &st, &peer)?;
    Some(link(&mut st, peer, generation, srtt))
}

/// Repairs the connection to `peer` for a receive-ACKed send: asks again
/// when a failed dial's backoff ends; gives up when the peer has no address
/// at all or the endpoint closes (the send then ends at its budget, or
/// earlier if the peer connects to us).
async fn repair(ep: Arc<Shared>, peer: PeerId) {
    loop {
        match super::repair::connect_peer(&ep, peer).await {
            Ok(_) | Err(Error::NotConnected(_) | Error::EndpointClosed) => return,
            Err(Error::Repair(RepairError::Backoff { retry_in, .. })) => {
                tokio::time::sleep(retry_in).await;
            }
            Err(Error::Repair(RepairError::TooManyDials)) => {
                // Every dial slot and queue place is taken: try again after
                // one backoff base rather than spin.
                let wait = ep.lock().config.repair.backoff_base;
                tokio::time::sleep(wait).await;
            }
            // A failed or timed-out dial set the peer's backoff: the next
            // ask answers with it.
            Err(_) => {}
        }
    }
}

/// Resolves with the peer's live generation once it differs from `known`.
async fn live_changed(ep: &Arc<Shared>, peer: PeerId, known: Option<u64>) -> Option<u64> {
    poll_fn(|cx| {
        let mut st = ep.lock();
        let now = live_of(ep, &st, &peer).map(|l| l.0);
        if now != known {
            return Poll::Ready(now);
        }
        if st.driver_done {
            return Poll::Pending;
        }
        super::api::push_waker(st.peer_waiters.entry(peer).or_default(), cx.waker());
        Poll::Pending
    })
    .await
}

/// Feeds an ACK timeout on `generation` to its stuck detector; on a
/// reconnect decision closes the connection and reports it.
fn ack_timed_out(ep: &Arc<Shared>, peer: PeerId, generation: u64, now: Instant) {
    let mut st = ep.lock();
    let target = st
        .conns
        .iter()
        .find(|(_, c)| c.shared.info().generation == generation && c.peer() == Some(peer))
        .map(|(ch, c)| (*ch, c.uid, c.phase == Phase::Live));
    let Some((ch, uid, looks_live)) = target else {
        return;
    };
    let Some(l) = st.ack.links.get_mut(&generation) else {
        return;
    };
    let Some(r): Option<Reconnect> = l.stuck.on_ack_timeout(looks_live, now) else {
        return;
    };
    st.ack.tx.on_stuck();
    super::conn::close_conn(&mut st, ch, uid, ACK_STUCK_CODE, CloseReason::Local);
    st.push_event(Event::Stuck(r));
    st.wake_driver();
}

async fn run_attempt(
    conn: Connection,
    header: RequestHeader,
    payload: Bytes,
    index: u8,
) -> AttemptDone {
    let generation = conn.generation();
    let issued = crate::io::now();
    let mut stages = [None; 4];
    let mut t = issued;
    let mut lap = |i: usize, stages: &mut [Option<Duration>; 4]| {
        let n = crate::io::now();
        stages[i] = Some(n.saturating_duration_since(t));
        t = n;
    };
    let fail = |e: Error| match e {
        Error::Closed(_) | Error::EndpointClosed | Error::NotConnected(_) => AttemptEnd::Closed,
        Error::Stopped(code) => AttemptEnd::Failed(AttemptFailure::Reset(code)),
        _ => AttemptEnd::Failed(AttemptFailure::Local),
    };
    let done = |end, stages| AttemptDone {
        index,
        generation,
        issued,
        end,
        stages,
    };
    let (mut s, mut r) = match conn.open_bi(Kind::ACK).await {
        Ok(x) => x,
        Err(e) => return done(fail(e), stages),
    };
    lap(0, &mut stages);
    let wrote = async {
        s.write_all(&header.to_bytes()).await?;
        s.write_chunk(payload).await
    }
    .await;
    lap(1, &mut stages);
    let wrote = wrote.and_then(|()| s.finish());
    lap(2, &mut stages);
    // Even when the write failed (the receiver may stop the rest of a
    // request it answered from the header alone), its answer may be there.
    let read = r.read_to_end(RESPONSE_LEN).await;
    lap(3, &mut stages);
    let end = match (read, wrote) {
        (Ok(buf), _) if !buf.is_empty() => match Response::parse(&buf) {
            Ok(resp) => AttemptEnd::Answer(resp),
            Err(e) => AttemptEnd::Failed(AttemptFailure::Malformed(e)),
        },
        (Ok(_), Ok(())) => AttemptEnd::Failed(AttemptFailure::Malformed(AckWireError::Truncated {
            need: RESPONSE_LEN,
            got: 0,
        })),
        (Ok(_), Err(e)) | (Err(e), _) => match e {
            Error::TooLong => AttemptEnd::Failed(AttemptFailure::Malformed(AckWireError::TooLong)),
            e => fail(e),
        },
    };
    done(end, stages)
}

/// One receive-ACKed send: executes [`AckSend`]'s steps until it is done.
pub(crate) async fn send(
    ep: &Arc<Shared>,
    peer: PeerId,
    kind: Kind,
    payload: Bytes,
    budget: Duration,
) -> Result<Delivered, AckError> {
    let id = random_id(ep.lock().epoch);
    let request = Request::new(kind, id, &payload, false).map_err(AckError::Malformed)?;
    let header = *request.header();
    let span = tracing::debug_span!("ack_send", peer = %peer.short(), id = %id);
    async move {
        let now = crate::io::now();
        let cfg = {
            let mut st = ep.lock();
            st.ack.tx.on_registered();
            st.ack.cfg.sender
        };
        let mut ack = AckSend::new(id, budget, &cfg, now);
        let first = link_now(ep, peer);
        let mut known = first.map(|l| l.generation);
        let mut step = ack.start(first, now);
        let mut attempts: JoinSet<AttemptDone> = JoinSet::new();
        let mut dial: JoinSet<()> = JoinSet::new();
        loop {
            ep.lock().ack.tx.observe(&step);
            match step {
                Step::Done(r) => return r,
                Step::Issue(a) => {
                    if let Cause::TimedOut { generation } = a.cause {
                        ack_timed_out(ep, peer, generation, crate::io::now());
                    }
                    tracing::debug!(generation = a.generation, index = a.index, cause = ?a.cause,
                        "receive-ACK attempt");
                    let conn = {
                        let st = ep.lock();
                        live_of(ep, &st, &peer).filter(|l| l.0 == a.generation)
                    };
                    let mut h = header;
                    h.retry = a.retry;
                    // Copies of this id may follow until the deadline: the
                    // receiver keeps its dedupe entry about twice that.
                    h.retry_window = ack.deadline().saturating_duration_since(crate::io::now());
                    match conn {
                        Some((_, c, _)) => {
                            let span = tracing::debug_span!("ack_attempt",
                                peer = %peer.short(), conn = c.rec.uid,
                                generation = a.generation, index = a.index);
                            attempts.spawn(
                                run_attempt(c, h, payload.clone(), a.index).instrument(span),
                            );
                        }
                        None => {
                            let n = crate::io::now();
                            step = ack.handle_attempt_failed(a.index, AttemptFailure::Local, n);
                            continue;
                        }
                    }
                }
                Step::NeedConnection => {
                    if dial.is_empty() {
                        dial.spawn(repair(ep.clone(), peer));
                    }
                }
                Step::Wait => {}
            }
            let deadline = ack.poll_timeout().unwrap_or_else(|| ack.deadline());
            step = tokio::select! {
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    let now = crate::io::now();
                    match done {
                        Ok(d) => on_attempt_done(ep, &mut ack, d, now),
                        // The task panicked or was aborted: a local failure.
                        Err(_) => Step::Wait,
                    }
                }
                Some(_) = dial.join_next(), if !dial.is_empty() => Step::Wait,
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = crate::io::now();
                    let s = ack.handle_timeout(now);
                    if let Step::Done(Err(AckError::TimedOut { generation: Some(g), .. })) = s {
                        ack_timed_out(ep, peer, g, now);
                    }
                    s
                }
                live = live_changed(ep, peer, known) => {
                    let now = crate::io::now();
                    let old = known;
                    known = live;
                    match (old, live) {
                        (_, Some(g)) => match link_now(ep, peer).filter(|l| l.generation == g) {
                            Some(l) => {
                                match old {
                                    Some(o) => ack.handle_replaced(o, l, now),
                                    None => ack.handle_connected(l, now),
                                }
                            }
                            None => Step::Wait,
                        },
                        (Some(o), None) => ack.handle_closed(o, now),
                        (None, None) => Step::Wait,
                    }
                }
            };
        }
    }
    .instrument(span)
    .await
}

fn on_attempt_done(ep: &Arc<Shared>, ack: &mut AckSend, d: AttemptDone, now: Instant) -> Step {
    let mut st = ep.lock();
    let tx = &mut st.ack.tx;
    let [open, write, finish, read] = d.stages;
    for (h, v) in [
        (&mut tx.open, open),
        (&mut tx.write, write),
        (&mut tx.finish, finish),
        (&mut tx.response_read, read),
    ] {
        if let Some(v) = v {
            h.record(v);
        }
    }
    match d.end {
        AttemptEnd::Answer(resp) => {
            if let Some(l) = st.ack.links.get_mut(&d.generation) {
                l.stuck.on_response();
                l.rtt.on_sample(now.saturating_duration_since(d.issued));
            }
            drop(st);
            ack.handle_response(d.index, &resp, now)
        }
        AttemptEnd::Failed(f) => {
            drop(st);
            ack.handle_attempt_failed(d.index, f, now)
        }
        AttemptEnd::Closed => Step::Wait,
    }
}
