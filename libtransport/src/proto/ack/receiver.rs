//! The receiving side of receive-ACK, sans-IO.
//!
//! # The admission contract
//!
//! `Accepted` means the payload was *admitted* into a bounded consumer queue
//! — the kind's receive queue, or wherever the application's responder put
//! it — exactly once for its request id. It never means the consumer has
//! processed it, and admission never waits for the consumer: a full queue is
//! answered `Backpressured` at once.
//!
//! # Calling order
//!
//! The driver decodes the request header and payload off a bidirectional
//! stream of kind `ACK` (rejecting malformed ones with
//! [`Receiver::handle_malformed`] and the error's stop code), then:
//!
//! 1. [`Receiver::handle_request`] → [`Admit`]:
//!    * [`Admit::Admit`]: a new request. Push the payload into the kind's
//!      queue and call [`Receiver::resolve`] with the result, at once; or,
//!      for manual admission, hand the application a responder carrying the
//!      [`Ticket`] and its [`Receiver::deadline`]. An unanswered ticket is
//!      answered `Backpressured` when the deadline passes.
//!    * [`Admit::Answered`] / [`Admit::Parked`]: nothing to admit (a retry
//!      of an admitted id, a conflict, a refusal, or a copy waiting for the
//!      copy in admission).
//! 2. Drain [`Receiver::poll_output`]: write each [`Output::Respond`] on its
//!    stream and finish it, reporting the result with
//!    [`Receiver::handle_write_done`]; execute each [`Output::Reset`].
//! 3. Call [`Receiver::handle_timeout`] at [`Receiver::poll_timeout`] (early
//!    calls are harmless), and [`Receiver::handle_stream_closed`] when a
//!    stream's connection goes away.
//!
//! # Retries
//!
//! A copy of an id that was admitted (same payload hash) is answered
//! `Accepted` with the *replayed* flag, and not admitted again: the sender
//! reports success whichever copy's answer it reads. A copy arriving while
//! the first is still in admission is parked and gets the first copy's
//! outcome (at most [`ReceiverConfig::max_parked`] copies; more are answered
//! `Duplicate`). The same id with another payload is `Conflict`, counted,
//! and the first payload stands.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::config::ReceiverConfig;
use super::dedupe::{DedupeCache, Full, Key};
use super::telemetry::{ReceiverCounters, ReceiverStats};
use super::wire::{AckWireError, Outcome, PayloadHash, RequestHeader, RequestId, Response};
use crate::identity::PeerId;
use crate::kind::Kind;

/// Stop/reset code for a response that missed its write deadline.
pub const RESPONSE_TIMEOUT_CODE: u32 = 0x3a;
/// Reset code for a request refused because too many responses are being
/// written.
pub const BUSY_CODE: u32 = 0x3b;

/// An admission in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// What the driver must do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Admit {
    /// Admit the payload into `kind` and report with [`Receiver::resolve`].
    Admit {
        /// The admission.
        ticket: Ticket,
        /// Kind to admit into.
        kind: Kind,
    },
    /// Answered without admission (see [`Receiver::poll_output`]).
    Answered(Outcome),
    /// Parked behind the copy in admission; answered when it resolves.
    Parked,
}

/// The result of an admission attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The payload is in the consumer's bounded queue.
    Admitted,
    /// The queue is full. `retry_after`: the consumer's estimate, if any.
    Full {
        /// When to try again.
        retry_after: Option<Duration>,
    },
    /// No consumer for the kind.
    Gone,
}

/// Why [`Receiver::resolve`] refused a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The deadline passed: `Backpressured` was (or is now) answered for it.
    /// The caller must not deliver the payload.
    #[error("admission deadline passed; answered Backpressured")]
    Expired,
    /// Not an admission in progress (already resolved, or unknown).
    #[error("no such admission in progress")]
    NotPending,
}

/// Work for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Output<S> {
    /// Write `response` on `stream` and finish it, within
    /// [`ReceiverConfig::response_write_timeout`].
    Respond {
        /// The request stream.
        stream: S,
        /// What to write.
        response: Response,
    },
    /// Reset `stream`'s send side with `code`.
    Reset {
        /// The stream.
        stream: S,
        /// Application error code.
        code: u32,
    },
}

