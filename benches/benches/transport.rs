//! Criterion: libtransport vs quinn 0.11, configured alike (see
//! `benches::suites::transport`). Each iteration is a complete transfer on
//! fresh endpoints; only the transfer (or the handshake) is timed.
//!
//! ```text
//! cargo bench -p benches --no-default-features --features transport --bench transport
//! cargo bench -p benches --no-default-features --features uring --bench transport  # + io_uring
//! ```

// A failed transfer must abort the benchmark, not be timed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use benches::suites::transport::{ours, theirs};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BULK: u64 = 64 << 20;
const MSGS: u64 = 10_000;

fn secs(bytes: u64, gbps: f64) -> Duration {
    Duration::from_secs_f64(bytes as f64 * 8.0 / (gbps * 1e9))
}

fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport/bulk_64MiB");
    g.sample_size(10).throughput(Throughput::Bytes(BULK));
    for gso in [true, false] {
        let tag = if gso { "gso" } else { "no-gso" };
        g.bench_function(format!("libtransport/{tag}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        secs(
                            BULK,
                            ours::bulk(BULK, gso, ours::Backend::Tokio).unwrap().gbps,
                        )
                    })
                    .sum()
            });
        });
        g.bench_function(format!("quinn/{tag}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| secs(BULK, theirs::bulk(BULK, gso).unwrap()))
                    .sum()
            });
        });
    }
    #[cfg(feature = "uring")]
    g.bench_function("libtransport/uring", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    secs(
                        BULK,
                        ours::bulk(BULK, true, ours::Backend::Uring).unwrap().gbps,
                    )
                })
                .sum()
        });
    });
    g.finish();
}

fn msg1k(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport/msg1k_10k");
    g.sample_size(10).throughput(Throughput::Elements(MSGS));
    g.bench_function("libtransport", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| Duration::from_secs_f64(MSGS as f64 / ours::msg1k(MSGS).unwrap().per_s))
                .sum()
        });
    });
    g.bench_function("quinn", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| Duration::from_secs_f64(MSGS as f64 / theirs::msg1k(MSGS).unwrap().per_s))
                .sum()
        });
    });
    g.finish();
}

fn setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport/setup");
    g.sample_size(20);
    g.bench_function("libtransport", |b| {
        b.iter_custom(|iters| ours::setup(iters as usize).unwrap().into_iter().sum());
    });
    g.bench_function("quinn", |b| {
        b.iter_custom(|iters| theirs::setup(iters as usize).unwrap().into_iter().sum());
    });
    g.finish();
}

criterion_group!(benches, bulk, msg1k, setup);
criterion_main!(benches);
