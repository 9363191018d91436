//! A ring in ordinary heap memory, woken through a condition variable.
//!
//! Same protocol code as the shared-memory ring, over memory loom can track:
//! every data word is a [`crate::loom::cell::UnsafeCell`], so under loom an
//! unsynchronised read of a record (say, because the publish store was
//! weakened) is reported as a causality violation. Used by the loom models,
//! by unit tests, and by in-process benchmarks as a baseline.

use super::core::{Region, RingMemory};
use super::endpoint::{Consumer, Parker, Producer};
use super::error::PeerGone;
use super::layout::{Control, Geometry};
use super::spin::SpinConfig;
use crate::loom::cell::UnsafeCell;
use crate::loom::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The data area as word cells.
#[derive(Debug)]
pub struct CellRegion {
    words: Box<[UnsafeCell<u64>]>,
}

// SAFETY: the cells are only accessed through `Region`, and the ring protocol
// gives each word a single writer at a time, ordered before its readers by the
// release/acquire pairs on `head`/`tail` (exactly what loom checks).
unsafe impl Sync for CellRegion {}
// SAFETY: plain data, no thread affinity.
unsafe impl Send for CellRegion {}

impl CellRegion {
    /// `len` bytes (rounded up to whole words), zeroed.
    pub fn new(len: usize) -> Self {
        let words = (0..len.div_ceil(8)).map(|_| UnsafeCell::new(0)).collect();
        Self { words }
    }

    fn cell(&self, off: usize) -> Option<&UnsafeCell<u64>> {
        if !off.is_multiple_of(8) {
            return None;
        }
        self.words.get(off / 8)
    }
}

impl Region for CellRegion {
    fn len(&self) -> usize {
        self.words.len() * 8
    }

    fn load_word(&self, off: usize) -> Option<u64> {
        // SAFETY: reading a u64 through a valid cell pointer; data-race
        // freedom is the protocol's job and is checked by loom.
        self.cell(off).map(|c| c.with(|p| unsafe { *p }))
    }

    fn store_word(&self, off: usize, word: u64) -> bool {
        match self.cell(off) {
            Some(c) => {
                // SAFETY: as in `load_word`; this side owns the word now.
                c.with_mut(|p| unsafe { *p = word });
                true
            }
            None => false,
        }
    }

    fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if off
            .checked_add(dst.len())
            .is_none_or(|end| end > self.len())
        {
            return false;
        }
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let Some(word) = self.load_word(off + i * 8) else {
                return false;
            };
            chunk.copy_from_slice(&word.to_ne_bytes()[..chunk.len()]);
        }
        true
    }

    fn write(&self, off: usize, src: &[u8]) -> bool {
        if off
            .checked_add(src.len().next_multiple_of(8))
            .is_none_or(|end| end > self.len())
        {
            return false;
        }
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            if !self.store_word(off + i * 8, u64::from_ne_bytes(bytes)) {
                return false;
            }
        }
        true
    }
}

/// Control block and data area on the heap.
#[derive(Debug)]
pub struct HeapRing {
    control: Control,
    data: CellRegion,
    geo: Geometry,
}

impl HeapRing {
    /// A fresh ring of `geo`.
    pub fn new(geo: Geometry) -> Arc<Self> {
        Arc::new(Self {
            control: Control::default(),
            data: CellRegion::new(geo.capacity()),
            geo,
        })
    }
}

impl RingMemory for HeapRing {
    type Data = CellRegion;
    fn control(&self) -> &Control {
        &self.control
    }
    fn data(&self) -> &CellRegion {
        &self.data
    }
    fn geometry(&self) -> Geometry {
        self.geo
    }
}

/// A binary semaphore: set by the waker, consumed by the sleeper.
#[derive(Debug)]
struct Signal {
    set: Mutex<bool>,
    cv: Condvar,
}

/// Parks on a condition variable; wakes the peer's.
#[derive(Debug)]
pub struct HeapParker {
    mine: Arc<Signal>,
    peer: Arc<Signal>,
    #[cfg(not(tern_loom))]
    epoch: std::time::Instant,
}

impl HeapParker {
    fn pair() -> (Self, Self) {
        let a = Arc::new(Signal {
            set: Mutex::new(false),
            cv: Condvar::new(),
        });
        let b = Arc::new(Signal {
            set: Mutex::new(false),
            cv: Condvar::new(),
        });
        (Self::new(a.clone(), b.clone()), Self::new(b, a))
    }

    // The clock is only read for spin budgets; loom models never spin.
    #[allow(clippy::disallowed_methods)]
    fn new(mine: Arc<Signal>, peer: Arc<Signal>) -> Self {
        Self {
            mine,
            peer,
            #[cfg(not(tern_loom))]
            epoch: std::time::Instant::now(),
        }
    }
}

impl Parker for HeapParker {
    fn wake_peer(&mut self) {
        // A poisoned lock means the peer panicked; waking it is moot.
        if let Ok(mut set) = self.peer.set.lock() {
            *set = true;
            self.peer.cv.notify_one();
        }
    }

    fn park(&mut self, timeout: Duration) -> Result<(), PeerGone> {
        let Ok(mut set) = self.mine.set.lock() else {
            return Err(PeerGone::Exited);
        };
        if !*set {
            // Loom ignores the timeout, so a lost wake-up shows up as a deadlock.
            match self.mine.cv.wait_timeout(set, timeout) {
                Ok((guard, _)) => set = guard,
                Err(_) => return Err(PeerGone::Exited),
            }
        }
        *set = false;
        Ok(())
    }

    fn check_peer(&mut self) -> Result<(), PeerGone> {
        Ok(())
    }

    #[cfg(not(tern_loom))]
    fn now_ns(&self) -> u64 {
        super::spin::saturating_ns(self.epoch.elapsed())
    }

    #[cfg(tern_loom)]
    fn now_ns(&self) -> u64 {
        0
    }
}

/// Producer of a heap ring.
pub type HeapProducer = Producer<Arc<HeapRing>, HeapParker>;
/// Consumer of a heap ring.
pub type HeapConsumer = Consumer<Arc<HeapRing>, HeapParker>;

/// A connected producer/consumer pair over a fresh heap ring.
pub fn pair(geo: Geometry, cfg: SpinConfig) -> (HeapProducer, HeapConsumer) {
    let ring = HeapRing::new(geo);
    let (pp, cp) = HeapParker::pair();
    (
        Producer::new(ring.clone(), pp, cfg),
        Consumer::new(ring, cp, cfg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `used_bytes` follows the producer's pushes and the consumer's pops
    /// (each record takes its header and is padded to a word).
    #[test]
    fn used_bytes_follows_pushes_and_pops() {
        let (mut p, mut c) = pair(Geometry::new(4096, 2040).unwrap(), SpinConfig::default());
        assert_eq!(p.capacity(), 4096);
        assert_eq!(p.used_bytes().unwrap(), 0);
        p.try_push([1u8; 100]).unwrap();
        let one = p.used_bytes().unwrap();
        assert!((108..=112).contains(&one), "{one}");
        p.try_push([2u8; 100]).unwrap();
        assert_eq!(p.used_bytes().unwrap(), 2 * one);
        let mut out = Vec::new();
        c.try_pop(&mut out).unwrap();
        assert_eq!(p.used_bytes().unwrap(), one);
        c.try_pop(&mut out).unwrap();
        assert_eq!(p.used_bytes().unwrap(), 0);
    }
}
