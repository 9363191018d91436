//! DM round trips through the node, next to libtransport's own
//! receive-ACK round trip in the same run.
//!
//! Direction: the node's application sends, the bench peer receives. One
//! sample is one blocking `Client::send_dm` of a 1 KiB payload to the
//! bench peer, from the call to its receipt: the request crosses
//! gossipd's application socket, gossipd's DM engine signs it (ML-DSA-65)
//! and hands it to relayd over the shared-memory ring, relayd sends it
//! with a receive-ACK over QUIC, the bench peer's endpoint admits it and
//! answers, and the answer comes back the same way — every stage of the
//! node on the path. The receipt's last attempt also says how long
//! gossipd itself waited for the ACK (`attempt`: the ring, relayd, QUIC
//! and back, without the application socket and the signing).
//!
//! The comparison, `transport::ack::rtt`, is one sequential 1 KiB
//! `send_with_receive_ack` between two bare endpoints. Both run in
//! `BLOCKS` alternating blocks so they share the background load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use gossipd::client::{Client, DmPath};

use super::daemons::NodeUnderTest;
use crate::suites::gossip::live::{Node, STALL};
use crate::suites::transport::ack;

/// Alternating blocks of node DMs and bare receive-ACKed sends.
pub(crate) const BLOCKS: usize = 5;
/// Untimed DMs first (key records, connection and RTT estimates warm).
const WARMUP: usize = 20;
/// Longest wait, after the last receipt, for the peer to have every DM.
const DRAIN: Duration = Duration::from_secs(5);

/// What the DM case measured.
#[derive(Debug, Default)]
pub(crate) struct Dms {
    /// Application `send_dm` → receipt, per DM.
    pub(crate) round_trips: Vec<Duration>,
    /// gossipd's own last-attempt time from each receipt.
    pub(crate) attempts: Vec<Duration>,
    /// libtransport `send_with_receive_ack` round trips.
    pub(crate) ack: Vec<Duration>,
    /// Receipts whose path was not `Direct`.
    pub(crate) not_direct: usize,
    /// DMs the bench peer's runtime delivered (warm-up included).
    pub(crate) delivered: usize,
}

/// `n` DMs (rounded up to whole blocks) from the node's application to
/// `peer`, and as many bare receive-ACKed sends.
pub(crate) fn measure(
    rt: &tokio::runtime::Runtime,
    node: &NodeUnderTest,
    peer: &Node,
    n: usize,
) -> Result<Dms> {
    let block = n.div_ceil(BLOCKS);
    let expected = WARMUP + block * BLOCKS;
    let delivered = Arc::new(AtomicUsize::new(0));
    let drain = {
        let mut sub = rt.block_on(peer.gossip.dms_with_capacity(expected))?;
        let delivered = delivered.clone();
        rt.spawn(async move {
            while sub.recv().await.is_some() {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut app = Client::connect(&node.sock("gossipd.sock"), STALL)
        .context("connecting to gossipd's application socket")?;
    let to = peer.gossip.id().0;
    let payload = vec![0x5au8; ack::PAYLOAD];
    let mut out = Dms::default();
    let mut send = |out: &mut Dms, timed: bool| -> Result<()> {
        let t = Instant::now();
        let r = app
            .send_dm(to, &payload)
            .context("send_dm to the bench peer")?;
        let d = t.elapsed();
        if timed {
            out.round_trips.push(d);
            if let Some(a) = r.attempts.last() {
                out.attempts
                    .push(Duration::from_micros(u64::from(a.elapsed_us)));
            }
            if r.path != DmPath::Direct {
                out.not_direct += 1;
            }
        }
        Ok(())
    };
    for _ in 0..WARMUP {
        send(&mut out, false)?;
    }
    for _ in 0..BLOCKS {
        for _ in 0..block {
            send(&mut out, true)?;
        }
        out.ack.extend(ack::rtt(block)?);
    }
    let deadline = Instant::now() + DRAIN;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drain.abort();
    out.delivered = delivered.load(Ordering::Relaxed);
    if out.round_trips.is_empty() {
        bail!("no DM measured");
    }
    Ok(out)
}
