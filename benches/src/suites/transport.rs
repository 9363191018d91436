//! The `transport` suite: libtransport side by side with `quinn` 0.11 in the
//! same process and the same run, both on loopback UDP.
//!
//! Both sides use the same rustls provider (aws-lc-rs, X25519MLKEM768 then
//! X25519), the same kind of ephemeral self-signed certificate, and the same
//! `quinn-proto` transport parameters — taken from
//! `libtransport::Config::transport_config()`, so windows, congestion
//! controller (quinn-proto's default, Cubic), MTU and GSO switch match by
//! construction. Each measurement runs on a fresh two-worker tokio runtime.
//!
//! Cases (medians over repetitions, libtransport and quinn interleaved; the
//! ratio is the median of per-repetition ratios):
//! * bulk: one bidirectional stream, `bulk_bytes` written in 1 MiB chunks,
//!   timed until the receiver has read the last byte; GSO on and off; and
//!   on the io_uring backend when built with the `uring` feature;
//! * msg1k: 1 KiB messages over one connection. libtransport: `send(peer,
//!   DM, Bytes)` into a registered kind receiver (length-prefixed messages on
//!   one stream); quinn: the same framing on one unidirectional stream;
//! * setup: connection establishment from a fresh client endpoint, p50/p99;
//!   for libtransport this includes both ML-DSA-65 identity proofs;
//! * echo: 1 KiB request/response round trips, one bidirectional stream
//!   each, p50/p99 (`echo_rtt_p50_us`, `quinn_echo_rtt_p50_us`), and in
//!   the same alternating blocks the round trip of one sequential 1 KiB
//!   `send_with_receive_ack` (`ack_rtt_p50_us`, `ack_rtt_p99_us`);
//! * acked: 1 KiB receive-ACKed sends with 64 in flight
//!   (`acked_msgs_per_s`);
//! * dm-under-load: sequential receive-ACKed 1 KiB DMs idle, then while a
//!   bulk transfer and a probe flood run on the same connection
//!   (`dm_idle_p99_us`, `dm_loaded_p99_us`, `dm_loaded_ratio`).
//!
//! `stagebench transport latency` runs only the last three (with their
//! same-run baselines), the argument `{ours,quinn}:<case>` one side of one
//! case alone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::stats::{median, quantile};
use crate::{Outcome, SuiteOpts, Table};

pub mod ack;
pub mod echo;
pub mod ours;
pub mod theirs;

/// How much each case moves.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Bytes per bulk transfer.
    pub bulk_bytes: u64,
    /// 1 KiB messages per msg1k run.
    pub messages: u64,
    /// Connections per setup run.
    pub setups: usize,
    /// Repetitions of bulk and msg1k (the median is reported).
    pub reps: usize,
    /// 1 KiB echo round trips per side (and receive-ACKed round trips).
    pub echoes: usize,
    /// Receive-ACKed sends per 64-in-flight throughput run (one fresh
    /// connection per repetition). Kept under the receiver's default
    /// per-peer dedupe bound (8,192 ids remembered for 60 s): past it the
    /// receiver answers `Backpressured` until ids expire.
    pub acked: usize,
    /// Receive-ACKed DMs per phase (idle, loaded) of dm-under-load.
    pub dms: usize,
}

impl Sizes {
    /// Full (`quick == false`) or smoke-test sizes.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                bulk_bytes: 128 << 20,
                messages: 20_000,
                setups: 30,
                reps: 1,
                echoes: 500,
                acked: 8_000,
                dms: 500,
            }
        } else {
            Self {
                bulk_bytes: 1 << 30,
                messages: 200_000,
                setups: 200,
                reps: 5,
                echoes: 5_000,
                acked: 8_000,
                dms: 1_000,
            }
        }
    }
}

/// Result of one bulk transfer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bulk {
    /// Gbit/s of stream payload.
    pub gbps: f64,
    /// Average datagrams per GSO batch at the sender (libtransport only).
    pub gso_avg_segments: f64,
}

