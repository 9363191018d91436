//! The `node` suite: one whole node — relayd, verifyd and gossipd, the
//! release binaries, spawned on a temp dir (`daemons`) — against the
//! same stages in one process, in one run.
//!
//! `stagebench node [N]` (N: messages through the node in all, default
//! 1,000,000; `--quick` 20,000). The daemons must be built first
//! (`cargo build --release -p relayd -p gossipd -p verifyd`); they are
//! looked for next to `stagebench` and killed, their temp dir removed,
//! however the suite ends. Every wait is bounded: a stall is an error,
//! not a figure.
//!
//! Cases, in this order:
//! 1. `inproc_msgs_per_s` (`pubsub::inproc`): a publisher runtime and a
//!    subscriber runtime in this process over libtransport on loopback,
//!    verifying in process; 1 KiB signed messages with at most
//!    `gossip live`'s window (64) published and not yet delivered.
//! 2. `node_msgs_per_s` (`pubsub::Peer`): the same publisher (same key,
//!    same payloads) dials the node's relayd and joins the topic through
//!    the node; an application subscribed through `gossipd::client::Client`
//!    receives; same window. `node_vs_inproc` is the ratio. Both windows
//!    publish from one table of signatures made beforehand
//!    (`presign`), so the publisher's ML-DSA-65 signing is outside what
//!    is timed (`window_live_signatures` shows it: 0); `sign_us_p50` and
//!    `publisher_sign_ceiling_per_s` say what live signing would cost.
//! 3. `node_rss_mib`: the three daemons' summed `VmRSS` idle (node up, peer
//!    joined, nothing published: `node_rss_idle_mib`) and after N
//!    messages, with memory sampled at ten checkpoints. The messages after
//!    the timed window are signed while they go, on a thread of their own
//!    a little ahead of the publisher (`fill_msgs_per_s` is that rate,
//!    signing included).
//! 4. `node_dm_ack_p50_us` / p99 (`dm`): the node's application
//!    `send_dm`s 1 KiB to the bench peer and waits for the receipt, in
//!    blocks alternating with libtransport's own receive-ACK round trip
//!    (`ack_rtt_p50_us`, as `stagebench transport latency` measures it);
//!    `node_dm_vs_ack_rtt` is the ratio of the p50s. At least 200 DMs
//!    (1,000; `--quick` 200).
//!
//! CPU time of every process during the timed windows comes from
//! `/proc/<pid>/stat` (`*_cpu_cores`: CPU seconds per wall second). The
//! issue's bars are reported, never asserted: `node_msgs_per_s` ≥ 10,000
//! and ≥ 0.85 × `inproc_msgs_per_s`, `node_dm_ack_p50_us` ≤ 3 ×
//! `ack_rtt_p50_us`, `node_rss_mib` ≤ 96 after 1 M messages (`rss_messages`
//! says how many the figure is after).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use libgossip::proto::TopicId;
use libtransport::Identity;
use serde_json::{Map, Value, json};

use crate::stats::{micros, quantile};
use crate::suites::gossip::live::{PAYLOAD, WINDOW};
use crate::{Outcome, SuiteOpts, Table};

pub mod daemons;
pub mod dm;
pub mod presign;
pub mod pubsub;

use daemons::{DAEMONS, Memory, NodeUnderTest, rss_mib};
use pubsub::{TOPIC, Window};

/// The bars of the issue.
const BAR_MSGS_PER_S: f64 = 10_000.0;
const BAR_VS_INPROC: f64 = 0.85;
const BAR_DM_VS_ACK: f64 = 3.0;
const BAR_RSS_MIB: f64 = 96.0;
const BAR_RSS_MESSAGES: usize = 1_000_000;
/// Memory samples during the fill.
const CHECKPOINTS: usize = 10;

/// How much each case moves.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Messages through the node in all (the RSS figure is after these).
    total: usize,
    /// Untimed messages before each timed window.
    warm: usize,
    /// Timed messages per window.
    window: usize,
    /// DMs timed (and as many bare receive-ACKed sends).
    dms: usize,
}

