//! The DM inbox: every verified DM for this node, held until an
//! application acknowledges it (`AckDms`). Capability: P3.
//!
//! The runtime drops DMs nobody subscribed to, and an application may
//! connect after the DM arrived (or reconnect after it crashed), so gossipd
//! keeps one DM subscription of its own from the start and holds what it
//! delivers here. Every DM stream an application opens gets the held DMs
//! first — those offered to an earlier stream flagged `redelivered` — then
//! new ones. Acknowledging removes a DM and lets relayd forget its copy
//! ([`crate::RelayLink::ack_dm`]).
//!
//! Bounded: at [`Inbox::capacity`] held DMs a new one is not held
//! (counted); it is not acknowledged either, so relayd keeps it and
//! re-sends it to the next gossipd (the safe side).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use libgossip::proto::DmDelivery;
use tokio::sync::Notify;

/// One held DM.
#[derive(Debug, Clone)]
pub struct Held {
    /// Position in arrival order (stream cursors compare it).
    pub seq: u64,
    /// The DM.
    pub dm: DmDelivery,
    /// Offered before: to an earlier DM stream, or (per relayd) to an
    /// earlier gossipd.
    pub redelivered: bool,
}

#[derive(Debug, Default)]
struct Inner {
    held: VecDeque<Held>,
    next: u64,
}

/// The held DMs and a wake-up for DM streams.
#[derive(Debug)]
pub struct Inbox {
    inner: Mutex<Inner>,
    capacity: usize,
    changed: Notify,
    /// DMs not held because the inbox was full.
    pub full: AtomicU64,
}

impl Inbox {
    /// An empty inbox holding at most `capacity` DMs.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
            changed: Notify::new(),
            full: AtomicU64::new(0),
        }
    }

    /// The bound.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// DMs held now.
    #[must_use]
    pub fn len(&self) -> usize {
        crate::lock(&self.inner).held.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds a new DM (`redelivered` per relayd).
    pub fn push(&self, dm: DmDelivery, redelivered: bool) {
        let mut g = crate::lock(&self.inner);
        if g.held.len() >= self.capacity {
            self.full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        g.next += 1;
        let seq = g.next;
        g.held.push_back(Held {
            seq,
            dm,
            redelivered,
        });
        drop(g);
        self.changed.notify_waiters();
    }

    /// Held DMs after `cursor`, marking them offered (a later stream sees
    /// them as redelivered).
    pub fn after(&self, cursor: u64) -> Vec<Held> {
        let mut g = crate::lock(&self.inner);
        let mut out = Vec::new();
        for h in g.held.iter_mut().filter(|h| h.seq > cursor) {
            out.push(h.clone());
            h.redelivered = true;
        }
        out
    }

    /// Removes the DM `id`; whether it was held.
    pub fn ack(&self, id: &[u8; 16]) -> bool {
        let mut g = crate::lock(&self.inner);
        let before = g.held.len();
        g.held.retain(|h| h.dm.id.0 != *id);
        before != g.held.len()
    }

    /// Waits until something is pushed (register before reading with
    /// [`Inbox::after`] to miss nothing: call `changed()` first, then read,
    /// then await).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libgossip::proto::{DmId, DmPath, PeerId};

    fn dm(id: u8) -> DmDelivery {
        DmDelivery {
            from: PeerId([1; 32]),
            id: DmId([id; 16]),
            payload: bytes::Bytes::from_static(b"x"),
            path: DmPath::Direct,
        }
    }

    /// Held DMs are offered to every new stream until acknowledged, the
    /// second time flagged; the bound refuses (and counts) beyond it.
    /// Capability: P3.
    #[test]
    fn holds_until_acked_and_flags_offers_again() {
        let inbox = Inbox::new(2);
        inbox.push(dm(1), false);
        inbox.push(dm(2), true);
        inbox.push(dm(3), false);
        assert_eq!(inbox.full.load(Ordering::Relaxed), 1);
        let first = inbox.after(0);
        assert_eq!(first.len(), 2);
        assert!(!first[0].redelivered && first[1].redelivered);
        assert_eq!(inbox.after(first[1].seq).len(), 0);
        let again = inbox.after(0);
        assert!(again.iter().all(|h| h.redelivered));
        assert!(inbox.ack(&[1; 16]));
        assert!(!inbox.ack(&[1; 16]));
        assert_eq!(inbox.len(), 1);
    }
}
