//! One client connection to one verifyd instance: key ids, pending
//! requests, and the reader thread that delivers answers.
//!
//! A connection on a shared-memory ring may also own a *side connection*
//! to the same instance: a frames-only session (hello with ring capacity
//! 0), opened on first need for requests larger than the ring's largest
//! record but within the frame limit, and retired once idle for
//! [`super::PoolConfig::side_idle_after`]. It is a [`Conn`] like any other
//! (its own keys, pending map and reader thread), so a dead side connection
//! re-routes what it had pending exactly as a main one does.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;

use super::limits::{self, RequestLimits};
use super::{PoolError, PoolInner, Sub, now};
use crate::Verdict;
use crate::proto::{self, ItemRef, Response};
use crate::session::{self, Established, HelloParams};
use crate::transport::{self, Rx, Transport, TransportError, Tx};

/// How an item names its key on this connection.
#[derive(Debug, Clone, Copy)]
enum KeyName {
    Id(u64),
    /// The daemon refused to register it: send it inline and let the daemon
    /// give the item its verdict (`Malformed`).
    Inline,
}

enum Pending {
    Verify {
        sub: Sub,
        names: Vec<KeyName>,
    },
    Register {
        key: Bytes,
        tx: mpsc::Sender<KeyName>,
    },
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The instance's connection the router balances over.
    Main,
    /// A frames-only connection a [`Kind::Main`] ring session opened for
    /// requests over the ring's record limit.
    Side,
}