#[derive(Debug)]
struct Pending<S> {
    key: Key,
    hash: PayloadHash,
    /// The sender's retry window, from the first copy's header.
    retry_window: Duration,
    /// The first copy's stream, then parked copies. The first may be gone
    /// (its connection closed) while the admission still completes.
    streams: Vec<S>,
    started: Instant,
    deadline: Instant,
}

/// Receiver state for one endpoint: dedupe cache, admissions in progress,
/// responses being written. `S` is the driver's stream handle.
#[derive(Debug)]
pub struct Receiver<S> {
    cfg: ReceiverConfig,
    dedupe: DedupeCache,
    pending: HashMap<Ticket, Pending<S>>,
    by_key: HashMap<Key, Ticket>,
    /// Admission deadlines in issue order (one timeout for all, so FIFO is
    /// deadline order); resolved tickets are skipped when they surface.
    deadlines: VecDeque<(Instant, Ticket)>,
    /// Responses being written: stream → when queued.
    responding: HashMap<S, Instant>,
    response_deadlines: VecDeque<(Instant, S)>,
    out: VecDeque<Output<S>>,
    next_ticket: u64,
    stats: ReceiverStats,
}

impl<S: Copy + Eq + Hash> Receiver<S> {
    /// A receiver with `cfg`.
    #[must_use]
    pub fn new(cfg: ReceiverConfig) -> Self {
        Self {
            dedupe: DedupeCache::new(
                cfg.dedupe_entries,
                cfg.dedupe_bytes,
                cfg.dedupe_per_peer,
                cfg.dedupe_floor,
                cfg.dedupe_ttl,
            ),
            cfg,
            pending: HashMap::new(),
            by_key: HashMap::new(),
            deadlines: VecDeque::new(),
            responding: HashMap::new(),
            response_deadlines: VecDeque::new(),
            out: VecDeque::new(),
            next_ticket: 0,
            stats: ReceiverStats::default(),
        }
    }

    /// A request whose header (and payload) decoded cleanly arrived from
    /// `peer` on `stream`.
    pub fn handle_request(
        &mut self,
        peer: PeerId,
        stream: S,
        header: &RequestHeader,
        now: Instant,
    ) -> Admit {
        self.stats.counters.decoded += 1;
        self.expire(now);
        let key = (peer, header.id);
        let c = &mut self.stats.counters;
        if let Some(t) = self.by_key.get(&key).copied()
            && let Some(p) = self.pending.get_mut(&t)
        {
            if p.hash != header.hash {
                c.conflicts += 1;
                return self.answer(stream, header.id, Outcome::Conflict, false, None, now);
            }
            if p.streams.len() <= self.cfg.max_parked {
                p.streams.push(stream);
                c.parked += 1;
                tracing::debug!(peer = %peer.short(), id = %header.id, "receive-ACK: copy parked");
                return Admit::Parked;
            }
            c.duplicates_dropped += 1;
            return self.answer(stream, header.id, Outcome::Duplicate, false, None, now);
        }
        if let Some(hash) = self.dedupe.get(&key) {
            if hash != header.hash {
                c.conflicts += 1;
                tracing::warn!(peer = %peer.short(), id = %header.id,
                    "receive-ACK: request id reused with another payload");
                return self.answer(stream, header.id, Outcome::Conflict, false, None, now);
            }
            c.replayed += 1;
            return self.answer(stream, header.id, Outcome::Accepted, true, None, now);
        }
        if self.pending.len() >= self.cfg.max_pending {
            c.pending_full += 1;
            c.backpressured += 1;
            let wait = self.cfg.admission_timeout;
            return self.answer(
                stream,
                header.id,
                Outcome::Backpressured,
                false,
                Some(wait),
                now,
            );
        }
        if let Err(full) = self.dedupe.reserve(peer, now) {
            c.dedupe_full += 1;
            c.backpressured += 1;
            let (Full::Cache(wait) | Full::Peer(wait)) = full;
            return self.answer(
                stream,
                header.id,
                Outcome::Backpressured,
                false,
                Some(wait),
                now,
            );
        }
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let deadline = now + self.cfg.admission_timeout;
        self.pending.insert(
            ticket,
            Pending {
                key,
                hash: header.hash,
                retry_window: header.retry_window,
                streams: vec![stream],
                started: now,
                deadline,
            },
        );
        self.by_key.insert(key, ticket);
        self.deadlines.push_back((deadline, ticket));
        self.compact_deadlines();
        Admit::Admit {
            ticket,
            kind: header.kind,
        }
    }