/// Result of one msg1k run, with the wire cost per message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Msg {
    /// Messages per second.
    pub per_s: f64,
    /// UDP datagrams the sender sent per message.
    pub tx_datagrams: f64,
    /// Send syscalls (transmits, GSO batches counted once) per message.
    pub tx_ios: f64,
    /// UDP datagrams the receiver sent (ACKs) per message.
    pub rx_datagrams: f64,
}

/// A fresh runtime like the ones both sides are measured on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")
}

pub(crate) fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One 1 MiB chunk of bulk payload, shared (no per-write allocation).
pub(crate) fn chunk() -> bytes::Bytes {
    bytes::Bytes::from(vec![0x5au8; 1 << 20])
}

fn med(v: &mut [f64]) -> f64 {
    median(v).unwrap_or(0.0)
}

/// Median of per-repetition ratios `a[i] / b[i]`: each pair ran back to back
/// under the same background load, so this is steadier than a ratio of
/// medians on a shared machine.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let mut r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    med(&mut r)
}

fn us(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Runs one side of one case alone, for profiling (`perf record` on the
/// process sees only that work). Cases:
/// `{ours,quinn}:{bulk,bulk-nogso,msg1k,setup,echo}`,
/// `ours:{ack,acked,dm-under-load}`.
fn single(case: &str, sizes: Sizes) -> Result<Outcome> {
    let value = match case {
        "ours:bulk" => ours::bulk(sizes.bulk_bytes, true, ours::Backend::Tokio)?.gbps,
        "ours:bulk-nogso" => ours::bulk(sizes.bulk_bytes, false, ours::Backend::Tokio)?.gbps,
        "ours:bulk-uring" => ours::bulk(sizes.bulk_bytes, true, ours::Backend::Uring)?.gbps,
        "ours:msg1k" => ours::msg1k(sizes.messages)?.per_s,
        "ours:setup" => ms(quantile(&mut ours::setup(sizes.setups)?, 0.5)),
        "quinn:bulk" => theirs::bulk(sizes.bulk_bytes, true)?,
        "quinn:bulk-nogso" => theirs::bulk(sizes.bulk_bytes, false)?,
        "quinn:msg1k" => theirs::msg1k(sizes.messages)?.per_s,
        "quinn:setup" => ms(quantile(&mut theirs::setup(sizes.setups)?, 0.5)),
        "ours:echo" => us(quantile(&mut echo::ours(sizes.echoes)?, 0.5)),
        "quinn:echo" => us(quantile(&mut echo::theirs(sizes.echoes)?, 0.5)),
        "ours:ack" => us(quantile(&mut ack::rtt(sizes.echoes)?, 0.5)),
        "ours:acked" => ack::throughput(sizes.acked)?,
        "ours:dm-under-load" => {
            let mut l = ack::dm_under_load(sizes.dms, None)?;
            us(quantile(&mut l.loaded, 0.99)) / us(quantile(&mut l.idle, 0.99))
        }
        other => anyhow::bail!("unknown transport case {other:?}"),
    };
    let mut t = Table::new(format!("transport {case} (alone)"), &["case", "value"]);
    t.row([case.to_owned(), format!("{value:.3}")]);
    Ok(Outcome {
        tables: vec![t],
        json: vec![json!({"case": case, "value": value})],
    })
}

/// Runs the suite. An extra argument `latency` runs only the echo,
/// receive-ACK and dm-under-load cases; any other names one case to run
/// alone, for profiling (see `single`).
pub fn run(opts: &SuiteOpts) -> Result<Outcome> {
    let sizes = Sizes::new(opts.quick);
    let mut out = Outcome::default();
    let mut json_all = serde_json::Map::new();
    match opts.args.first().map(String::as_str) {
        Some("latency") => {
            latency_cases(sizes, &mut out, &mut json_all)?;
            summary(opts, sizes, &mut out, json_all);
            return Ok(out);
        }
        Some(case) => return single(case, sizes),
        None => {}
    }

    // Bulk, GSO on and off, both sides interleaved per repetition.
    let mut t = Table::new(
        format!(
            "transport bulk: {} MiB over one stream, loopback",
            sizes.bulk_bytes >> 20
        ),
        &[
            "case",
            "libtransport Gbit/s",
            "quinn Gbit/s",
            "ratio",
            "gso avg segs",
        ],
    );
    for gso in [true, false] {
        let (mut o, mut q, mut segs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..sizes.reps {
            let b = ours::bulk(sizes.bulk_bytes, gso, ours::Backend::Tokio)?;
            o.push(b.gbps);
            segs.push(b.gso_avg_segments);
            q.push(theirs::bulk(sizes.bulk_bytes, gso)?);
        }
        let ratio = paired_ratio(&o, &q);
        let (o, q, segs) = (med(&mut o), med(&mut q), med(&mut segs));
        let case = if gso { "bulk gso" } else { "bulk no-gso" };
        t.row(&[
            case.into(),
            format!("{o:.2}"),
            format!("{q:.2}"),
            format!("{ratio:.2}"),
            format!("{segs:.1}"),
        ]);
        out.json.push(json!({"case": case, "gbps": o, "quinn_gbps": q, "ratio": ratio, "gso_avg_segments": segs}));
        if gso {
            json_all.insert("bulk_gbps".into(), json!(o));
            json_all.insert("quinn_bulk_gbps".into(), json!(q));
            json_all.insert("bulk_ratio".into(), json!(ratio));
            json_all.insert("gso_avg_segments".into(), json!(segs));
        } else {
            json_all.insert("bulk_nogso_gbps".into(), json!(o));
            json_all.insert("quinn_bulk_nogso_gbps".into(), json!(q));
            json_all.insert("bulk_nogso_ratio".into(), json!(ratio));
        }
    }
    #[cfg(feature = "uring")]
    {
        let mut o = Vec::new();
        let mut q = Vec::new();
        for _ in 0..sizes.reps {
            match ours::bulk(sizes.bulk_bytes, true, ours::Backend::Uring) {
                Ok(b) => o.push(b.gbps),
                Err(e) => {
                    eprintln!("uring backend skipped: {e:#}");
                    break;
                }
            }
            q.push(ours::bulk(sizes.bulk_bytes, true, ours::Backend::Tokio)?.gbps);
        }
        if !o.is_empty() {
            let ratio = paired_ratio(&o, &q);
            let (o, q) = (med(&mut o), med(&mut q));
            t.row(&[
                "bulk uring vs tokio".into(),
                format!("{o:.2}"),
                format!("(tokio) {q:.2}"),
                format!("{ratio:.2}"),
                "-".into(),
            ]);
            out.json
                .push(json!({"case": "bulk uring", "gbps": o, "tokio_gbps": q, "ratio": ratio}));
            json_all.insert("uring_bulk_gbps".into(), json!(o));
            json_all.insert("tokio_bulk_gbps_same_run".into(), json!(q));
            json_all.insert("uring_vs_tokio_ratio".into(), json!(ratio));
        }
    }
    out.tables.push(t);

    // 1 KiB messages.
    let (mut o, mut q) = (Vec::new(), Vec::new());
    let mut last = (Msg::default(), Msg::default());
    for _ in 0..sizes.reps {
        last = (ours::msg1k(sizes.messages)?, theirs::msg1k(sizes.messages)?);
        o.push(last.0.per_s);
        q.push(last.1.per_s);
    }
    let (om, qm) = last;
    let ratio = paired_ratio(&o, &q);
    let (o, q) = (med(&mut o), med(&mut q));
    let mut t = Table::new(
        format!(
            "transport msg1k: {} messages of 1 KiB over one connection",
            sizes.messages
        ),
        &["libtransport msg/s", "quinn msg/s", "ratio"],
    );
    t.row(&[format!("{o:.0}"), format!("{q:.0}"), format!("{ratio:.2}")]);
    out.tables.push(t);
    out.json
        .push(json!({"case": "msg1k", "per_s": o, "quinn_per_s": q, "ratio": ratio}));
    json_all.insert("msg1k_per_s".into(), json!(o));
    json_all.insert("quinn_msg1k_per_s".into(), json!(q));
    json_all.insert("msg1k_ratio".into(), json!(ratio));
    let mut t = Table::new(
        "transport msg1k wire cost per message (last repetition)",
        &["side", "tx datagrams", "tx syscalls", "rx (ACK) datagrams"],
    );
    for (side, m) in [("libtransport", om), ("quinn", qm)] {
        t.row([
            side.to_owned(),
            format!("{:.3}", m.tx_datagrams),
            format!("{:.3}", m.tx_ios),
            format!("{:.3}", m.rx_datagrams),
        ]);
        out.json.push(json!({"case": "msg1k wire", "side": side,
            "tx_datagrams_per_msg": m.tx_datagrams, "tx_syscalls_per_msg": m.tx_ios,
            "rx_datagrams_per_msg": m.rx_datagrams}));
    }
    out.tables.push(t);

    // Connection setup.
    // Alternating blocks of 10 so both sides see the same background load.
    let (mut so, mut sq) = (Vec::new(), Vec::new());
    for _ in 0..sizes.setups.div_ceil(10) {
        so.extend(ours::setup(10)?);
        sq.extend(theirs::setup(10)?);
    }
    let (o50, o99) = (ms(quantile(&mut so, 0.5)), ms(quantile(&mut so, 0.99)));
    let (q50, q99) = (ms(quantile(&mut sq, 0.5)), ms(quantile(&mut sq, 0.99)));
    let mut t = Table::new(
        format!(
            "transport setup: {} connections from fresh client endpoints",
            sizes.setups
        ),
        &["side", "p50 ms", "p99 ms"],
    );
    t.row(&[
        "libtransport (incl. identity proof)".into(),
        format!("{o50:.3}"),
        format!("{o99:.3}"),
    ]);
    t.row(&[
        "quinn (TLS only)".into(),
        format!("{q50:.3}"),
        format!("{q99:.3}"),
    ]);
    out.tables.push(t);
    out.json.push(json!({"case": "setup", "p50_ms": o50, "p99_ms": o99, "quinn_p50_ms": q50, "quinn_p99_ms": q99}));
    json_all.insert("setup_p50_ms".into(), json!(o50));
    json_all.insert("quinn_setup_p50_ms".into(), json!(q50));

    latency_cases(sizes, &mut out, &mut json_all)?;
    summary(opts, sizes, &mut out, json_all);
    Ok(out)
}

fn summary(
    opts: &SuiteOpts,
    sizes: Sizes,
    out: &mut Outcome,
    mut json_all: serde_json::Map<String, serde_json::Value>,
) {
    json_all.insert("case".into(), json!("summary"));
    json_all.insert("bulk_bytes".into(), json!(sizes.bulk_bytes));
    json_all.insert("messages".into(), json!(sizes.messages));
    json_all.insert("quick".into(), json!(opts.quick));
    out.json.push(serde_json::Value::Object(json_all));
}

/// Echo and receive-ACK round trips, ACKed throughput, DM latency under
/// load.
fn latency_cases(
    sizes: Sizes,
    out: &mut Outcome,
    json_all: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let quinn_p50 = echo_case(sizes, out, json_all)?;
    acked_case(sizes, quinn_p50, out, json_all)?;
    dm_under_load_case(sizes, out, json_all)
}

/// 1 KiB bidirectional echo round trips, libtransport and quinn, and 1 KiB
/// receive-ACKed round trips, in alternating blocks of a fifth of the
/// samples each (same background load). Returns quinn's echo p50 in µs.
fn echo_case(
    sizes: Sizes,
    out: &mut Outcome,
    json_all: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<f64> {
    let block = sizes.echoes.div_ceil(5);
    let (mut o, mut q, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        o.extend(echo::ours(block)?);
        q.extend(echo::theirs(block)?);
        a.extend(ack::rtt(block)?);
    }
    let (o50, o99) = (us(quantile(&mut o, 0.5)), us(quantile(&mut o, 0.99)));
    let (q50, q99) = (us(quantile(&mut q, 0.5)), us(quantile(&mut q, 0.99)));
    let (a50, a99) = (us(quantile(&mut a, 0.5)), us(quantile(&mut a, 0.99)));
    let mut t = Table::new(
        format!(
            "transport echo: {} round trips of a {} B payload on one bidi stream each",
            o.len(),
            echo::PAYLOAD
        ),
        &["side", "p50 µs", "p99 µs"],
    );
    t.row(&[
        "libtransport".into(),
        format!("{o50:.1}"),
        format!("{o99:.1}"),
    ]);
    t.row(&["quinn".into(), format!("{q50:.1}"), format!("{q99:.1}")]);
    t.row(&[
        "libtransport send_with_receive_ack".into(),
        format!("{a50:.1}"),
        format!("{a99:.1}"),
    ]);
    out.tables.push(t);
    out.json.push(json!({"case": "echo", "p50_us": o50, "p99_us": o99, "quinn_p50_us": q50, "quinn_p99_us": q99}));
    let ack_ratio = a50 / q50;
    out.json
        .push(json!({"case": "ack rtt", "p50_us": a50, "p99_us": a99,
        "vs_quinn_echo_p50": ack_ratio, "bar_vs_quinn_echo_p50": 2.0}));
    json_all.insert("echo_rtt_p50_us".into(), json!(o50));
    json_all.insert("echo_rtt_p99_us".into(), json!(o99));
    json_all.insert("quinn_echo_rtt_p50_us".into(), json!(q50));
    json_all.insert("quinn_echo_rtt_p99_us".into(), json!(q99));
    json_all.insert("ack_rtt_p50_us".into(), json!(a50));
    json_all.insert("ack_rtt_p99_us".into(), json!(a99));
    json_all.insert("ack_rtt_vs_quinn_echo".into(), json!(ack_ratio));
    Ok(q50)
}

/// 1 KiB receive-ACKed sends with 64 in flight; the bars (reported, not
/// asserted): ACK p50 ≤ 2 × quinn echo p50, ≥ 50,000 ACKed sends/s.
fn acked_case(
    sizes: Sizes,
    quinn_p50: f64,
    out: &mut Outcome,
    json_all: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let mut runs = Vec::with_capacity(sizes.reps);
    for _ in 0..sizes.reps {
        runs.push(ack::throughput(sizes.acked)?);
    }
    let per_s = med(&mut runs);
    let a50 = json_all
        .get("ack_rtt_p50_us")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN);
    let mut t = Table::new(
        format!(
            "transport receive-ACK: {} B payload; {} × {} sends with {} in flight (median)",
            ack::PAYLOAD,
            sizes.reps,
            sizes.acked,
            ack::IN_FLIGHT
        ),
        &["figure", "value", "bar", "met"],
    );
    let rtt_ok = a50 <= 2.0 * quinn_p50;
    let rate_ok = per_s >= 50_000.0;
    t.row(&[
        "ack_rtt_p50_us / quinn_echo_rtt_p50_us".into(),
        format!("{:.2}", a50 / quinn_p50),
        "≤ 2".into(),
        yes(rtt_ok),
    ]);
    t.row(&[
        "acked_msgs_per_s".into(),
        format!("{per_s:.0}"),
        "≥ 50000".into(),
        yes(rate_ok),
    ]);
    out.tables.push(t);
    out.json.push(
        json!({"case": "acked", "per_s": per_s, "in_flight": ack::IN_FLIGHT,
        "bar_per_s": 50_000, "met": rate_ok}),
    );
    json_all.insert("acked_msgs_per_s".into(), json!(per_s));
    json_all.insert("ack_rtt_bar_met".into(), json!(rtt_ok));
    json_all.insert("acked_msgs_bar_met".into(), json!(rate_ok));
    Ok(())
}

/// Sequential receive-ACKed 1 KiB DMs idle, then under a bulk transfer and
/// a probe flood on the same connection; bar (reported): loaded p99 ≤ 3 ×
/// idle p99.
fn dm_under_load_case(
    sizes: Sizes,
    out: &mut Outcome,
    json_all: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let mut l = ack::dm_under_load(sizes.dms, None)?;
    // The same with the receiver's stream window cut to 256 KiB: how much
    // of the loaded latency is bulk data in flight ahead of each DM.
    let mut small = ack::dm_under_load(sizes.dms, Some(SMALL_WINDOW))?;
    let (s99, s_idle99) = (
        us(quantile(&mut small.loaded, 0.99)),
        us(quantile(&mut small.idle, 0.99)),
    );
    let s50 = us(quantile(&mut small.loaded, 0.5));
    let (i50, i99) = (
        us(quantile(&mut l.idle, 0.5)),
        us(quantile(&mut l.idle, 0.99)),
    );
    let (l50, l99) = (
        us(quantile(&mut l.loaded, 0.5)),
        us(quantile(&mut l.loaded, 0.99)),
    );
    let ratio = l99 / i99;
    let ok = ratio <= 3.0;
    let (probes, coalesced, paused) = l.probes;
    let mut t = Table::new(
        format!(
            "transport dm-under-load: {} receive-ACKed {} B DMs per phase; load = bulk + probe flood",
            sizes.dms,
            ack::PAYLOAD
        ),
        &["phase", "p50 µs", "p99 µs", "note"],
    );
    t.row(&[
        "idle".into(),
        format!("{i50:.1}"),
        format!("{i99:.1}"),
        String::new(),
    ]);
    t.row(&[
        "loaded".into(),
        format!("{l50:.1}"),
        format!("{l99:.1}"),
        format!(
            "{} MiB bulk, {probes} probes ({coalesced} coalesced, {paused} paused), \
             {} ACK retries, {} stuck reconnects{}",
            l.bulk_bytes >> 20,
            l.retries,
            l.stuck,
            l.bulk_error
                .as_ref()
                .map_or(String::new(), |e| format!(", bulk stopped early: {e}"))
        ),
    ]);
    t.row(&[
        "p99 ratio".into(),
        format!("{ratio:.2}"),
        "bar ≤ 3".into(),
        yes(ok),
    ]);
    t.row(&[
        format!("loaded, {} KiB stream window", SMALL_WINDOW >> 10),
        format!("{s50:.1}"),
        format!("{s99:.1}"),
        format!(
            "{} MiB bulk; p99 ratio to its idle {:.2}",
            small.bulk_bytes >> 20,
            s99 / s_idle99
        ),
    ]);
    out.tables.push(t);
    out.json.push(
        json!({"case": "dm-under-load", "idle_p50_us": i50, "idle_p99_us": i99,
        "loaded_p50_us": l50, "loaded_p99_us": l99, "p99_ratio": ratio, "bar": 3.0, "met": ok,
        "bulk_bytes": l.bulk_bytes, "probes_sent": probes, "probes_coalesced": coalesced,
        "probes_paused": paused, "small_window_loaded_p50_us": s50,
        "small_window_loaded_p99_us": s99, "small_window_idle_p99_us": s_idle99,
        "small_window_bulk_bytes": small.bulk_bytes, "ack_retries": l.retries,
        "stuck_reconnects": l.stuck, "bulk_error": l.bulk_error}),
    );
    json_all.insert("dm_idle_p99_us".into(), json!(i99));
    json_all.insert("dm_loaded_p99_us".into(), json!(l99));
    json_all.insert("dm_loaded_ratio".into(), json!(ratio));
    json_all.insert("dm_loaded_bar_met".into(), json!(ok));
    Ok(())
}

/// Receiver stream window of the diagnostic dm-under-load variant.
const SMALL_WINDOW: u32 = 256 * 1024;

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Times `f` (which must finish the transfer before returning).
pub(crate) async fn timed<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<Duration> {
    let t = Instant::now();
    f.await?;
    Ok(t.elapsed())
}
