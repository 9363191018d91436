//! Sender and receiver state machines joined over a simulated path with
//! virtual time: seeded delay, retransmission-like stalls, black-holed
//! messages, a slow bounded consumer and a connection replacement. Checks
//! the end-to-end guarantees, not single transitions.

#![allow(clippy::disallowed_methods)] // the simulation owns the clock

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::identity::PeerId;
use crate::kind::Kind;

const PEER: PeerId = PeerId([7; 32]);

/// xorshift64*: enough randomness for a reproducible schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug)]
enum Ev {
    Request {
        send: usize,
        attempt: u8,
        conn: u64,
        stream: u32,
        retry: bool,
        /// The sender's remaining budget when it sent this copy.
        window: Duration,
    },
    Response {
        send: usize,
        attempt: u8,
        conn: u64,
        resp: Response,
    },
    Reset {
        send: usize,
        attempt: u8,
        conn: u64,
        code: u32,
    },
    SenderTimer(usize),
    ReceiverTimer,
    Drain,
    Replace,
}

struct Path {
    one_way: Duration,
    /// Per-message chance (‰) of a stall of 1–3 RTTs (a lost packet that
    /// QUIC retransmits).
    stall: u64,
    /// Per-message chance (‰) the message never arrives (a black hole).
    lost: u64,
}

struct Sim {
    now: Instant,
    seq: u64,
    events: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    slab: HashMap<usize, Ev>,
    rng: Rng,
    path: Path,
    conn: u64,
    sends: Vec<AckSend>,
    results: Vec<Option<Result<Delivered, AckError>>>,
    stats: SenderStats,
    rx: Receiver<u32>,
    streams: HashMap<u32, (usize, u8, u64)>,
    next_stream: u32,
    queue: VecDeque<RequestId>,
    queue_cap: usize,
    drain_every: Duration,
    admitted: Vec<RequestId>,
    /// When the last send ended.
    last_done: Instant,
}

impl Sim {
    fn new(seed: u64, path: Path, queue_cap: usize, drain_every: Duration) -> Self {
        let now = Instant::now();
        Self {
            now,
            seq: 0,
            events: BinaryHeap::new(),
            slab: HashMap::new(),
            rng: Rng(seed | 1),
            path,
            conn: 1,
            sends: Vec::new(),
            results: Vec::new(),
            stats: SenderStats::default(),
            rx: Receiver::new(ReceiverConfig::default()),
            streams: HashMap::new(),
            next_stream: 0,
            queue: VecDeque::new(),
            queue_cap,
            drain_every,
            admitted: Vec::new(),
            last_done: now,
        }
    }

    fn at(&mut self, t: Instant, ev: Ev) {
        self.seq += 1;
        let k = self.seq as usize;
        self.slab.insert(k, ev);
        self.events.push(Reverse((t, self.seq, k)));
    }

    /// Schedules a message over the path (or loses it).
    fn transmit(&mut self, ev: Ev) {
        if self.rng.chance(self.path.lost) {
            return;
        }
        let mut d = self.path.one_way;
        if self.rng.chance(self.path.stall) {
            d += self.path.one_way * 2 * (1 + self.rng.below(3) as u32);
        }
        d += Duration::from_micros(self.rng.below(2_000));
        let t = self.now + d;
        self.at(t, ev);
    }

    fn link(&self) -> Link {
        let rtt = RttEstimator::new(self.path.one_way * 2);
        Link {
            generation: self.conn,
            attempt_timeout: rtt.attempt_timeout(&AttemptTimeout::default()),
        }
    }

    fn start_send(&mut self, budget: Duration) {
        let i = self.sends.len();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        id[8..].copy_from_slice(&self.rng.next().to_be_bytes());
        self.sends.push(AckSend::new(
            RequestId(id),
            budget,
            &SenderConfig::default(),
            self.now,
        ));
        self.results.push(None);
        self.stats.on_registered();
        let l = self.link();
        let step = self.sends[i].start(Some(l), self.now);
        self.apply(i, step);
    }

    fn apply(&mut self, i: usize, step: Step) {
        self.stats.observe(&step);
        match step {
            Step::Issue(a) => {
                let stream = self.next_stream;
                self.next_stream += 1;
                let window = self.sends[i].deadline().saturating_duration_since(self.now);
                self.transmit(Ev::Request {
                    send: i,
                    attempt: a.index,
                    conn: a.generation,
                    stream,
                    retry: a.retry,
                    window,
                });
            }
            Step::Done(r) => {
                assert!(self.results[i].is_none(), "send {i} got two outcomes");
                self.results[i] = Some(r);
                self.last_done = self.now;
            }
            Step::Wait | Step::NeedConnection => {}
        }
        if let Some(t) = self.sends[i].poll_timeout() {
            self.at(t, Ev::SenderTimer(i));
        }
    }