impl Sizes {
    fn new(opts: &SuiteOpts) -> Result<Self> {
        let total: usize = match opts.args.first() {
            Some(n) => n.replace('_', "").parse().context("N must be a number")?,
            None if opts.quick => 20_000,
            None => 1_000_000,
        };
        let (warm, window, dms) = if opts.quick {
            (500, 5_000, 200)
        } else {
            (1_000, 50_000, 1_000)
        };
        let window = window.min(total.saturating_sub(warm));
        ensure!(
            window >= 1_000,
            "N must be at least {} (a warm-up of {warm} and a timed window of 1,000)",
            warm + 1_000
        );
        Ok(Self {
            total,
            warm,
            window,
            dms,
        })
    }
}

/// Runs the suite.
pub fn run(opts: &SuiteOpts) -> Result<Outcome> {
    let sizes = Sizes::new(opts)?;
    // Fail before any work when the daemons are not built.
    daemons::binaries()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let topic = TopicId::from_name(TOPIC);
    let id = Identity::generate()?;
    let table = presign::Table::build(&id, topic, sizes.warm + sizes.window)?;
    let mut sign = table.sign_times.clone();
    let sign_us_p50 = quantile(&mut sign, 0.5).map_or(f64::NAN, micros);
    let presign_s = table.wall.as_secs_f64();

    let inproc = rt.block_on(pubsub::inproc(&id, table.clone(), sizes.warm, sizes.window))?;

    let mut node = NodeUnderTest::start()?;
    let mut peer = pubsub::Peer::join(&rt, &node, &id, table, sizes.total)?;
    let idle = node.memory()?;
    let diag0 = node.gossipd_diagnostics()?;
    let end = sizes.warm + sizes.window;
    let through = peer.window(&rt, &node, sizes.warm, end)?;
    let mut samples = Vec::with_capacity(CHECKPOINTS);
    let (fill_wall, app_lost) = peer.fill(&rt, end, CHECKPOINTS, |published| {
        node.alive()?;
        samples.push((published, node.memory()?));
        Ok(())
    })?;
    let after = node.memory()?;
    let diag1 = node.gossipd_diagnostics()?;
    let dms = dm::measure(&rt, &node, &peer.node, sizes.dms)?;
    node.alive()?;
    rt.block_on(peer.node.gossip.shutdown())?;
    drop(node);

    let fill = Fill {
        messages: sizes.total - end,
        wall: fill_wall,
        app_lost,
        samples,
        idle,
        after,
        diag: counters(&diag0, &diag1),
    };
    let mut out = Outcome::default();
    let mut summary = Map::new();
    pubsub_report(
        &mut out,
        &mut summary,
        sizes,
        (&inproc, &through),
        (sign_us_p50, presign_s),
    );
    fill_report(&mut out, &mut summary, sizes, &fill);
    dm_report(&mut out, &mut summary, dms);
    bars_report(&mut out, &mut summary);
    summary.insert("case".into(), json!("summary"));
    summary.insert("quick".into(), json!(opts.quick));
    out.json.push(Value::Object(summary));
    Ok(out)
}

/// The fill to N messages and the memory around it.
struct Fill {
    messages: usize,
    wall: Duration,
    app_lost: u64,
    samples: Vec<(usize, [Memory; 3])>,
    idle: [Memory; 3],
    after: [Memory; 3],
    diag: Map<String, Value>,
}

/// gossipd counters that say whether the run was what it claims, as
/// deltas from `a` to `b`: deliveries it dropped for the application,
/// verify batches answered by verifyd and checked in-process.
fn counters(a: &Value, b: &Value) -> Map<String, Value> {
    let d = |section: &str, name: &str| {
        let v = |j: &Value| j[section][name].as_u64().unwrap_or(0);
        json!(v(b).saturating_sub(v(a)))
    };
    Map::from_iter([
        (
            "gossipd_deliveries_dropped".into(),
            d("api", "deliveries_dropped"),
        ),
        (
            "gossipd_verify_pool_batches".into(),
            d("link", "verify_pool"),
        ),
        (
            "gossipd_verify_local_batches".into(),
            d("link", "verify_local"),
        ),
        ("gossipd_verifyd_busy".into(), d("verifyd", "busy")),
    ])
}

