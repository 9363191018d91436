//! One ACKed send, sans-IO: attempts, the duplicate-safe retry, re-issue on
//! a replacement connection, and the caller's budget.
//!
//! # The budget
//!
//! A send started at `t0` with budget `b` (cut to
//! [`SenderConfig::max_budget`]) ends by its deadline `t0 + b` and never
//! before it without an answer: the only early ends are an outcome from the
//! receiver or a malformed answer. The first attempt waits
//! `min(attempt_timeout, remaining / 2)` — `attempt_timeout` from the
//! connection's live RTT ([`RttEstimator`](super::RttEstimator)) — then the
//! one retry goes out with the same request id and waits for *all* the rest
//! of the budget: a retry never shortens (clips) the caller's budget, and
//! the first attempt is not abandoned — an answer on either stream ends the
//! send. Re-issues after a connection replacement do not use up the retry.
//!
//! # Calling order
//!
//! [`AckSend::start`] with the peer's live connection (if any), then feed
//! every event for this send: [`AckSend::handle_response`] /
//! [`AckSend::handle_attempt_failed`] for its streams,
//! [`AckSend::handle_replaced`] / [`AckSend::handle_connected`] /
//! [`AckSend::handle_closed`] for the peer's connections, and
//! [`AckSend::handle_timeout`] at [`AckSend::poll_timeout`] (early calls are
//! harmless). Each returns a [`Step`]: open and write an attempt
//! ([`Step::Issue`]), get a connection ([`Step::NeedConnection`]), nothing
//! ([`Step::Wait`]), or the result ([`Step::Done`], exactly once).

use std::time::{Duration, Instant};

use super::config::SenderConfig;
use super::receiver::BUSY_CODE;
use super::wire::{AckWireError, Outcome, RequestId, Response};

/// The peer's live connection as a send sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Connection generation.
    pub generation: u64,
    /// First-attempt timeout on it (from its RTT estimate).
    pub attempt_timeout: Duration,
}

/// Why an attempt is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The first attempt.
    First,
    /// The duplicate-safe retry after the attempt on `generation` got no
    /// answer in time (an ACK timeout: feed it to the stuck detector).
    TimedOut {
        /// Where the timed-out attempt was sent.
        generation: u64,
    },
    /// The retry after the only live attempt's stream failed.
    AfterFailure,
    /// A re-issue on a new connection.
    Reissue,
}

/// An attempt to write: open a bidirectional stream of kind `ACK` on
/// connection `generation` and write the request (with the retry flag set
/// when `retry`), then finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Attempt number within the send (0 first); identifies the stream in
    /// later events.
    pub index: u8,
    /// Connection to send on.
    pub generation: u64,
    /// Set the request's retry flag.
    pub retry: bool,
    /// Why.
    pub cause: Cause,
}

/// A delivered send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Attempts issued.
    pub attempts: u8,
    /// The attempt whose answer was read.
    pub answered_by: u8,
    /// Answered from the receiver's dedupe cache: an earlier copy was the one
    /// admitted.
    pub replayed: bool,
    /// Connection the answer came on.
    pub generation: u64,
    /// Start → answer.
    pub latency: Duration,
}

/// Why an ACKed send failed. Only [`AckError::TimedOut`] leaves it unknown
/// whether the payload was admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The receiver answered with a rejection: `Backpressured`,
    /// `ConsumerGone`, `Conflict`, or `Duplicate` with no other copy left to
    /// answer. Nothing was admitted (for `Conflict`: this payload was not).
    #[error("receiver answered {outcome:?}")]
    Rejected {
        /// The outcome.
        outcome: Outcome,
        /// With `Backpressured`: the receiver's hint.
        retry_after: Option<Duration>,
    },
    /// No answer within the budget while a connection was up.
    #[error("no receive-ACK within the budget after {attempts} attempts")]
    TimedOut {
        /// Attempts issued.
        attempts: u8,
        /// Connection of the last live attempt (an ACK timeout there).
        generation: Option<u64>,
    },
    /// The budget ran out with no connection to send on.
    #[error("no connection to the peer within the budget ({attempts} attempts)")]
    ConnectionLost {
        /// Attempts issued.
        attempts: u8,
    },
    /// The answer did not parse.
    #[error("malformed receive-ACK response: {0}")]
    Malformed(#[source] AckWireError),
    /// The answer named another request id.
    #[error("receive-ACK response for another request id")]
    WrongId,
    /// The receiver reset the stream with this code and no retry was left.
    #[error("receive-ACK stream reset by peer: code {code:#x}")]
    Reset {
        /// Application error code (0 for a local stream failure).
        code: u64,
    },
}

