//! Bulk transfer over one connection on loopback, reporting throughput and
//! the GSO/GRO batching the driver achieved.
//!
//! ```text
//! cargo run --release -p libtransport --example bulk -- [MiB] [--no-gso] [--messages]
//! ```
//!
//! By default one bidirectional stream of kind BULK carries the data; with
//! `--messages` it is sent as 1 MiB messages through the router instead.
#![allow(clippy::disallowed_methods)] // the example owns the clock

use std::time::Instant;

use libtransport::{Bytes, Config, Endpoint, Identity, Kind, KindConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(256);
    let gso = !args.iter().any(|a| a == "--no-gso");
    let messages = args.iter().any(|a| a == "--messages");
    let cfg = Config::default().gso(gso);
    let server = Endpoint::bind("127.0.0.1:0".parse()?, Identity::generate()?, cfg.clone())?;
    let client = Endpoint::bind("127.0.0.1:0".parse()?, Identity::generate()?, cfg)?;
    let mut bulk = server.register(
        Kind::BULK,
        KindConfig {
            max_message: 2 << 20,
            ..KindConfig::default()
        },
    )?;
    let total = mib << 20;

    let sink = tokio::spawn(async move {
        let mut got = 0usize;
        if messages {
            while got < total {
                let Some(m) = bulk.recv().await else { break };
                got += m.data.len();
            }
        } else if let Some(mut bi) = bulk.accept_bi().await {
            while let Ok(Some(chunk)) = bi.recv.read_chunk(usize::MAX).await {
                got += chunk.len();
            }
        }
        got
    });

    let conn = client
        .connect(server.local_addr(), server.peer_id())
        .await?;
    let chunk = Bytes::from(vec![0xA5u8; 1 << 20]);
    let start = Instant::now();
    if messages {
        for _ in 0..mib {
            conn.send(Kind::BULK, chunk.clone()).await?;
        }
    } else {
        let (mut send, _recv) = conn.open_bi(Kind::BULK).await?;
        for _ in 0..mib {
            send.write_chunk(chunk.clone()).await?;
        }
        send.finish()?;
    }
    let got = sink.await?;
    let secs = start.elapsed().as_secs_f64();
    let d = client.diagnostics();
    let stats = conn.stats();
    println!(
        "path: rtt {:?}, cwnd {} B, sent {} packets, lost {} packets",
        stats.rtt, stats.cwnd, stats.sent_packets, stats.lost_packets
    );
    println!(
        "{} MiB in {:.3} s = {:.2} Gbit/s (gso={gso}, messages={messages}); sender GSO batches {} avg {:.1} segments; receiver GRO batches {}",
        got >> 20,
        secs,
        got as f64 * 8.0 / secs / 1e9,
        d.counters.gso_batches,
        d.gso_avg_segments,
        server.diagnostics().counters.gro_batches,
    );
    Ok(())
}
