//! The `quinn` 0.11 side, configured like libtransport: the very TLS
//! configs libtransport uses (`libtransport::tls::configs()`: its provider
//! and key-exchange groups, an ephemeral self-signed certificate accepted
//! without a chain, TLS 1.3 only) and the transport parameters of
//! `libtransport::Config::default()`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::{Buf, Bytes, BytesMut};

use super::{Msg, chunk, gbps, loopback, runtime, timed};

fn transport(gso: bool) -> Arc<quinn::TransportConfig> {
    Arc::new(libtransport::Config::default().gso(gso).transport_config())
}

/// A server and a client endpoint on loopback.
pub(super) fn pair(gso: bool) -> Result<(quinn::Endpoint, quinn::Endpoint)> {
    let (server_cfg, client_cfg) = configs(gso)?;
    let server = quinn::Endpoint::server(server_cfg, loopback())?;
    let mut client = quinn::Endpoint::client(loopback())?;
    client.set_default_client_config(client_cfg);
    Ok((server, client))
}

/// quinn server and client configs with libtransport's TLS and transport
/// parameters.
fn configs(gso: bool) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let (server_tls, client_tls) = libtransport::tls::configs()?;
    let mut server = quinn::ServerConfig::with_crypto(server_tls);
    server.transport_config(transport(gso));
    let mut client = quinn::ClientConfig::new(client_tls);
    client.transport_config(transport(gso));
    Ok((server, client))
}

pub(super) async fn connect(
    server: &quinn::Endpoint,
    client: &quinn::Endpoint,
) -> Result<(quinn::Connection, quinn::Connection)> {
    let addr = server.local_addr()?;
    let accept = async {
        let inc = server
            .accept()
            .await
            .ok_or_else(|| anyhow!("server endpoint closed"))?;
        Ok::<_, anyhow::Error>(inc.await?)
    };
    let dial = async {
        Ok::<_, anyhow::Error>(
            client
                .connect(addr, libtransport::tls::SERVER_NAME)?
                .await?,
        )
    };
    let (s, c) = tokio::try_join!(accept, dial)?;
    Ok((s, c))
}

/// Bulk transfer over one bidirectional stream; Gbit/s.
pub fn bulk(bytes: u64, gso: bool) -> Result<f64> {
    runtime()?.block_on(async {
        let (server, client) = pair(gso)?;
        let (sc, cc) = connect(&server, &client).await?;
        let reader = tokio::spawn(async move {
            let (_send, mut recv) = sc.accept_bi().await?;
            let mut n = 0u64;
            while let Some(c) = recv.read_chunk(usize::MAX, true).await? {
                n += c.bytes.len() as u64;
            }
            Ok::<_, anyhow::Error>(n)
        });
        let data = chunk();
        let d = timed(async {
            let (mut send, _recv) = cc.open_bi().await?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(data.len() as u64);
                send.write_chunk(data.slice(..n as usize)).await?;
                left -= n;
            }
            send.finish()?;
            let got = reader.await??;
            anyhow::ensure!(got == bytes, "quinn bulk: read {got} of {bytes} bytes");
            Ok(())
        })
        .await?;
        cc.close(0u32.into(), b"done");
        client.wait_idle().await;
        Ok(gbps(bytes, d))
    })
}

/// 1 KiB length-prefixed messages on one unidirectional stream; messages/s.
pub fn msg1k(messages: u64) -> Result<Msg> {
    runtime()?.block_on(async {
        let (server, client) = pair(true)?;
        let (sc, cc) = connect(&server, &client).await?;
        let sc_stats = sc.clone();
        let reader = tokio::spawn(async move {
            let mut recv = sc.accept_uni().await?;
            let mut buf = BytesMut::new();
            let mut count = 0u64;
            while count < messages {
                let Some(c) = recv.read_chunk(usize::MAX, true).await? else {
                    break;
                };
                buf.extend_from_slice(&c.bytes);
                // Frame exactly as libtransport does: u32 BE length, payload.
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + len {
                        break;
                    }
                    buf.advance(4);
                    let msg = buf.split_to(len).freeze();
                    std::hint::black_box(msg);
                    count += 1;
                }
            }
            Ok::<_, anyhow::Error>(count)
        });
        let payload = Bytes::from(vec![7u8; 1024]);
        let prefix = Bytes::copy_from_slice(&1024u32.to_be_bytes());
        let d = timed(async {
            let mut send = cc.open_uni().await?;
            for _ in 0..messages {
                let mut parts = [prefix.clone(), payload.clone()];
                send.write_all_chunks(&mut parts).await?;
            }
            let got = reader.await??;
            anyhow::ensure!(got == messages, "quinn msg1k: {got} of {messages} messages");
            send.finish()?;
            Ok(())
        })
        .await?;
        let per = |n: u64| n as f64 / messages as f64;
        let (tx, rx) = (cc.stats(), sc_stats.stats());
        let msg = Msg {
            per_s: messages as f64 / d.as_secs_f64(),
            tx_datagrams: per(tx.udp_tx.datagrams),
            tx_ios: per(tx.udp_tx.ios),
            rx_datagrams: per(rx.udp_tx.datagrams),
        };
        cc.close(0u32.into(), b"done");
        client.wait_idle().await;
        Ok(msg)
    })
}

/// Handshake latency from fresh client endpoints, one connection at a time.
pub fn setup(n: usize) -> Result<Vec<Duration>> {
    runtime()?.block_on(async {
        let (server_cfg, cfg) = configs(true)?;
        let server = quinn::Endpoint::server(server_cfg, loopback())?;
        let addr = server.local_addr()?;
        let acceptor = server.clone();
        tokio::spawn(async move {
            while let Some(inc) = acceptor.accept().await {
                tokio::spawn(async move {
                    if let Ok(c) = inc.await {
                        c.closed().await;
                    }
                });
            }
        });
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let mut client = quinn::Endpoint::client(loopback())?;
            client.set_default_client_config(cfg.clone());
            let t = Instant::now();
            let c = client
                .connect(addr, libtransport::tls::SERVER_NAME)?
                .await
                .context("quinn connect")?;
            samples.push(t.elapsed());
            c.close(0u32.into(), b"done");
            client.wait_idle().await;
        }
        server.close(0u32.into(), b"done");
        Ok(samples)
    })
}
