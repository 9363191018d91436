//! Protocol parameters with their defaults and the reasons for them.
//!
//! See `docs/gossip.md` for the PlumTree ↔ gossipsub mapping
//! (`D`, `D_low`, `D_high`, `D_lazy`).

use super::memory::{KEY_ENTRY_BYTES, MemoryPlan};
use super::recent::seen_entry_bytes;
use super::sendq::SendQueueParams;
use super::topic::IWANT_ROUNDS;
use std::time::Duration;

/// Tunables of one node. All sizes are hard bounds on state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// HyParView active view (the peers we talk to): `log10(N) + 1` covers
    /// 10^4 nodes with 5, as in the HyParView paper; everything a node sends
    /// per message is bounded by this, never by the subscriber count.
    pub active_view: usize,
    /// HyParView passive view (repair candidates): 6× the active view.
    pub passive_view: usize,
    /// Active random walk length of a join.
    pub arwl: u8,
    /// Passive random walk length: where a forward-join also lands in passive.
    pub prwl: u8,
    /// Shuffle period.
    pub shuffle_interval: Duration,
    /// Active peers included in a shuffle.
    pub shuffle_active: usize,
    /// Passive peers included in a shuffle.
    pub shuffle_passive: usize,
    /// Lower eager degree: a node with fewer eager links grafts its best lazy
    /// peer (one per maintenance tick — never bulk re-promotion).
    pub d_low: usize,
    /// Target eager degree: promotions below `d_low` aim here (at most two
    /// per maintenance round).
    pub d: usize,
    /// Upper eager degree: above it the excess eager links are demoted —
    /// child links before the parent's, slowest first. One below the active
    /// view so `D_high` bounds something and a lazy link is left for repair.
    /// Measured (`stagebench gossip`): p99 eager degree 5 → 4 at 1,000 and
    /// 10,000 nodes, 0 missed; RMR one sender 0.03 → 0.03–0.06 at 100 nodes,
    /// 0.18 → 0.27 at 10,000 (tree edges cut while hubs shed children).
    /// Demoting down to `d` instead, by score alone, gave RMR 0.45 at 100.
    pub d_high: usize,
    /// How long lazy IHAVEs are batched before they go out.
    pub ihave_interval: Duration,
    /// Wait for an eager copy after the first IHAVE before IWANT + GRAFT.
    pub iwant_timeout: Duration,
    /// Wait before asking the next announcer.
    pub iwant_retry: Duration,
    /// Graft a lazy peer whose copy is this many hops shorter.
    pub optimization_threshold: u16,
    /// Anti-entropy digest period.
    pub anti_entropy_interval: Duration,
    /// Ids per anti-entropy digest.
    pub digest_max: usize,
    /// Floor of the join slack of anti-entropy. A joined topic asks a
    /// digest's sender only for messages the sender stored no earlier than
    /// our join minus a slack: one smoothed RTT to that sender, at least
    /// this (and at most `max_send_timeout`). The floor covers what the
    /// age estimate cannot see and what no RTT sample exists for yet: ages
    /// are whole milliseconds, two monotonic clocks drift apart by up to
    /// ~100 ppm (12 ms over the 120 s store), and drivers stamp `now` a
    /// little late under load. Default 50 ms, the RTT estimator's own floor.
    pub join_slack_floor: Duration,
    /// Memory the whole node may use. The byte bounds below marked "share"
    /// are derived from it by [`Config::with_memory_budget`] (see
    /// [`MemoryPlan`]); default 64 MiB.
    pub memory_budget: usize,
    /// Messages kept for IWANT / anti-entropy: this long at most (never
    /// shorter than the repair window while the byte budget holds)...
    pub store_retention: Duration,
    /// ...and this many bytes at most, counting each message's heap
    /// footprint (share: 3/8 of the node budget).
    pub store_max_bytes: usize,
    /// Seen ids kept at most this long (duplicates older than that are
    /// rejected by the per-origin seqno window instead).
    pub seen_retention: Duration,
    /// Seen ids kept at most (share: 1/16 of the node budget, divided by the
    /// heap bytes of one id's table slots).
    pub seen_max: usize,
    /// Origin keys cached at most (share: 1/32 of the node budget, 2 KiB a key).
    pub key_cache: usize,
    /// Messages parked while their origin's key is fetched.
    pub key_wait_max: usize,
    /// Verifications in flight at most.
    pub verify_max: usize,
    /// Bytes (payload + signature + 128 B each) held by verifications in
    /// flight at most: `verify_max` alone would allow 4,096 full-size
    /// messages (share: 1/16 of the node budget).
    pub verify_max_bytes: usize,
    /// A verification with no verdict after this long is given up (counted):
    /// a verifier that died must not pin its slots forever.
    pub verify_timeout: Duration,
    /// Bytes held by copies waiting for an origin's key at most (share: 1/32
    /// of the node budget).
    pub key_wait_max_bytes: usize,
    /// A copy whose origin's key has not arrived after this long is dropped
    /// (counted): made-up origin ids must not fill the key-wait queue.
    pub key_wait_timeout: Duration,
    /// Copies kept per pending verification (their senders learn the verdict).
    pub coalesce_max: usize,
    /// Entries per IHAVE / IWANT / GRAFT / digest frame the receiver reads.
    pub list_max: usize,
    /// Period of mesh maintenance and health bookkeeping.
    pub maintenance_interval: Duration,
    /// Send timeout before any RTT sample exists.
    pub initial_send_timeout: Duration,
    /// Floor of the RTT-derived send timeout.
    pub min_send_timeout: Duration,
    /// Ceiling of the RTT-derived send timeout.
    pub max_send_timeout: Duration,
    /// Seqnos behind an origin's highest delivered one still accepted.
    pub seqno_window: u64,
    /// Per-(origin, topic) seqno high-water marks kept at most.
    pub origins_max: usize,
    /// Bounds of the per-peer queues behind the outbound budget window (its
    /// byte bounds are a share: 1/16 of the node budget over all peers, a
    /// quarter of that per peer).
    pub send_queue: SendQueueParams,
    /// Seed of the node's RNG (peer sampling). Inject a fresh one per node.
    pub seed: u64,
    /// Seed of the hash keys of the per-topic tables (seen set, message
    /// store, missing announcements, origin marks), so that their heap and
    /// `state_bytes` repeat exactly from run to run; `None` (the default)
    /// draws random keys. Simulations only: see [`super::MapHasher`].
    pub hash_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self::untuned().with_memory_budget(MemoryPlan::DEFAULT_NODE)
    }
}