    /// A request from `peer` was malformed (the driver stops its stream with
    /// `err.code()`).
    pub fn handle_malformed(&mut self, peer: PeerId, err: AckWireError) {
        self.stats.counters.malformed += 1;
        tracing::debug!(peer = %peer.short(), error = %err, "receive-ACK: malformed request");
    }

    /// The latest time `ticket` may be resolved.
    #[must_use]
    pub fn deadline(&self, ticket: Ticket) -> Option<Instant> {
        self.pending.get(&ticket).map(|p| p.deadline)
    }

    /// Reports the admission result for `ticket`. On `Ok` the outcome was
    /// decided by this call; on `Err(Expired)` `Backpressured` was sent
    /// instead and the payload must not be delivered.
    pub fn resolve(
        &mut self,
        ticket: Ticket,
        admission: Admission,
        now: Instant,
    ) -> Result<Outcome, ResolveError> {
        let Some(p) = self.pending.get(&ticket) else {
            return Err(ResolveError::NotPending);
        };
        if now >= p.deadline {
            self.expire_ticket(ticket, now);
            return Err(ResolveError::Expired);
        }
        Ok(self.finish(ticket, admission, now))
    }

    fn expire_ticket(&mut self, ticket: Ticket, now: Instant) {
        self.stats.counters.admission_expired += 1;
        let _ = self.finish(ticket, Admission::Full { retry_after: None }, now);
    }

    fn finish(&mut self, ticket: Ticket, admission: Admission, now: Instant) -> Outcome {
        let Some(p) = self.pending.remove(&ticket) else {
            return Outcome::Backpressured;
        };
        self.by_key.remove(&p.key);
        self.stats
            .admission
            .record(now.saturating_duration_since(p.started));
        let c = &mut self.stats.counters;
        let (outcome, retry_after) = match admission {
            Admission::Admitted => {
                c.admitted += 1;
                self.dedupe.commit(p.key, p.hash, p.retry_window, now);
                (Outcome::Accepted, None)
            }
            Admission::Full { retry_after } => {
                c.backpressured += 1;
                self.dedupe.release(&p.key.0);
                (Outcome::Backpressured, retry_after)
            }
            Admission::Gone => {
                c.consumer_gone += 1;
                self.dedupe.release(&p.key.0);
                (Outcome::ConsumerGone, None)
            }
        };
        tracing::debug!(peer = %p.key.0.short(), id = %p.key.1, ?outcome, copies = p.streams.len(),
            "receive-ACK: admission resolved");
        for (i, s) in p.streams.into_iter().enumerate() {
            // Copies after the first did not cause the admission.
            let _ = self.answer(
                s,
                p.key.1,
                outcome,
                i > 0 && outcome == Outcome::Accepted,
                retry_after,
                now,
            );
        }
        outcome
    }

