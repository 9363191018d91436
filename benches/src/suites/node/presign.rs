//! Signatures made before the measured window, so that the publisher's
//! ML-DSA-65 signing is not what `node_msgs_per_s` and
//! `inproc_msgs_per_s` measure.
//!
//! The core signs `signed_bytes` (topic, origin, seqno, payload hash)
//! when it publishes; the publisher's seqnos on a topic run 1, 2, 3, … and
//! message `i` carries `live::payload``(i)`, so every signed text of a
//! run is known in advance. `Table::build` signs them all (on every
//! core, timing each signature) and `Presigned` hands the stored
//! signature out when the core asks for exactly that text. Anything else
//! (the KEM key record, a seqno beyond the table) is signed live with the
//! same key and counted in `Presigned::live`, so a run can show that its
//! window used no live signature. After the table, messages can come from
//! a thread that signs them in order a little ahead of the publisher
//! (`Presigned::with_ahead`, started by `Go` after the timed window),
//! so filling the node to N messages is not held to one signature at a
//! time on the publisher's runtime task. The signatures are real: the receivers
//! verify every one of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use libgossip::proto::{Signer, TopicId, payload_hash, signed_bytes};
use libgossip::runtime::{IdentitySigner, from_transport};
use libtransport::Identity;

use crate::suites::gossip::live;

/// Signed texts of messages `0..n` and their signatures.
#[derive(Debug)]
pub(crate) struct Table {
    signatures: HashMap<[u8; 120], Bytes>,
    /// Wall time of each signature (one core each).
    pub(crate) sign_times: Vec<Duration>,
    /// Wall time of the whole table, all cores.
    pub(crate) wall: Duration,
}

