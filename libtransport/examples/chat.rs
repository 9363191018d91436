//! A tiny chat: direct messages of kind DM between peers.
//!
//! ```text
//! cargo run -p libtransport --example chat                    # scripted alice/bob demo
//! cargo run -p libtransport --example chat -- listen 127.0.0.1:5000
//! cargo run -p libtransport --example chat -- join 127.0.0.1:5000 <peer-id>
//! ```
//!
//! In `listen`/`join` mode each line typed on stdin goes to every connected
//! peer, and lifecycle events (`Connected`, `Closed`) are printed.

use std::net::SocketAddr;

use libtransport::{Bytes, Config, Endpoint, Event, Identity, Kind, KindConfig, PeerId};
use tokio::io::AsyncBufReadExt;

fn print_incoming(ep: &Endpoint) -> Result<(), libtransport::Error> {
    let mut dms = ep.register(Kind::DM, KindConfig::default())?;
    tokio::spawn(async move {
        while let Some(m) = dms.recv().await {
            println!("<{}> {}", m.peer.short(), String::from_utf8_lossy(&m.data));
        }
    });
    Ok(())
}

async fn interactive(ep: Endpoint) -> Result<(), Box<dyn std::error::Error>> {
    print_incoming(&ep)?;
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<PeerId>::new()));
    let (ev_ep, ev_peers) = (ep.clone(), peers.clone());
    tokio::spawn(async move {
        while let Some(e) = ev_ep.next_event().await {
            if let Event::Connected { peer, .. } = &e
                && let Ok(mut p) = ev_peers.lock()
            {
                p.push(*peer);
            }
            println!("* {e:?}");
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let targets = peers.lock().map(|p| p.clone()).unwrap_or_default();
        for p in targets {
            if let Err(e) = ep.send(&p, Kind::DM, Bytes::from(line.clone())).await {
                println!("! {}: {e}", p.short());
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("listen") => {
            let addr: SocketAddr = args
                .get(1)
                .map_or("127.0.0.1:5000", String::as_str)
                .parse()?;
            let ep = Endpoint::bind(addr, Identity::generate()?, Config::default())?;
            println!("chat on {} as {}", ep.local_addr(), ep.peer_id());
            interactive(ep).await
        }
        Some("join") => {
            let (Some(addr), Some(peer)) = (args.get(1), args.get(2)) else {
                return Err("usage: chat join <addr> <peer-id>".into());
            };
            let ep = Endpoint::bind(
                "127.0.0.1:0".parse()?,
                Identity::generate()?,
                Config::default(),
            )?;
            let ep2 = ep.clone();
            let (addr, peer) = (addr.parse()?, PeerId::from_hex(peer)?);
            tokio::spawn(async move {
                if let Err(e) = ep2.connect(addr, peer).await {
                    println!("! dial failed: {e}");
                }
            });
            interactive(ep).await
        }
        _ => {
            let alice = Endpoint::bind(
                "127.0.0.1:0".parse()?,
                Identity::generate()?,
                Config::default(),
            )?;
            let bob = Endpoint::bind(
                "127.0.0.1:0".parse()?,
                Identity::generate()?,
                Config::default(),
            )?;
            let mut bob_inbox = bob.register(Kind::DM, KindConfig::default())?;
            let mut alice_inbox = alice.register(Kind::DM, KindConfig::default())?;
            alice.connect(bob.local_addr(), bob.peer_id()).await?;
            alice
                .send(&bob.peer_id(), Kind::DM, Bytes::from_static(b"hi bob"))
                .await?;
            let m = bob_inbox.recv().await.ok_or("bob closed")?;
            println!(
                "bob   <- {}: {}",
                m.peer.short(),
                String::from_utf8_lossy(&m.data)
            );
            // Bob answers over the same connection: one connection per peer.
            bob.send(
                &m.peer,
                Kind::DM,
                Bytes::from_static(b"hi alice, one connection is enough"),
            )
            .await?;
            let m = alice_inbox.recv().await.ok_or("alice closed")?;
            println!(
                "alice <- {}: {}",
                m.peer.short(),
                String::from_utf8_lossy(&m.data)
            );
            println!("{}", serde_json_line(&alice));
            Ok(())
        }
    }
}

fn serde_json_line(ep: &Endpoint) -> String {
    let d = ep.diagnostics();
    format!(
        "alice diagnostics: {} live connection(s), kinds {:?}",
        d.live_connections,
        d.kinds.iter().map(|k| k.kind).collect::<Vec<_>>()
    )
}