    fn answer(
        &mut self,
        stream: S,
        id: RequestId,
        outcome: Outcome,
        replayed: bool,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Admit {
        let c = &mut self.stats.counters;
        if outcome != Outcome::Accepted {
            c.rejected += 1;
        }
        if self.responding.len() >= self.cfg.max_responses || self.responding.contains_key(&stream)
        {
            c.response_failed += 1;
            self.out.push_back(Output::Reset {
                stream,
                code: BUSY_CODE,
            });
            return Admit::Answered(outcome);
        }
        let mut response = Response::new(id, outcome);
        response.replayed = replayed;
        response.retry_after = retry_after;
        self.responding.insert(stream, now);
        self.response_deadlines
            .push_back((now + self.cfg.response_write_timeout, stream));
        self.out.push_back(Output::Respond { stream, response });
        Admit::Answered(outcome)
    }

    /// The driver finished writing a response on `stream` (`ok`: written
    /// and finished; otherwise the write or finish failed).
    pub fn handle_write_done(&mut self, stream: S, ok: bool, now: Instant) {
        let Some(queued) = self.responding.remove(&stream) else {
            return;
        };
        if ok {
            self.stats.counters.response_written += 1;
            self.stats
                .response_write
                .record(now.saturating_duration_since(queued));
        } else {
            self.stats.counters.response_failed += 1;
        }
    }

    /// `stream` is gone (its connection closed or the peer reset it): stop
    /// tracking it. An admission it started still completes and is
    /// remembered; only its answer is lost.
    pub fn handle_stream_closed(&mut self, stream: S) {
        if self.responding.remove(&stream).is_some() {
            self.stats.counters.response_failed += 1;
        }
        for p in self.pending.values_mut() {
            p.streams.retain(|s| *s != stream);
        }
    }

    /// Expires admissions, response writes and dedupe entries due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        while let Some(&(t, ticket)) = self.deadlines.front() {
            if t > now {
                break;
            }
            self.deadlines.pop_front();
            if self.pending.contains_key(&ticket) {
                self.expire_ticket(ticket, now);
            }
        }
        while let Some(&(t, stream)) = self.response_deadlines.front() {
            if t > now {
                break;
            }
            self.response_deadlines.pop_front();
            // The same stream handle is only ever answered once, but check
            // the queue time so a reused handle is not reset by an old
            // deadline.
            if let Some(q) = self.responding.get(&stream)
                && *q + self.cfg.response_write_timeout <= now
            {
                self.responding.remove(&stream);
                let c = &mut self.stats.counters;
                c.response_failed += 1;
                c.response_timed_out += 1;
                self.out.push_back(Output::Reset {
                    stream,
                    code: RESPONSE_TIMEOUT_CODE,
                });
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        self.stats.counters.dedupe_expired += self.dedupe.expire(now);
    }

    /// Keeps the deadline queue within twice the admissions in progress
    /// (resolved tickets linger in it until their deadline otherwise).
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() > 2 * self.cfg.max_pending.max(16) {
            let pending = &self.pending;
            self.deadlines.retain(|(_, t)| pending.contains_key(t));
        }
        if self.response_deadlines.len() > 2 * self.cfg.max_responses.max(16) {
            let r = &self.responding;
            self.response_deadlines.retain(|(_, s)| r.contains_key(s));
        }
    }