impl Table {
    /// Signs messages `0..n` of `topic` as published by `id`: message `i`
    /// has seqno `i + 1` and payload [`live::payload`]`(i)`. Uses one
    /// thread per core.
    pub(crate) fn build(id: &Identity, topic: TopicId, n: usize) -> Result<Arc<Self>> {
        let me = from_transport(id.peer_id());
        let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
        let der = id.to_pkcs8().context("exporting the publisher key")?;
        let t = Instant::now();
        let parts = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|k| {
                    let der = &der;
                    s.spawn(move || -> Result<Vec<_>> {
                        let key = Identity::from_pkcs8(der).context("publisher key")?;
                        let mut out = Vec::with_capacity(n / threads + 1);
                        for i in (k..n).step_by(threads) {
                            let text = signed_bytes(
                                &topic,
                                &me,
                                i as u64 + 1,
                                &payload_hash(&live::payload(i)),
                            );
                            let t = Instant::now();
                            let sig = key.sign(&text).context("signing")?;
                            out.push((text, Bytes::from(sig), t.elapsed()));
                        }
                        Ok(out)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .map_err(|_| anyhow::anyhow!("a signing thread panicked"))?
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let wall = t.elapsed();
        let mut signatures = HashMap::with_capacity(n);
        let mut sign_times = Vec::with_capacity(n);
        for (text, sig, d) in parts.into_iter().flatten() {
            signatures.insert(text, sig);
            sign_times.push(d);
        }
        Ok(Arc::new(Self {
            signatures,
            sign_times,
            wall,
        }))
    }

    /// Messages signed.
    pub(crate) fn len(&self) -> usize {
        self.signatures.len()
    }
}

/// Signatures made on a thread of their own, in message order, at most
/// [`AHEAD`] ahead of the publisher: for the messages after the table,
/// whose rate is not a headline figure. The thread waits for [`Go`].
struct Ahead {
    rx: mpsc::Receiver<([u8; 120], Bytes)>,
    /// Received but not asked for yet.
    early: HashMap<[u8; 120], Bytes>,
}

/// Signatures the ahead thread keeps ready.
const AHEAD: usize = 1024;
/// Longest the publisher waits for the ahead thread's next signature.
const AHEAD_WAIT: Duration = Duration::from_secs(5);

/// Starts the ahead thread's signing (dropping it stops the thread).
#[derive(Debug)]
pub(crate) struct Go(mpsc::Sender<()>);

impl Go {
    /// Lets the thread sign.
    pub(crate) fn go(&self) {
        let _ = self.0.send(());
    }
}

/// A [`Signer`] answering from a [`Table`], then from the ahead thread if
/// it has one, signing live (and counting) whatever neither holds.
pub(crate) struct Presigned {
    table: Arc<Table>,
    ahead: Option<Ahead>,
    key: IdentitySigner,
    live: Arc<AtomicU64>,
}

impl Presigned {
    /// Answers from `table`, signs anything else with `id`'s key.
    pub(crate) fn new(id: &Identity, table: Arc<Table>) -> Result<Self> {
        Ok(Self {
            table,
            ahead: None,
            key: IdentitySigner::clone_of(id).context("publisher key")?,
            live: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Also signs messages `range` of `topic` (as [`Table::build`] would)
    /// on a thread of its own once [`Go::go`] is called.
    pub(crate) fn with_ahead(
        mut self,
        id: &Identity,
        topic: TopicId,
        range: std::ops::Range<usize>,
    ) -> Result<(Self, Go)> {
        let key = Identity::from_pkcs8(&id.to_pkcs8()?).context("publisher key")?;
        let me = from_transport(id.peer_id());
        let (go_tx, go_rx) = mpsc::channel();
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        std::thread::Builder::new()
            .name("presign-ahead".into())
            .spawn(move || {
                if go_rx.recv().is_err() {
                    return;
                }
                for i in range {
                    let text =
                        signed_bytes(&topic, &me, i as u64 + 1, &payload_hash(&live::payload(i)));
                    let Ok(sig) = key.sign(&text) else { return };
                    if tx.send((text, Bytes::from(sig))).is_err() {
                        return;
                    }
                }
            })
            .context("starting the signing thread")?;
        self.ahead = Some(Ahead {
            rx,
            early: HashMap::new(),
        });
        Ok((self, Go(go_tx)))
    }

    /// Signatures made live so far (read it before and after a window).
    pub(crate) fn live(&self) -> Arc<AtomicU64> {
        self.live.clone()
    }

    /// The ahead thread's signature of `text`, if it makes one.
    fn take_ahead(&mut self, text: &[u8; 120]) -> Option<Bytes> {
        let a = self.ahead.as_mut()?;
        if let Some(sig) = a.early.remove(text) {
            return Some(sig);
        }
        while a.early.len() < AHEAD {
            let (t, sig) = a.rx.recv_timeout(AHEAD_WAIT).ok()?;
            if &t == text {
                return Some(sig);
            }
            a.early.insert(t, sig);
        }
        None
    }
}

impl Signer for Presigned {
    fn public_key(&self) -> Bytes {
        self.key.public_key()
    }

    fn sign(&mut self, msg: &[u8]) -> Bytes {
        if let Ok(text) = <&[u8; 120]>::try_from(msg) {
            if let Some(sig) = self.table.signatures.get(text) {
                return sig.clone();
            }
            if let Some(sig) = self.take_ahead(text) {
                return sig;
            }
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        self.key.sign(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(id: &Identity, text: &[u8], sig: &[u8]) -> bool {
        libtransport::identity::verify_signature(id.public_key(), text, sig)
    }

    /// A stored signature is the one the key would make valid for that
    /// text; other texts are signed live and counted.
    #[test]
    fn stored_signatures_verify_and_others_are_signed_live() {
        let id = Identity::generate().unwrap();
        let topic = TopicId::from_name("t");
        let table = Table::build(&id, topic, 3).unwrap();
        assert_eq!(table.sign_times.len(), 3);
        let mut s = Presigned::new(&id, table).unwrap();
        let me = from_transport(id.peer_id());
        let text = signed_bytes(&topic, &me, 2, &payload_hash(&live::payload(1)));
        let sig = s.sign(&text);
        assert!(valid(&id, &text, &sig));
        assert_eq!(s.live().load(Ordering::Relaxed), 0);
        let other = s.sign(b"something else");
        assert!(valid(&id, b"something else", &other));
        assert_eq!(s.live().load(Ordering::Relaxed), 1);
    }

    /// Messages beyond the table come from the ahead thread once it may
    /// sign, valid, without live signing.
    #[test]
    fn the_ahead_thread_signs_the_messages_after_the_table() {
        let id = Identity::generate().unwrap();
        let topic = TopicId::from_name("t");
        let table = Table::build(&id, topic, 1).unwrap();
        let (mut s, go) = Presigned::new(&id, table)
            .unwrap()
            .with_ahead(&id, topic, 1..4)
            .unwrap();
        go.go();
        let me = from_transport(id.peer_id());
        // Asked out of order: the skipped one is kept for later.
        for i in [2usize, 1, 3] {
            let text = signed_bytes(&topic, &me, i as u64 + 1, &payload_hash(&live::payload(i)));
            let sig = s.sign(&text);
            assert!(valid(&id, &text, &sig));
        }
        assert_eq!(s.live().load(Ordering::Relaxed), 0);
    }
}
