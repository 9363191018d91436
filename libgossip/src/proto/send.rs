//! The send path every gossip frame takes: cooling, the outbound budget
//! window, and the per-peer queue behind it (`sendq.rs`).
//!
//! [`Ctx`] is the borrowed node context topic code works with; its
//! [`Ctx::send`] decides, for one frame, between sending now, queuing behind
//! the peer's full window, coalescing (IHAVE stays in its topic's batch) and
//! dropping (cooling, or a full queue — both counted).
//! [`Ctx::drain`] sends queued work as the peer's window reopens.

use super::config::Config;
use super::health::budget::SendKind;
use super::health::{PeerHealth, SendDecision, SendTicket};
use super::message::{Body, Kind, Message};
use super::output::Outbox;
use super::recent::age_ms;
use super::sendq::SendQueues;
use super::types::{MessageId, PeerId, TopicId};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::time::Instant;

/// Borrowed node context handed to topic code.
pub(crate) struct Ctx<'a> {
    pub me: PeerId,
    pub cfg: &'a Config,
    pub rng: &'a mut ChaCha8Rng,
    pub now: Instant,
    pub out: &'a mut Outbox,
    /// Messages whose signature is being checked right now.
    pub verifying: &'a HashMap<MessageId, u32>,
    /// Peer health: score, RTT timeouts, cooling, budgets.
    pub health: &'a mut PeerHealth<PeerId, TopicId>,
    /// Work waiting for a peer's window to reopen.
    pub sendq: &'a mut SendQueues,
    /// Admitted sends awaiting their outcome (transmit id → ticket, sent at).
    pub tickets: &'a mut HashMap<u64, (SendTicket<PeerId, TopicId>, Instant)>,
    pub next_send: &'a mut u64,
    /// Membership / key sends (outside the data budget) awaiting their outcome.
    pub untracked: &'a mut HashMap<u64, (PeerId, Instant)>,
}

/// Membership / key-request sends tracked for failure detection at most.
const UNTRACKED_MAX: usize = 4096;

/// What became of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Handed to the driver.
    Out,
    /// Waiting behind the peer's full window; goes out as it reopens.
    Queued,
    /// Cooling holds the (peer, topic) back (counted).
    Suppressed,
    /// IHAVE over budget: keep it in the batch and retry with the next flush.
    Coalesce,
    /// Window and queue full: dropped (counted; IHAVE/IWANT or anti-entropy
    /// recover data).
    Skip,
}

/// Budget class of a body.
fn send_kind(b: &Body) -> SendKind {
    match b {
        Body::Eager(_) => SendKind::Eager,
        Body::IHave(_) => SendKind::IHave,
        Body::IWant(_) => SendKind::IWant,
        Body::Digest(_) => SendKind::AntiEntropy,
        // A key is 1,952 bytes sent on request: a pull, so a flood of
        // requests is bounded by the asker's window and queue like IWANT.
        Body::KeyResponse { .. } => SendKind::IWant,
        _ => SendKind::Control,
    }
}