    /// The next time [`Receiver::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let live_deadline = self
            .deadlines
            .iter()
            .find(|(_, t)| self.pending.contains_key(t))
            .map(|(d, _)| *d);
        let resp = self.response_deadlines.front().map(|(d, _)| *d);
        [live_deadline, resp, self.dedupe.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next response to write or stream to reset.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<S>> {
        self.out.pop_front()
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> &ReceiverCounters {
        &self.stats.counters
    }

    /// Counters and stage histograms.
    #[must_use]
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Admitted ids remembered now.
    #[must_use]
    pub fn dedupe_len(&self) -> usize {
        self.dedupe.len()
    }

    /// Accounted dedupe bytes now.
    #[must_use]
    pub fn dedupe_bytes(&self) -> usize {
        self.dedupe.bytes()
    }

    /// Admissions in progress.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::super::wire::Request;
    use super::*;

    const A: PeerId = PeerId([1; 32]);
    const B: PeerId = PeerId([2; 32]);

    /// A first copy from a sender with the longest budget, so its entry
    /// lives for the TTL.
    fn hdr(id: u8, payload: &[u8]) -> RequestHeader {
        *Request::new(Kind::DM, RequestId([id; 16]), payload, false)
            .unwrap()
            .with_retry_window(Duration::from_secs(30))
            .header()
    }

    fn outputs(rx: &mut Receiver<u32>) -> Vec<Output<u32>> {
        std::iter::from_fn(|| rx.poll_output()).collect()
    }

    fn responded(rx: &mut Receiver<u32>) -> Vec<(u32, Outcome, bool)> {
        outputs(rx)
            .into_iter()
            .map(|o| match o {
                Output::Respond { stream, response } => {
                    (stream, response.outcome, response.replayed)
                }
                Output::Reset { stream, code } => panic!("reset {stream} {code:#x}"),
            })
            .collect()
    }

    fn admit(
        rx: &mut Receiver<u32>,
        peer: PeerId,
        s: u32,
        h: &RequestHeader,
        now: Instant,
    ) -> Ticket {
        match rx.handle_request(peer, s, h, now) {
            Admit::Admit { ticket, kind } => {
                assert_eq!(kind, h.kind);
                ticket
            }
            other => panic!("expected Admit, got {other:?}"),
        }
    }

    /// R1, R3: a request is admitted once; its retry is answered Accepted
    /// *replayed* and not admitted again; the same id with another payload
    /// is Conflict and counted; responses name the request id.
    #[test]
    fn admitted_once_retry_replayed_conflict_counted() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(ReceiverConfig::default());
        let h = hdr(1, b"hello");
        let t = admit(&mut rx, A, 10, &h, t0);
        assert_eq!(
            rx.resolve(t, Admission::Admitted, t0),
            Ok(Outcome::Accepted)
        );
        let out = outputs(&mut rx);
        assert!(
            matches!(out[..], [Output::Respond { stream: 10, response }] if response.id == h.id && response.outcome == Outcome::Accepted && !response.replayed)
        );
        let retry = Request::new(Kind::DM, h.id, b"hello", true).unwrap();
        assert_eq!(
            rx.handle_request(A, 11, retry.header(), t0),
            Admit::Answered(Outcome::Accepted)
        );
        assert_eq!(responded(&mut rx), vec![(11, Outcome::Accepted, true)]);
        assert_eq!(
            rx.handle_request(A, 12, &hdr(1, b"other"), t0),
            Admit::Answered(Outcome::Conflict)
        );
        assert_eq!(responded(&mut rx), vec![(12, Outcome::Conflict, false)]);
        // The same id from another peer is another request.
        let _ = admit(&mut rx, B, 13, &hdr(1, b"other"), t0);
        let c = rx.counters();
        assert_eq!(
            (c.decoded, c.admitted, c.replayed, c.conflicts),
            (4, 1, 1, 1)
        );
        assert_eq!(rx.dedupe_len(), 1);
    }

    /// R1, R2: a full queue is answered Backpressured at once (with the
    /// consumer's hint) and no consumer is ConsumerGone; neither is
    /// remembered, so the same id may be admitted later.
    #[test]
    fn full_queue_and_gone_consumer_answer_at_once() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(ReceiverConfig::default());
        let h = hdr(2, b"x");
        let t = admit(&mut rx, A, 1, &h, t0);
        let hint = Some(Duration::from_millis(40));
        assert_eq!(
            rx.resolve(t, Admission::Full { retry_after: hint }, t0),
            Ok(Outcome::Backpressured)
        );
        match outputs(&mut rx)[..] {
            [Output::Respond { response, .. }] => {
                assert_eq!(response.outcome, Outcome::Backpressured);
                assert_eq!(response.retry_after, hint);
            }
            ref o => panic!("{o:?}"),
        }
        let t = admit(&mut rx, A, 2, &h, t0);
        assert_eq!(
            rx.resolve(t, Admission::Gone, t0),
            Ok(Outcome::ConsumerGone)
        );
        assert_eq!(responded(&mut rx), vec![(2, Outcome::ConsumerGone, false)]);
        let t = admit(&mut rx, A, 3, &h, t0);
        assert_eq!(
            rx.resolve(t, Admission::Admitted, t0),
            Ok(Outcome::Accepted)
        );
        assert_eq!(
            rx.resolve(t, Admission::Admitted, t0),
            Err(ResolveError::NotPending)
        );
        let c = rx.counters();
        assert_eq!(
            (c.backpressured, c.consumer_gone, c.admitted, c.rejected),
            (1, 1, 1, 2)
        );
    }