fn cores(w: &Window, i: usize) -> f64 {
    w.cpu_ns
        .get(i)
        .map_or(f64::NAN, |&ns| ns as f64 / 1e9 / w.wall.as_secs_f64())
}

/// A pubsub table row: `cpu` are the indices into `w.cpu_ns` of the
/// relayd, verifyd, gossipd and bench columns present (right-aligned:
/// the missing leading ones are "-").
fn window_row(label: &str, w: &Window, cpu: &[usize]) -> Vec<String> {
    let mut row = vec![
        label.to_owned(),
        format!("{:.0}", w.per_s),
        format!("{:.0}", w.p50_us),
        format!("{:.0}", w.p99_us),
        w.duplicates.to_string(),
        w.live_signatures.to_string(),
    ];
    row.extend((cpu.len()..4).map(|_| "-".to_owned()));
    row.extend(cpu.iter().map(|&i| format!("{:.2}", cores(w, i))));
    row.push(format!("{:.2}", w.wall.as_secs_f64()));
    row
}

fn pubsub_report(
    out: &mut Outcome,
    summary: &mut Map<String, Value>,
    sizes: Sizes,
    (inproc, node): (&Window, &Window),
    (sign_us_p50, presign_s): (f64, f64),
) {
    let ratio = node.per_s / inproc.per_s;
    let mut t = Table::new(
        format!(
            "node pubsub: {} B signed messages, {} timed after {} untimed, at most {} undelivered; \
             pre-signed (ML-DSA-65 sign p50 {sign_us_p50:.0} µs, ceiling {:.0}/s per core live)",
            PAYLOAD,
            sizes.window,
            sizes.warm,
            WINDOW,
            1e6 / sign_us_p50
        ),
        &[
            "path",
            "msgs/s",
            "lat p50 µs",
            "lat p99 µs",
            "dups",
            "live sigs",
            "CPU cores: relayd",
            "verifyd",
            "gossipd",
            "bench",
            "wall s",
        ],
    );
    t.row(window_row("in process (2 runtimes)", inproc, &[0]));
    t.row(window_row(
        "node (peer → relayd → gossipd → app)",
        node,
        &[0, 1, 2, 3],
    ));
    t.row(["node / in process".to_owned(), format!("{ratio:.3}")]);
    out.tables.push(t);
    for (case, w) in [("inproc", inproc), ("node pubsub", node)] {
        out.json.push(json!({
            "case": case, "messages": w.messages, "warmup": sizes.warm, "window": WINDOW,
            "payload_bytes": PAYLOAD, "per_s": w.per_s, "latency_p50_us": w.p50_us,
            "latency_p99_us": w.p99_us, "duplicates": w.duplicates,
            "live_signatures": w.live_signatures, "wall_s": w.wall.as_secs_f64(),
        }));
    }
    let s = summary;
    s.insert("inproc_msgs_per_s".into(), json!(inproc.per_s));
    s.insert("node_msgs_per_s".into(), json!(node.per_s));
    s.insert("node_vs_inproc".into(), json!(ratio));
    s.insert("inproc_latency_p50_us".into(), json!(inproc.p50_us));
    s.insert("inproc_latency_p99_us".into(), json!(inproc.p99_us));
    s.insert("node_latency_p50_us".into(), json!(node.p50_us));
    s.insert("node_latency_p99_us".into(), json!(node.p99_us));
    s.insert("window_messages".into(), json!(sizes.window));
    s.insert("warmup_messages".into(), json!(sizes.warm));
    s.insert("window".into(), json!(WINDOW));
    s.insert("payload_bytes".into(), json!(PAYLOAD));
    s.insert(
        "window_live_signatures".into(),
        json!(node.live_signatures + inproc.live_signatures),
    );
    s.insert("sign_us_p50".into(), json!(sign_us_p50));
    s.insert(
        "publisher_sign_ceiling_per_s".into(),
        json!(1e6 / sign_us_p50),
    );
    s.insert("presign_s".into(), json!(presign_s));
    s.insert("inproc_cpu_cores".into(), json!(cores(inproc, 0)));
    for (i, name) in DAEMONS.iter().chain(&["bench"]).enumerate() {
        s.insert(format!("node_{name}_cpu_cores"), json!(cores(node, i)));
        let per_msg = node
            .cpu_ns
            .get(i)
            .map_or(f64::NAN, |&ns| ns as f64 / 1e3 / node.messages as f64);
        s.insert(format!("node_{name}_cpu_us_per_msg"), json!(per_msg));
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory_row(label: String, m: &[Memory; 3]) -> Vec<String> {
    let mut row = vec![label];
    row.extend(m.iter().map(|m| format!("{:.1}", mib(m.rss_kib))));
    row.push(format!("{:.1}", rss_mib(m)));
    row.push(format!(
        "{:.1}",
        mib(m.iter().map(|m| m.hwm_kib).sum::<u64>())
    ));
    row
}

fn fill_report(out: &mut Outcome, summary: &mut Map<String, Value>, sizes: Sizes, f: &Fill) {
    let fill_per_s = f.messages as f64 / f.wall.as_secs_f64();
    let mut t = Table::new(
        format!(
            "node memory: VmRSS MiB of the daemons, idle and while {} messages go through \
             ({} after the timed window, signed as they go: {fill_per_s:.0} msgs/s)",
            sizes.total, f.messages
        ),
        &[
            "messages",
            "relayd",
            "verifyd",
            "gossipd",
            "sum",
            "sum of VmHWM",
        ],
    );
    t.row(memory_row("idle".into(), &f.idle));
    for (n, m) in &f.samples {
        t.row(memory_row(n.to_string(), m));
    }
    t.row(memory_row(format!("after {}", sizes.total), &f.after));
    out.tables.push(t);
    let per_daemon = |m: &[Memory; 3]| -> Map<String, Value> {
        DAEMONS
            .iter()
            .zip(m)
            .map(|(d, m)| ((*d).to_owned(), json!(mib(m.rss_kib))))
            .collect()
    };
    let checkpoints: Vec<Value> = f
        .samples
        .iter()
        .map(|(n, m)| json!({"messages": n, "rss_mib": rss_mib(m)}))
        .collect();
    let mut case = Map::from_iter([
        ("case".into(), json!("rss")),
        ("messages".into(), json!(sizes.total)),
        ("idle_mib".into(), json!(per_daemon(&f.idle))),
        ("after_mib".into(), json!(per_daemon(&f.after))),
        ("checkpoints".into(), json!(checkpoints)),
        ("app_dropped".into(), json!(f.app_lost)),
    ]);
    case.extend(f.diag.clone());
    out.json.push(Value::Object(case));
    let s = summary;
    s.insert("node_rss_idle_mib".into(), json!(rss_mib(&f.idle)));
    s.insert("node_rss_mib".into(), json!(rss_mib(&f.after)));
    s.insert(
        "node_hwm_mib".into(),
        json!(mib(f.after.iter().map(|m| m.hwm_kib).sum())),
    );
    s.insert("rss_messages".into(), json!(sizes.total));
    for (d, m) in DAEMONS.iter().zip(&f.after) {
        s.insert(format!("node_{d}_rss_mib"), json!(mib(m.rss_kib)));
    }
    s.insert("fill_msgs_per_s".into(), json!(fill_per_s));
    s.insert("app_dropped".into(), json!(f.app_lost));
    s.extend(f.diag.clone());
}

fn dm_report(out: &mut Outcome, summary: &mut Map<String, Value>, mut d: dm::Dms) {
    let us = |v: &mut Vec<Duration>, q| quantile(v, q).map_or(f64::NAN, micros);
    let (n50, n99) = (us(&mut d.round_trips, 0.5), us(&mut d.round_trips, 0.99));
    let (g50, g99) = (us(&mut d.attempts, 0.5), us(&mut d.attempts, 0.99));
    let (a50, a99) = (us(&mut d.ack, 0.5), us(&mut d.ack, 0.99));
    let ratio = n50 / a50;
    let mut t = Table::new(
        format!(
            "node DMs: {} × {} B, app send_dm → receipt (app → gossipd → relayd → peer and back), \
             in {} blocks alternating with bare receive-ACKed sends",
            d.round_trips.len(),
            crate::suites::transport::ack::PAYLOAD,
            dm::BLOCKS
        ),
        &["round trip", "p50 µs", "p99 µs"],
    );
    t.row([
        "node: app send_dm → receipt".to_owned(),
        format!("{n50:.0}"),
        format!("{n99:.0}"),
    ]);
    t.row([
        "  of which gossipd's attempt (ring → relayd → QUIC ACK → back)".to_owned(),
        format!("{g50:.0}"),
        format!("{g99:.0}"),
    ]);
    t.row([
        "libtransport send_with_receive_ack".to_owned(),
        format!("{a50:.0}"),
        format!("{a99:.0}"),
    ]);
    t.row([
        "node / libtransport (p50)".to_owned(),
        format!("{ratio:.2}"),
    ]);
    out.tables.push(t);
    out.json.push(json!({
        "case": "dm", "dms": d.round_trips.len(), "p50_us": n50, "p99_us": n99,
        "attempt_p50_us": g50, "attempt_p99_us": g99, "ack_rtt_p50_us": a50,
        "ack_rtt_p99_us": a99, "ack_samples": d.ack.len(), "not_direct": d.not_direct,
        "delivered_to_peer": d.delivered,
    }));
    let s = summary;
    s.insert("node_dm_ack_p50_us".into(), json!(n50));
    s.insert("node_dm_ack_p99_us".into(), json!(n99));
    s.insert("node_dm_attempt_p50_us".into(), json!(g50));
    s.insert("node_dm_attempt_p99_us".into(), json!(g99));
    s.insert("ack_rtt_p50_us".into(), json!(a50));
    s.insert("ack_rtt_p99_us".into(), json!(a99));
    s.insert("node_dm_vs_ack_rtt".into(), json!(ratio));
    s.insert("dms".into(), json!(d.round_trips.len()));
    s.insert("dm_not_direct".into(), json!(d.not_direct));
    s.insert("dm_delivered_to_peer".into(), json!(d.delivered));
}

fn bars_report(out: &mut Outcome, summary: &mut Map<String, Value>) {
    let f = |k: &str| summary.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let rss_n = summary
        .get("rss_messages")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let rows = [
        (
            "node_msgs_per_s",
            f("node_msgs_per_s"),
            format!("≥ {BAR_MSGS_PER_S:.0}"),
            f("node_msgs_per_s") >= BAR_MSGS_PER_S,
        ),
        (
            "node_vs_inproc",
            f("node_vs_inproc"),
            format!("≥ {BAR_VS_INPROC}"),
            f("node_vs_inproc") >= BAR_VS_INPROC,
        ),
        (
            "node_dm_vs_ack_rtt",
            f("node_dm_vs_ack_rtt"),
            format!("≤ {BAR_DM_VS_ACK}"),
            f("node_dm_vs_ack_rtt") <= BAR_DM_VS_ACK,
        ),
        (
            "node_rss_mib",
            f("node_rss_mib"),
            format!("≤ {BAR_RSS_MIB} after {BAR_RSS_MESSAGES} (measured after {rss_n})"),
            f("node_rss_mib") <= BAR_RSS_MIB,
        ),
    ];
    let mut t = Table::new(
        "node bars (reported, not asserted)",
        &["figure", "value", "bar", "met"],
    );
    let mut bars = Map::new();
    for (name, value, bar, met) in rows {
        t.row([
            name.to_owned(),
            format!("{value:.3}"),
            bar,
            if met { "yes" } else { "no" }.to_owned(),
        ]);
        bars.insert(format!("{name}_bar_met"), json!(met));
    }
    out.tables.push(t);
    summary.extend(bars.clone());
    bars.insert("case".into(), json!("bars"));
    bars.insert("rss_bar_messages".into(), json!(BAR_RSS_MESSAGES));
    out.json.push(Value::Object(bars));
}