impl Ctx<'_> {
    /// Sends through peer health: cooling may hold it back (after the
    /// cooldown exactly one send goes out as the probe), a full window queues
    /// it (IHAVE: coalesces it), a full queue drops it; all counted.
    pub(crate) fn send(&mut self, topic: TopicId, to: PeerId, body: Body) -> Sent {
        let kind = send_kind(&body);
        self.send_as(topic, to, body, kind)
    }

    /// [`Ctx::send`] with an explicit budget class (IWANT answers, anti-entropy).
    pub(crate) fn send_as(
        &mut self,
        topic: TopicId,
        to: PeerId,
        body: Body,
        kind: SendKind,
    ) -> Sent {
        let msg = Message { topic, body };
        let k = msg.kind().index();
        if msg.kind() == Kind::Membership || matches!(msg.body, Body::KeyRequest { .. }) {
            // Membership frames and key requests are not part of the data
            // budget (EAGER, IHAVE, IWANT, anti-entropy, GRAFT/PRUNE, key
            // responses): dropping a join reply to save a slot would only
            // damage the overlay, and a key request is small and sent once
            // per unknown origin. They still respect cooling, without
            // consuming its single probe.
            if self.health.cooling().is_suppressed(to, topic, self.now) {
                self.out.gated[k] += 1;
                return Sent::Suppressed;
            }
            *self.next_send += 1;
            let id = *self.next_send;
            // Tracked only for failure detection, so past the bound (a peer
            // flooding membership requests) the outcome just goes untracked
            // and is counted as an unknown outcome when it comes.
            if self.untracked.len() < UNTRACKED_MAX {
                self.untracked.insert(id, (to, self.now));
            }
            let timeout = self.health.send_timeout(&to);
            self.out.transmit(to, msg, timeout, false, id);
            return Sent::Out;
        }
        // Keep order within a class: nothing overtakes queued work.
        if kind != SendKind::IHave && self.sendq.has_backlog(&to, kind) {
            return self.enqueue(to, msg, kind);
        }
        match self.health.begin_send(to, topic, kind, self.now) {
            SendDecision::Send { ticket, timeout } => {
                self.transmit(to, msg, ticket, timeout);
                Sent::Out
            }
            SendDecision::Suppressed { .. } => {
                self.out.gated[k] += 1;
                Sent::Suppressed
            }
            SendDecision::OverBudget => {
                self.out.over_budget[k] += 1;
                if kind == SendKind::IHave {
                    // The topic's IHAVE batch is the coalescing buffer.
                    Sent::Coalesce
                } else {
                    self.enqueue(to, msg, kind)
                }
            }
        }
    }

    fn transmit(
        &mut self,
        to: PeerId,
        msg: Message,
        ticket: SendTicket<PeerId, TopicId>,
        timeout: std::time::Duration,
    ) {
        let probe = ticket.is_probe();
        *self.next_send += 1;
        let id = *self.next_send;
        self.tickets.insert(id, (ticket, self.now));
        self.out.transmit(to, msg, timeout, probe, id);
    }

    fn enqueue(&mut self, to: PeerId, msg: Message, kind: SendKind) -> Sent {
        let size = msg.encoded_len();
        match self
            .sendq
            .push(to, msg.topic, msg.body, kind, size, self.now)
        {
            Ok(()) => Sent::Queued,
            Err(_) => {
                // Window and queue full: the peer is not keeping up.
                self.health.on_budget_overflow(to, self.now);
                Sent::Skip
            }
        }
    }

    /// Sends `peer`'s queued work while its window has room.
    pub(crate) fn drain(&mut self, peer: PeerId) {
        while let Some(e) = self.sendq.pop(&peer, self.now) {
            match self.health.begin_send(peer, e.topic, e.kind, self.now) {
                SendDecision::Send { ticket, timeout } => {
                    let waited = age_ms(e.waited(self.now));
                    let mut body = e.body;
                    if let Body::Digest(entries) = &mut body {
                        // Ages are as of sending: the wait behind the window
                        // counts, or the receiver would date the messages
                        // too late and ask for some stored before it joined.
                        for d in entries {
                            d.age_ms = d.age_ms.saturating_add(waited);
                        }
                    }
                    let msg = Message {
                        topic: e.topic,
                        body,
                    };
                    self.transmit(peer, msg, ticket, timeout);
                }
                SendDecision::Suppressed { .. } => {
                    // Cooled meanwhile: this topic's backlog is moot.
                    let topic = e.topic;
                    self.sendq.requeue(peer, e);
                    self.sendq.flush(&peer, Some(topic));
                }
                SendDecision::OverBudget => {
                    self.sendq.requeue(peer, e);
                    return;
                }
            }
        }
    }

    /// Whether `p` may be made EAGER on `topic` now (GRAFT respects cooling
    /// backoff and post-recovery probation).
    pub(crate) fn graft_ok(&self, topic: TopicId, p: &PeerId) -> bool {
        self.health
            .cooling()
            .graft_blocked_until(*p, topic, self.now)
            .is_none()
    }
}