    /// R2: a manual responder that does not answer by its deadline gets
    /// Backpressured sent for it; a late answer is refused (Expired) so the
    /// application does not deliver, even before handle_timeout ran.
    #[test]
    fn manual_admission_is_bounded() {
        let t0 = Instant::now();
        let cfg = ReceiverConfig::default();
        let mut rx = Receiver::new(cfg);
        let t = admit(&mut rx, A, 1, &hdr(3, b"a"), t0);
        let dl = rx.deadline(t).unwrap();
        assert_eq!(dl, t0 + cfg.admission_timeout);
        assert_eq!(rx.poll_timeout(), Some(dl));
        rx.handle_timeout(dl - Duration::from_nanos(1));
        assert!(outputs(&mut rx).is_empty());
        rx.handle_timeout(dl);
        assert_eq!(responded(&mut rx), vec![(1, Outcome::Backpressured, false)]);
        assert_eq!(
            rx.resolve(t, Admission::Admitted, dl),
            Err(ResolveError::NotPending)
        );
        // Resolving at the deadline, before the timer ran, is refused too.
        let t2 = admit(&mut rx, A, 2, &hdr(4, b"b"), t0);
        assert_eq!(
            rx.resolve(t2, Admission::Admitted, dl),
            Err(ResolveError::Expired)
        );
        assert_eq!(responded(&mut rx), vec![(2, Outcome::Backpressured, false)]);
        assert_eq!(rx.counters().admission_expired, 2);
        assert_eq!(rx.counters().admitted, 0);
        assert_eq!(rx.pending(), 0);
        assert_eq!(rx.dedupe_len(), 0);
    }

    /// R3: copies arriving while the first is in admission are parked and
    /// get its outcome (replayed); beyond the parking limit a copy is
    /// answered Duplicate; a conflicting copy is Conflict.
    #[test]
    fn copies_in_admission_are_parked() {
        let t0 = Instant::now();
        let cfg = ReceiverConfig {
            max_parked: 2,
            ..ReceiverConfig::default()
        };
        let mut rx = Receiver::new(cfg);
        let h = hdr(5, b"p");
        let t = admit(&mut rx, A, 1, &h, t0);
        assert_eq!(rx.handle_request(A, 2, &h, t0), Admit::Parked);
        assert_eq!(rx.handle_request(A, 3, &h, t0), Admit::Parked);
        assert_eq!(
            rx.handle_request(A, 4, &h, t0),
            Admit::Answered(Outcome::Duplicate)
        );
        assert_eq!(
            rx.handle_request(A, 5, &hdr(5, b"q"), t0),
            Admit::Answered(Outcome::Conflict)
        );
        assert_eq!(
            responded(&mut rx),
            vec![
                (4, Outcome::Duplicate, false),
                (5, Outcome::Conflict, false)
            ]
        );
        assert_eq!(
            rx.resolve(t, Admission::Admitted, t0),
            Ok(Outcome::Accepted)
        );
        assert_eq!(
            responded(&mut rx),
            vec![
                (1, Outcome::Accepted, false),
                (2, Outcome::Accepted, true),
                (3, Outcome::Accepted, true)
            ]
        );
        assert_eq!(rx.counters().admitted, 1);
        assert_eq!(rx.counters().parked, 2);
        assert_eq!(rx.counters().duplicates_dropped, 1);
    }

