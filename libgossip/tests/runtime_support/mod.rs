//! Helpers shared by the runtime tests over real libtransport connections.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use bytes::Bytes;
use libgossip::runtime::{Gossip, IdentitySigner, Link, RuntimeConfig, TransportLink};
use libtransport::{Endpoint, Identity};
use std::net::SocketAddr;
use std::sync::Arc;

/// One node: its runtime, the transport link under it and its address.
pub struct Peer {
    pub gossip: Gossip,
    pub link: Arc<TransportLink>,
    pub addr: SocketAddr,
}

/// A node on 127.0.0.1 with a fresh ML-DSA-65 identity whose runtime sees
/// `wrap(transport link)`.
pub async fn spawn_wrapped(
    cfg: RuntimeConfig,
    wrap: impl FnOnce(Arc<TransportLink>) -> Arc<dyn Link>,
) -> Peer {
    let id = Identity::generate().expect("identity");
    let signer = IdentitySigner::clone_of(&id).expect("signer");
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        id,
        libtransport::Config::default(),
    )
    .expect("bind");
    let addr = ep.local_addr();
    let link = Arc::new(TransportLink::new(ep).expect("link"));
    let gossip = Gossip::spawn(wrap(link.clone()), Box::new(signer), cfg);
    Peer { gossip, link, addr }
}

/// A node whose runtime uses the transport link as it is.
pub async fn spawn_node(cfg: RuntimeConfig) -> Peer {
    spawn_wrapped(cfg, |l| l).await
}

/// `n` test bodies `m00`, `m01`, ….
pub fn numbered(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("m{i:02}"))).collect()
}

/// The drop-oldest check (G14, D3) after `sent` went to a node with a
/// reader that got `arrival` (in its order) and a never-read subscriber of
/// `cap` that holds `kept` and reports `(queued, evicted, delivered)`:
/// the reader got each body once, and the lazy one kept exactly the
/// newest `cap` arrivals (both queues are fed in the same order) and
/// counted every eviction.
pub fn assert_drop_oldest(
    sent: &[Bytes],
    arrival: &[Bytes],
    kept: &[Bytes],
    cap: usize,
    counts: (usize, u64, u64),
) {
    let n = sent.len();
    let mut got = arrival.to_vec();
    got.sort();
    let mut want = sent.to_vec();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(counts, (cap, (n - cap) as u64, n as u64));
    assert_eq!(kept, &arrival[n - cap..]);
}
