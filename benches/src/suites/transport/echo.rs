//! Bare request/response echo, both sides: the client opens a
//! bidirectional stream, writes a 1 KiB payload and finishes; the server
//! reads it to the end, writes it back and finishes; the client reads the
//! echo to the end. One stream per round trip, one round trip at a time, on
//! one warm connection — the transport floor under a receive-ACK round trip
//! (which has the same shape plus its 55-byte header and 23-byte answer).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use libtransport::{Config, Kind, KindConfig};

use super::{ours, runtime, theirs};

/// Payload of each echo.
pub const PAYLOAD: usize = 1024;
/// Round trips before measuring (connection and congestion state warm).
const WARMUP: usize = 50;

/// `n` echo round trips over libtransport.
pub fn ours(n: usize) -> Result<Vec<Duration>> {
    runtime()?.block_on(async {
        let server = ours::endpoint(Config::default(), ours::Backend::Tokio)?;
        let client = ours::endpoint(Config::default(), ours::Backend::Tokio)?;
        let mut rx = server.register(Kind::DM, KindConfig::default())?;
        let peer = ours::dial(&client, &server).await?;
        let echo = tokio::spawn(async move {
            while let Some(mut bi) = rx.accept_bi().await {
                let data = bi.recv.read_to_end(2 * PAYLOAD).await?;
                bi.send.write_all(&data).await?;
                bi.send.finish()?;
            }
            Ok::<_, anyhow::Error>(())
        });
        let payload = vec![0x5au8; PAYLOAD];
        let mut samples = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            let (mut send, mut recv) = client.open_bi(&peer, Kind::DM).await?;
            send.write_all(&payload).await?;
            send.finish()?;
            let back = recv.read_to_end(2 * PAYLOAD).await?;
            let d = t.elapsed();
            anyhow::ensure!(
                back.len() == PAYLOAD,
                "libtransport echo: {} bytes back",
                back.len()
            );
            if i >= WARMUP {
                samples.push(d);
            }
        }
        client.abort();
        server.abort();
        client.closed().await;
        echo.abort();
        Ok(samples)
    })
}

/// `n` echo round trips over quinn 0.11.
pub fn theirs(n: usize) -> Result<Vec<Duration>> {
    runtime()?.block_on(async {
        let (server, client) = theirs::pair(true)?;
        let (sc, cc) = theirs::connect(&server, &client).await?;
        let echo = tokio::spawn(async move {
            loop {
                let (mut send, mut recv) = match sc.accept_bi().await {
                    Ok(s) => s,
                    Err(_) => return Ok::<_, anyhow::Error>(()),
                };
                let data = recv.read_to_end(2 * PAYLOAD).await?;
                send.write_all(&data).await?;
                send.finish()?;
            }
        });
        let payload = vec![0x5au8; PAYLOAD];
        let mut samples = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            let (mut send, mut recv) = cc.open_bi().await?;
            send.write_all(&payload).await?;
            send.finish()?;
            let back = recv.read_to_end(2 * PAYLOAD).await?;
            let d = t.elapsed();
            if back.len() != PAYLOAD {
                return Err(anyhow!("quinn echo: {} bytes back", back.len()));
            }
            if i >= WARMUP {
                samples.push(d);
            }
        }
        cc.close(0u32.into(), b"done");
        client.wait_idle().await;
        echo.abort();
        Ok(samples)
    })
}
