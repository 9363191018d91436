//! Criterion: ML-DSA-65 verification in process and through verifyd.
//!
//! * `verify_single_core/<backend>`: one verify with a cached decoded key;
//! * `verify_inproc_rayon/<threads>`: batches of 256 on a local rayon pool;
//! * `verify_verifyd_uds/<batch>`: through one verifyd (2 threads) over
//!   Unix-socket frames, batch 1, 16 and 256, 16 requests in flight;
//! * `verify_verifyd_ring/<batch>`: the same daemon through the
//!   shared-memory ring pair, batch 16 and 256;
//! * `verify_scale/{one_proc_2t,two_procs_1t,one_proc_1t}`: batch 256
//!   (frames).
//!
//! verifyd runs as child processes of this bench binary (see
//! `benches::suites::verify::serve_child_if_requested`). The daemons offer
//! the ring; pools with `ring_capacity: 0` stay on frames.
//!
//! ```text
//! cargo bench -p benches --no-default-features --features verify --bench verify
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use benches::suites::verify::{Daemon, serve_child_if_requested, workload};
use criterion::{BenchmarkId, Criterion, Throughput};
use verifyd::BackendKind;
use verifyd::backend::verify_item;
use verifyd::client::{InProcess, Item, Pool, PoolConfig};

/// Time to verify `n` items through `pool` in requests of `batch`, with up to
/// `window` requests in flight.
fn through(pool: &Pool, items: &[Item], batch: usize, window: usize, n: usize) -> Duration {
    let mut q = VecDeque::new();
    let mut sent = 0;
    let mut i = 0;
    let t = Instant::now();
    while sent < n {
        while q.len() < window && sent < n {
            let start = (i * batch) % (items.len() - batch + 1);
            i += 1;
            q.push_back(pool.submit(items[start..start + batch].to_vec()));
            sent += batch;
        }
        if let Some(tk) = q.pop_front() {
            tk.wait().unwrap();
        }
    }
    for tk in q {
        tk.wait().unwrap();
    }
    t.elapsed()
}

fn main() {
    if let Some(r) = serve_child_if_requested() {
        r.unwrap();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let (items, _) = workload(1024).unwrap();

    let mut g = c.benchmark_group("verify_single_core");
    g.measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for &kind in BackendKind::ALL {
        let b = kind.build();
        let keys: Vec<_> = items
            .iter()
            .map(|i| b.decode_key(&i.key).unwrap())
            .collect();
        let mut n = 0;
        g.bench_function(BenchmarkId::from_parameter(kind), |bch| {
            bch.iter(|| {
                n = (n + 1) % items.len();
                verify_item(keys[n].as_ref(), &items[n].msg, &[], &items[n].sig)
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify_inproc_rayon");
    g.measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .throughput(Throughput::Elements(256));
    for threads in [1, 2] {
        let ip = InProcess::new(BackendKind::DEFAULT, threads, 64).unwrap();
        g.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter(|| ip.verify(&items[..256]))
        });
    }
    g.finish();

    let dir = std::env::temp_dir().join(format!("tern-verify-criterion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kind = BackendKind::DEFAULT;
    let one = Daemon::start(&dir, "one.sock", 1, kind, &[]).unwrap();
    let other = Daemon::start(&dir, "other.sock", 1, kind, &[]).unwrap();
    let two = Daemon::start(&dir, "two.sock", 2, kind, &[]).unwrap();
    let frames = || PoolConfig {
        ring_capacity: 0,
        ..PoolConfig::default()
    };
    let p_two = Pool::connect(vec![two.socket.clone()], frames()).unwrap();
    let p_one = Pool::connect(vec![one.socket.clone()], frames()).unwrap();
    let p_pair = Pool::connect(vec![one.socket.clone(), other.socket.clone()], frames()).unwrap();
    let r_two = Pool::connect(vec![two.socket.clone()], PoolConfig::default()).unwrap();

    let mut g = c.benchmark_group("verify_verifyd_uds");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    for batch in [1usize, 16, 256] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iters| through(&p_two, &items, batch, 16, iters as usize * batch));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify_verifyd_ring");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    for batch in [16usize, 256] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iters| through(&r_two, &items, batch, 16, iters as usize * batch));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("verify_scale");
    g.measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .throughput(Throughput::Elements(256));
    for (name, pool) in [
        ("one_proc_2t", &p_two),
        ("two_procs_1t", &p_pair),
        ("one_proc_1t", &p_one),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| through(pool, &items, 256, 8, iters as usize * 256))
        });
    }
    g.finish();
    drop((p_one, p_two, p_pair, r_two, one, other, two));
    let _ = std::fs::remove_dir_all(&dir);
    c.final_summary();
}