    fn receiver_outputs(&mut self) {
        while let Some(o) = self.rx.poll_output() {
            match o {
                Output::Respond { stream, response } => {
                    self.rx.handle_write_done(stream, true, self.now);
                    if let Some(&(send, attempt, conn)) = self.streams.get(&stream) {
                        self.transmit(Ev::Response {
                            send,
                            attempt,
                            conn,
                            resp: response,
                        });
                    }
                }
                Output::Reset { stream, code } => {
                    if let Some(&(send, attempt, conn)) = self.streams.get(&stream) {
                        self.transmit(Ev::Reset {
                            send,
                            attempt,
                            conn,
                            code,
                        });
                    }
                }
            }
        }
        if let Some(t) = self.rx.poll_timeout() {
            self.at(t, Ev::ReceiverTimer);
        }
    }

    fn run(&mut self) {
        self.at(self.now + self.drain_every, Ev::Drain);
        while let Some(Reverse((t, _, k))) = self.events.pop() {
            let Some(ev) = self.slab.remove(&k) else {
                continue;
            };
            self.now = t;
            if self.results.iter().all(Option::is_some) && !matches!(ev, Ev::Request { .. }) {
                continue;
            }
            match ev {
                Ev::Request {
                    send,
                    attempt,
                    conn,
                    stream,
                    retry,
                    window,
                } => {
                    if conn != self.conn {
                        continue; // its connection is gone
                    }
                    self.streams.insert(stream, (send, attempt, conn));
                    let id = self.sends[send].id();
                    let payload = id.0;
                    let req = Request::new(Kind::DM, id, &payload, retry)
                        .unwrap()
                        .with_retry_window(window);
                    match self.rx.handle_request(PEER, stream, req.header(), self.now) {
                        Admit::Admit { ticket, .. } => {
                            let adm = if self.queue.len() < self.queue_cap {
                                Admission::Admitted
                            } else {
                                Admission::Full {
                                    retry_after: Some(self.drain_every),
                                }
                            };
                            if self.rx.resolve(ticket, adm, self.now) == Ok(Outcome::Accepted) {
                                self.queue.push_back(id);
                                self.admitted.push(id);
                            }
                        }
                        Admit::Answered(_) | Admit::Parked => {}
                    }
                    self.receiver_outputs();
                }
                Ev::Response {
                    send,
                    attempt,
                    conn,
                    resp,
                } => {
                    if conn != self.conn {
                        continue;
                    }
                    let step = self.sends[send].handle_response(attempt, &resp, self.now);
                    self.apply(send, step);
                }
                Ev::Reset {
                    send,
                    attempt,
                    conn,
                    code,
                } => {
                    if conn != self.conn {
                        continue;
                    }
                    let step = self.sends[send].handle_attempt_failed(
                        attempt,
                        AttemptFailure::Reset(u64::from(code)),
                        self.now,
                    );
                    self.apply(send, step);
                }
                Ev::SenderTimer(i) => {
                    let step = self.sends[i].handle_timeout(self.now);
                    self.apply(i, step);
                }
                Ev::ReceiverTimer => {
                    self.rx.handle_timeout(self.now);
                    self.receiver_outputs();
                }
                Ev::Drain => {
                    self.queue.pop_front();
                    let t = self.now + self.drain_every;
                    self.at(t, Ev::Drain);
                }
                Ev::Replace => {
                    let old = self.conn;
                    self.conn += 1;
                    let dead: Vec<u32> = self
                        .streams
                        .iter()
                        .filter(|(_, v)| v.2 == old)
                        .map(|(s, _)| *s)
                        .collect();
                    for s in dead {
                        self.rx.handle_stream_closed(s);
                    }
                    let l = self.link();
                    for i in 0..self.sends.len() {
                        let step = self.sends[i].handle_replaced(old, l, self.now);
                        self.apply(i, step);
                    }
                }
            }
        }
    }

    /// The end-to-end guarantees every run must keep.
    fn check(&self) {
        let mut seen = HashSet::new();
        for id in &self.admitted {
            assert!(seen.insert(*id), "{id:?} admitted twice");
        }
        for (i, r) in self.results.iter().enumerate() {
            let id = self.sends[i].id();
            match r {
                None => panic!("send {i} got no outcome"),
                Some(Ok(_)) => assert!(seen.contains(&id), "send {i} Ok but never admitted"),
                Some(Err(AckError::TimedOut { .. } | AckError::ConnectionLost { .. })) => {}
                Some(Err(e)) => {
                    assert!(!seen.contains(&id), "send {i} admitted but reported {e:?}")
                }
            }
        }
    }
}

