//! Echo over bidirectional streams.
//!
//! ```text
//! cargo run -p libtransport --example echo                 # both ends in one process
//! cargo run -p libtransport --example echo -- server 127.0.0.1:4433
//! cargo run -p libtransport --example echo -- client 127.0.0.1:4433 <server-peer-id> hello
//! ```
//!
//! The server registers a handler for the ECHO kind; the client dials the
//! server's address *and* PeerId (a different key there is refused), opens a
//! stream of that kind, writes, and reads the echo back.

use std::net::SocketAddr;

use libtransport::{Config, Endpoint, Identity, Kind, KindConfig, PeerId};

const ECHO: Kind = Kind(0x20);

async fn serve(ep: Endpoint) -> Result<(), libtransport::Error> {
    let mut echo = ep.register(ECHO, KindConfig::default())?;
    while let Some(mut bi) = echo.accept_bi().await {
        tokio::spawn(async move {
            let Ok(data) = bi.recv.read_to_end(1 << 20).await else {
                return;
            };
            let _ = bi.send.write_all(&data).await;
            let _ = bi.send.finish();
        });
    }
    Ok(())
}

async fn ask(
    ep: &Endpoint,
    addr: SocketAddr,
    peer: PeerId,
    text: &str,
) -> Result<String, libtransport::Error> {
    let conn = ep.connect(addr, peer).await?;
    let (mut send, mut recv) = conn.open_bi(ECHO).await?;
    send.write_all(text.as_bytes()).await?;
    send.finish()?;
    let back = recv.read_to_end(1 << 20).await?;
    Ok(String::from_utf8_lossy(&back).into_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let addr: SocketAddr = args
                .get(1)
                .map_or("127.0.0.1:4433", String::as_str)
                .parse()?;
            let ep = Endpoint::bind(addr, Identity::generate()?, Config::default())?;
            println!("listening on {} as {}", ep.local_addr(), ep.peer_id());
            serve(ep).await?;
        }
        Some("client") => {
            let (Some(addr), Some(peer)) = (args.get(1), args.get(2)) else {
                return Err("usage: echo client <addr> <peer-id> [text]".into());
            };
            let text = args.get(3).map_or("hello", String::as_str);
            let ep = Endpoint::bind(
                "127.0.0.1:0".parse()?,
                Identity::generate()?,
                Config::default(),
            )?;
            println!(
                "{}",
                ask(&ep, addr.parse()?, PeerId::from_hex(peer)?, text).await?
            );
        }
        _ => {
            let server = Endpoint::bind(
                "127.0.0.1:0".parse()?,
                Identity::generate()?,
                Config::default(),
            )?;
            let (addr, peer) = (server.local_addr(), server.peer_id());
            tokio::spawn(serve(server));
            let client = Endpoint::bind(
                "127.0.0.1:0".parse()?,
                Identity::generate()?,
                Config::default(),
            )?;
            for text in ["hello", "post-quantum", "echo"] {
                println!(
                    "sent {text:?}, got {:?}",
                    ask(&client, addr, peer, text).await?
                );
            }
            println!("{}", serde_json_like(&client));
        }
    }
    Ok(())
}

/// A one-line summary from the diagnostics snapshot.
fn serde_json_like(ep: &Endpoint) -> String {
    let d = ep.diagnostics();
    format!(
        "client: {} live connection(s), {} datagrams out, {} in",
        d.live_connections, d.counters.datagrams_out, d.counters.datagrams_in
    )
}
