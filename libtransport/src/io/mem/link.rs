//! One direction of a simulated link: its impairments and its queue.
//!
//! A link is directional (`src host → dst host`), so a one-way blackhole is a
//! link that is down in one direction only, and a partition is both
//! directions down. Impairments are applied per datagram in a fixed order —
//! down, MTU, loss, bandwidth queue, delay + jitter (+ reorder), duplication —
//! drawing from the network's seeded RNG so a run is reproducible.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Impairments of one direction of a link. `Default` is a clean 1 ms link
/// with no cap, no loss and room for 1024 queued datagrams.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram. Jitter can
    /// reorder datagrams, as it does on real paths.
    pub jitter: Duration,
    /// Probability (0.0..=1.0) that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is held back by `reorder_delay` extra, so
    /// that later datagrams overtake it.
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Bandwidth cap in bits per second (`None` = unlimited). Datagrams are
    /// serialised one after another at this rate.
    pub bandwidth_bps: Option<u64>,
    /// Bound on datagrams waiting for the bandwidth cap; the tail is dropped
    /// (and counted) past it, like a router's drop-tail queue.
    pub queue_packets: usize,
    /// Datagrams larger than this are dropped (and counted).
    pub mtu: usize,
    /// `false` drops everything in this direction (blackhole / partition).
    pub up: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            duplicate: 0.0,
            bandwidth_bps: None,
            queue_packets: 1024,
            mtu: 1500,
            up: true,
        }
    }
}

impl LinkConfig {
    /// A clean link with the given one-way delay.
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }
}

/// Why a link refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkDrop {
    /// The direction is down (partition or blackhole).
    Down,
    /// Larger than the link MTU.
    Mtu,
    /// Random loss.
    Loss,
    /// The bandwidth queue was full.
    Queue,
}

/// What a link decided for one datagram: when each copy arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkVerdict {
    /// Arrival of the datagram.
    pub arrival: Instant,
    /// Arrival of a duplicate, if one was made.
    pub duplicate: Option<Instant>,
    /// Whether the datagram was deliberately held back to reorder it.
    pub reordered: bool,
}

/// A link direction's configuration and queue state.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub cfg: LinkConfig,
    /// When the bandwidth-capped transmitter is next free.
    busy_until: Option<Instant>,
    /// Departure times of datagrams still waiting for the transmitter,
    /// oldest first; its length is the queue depth.
    queued: VecDeque<Instant>,
}

impl Link {
    pub(super) fn new(cfg: LinkConfig) -> Self {
        Self {
            cfg,
            busy_until: None,
            queued: VecDeque::new(),
        }
    }