impl Config {
    /// The defaults before the memory shares are derived.
    fn untuned() -> Self {
        Self {
            active_view: 5,
            passive_view: 30,
            arwl: 6,
            prwl: 3,
            shuffle_interval: Duration::from_secs(10),
            shuffle_active: 3,
            shuffle_passive: 4,
            d_low: 1,
            d: 2,
            d_high: 4,
            ihave_interval: Duration::from_millis(20),
            iwant_timeout: Duration::from_millis(120),
            iwant_retry: Duration::from_millis(60),
            optimization_threshold: 4,
            anti_entropy_interval: Duration::from_secs(2),
            digest_max: 256,
            join_slack_floor: Duration::from_millis(50),
            memory_budget: 0,
            store_retention: Duration::from_secs(120),
            store_max_bytes: 0,
            seen_retention: Duration::from_secs(300),
            seen_max: 0,
            key_cache: 0,
            key_wait_max: 1024,
            verify_max: 4096,
            verify_max_bytes: 0,
            verify_timeout: Duration::from_secs(10),
            key_wait_max_bytes: 0,
            key_wait_timeout: Duration::from_secs(10),
            coalesce_max: 8,
            list_max: 1024,
            maintenance_interval: Duration::from_millis(500),
            initial_send_timeout: Duration::from_secs(1),
            min_send_timeout: Duration::from_millis(150),
            max_send_timeout: Duration::from_secs(5),
            seqno_window: 4096,
            origins_max: 4096,
            send_queue: SendQueueParams::default(),
            seed: 0,
            hash_seed: None,
        }
    }

    /// Sets the node memory budget and re-derives every share of it (see
    /// [`MemoryPlan`]); counts never fall below one entry.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        let plan = MemoryPlan::for_node(bytes);
        self.memory_budget = bytes;
        self.store_max_bytes = plan.store;
        self.seen_max = (plan.seen / seen_entry_bytes()).max(1);
        self.verify_max_bytes = plan.verify;
        self.key_wait_max_bytes = plan.key_wait;
        self.key_cache = (plan.keys / KEY_ENTRY_BYTES).max(1);
        self.send_queue.total_bytes = plan.send_queues;
        self.send_queue.per_peer_bytes = plan.send_queues / 4;
        self
    }

    /// How long a stored message must stay answerable for repair to work:
    /// an announcement's IWANT ladder (the first timer, then the doubling
    /// pauses of every round through the announcers), one send-timeout
    /// ceiling for the answer to come back, and two anti-entropy periods (a
    /// neighbour that missed the announcement hears of the message in the
    /// next digest, or the one after if that was lost). 10.8 s by default.
    /// The store's TTL never goes below this while its byte budget holds;
    /// when the budget cannot hold it at the current rate, the evictions
    /// count as `evicted_under_floor`.
    pub fn repair_window(&self) -> Duration {
        let ladder = self.iwant_timeout * ((1u32 << (IWANT_ROUNDS + 1)) - 1);
        ladder + self.max_send_timeout + self.anti_entropy_interval * 2
    }

    /// The memory plan of [`Config::memory_budget`].
    pub fn memory_plan(&self) -> MemoryPlan {
        MemoryPlan::for_node(self.memory_budget)
    }
    /// Sets the RNG seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`Config::hash_seed`] (reproducible table layout; simulations only).
    pub fn with_hash_seed(mut self, seed: u64) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    /// Sets the active view size (the simulator's negative control uses a huge one).
    pub fn with_active_view(mut self, n: usize) -> Self {
        self.active_view = n;
        self
    }
}
