//! The runtime task: owns the [`Node`], the clock and timers, and executes
//! its outputs (see the module docs of [`super`] for the picture).
//!
//! This is the driver: it is the one place in the crate that reads the
//! clock, and hands `now` to the core.
#![allow(clippy::disallowed_methods)]

use super::link::{AckOutcome, Link, LinkEvent, VerifyItem};
use super::subscribe::{DmSubscription, Queue, Subscription};
use super::{Cmd, DispatchStats, HELD_DMS, KEM_RECORD_SENDS, RuntimeConfig, RuntimeSnapshot};
use crate::proto::supervisor::{SupervisorSample, decide};
use crate::proto::{
    AttemptId, Delivery, DmDelivery, DmEngine, DmError, DmId, DmOutput, DmReceipt, Node, Output,
    PeerId, Received, SendOutcome, TopicId, Transmit, Verdict,
};
use crate::wire::{DmEnvelope, KemKey, Limits};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tracing::Instrument;

/// Extra time past a transmit's own timeout before the runtime's watchdog
/// abandons a link call that did not honour it.
const WATCHDOG_GRACE: Duration = Duration::from_millis(250);

/// What finished a send task.
struct Sent {
    id: u64,
    outcome: SendOutcome,
    took: Duration,
    timeout: Duration,
    watchdog: bool,
}

/// What finished a receive-ACKed DM send task.
struct DmSent {
    attempt: AttemptId,
    outcome: AckOutcome,
    watchdog: bool,
}

/// A DM whose sender's identity key was unknown when it arrived. A DM sent
/// right after connecting can overtake the sender's KEM key record (which
/// carries that key) on another stream, so it waits for the next verified
/// record instead of being lost.
struct Held {
    at: Instant,
    hop: PeerId,
    env: DmEnvelope,
}

/// Which state machine a verify request belongs to.
#[derive(Clone, Copy)]
enum Check {
    Node(u64),
    Dm(u64),
}

/// Per-interval telemetry for the supervisor.
#[derive(Default)]
struct Interval {
    produced: u64,
    consumed: u64,
    dispatch_time: Duration,
    dispatch_timeouts: u64,
    peer_timeouts: u64,
    timeout_sum: Duration,
}

pub(crate) struct State {
    node: Node,
    link: Arc<dyn Link>,
    cfg: RuntimeConfig,
    subs: HashMap<TopicId, Vec<Arc<Queue<Delivery>>>>,
    next_sub: u64,
    dispatch: VecDeque<Transmit>,
    sends: JoinSet<Sent>,
    /// Transmit id of each send task, so even a panicked task is reported.
    send_ids: HashMap<Id, u64>,
    verify_queue: VecDeque<(Check, VerifyItem)>,
    verifies: JoinSet<VerifyDone>,
    dm: DmEngine,
    dm_subs: Vec<Arc<Queue<DmDelivery>>>,
    /// Callers waiting for a receipt; bounded by the engine's
    /// `max_pending_sends`, which refuses sends beyond it.
    dm_replies: HashMap<DmId, oneshot::Sender<Result<DmReceipt, DmError>>>,
    /// Bounded by the engine's `max_attempts`. A panicked task leaves its
    /// attempt to the engine's own deadline (recorded as timed out).
    dm_sends: JoinSet<DmSent>,
    /// Our encoded KEM key record, sent to each peer whose link comes up
    /// (`None` without sealing).
    kem_record: Option<Bytes>,
    record_sends: JoinSet<SendOutcome>,
    /// At most [`HELD_DMS`], oldest dropped first.
    held: VecDeque<Held>,
    limits: Limits,
    workers: usize,
    idle_intervals: u32,
    interval: Interval,
    stats: DispatchStats,
}

type VerifyDone = (Vec<Check>, Vec<Verdict>);
type Joined<T> = Option<Result<T, tokio::task::JoinError>>;

