//! The index protocol, over any memory: the part loom model-checks.
//!
//! [`ProducerCore`] and [`ConsumerCore`] never block, sleep or make system
//! calls. They run over a [`RingMemory`] — the [`Control`] block plus a
//! [`Region`] for the data — which is a shared mapping in production
//! ([`super::shm`]) and plain heap memory in tests and loom models
//! ([`super::heap`]).
//!
//! Publication: the producer writes a record's bytes, then stores `tail` with
//! `Release`; the consumer loads `tail` with `Acquire` before reading the
//! bytes. Symmetrically the consumer copies a record out, then stores `head`
//! with `Release`, and the producer loads `head` with `Acquire` before reusing
//! that space.
//!
//! Parking (no lost wake-up): each side owns a *park word* that only it
//! writes. Before sleeping it makes the word odd (a new park number), issues
//! a `SeqCst` fence and re-checks the other side's index; when it is awake
//! again it makes the word even. The other side stores its index, issues a
//! `SeqCst` fence and then loads the sleeper's park word. The two fences
//! order the pairs, so at least one side sees the other's store: either the
//! sleeper sees the new index and does not sleep, or the publisher sees an
//! odd park word and wakes it. The publisher remembers the last park number
//! it woke, so each park costs at most one wake-up however many records are
//! published while the sleeper gets going, and the common path (nobody
//! asleep) is a fence and a load of a line nobody is writing.
//!
//! Only the owner writes its park word. An earlier design let the publisher
//! clear a shared flag with a swap; loom found an execution in which the
//! publisher's swap read its own earlier clear instead of the sleeper's newer
//! set, and the wake-up was lost.
//!
//! Everything read from the peer's side is validated: indices must move
//! forwards and stay within one capacity of ours; record headers must carry a
//! known tag, a length within the limit, and lie inside both the published
//! data and the data area. A violation poisons the core with a [`Corrupt`].

use super::error::Corrupt;
use super::layout::{
    Control, Geometry, HEADER_LEN, Header, TAG_RECORD, TAG_SKIP, decode_header, header, slot_len,
};
use crate::loom::atomic::{AtomicU32, Ordering, fence};

/// The data area: word-aligned bytes both sides can reach.
///
/// Offsets are from the start of the area. Every method checks its bounds
/// and returns `false` (doing nothing) when out of range, so a logic error can
/// never touch memory outside the area.
pub trait Region {
    /// Size of the area in bytes.
    fn len(&self) -> usize;
    /// Whether the area is empty (never, for a valid ring).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the 8-byte word at `off` (a multiple of 8).
    fn load_word(&self, off: usize) -> Option<u64>;
    /// Writes the 8-byte word at `off` (a multiple of 8).
    fn store_word(&self, off: usize, word: u64) -> bool;
    /// Copies `dst.len()` bytes starting at `off` (a multiple of 8) into `dst`.
    fn read(&self, off: usize, dst: &mut [u8]) -> bool;
    /// Copies `src` to `off` (a multiple of 8). The bytes up to the next
    /// multiple of 8 after `off + src.len()` belong to the record and may be
    /// overwritten.
    fn write(&self, off: usize, src: &[u8]) -> bool;
}

/// A ring's memory: control block, data area and their geometry.
pub trait RingMemory {
    /// The data area type.
    type Data: Region;
    /// The shared indices and flags.
    fn control(&self) -> &Control;
    /// The data area.
    fn data(&self) -> &Self::Data;
    /// Capacity and record limit.
    fn geometry(&self) -> Geometry;
}

impl<T: RingMemory> RingMemory for crate::loom::sync::Arc<T> {
    type Data = T::Data;
    fn control(&self) -> &Control {
        (**self).control()
    }
    fn data(&self) -> &Self::Data {
        (**self).data()
    }
    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }
}

/// Ordering of the store that publishes records. `--cfg tern_loom_weak_publish`
/// deliberately weakens it so the loom suite can show it catches the bug.
#[cfg(not(tern_loom_weak_publish))]
const PUBLISH: Ordering = Ordering::Release;
#[cfg(tern_loom_weak_publish)]
const PUBLISH: Ordering = Ordering::Relaxed;

/// Why a write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// Not enough free space now.
    Full,
    /// Longer than the record limit.
    TooLarge,
    /// The consumer corrupted its index.
    Corrupt(Corrupt),
}