    /// Decides the fate of a `len`-byte datagram offered at `now`.
    pub(super) fn offer(
        &mut self,
        now: Instant,
        len: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<LinkVerdict, LinkDrop> {
        if !self.cfg.up {
            return Err(LinkDrop::Down);
        }
        if len > self.cfg.mtu {
            return Err(LinkDrop::Mtu);
        }
        if self.cfg.loss > 0.0 && rng.random_bool(self.cfg.loss.clamp(0.0, 1.0)) {
            return Err(LinkDrop::Loss);
        }
        let departure = match self.cfg.bandwidth_bps {
            None => now,
            Some(bps) => {
                while self.queued.front().is_some_and(|&t| t <= now) {
                    self.queued.pop_front();
                }
                if self.queued.len() >= self.cfg.queue_packets {
                    return Err(LinkDrop::Queue);
                }
                let bits = (len as u128) * 8;
                let nanos = bits * 1_000_000_000 / u128::from(bps.max(1));
                let serialise = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                let start = self.busy_until.map_or(now, |b| b.max(now));
                let done = start + serialise;
                self.busy_until = Some(done);
                self.queued.push_back(done);
                done
            }
        };
        let reordered = self.cfg.reorder > 0.0 && rng.random_bool(self.cfg.reorder.clamp(0.0, 1.0));
        let mut arrival = departure + self.cfg.delay + self.jitter(rng);
        if reordered {
            arrival += self.cfg.reorder_delay;
        }
        let duplicate = (self.cfg.duplicate > 0.0
            && rng.random_bool(self.cfg.duplicate.clamp(0.0, 1.0)))
        .then(|| departure + self.cfg.delay + self.jitter(rng));
        Ok(LinkVerdict {
            arrival,
            duplicate,
            reordered,
        })
    }

    fn jitter(&self, rng: &mut ChaCha8Rng) -> Duration {
        if self.cfg.jitter.is_zero() {
            return Duration::ZERO;
        }
        let max = u64::try_from(self.cfg.jitter.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::mem::test_util::t0;
    use rand::SeedableRng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn clean_link_adds_its_delay() {
        let now = t0();
        let mut link = Link::new(LinkConfig::with_delay(Duration::from_millis(20)));
        let v = link.offer(now, 1200, &mut rng()).unwrap();
        assert_eq!(v.arrival, now + Duration::from_millis(20));
        assert_eq!(v.duplicate, None);
    }

    #[test]
    fn down_and_mtu_drop() {
        let now = t0();
        let mut link = Link::new(LinkConfig {
            up: false,
            ..LinkConfig::default()
        });
        assert_eq!(link.offer(now, 10, &mut rng()), Err(LinkDrop::Down));
        let mut link = Link::new(LinkConfig {
            mtu: 100,
            ..LinkConfig::default()
        });
        assert_eq!(link.offer(now, 101, &mut rng()), Err(LinkDrop::Mtu));
        assert!(link.offer(now, 100, &mut rng()).is_ok());
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let now = t0();
        let mut r = rng();
        let mut link = Link::new(LinkConfig {
            loss: 0.25,
            ..LinkConfig::default()
        });
        let lost = (0..10_000)
            .filter(|_| link.offer(now, 100, &mut r).is_err())
            .count();
        assert!(
            (2_200..2_800).contains(&lost),
            "lost {lost} of 10000 at 25%"
        );
    }

    #[test]
    fn bandwidth_cap_serialises_and_queue_drops_tail() {
        let now = t0();
        // 8 Mbit/s: a 1000-byte datagram takes 1 ms on the wire.
        let cfg = LinkConfig {
            delay: Duration::ZERO,
            bandwidth_bps: Some(8_000_000),
            queue_packets: 3,
            ..LinkConfig::default()
        };
        let mut link = Link::new(cfg);
        let mut r = rng();
        let a: Vec<_> = (0..3)
            .map(|_| link.offer(now, 1000, &mut r).unwrap().arrival)
            .collect();
        assert_eq!(
            a,
            vec![
                now + Duration::from_millis(1),
                now + Duration::from_millis(2),
                now + Duration::from_millis(3)
            ]
        );
        assert_eq!(link.offer(now, 1000, &mut r), Err(LinkDrop::Queue));
        // Once the first has left, there is room for one more, queued behind the rest.
        let later = now + Duration::from_millis(1);
        assert_eq!(
            link.offer(later, 1000, &mut r).unwrap().arrival,
            now + Duration::from_millis(4)
        );
    }

    #[test]
    fn jitter_stays_within_bounds_and_duplicates_appear() {
        let now = t0();
        let cfg = LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            duplicate: 0.5,
            ..LinkConfig::default()
        };
        let mut link = Link::new(cfg);
        let mut r = rng();
        let mut dups = 0;
        for _ in 0..1000 {
            let v = link.offer(now, 100, &mut r).unwrap();
            for at in std::iter::once(v.arrival).chain(v.duplicate) {
                assert!(at >= now + Duration::from_millis(10));
                assert!(at <= now + Duration::from_millis(15));
            }
            dups += usize::from(v.duplicate.is_some());
        }
        assert!((400..600).contains(&dups), "{dups} duplicates at 50%");
    }

    #[test]
    fn reorder_holds_back() {
        let now = t0();
        let cfg = LinkConfig {
            reorder: 1.0,
            reorder_delay: Duration::from_millis(7),
            ..LinkConfig::default()
        };
        let v = Link::new(cfg).offer(now, 100, &mut rng()).unwrap();
        assert!(v.reordered);
        assert_eq!(v.arrival, now + Duration::from_millis(8));
    }
}
