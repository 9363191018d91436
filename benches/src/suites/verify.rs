//! The `verify` suite: ML-DSA-65 verification in process and through
//! verifyd.
//!
//! Cases, all in one run so ratios compare like with like on a noisy host:
//!
//! * each backend, one core, verify with a cached decoded key, and from bytes
//!   (decode + verify);
//! * in-process rayon with 1 and 2 threads;
//! * through verifyd processes over Unix-socket frames at batch 1, 16 and
//!   256, with 1 and 2 worker threads, and two processes × 1 thread vs one ×
//!   1 thread (the pool balances over both);
//! * through the same daemons over the shared-memory ring pair at batch 16
//!   and 256, with 1 and 2 worker threads, plus one-item latency.
//!
//! verifyd processes are this same executable re-run with
//! [`CHILD_ENV`] set: [`serve_child_if_requested`] turns it into a daemon, so
//! the suite needs no separately built binary. Repetitions alternate
//! in-process and daemon cases; tables and JSON report medians.
//!
//! The daemons offer the ring; a pool with `ring_capacity: 0` keeps a
//! session on frames, so both transports run against the same processes.
//! The headline `verifyd_batch16_items_per_s` / `verifyd_batch256_items_per_s`
//! report the faster transport (median against median) and the `transport`
//! field names it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::json;
use verifyd::backend::verify_item;
use verifyd::client::{InProcess, Item, Pool, PoolConfig};
use verifyd::fixtures::Corpus;
use verifyd::server::{Server, ServerConfig};
use verifyd::transport::Transport;
use verifyd::{BackendKind, Verdict};

use crate::stats::{median, micros, quantile};
use crate::{Outcome, SuiteOpts, Table};

/// Set to `socket,threads,backend` to make this executable serve as verifyd.
pub const CHILD_ENV: &str = "TERN_BENCH_VERIFYD_CHILD";

/// If [`CHILD_ENV`] is set, runs a verifyd server until killed and returns
/// `Some`; otherwise `None`. Call first thing in `main` of a bench binary.
pub fn serve_child_if_requested() -> Option<Result<()>> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    Some((|| {
        let mut parts = spec.split(',');
        let socket = PathBuf::from(parts.next().context("socket")?);
        let threads: usize = parts.next().context("threads")?.parse()?;
        let backend: BackendKind = parts.next().context("backend")?.parse()?;
        let mut admin = socket.clone().into_os_string();
        admin.push(".admin");
        let mut cfg = ServerConfig::new(socket).threads(threads);
        cfg.backend = backend;
        cfg.admin_socket = Some(PathBuf::from(admin));
        Server::bind(cfg)?.run()?;
        Ok(())
    })())
}

