//! Scavenger probes, driver glue: runs the sans-IO [`ProbeScheduler`] for
//! [`Endpoint::probe`] and answers the peers' probes.
//!
//! * **Asking.** `probe(peer)` needs a live connection (a probe never
//!   dials: it measures a path, it does not create one). It asks the
//!   scheduler under the state lock and waits on a oneshot. A request for
//!   a peer whose probe is already wanted or out is coalesced by the
//!   scheduler (counted) and gets that probe's result.
//! * **Sending.** One task per endpoint ([`run`]) refreshes the pressure of
//!   every peer with a wanted probe — the bytes of higher kinds queued on
//!   its connection and not yet taken by QUIC — then drains
//!   `poll_probe` and starts one exchange task per probe. A paused peer is
//!   looked at again every `ProbeConfig::interval` until its queue drains;
//!   otherwise the task sleeps until `poll_timeout` or a new request.
//! * **On the wire.** One bidirectional stream of kind `PROBE` (stream
//!   priority 0, below everything) per probe: header, an 8-byte nonce and
//!   FIN; the peer's router echoes the nonce and FIN on the same stream in
//!   the driver pass that read it ([`echo`]), so the time from opening the
//!   stream to reading the echo is one round trip plus both drivers. Like
//!   `ACK`, bidirectional `PROBE` streams belong to the endpoint whatever
//!   the application registered.
//! * **Deadline.** The task owns each probe's deadline
//!   (`ProbeConfig::timeout`): past it the exchange is aborted, the slot
//!   freed and the callers answered [`ProbeError::TimedOut`]; the
//!   scheduler's own deadline is the second line. A finished exchange
//!   whose probe already timed out is ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::{ConnectionHandle, ReadError, StreamId, VarInt};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::state::{Phase, Shared, State};
use super::{Endpoint, Error};
use crate::identity::PeerId;
use crate::kind::{Kind, StreamReject};
use crate::proto::ack::{Latency, StageSnapshot};
use crate::proto::probe::{ProbeConfig, ProbeCounters, ProbeId, ProbeScheduler, ProbeSend};

/// Bytes of a probe's nonce, and of its echo.
pub const PROBE_LEN: usize = 8;

/// Why a probe gave no round-trip time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No live connection to the peer; probes never dial.
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    /// No echo within the probe's deadline (`ProbeConfig::timeout`).
    #[error("probe unanswered within {0:?}")]
    TimedOut(Duration),
    /// The connection ended before the echo arrived.
    #[error("connection closed before the probe was answered")]
    Closed,
    /// The peer stopped or reset the probe stream with this code.
    #[error("probe refused by the peer: code {0}")]
    Refused(u64),
    /// The answer was not the probe's echo.
    #[error("malformed probe answer")]
    BadEcho,
    /// The scheduler tracks `ProbeConfig::max_peers` peers already; the
    /// request was dropped (counted `dropped`).
    #[error("probe dropped: too many peers tracked")]
    Dropped,
    /// The endpoint has shut down or is closing.
    #[error("endpoint closed")]
    EndpointClosed,
}

type Waiter = oneshot::Sender<Result<Duration, ProbeError>>;

/// A probe handed to an exchange task.
struct Out {
    id: ProbeId,
    deadline: Instant,
    task: AbortHandle,
}

/// The endpoint's probe state (inside `State`, under its lock).
pub(crate) struct ProbeState {
    cfg: ProbeConfig,
    sched: ProbeScheduler,
    /// Callers waiting, per peer. Keys are bounded by the scheduler's peer
    /// table (a dropped request adds none); each list by the callers
    /// waiting now (closed senders are pruned on every push).
    waiters: HashMap<PeerId, Vec<Waiter>>,
    /// Probes out, one per peer at most (the scheduler's single flight).
    out: HashMap<PeerId, Out>,
    /// Wakes the probe task: a new request, or a probe ended.
    notify: Arc<Notify>,
    next_nonce: u64,
    rtt: Latency,
    timed_out: u64,
    closed: u64,
    not_connected: u64,
    echoed: u64,
    echo_refused: u64,
}

impl ProbeState {
    pub(crate) fn new(cfg: ProbeConfig) -> Self {
        Self {
            cfg,
            sched: ProbeScheduler::new(cfg),
            waiters: HashMap::new(),
            out: HashMap::new(),
            notify: Arc::new(Notify::new()),
            next_nonce: 0,
            rtt: Latency::default(),
            timed_out: 0,
            closed: 0,
            not_connected: 0,
            echoed: 0,
            echo_refused: 0,
        }
    }