/// Why an attempt's stream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The peer reset or stopped the stream.
    Reset(u64),
    /// The response did not parse.
    Malformed(AckWireError),
    /// Opening or writing failed locally (stream limit, write error).
    Local,
}

/// What the driver does next for this send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Issue this attempt.
    Issue(Attempt),
    /// Nothing now.
    Wait,
    /// No live connection and nothing in flight: repair (dial) the peer and
    /// report it with [`AckSend::handle_connected`].
    NeedConnection,
    /// The send is over (returned once).
    Done(Result<Delivered, AckError>),
}

#[derive(Clone, Copy, Debug)]
struct AttemptState {
    generation: u64,
    live: bool,
    timer: Option<Instant>,
}

/// One ACKed send.
#[derive(Clone, Debug)]
pub struct AckSend {
    id: RequestId,
    cfg: SenderConfig,
    started: Instant,
    deadline: Instant,
    attempts: Vec<AttemptState>,
    retry_used: bool,
    reissues: u8,
    current: Option<Link>,
    done: bool,
}

impl AckSend {
    /// A send of request `id` with `budget` (cut to `cfg.max_budget`).
    #[must_use]
    pub fn new(id: RequestId, budget: Duration, cfg: &SenderConfig, now: Instant) -> Self {
        Self {
            id,
            cfg: *cfg,
            started: now,
            deadline: now + budget.min(cfg.max_budget),
            attempts: Vec::with_capacity(2),
            retry_used: false,
            reissues: 0,
            current: None,
            done: false,
        }
    }

    /// The request id (the same on every attempt).
    #[must_use]
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// When the send ends at the latest.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether [`Step::Done`] was returned.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Starts the send on `link`, the peer's live connection, if any.
    pub fn start(&mut self, link: Option<Link>, now: Instant) -> Step {
        match link {
            Some(l) => {
                self.current = Some(l);
                self.issue(l, Cause::First, now)
            }
            None => Step::NeedConnection,
        }
    }

    fn issue(&mut self, link: Link, cause: Cause, now: Instant) -> Step {
        let index = self.attempts.len();
        let Ok(index_u8) = u8::try_from(index) else {
            return Step::Wait;
        };
        if matches!(cause, Cause::TimedOut { .. } | Cause::AfterFailure) {
            self.retry_used = true;
            for a in &mut self.attempts {
                a.timer = None;
            }
        }
        let timer = (!self.retry_used).then(|| {
            let half = self.deadline.saturating_duration_since(now) / 2;
            now + link.attempt_timeout.min(half)
        });
        self.attempts.push(AttemptState {
            generation: link.generation,
            live: true,
            timer,
        });
        Step::Issue(Attempt {
            index: index_u8,
            generation: link.generation,
            retry: index > 0,
            cause,
        })
    }

    fn attempts_u8(&self) -> u8 {
        u8::try_from(self.attempts.len()).unwrap_or(u8::MAX)
    }

    fn any_live(&self) -> bool {
        self.attempts.iter().any(|a| a.live)
    }

    fn done(&mut self, r: Result<Delivered, AckError>) -> Step {
        self.done = true;
        for a in &mut self.attempts {
            a.live = false;
            a.timer = None;
        }
        Step::Done(r)
    }

    /// Marks attempt `index` answered or failed; its connection generation,
    /// or `None` when the send is over or the attempt unknown.
    fn settle(&mut self, index: u8) -> Option<u64> {
        if self.done {
            return None;
        }
        let a = self.attempts.get_mut(usize::from(index))?;
        a.live = false;
        a.timer = None;
        Some(a.generation)
    }

    /// Attempt `index`'s stream delivered `resp`. Answers on attempts the
    /// send already gave up (a replaced connection) still count.
    pub fn handle_response(&mut self, index: u8, resp: &Response, now: Instant) -> Step {
        let Some(generation) = self.settle(index) else {
            return Step::Wait;
        };
        if resp.id != self.id {
            return self.done(Err(AckError::WrongId));
        }
        match resp.outcome {
            Outcome::Accepted => {
                let d = Delivered {
                    attempts: self.attempts_u8(),
                    answered_by: index,
                    replayed: resp.replayed,
                    generation,
                    latency: now.saturating_duration_since(self.started),
                };
                self.done(Ok(d))
            }
            // Another copy is in admission at the receiver; its answer comes
            // on that copy's stream.
            Outcome::Duplicate if self.any_live() => Step::Wait,
            outcome => self.done(Err(AckError::Rejected {
                outcome,
                retry_after: resp.retry_after,
            })),
        }
    }

