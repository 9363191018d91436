//! `ClientId` idempotency for `Publish` and `SendDm`: one table per
//! gossipd, shared by every connection, from a request's 16-byte client id
//! to the hash of its content and its outcome. Capability: R3 (replay of
//! the cached outcome; same id with other content refused and counted),
//! at the application API.
//!
//! The first request with an id claims it ([`Claim::Run`]) and does the
//! work; a retry with the same id and content gets the stored outcome
//! ([`Claim::Replay`]) or, while the first is still in flight, waits for
//! it ([`Claim::Wait`]; waiting is safe because every in-flight operation
//! ends: a publish is one runtime call, a DM's receipt comes within its
//! budget). The same id with other content is [`Claim::Conflict`].
//! Only outcomes worth replaying are kept: a publish that was sent, a DM
//! some path delivered. A refusal or failure (not joined, busy,
//! unreachable) frees the id, so that retrying it with the same id really
//! tries again, as the status table of `docs/protocols/client.md` says;
//! retries already waiting get that failure.
//!
//! Bounded: at most [`ClientIdLimits::capacity`] ids (in flight and done);
//! a finished outcome is kept for [`ClientIdLimits::ttl`] (expiries
//! counted) and gives way earlier, oldest first, when a new id needs the
//! room (evictions counted); an in-flight id is never evicted, so with
//! every slot in flight a new id is refused ([`Claim::Full`], counted).
//! In memory only: a gossipd restart forgets every id.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ApiStats;

/// A request's client id.
pub(crate) type ClientId = [u8; 16];

/// SHA-256 over what a request asks for (see [`content`]).
pub(crate) type Content = [u8; 32];

/// Client ids remembered at once by default.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// How long a finished outcome is replayed by default: 10 minutes, the
/// DM engine's dedupe window.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// Bounds of the client-id table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdLimits {
    /// Ids remembered at once, in flight and done (at least 1);
    /// default [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// How long a finished outcome is replayed; default [`DEFAULT_TTL`].
    pub ttl: Duration,
}

impl Default for ClientIdLimits {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            ttl: DEFAULT_TTL,
        }
    }
}

/// What a request with a client id asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Publish = 1,
    Dm = 2,
}

/// The content hash of a request: its kind, its target (topic id or peer
/// id) and its payload. A DM's budget is not content: a retry may give
/// another.
pub(crate) fn content(kind: Kind, target: &[u8; 32], payload: &[u8]) -> Content {
    let mut b = [0u8; 16 + 1 + 32 + 32];
    b[..16].copy_from_slice(b"tern.client-id/1");
    b[16] = kind as u8;
    b[17..49].copy_from_slice(target);
    b[49..].copy_from_slice(&libgossip::proto::payload_hash(payload));
    libgossip::proto::payload_hash(&b)
}

#[derive(Debug)]
enum State<T> {
    /// Retries subscribe; the owner sends the outcome.
    InFlight(watch::Sender<Option<T>>),
    Done(T),
}

#[derive(Debug)]
struct Entry<T> {
    content: Content,
    /// Tells a later claim of the same id from this one.
    generation: u64,
    state: State<T>,
}

#[derive(Debug)]
struct Table<T> {
    map: HashMap<ClientId, Entry<T>>,
    /// The `Done` entries in the order they finished, with that time. Every
    /// `Done` entry is here once; entries leave the map while done only
    /// through this queue.
    done: VecDeque<(ClientId, Instant)>,
    next_generation: u64,
}

impl<T> Table<T> {
    /// Removes the front of `done` (which must be a `Done` entry).
    fn pop_done(&mut self) -> bool {
        let Some((id, _)) = self.done.pop_front() else {
            return false;
        };
        if matches!(self.map.get(&id), Some(e) if matches!(e.state, State::Done(_))) {
            self.map.remove(&id);
        }
        true
    }
}

/// The table (see the module docs).
#[derive(Debug)]
pub(crate) struct ClientIds<T> {
    table: Mutex<Table<T>>,
    limits: ClientIdLimits,
}

/// The answer to [`ClientIds::claim`].
#[derive(Debug)]
pub(crate) enum Claim<'a, T> {
    /// A new id: do the work, then [`Owner::finish`].
    Run(Owner<'a, T>),
    /// Done before with this content: its outcome.
    Replay(T),
    /// In flight with this content: the outcome comes here (`Some`); a
    /// closed channel without it means the first attempt was abandoned
    /// (claim again).
    Wait(watch::Receiver<Option<T>>),
    /// Known with other content.
    Conflict,
    /// Every slot holds an id in flight.
    Full,
}

/// How [`ClientIds::once`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Once<T> {
    /// This request did the work.
    Fresh(T),
    /// An earlier request with this id did; its outcome.
    Replayed(T),
    /// The id is known with other content.
    Conflict,
    /// No room for a new id.
    Full,
}

