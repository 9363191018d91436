//! Three gossip nodes on loopback over libtransport (QUIC, ML-DSA-65
//! identities and signatures): each publishes one line on a topic, and each
//! sends a direct message to each of the other two; every node prints what
//! it receives.
//!
//! ```text
//! cargo run -p libgossip --example gossip_chat
//! ```
//!
//! Exits 0 once every node has received the other two lines and the other
//! two DMs (each DM receipted as direct), 1 with the reason if anything
//! fails or it has not happened within 60 s.

use bytes::Bytes;
use libgossip::proto::{DmPath, PeerId, TopicId};
use libgossip::runtime::{Gossip, IdentitySigner, RuntimeConfig, TransportLink};
use libtransport::{Endpoint, Identity};
use std::sync::Arc;
use std::time::Duration;

const NODES: usize = 3;
const NAMES: [&str; NODES] = ["alice", "bob", "carol"];
const DEADLINE: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn name(ids: &[PeerId], p: PeerId) -> &'static str {
    ids.iter().position(|x| *x == p).map_or("?", |k| NAMES[k])
}

async fn run() -> Result<(), Error> {
    let topic = TopicId::from_name("chat");
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let id = Identity::generate()?;
        let signer = IdentitySigner::clone_of(&id)?;
        let ep = Endpoint::bind("127.0.0.1:0".parse()?, id, libtransport::Config::default())?;
        let addr = ep.local_addr();
        let link = Arc::new(TransportLink::new(ep)?);
        let g = Gossip::spawn(link.clone(), Box::new(signer), RuntimeConfig::default());
        nodes.push((g, link, addr));
    }
    for i in 0..NODES {
        for j in i + 1..NODES {
            nodes[i].1.connect(nodes[j].2, nodes[j].0.id()).await?;
        }
    }
    let boot = nodes[0].0.id();
    for (i, (g, _, _)) in nodes.iter().enumerate() {
        let bootstrap = if i == 0 { vec![] } else { vec![boot] };
        g.join(topic, &bootstrap).await?;
    }
    // Ready when every node has a topic neighbour and has verified the
    // other nodes' KEM key records (exchanged on connect): before that a
    // DM from them could not be verified.
    for (g, _, _) in &nodes {
        while g.peers(topic).await?.is_empty()
            || g.snapshot().await?.dm.kem_keys_accepted < (NODES - 1) as u64
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ids: Vec<_> = nodes.iter().map(|(g, _, _)| g.id()).collect();
    let mut readers = Vec::new();
    for (i, (g, _, _)) in nodes.iter().enumerate() {
        let mut sub = g.subscribe(topic).await?;
        let mut dms = g.dms().await?;
        let ids = ids.clone();
        readers.push(tokio::spawn(async move {
            // The core does not deliver a node's own line to itself.
            for _ in 0..NODES - 1 {
                let d = sub.recv().await.ok_or("topic subscription closed")?;
                let line = String::from_utf8_lossy(&d.payload);
                println!("{:>5} <- {}: {line}", NAMES[i], name(&ids, d.origin));
            }
            for _ in 0..NODES - 1 {
                let d = dms.recv().await.ok_or("DM subscription closed")?;
                let line = String::from_utf8_lossy(&d.payload);
                println!(
                    "{:>5} <- {} (DM, {:?}): {line}",
                    NAMES[i],
                    name(&ids, d.from),
                    d.path
                );
            }
            Ok::<(), Error>(())
        }));
    }
    for (i, (g, _, _)) in nodes.iter().enumerate() {
        let line = format!("hello from {}", NAMES[i]);
        g.publish(topic, Bytes::from(line)).await?;
    }
    for (i, (g, _, _)) in nodes.iter().enumerate() {
        for (j, to) in ids.iter().enumerate() {
            if i == j {
                continue;
            }
            let line = format!("psst {}, it's {}", NAMES[j], NAMES[i]);
            let r = g.send_dm(*to, Bytes::from(line)).await?;
            if r.path != Some(DmPath::Direct) {
                return Err(format!("DM {} -> {} not direct: {r:?}", NAMES[i], NAMES[j]).into());
            }
        }
    }
    for r in readers {
        r.await??;
    }
    for (g, _, _) in &nodes {
        g.shutdown().await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    match tokio::time::timeout(DEADLINE, run()).await {
        Ok(Ok(())) => println!(
            "all {} lines and {} DMs delivered",
            NODES * (NODES - 1),
            NODES * (NODES - 1)
        ),
        Ok(Err(e)) => {
            eprintln!("gossip_chat failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("gossip_chat timed out after {DEADLINE:?}");
            std::process::exit(1);
        }
    }
}