/// R1, R3, R4: 300 ms RTT, 5 % of messages stalled for 1–3 RTTs and 1 %
/// black-holed, 400 sends over 20 seeds: every send gets exactly one
/// outcome, no payload is admitted twice, every Ok was admitted and no
/// admitted send reports a rejection; most sends succeed.
#[test]
fn lossy_long_path_exactly_one_outcome_no_double_admission() {
    let mut ok = 0;
    let mut total = 0;
    let mut retries = 0;
    for seed in 1..=20u64 {
        let path = Path {
            one_way: Duration::from_millis(150),
            stall: 50,
            lost: 10,
        };
        let mut sim = Sim::new(seed, path, 1 << 20, Duration::from_secs(1));
        for _ in 0..20 {
            sim.start_send(Duration::from_secs(5));
            sim.now += Duration::from_millis(7);
        }
        sim.run();
        sim.check();
        total += sim.results.len();
        ok += sim
            .results
            .iter()
            .filter(|r| matches!(r, Some(Ok(_))))
            .count();
        retries += sim.stats.counters.retries;
        assert_eq!(sim.stats.counters.registered, 20);
        let c = sim.stats.counters;
        assert_eq!(
            c.accepted + c.rejected + c.timed_out + c.closed + c.failed,
            20
        );
    }
    assert_eq!(total, 400);
    assert!(retries > 0, "the schedule must exercise retries");
    // A send fails only if both copies or both answers are black-holed.
    assert!(ok >= 396, "{ok} of {total} succeeded");
}

/// R2: a consumer that drains one message per second behind a queue of 4:
/// sends beyond its capacity are answered Backpressured within one RTT —
/// never a silent wait until the budget ends.
#[test]
fn slow_consumer_gets_backpressured_within_budget() {
    let path = Path {
        one_way: Duration::from_millis(150),
        stall: 0,
        lost: 0,
    };
    let mut sim = Sim::new(3, path, 4, Duration::from_secs(1));
    let t0 = sim.now;
    for _ in 0..10 {
        sim.start_send(Duration::from_secs(5));
    }
    sim.run();
    sim.check();
    let bp = sim
        .results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Some(Err(AckError::Rejected {
                    outcome: Outcome::Backpressured,
                    retry_after: Some(_)
                }))
            )
        })
        .count();
    let ok = sim
        .results
        .iter()
        .filter(|r| matches!(r, Some(Ok(_))))
        .count();
    assert_eq!((ok, bp), (4, 6));
    assert_eq!(sim.rx.counters().backpressured, 6);
    assert_eq!(sim.stats.counters.timed_out, 0);
    // Every answer came back in about one RTT.
    assert!(
        sim.last_done - t0 < Duration::from_millis(400),
        "{:?}",
        sim.last_done - t0
    );
}

/// R5: the connection is replaced while 20 sends are in flight (their
/// requests and answers on the old connection are lost): every send
/// re-issues on the new one and succeeds, none admitted twice, within one
/// RTT of the replacement.
#[test]
fn replaced_mid_send_reissues_and_succeeds() {
    for seed in 1..=5 {
        let path = Path {
            one_way: Duration::from_millis(150),
            stall: 0,
            lost: 0,
        };
        let mut sim = Sim::new(seed, path, 1 << 20, Duration::from_secs(1));
        let t0 = sim.now;
        for _ in 0..20 {
            sim.start_send(Duration::from_secs(5));
        }
        // Mid-flight: some requests admitted (answers lost), some not yet there.
        sim.at(
            t0 + Duration::from_millis(150) + Duration::from_micros(1000),
            Ev::Replace,
        );
        sim.run();
        sim.check();
        assert!(
            sim.results.iter().all(|r| matches!(r, Some(Ok(_)))),
            "{:?}",
            sim.results
        );
        assert_eq!(sim.stats.counters.reissues, 20);
        let replayed = sim.stats.counters.accepted_replayed;
        assert!(
            replayed > 0 && replayed < 20,
            "seed {seed}: some answers replayed ({replayed})"
        );
        assert!(
            sim.last_done - t0 < Duration::from_millis(150 + 300 + 10),
            "{:?}",
            sim.last_done - t0
        );
    }
}

/// R6: a one-way black hole on a connection that still looks live: every
/// attempt times out, and the third consecutive ACK timeout yields the
/// reconnect decision.
#[test]
fn blackhole_triggers_stuck_reconnect() {
    let path = Path {
        one_way: Duration::from_millis(150),
        stall: 0,
        lost: 1000,
    };
    let mut sim = Sim::new(1, path, 16, Duration::from_secs(1));
    for _ in 0..3 {
        sim.start_send(Duration::from_secs(2));
    }
    sim.run();
    let mut d = StuckDetector::new(StuckConfig::default(), PEER, 1);
    let mut decision = None;
    for r in &sim.results {
        let Some(Err(AckError::TimedOut {
            generation: Some(g),
            ..
        })) = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(*g, 1);
        if let Some(x) = d.on_ack_timeout(true, sim.now) {
            decision = Some(x);
        }
    }
    let x = decision.expect("reconnect decided");
    assert_eq!(x.reason, ReconnectReason::AckTimeouts { consecutive: 3 });
    assert_eq!(sim.stats.counters.timed_out, 3);
    assert_eq!(sim.stats.counters.retries, 3);
}
