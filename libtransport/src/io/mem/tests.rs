//! The mem sockets under tokio's paused clock: delivery timing, GSO/GRO,
//! NAT expiry over long idle periods, unbinding. Capability T2.

// One test compares real against virtual time on purpose.
#![allow(clippy::disallowed_methods)]

use std::future::poll_fn;
use std::io::IoSliceMut;
use std::time::Duration;

use super::test_util::addr;
use super::*;

async fn send(s: &mut MemSocket, to: SocketAddr, data: &[u8], seg: Option<usize>) {
    let t = Transmit {
        destination: to,
        ecn: Some(Ecn::Ect0),
        contents: data,
        segment_size: seg,
        src_ip: None,
    };
    poll_fn(|cx| s.poll_send(cx, &t)).await.unwrap();
}

/// Receives one batch; returns (meta, bytes) per entry.
async fn recv(s: &mut MemSocket) -> Vec<(RecvMeta, Vec<u8>)> {
    let mut b0 = vec![0u8; 64 * 1024];
    let mut b1 = vec![0u8; 64 * 1024];
    let mut meta = [RecvMeta::empty(); 2];
    let n = {
        let mut bufs = [IoSliceMut::new(&mut b0), IoSliceMut::new(&mut b1)];
        poll_fn(|cx| s.poll_recv(cx, &mut bufs, &mut meta))
            .await
            .unwrap()
    };
    [b0, b1]
        .into_iter()
        .zip(meta)
        .take(n)
        .map(|(b, m)| (m, b[..m.len].to_vec()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delivery_takes_exactly_the_link_delay_in_virtual_time() {
    let net = MemNetwork::new(1, NetworkConfig::default());
    let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    net.with(|n| n.set_link_both(a, b, LinkConfig::with_delay(Duration::from_millis(50))));
    let mut sa = net.bind(a).unwrap();
    let mut sb = net.bind(b).unwrap();
    let start = tokio::time::Instant::now();
    send(&mut sa, b, b"ping", None).await;
    let got = recv(&mut sb).await;
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"ping");
    assert_eq!((got[0].0.addr, got[0].0.ecn), (a, Some(Ecn::Ect0)));
    send(&mut sb, a, b"pong", None).await;
    assert_eq!(recv(&mut sa).await[0].1, b"pong");
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn receiver_waiting_before_the_send_is_woken() {
    let net = MemNetwork::new(1, NetworkConfig::default());
    let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    let mut sa = net.bind(a).unwrap();
    let mut sb = net.bind(b).unwrap();
    let rx = tokio::spawn(async move { recv(&mut sb).await });
    // Let the receiver park with nothing in flight (no timer armed).
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(&mut sa, b, b"late", None).await;
    let got = rx.await.unwrap();
    assert_eq!(got[0].1, b"late");
}

#[tokio::test(start_paused = true)]
async fn gso_batch_arrives_as_gro_entry_with_stride() {
    let net = MemNetwork::new(1, NetworkConfig::default());
    let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    let mut sa = net.bind(a).unwrap();
    let mut sb = net.bind(b).unwrap();
    let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    send(&mut sa, b, &data, Some(1000)).await;
    let got = recv(&mut sb).await;
    assert_eq!(got.len(), 1, "three datagrams coalesce into one entry");
    assert_eq!((got[0].0.len, got[0].0.stride), (2500, 1000));
    assert_eq!(got[0].1, data);
    assert_eq!(net.stats().sent, 3);
}

#[tokio::test(start_paused = true)]
async fn without_gro_each_datagram_is_its_own_entry() {
    let net = MemNetwork::new(1, NetworkConfig::default());
    let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
    let mut sa = net.bind(a).unwrap();
    let opts = MemSocketOptions {
        gso_segments: 1,
        gro_segments: 1,
    };
    let mut sb = net.bind_with(b, None, opts).unwrap();
    assert_eq!(sb.max_receive_segments(), 1);
    send(&mut sa, b, &[1u8; 1500], Some(1000)).await;
    let got = recv(&mut sb).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].0.len, got[0].0.stride, got[1].0.len),
        (1000, 1000, 500)
    );
}

#[tokio::test(start_paused = true)]
async fn nat_binding_expires_after_virtual_idle_then_revives() {
    let net = MemNetwork::new(1, NetworkConfig::default());
    let nat = net.add_nat(NatConfig::new(
        "198.51.100.1".parse().unwrap(),
        Duration::from_secs(30),
    ));
    let (inside, server) = (addr("192.168.0.2:5000"), addr("203.0.113.1:443"));
    let mut si = net.bind_behind(inside, nat).unwrap();
    let mut ss = net.bind(server).unwrap();
    send(&mut si, server, b"hello", None).await;
    let public = recv(&mut ss).await[0].0.addr;
    // Thirty virtual minutes of silence.
    let real = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "virtual time must not cost real time"
    );
    send(&mut ss, public, b"anyone there?", None).await;
    let waited = tokio::time::timeout(Duration::from_secs(5), recv(&mut si)).await;
    assert!(
        waited.is_err(),
        "the expired binding must not pass inbound traffic"
    );
    assert_eq!(net.with(|n| n.nat_stats(nat).unwrap().dropped_expired), 1);
    // The inside speaks again: the binding revives and replies pass.
    send(&mut si, server, b"back", None).await;
    assert_eq!(recv(&mut ss).await[0].0.addr, public);
    send(&mut ss, public, b"welcome", None).await;
    assert_eq!(recv(&mut si).await[0].1, b"welcome");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_socket_unbinds_and_errors_are_typed() {
    let net = MemNetwork::new(1, NetworkConfig::default());
    let a = addr("10.0.0.1:1");
    let s = net.bind(a).unwrap();
    assert!(matches!(net.bind(a), Err(NetworkError::AddrInUse(x)) if x == a));
    drop(s);
    let mut s = net.bind(a).unwrap();
    assert_eq!(s.local_addr().unwrap(), a);
    assert_eq!(s.backend(), "mem");
    // Sending to nobody is a counted drop, not an error.
    send(&mut s, addr("10.0.0.9:9"), b"x", None).await;
    assert_eq!(net.stats().dropped_no_route, 1);
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_trace_under_lossy_jittery_link() {
    async fn trace(seed: u64) -> Vec<(Duration, Vec<u8>)> {
        let net = MemNetwork::new(seed, NetworkConfig::default());
        let (a, b) = (addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let link = LinkConfig {
            loss: 0.2,
            jitter: Duration::from_millis(10),
            duplicate: 0.05,
            reorder: 0.1,
            ..LinkConfig::with_delay(Duration::from_millis(20))
        };
        net.with(|n| n.set_link(a, b, link));
        let mut sa = net.bind(a).unwrap();
        let opts = MemSocketOptions {
            gso_segments: 1,
            gro_segments: 1,
        };
        let mut sb = net.bind_with(b, None, opts).unwrap();
        let start = tokio::time::Instant::now();
        for i in 0..100u8 {
            send(&mut sa, b, &[i], None).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut out = Vec::new();
        let expected = net.stats().sent + net.stats().duplicated - net.stats().dropped_loss;
        while (out.len() as u64) < expected {
            for (_, d) in recv(&mut sb).await {
                out.push((start.elapsed(), d));
            }
        }
        out
    }
    let one = trace(9).await;
    assert_eq!(one, trace(9).await);
    assert_ne!(one, trace(10).await);
    // Reordering happened: payloads are not sorted.
    assert!(one.windows(2).any(|w| w[0].1 > w[1].1));
}