impl<T: Clone> ClientIds<T> {
    /// An empty table.
    pub(crate) fn new(limits: ClientIdLimits) -> Self {
        Self {
            table: Mutex::new(Table {
                map: HashMap::new(),
                done: VecDeque::new(),
                next_generation: 0,
            }),
            limits: ClientIdLimits {
                capacity: limits.capacity.max(1),
                ..limits
            },
        }
    }

    /// Ids held now (in flight and done).
    pub(crate) fn len(&self) -> usize {
        crate::lock(&self.table).map.len()
    }

    /// Looks `id` up for a request with `content` at `now`, first dropping
    /// outcomes past their ttl; a new id is entered as in flight.
    pub(crate) fn claim(
        &self,
        id: ClientId,
        content: Content,
        now: Instant,
        stats: &ApiStats,
    ) -> Claim<'_, T> {
        let mut t = crate::lock(&self.table);
        while let Some(&(_, at)) = t.done.front() {
            if now.saturating_duration_since(at) < self.limits.ttl {
                break;
            }
            t.pop_done();
            stats.client_ids_expired.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(e) = t.map.get(&id) {
            if e.content != content {
                stats.client_ids_conflicts.fetch_add(1, Ordering::Relaxed);
                return Claim::Conflict;
            }
            return match &e.state {
                State::Done(o) => Claim::Replay(o.clone()),
                State::InFlight(tx) => Claim::Wait(tx.subscribe()),
            };
        }
        if t.map.len() >= self.limits.capacity {
            if !t.pop_done() {
                stats.client_ids_full.fetch_add(1, Ordering::Relaxed);
                return Claim::Full;
            }
            stats.client_ids_evicted.fetch_add(1, Ordering::Relaxed);
        }
        let generation = t.next_generation;
        t.next_generation += 1;
        let (tx, _) = watch::channel(None);
        t.map.insert(
            id,
            Entry {
                content,
                generation,
                state: State::InFlight(tx),
            },
        );
        Claim::Run(Owner {
            ids: self,
            id,
            generation,
            finished: false,
        })
    }

    /// Runs `work` once per client id: the first request with `id` awaits
    /// it (it yields the outcome and whether to keep it for replay); a
    /// retry with the same content drops its own `work` unpolled and gets
    /// the first outcome, waiting for it while it is in flight. Counts
    /// replays and waits in `stats`.
    // The API server is a driver: it owns the clock of outcome ages.
    #[allow(clippy::disallowed_methods)]
    pub(crate) async fn once(
        &self,
        id: ClientId,
        content: Content,
        stats: &ApiStats,
        work: impl Future<Output = (T, bool)>,
    ) -> Once<T> {
        let owner = loop {
            match self.claim(id, content, Instant::now(), stats) {
                Claim::Run(owner) => break owner,
                Claim::Replay(o) => {
                    stats.client_ids_replayed.fetch_add(1, Ordering::Relaxed);
                    return Once::Replayed(o);
                }
                Claim::Wait(mut rx) => {
                    stats.client_ids_waited.fetch_add(1, Ordering::Relaxed);
                    let outcome = rx
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|o| o.clone());
                    if let Some(o) = outcome {
                        stats.client_ids_replayed.fetch_add(1, Ordering::Relaxed);
                        return Once::Replayed(o);
                    }
                    // The first attempt was abandoned: claim the id again.
                }
                Claim::Conflict => return Once::Conflict,
                Claim::Full => return Once::Full,
            }
        };
        let (outcome, keep) = work.await;
        owner.finish(outcome.clone(), keep, Instant::now());
        Once::Fresh(outcome)
    }
}

/// The claim of a new id; dropping it unfinished (the request was
/// abandoned) frees the id, and retries waiting for it claim it again.
#[derive(Debug)]
pub(crate) struct Owner<'a, T> {
    ids: &'a ClientIds<T>,
    id: ClientId,
    generation: u64,
    finished: bool,
}

impl<T: Clone> Owner<'_, T> {
    /// Hands `outcome` to the retries waiting for it, and keeps it for
    /// later ones when `keep` (else the id is free again).
    pub(crate) fn finish(mut self, outcome: T, keep: bool, now: Instant) {
        self.finished = true;
        let mut t = crate::lock(&self.ids.table);
        let Some(e) = t.map.get_mut(&self.id) else {
            return;
        };
        if e.generation != self.generation {
            return;
        }
        if let State::InFlight(tx) = &e.state {
            tx.send_replace(Some(outcome.clone()));
        }
        if keep {
            e.state = State::Done(outcome);
            t.done.push_back((self.id, now));
        } else {
            t.map.remove(&self.id);
        }
    }
}