/// A verifyd child process; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts this executable as a verifyd child.
    pub fn start(
        dir: &Path,
        name: &str,
        threads: usize,
        backend: BackendKind,
        suite_args: &[&str],
    ) -> Result<Daemon> {
        let socket = dir.join(name);
        let child = Command::new(std::env::current_exe()?)
            .args(suite_args)
            .env(
                CHILD_ENV,
                format!("{},{threads},{backend}", socket.display()),
            )
            .spawn()?;
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(20),
                "verifyd child did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Daemon { child, socket })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds the calling thread has spent on a CPU
/// (`/proc/thread-self/schedstat`); 0 if unavailable. Unlike wall time it
/// does not count time the thread waited for a CPU, which on a shared host
/// is most of the noise.
pub fn thread_cpu_ns() -> u64 {
    read_schedstat("/proc/thread-self/schedstat")
}

fn read_schedstat(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// CPU nanoseconds used so far by every thread of process `pid`.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|t| read_schedstat(&format!("{}/schedstat", t.path().display())))
        .sum()
}

/// CPU nanoseconds of this process plus `daemons`.
fn cpu_ns(daemons: &[&Daemon]) -> u64 {
    process_cpu_ns(std::process::id())
        + daemons
            .iter()
            .map(|d| process_cpu_ns(d.child.id()))
            .sum::<u64>()
}

/// Items and ground truth for the benches: 4 keys, 64 signatures over
/// 256-byte messages (a 5,517-byte item), reused.
pub fn workload(total: usize) -> Result<(Vec<Item>, Vec<Verdict>)> {
    let c = Corpus::build(BackendKind::AwsLc, 4, 64, 256, total, 0, 7)?;
    Ok(c.items())
}

/// Single-core verifications per CPU-second of the measuring thread with a
/// cached key, and wall µs per verify from bytes (decode included).
pub fn single_core(kind: BackendKind, items: &[Item], dur: Duration) -> (f64, f64) {
    let b = kind.build();
    let keys: Vec<_> = items.iter().map(|i| b.decode_key(&i.key).ok()).collect();
    let t = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut n = 0usize;
    while t.elapsed() < dur {
        let i = n % items.len();
        if let Some(k) = &keys[i] {
            let v = verify_item(k.as_ref(), &items[i].msg, &[], &items[i].sig);
            debug_assert_eq!(v, Verdict::Valid);
        }
        n += 1;
    }
    let cpu = thread_cpu_ns().saturating_sub(cpu0);
    // Per CPU-second when schedstat is available: robust to preemption.
    let cached = if cpu > 0 {
        n as f64 / (cpu as f64 / 1e9)
    } else {
        n as f64 / t.elapsed().as_secs_f64()
    };
    let t = Instant::now();
    let mut m = 0usize;
    while t.elapsed() < dur / 2 {
        let i = m % items.len();
        let _ =
            verifyd::backend::verify_once(b.as_ref(), &items[i].key, &items[i].msg, &items[i].sig);
        m += 1;
    }
    (cached, micros(t.elapsed()) / m as f64)
}

/// Items per second through `pool`, `batch` items per request, keeping
/// `window` requests in flight, for `dur`.
pub fn pool_throughput(
    pool: &Pool,
    items: &[Item],
    batch: usize,
    window: usize,
    dur: Duration,
) -> Result<f64> {
    let mut q = VecDeque::new();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut take = || {
        let start = next % (items.len() - batch + 1);
        next += batch;
        items[start..start + batch].to_vec()
    };
    // Warm-up: register keys on every instance.
    for _ in 0..4 {
        pool.verify(take()).map_err(anyhow::Error::msg)?;
    }
    let t = Instant::now();
    while t.elapsed() < dur {
        while q.len() < window {
            q.push_back(pool.submit(take()));
        }
        if let Some(tk) = q.pop_front() {
            done += tk.wait().map_err(anyhow::Error::msg)?.len();
        }
    }
    for tk in q {
        done += tk.wait().map_err(anyhow::Error::msg)?.len();
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}

/// In-process rayon items per second with `threads` threads, batches of 256.
pub fn inproc_throughput(ip: &InProcess, items: &[Item], dur: Duration) -> f64 {
    let batch = 256.min(items.len());
    let t = Instant::now();
    let mut done = 0;
    let mut i = 0;
    while t.elapsed() < dur {
        let start = (i * batch) % (items.len() - batch + 1);
        done += ip.verify(&items[start..start + batch]).len();
        i += 1;
    }
    done as f64 / t.elapsed().as_secs_f64()
}

/// Runs a throughput case and returns (items/s, items per CPU-second of this
/// process and `daemons`).
fn per_cpu(daemons: &[&Daemon], f: impl FnOnce() -> Result<f64>) -> Result<(f64, f64)> {
    let c0 = cpu_ns(daemons);
    let t = Instant::now();
    let rate = f()?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_ns(daemons).saturating_sub(c0) as f64 / 1e9;
    // Items ≈ rate × wall (the warm-up inside `f` only adds CPU, so this
    // errs against verifyd).
    Ok((rate, if cpu > 0.0 { rate * wall / cpu } else { 0.0 }))
}

/// Round-trip latencies with one item in flight at a time.
pub fn single_item_latency(pool: &Pool, items: &[Item], n: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let it = vec![items[i % items.len()].clone()];
        let t = Instant::now();
        pool.verify(it).map_err(anyhow::Error::msg)?;
        if i >= 50 {
            out.push(t.elapsed());
        }
    }
    Ok(out)
}

fn med(v: &mut [f64]) -> f64 {
    median(v).unwrap_or(0.0)
}

/// Runs the suite.
pub fn run(opts: &SuiteOpts) -> Result<Outcome> {
    if let Some(r) = serve_child_if_requested() {
        r?;
        return Ok(Outcome::default());
    }
    // Short slices, many repetitions, every case in every repetition: on a
    // shared 2-core host the load changes by the second, so each ratio is
    // taken from cases measured seconds apart, then the median is reported.
    let (dur, reps, lat_n) = if opts.quick {
        (Duration::from_millis(200), 1, 300)
    } else {
        (Duration::from_millis(400), 7, 500)
    };
    // The backend verifyd itself would pick here: the same start-up
    // calibration the daemon runs without `--backend`, on this machine, now.
    let calibration = verifyd::calibrate::calibrate_built_in(verifyd::calibrate::DEFAULT_BUDGET)?;
    let chosen = calibration.picked;
    let (items, truth) = workload(1024)?;
    anyhow::ensure!(truth.iter().all(|v| *v == Verdict::Valid));

    // Daemons: this executable re-run as verifyd.
    let dir = tempfile_dir()?;
    let one = Daemon::start(&dir, "one.sock", 1, chosen, &["verify"])?;
    let other = Daemon::start(&dir, "other.sock", 1, chosen, &["verify"])?;
    let two_thr = Daemon::start(&dir, "two.sock", 2, chosen, &["verify"])?;
    // Frame sessions (the ring declined on the client side) and ring sessions.
    let cfg = || PoolConfig {
        ring_capacity: 0,
        ..PoolConfig::default()
    };
    let p_one = Pool::connect(vec![one.socket.clone()], cfg()).map_err(anyhow::Error::msg)?;
    let p_pair = Pool::connect(vec![one.socket.clone(), other.socket.clone()], cfg())
        .map_err(anyhow::Error::msg)?;
    let p_two = Pool::connect(vec![two_thr.socket.clone()], cfg()).map_err(anyhow::Error::msg)?;
    let rcfg = PoolConfig::default;
    let r_one = Pool::connect(vec![one.socket.clone()], rcfg()).map_err(anyhow::Error::msg)?;
    let r_two = Pool::connect(vec![two_thr.socket.clone()], rcfg()).map_err(anyhow::Error::msg)?;
    for (p, want) in [
        (&p_one, Transport::Frames),
        (&p_two, Transport::Frames),
        (&r_one, Transport::Ring),
        (&r_two, Transport::Ring),
    ] {
        anyhow::ensure!(
            p.transports().iter().all(|t| t.1 == want),
            "pool not on {want:?}: {:?}",
            p.transports()
        );
    }
    let ip1 = InProcess::new(chosen, 1, 64)?;
    let ip2 = InProcess::new(chosen, 2, 64)?;

    let mut r: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut push = |k: &str, v: f64| r.entry(k.to_owned()).or_default().push(v);
    let (mut lat1, mut lat2, mut lat2r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        for &kind in BackendKind::ALL {
            let (c, b) = single_core(kind, &items, dur / 2);
            push(&format!("{kind}_cached"), c);
            push(&format!("{kind}_bytes"), b);
        }
        // Each case also reports items per CPU-second of every process
        // involved (bench process + daemons): the cost of going through
        // verifyd, independent of how much CPU the neighbours left us.
        let (in1, in1_cpu) = per_cpu(&[], || Ok(inproc_throughput(&ip1, &items, dur)))?;
        push("inproc_1t", in1);
        let (v, c) = per_cpu(&[&one], || pool_throughput(&p_one, &items, 16, 16, dur))?;
        push("verifyd_1t_b16", v);
        push("ratio_1t_b16", v / in1);
        push("cpu_ratio_1t_b16", c / in1_cpu);
        let (v, c) = per_cpu(&[&one], || pool_throughput(&p_one, &items, 256, 4, dur))?;
        push("verifyd_1t_b256", v);
        push("ratio_1t_b256", v / in1);
        push("cpu_ratio_1t_b256", c / in1_cpu);
        let (in2, in2_cpu) = per_cpu(&[], || Ok(inproc_throughput(&ip2, &items, dur)))?;
        push("inproc_2t", in2);
        // How much a second thread helps at all right now: the ceiling for
        // every scaling ratio measured in this repetition.
        push("inproc_2t_vs_1t", in2 / in1);
        let (v, c) = per_cpu(&[&two_thr], || pool_throughput(&p_two, &items, 16, 16, dur))?;
        push("verifyd_2t_b16", v);
        push("ratio_2t_b16", v / in2);
        push("cpu_ratio_2t_b16", c / in2_cpu);
        let (v, c) = per_cpu(&[&two_thr], || pool_throughput(&p_two, &items, 256, 4, dur))?;
        push("verifyd_2t_b256", v);
        push("ratio_2t_b256", v / in2);
        push("cpu_ratio_2t_b256", c / in2_cpu);
        // The same four cases over the ring pair.
        let (v, c) = per_cpu(&[&one], || pool_throughput(&r_one, &items, 16, 16, dur))?;
        push("ring_1t_b16", v);
        push("ring_ratio_1t_b16", v / in1);
        push("ring_cpu_ratio_1t_b16", c / in1_cpu);
        let (v, c) = per_cpu(&[&one], || pool_throughput(&r_one, &items, 256, 4, dur))?;
        push("ring_1t_b256", v);
        push("ring_ratio_1t_b256", v / in1);
        push("ring_cpu_ratio_1t_b256", c / in1_cpu);
        let (v, c) = per_cpu(&[&two_thr], || pool_throughput(&r_two, &items, 16, 16, dur))?;
        push("ring_2t_b16", v);
        push("ring_ratio_2t_b16", v / in2);
        push("ring_cpu_ratio_2t_b16", c / in2_cpu);
        let (v, c) = per_cpu(&[&two_thr], || pool_throughput(&r_two, &items, 256, 4, dur))?;
        push("ring_2t_b256", v);
        push("ring_ratio_2t_b256", v / in2);
        push("ring_cpu_ratio_2t_b256", c / in2_cpu);
        lat2r.extend(single_item_latency(&r_two, &items, lat_n)?);
        push("inproc_1t_per_cpu_s", in1_cpu);
        push(
            "verifyd_2t_b1",
            pool_throughput(&p_two, &items, 1, 32, dur)?,
        );
        let single = pool_throughput(&p_one, &items, 256, 4, dur)?;
        let pair = pool_throughput(&p_pair, &items, 256, 8, dur)?;
        push("two_procs_ratio", pair / single);
        push("pair_b256", pair);
        lat2.extend(single_item_latency(&p_two, &items, lat_n)?);
        lat1.extend(single_item_latency(&p_one, &items, lat_n)?);
        // Verify time measured right next to the latency samples.
        push(
            "verify_cached_near_latency",
            single_core(chosen, &items, dur / 2).0,
        );
    }
    let mut m = |k: &str| med(r.get_mut(k).map_or(&mut [][..], |v| &mut v[..]));
    let per_backend: Vec<(BackendKind, f64, f64)> = BackendKind::ALL
        .iter()
        .copied()
        .map(|k| (k, m(&format!("{k}_cached")), m(&format!("{k}_bytes"))))
        .collect();
    let fastest = per_backend.iter().map(|b| b.1).fold(0.0, f64::max);
    let chosen_rate = per_backend
        .iter()
        .find(|b| b.0 == chosen)
        .map_or(0.0, |b| b.1);
    let verify_us_by_backend: serde_json::Map<String, serde_json::Value> = per_backend
        .iter()
        .map(|(k, c, _)| (k.name().to_owned(), json!(1e6 / c)))
        .collect();
    let calibration_us_by_backend: serde_json::Map<String, serde_json::Value> = calibration
        .timings
        .iter()
        .map(|t| {
            let us = t.verify_ns.map(|ns| ns as f64 / 1e3);
            (t.backend.name().to_owned(), json!(us))
        })
        .collect();
    let (in1, in2) = (m("inproc_1t"), m("inproc_2t"));
    let (v1_16, v1_256, v2_16, v2_256, v2_1) = (
        m("verifyd_1t_b16"),
        m("verifyd_1t_b256"),
        m("verifyd_2t_b16"),
        m("verifyd_2t_b256"),
        m("verifyd_2t_b1"),
    );
    let (r1_16, r1_256, r2_16, r2_256) = (
        m("ratio_1t_b16"),
        m("ratio_1t_b256"),
        m("ratio_2t_b16"),
        m("ratio_2t_b256"),
    );
    let (ratio2, pair) = (m("two_procs_ratio"), m("pair_b256"));
    let (c1_16, c1_256, c2_16, c2_256) = (
        m("cpu_ratio_1t_b16"),
        m("cpu_ratio_1t_b256"),
        m("cpu_ratio_2t_b16"),
        m("cpu_ratio_2t_b256"),
    );
    let (g1_16, g1_256, g2_16, g2_256) = (
        m("ring_1t_b16"),
        m("ring_1t_b256"),
        m("ring_2t_b16"),
        m("ring_2t_b256"),
    );
    let (gr1_16, gr1_256, gr2_16, gr2_256) = (
        m("ring_ratio_1t_b16"),
        m("ring_ratio_1t_b256"),
        m("ring_ratio_2t_b16"),
        m("ring_ratio_2t_b256"),
    );
    let (gc1_16, gc1_256, gc2_16, gc2_256) = (
        m("ring_cpu_ratio_1t_b16"),
        m("ring_cpu_ratio_1t_b256"),
        m("ring_cpu_ratio_2t_b16"),
        m("ring_cpu_ratio_2t_b256"),
    );
    // Best transport per batch size (2-thread daemon, the headline case).
    let best = |frames: (f64, f64, f64), ring: (f64, f64, f64)| {
        if ring.0 > frames.0 {
            (ring, Transport::Ring)
        } else {
            (frames, Transport::Frames)
        }
    };
    let ((b16, br16, bc16), t16) = best((v2_16, r2_16, c2_16), (g2_16, gr2_16, gc2_16));
    let ((b256, br256, bc256), t256) = best((v2_256, r2_256, c2_256), (g2_256, gr2_256, gc2_256));
    let transport = if t16 == t256 {
        t16.name().to_string()
    } else {
        format!("{} (batch 16), {} (batch 256)", t16.name(), t256.name())
    };
    let in1_cpu = m("inproc_1t_per_cpu_s");
    let near = m("verify_cached_near_latency");
    let q = |v: &mut Vec<Duration>, p| quantile(v, p).map_or(0.0, micros);
    let (p50_2, p99_2, p50_1, p99_1) = (
        q(&mut lat2, 0.5),
        q(&mut lat2, 0.99),
        q(&mut lat1, 0.5),
        q(&mut lat1, 0.99),
    );
    let (p50_2r, p99_2r) = (q(&mut lat2r, 0.5), q(&mut lat2r, 0.99));
    let verify_us = 1e6 / chosen_rate.max(1e-9);
    let near_us = 1e6 / near.max(1e-9);
    // What the 2-thread daemon's scheduler settled on (after every case).
    let diag: serde_json::Value = {
        let mut p = two_thr.socket.clone().into_os_string();
        p.push(".admin");
        let text =
            verifyd::server::admin::query_diagnostics(Path::new(&p)).map_err(anyhow::Error::msg)?;
        serde_json::from_str(&text)?
    };
    let gather_delay_us = diag["sched"]["delay_us"].as_f64().unwrap_or(0.0);
    let daemon_item_us = diag["sched"]["item_ns"].as_f64().unwrap_or(0.0) / 1e3;
    let batch_hist = diag["batch_size_hist"].clone();
    let admission_limit = diag["sched"]["limit"].as_f64().unwrap_or(0.0);

    let mut t1 = Table::new(
        "ML-DSA-65 backends, one core (median of reps; cached key per CPU-second of the thread)",
        &[
            "backend",
            "verifies/s (cached key)",
            "µs/verify",
            "µs from bytes",
        ],
    );
    for (k, c, b) in &per_backend {
        t1.row([
            k.to_string(),
            format!("{c:.0}"),
            format!("{:.1}", 1e6 / c),
            format!("{b:.1}"),
        ]);
    }
    let mut t2 = Table::new(
        format!("Throughput, backend {chosen}, items/s (median of {reps})"),
        &["case", "1 thread", "2 threads"],
    );
    t2.row([
        "verifyd items per CPU-s ÷ in-process, batch 16 / 256".to_string(),
        format!("{c1_16:.2}x / {c1_256:.2}x"),
        format!("{c2_16:.2}x / {c2_256:.2}x"),
    ]);
    t2.row([
        "in-process rayon".to_string(),
        format!("{in1:.0}"),
        format!("{in2:.0}"),
    ]);
    t2.row([
        "verifyd, batch 16 (median ratio)".to_string(),
        format!("{v1_16:.0} ({r1_16:.2}x)"),
        format!("{v2_16:.0} ({r2_16:.2}x)"),
    ]);
    t2.row([
        "verifyd, batch 256 (median ratio)".to_string(),
        format!("{v1_256:.0} ({r1_256:.2}x)"),
        format!("{v2_256:.0} ({r2_256:.2}x)"),
    ]);
    t2.row([
        "verifyd ring items per CPU-s ÷ in-process, batch 16 / 256".to_string(),
        format!("{gc1_16:.2}x / {gc1_256:.2}x"),
        format!("{gc2_16:.2}x / {gc2_256:.2}x"),
    ]);
    t2.row([
        "verifyd through the ring, batch 16 (median ratio)".to_string(),
        format!("{g1_16:.0} ({gr1_16:.2}x)"),
        format!("{g2_16:.0} ({gr2_16:.2}x)"),
    ]);
    t2.row([
        "verifyd through the ring, batch 256 (median ratio)".to_string(),
        format!("{g1_256:.0} ({gr1_256:.2}x)"),
        format!("{g2_256:.0} ({gr2_256:.2}x)"),
    ]);
    t2.row([
        "verifyd, batch 1 (32 in flight)".to_string(),
        "-".to_string(),
        format!("{v2_1:.0}"),
    ]);
    t2.row([
        "2 verifyd × 1 thread, batch 256".to_string(),
        format!(
            "{pair:.0} ({ratio2:.2}x of one; in-process 2t/1t {:.2}x)",
            m("inproc_2t_vs_1t")
        ),
        "-".to_string(),
    ]);
    t2.row([
        format!("2-thread daemon: gather delay {gather_delay_us:.0} µs, admission limit {admission_limit:.0}, item {daemon_item_us:.1} µs"),
        String::new(),
        String::new(),
    ]);
    let mut t3 = Table::new(
        format!(
            "One item in flight (verify alone: {verify_us:.1} µs; measured next to the latency runs: {near_us:.1} µs)"
        ),
        &["daemon", "p50 µs", "p99 µs"],
    );
    t3.row([
        "1 thread".to_string(),
        format!("{p50_1:.1}"),
        format!("{p99_1:.1}"),
    ]);
    t3.row([
        "2 threads".to_string(),
        format!("{p50_2:.1}"),
        format!("{p99_2:.1}"),
    ]);
    t3.row([
        "2 threads, ring".to_string(),
        format!("{p50_2r:.1}"),
        format!("{p99_2r:.1}"),
    ]);

    // Per-transport detail, merged below (one `json!` this size exceeds the
    // macro recursion limit).
    let per_transport = json!({
        "verifyd_frames_batch16_items_per_s": v2_16,
        "verifyd_frames_batch256_items_per_s": v2_256,
        "verifyd_ring_batch16_items_per_s": g2_16,
        "verifyd_ring_batch256_items_per_s": g2_256,
        "verifyd_ring_1t_batch16_items_per_s": g1_16,
        "verifyd_ring_1t_batch256_items_per_s": g1_256,
        "verifyd_ring_vs_inproc_batch16": gr2_16,
        "verifyd_ring_vs_inproc_batch256": gr2_256,
        "verifyd_ring_vs_inproc_1t_batch16": gr1_16,
        "verifyd_ring_vs_inproc_1t_batch256": gr1_256,
        "verifyd_ring_vs_inproc_cpu_efficiency_batch16": gc2_16,
        "verifyd_ring_vs_inproc_cpu_efficiency_batch256": gc2_256,
        "single_item_ring_p50_us": p50_2r,
        "single_item_ring_p99_us": p99_2r,
        "verifyd_frames_vs_inproc_batch16": r2_16,
        "verifyd_frames_vs_inproc_batch256": r2_256,
        "verifyd_frames_vs_inproc_cpu_efficiency_batch16": c2_16,
        "verifyd_frames_vs_inproc_cpu_efficiency_batch256": c2_256,
    });
    let mut json = json!({
        "suite": "verify",
        "backend": chosen.name(),
        // What start-up calibration picked (the daemons here run it), each
        // backend's µs per verification from this suite's own single-core
        // runs, and the picked backend's rate ÷ the fastest backend's rate.
        "picked_backend": chosen.name(),
        "verify_us_by_backend": verify_us_by_backend,
        "calibration_verify_us_by_backend": calibration_us_by_backend,
        "calibration_ms": calibration.elapsed_ms,
        "verify_us": verify_us,
        "backends": per_backend.iter().map(|(k, c, b)| json!({"backend": k.name(), "items_per_s": c, "verify_us": 1e6 / c, "from_bytes_us": b})).collect::<Vec<_>>(),
        "chosen_vs_fastest": chosen_rate / fastest.max(1e-9),
        "inproc_per_core_items_per_s": in1,
        "inproc_rayon_items_per_s": in2,
        "inproc_rayon_1t_items_per_s": in1,
        "verifyd_batch1_items_per_s": v2_1,
        "verifyd_batch16_items_per_s": b16,
        "verifyd_batch256_items_per_s": b256,
        "verifyd_batch16_transport": t16.name(),
        "verifyd_batch256_transport": t256.name(),
        "verifyd_1t_batch16_items_per_s": v1_16,
        "verifyd_1t_batch256_items_per_s": v1_256,
        "verifyd_vs_inproc_batch16": br16,
        "verifyd_vs_inproc_batch256": br256,
        "verifyd_vs_inproc_1t_batch16": r1_16,
        "verifyd_vs_inproc_1t_batch256": r1_256,
        "verify_us_near_latency": near_us,
        "inproc_items_per_cpu_s": in1_cpu,
        "verifyd_vs_inproc_cpu_efficiency_batch16": bc16,
        "verifyd_vs_inproc_cpu_efficiency_batch256": bc256,
        "verifyd_vs_inproc_cpu_efficiency_1t_batch16": c1_16,
        "verifyd_vs_inproc_cpu_efficiency_1t_batch256": c1_256,
        "single_item_p50_us": p50_2,
        "single_item_p99_us": p99_2,
        "single_item_1t_p50_us": p50_1,
        "single_item_1t_p99_us": p99_1,
        "two_procs_vs_one_ratio": ratio2,
        "inproc_rayon_2t_vs_1t": m("inproc_2t_vs_1t"),
        // Best transport of the headline batch-16/256 numbers; the 1-thread,
        // batch-1, two-process and latency keys without "ring" are frames.
        "transport": transport,
        "gather_delay_us": gather_delay_us,
        "daemon_item_us": daemon_item_us,
        "daemon_admission_limit": admission_limit,
        "daemon_batch_size_hist": batch_hist,
        "reps": reps,
    });
    if let (Some(o), serde_json::Value::Object(extra)) = (json.as_object_mut(), per_transport) {
        o.extend(extra);
    }
    drop((p_one, p_pair, p_two, r_one, r_two, one, other, two_thr));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        tables: vec![t1, t2, t3],
        json: vec![json],
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("tern-verify-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
