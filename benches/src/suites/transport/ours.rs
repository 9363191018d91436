//! The libtransport side: two endpoints in one process on loopback, the
//! default `Config` (GSO switchable), identity proofs included in setup.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use libtransport::{Bytes, Config, Endpoint, Identity, Kind, KindConfig, Overflow, PeerId};

use super::{Bulk, Msg, chunk, gbps, loopback, runtime, timed};

/// Which I/O backend the endpoints run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// tokio (epoll) + quinn-udp.
    Tokio,
    /// io_uring (benches feature `uring`).
    Uring,
}

pub(super) fn endpoint(config: Config, backend: Backend) -> Result<Endpoint> {
    let id = Identity::generate()?;
    match backend {
        Backend::Tokio => Ok(Endpoint::bind(loopback(), id, config)?),
        #[cfg(feature = "uring")]
        Backend::Uring => {
            let s = libtransport::io::uring::UringSocket::bind(loopback())?;
            Ok(Endpoint::with_socket(Box::new(s), id, config)?)
        }
        #[cfg(not(feature = "uring"))]
        Backend::Uring => Err(anyhow!("built without the `uring` feature")),
    }
}

/// Connects `client` to `server`; returns the server's PeerId.
pub(super) async fn dial(client: &Endpoint, server: &Endpoint) -> Result<PeerId> {
    let peer = server.peer_id();
    client
        .connect(server.local_addr(), peer)
        .await
        .context("libtransport connect")?;
    Ok(peer)
}

/// Bulk transfer over one bidirectional stream of kind BULK.
pub fn bulk(bytes: u64, gso: bool, backend: Backend) -> Result<Bulk> {
    runtime()?.block_on(async {
        let cfg = Config::default().gso(gso);
        let server = endpoint(cfg.clone(), backend)?;
        let client = endpoint(cfg, backend)?;
        let mut bulk_rx = server.register(Kind::BULK, KindConfig::default())?;
        let peer = dial(&client, &server).await?;
        let reader = tokio::spawn(async move {
            let mut bi = bulk_rx
                .accept_bi()
                .await
                .ok_or_else(|| anyhow!("server closed"))?;
            let mut n = 0u64;
            while let Some(c) = bi.recv.read_chunk(usize::MAX).await? {
                n += c.len() as u64;
            }
            Ok::<_, anyhow::Error>(n)
        });
        let data = chunk();
        let d = timed(async {
            let (mut send, _recv) = client.open_bi(&peer, Kind::BULK).await?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(data.len() as u64);
                send.write_chunk(data.slice(..n as usize)).await?;
                left -= n;
            }
            send.finish()?;
            let got = reader.await??;
            anyhow::ensure!(
                got == bytes,
                "libtransport bulk: read {got} of {bytes} bytes"
            );
            Ok(())
        })
        .await?;
        let segs = client.diagnostics().gso_avg_segments;
        client.abort();
        server.abort();
        client.closed().await;
        Ok(Bulk {
            gbps: gbps(bytes, d),
            gso_avg_segments: segs,
        })
    })
}

/// 1 KiB messages with `send(peer, DM, Bytes)`; messages/s.
pub fn msg1k(messages: u64) -> Result<Msg> {
    runtime()?.block_on(async {
        let server = endpoint(Config::default(), Backend::Tokio)?;
        let client = endpoint(Config::default(), Backend::Tokio)?;
        // Back-pressure, not drops: the benchmark must count every message.
        let kc = KindConfig {
            overflow: Overflow::BackPressure,
            ..KindConfig::default()
        };
        let mut rx = server.register(Kind::DM, kc)?;
        let peer = dial(&client, &server).await?;
        let reader = tokio::spawn(async move {
            let mut count = 0u64;
            while count < messages {
                let Some(m) = rx.recv().await else { break };
                std::hint::black_box(m.data);
                count += 1;
            }
            count
        });
        let payload = Bytes::from(vec![7u8; 1024]);
        let d = timed(async {
            for _ in 0..messages {
                client.send(&peer, Kind::DM, payload.clone()).await?;
            }
            let got = reader.await?;
            anyhow::ensure!(
                got == messages,
                "libtransport msg1k: {got} of {messages} messages"
            );
            Ok(())
        })
        .await?;
        let per = |n: u64| n as f64 / messages as f64;
        let (tx, rx) = (client.diagnostics().counters, server.diagnostics().counters);
        let msg = Msg {
            per_s: messages as f64 / d.as_secs_f64(),
            tx_datagrams: per(tx.datagrams_out),
            tx_ios: per(tx.datagrams_out - tx.gso_segments + tx.gso_batches),
            rx_datagrams: per(rx.datagrams_out),
        };
        client.abort();
        server.abort();
        client.closed().await;
        Ok(msg)
    })
}

/// Connection setup (TLS + both identity proofs) from fresh client
/// endpoints, one at a time.
pub fn setup(n: usize) -> Result<Vec<Duration>> {
    runtime()?.block_on(async {
        let server = endpoint(Config::default(), Backend::Tokio)?;
        let (addr, peer) = (server.local_addr(), server.peer_id());
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let client = endpoint(Config::default(), Backend::Tokio)?;
            let t = Instant::now();
            let c = client
                .connect(addr, peer)
                .await
                .context("libtransport connect")?;
            samples.push(t.elapsed());
            c.close();
            client.abort();
            client.closed().await;
        }
        server.abort();
        Ok(samples)
    })
}