    /// Attempt `index`'s stream failed without an answer.
    pub fn handle_attempt_failed(
        &mut self,
        index: u8,
        failure: AttemptFailure,
        now: Instant,
    ) -> Step {
        if self.settle(index).is_none() {
            return Step::Wait;
        }
        let code = match failure {
            AttemptFailure::Malformed(e) => return self.done(Err(AckError::Malformed(e))),
            AttemptFailure::Reset(c) if c == u64::from(BUSY_CODE) => {
                return self.done(Err(AckError::Rejected {
                    outcome: Outcome::Backpressured,
                    retry_after: None,
                }));
            }
            AttemptFailure::Reset(c) => c,
            AttemptFailure::Local => 0,
        };
        if self.any_live() {
            return Step::Wait;
        }
        match self.current {
            Some(l) if !self.retry_used && now < self.deadline => {
                self.issue(l, Cause::AfterFailure, now)
            }
            None => Step::NeedConnection,
            Some(_) => self.done(Err(AckError::Reset { code })),
        }
    }

    /// A newer connection `new` replaced connection `old` to the peer:
    /// attempts on `old` are lost, the send re-issues on `new`.
    pub fn handle_replaced(&mut self, old: u64, new: Link, now: Instant) -> Step {
        self.lose(old);
        self.current = Some(new);
        self.recover(new, now)
    }

    /// A connection to the peer became live (after a repair dial or the
    /// peer's own). Starts or re-issues the send if nothing is in flight.
    pub fn handle_connected(&mut self, link: Link, now: Instant) -> Step {
        self.current = Some(link);
        self.recover(link, now)
    }

    /// Connection `generation` closed with no replacement (yet).
    pub fn handle_closed(&mut self, generation: u64, _now: Instant) -> Step {
        self.lose(generation);
        if self.current.is_some_and(|l| l.generation == generation) {
            self.current = None;
        }
        if self.done || self.any_live() {
            Step::Wait
        } else {
            Step::NeedConnection
        }
    }

    fn lose(&mut self, generation: u64) {
        for a in self
            .attempts
            .iter_mut()
            .filter(|a| a.generation == generation)
        {
            a.live = false;
            a.timer = None;
        }
    }

    fn recover(&mut self, link: Link, now: Instant) -> Step {
        if self.done || self.any_live() || now >= self.deadline {
            return Step::Wait;
        }
        if self.attempts.is_empty() {
            return self.issue(link, Cause::First, now);
        }
        if self.reissues >= self.cfg.max_reissues {
            return Step::Wait;
        }
        self.reissues += 1;
        self.issue(link, Cause::Reissue, now)
    }

