//! Criterion: 5,517-byte verify items between two threads over Unix-socket
//! flatbuffers frames and over the shared-memory ring, at batch 1, 16 and
//! 256 (see `benches::suites::ipc` for what each path does). Setup (socket
//! pair, ring mapping, threads) is outside the timed part.
//!
//! ```text
//! cargo bench -p benches --no-default-features --features ipc --bench ipc
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use benches::suites::ipc::{BATCHES, shm_rtt, shm_stream, uds_rtt, uds_stream};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wire::ring::SpinConfig;

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipc_stream");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    for batch in BATCHES {
        // One iteration = one batch; each sample streams `iters` batches.
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("uds", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| uds_stream(batch, iters as usize * batch, None).unwrap());
        });
        g.bench_with_input(BenchmarkId::new("shm", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                shm_stream(batch, iters as usize * batch, SpinConfig::default())
                    .unwrap()
                    .0
            });
        });
    }
    g.finish();
}

fn rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipc_rtt");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    for batch in BATCHES {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("uds", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| uds_rtt(batch, iters as usize, None).unwrap().iter().sum());
        });
        g.bench_with_input(BenchmarkId::new("shm", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                shm_rtt(batch, iters as usize, SpinConfig::default())
                    .unwrap()
                    .iter()
                    .sum()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, stream, rtt);
criterion_main!(benches);
