//! Per-subscriber delivery queues: bounded, drop-oldest, evictions counted.
//!
//! The runtime task pushes into every live queue of a topic without ever
//! waiting: a full queue loses its own oldest entry (counted in
//! [`SubscriberStats::evicted`]), so a subscriber that never reads cannot
//! block dispatch or another subscriber (G14). Direct-message subscriptions
//! ([`DmSubscription`]) are the same queue holding [`DmDelivery`] items (D3).

use crate::proto::{Delivery, DmDelivery, TopicId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Counters of one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Topic.
    pub topic: TopicId,
    /// Subscription number on this node (order of `subscribe` calls).
    pub id: u64,
    /// Deliveries waiting to be read.
    pub queued: usize,
    /// Capacity of the queue.
    pub capacity: usize,
    /// Deliveries pushed in total.
    pub delivered: u64,
    /// Oldest deliveries dropped because the queue was full.
    pub evicted: u64,
}

/// Counters of one direct-message subscription ([`super::Gossip::dms`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmSubscriberStats {
    /// Subscription number on this node (shared numbering with topics).
    pub id: u64,
    /// DMs waiting to be read.
    pub queued: usize,
    /// Capacity of the queue.
    pub capacity: usize,
    /// DMs pushed in total.
    pub delivered: u64,
    /// Oldest DMs dropped because the queue was full.
    pub evicted: u64,
}

/// A bounded drop-oldest queue shared by the task (pushing) and one reader.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    pub topic: TopicId,
    pub id: u64,
    capacity: usize,
    items: Mutex<VecDeque<T>>,
    notify: Notify,
    closed: AtomicBool,
    delivered: AtomicU64,
    evicted: AtomicU64,
}

impl<T> Queue<T> {
    /// `topic` labels the stats of a topic subscription; DM queues ignore it.
    pub(crate) fn new(topic: TopicId, id: u64, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            topic,
            id,
            capacity: capacity.max(1),
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Never waits; evicts the oldest entry when full.
    pub(crate) fn push(&self, d: T) {
        {
            // A poisoned lock only means a reader panicked mid-pop; the
            // queue itself is still a valid VecDeque.
            let mut q = self.items.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.capacity {
                q.pop_front();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(d);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn pop(&self) -> Option<T> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    pub(crate) fn stats(&self) -> SubscriberStats {
        SubscriberStats {
            topic: self.topic,
            id: self.id,
            queued: self.items.lock().unwrap_or_else(|e| e.into_inner()).len(),
            capacity: self.capacity,
            delivered: self.delivered.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn dm_stats(&self) -> DmSubscriberStats {
        let s = self.stats();
        DmSubscriberStats {
            id: s.id,
            queued: s.queued,
            capacity: s.capacity,
            delivered: s.delivered,
            evicted: s.evicted,
        }
    }

    /// The next item; `None` once closed and drained.
    async fn recv(&self) -> Option<T> {
        loop {
            if let Some(d) = self.pop() {
                return Some(d);
            }
            if self.is_closed() {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a push
            // between the pop above and this await is not lost.
            self.notify.notified().await;
        }
    }
}

/// A topic's deliveries for one reader. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) q: Arc<Queue<Delivery>>,
}

impl Subscription {
    /// The next delivery; `None` once the node shut down and the queue is
    /// drained.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.q.recv().await
    }

    /// A delivery if one is waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.q.pop()
    }

    /// This subscription's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.q.stats()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.q.close();
    }
}

/// Verified direct messages for one reader (from [`super::Gossip::dms`]).
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct DmSubscription {
    pub(crate) q: Arc<Queue<DmDelivery>>,
}

impl DmSubscription {
    /// The next DM; `None` once the node shut down and the queue is drained.
    pub async fn recv(&mut self) -> Option<DmDelivery> {
        self.q.recv().await
    }

    /// A DM if one is waiting.
    pub fn try_recv(&mut self) -> Option<DmDelivery> {
        self.q.pop()
    }

    /// This subscription's counters.
    pub fn stats(&self) -> DmSubscriberStats {
        self.q.dm_stats()
    }
}

impl Drop for DmSubscription {
    fn drop(&mut self) {
        self.q.close();
    }
}