enum Step {
    Cmd(Option<Cmd>),
    Link(Option<LinkEvent>),
    Sent(Joined<(Id, Sent)>),
    Verified(Joined<VerifyDone>),
    DmSent(Joined<DmSent>),
    RecordSent(Joined<SendOutcome>),
    Timer,
    Tick,
}

impl State {
    pub(super) fn new(
        node: Node,
        mut dm: DmEngine,
        sealing: bool,
        link: Arc<dyn Link>,
        cfg: RuntimeConfig,
    ) -> Self {
        let workers = cfg
            .initial_workers
            .clamp(cfg.supervisor.floor.max(1), cfg.supervisor.ceiling.max(1));
        let stats = DispatchStats {
            capacity: cfg.dispatch_queue,
            workers_target: workers,
            dm_sealing: sealing,
            ..DispatchStats::default()
        };
        let kem_record = if sealing {
            let rec = dm.kem_key_record(super::dm::serial());
            rec.to_bytes()
                .inspect_err(|e| tracing::warn!(error = %e, "KEM key record not encodable"))
                .ok()
        } else {
            None
        };
        let limits = Limits::from_config(&cfg.node);
        Self {
            node,
            link,
            cfg,
            subs: HashMap::new(),
            next_sub: 0,
            dispatch: VecDeque::new(),
            sends: JoinSet::new(),
            send_ids: HashMap::new(),
            verify_queue: VecDeque::new(),
            verifies: JoinSet::new(),
            dm,
            dm_subs: Vec::new(),
            dm_replies: HashMap::new(),
            dm_sends: JoinSet::new(),
            kem_record,
            record_sends: JoinSet::new(),
            held: VecDeque::new(),
            limits,
            workers,
            idle_intervals: 0,
            interval: Interval::default(),
            stats,
        }
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let me = self.node.id();
        let span = tracing::debug_span!("gossip_runtime", peer = %me);
        let _e = span.enter();
        let link = self.link.clone();
        // The first decision comes after a full interval of telemetry.
        // (tokio's interval panics on a zero period.)
        let every = self.cfg.supervisor_interval.max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link_open = true;
        loop {
            self.drain_outputs();
            self.start_sends();
            self.start_verifies();
            let timer = match (self.node.poll_timeout(), self.dm.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let step = tokio::select! {
                c = cmds.recv() => Step::Cmd(c),
                e = link.next_event(), if link_open => Step::Link(e),
                r = self.sends.join_next_with_id(), if !self.sends.is_empty() => Step::Sent(r),
                r = self.verifies.join_next(), if !self.verifies.is_empty() => Step::Verified(r),
                r = self.dm_sends.join_next(), if !self.dm_sends.is_empty() => Step::DmSent(r),
                r = self.record_sends.join_next(), if !self.record_sends.is_empty() => {
                    Step::RecordSent(r)
                }
                _ = sleep_until(timer) => Step::Timer,
                _ = tick.tick() => Step::Tick,
            };
            let now = Instant::now();
            match step {
                Step::Cmd(None) => break,
                Step::Cmd(Some(Cmd::Shutdown { reply })) => {
                    self.stop().await;
                    let _ = reply.send(());
                    return;
                }
                Step::Cmd(Some(c)) => self.command(c, now),
                Step::Link(None) => {
                    tracing::debug!("link closed");
                    link_open = false;
                }
                Step::Link(Some(e)) => self.link_event(e, now),
                Step::Sent(r) => self.sent(r, now),
                Step::Verified(r) => self.verified(r, now),
                Step::DmSent(r) => self.dm_sent(r, now),
                Step::RecordSent(r) => {
                    if !matches!(r, Some(Ok(SendOutcome::Delivered { .. }))) {
                        self.stats.kem_records_failed += 1;
                    }
                }
                Step::Timer => {
                    // Both are harmless when called early.
                    self.node.handle_timeout(now);
                    self.dm.handle_timeout(now);
                }
                Step::Tick => self.supervise(),
            }
        }
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.sends.abort_all();
        self.verifies.abort_all();
        self.dm_sends.abort_all();
        self.record_sends.abort_all();
        for q in self.subs.values().flatten() {
            q.close();
        }
        for q in &self.dm_subs {
            q.close();
        }
        // Callers still waiting for a receipt see `Stopped`.
        self.dm_replies.clear();
        self.link.close().await;
    }

    fn command(&mut self, c: Cmd, now: Instant) {
        match c {
            Cmd::Join {
                topic,
                bootstrap,
                reply,
            } => {
                self.node.join(topic, &bootstrap, now);
                let _ = reply.send(());
            }
            Cmd::Leave { topic, reply } => {
                self.node.leave(topic, now);
                let _ = reply.send(());
            }
            Cmd::Publish {
                topic,
                payload,
                reply,
            } => {
                let _ = reply.send(self.node.publish_with_seqno(topic, payload, now));
            }
            Cmd::Subscribe {
                topic,
                capacity,
                reply,
            } => {
                let cap = capacity.unwrap_or(self.cfg.subscriber_queue);
                let q = Queue::new(topic, self.next_sub, cap);
                self.next_sub += 1;
                self.subs.entry(topic).or_default().push(q.clone());
                let _ = reply.send(Subscription { q });
            }
            Cmd::Peers { topic, reply } => {
                let peers = self.node.active_view(&topic).into_iter().map(|(p, _)| p);
                let _ = reply.send(peers.collect());
            }
            Cmd::Snapshot { reply } => {
                let mut dispatch = self.stats.clone();
                dispatch.queued = self.dispatch.len();
                dispatch.in_flight = self.sends.len();
                dispatch.verify_queued = self.verify_queue.len();
                let _ = reply.send(RuntimeSnapshot {
                    node: self.node.snapshot(now),
                    subscribers: self.subs.values().flatten().map(|q| q.stats()).collect(),
                    dispatch,
                    dm: self.dm.stats(),
                    dm_subscribers: self.dm_subs.iter().map(|q| q.dm_stats()).collect(),
                });
            }
            Cmd::InsertKey { key } => {
                self.node.insert_key(key.clone());
                self.dm.learn_identity(key);
                self.retry_held(now);
            }
            Cmd::Connect { topic, peer } => self.node.connect(topic, peer, now),
            Cmd::SendDm { to, payload, reply } => self.send_dm(to, payload, reply, now),
            Cmd::Dms { capacity, reply } => {
                let cap = capacity.unwrap_or(self.cfg.dm_subscriber_queue);
                // DM queues carry no topic; the label is unused.
                let q = Queue::new(TopicId([0; 32]), self.next_sub, cap);
                self.next_sub += 1;
                self.dm_subs.push(q.clone());
                let _ = reply.send(DmSubscription { q });
            }
            Cmd::KemRecord { reply } => {
                let _ = reply.send(self.dm.kem_key_record(super::dm::serial()));
            }
            Cmd::AddKemKey { record, reply } => {
                let _ = reply.send(self.dm.handle_kem_key(record, now));
            }
            Cmd::Shutdown { .. } => {}
        }
    }

    fn link_event(&mut self, e: LinkEvent, now: Instant) {
        match e {
            LinkEvent::Frame { from, data } => {
                // KEM key records are not frames of the core's decoder; the
                // check is two bytes for anything else.
                if let Ok(record) = KemKey::parse(&data, &self.limits) {
                    let r = self.dm.handle_kem_key(record, now);
                    return self.dm_refused(from, r);
                }
                match self.node.handle_frame(from, &data, now) {
                    Ok(Received::Dm(env)) => self.dm_frame(from, env, None, now),
                    Ok(_) => {}
                    // Counted by the core's decoder (snapshot `wire`).
                    Err(err) => tracing::trace!(peer = %from, error = %err, "frame refused"),
                }
            }
            LinkEvent::Up { peer, key } => {
                self.stats.link_up += 1;
                if let Some(k) = key {
                    if self.node.insert_key(k.clone()) != peer {
                        tracing::warn!(%peer, "link reported a key of another peer");
                    } else {
                        self.dm.learn_identity(k);
                        self.retry_held(now);
                    }
                }
                self.dm.peer_up(peer, self.link.rtt(&peer));
                self.send_kem_record(peer);
            }
            LinkEvent::Down { peer } => {
                self.stats.link_down += 1;
                self.dm.peer_down(&peer);
                tracing::debug!(%peer, "link down");
            }
        }
    }

    /// Hands a DM envelope to the engine; one from an unknown sender is held
    /// (`held_since` is set when it is being retried).
    fn dm_frame(
        &mut self,
        hop: PeerId,
        env: DmEnvelope,
        held_since: Option<Instant>,
        now: Instant,
    ) {
        // Cheap: the byte fields are shared, not copied.
        let keep = env.clone();
        match self.dm.handle_frame(hop, env, now) {
            Err(DmError::UnknownSenderKey(_)) => {
                if self.held.len() >= HELD_DMS {
                    self.held.pop_front();
                    self.stats.dm_held_dropped += 1;
                }
                if held_since.is_none() {
                    self.stats.dm_held += 1;
                }
                self.held.push_back(Held {
                    at: held_since.unwrap_or(now),
                    hop,
                    env: keep,
                });
            }
            r => self.dm_refused(hop, r),
        }
    }

    /// Retries the held DMs (after a KEM key record was verified); those
    /// older than the verify timeout are dropped and counted.
    fn retry_held(&mut self, now: Instant) {
        let max_age = self.cfg.dm.verify_timeout;
        for h in std::mem::take(&mut self.held) {
            if now.saturating_duration_since(h.at) > max_age {
                self.stats.dm_held_expired += 1;
            } else {
                self.dm_frame(h.hop, h.env, Some(h.at), now);
            }
        }
    }

    /// Counts a DM frame or record the engine refused (the engine counts
    /// why).
    fn dm_refused(&mut self, from: PeerId, r: Result<(), DmError>) {
        if let Err(err) = r {
            self.stats.dm_refused += 1;
            tracing::debug!(peer = %from, error = %err, "DM input refused");
        }
    }

    fn send_dm(
        &mut self,
        to: PeerId,
        payload: Bytes,
        reply: oneshot::Sender<Result<DmReceipt, DmError>>,
        now: Instant,
    ) {
        // A fresh RTT for the attempt timeout; a connection the link has
        // but never reported up also becomes usable for the direct path.
        if let Some(rtt) = self.link.rtt(&to) {
            self.dm.peer_up(to, Some(rtt));
        }
        match self.dm.send(to, payload, now) {
            // The receipt is in the engine's output queue at the earliest,
            // drained after this returns.
            Ok(id) => {
                self.dm_replies.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn send_kem_record(&mut self, peer: PeerId) {
        let Some(rec) = self.kem_record.clone() else {
            return;
        };
        if self.record_sends.len() >= KEM_RECORD_SENDS {
            self.stats.kem_records_dropped += 1;
            return;
        }
        self.stats.kem_records_sent += 1;
        let timeout = self.cfg.dm.timeout_ceiling;
        let send = self.link.send(peer, rec, timeout);
        self.record_sends.spawn(async move {
            tokio::time::timeout(timeout + WATCHDOG_GRACE, send)
                .await
                .unwrap_or(SendOutcome::TimedOut)
        });
    }

    fn drain_dm(&mut self) {
        while let Some(o) = self.dm.poll_output() {
            match o {
                DmOutput::SendDirect {
                    attempt,
                    to,
                    frame,
                    timeout,
                }
                | DmOutput::Forward {
                    attempt,
                    next_hop: to,
                    frame,
                    timeout,
                } => {
                    self.stats.dm_sends += 1;
                    let send = self.link.send_acked(to, frame, timeout);
                    let span = tracing::debug_span!("dm_attempt", peer = %to);
                    self.dm_sends.spawn(
                        async move {
                            let (outcome, watchdog) =
                                match tokio::time::timeout(timeout + WATCHDOG_GRACE, send).await {
                                    Ok(o) => (o, false),
                                    Err(_) => (AckOutcome::TimedOut, true),
                                };
                            DmSent {
                                attempt,
                                outcome,
                                watchdog,
                            }
                        }
                        .instrument(span),
                    );
                }
                DmOutput::Verify(v) => self.queue_verify(Check::Dm(v.req), v),
                DmOutput::Deliver(d) => {
                    self.dm_subs.retain(|q| !q.is_closed());
                    if self.dm_subs.is_empty() {
                        self.stats.dm_no_subscriber += 1;
                        continue;
                    }
                    self.stats.dm_deliveries += 1;
                    for q in &self.dm_subs {
                        q.push(d.clone());
                    }
                }
                DmOutput::Receipt(r) => {
                    if let Some(reply) = self.dm_replies.remove(&r.id) {
                        let _ = reply.send(Ok(r));
                    }
                }
            }
        }
    }

    fn dm_sent(&mut self, r: Joined<DmSent>, now: Instant) {
        let Some(Ok(s)) = r else {
            return;
        };
        if s.outcome == AckOutcome::Accepted {
            self.stats.dm_accepted += 1;
        } else {
            self.stats.dm_send_failed += 1;
            self.stats.dm_watchdog += u64::from(s.watchdog);
        }
        self.dm
            .handle_attempt_outcome(s.attempt, s.outcome.into(), now);
    }

    fn drain_outputs(&mut self) {
        self.drain_dm();
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Transmit(t) => self.enqueue(t),
                Output::Deliver(d) => self.deliver(d),
                Output::Verify(v) => self.queue_verify(Check::Node(v.req), v),
                Output::Event(e) => {
                    self.stats.events += 1;
                    tracing::debug!(event = ?e, "gossip event");
                }
            }
        }
    }

    fn queue_verify(&mut self, check: Check, v: crate::proto::VerifyRequest) {
        if self.verify_queue.len() >= self.cfg.verify_queue {
            // The core (or the DM engine) expires the pending check after
            // its verify timeout; nothing else holds it.
            self.stats.verify_dropped += 1;
            return;
        }
        let item = VerifyItem {
            key: v.key,
            signed: v.signed,
            signature: v.signature,
        };
        self.verify_queue.push_back((check, item));
    }

    fn enqueue(&mut self, t: Transmit) {
        self.interval.produced += 1;
        if self.dispatch.len() >= self.cfg.dispatch_queue {
            // Local congestion, reported like a slow peer (not a dead one):
            // the core cools the peer instead of evicting it.
            self.stats.rejected_full += 1;
            self.node
                .handle_send_outcome(t.id, SendOutcome::TimedOut, Instant::now());
            return;
        }
        self.dispatch.push_back(t);
    }

    fn deliver(&mut self, d: Delivery) {
        self.stats.deliveries += 1;
        if let Some(qs) = self.subs.get_mut(&d.topic) {
            qs.retain(|q| !q.is_closed());
            for q in qs.iter() {
                q.push(d.clone());
            }
        }
    }

    fn start_sends(&mut self) {
        while self.sends.len() < self.workers {
            let Some(t) = self.dispatch.pop_front() else {
                return;
            };
            let frame = match t.msg.to_bytes() {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(peer = %t.to, error = %e, "encode failed");
                    self.stats.encode_errors += 1;
                    self.node
                        .handle_send_outcome(t.id, SendOutcome::Failed, Instant::now());
                    continue;
                }
            };
            self.stats.dispatched += 1;
            let send = self.link.send(t.to, frame, t.timeout);
            let (id, timeout) = (t.id, t.timeout);
            let h = self.sends.spawn(async move {
                let start = Instant::now();
                let (outcome, watchdog) =
                    match tokio::time::timeout(timeout + WATCHDOG_GRACE, send).await {
                        Ok(o) => (o, false),
                        Err(_) => (SendOutcome::TimedOut, true),
                    };
                Sent {
                    id,
                    outcome,
                    took: start.elapsed(),
                    timeout,
                    watchdog,
                }
            });
            self.send_ids.insert(h.id(), id);
        }
    }

    fn sent(&mut self, r: Joined<(Id, Sent)>, now: Instant) {
        let (tid, s) = match r {
            None => return,
            Some(Ok((tid, s))) => (tid, s),
            Some(Err(e)) => {
                if let Some(id) = self.send_ids.remove(&e.id()) {
                    self.stats.failed += 1;
                    self.node.handle_send_outcome(id, SendOutcome::Failed, now);
                }
                return;
            }
        };
        self.send_ids.remove(&tid);
        let iv = &mut self.interval;
        iv.consumed += 1;
        iv.dispatch_time += s.took;
        iv.timeout_sum += s.timeout;
        match s.outcome {
            SendOutcome::Delivered { .. } => self.stats.delivered += 1,
            SendOutcome::TimedOut => {
                self.stats.timed_out += 1;
                if s.watchdog {
                    iv.dispatch_timeouts += 1;
                    self.stats.watchdog += 1;
                } else {
                    iv.peer_timeouts += 1;
                }
            }
            SendOutcome::Failed => self.stats.failed += 1,
        }
        self.node.handle_send_outcome(s.id, s.outcome, now);
    }

    fn start_verifies(&mut self) {
        while self.verifies.len() < self.cfg.verify_inflight && !self.verify_queue.is_empty() {
            let n = self.verify_queue.len().min(self.cfg.verify_batch.max(1));
            let (reqs, items): (Vec<Check>, Vec<VerifyItem>) = self.verify_queue.drain(..n).unzip();
            self.stats.verify_batches += 1;
            self.stats.verify_items += items.len() as u64;
            let fut = self.link.verify(items);
            self.verifies.spawn(async move { (reqs, fut.await) });
        }
    }

    fn verified(&mut self, r: Joined<VerifyDone>, now: Instant) {
        // A failed batch task leaves its requests to the core's verify timeout.
        let Some(Ok((reqs, verdicts))) = r else {
            return;
        };
        let keys_before = self.dm.stats().kem_keys_accepted;
        for (i, req) in reqs.into_iter().enumerate() {
            let v = verdicts.get(i).copied().unwrap_or(Verdict::Invalid);
            match req {
                Check::Node(req) => self.node.handle_verdict(req, v, now),
                Check::Dm(req) => self.dm.handle_verdict(req, v, now),
            }
        }
        if !self.held.is_empty() && self.dm.stats().kem_keys_accepted > keys_before {
            self.retry_held(now);
        }
    }

    /// The dispatch supervisor (G13) on the last interval's telemetry.
    fn supervise(&mut self) {
        let secs = self.cfg.supervisor_interval.as_secs_f64().max(1e-3);
        let iv = std::mem::take(&mut self.interval);
        let per = |n: u64| n as f64 / secs;
        let avg = |sum: Duration, n: u64| {
            if n == 0 {
                Duration::ZERO
            } else {
                sum / u32::try_from(n).unwrap_or(u32::MAX)
            }
        };
        let sample = SupervisorSample {
            queue_depth: self.dispatch.len(),
            queue_capacity: self.cfg.dispatch_queue,
            produced_per_s: per(iv.produced),
            consumed_per_s: per(iv.consumed),
            avg_dispatch: avg(iv.dispatch_time, iv.consumed),
            dispatch_timeouts_per_s: per(iv.dispatch_timeouts),
            peer_timeouts_per_s: per(iv.peer_timeouts),
            mean_send_timeout: avg(iv.timeout_sum, iv.consumed),
        };
        let d = decide(
            &self.cfg.supervisor,
            &sample,
            self.workers,
            self.idle_intervals,
        );
        if d.target != self.workers {
            tracing::debug!(from = self.workers, to = d.target, reason = ?d.reason, "dispatch workers");
        }
        self.workers = d.target;
        self.idle_intervals = d.idle_intervals;
        self.stats.workers_target = d.target;
        self.stats.supervisor_reason = Some(d.reason);
        self.stats.supervisor_runs += 1;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
