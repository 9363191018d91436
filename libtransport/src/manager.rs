//! Connection policy (sans-IO): at most one live connection per peer.
//!
//! The driver reports each connection once its identity is proven; the
//! manager answers accept, replace or reject. Rules, applied identically on
//! both ends so both keep the same connection without talking about it:
//!
//! 1. No live connection to the peer: accept.
//! 2. The peer's session epoch differs from the live connection's: the peer
//!    restarted, the old connection belongs to a dead session: replace.
//! 3. Same epoch, different initiators (a simultaneous dial): keep the
//!    connection initiated by the smaller PeerId. Each side sees both
//!    connections, in either order, and picks the same one. At most one
//!    `Replaced` per simultaneous dial (when the loser was proven first).
//! 4. Same epoch, same initiator: the initiator only dials again when it no
//!    longer trusts the old connection, so the newer one replaces it.
//!
//! Every accepted connection gets the next generation number.

use std::collections::HashMap;

use crate::identity::PeerId;

/// A connection the manager tracks, as the driver identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    /// The driver's key for the connection.
    pub key: K,
    /// Who opened the connection.
    pub initiator: PeerId,
    /// The peer's session epoch from its identity proof.
    pub epoch: u64,
}

/// The live connection to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live<K> {
    /// The candidate that won.
    pub conn: Candidate<K>,
    /// Its generation.
    pub generation: u64,
}

/// What to do with a newly proven connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision<K> {
    /// Make it live with this generation.
    Accept {
        /// New generation.
        generation: u64,
    },
    /// Make it live and close `old`.
    Replace {
        /// The connection to close.
        old: Live<K>,
        /// New generation.
        generation: u64,
    },
    /// Close it: the live connection wins.
    Reject,
}

/// The policy state for one endpoint.
#[derive(Debug)]
pub struct Manager<K> {
    local: PeerId,
    live: HashMap<PeerId, Live<K>>,
    generation: u64,
}

impl<K: Copy + PartialEq> Manager<K> {
    /// A manager for the endpoint whose PeerId is `local`.
    #[must_use]
    pub fn new(local: PeerId) -> Self {
        Self {
            local,
            live: HashMap::new(),
            generation: 0,
        }
    }

    /// The live connection to `peer`, if any.
    #[must_use]
    pub fn live(&self, peer: &PeerId) -> Option<&Live<K>> {
        self.live.get(peer)
    }

    /// Number of live connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no connection is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Decides about a connection to `peer` whose identity was just proven.
    pub fn on_proven(&mut self, peer: PeerId, new: Candidate<K>) -> Decision<K> {
        let decision = match self.live.get(&peer) {
            None => None,
            Some(old) if old.conn.epoch != new.epoch => Some(*old),
            Some(old) if old.conn.initiator == new.initiator => Some(*old),
            Some(old) => {
                let preferred = self.local.min(peer);
                if new.initiator == preferred {
                    Some(*old)
                } else {
                    return Decision::Reject;
                }
            }
        };
        self.generation += 1;
        let generation = self.generation;
        self.live.insert(
            peer,
            Live {
                conn: new,
                generation,
            },
        );
        match decision {
            None => Decision::Accept { generation },
            Some(old) => Decision::Replace { old, generation },
        }
    }

    /// Forgets `key` if it is the live connection to `peer`; returns whether
    /// it was (a replaced or rejected connection closing is not).
    pub fn on_closed(&mut self, peer: &PeerId, key: K) -> bool {
        match self.live.get(peer) {
            Some(l) if l.conn.key == key => {
                self.live.remove(peer);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(b: u8) -> PeerId {
        PeerId([b; 32])
    }

    /// T4: both ends of a simultaneous dial keep the connection initiated by
    /// the smaller PeerId, whatever order the two connections are proven in.
    #[test]
    fn simultaneous_dial_converges_in_any_order() {
        let (a, b) = (pid(1), pid(2));
        // Connection 10: a -> b; connection 20: b -> a.
        let ab = |k| Candidate {
            key: k,
            initiator: a,
            epoch: 7,
        };
        let ba = |k| Candidate {
            key: k,
            initiator: b,
            epoch: 7,
        };
        for order in [[10, 20], [20, 10]] {
            let mut at_a = Manager::new(a);
            let mut at_b = Manager::new(b);
            for k in order {
                let c = if k == 10 { ab(k) } else { ba(k) };
                let _ = at_a.on_proven(b, Candidate { epoch: 7, ..c });
                let _ = at_b.on_proven(a, Candidate { epoch: 9, ..c });
            }
            assert_eq!(at_a.live(&b).unwrap().conn.key, 10);
            assert_eq!(at_b.live(&a).unwrap().conn.key, 10);
        }
    }

    #[test]
    fn loser_arriving_second_is_rejected_without_replace() {
        let (a, b) = (pid(1), pid(2));
        let mut m = Manager::new(b);
        assert_eq!(
            m.on_proven(
                a,
                Candidate {
                    key: 1,
                    initiator: a,
                    epoch: 3
                }
            ),
            Decision::Accept { generation: 1 }
        );
        assert_eq!(
            m.on_proven(
                a,
                Candidate {
                    key: 2,
                    initiator: b,
                    epoch: 3
                }
            ),
            Decision::Reject
        );
        assert!(!m.on_closed(&a, 2));
        assert_eq!(m.live(&a).unwrap().conn.key, 1);
    }

    /// T4: a restarted peer (new epoch) replaces the old connection and the
    /// generation grows.
    #[test]
    fn new_epoch_replaces() {
        let (a, b) = (pid(1), pid(2));
        let mut m = Manager::new(a);
        let first = Candidate {
            key: 1,
            initiator: b,
            epoch: 3,
        };
        assert_eq!(m.on_proven(b, first), Decision::Accept { generation: 1 });
        // Even when initiated by the larger id, a new epoch wins.
        let d = m.on_proven(
            b,
            Candidate {
                key: 2,
                initiator: b,
                epoch: 4,
            },
        );
        assert_eq!(
            d,
            Decision::Replace {
                old: Live {
                    conn: first,
                    generation: 1
                },
                generation: 2
            }
        );
        assert!(!m.on_closed(&b, 1));
        assert!(m.on_closed(&b, 2));
        assert!(m.is_empty());
    }
}