    pub(crate) fn diag(&self) -> ProbeDiag {
        ProbeDiag {
            counters: self.sched.counters(),
            in_flight: self.out.len(),
            waiting: self.waiters.values().map(Vec::len).sum(),
            timed_out: self.timed_out,
            closed: self.closed,
            not_connected: self.not_connected,
            echoed: self.echoed,
            echo_refused: self.echo_refused,
            rtt: self.rtt.snapshot(),
            interval_us: u64::try_from(self.cfg.interval.as_micros()).unwrap_or(u64::MAX),
            burst: self.cfg.burst,
            timeout_ms: u64::try_from(self.cfg.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Answers every caller waiting on `peer`.
    fn answer(&mut self, peer: &PeerId, r: &Result<Duration, ProbeError>) {
        for w in self.waiters.remove(peer).unwrap_or_default() {
            // A caller that gave up dropped its receiver: nothing to tell.
            let _ = w.send(r.clone());
        }
    }
}

/// Probe diagnostics (`diagnostics().probe`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeDiag {
    /// Scheduler counters: requested, coalesced, dropped, sent, answered,
    /// failed, paused, throttled.
    pub counters: ProbeCounters,
    /// Probes out now.
    pub in_flight: usize,
    /// Callers waiting for a probe now.
    pub waiting: usize,
    /// Probes unanswered by their deadline.
    pub timed_out: u64,
    /// Probes whose connection ended before the echo.
    pub closed: u64,
    /// Requests refused for want of a live connection.
    pub not_connected: u64,
    /// Peers' probes this endpoint echoed.
    pub echoed: u64,
    /// Peers' probe streams reset as malformed (not exactly
    /// [`PROBE_LEN`] bytes then FIN), also counted in the stream resets.
    pub echo_refused: u64,
    /// Round-trip times of answered probes.
    pub rtt: StageSnapshot,
    /// Sustained rate: one probe per this many µs.
    pub interval_us: u64,
    /// Probes allowed back to back.
    pub burst: u32,
    /// Deadline per probe, ms.
    pub timeout_ms: u64,
}

impl Endpoint {
    /// Measures the round trip to `peer` with one scavenger probe on its
    /// live connection: a `PROBE` stream (the lowest priority) whose nonce
    /// the peer's endpoint echoes.
    ///
    /// At most one probe per peer is out; a call while one is wanted or
    /// out joins it and gets its result. Probes across the endpoint are
    /// token-bucketed (`ProbeConfig::burst` back to back, one per
    /// `ProbeConfig::interval` sustained) and wait while higher kinds have
    /// data queued on the peer's connection, so the result may come long
    /// after the call; the probe's deadline (`ProbeConfig::timeout`,
    /// default 10 s) counts from when it is sent. Never dials:
    /// [`ProbeError::NotConnected`] without a live connection.
    pub async fn probe(&self, peer: &PeerId) -> Result<Duration, ProbeError> {
        probe(&self.shared, *peer).await
    }
}

async fn probe(ep: &Arc<Shared>, peer: PeerId) -> Result<Duration, ProbeError> {
    let rx = {
        let mut st = ep.lock();
        if !st.open_for_work() {
            return Err(ProbeError::EndpointClosed);
        }
        if live_conn(&st, &peer).is_none() {
            st.probe.not_connected += 1;
            return Err(ProbeError::NotConnected(peer));
        }
        let p = &mut st.probe;
        let dropped = p.sched.counters().dropped;
        p.sched.request(peer);
        if p.sched.counters().dropped != dropped {
            return Err(ProbeError::Dropped);
        }
        let (tx, rx) = oneshot::channel();
        let list = p.waiters.entry(peer).or_default();
        list.retain(|w| !w.is_closed());
        list.push(tx);
        p.notify.notify_one();
        rx
    };
    rx.await.unwrap_or(Err(ProbeError::EndpointClosed))
}

/// The live connection to `peer`: its handle and uid.
fn live_conn(st: &State, peer: &PeerId) -> Option<(ConnectionHandle, u64)> {
    let l = st.manager.live(peer)?;
    let c = st.conns.get(&l.conn.key)?;
    (c.phase == Phase::Live).then_some((l.conn.key, c.uid))
}

/// Bytes of kinds above `PROBE` queued on `peer`'s live connection and not
/// yet taken by quinn-proto (message queues and the identity proof). Data
/// already in quinn-proto's buffer is not counted: its stream priority
/// sends it before any probe anyway.
fn pressure(st: &State, peer: &PeerId) -> u64 {
    let Some((ch, _)) = live_conn(st, peer) else {
        return 0;
    };
    let Some(c) = st.conns.get(&ch) else {
        return 0;
    };
    let kinds = c
        .out_kinds
        .iter()
        .filter(|(k, _)| k.priority() > Kind::PROBE.priority())
        .map(|(_, o)| o.pending_bytes);
    let proof = c.proof_out.as_ref().map(|o| o.pending_bytes);
    kinds.chain(proof).map(|b| b as u64).sum()
}

/// The probe task: sends what the scheduler allows, enforces deadlines,
/// and ends when the driver stops.
pub(crate) async fn run(ep: Arc<Shared>) {
    let notify = ep.lock().probe.notify.clone();
    loop {
        let next = {
            let mut st = ep.lock();
            if st.driver_done {
                shut(&mut st);
                return;
            }
            let now = crate::io::now();
            expire(&mut st, now);
            let paused = refresh_pressure(&mut st);
            while let Some(send) = st.probe.sched.poll_probe(now) {
                start(&ep, &mut st, send, now);
            }
            let next = st.probe.sched.poll_timeout();
            let recheck = paused.then(|| now + st.probe.cfg.interval);
            next.into_iter().chain(recheck).min()
        };
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = notify.notified() => {}
            () = super::api::driver_stopped(&ep) => {}
        }
    }
}

/// Feeds the scheduler the pressure of every peer waiting for a probe that
/// is not out yet; true if any of them is paused.
fn refresh_pressure(st: &mut State) -> bool {
    let peers: Vec<PeerId> = st
        .probe
        .waiters
        .keys()
        .filter(|p| !st.probe.out.contains_key(p))
        .copied()
        .collect();
    let mut paused = false;
    for peer in peers {
        let bytes = pressure(st, &peer);
        paused |= bytes > 0;
        st.probe.sched.set_pressure(peer, bytes);
    }
    paused
}

/// Fails the probes past their deadline.
fn expire(st: &mut State, now: Instant) {
    let p = &mut st.probe;
    let due: Vec<PeerId> = p
        .out
        .iter()
        .filter(|(_, o)| o.deadline <= now)
        .map(|(peer, _)| *peer)
        .collect();
    for peer in due {
        if let Some(o) = p.out.remove(&peer) {
            o.task.abort();
            p.sched.handle_probe_done(peer, o.id, false);
            p.timed_out += 1;
            tracing::debug!(peer = %peer.short(), "probe timed out");
            p.answer(&peer, &Err(ProbeError::TimedOut(p.cfg.timeout)));
        }
    }
    p.sched.handle_timeout(now);
}

fn start(ep: &Arc<Shared>, st: &mut State, send: ProbeSend, now: Instant) {
    let ProbeSend { probe, peer } = send;
    let Some((ch, uid)) = live_conn(st, &peer) else {
        // The connection went away between the request and its turn.
        let p = &mut st.probe;
        p.sched.handle_probe_done(peer, probe, false);
        p.sched.remove_peer(&peer);
        p.not_connected += 1;
        p.answer(&peer, &Err(ProbeError::NotConnected(peer)));
        return;
    };
    let Some(rec) = st.conns.get(&ch).map(|c| c.shared.clone()) else {
        return;
    };
    let conn = super::Connection {
        ep: ep.clone(),
        rec,
    };
    let p = &mut st.probe;
    p.next_nonce = p.next_nonce.wrapping_add(1);
    let nonce = p.next_nonce.to_be_bytes();
    let span = tracing::debug_span!("probe", peer = %peer.short(), conn = uid);
    let ep2 = ep.clone();
    let task = tokio::spawn(
        async move {
            let r = exchange(&conn, nonce).await;
            finish(&ep2, peer, probe, r);
        }
        .instrument(span),
    );
    p.out.insert(
        peer,
        Out {
            id: probe,
            deadline: now + p.cfg.timeout,
            task: task.abort_handle(),
        },
    );
}

/// One probe: open a `PROBE` stream, send the nonce and FIN, read the
/// echo. The round trip counts from opening the stream.
async fn exchange(
    conn: &super::Connection,
    nonce: [u8; PROBE_LEN],
) -> Result<Duration, ProbeError> {
    let t0 = crate::io::now();
    let fail = |e: Error| match e {
        Error::Stopped(code) => ProbeError::Refused(code),
        Error::TooLong => ProbeError::BadEcho,
        Error::EndpointClosed => ProbeError::EndpointClosed,
        _ => ProbeError::Closed,
    };
    let (mut s, mut r) = conn.open_bi(Kind::PROBE).await.map_err(fail)?;
    s.write_all(&nonce).await.map_err(fail)?;
    s.finish().map_err(fail)?;
    let echo = r.read_to_end(PROBE_LEN).await.map_err(fail)?;
    if echo != nonce {
        return Err(ProbeError::BadEcho);
    }
    Ok(crate::io::now().saturating_duration_since(t0))
}

/// Reports an exchange's end, unless its probe already timed out.
fn finish(ep: &Shared, peer: PeerId, probe: ProbeId, r: Result<Duration, ProbeError>) {
    let mut st = ep.lock();
    let p = &mut st.probe;
    if p.out.get(&peer).is_none_or(|o| o.id != probe) {
        return;
    }
    p.out.remove(&peer);
    p.sched.handle_probe_done(peer, probe, r.is_ok());
    match &r {
        Ok(d) => p.rtt.record(*d),
        Err(ProbeError::Closed) => {
            p.closed += 1;
            p.sched.remove_peer(&peer);
        }
        Err(e) => tracing::debug!(peer = %peer.short(), error = %e, "probe failed"),
    }
    p.answer(&peer, &r);
    p.notify.notify_one();
}

/// The endpoint stopped: every waiting caller is told, every exchange
/// aborted.
fn shut(st: &mut State) {
    let p = &mut st.probe;
    for (_, o) in p.out.drain() {
        o.task.abort();
    }
    let peers: Vec<PeerId> = p.waiters.keys().copied().collect();
    for peer in peers {
        p.answer(&peer, &Err(ProbeError::EndpointClosed));
    }
}

/// Answers a peer's probe stream (bidirectional, kind `PROBE`, header
/// already read): reads at most [`PROBE_LEN`] + 1 bytes, and on FIN after
/// exactly [`PROBE_LEN`] writes them back with FIN. Anything else resets
/// the stream (counted). Runs in the driver under the lock and never
/// waits: a stream whose bytes have not all arrived stays with the router
/// (bounded by the bidirectional stream limit) until they do.
pub(crate) fn echo(st: &mut State, ch: ConnectionHandle, id: StreamId) {
    enum End {
        Wait,
        Echo(Vec<u8>),
        Bad(StreamReject),
        Gone,
    }
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    let Some(buf) = c.in_streams.get_mut(&id).and_then(|s| s.echo.as_mut()) else {
        return;
    };
    c.dirty = true;
    let end = match c.inner.recv_stream(id).read(true) {
        Err(_) => End::Gone,
        Ok(mut chunks) => {
            let end = loop {
                match chunks.next(PROBE_LEN + 1 - buf.len()) {
                    Ok(Some(chunk)) => {
                        buf.extend_from_slice(&chunk.bytes);
                        if buf.len() > PROBE_LEN {
                            break End::Bad(StreamReject::Oversize);
                        }
                    }
                    Ok(None) if buf.len() == PROBE_LEN => break End::Echo(std::mem::take(buf)),
                    Ok(None) => break End::Bad(StreamReject::Truncated),
                    Err(ReadError::Blocked) => break End::Wait,
                    Err(ReadError::Reset(_)) => break End::Gone,
                }
            };
            let _ = chunks.finalize();
            end
        }
    };
    match end {
        End::Wait => {}
        End::Gone => {
            c.in_streams.remove(&id);
        }
        End::Bad(r) => {
            st.probe.echo_refused += 1;
            super::router::reject(st, ch, id, r);
        }
        End::Echo(nonce) => {
            c.in_streams.remove(&id);
            let mut s = c.inner.send_stream(id);
            let _ = s.set_priority(Kind::PROBE.priority());
            let wrote = matches!(s.write(&nonce), Ok(n) if n == nonce.len());
            if !wrote {
                // A partial echo would read as malformed; reset instead.
                let _ = s.reset(VarInt::from_u32(StreamReject::Truncated.code()));
                return;
            }
            if s.finish().is_ok() {
                // A graceful close waits for the peer to acknowledge it.
                c.finishing.insert(id, None);
                st.probe.echoed += 1;
            }
        }
    }
}