    /// R3: the dedupe cache is bounded; when a peer's share is full that
    /// peer is refused Backpressured with a wait hint while another peer is
    /// still admitted; entries expire after the TTL.
    #[test]
    fn dedupe_bounds_refuse_instead_of_evicting() {
        let t0 = Instant::now();
        let cfg = ReceiverConfig {
            dedupe_entries: 3,
            dedupe_per_peer: 2,
            dedupe_ttl: Duration::from_secs(10),
            ..ReceiverConfig::default()
        };
        let mut rx = Receiver::new(cfg);
        for i in 0..2 {
            let t = admit(&mut rx, A, u32::from(i), &hdr(i, b"z"), t0);
            let _ = rx.resolve(t, Admission::Admitted, t0);
        }
        let _ = outputs(&mut rx);
        assert_eq!(
            rx.handle_request(A, 9, &hdr(7, b"z"), t0 + Duration::from_secs(4)),
            Admit::Answered(Outcome::Backpressured)
        );
        match outputs(&mut rx)[..] {
            [Output::Respond { response, .. }] => {
                assert_eq!(response.retry_after, Some(Duration::from_secs(6)));
            }
            ref o => panic!("{o:?}"),
        }
        let tb = admit(&mut rx, B, 10, &hdr(7, b"z"), t0);
        let _ = rx.resolve(tb, Admission::Admitted, t0);
        // Global cap reached too now.
        assert_eq!(
            rx.handle_request(B, 11, &hdr(8, b"z"), t0),
            Admit::Answered(Outcome::Backpressured)
        );
        assert_eq!(rx.counters().dedupe_full, 2);
        // After the TTL the entries are gone and the retry of id 0 would be
        // admitted again: the TTL must outlast every sender budget.
        let later = t0 + Duration::from_secs(10);
        rx.handle_timeout(later - Duration::from_nanos(1));
        assert_eq!(rx.dedupe_len(), 3);
        rx.handle_timeout(later);
        assert_eq!(rx.dedupe_len(), 0);
        assert_eq!(rx.counters().dedupe_expired, 3);
        let _ = admit(&mut rx, A, 12, &hdr(0, b"z"), later);
    }

    /// R2: a response write that misses its deadline is reset and counted;
    /// one that completes is timed; too many pending admissions are refused.
    #[test]
    fn response_writes_are_bounded() {
        let t0 = Instant::now();
        let cfg = ReceiverConfig {
            max_pending: 1,
            ..ReceiverConfig::default()
        };
        let mut rx = Receiver::new(cfg);
        let t = admit(&mut rx, A, 1, &hdr(1, b"r"), t0);
        assert_eq!(
            rx.handle_request(A, 2, &hdr(2, b"r"), t0),
            Admit::Answered(Outcome::Backpressured)
        );
        assert_eq!(rx.counters().pending_full, 1);
        let _ = rx.resolve(t, Admission::Admitted, t0);
        let _ = outputs(&mut rx);
        rx.handle_write_done(1, true, t0 + Duration::from_millis(3));
        assert_eq!(rx.stats().response_write.snapshot().count, 1);
        // Stream 2's Backpressured answer never completes.
        let dl = t0 + cfg.response_write_timeout;
        rx.handle_timeout(dl - Duration::from_millis(1));
        assert!(outputs(&mut rx).is_empty());
        rx.handle_timeout(dl);
        assert_eq!(
            outputs(&mut rx),
            vec![Output::Reset {
                stream: 2,
                code: RESPONSE_TIMEOUT_CODE
            }]
        );
        let c = rx.counters();
        assert_eq!(
            (c.response_written, c.response_failed, c.response_timed_out),
            (1, 1, 1)
        );
        // A late completion report for the reset stream changes nothing.
        rx.handle_write_done(2, true, dl);
        assert_eq!(rx.counters().response_written, 1);
    }

    /// R2, R3: the first copy's connection closing does not undo its
    /// admission: the payload is admitted and remembered, and the retry on
    /// the new connection is answered Accepted (replayed).
    #[test]
    fn closed_stream_keeps_admission() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(ReceiverConfig::default());
        let h = hdr(6, b"k");
        let t = admit(&mut rx, A, 1, &h, t0);
        rx.handle_stream_closed(1);
        assert_eq!(
            rx.resolve(t, Admission::Admitted, t0),
            Ok(Outcome::Accepted)
        );
        assert!(outputs(&mut rx).is_empty(), "nothing to answer on");
        assert_eq!(
            rx.handle_request(A, 2, &h, t0),
            Admit::Answered(Outcome::Accepted)
        );
        assert_eq!(responded(&mut rx), vec![(2, Outcome::Accepted, true)]);
    }
}
