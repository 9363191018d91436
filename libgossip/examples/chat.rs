//! Three gossip nodes on loopback over libtransport (QUIC, ML-DSA-65
//! identities and signatures): each publishes one line, the others print it.
//!
//! ```text
//! cargo run -p libgossip --example chat
//! ```
//!
//! Exits 0 once every node has received the other two lines, 1 if that has
//! not happened within 60 s. (Direct messages come with the DM engine.)

use bytes::Bytes;
use libgossip::proto::TopicId;
use libgossip::runtime::{Gossip, IdentitySigner, RuntimeConfig, TransportLink};
use libtransport::{Endpoint, Identity};
use std::sync::Arc;
use std::time::Duration;

const NODES: usize = 3;
const NAMES: [&str; NODES] = ["alice", "bob", "carol"];
const DEADLINE: Duration = Duration::from_secs(60);

async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
    for (g, _, _) in &nodes {
        while g.peers(topic).await?.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ids: Vec<_> = nodes.iter().map(|(g, _, _)| g.id()).collect();
    let mut readers = Vec::new();
    for (i, (g, _, _)) in nodes.iter().enumerate() {
        let mut sub = g.subscribe(topic).await?;
        let ids = ids.clone();
        readers.push(tokio::spawn(async move {
            // The core does not deliver a node's own line to itself.
            for _ in 0..NODES - 1 {
                let Some(d) = sub.recv().await else {
                    return false;
                };
                let from = ids
                    .iter()
                    .position(|p| *p == d.origin)
                    .map_or("?", |k| NAMES[k]);
                println!(
                    "{:>5} <- {from}: {}",
                    NAMES[i],
                    String::from_utf8_lossy(&d.payload)
                );
            }
            true
        }));
    }
    for (i, (g, _, _)) in nodes.iter().enumerate() {
        let line = format!("hello from {}", NAMES[i]);
        g.publish(topic, Bytes::from(line)).await?;
    }
    for r in readers {
        if !r.await? {
            return Err("a node stopped before receiving everything".into());
        }
    }
    for (g, _, _) in &nodes {
        g.shutdown().await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    match tokio::time::timeout(DEADLINE, run()).await {
        Ok(Ok(())) => println!("all {} lines delivered", NODES * (NODES - 1)),
        Ok(Err(e)) => {
            eprintln!("chat failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("chat timed out after {DEADLINE:?}");
            std::process::exit(1);
        }
    }
}