/// One side's view of the two park words (see the module docs).
#[derive(Debug, Default)]
struct Parking {
    /// Our park word: odd while parked or about to park.
    own: u32,
    /// The peer's last park number we woke it for.
    woken: u32,
}

impl Parking {
    /// Makes our word odd (a fresh park number) and fences.
    fn announce(&mut self, word: &AtomicU32) {
        self.own = self.own.wrapping_add(1) | 1;
        word.store(self.own, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Makes our word even again (awake).
    fn withdraw(&mut self, word: &AtomicU32) {
        if self.own & 1 == 1 {
            self.own = self.own.wrapping_add(1);
            word.store(self.own, Ordering::Relaxed);
        }
    }

    /// After our store and a `SeqCst` fence: whether the peer sleeps (or is
    /// about to) and has not been woken for this park yet.
    fn peer_needs_wake(&mut self, word: &AtomicU32) -> bool {
        let w = word.load(Ordering::Relaxed);
        if w & 1 == 1 && w != self.woken {
            self.woken = w;
            return true;
        }
        false
    }
}

/// The producer's half of the protocol.
#[derive(Debug)]
pub struct ProducerCore<M> {
    mem: M,
    geo: Geometry,
    /// Bytes written, including not yet published ones.
    tail: u64,
    /// Bytes published.
    published: u64,
    /// Last `head` seen; refreshed only when space seems short.
    cached_head: u64,
    /// Space the last failed write needed (for parking on "full").
    want: u64,
    parking: Parking,
    poisoned: Option<Corrupt>,
}

impl<M: RingMemory> ProducerCore<M> {
    /// The producer of a fresh ring (`head == tail == 0`).
    pub fn new(mem: M) -> Self {
        let geo = mem.geometry();
        Self {
            mem,
            geo,
            tail: 0,
            published: 0,
            cached_head: 0,
            want: 0,
            parking: Parking::default(),
            poisoned: None,
        }
    }

    /// The memory, e.g. for diagnostics.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The first corruption seen, if any.
    pub fn poisoned(&self) -> Option<Corrupt> {
        self.poisoned
    }

    /// Bytes the record needs, including a skip marker if it must wrap.
    fn need(&self, len: usize) -> u64 {
        let cap = self.geo.capacity();
        let off = (self.tail as usize) & (cap - 1);
        let slot = slot_len(len);
        let to_end = cap - off;
        if slot <= to_end {
            slot as u64
        } else {
            (to_end + slot) as u64
        }
    }

    /// Whether `need` bytes are free, reloading `head` only if the cached one
    /// says no.
    fn has_space(&mut self, need: u64) -> Result<bool, Corrupt> {
        if let Some(c) = self.poisoned {
            return Err(c);
        }
        let cap = self.geo.capacity() as u64;
        if self.tail - self.cached_head + need <= cap {
            return Ok(true);
        }
        let head = self.refresh_head()?;
        Ok(self.tail - head + need <= cap)
    }

    /// Bytes of the data area written and not yet consumed (skip markers
    /// included), with the consumer's `head` read now.
    pub fn used(&mut self) -> Result<u64, Corrupt> {
        if let Some(c) = self.poisoned {
            return Err(c);
        }
        let head = self.refresh_head()?;
        Ok(self.tail - head)
    }

    /// Reads the consumer's `head`, checks it and caches it.
    fn refresh_head(&mut self) -> Result<u64, Corrupt> {
        let head = self.mem.control().consumer.head.load(Ordering::Acquire);
        // The consumer can only move forwards and never past what we published.
        if head < self.cached_head || head > self.published {
            let err = Corrupt::IndexOutOfRange {
                head,
                tail: self.published,
            };
            tracing::warn!(error = %err, "ring producer saw a corrupt head");
            self.poisoned = Some(err);
            return Err(err);
        }
        self.cached_head = head;
        Ok(head)
    }

    /// Writes `rec` after the last record without publishing it; call
    /// [`Self::publish`] to make it (and earlier writes) visible.
    pub fn try_write(&mut self, rec: &[u8]) -> Result<(), WriteError> {
        if let Some(c) = self.poisoned {
            return Err(WriteError::Corrupt(c));
        }
        if rec.len() > self.geo.max_record() {
            return Err(WriteError::TooLarge);
        }
        let need = self.need(rec.len());
        match self.has_space(need) {
            Ok(true) => {}
            Ok(false) => {
                self.want = need;
                return Err(WriteError::Full);
            }
            Err(c) => return Err(WriteError::Corrupt(c)),
        }
        let cap = self.geo.capacity();
        let mut off = (self.tail as usize) & (cap - 1);
        let slot = slot_len(rec.len());
        let data = self.mem.data();
        let mut ok = true;
        if slot > cap - off {
            ok &= data.store_word(off, header(TAG_SKIP, 0));
            self.tail += (cap - off) as u64;
            off = 0;
        }
        // `rec.len() <= max_record < u32::MAX` (Geometry bounds it by 1 GiB).
        ok &= data.store_word(off, header(TAG_RECORD, rec.len() as u32));
        ok &= data.write(off + HEADER_LEN, rec);
        if !ok {
            // Unreachable: `need`/`has_space` keep every write inside the area.
            let err = Corrupt::RecordOutOfBounds {
                offset: off as u64,
                len: slot as u64,
            };
            self.poisoned = Some(err);
            return Err(WriteError::Corrupt(err));
        }
        self.tail += slot as u64;
        Ok(())
    }

    /// Publishes everything written so far. Returns `true` when the consumer
    /// was parked (or about to park) and must be woken.
    #[must_use]
    pub fn publish(&mut self) -> bool {
        if self.tail == self.published {
            return false;
        }
        let ctl = self.mem.control();
        ctl.producer.tail.store(self.tail, PUBLISH);
        self.published = self.tail;
        fence(Ordering::SeqCst);
        self.parking.peer_needs_wake(&ctl.consumer_waiting.flag)
    }

    /// Whether the record that last failed with [`WriteError::Full`] would
    /// now fit.
    pub fn space_for_last(&mut self) -> Result<bool, Corrupt> {
        self.has_space(self.want)
    }

    /// Announces that the producer is about to park waiting for space.
    /// Returns `false` (and withdraws the announcement) when space appeared
    /// meanwhile; then it must not park.
    pub fn prepare_park(&mut self) -> Result<bool, Corrupt> {
        self.parking
            .announce(&self.mem.control().producer_waiting.flag);
        if self.has_space(self.want)? {
            self.cancel_park();
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears the parking announcement (after waking or timing out).
    pub fn cancel_park(&mut self) {
        self.parking
            .withdraw(&self.mem.control().producer_waiting.flag);
    }

    /// Marks the producer closed. Returns `true` if the consumer must be woken
    /// to notice.
    #[must_use]
    pub fn close(&mut self) -> bool {
        let ctl = self.mem.control();
        ctl.producer.closed.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        ctl.consumer_waiting.flag.load(Ordering::Relaxed) & 1 == 1
    }

    /// Whether the consumer closed its end.
    pub fn peer_closed(&self) -> bool {
        self.mem.control().consumer.closed.load(Ordering::Acquire) != 0
    }
}

/// The consumer's half of the protocol.
#[derive(Debug)]
pub struct ConsumerCore<M> {
    mem: M,
    geo: Geometry,
    /// Bytes consumed.
    head: u64,
    /// Last `tail` seen.
    cached_tail: u64,
    parking: Parking,
    poisoned: Option<Corrupt>,
}

impl<M: RingMemory> ConsumerCore<M> {
    /// The consumer of a fresh ring.
    pub fn new(mem: M) -> Self {
        let geo = mem.geometry();
        Self {
            mem,
            geo,
            head: 0,
            cached_tail: 0,
            parking: Parking::default(),
            poisoned: None,
        }
    }

    /// The memory, e.g. for diagnostics.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The first corruption seen, if any.
    pub fn poisoned(&self) -> Option<Corrupt> {
        self.poisoned
    }

    fn poison(&mut self, err: Corrupt) -> Corrupt {
        tracing::warn!(error = %err, head = self.head, "ring consumer saw corrupt data");
        self.poisoned = Some(err);
        err
    }

    /// Reloads `tail`, validating it. Returns whether data is available.
    fn refresh_tail(&mut self) -> Result<bool, Corrupt> {
        let tail = self.mem.control().producer.tail.load(Ordering::Acquire);
        let cap = self.geo.capacity() as u64;
        if tail < self.cached_tail || tail - self.head > cap {
            return Err(self.poison(Corrupt::IndexOutOfRange {
                head: self.head,
                tail,
            }));
        }
        self.cached_tail = tail;
        Ok(tail != self.head)
    }

    /// Whether a record (or skip marker) is published and unread.
    pub fn ready(&mut self) -> Result<bool, Corrupt> {
        if let Some(c) = self.poisoned {
            return Err(c);
        }
        if self.head != self.cached_tail {
            return Ok(true);
        }
        self.refresh_tail()
    }

    /// Copies the next record into `out` (replacing its contents) and frees
    /// its space. `Ok(None)` when empty. The `bool` is `true` when the
    /// producer was parked waiting for space and must be woken.
    ///
    /// `out` grows to at most the record limit.
    pub fn try_read(&mut self, out: &mut Vec<u8>) -> Result<Option<(usize, bool)>, Corrupt> {
        if !self.ready()? {
            return Ok(None);
        }
        let cap = self.geo.capacity();
        loop {
            let avail = self.cached_tail - self.head;
            let off = (self.head as usize) & (cap - 1);
            let data = self.mem.data();
            let word = data.load_word(off).ok_or(Corrupt::RecordOutOfBounds {
                offset: off as u64,
                len: HEADER_LEN as u64,
            });
            let word = match word {
                Ok(w) => w,
                Err(c) => return Err(self.poison(c)),
            };
            match decode_header(word, self.geo.max_record()) {
                Err(c) => return Err(self.poison(c)),
                Ok(Header::Skip) => {
                    let skip = (cap - off) as u64;
                    if skip > avail {
                        return Err(self.poison(Corrupt::RecordOutOfBounds {
                            offset: off as u64,
                            len: skip,
                        }));
                    }
                    self.head += skip;
                    if self.head == self.cached_tail && !self.refresh_tail()? {
                        // A skip marker is always published with the record
                        // after it; an honest producer never ends on one.
                        return Err(self.poison(Corrupt::RecordOutOfBounds {
                            offset: 0,
                            len: HEADER_LEN as u64,
                        }));
                    }
                }
                Ok(Header::Record(len)) => {
                    let slot = slot_len(len);
                    if slot as u64 > avail || off + slot > cap {
                        return Err(self.poison(Corrupt::RecordOutOfBounds {
                            offset: off as u64,
                            len: slot as u64,
                        }));
                    }
                    // `len <= max_record`, checked by `decode_header`.
                    out.resize(len, 0);
                    if !data.read(off + HEADER_LEN, out) {
                        return Err(self.poison(Corrupt::RecordOutOfBounds {
                            offset: off as u64,
                            len: slot as u64,
                        }));
                    }
                    self.head += slot as u64;
                    let wake = self.release();
                    return Ok(Some((len, wake)));
                }
            }
        }
    }

    /// Publishes `head`; returns whether the producer must be woken.
    fn release(&mut self) -> bool {
        let ctl = self.mem.control();
        ctl.consumer.head.store(self.head, Ordering::Release);
        fence(Ordering::SeqCst);
        self.parking.peer_needs_wake(&ctl.producer_waiting.flag)
    }

    /// Announces that the consumer is about to park waiting for data.
    /// Returns `false` (and withdraws the announcement) when data appeared
    /// meanwhile; then it must not park.
    pub fn prepare_park(&mut self) -> Result<bool, Corrupt> {
        self.parking
            .announce(&self.mem.control().consumer_waiting.flag);
        if self.ready()? {
            self.cancel_park();
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears the parking announcement.
    pub fn cancel_park(&mut self) {
        self.parking
            .withdraw(&self.mem.control().consumer_waiting.flag);
    }

    /// Marks the consumer closed. Returns `true` if the producer must be woken.
    #[must_use]
    pub fn close(&mut self) -> bool {
        let ctl = self.mem.control();
        ctl.consumer.closed.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        ctl.producer_waiting.flag.load(Ordering::Relaxed) & 1 == 1
    }

    /// Whether the producer closed its end (check [`Self::ready`] first:
    /// records published before closing are still readable).
    pub fn peer_closed(&self) -> bool {
        self.mem.control().producer.closed.load(Ordering::Acquire) != 0
    }
}