    /// Handles the budget deadline and attempt timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Step {
        if self.done {
            return Step::Wait;
        }
        if now >= self.deadline {
            let attempts = self.attempts_u8();
            let last_live = self.attempts.iter().rev().find(|a| a.live);
            let e = match last_live {
                Some(a) => AckError::TimedOut {
                    attempts,
                    generation: Some(a.generation),
                },
                None => AckError::ConnectionLost { attempts },
            };
            return self.done(Err(e));
        }
        let due = self
            .attempts
            .iter_mut()
            .find(|a| a.live && a.timer.is_some_and(|t| t <= now));
        let Some(a) = due else {
            return Step::Wait;
        };
        a.timer = None;
        let generation = a.generation;
        match self.current {
            Some(l) if !self.retry_used => self.issue(l, Cause::TimedOut { generation }, now),
            _ => Step::Wait,
        }
    }

    /// The next time [`AckSend::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        self.attempts
            .iter()
            .filter(|a| a.live)
            .filter_map(|a| a.timer)
            .chain(std::iter::once(self.deadline))
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::*;

    const ID: RequestId = RequestId([9; 16]);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(generation: u64, timeout_ms: u64) -> Link {
        Link {
            generation,
            attempt_timeout: ms(timeout_ms),
        }
    }

    fn resp(outcome: Outcome) -> Response {
        Response::new(ID, outcome)
    }

    fn issued(s: Step) -> Attempt {
        match s {
            Step::Issue(a) => a,
            other => panic!("expected Issue, got {other:?}"),
        }
    }

    /// R1, R4: an answered first attempt ends the send with Ok and the
    /// latency; later events are ignored.
    #[test]
    fn accepted_first_try() {
        let t0 = Instant::now();
        let mut s = AckSend::new(ID, ms(5000), &SenderConfig::default(), t0);
        let a = issued(s.start(Some(link(1, 900)), t0));
        assert_eq!(
            (a.index, a.generation, a.retry, a.cause),
            (0, 1, false, Cause::First)
        );
        assert_eq!(s.poll_timeout(), Some(t0 + ms(900)));
        let d = s.handle_response(0, &resp(Outcome::Accepted), t0 + ms(300));
        assert_eq!(
            d,
            Step::Done(Ok(Delivered {
                attempts: 1,
                answered_by: 0,
                replayed: false,
                generation: 1,
                latency: ms(300)
            }))
        );
        assert!(s.is_done());
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.handle_timeout(t0 + ms(9000)), Step::Wait);
    }

    /// R4: the retry goes out at the RTT-derived timeout with the same id,
    /// runs to the caller's full deadline (never clipped), and a late answer
    /// on the *first* attempt still counts.
    #[test]
    fn retry_never_clips_the_budget() {
        let t0 = Instant::now();
        let budget = ms(5000);
        let mut s = AckSend::new(ID, budget, &SenderConfig::default(), t0);
        let _ = issued(s.start(Some(link(1, 900)), t0));
        assert_eq!(s.handle_timeout(t0 + ms(899)), Step::Wait);
        let r = issued(s.handle_timeout(t0 + ms(900)));
        assert_eq!(
            (r.index, r.retry, r.cause),
            (1, true, Cause::TimedOut { generation: 1 })
        );
        assert_eq!(s.id(), ID);
        // No further timer: the retry waits for the whole remaining budget.
        assert_eq!(s.poll_timeout(), Some(t0 + budget));
        assert_eq!(
            s.handle_timeout(t0 + budget - Duration::from_nanos(1)),
            Step::Wait
        );
        let mut late = s.clone();
        assert!(matches!(
            late.handle_response(0, &resp(Outcome::Accepted), t0 + ms(4999)),
            Step::Done(Ok(Delivered {
                attempts: 2,
                answered_by: 0,
                ..
            }))
        ));
        assert_eq!(
            s.handle_timeout(t0 + budget),
            Step::Done(Err(AckError::TimedOut {
                attempts: 2,
                generation: Some(1)
            }))
        );
    }

    /// R4: with a budget shorter than twice the attempt timeout, the first
    /// attempt waits half the budget so the retry still gets the other half;
    /// budgets are cut to `max_budget`.
    #[test]
    fn short_and_long_budgets() {
        let t0 = Instant::now();
        let cfg = SenderConfig::default();
        let mut s = AckSend::new(ID, ms(400), &cfg, t0);
        let _ = issued(s.start(Some(link(1, 900)), t0));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(200)));
        let long = AckSend::new(ID, Duration::from_secs(3600), &cfg, t0);
        assert_eq!(long.deadline(), t0 + cfg.max_budget);
    }

    /// R1, R3: a replayed Accepted is success; rejections end the send with
    /// the outcome and the hint; Duplicate waits while another copy is out.
    #[test]
    fn outcomes_map_to_results() {
        let t0 = Instant::now();
        let cfg = SenderConfig::default();
        let start = || {
            let mut s = AckSend::new(ID, ms(5000), &cfg, t0);
            let _ = issued(s.start(Some(link(1, 900)), t0));
            s
        };
        let mut s = start();
        let mut r = resp(Outcome::Accepted);
        r.replayed = true;
        assert!(matches!(
            s.handle_response(0, &r, t0),
            Step::Done(Ok(Delivered { replayed: true, .. }))
        ));
        for o in [
            Outcome::Backpressured,
            Outcome::ConsumerGone,
            Outcome::Conflict,
            Outcome::Duplicate,
        ] {
            let mut s = start();
            let mut r = resp(o);
            r.retry_after = (o == Outcome::Backpressured).then(|| ms(50));
            assert_eq!(
                s.handle_response(0, &r, t0),
                Step::Done(Err(AckError::Rejected {
                    outcome: o,
                    retry_after: r.retry_after
                }))
            );
        }
        let mut s = start();
        let _ = issued(s.handle_timeout(t0 + ms(900)));
        assert_eq!(
            s.handle_response(1, &resp(Outcome::Duplicate), t0 + ms(950)),
            Step::Wait
        );
        assert!(matches!(
            s.handle_response(0, &resp(Outcome::Accepted), t0 + ms(990)),
            Step::Done(Ok(_))
        ));
        let mut s = start();
        let wrong = Response::new(RequestId([1; 16]), Outcome::Accepted);
        assert_eq!(
            s.handle_response(0, &wrong, t0),
            Step::Done(Err(AckError::WrongId))
        );
        let mut s = start();
        let e = AckWireError::Truncated { need: 23, got: 3 };
        assert_eq!(
            s.handle_attempt_failed(0, AttemptFailure::Malformed(e), t0),
            Step::Done(Err(AckError::Malformed(e)))
        );
    }

    /// R5: an in-flight send that meets Replaced re-issues at once on the
    /// new connection (same id, retry flag set), keeps its retry, and
    /// succeeds there; re-issues are bounded.
    #[test]
    fn replaced_reissues_on_new_connection() {
        let t0 = Instant::now();
        let cfg = SenderConfig {
            max_reissues: 2,
            ..SenderConfig::default()
        };
        let mut s = AckSend::new(ID, ms(5000), &cfg, t0);
        let _ = issued(s.start(Some(link(1, 900)), t0));
        let r = issued(s.handle_replaced(1, link(2, 900), t0 + ms(100)));
        assert_eq!(
            (r.index, r.generation, r.retry, r.cause),
            (1, 2, true, Cause::Reissue)
        );
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + ms(1000)),
            "the re-issue has its own timer"
        );
        let r = issued(s.handle_replaced(2, link(3, 900), t0 + ms(200)));
        assert_eq!(r.generation, 3);
        assert_eq!(
            s.handle_replaced(3, link(4, 900), t0 + ms(300)),
            Step::Wait,
            "bounded"
        );
        let mut s2 = AckSend::new(ID, ms(5000), &cfg, t0);
        let _ = issued(s2.start(Some(link(1, 900)), t0));
        let _ = issued(s2.handle_replaced(1, link(2, 900), t0 + ms(100)));
        assert!(matches!(
            s2.handle_response(1, &resp(Outcome::Accepted), t0 + ms(101)),
            Step::Done(Ok(Delivered {
                generation: 2,
                attempts: 2,
                ..
            }))
        ));
    }

    /// R5, T8: a send whose connection closes asks for a connection, and
    /// re-issues when one comes up; with no connection by the deadline it
    /// fails ConnectionLost. A send started with no connection waits for one.
    #[test]
    fn closed_then_reconnected() {
        let t0 = Instant::now();
        let cfg = SenderConfig::default();
        let mut s = AckSend::new(ID, ms(5000), &cfg, t0);
        let _ = issued(s.start(Some(link(1, 900)), t0));
        assert_eq!(s.handle_closed(1, t0 + ms(50)), Step::NeedConnection);
        assert_eq!(
            s.handle_timeout(t0 + ms(900)),
            Step::Wait,
            "nothing live to retry"
        );
        let mut lost = s.clone();
        let r = issued(s.handle_connected(link(2, 900), t0 + ms(400)));
        assert_eq!((r.generation, r.cause), (2, Cause::Reissue));
        assert!(matches!(
            s.handle_response(1, &resp(Outcome::Accepted), t0 + ms(450)),
            Step::Done(Ok(_))
        ));
        assert_eq!(
            lost.handle_timeout(t0 + ms(5000)),
            Step::Done(Err(AckError::ConnectionLost { attempts: 1 }))
        );
        let mut fresh = AckSend::new(ID, ms(5000), &cfg, t0);
        assert_eq!(fresh.start(None, t0), Step::NeedConnection);
        let a = issued(fresh.handle_connected(link(5, 900), t0 + ms(10)));
        assert_eq!((a.index, a.cause, a.retry), (0, Cause::First, false));
    }

    /// R4: a reset stream uses the one retry at once; a second failure
    /// ends the send with the code; a BUSY reset means Backpressured.
    #[test]
    fn stream_failures() {
        let t0 = Instant::now();
        let cfg = SenderConfig::default();
        let mut s = AckSend::new(ID, ms(5000), &cfg, t0);
        let _ = issued(s.start(Some(link(1, 900)), t0));
        let r = issued(s.handle_attempt_failed(0, AttemptFailure::Reset(0x12), t0));
        assert_eq!(r.cause, Cause::AfterFailure);
        assert_eq!(
            s.handle_attempt_failed(1, AttemptFailure::Local, t0),
            Step::Done(Err(AckError::Reset { code: 0 }))
        );
        let mut s = AckSend::new(ID, ms(5000), &cfg, t0);
        let _ = issued(s.start(Some(link(1, 900)), t0));
        assert_eq!(
            s.handle_attempt_failed(0, AttemptFailure::Reset(u64::from(BUSY_CODE)), t0),
            Step::Done(Err(AckError::Rejected {
                outcome: Outcome::Backpressured,
                retry_after: None
            }))
        );
    }
}