impl<T> Drop for Owner<'_, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut t = crate::lock(&self.ids.table);
        if t.map
            .get(&self.id)
            .is_some_and(|e| e.generation == self.generation)
        {
            // Drops the sender: waiting retries see the channel closed.
            t.map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    fn c(n: u8) -> Content {
        [n; 32]
    }

    fn count(a: &std::sync::atomic::AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    fn ran_twice() -> (u32, bool) {
        panic!("a retry ran the work again")
    }

    /// Claims the new id `[id; 16]` (content `c(0)`) at `at`.
    fn claimed<'a>(
        ids: &'a ClientIds<u32>,
        id: u8,
        at: Instant,
        stats: &ApiStats,
    ) -> Owner<'a, u32> {
        match ids.claim([id; 16], c(0), at, stats) {
            Claim::Run(o) => o,
            other => panic!("not a new id: {other:?}"),
        }
    }

    /// A kept outcome is replayed for the same content and refused for
    /// other content; an outcome not kept frees the id (a retry runs
    /// again). Capability: R3.
    #[tokio::test]
    async fn replays_kept_outcomes_and_refuses_other_content() {
        let ids = ClientIds::new(ClientIdLimits::default());
        let stats = ApiStats::default();
        // (id, content, the work's outcome and keep, the answer)
        let steps = [
            (1, c(1), (7, true), Once::Fresh(7)),
            (1, c(1), (8, true), Once::Replayed(7)),
            (1, c(2), (9, true), Once::Conflict),
            (2, c(1), (1, false), Once::Fresh(1)),
            (2, c(1), (2, true), Once::Fresh(2)),
        ];
        for (id, content, work, want) in steps {
            let got = ids.once([id; 16], content, &stats, async { work }).await;
            assert_eq!(got, want, "id {id}");
        }
        assert_eq!(count(&stats.client_ids_replayed), 1);
        assert_eq!(count(&stats.client_ids_conflicts), 1);
        assert_eq!(ids.len(), 2);
    }

    /// A retry while the first is in flight waits for the first's outcome
    /// (and does not run); when the first is abandoned the retry runs.
    /// Capability: R3.
    #[tokio::test]
    async fn a_retry_in_flight_waits_for_the_first_outcome() {
        let ids = ClientIds::<u32>::new(ClientIdLimits::default());
        let stats = ApiStats::default();
        let now = Instant::now();
        let first = claimed(&ids, 1, now, &stats);
        let retry = ids.once([1; 16], c(0), &stats, async { ran_twice() });
        let finish = async {
            tokio::task::yield_now().await;
            first.finish(5, false, now);
        };
        let (r, ()) = tokio::join!(retry, finish);
        assert_eq!(r, Once::Replayed(5));
        assert_eq!(count(&stats.client_ids_waited), 1);
        // Not kept: the id is free again.
        assert_eq!(ids.len(), 0);

        let first = claimed(&ids, 2, now, &stats);
        let retry = ids.once([2; 16], c(0), &stats, async { (6, true) });
        let abandon = async {
            tokio::task::yield_now().await;
            drop(first);
        };
        let (r, ()) = tokio::join!(retry, abandon);
        assert_eq!(r, Once::Fresh(6));
    }

    /// At capacity the oldest finished outcome gives way (counted); with
    /// every slot in flight a new id is refused (counted); outcomes past
    /// their ttl are dropped (counted) and the id is new again.
    #[test]
    fn bounded_by_count_and_age() {
        let ids = ClientIds::<u32>::new(ClientIdLimits {
            capacity: 2,
            ttl: Duration::from_secs(10),
        });
        let stats = ApiStats::default();
        let t0 = Instant::now();
        let run = |id: u8, at: Instant| claimed(&ids, id, at, &stats);
        run(1, t0).finish(1, true, t0);
        run(2, t0).finish(2, true, t0 + Duration::from_secs(1));
        // Full of done outcomes: the oldest (1) gives way.
        let third = run(3, t0 + Duration::from_secs(2));
        assert_eq!(count(&stats.client_ids_evicted), 1);
        assert!(matches!(
            ids.claim([2; 16], c(0), t0, &stats),
            Claim::Replay(2)
        ));
        // 2 gives way to 4; then both slots are in flight.
        let fourth = run(4, t0 + Duration::from_secs(2));
        assert!(matches!(
            ids.claim([5; 16], c(0), t0 + Duration::from_secs(2), &stats),
            Claim::Full
        ));
        assert_eq!(count(&stats.client_ids_full), 1);
        third.finish(3, true, t0 + Duration::from_secs(2));
        drop(fourth);
        // 3 expires 10 s after it finished.
        assert!(matches!(
            ids.claim([3; 16], c(0), t0 + Duration::from_secs(11), &stats),
            Claim::Replay(3)
        ));
        assert!(matches!(
            ids.claim([3; 16], c(0), t0 + Duration::from_secs(12), &stats),
            Claim::Run(_)
        ));
        assert_eq!(count(&stats.client_ids_expired), 1);
        assert_eq!(count(&stats.client_ids_evicted), 2);
    }
}