pub(crate) struct Conn {
    pub(crate) path: PathBuf,
    kind: Kind,
    writer: Mutex<Tx>,
    transport: Transport,
    pending: Mutex<HashMap<u64, Pending>>,
    keys: Mutex<HashMap<Bytes, KeyName>>,
    outstanding: AtomicUsize,
    alive: AtomicBool,
    ready_at: Mutex<Instant>,
    limits: RequestLimits,
    /// The session's negotiated maximum frame (capped like
    /// [`RequestLimits::max_bytes`]): on a ring session larger than
    /// `limits.max_bytes`, and what a side connection would carry.
    frame_limit: usize,
    /// This ring session's side connection, once opened (see the module
    /// docs); always `None` on frames and on side connections themselves.
    side: Mutex<Option<Arc<Conn>>>,
    /// No side connection is opened before this (set after a failed open).
    side_retry_at: Mutex<Instant>,
    /// Last time a request was handed to this connection or an answer came
    /// back: a side connection idle for `side_idle_after` is retired.
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Conn {
    /// Opens the main connection to the instance at `path`, offering the
    /// pool's ring capacity.
    pub(crate) fn open(pool: &Arc<PoolInner>, path: &Path) -> Result<Arc<Conn>, TransportError> {
        Self::open_as(pool, path, Kind::Main)
    }

    fn open_as(
        pool: &Arc<PoolInner>,
        path: &Path,
        kind: Kind,
    ) -> Result<Arc<Conn>, TransportError> {
        let s = UnixStream::connect(path)?;
        // A draining daemon may still hold its socket without answering.
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        let params = HelloParams {
            protocol: proto::PROTOCOL,
            role: Role::Client,
            instance: u64::from(std::process::id()),
            max_frame: session::DEFAULT_MAX_FRAME,
            // A side connection exists to avoid the ring's record limit.
            ring_capacity: match kind {
                Kind::Main => pool.cfg.ring_capacity,
                Kind::Side => 0,
            },
        };
        let Established {
            reader,
            mut writer,
            session,
        } = Established::handshake(s, &params)?;
        // Timeouts are per socket, shared by both halves.
        writer.get_mut().set_read_timeout(None)?;
        writer
            .get_mut()
            .set_write_timeout(Some(Duration::from_secs(5)))?;
        let frame_limit = (session.max_frame as usize).min(limits::MAX_ENCODABLE);
        let mut max_frame = session.max_frame as usize;
        let (tx, rx) = if transport::ring_agreed(&session) {
            let (producer, consumer) = transport::client_rings(writer.get_mut(), &session)?;
            // A request is one ring record: the ring's limit is the frame limit.
            max_frame = max_frame.min(producer.max_record());
            let sock = writer.get_mut().try_clone()?;
            pool.stats.ring_conns.fetch_add(1, Ordering::Relaxed);
            (
                Tx::Ring {
                    producer: Box::new(producer),
                    sock,
                    deadline: Duration::from_secs(5),
                },
                Rx::Ring(Box::new(consumer)),
            )
        } else {
            match kind {
                Kind::Main => pool.stats.frame_conns.fetch_add(1, Ordering::Relaxed),
                Kind::Side => pool
                    .stats
                    .side_connections_opened
                    .fetch_add(1, Ordering::Relaxed),
            };
            (Tx::Frames(writer), Rx::Frames(reader))
        };
        let transport = tx.transport();
        tracing::debug!(path = %path.display(), transport = transport.name(), ?kind, "connected");
        let conn = Arc::new(Conn {
            path: path.to_owned(),
            kind,
            writer: Mutex::new(tx),
            transport,
            pending: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            outstanding: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
            ready_at: Mutex::new(now()),
            limits: RequestLimits::new(max_frame, pool.cfg.max_request_items),
            frame_limit,
            side: Mutex::new(None),
            side_retry_at: Mutex::new(now()),
            last_used: Mutex::new(now()),
        });
        let c = conn.clone();
        let weak = Arc::downgrade(pool);
        std::thread::Builder::new()
            .name("verify-client-rx".into())
            .spawn(move || c.read_loop(rx, &weak))?;
        Ok(conn)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Items outstanding on this connection and its side connection.
    pub(crate) fn outstanding(&self) -> usize {
        let side = self
            .peek_side()
            .map_or(0, |s| s.outstanding.load(Ordering::Relaxed));
        self.outstanding.load(Ordering::Relaxed) + side
    }

    /// The side connection if one is open and its slot is not locked by a
    /// thread opening one: balancing must not wait out someone's hello.
    fn peek_side(&self) -> Option<Arc<Conn>> {
        match self.side.try_lock() {
            Ok(g) => g.clone(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is a ring session whose frame limit is above its ring
    /// record limit, so a side connection can carry what the ring cannot.
    fn side_capable(&self) -> bool {
        self.kind == Kind::Main
            && self.transport == Transport::Ring
            && self.frame_limit > self.limits.max_bytes
    }

    /// Largest request this instance accepts through this connection,
    /// counting its side connection: what the router compares a sub's
    /// `need` with.
    pub(crate) fn max_accepted(&self) -> usize {
        if self.side_capable() {
            self.frame_limit
        } else {
            self.limits.max_bytes
        }
    }

    /// How many leading items of `sub` must go over the side connection:
    /// a one-item sub already known to need more than the ring carries, or
    /// the run of items whose payload alone (key by id) is over the ring's
    /// limit. 0 on a connection without a side.
    fn side_run(&self, sub: &Sub) -> usize {
        if !self.side_capable() {
            return 0;
        }
        let max = self.limits.max_bytes;
        if sub.need > max {
            return sub.idx.len();
        }
        sub.idx
            .iter()
            .take_while(|&&i| {
                let it = &sub.batch.items[i as usize];
                limits::item_floor(it.msg.len(), it.sig.len(), None) > max
            })
            .count()
    }

    /// When this connection can next take `sub`: its own back-off, and for
    /// a sub bound for the side connection also that one's back-off and
    /// the time a failed side open may be retried.
    pub(crate) fn ready_for(&self, sub: &Sub) -> Instant {
        let mut t = self.ready_at();
        if self.side_run(sub) > 0 {
            t = t.max(*lock(&self.side_retry_at));
            if let Some(s) = self.peek_side().filter(|s| s.is_alive()) {
                t = t.max(s.ready_at());
            }
        }
        t
    }

    /// The live side connection, opened now if there is none (holding the
    /// slot's lock, so one is opened at a time). `None` while a failed open
    /// backs off for `reconnect_every`.
    fn side(&self, pool: &Arc<PoolInner>) -> Option<Arc<Conn>> {
        let mut slot = lock(&self.side);
        if let Some(s) = slot.as_ref().filter(|s| s.is_alive()) {
            *lock(&s.last_used) = now();
            return Some(s.clone());
        }
        if now() < *lock(&self.side_retry_at) {
            return None;
        }
        match Self::open_as(pool, &self.path, Kind::Side) {
            Ok(s) => {
                pool.track(&s);
                *slot = Some(s.clone());
                Some(s)
            }
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e,
                    "side connection not opened");
                *lock(&self.side_retry_at) = now() + pool.cfg.reconnect_every;
                None
            }
        }
    }

    /// Retires a side connection idle (nothing pending, unused) for at
    /// least `idle`; returns whether it did. A request racing in is not
    /// lost: its sender sees the connection dead after inserting it and
    /// re-routes it, as with any connection that dies mid-send.
    pub(crate) fn retire_if_idle(&self, pool: &PoolInner, idle: Duration) -> bool {
        if self.kind != Kind::Side || !self.is_alive() {
            return false;
        }
        if !lock(&self.pending).is_empty() || now().duration_since(*lock(&self.last_used)) < idle {
            return false;
        }
        if !self.alive.swap(false, Ordering::SeqCst) {
            return false;
        }
        tracing::debug!(path = %self.path.display(), "side connection idle; closing");
        pool.stats
            .side_connections_closed_idle
            .fetch_add(1, Ordering::Relaxed);
        for sub in self.hang_up_and_drain() {
            pool.stats.resubmitted.fetch_add(1, Ordering::Relaxed);
            pool.reroute(sub);
        }
        true
    }

    /// Which transport this connection uses.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// What this session accepts in one request.
    pub(crate) fn limits(&self) -> RequestLimits {
        self.limits
    }

    pub(crate) fn ready_at(&self) -> Instant {
        *lock(&self.ready_at)
    }

    fn write(&self, frame: &[u8]) -> bool {
        lock(&self.writer).send(frame).is_ok()
    }

    /// Registers the keys of items `idx` of `batch` this connection does not
    /// know yet; returns how each of them names its key here.
    fn ensure_keys(
        &self,
        pool: &PoolInner,
        batch: &super::BatchState,
        idx: &[u32],
    ) -> Option<Vec<KeyName>> {
        // Group items by key *allocation* first: callers clone one `Bytes`
        // per origin key, so this finds the distinct keys without hashing
        // 1,952 bytes per item (that hashing alone cost ~4 % of a verify).
        // Different allocations of equal bytes just become two entries.
        const MEMO: usize = 256;
        let mut distinct: Vec<&Bytes> = Vec::new();
        let mut which: Vec<usize> = Vec::with_capacity(idx.len());
        for &i in idx {
            let k = &batch.items[i as usize].key;
            let at = distinct
                .iter()
                .position(|d| d.as_ptr() == k.as_ptr() && d.len() == k.len())
                .filter(|_| distinct.len() <= MEMO);
            which.push(at.unwrap_or_else(|| {
                distinct.push(k);
                distinct.len() - 1
            }));
        }
        // An `UnknownKey` answer to an older request can make us forget a key
        // between registering it and reading its id back (the reader thread
        // removes stale ids): register again rather than give up the
        // connection. A few rounds are plenty; each needs a fresh eviction.
        const ROUNDS: usize = 4;
        for _ in 0..ROUNDS {
            let mut waits = Vec::new();
            {
                let known = lock(&self.keys);
                let mut asked: Vec<&Bytes> = Vec::new();
                for k in &distinct {
                    if !known.contains_key(*k) && !asked.contains(k) {
                        asked.push(k);
                    }
                }
                drop(known);
                let mut fbb = FlatBufferBuilder::new();
                for k in asked {
                    let rid = pool.next_req.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = mpsc::channel();
                    lock(&self.pending).insert(rid, Pending::Register { key: k.clone(), tx });
                    if !self.write(proto::encode_register_key(&mut fbb, rid, k)) {
                        return None;
                    }
                    waits.push(rx);
                }
            }
            for rx in waits {
                // The reader answers or, if the connection dies, drops the sender.
                rx.recv_timeout(Duration::from_secs(5)).ok()?;
            }
            let known = lock(&self.keys);
            let names: Option<Vec<KeyName>> =
                distinct.iter().map(|k| known.get(*k).copied()).collect();
            if let Some(names) = names {
                return Some(which.into_iter().map(|w| names[w]).collect());
            }
            pool.stats
                .key_reregistrations
                .fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Sends the first request's worth of a sub-batch: as many items as
    /// fit this session's [`RequestLimits`] by their size bound. Returns
    /// what is left to route (`Ok(None)` once everything went out), or
    /// hands the whole sub back if this connection cannot take it: it is
    /// dead, or the sub is one item too large for this session (its
    /// `need` then says how large, so the router looks elsewhere).
    pub(crate) fn send(
        self: &Arc<Self>,
        pool: &Arc<PoolInner>,
        mut sub: Sub,
    ) -> Result<Option<Sub>, Sub> {
        if !self.is_alive() {
            return Err(sub);
        }
        let run = self.side_run(&sub);
        if run > 0 {
            return self.send_on_side(pool, sub, run);
        }
        let lim = self.limits;
        // Its own handle, so the closures below do not borrow `sub`.
        let batch = sub.batch.clone();
        let items = &batch.items;
        let bound = |i: u32, inline: bool| {
            let it = &items[i as usize];
            limits::item_bound(it.msg.len(), it.sig.len(), inline.then_some(it.key.len()))
        };
        // Cut optimistically (keys by id), register the keys of that part,
        // then cut again with the keys this session will carry inline.
        let first = lim.prefix_len(sub.idx.iter().map(|&i| bound(i, false)));
        if let Some(&i) = sub.idx.first() {
            let it = &items[i as usize];
            let floor = limits::item_floor(it.msg.len(), it.sig.len(), None);
            if floor > lim.max_bytes {
                // Too large here even with its key by id: do not register it.
                let rest = sub.split_off(1);
                return self.too_large(pool, sub, floor, rest);
            }
        }
        let Some(mut names) = self.ensure_keys(pool, &batch, &sub.idx[..first]) else {
            self.kill(pool);
            return Err(sub);
        };
        let take = lim.prefix_len(
            sub.idx
                .iter()
                .zip(&names)
                .map(|(&i, n)| bound(i, matches!(n, KeyName::Inline))),
        );
        names.truncate(take);
        let rest = sub.split_off(take);
        let inline_len = |i: u32, n: &KeyName| {
            matches!(n, KeyName::Inline).then_some(items[i as usize].key.len())
        };
        if let ([i], [n]) = (sub.idx.as_slice(), names.as_slice()) {
            let it = &items[*i as usize];
            let floor = limits::item_floor(it.msg.len(), it.sig.len(), inline_len(*i, n));
            if floor > lim.max_bytes {
                // Its payload alone is over the limit: no need to encode it.
                return self.too_large(pool, sub, floor, rest);
            }
        }
        let refs: Vec<ItemRef<'_>> = sub
            .idx
            .iter()
            .zip(&names)
            .map(|(&i, name)| {
                let it = &items[i as usize];
                match name {
                    KeyName::Id(id) => ItemRef {
                        key_id: *id,
                        inline_key: None,
                        msg: &it.msg,
                        sig: &it.sig,
                    },
                    KeyName::Inline => ItemRef {
                        key_id: 0,
                        inline_key: Some(&it.key),
                        msg: &it.msg,
                        sig: &it.sig,
                    },
                }
            })
            .collect();
        let rid = pool.next_req.fetch_add(1, Ordering::Relaxed);
        // Size the builder for the whole frame up front: the builder copies
        // everything it holds each time it grows, and items are 5.5 KB each.
        let estimate: usize = sub
            .idx
            .iter()
            .zip(&names)
            .map(|(&i, n)| {
                let it = &items[i as usize];
                limits::item_bound(it.msg.len(), it.sig.len(), inline_len(i, n))
            })
            .sum::<usize>()
            + limits::request_bound(0);
        let mut fbb = FlatBufferBuilder::with_capacity(estimate.min(lim.max_bytes + 1024));
        let frame = proto::encode_verify_batch(&mut fbb, rid, &[], &refs);
        drop(refs);
        if frame.len() > lim.max_bytes {
            let real = frame.len();
            if sub.idx.len() == 1 {
                // Over the bound but worth trying, and really too large here.
                return self.too_large(pool, sub, real, rest);
            }
            // More than one item always fits by the bound (a unit test
            // proves the bound against real encodings); should it ever not,
            // halve the request rather than fail or send it.
            tracing::warn!(
                real,
                limit = lim.max_bytes,
                items = sub.idx.len(),
                "request over its size bound; splitting it"
            );
            pool.stats.bound_misses.fetch_add(1, Ordering::Relaxed);
            let back = sub.split_off(sub.idx.len() / 2);
            if let Some(back) = back {
                pool.reroute(back);
            }
            if let Some(rest) = rest {
                pool.reroute(rest);
            }
            return Err(sub);
        }
        let n = sub.idx.len();
        pool.stats.requests.fetch_add(1, Ordering::Relaxed);
        if self.kind == Kind::Side {
            pool.stats
                .requests_on_side_connection
                .fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.last_used) = now();
        self.outstanding.fetch_add(n, Ordering::Relaxed);
        lock(&self.pending).insert(rid, Pending::Verify { sub, names });
        // Re-check liveness after inserting: the reader may have killed the
        // session (and drained `pending`) between our first check and the
        // insert, and a write into a dead peer's ring can still succeed.
        // kill() sets `alive` before it drains, so either it drained our
        // entry or we see it dead here and drain again ourselves.
        if !self.write(frame) || !self.is_alive() {
            self.kill(pool);
        }
        Ok(rest)
    }

    /// Sends the first `run` items of `sub`, which the ring cannot carry,
    /// over the side connection (which cuts them to the frame limit; what
    /// it leaves goes back to the router) and returns the rest. Hands the
    /// whole sub back while no side connection can be opened: the router
    /// then waits for the retry time ([`Self::ready_for`]).
    fn send_on_side(
        &self,
        pool: &Arc<PoolInner>,
        mut sub: Sub,
        run: usize,
    ) -> Result<Option<Sub>, Sub> {
        let Some(side) = self.side(pool) else {
            return Err(sub);
        };
        let rest = sub.split_off(run);
        match side.send(pool, sub) {
            Ok(None) => {}
            // Either the side connection cut the run, or it died before
            // taking it: the router places that part again (on a fresh
            // side connection if this one is gone).
            Ok(Some(more)) | Err(more) => pool.reroute(more),
        }
        Ok(rest)
    }

    /// A one-item sub that needs a request of `bytes` bytes, more than this
    /// session accepts: re-route it marked with that need, so the router
    /// offers it only to sessions that can carry it, a ring session's side
    /// connection included (or gives the item its error if none can), and
    /// hand the rest of the batch back to route.
    fn too_large(
        &self,
        pool: &PoolInner,
        mut sub: Sub,
        bytes: usize,
        rest: Option<Sub>,
    ) -> Result<Option<Sub>, Sub> {
        debug_assert!(bytes > self.limits.max_bytes);
        sub.need = sub.need.max(bytes);
        pool.reroute(sub);
        Ok(rest)
    }

    /// Ends the session for good because the pool is gone: marks it dead,
    /// hangs up (the reader wakes on end-of-file or, on a ring, a hang-up
    /// seen by its parker, and exits) and fails everything pending with
    /// [`PoolError::Closed`], since there is nowhere left to re-route it.
    /// Dropping pending registrations wakes their waiters. Idempotent.
    pub(crate) fn close(&self) {
        self.alive.store(false, Ordering::SeqCst);
        for sub in self.hang_up_and_drain() {
            sub.batch.fail(PoolError::Closed);
        }
    }

    /// Marks the connection dead and re-routes everything pending on it.
    fn kill(&self, pool: &PoolInner) {
        if self.alive.swap(false, Ordering::SeqCst) {
            pool.stats.conns_lost.fetch_add(1, Ordering::Relaxed);
        }
        for sub in self.hang_up_and_drain() {
            pool.stats.resubmitted.fetch_add(1, Ordering::Relaxed);
            pool.reroute(sub);
        }
    }

    /// Hangs up and takes every pending request off this connection: the
    /// verify requests are returned, the registrations dropped (which wakes
    /// their waiters).
    fn hang_up_and_drain(&self) -> Vec<Sub> {
        lock(&self.writer).hang_up();
        let drained: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        drained
            .into_iter()
            .filter_map(|p| match p {
                Pending::Verify { sub, .. } => {
                    self.outstanding.fetch_sub(sub.idx.len(), Ordering::Relaxed);
                    Some(sub)
                }
                Pending::Register { .. } => None,
            })
            .collect()
    }

    fn take(&self, rid: u64) -> Option<Pending> {
        lock(&self.pending).remove(&rid)
    }

    /// Delivers answers until the session ends. A dead daemon, a hang-up or
    /// a corrupt ring all end it the same way: [`Self::kill`] re-routes
    /// everything pending, whichever transport carried it. Once the pool is
    /// gone (its drop hung up and woke us) [`Self::close`] fails whatever is
    /// left, and returning drops the receiving half (and its ring mapping).
    fn read_loop(self: Arc<Self>, mut rx: Rx, pool: &Weak<PoolInner>) {
        loop {
            let msg = rx.recv();
            let Some(pool) = pool.upgrade() else {
                self.close();
                return;
            };
            *lock(&self.last_used) = now();
            let buf = match msg {
                Ok(Some(b)) => b,
                Ok(None) => {
                    self.kill(&pool);
                    return;
                }
                Err(e) => {
                    tracing::info!(path = %self.path.display(), error = %e,
                        transport = self.transport.name(), "connection lost");
                    self.kill(&pool);
                    return;
                }
            };
            match proto::decode_response(&buf) {
                Ok(r) => self.on_response(&pool, r),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "bad response; dropping connection");
                    self.kill(&pool);
                    return;
                }
            }
        }
    }

    fn on_response(&self, pool: &PoolInner, r: Response) {
        match r {
            Response::KeyRegistered { request_id, key_id } => {
                if let Some(Pending::Register { key, tx }) = self.take(request_id) {
                    lock(&self.keys).insert(key, KeyName::Id(key_id));
                    let _ = tx.send(KeyName::Id(key_id));
                }
            }
            Response::VerifyResult {
                request_id,
                verdicts,
            } => {
                let Some(Pending::Verify { sub, names }) = self.take(request_id) else {
                    return;
                };
                self.outstanding.fetch_sub(sub.idx.len(), Ordering::Relaxed);
                // An answer means the instance freed capacity: end any back-off.
                *lock(&self.ready_at) = now();
                if verdicts.len() != sub.idx.len() {
                    tracing::warn!(path = %self.path.display(), "verdict count mismatch; re-routing");
                    pool.reroute(sub);
                    return;
                }
                self.deliver(pool, sub, &names, &verdicts);
            }
            Response::Busy {
                request_id,
                retry_after_us,
                ..
            } => {
                let Some(Pending::Verify { sub, .. }) = self.take(request_id) else {
                    return;
                };
                self.outstanding.fetch_sub(sub.idx.len(), Ordering::Relaxed);
                pool.stats.busy.fetch_add(1, Ordering::Relaxed);
                let backoff = Duration::from_micros(u64::from(retry_after_us))
                    .clamp(Duration::from_micros(50), Duration::from_millis(50));
                *lock(&self.ready_at) = now() + backoff;
                pool.reroute(sub);
            }
            Response::Error {
                request_id,
                code,
                fatal,
                message,
            } => {
                match self.take(request_id) {
                    Some(Pending::Register { key, tx }) => {
                        lock(&self.keys).insert(key, KeyName::Inline);
                        let _ = tx.send(KeyName::Inline);
                    }
                    Some(Pending::Verify { sub, .. }) => {
                        self.outstanding.fetch_sub(sub.idx.len(), Ordering::Relaxed);
                        if code == ErrorCode::ShuttingDown.0 || code == ErrorCode::Busy.0 {
                            if code == ErrorCode::ShuttingDown.0 {
                                // Keep reading answers to admitted requests,
                                // but send nothing new here.
                                self.alive.store(false, Ordering::SeqCst);
                            }
                            pool.stats.resubmitted.fetch_add(1, Ordering::Relaxed);
                            pool.reroute(sub);
                        } else {
                            sub.batch.fail(PoolError::Refused(message));
                        }
                    }
                    None => tracing::debug!(code, message, "error for the connection"),
                }
                if fatal {
                    self.alive.store(false, Ordering::SeqCst);
                }
            }
        }
    }

    fn deliver(&self, pool: &PoolInner, sub: Sub, names: &[KeyName], verdicts: &[Verdict]) {
        let retry = sub.attempts + 1 < pool.cfg.max_attempts;
        let mut again = Vec::new();
        let mut idx = Vec::with_capacity(sub.idx.len());
        let mut got = Vec::with_capacity(sub.idx.len());
        for ((&i, &v), name) in sub.idx.iter().zip(verdicts).zip(names) {
            if v == Verdict::UnknownKey && retry && matches!(name, KeyName::Id(_)) {
                again.push(i);
            } else {
                idx.push(i);
                got.push(v);
            }
        }
        if !again.is_empty() {
            // The daemon lost these keys: forget our ids so they are registered again.
            let mut keys = lock(&self.keys);
            for &i in &again {
                keys.remove(&sub.batch.items[i as usize].key);
            }
        }
        let dup = sub.batch.deliver(&idx, &got);
        pool.stats
            .duplicate_verdicts
            .fetch_add(dup, Ordering::Relaxed);
        if !again.is_empty() {
            pool.stats
                .unknown_key_retries
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            pool.reroute(Sub {
                batch: sub.batch,
                idx: again,
                attempts: sub.attempts + 1,
                since: sub.since,
                need: 0,
            });
        }
    }
}
