//! `stagebench gossip soak [MESSAGES]`: one node with the DEFAULT config under
//! sustained, partly hostile load for millions of messages (virtual time),
//! printing process memory (VmRSS / VmHWM) and the node's own state at
//! checkpoints — the memory side of capability G16 (bound: RSS ≤ 2× the
//! warmed baseline). `--quick` runs 1 M messages; the default is 10 M.
//!
//! With `--json` a last `"case": "summary"` object holds the headline keys:
//! `rss_mib_warmed` (RSS at the warmed checkpoint), `rss_mib_end`,
//! `rss_end_over_warmed`, `hwm_mib_end`, `state_bytes_end` (the node's own
//! heap accounting, [`Snapshot::state_bytes`]), `state_over_rss_end`
//! (`state_bytes_end` ÷ RSS at the end), `memory_budget_mib` and
//! `wedged_checkpoints` (checkpoints at which the node delivered nothing
//! since the previous one, or held its verification or key-wait queue full).
//!
//! Load per 100 ms virtual step (1,000 genuine messages/s):
//! * 100 signed messages, 256–2,055 B, from 5,000 origins (more than
//!   `origins_max` 4,096 and `key_cache` 1,024, so keys are refetched and the
//!   origins map evicts), pushed by an honest neighbour that answers key
//!   requests one step later; verdicts come one step later too, except for a
//!   3 s verifier stall every 5 min;
//! * an echo neighbour repeating one fresh and one 300 ms-old copy;
//! * 64 IHAVE entries for ids that never arrive (the `missing` map and IWANT
//!   timers stay full), and once a second phantom digests from that
//!   neighbour and from one of 50,000 distinct strangers, plus a stranger's
//!   key request;
//! * a neighbour that never reports send outcomes (tickets must expire),
//!   reconnected every minute after it is declared dead.
//!
//! Left out on purpose: verdicts lost for good and copies from origins whose
//! key never comes. Both now expire (`verify_timeout`, `key_wait_timeout`)
//! and are covered by `libgossip/tests/bounded_state.rs`; here they would
//! only measure the expiry sweep.

use crate::{Outcome, SuiteOpts, Table};
use libgossip::proto::{Config, Snapshot};
use libgossip::sim::soak::{SOAK_STEP, SoakLoad, SoakParams};
use std::time::Instant;

/// The load above: 1,000 msgs/s from 5,000 origins, a full IHAVE flood every
/// step and a stranger's digest every second from 50,000 strangers.
const PARAMS: SoakParams = SoakParams {
    per_step: 100,
    origins: 5_000,
    ihave_every: 1,
    stranger_digest_every: 10,
    strangers: 50_000,
};
/// Checkpoints per run.
const CHECKPOINTS: u64 = 20;

/// VmRSS and VmHWM of this process in KiB (0 where /proc is unavailable).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Point {
    messages: u64,
    sim_s: f64,
    wall_s: f64,
    rss: u64,
    hwm: u64,
    snap: Snapshot,
    delivered: u64,
    /// No delivery since the previous checkpoint, or a verify / key-wait
    /// queue held full.
    wedged: bool,
}

/// Runs the soak: `args` after `soak` may hold the message count.
pub fn run(opts: &SuiteOpts) -> anyhow::Result<Outcome> {
    let messages: u64 = match opts.args.get(1) {
        Some(n) => n.replace('_', "").parse()?,
        None if opts.quick => 1_000_000,
        None => 10_000_000,
    };
    let steps = messages.div_ceil(PARAMS.per_step);
    let every = steps.div_ceil(CHECKPOINTS).max(1);
    let cfg = Config::default();
    let start = Instant::now();
    let (rss0, _) = rss_kib();
    let mut s = SoakLoad::new(cfg.clone(), PARAMS);
    let mut points = Vec::new();
    for step in 1..=steps {
        s.step();
        if step.is_multiple_of(every) || step == steps {
            let (rss, hwm) = rss_kib();
            let snap = s.node().snapshot(s.now());
            let prev = points.last().map_or(0, |p: &Point| p.delivered);
            let wedged = s.delivered() == prev
                || snap.verifying >= cfg.verify_max
                || snap.key_waiting >= cfg.key_wait_max;
            let p = Point {
                messages: s.sent(),
                sim_s: (step * SOAK_STEP.as_millis() as u64) as f64 / 1000.0,
                wall_s: start.elapsed().as_secs_f64(),
                rss,
                hwm,
                snap,
                delivered: s.delivered(),
                wedged,
            };
            eprintln!(
                "soak: {} msgs, {:.0} s virtual, RSS {} MiB, HWM {} MiB, state {} MiB",
                p.messages,
                p.sim_s,
                p.rss >> 10,
                p.hwm >> 10,
                p.snap.state_bytes >> 20
            );
            points.push(p);
        }
    }
    // Warmed baseline: the first checkpoint past the seen cache's longest
    // retention (the slowest structure to fill), so every cache is full.
    let warm_at = cfg
        .seen_retention
        .as_secs_f64()
        .max(cfg.store_retention.as_secs_f64());
    let base = points
        .iter()
        .find(|p| p.sim_s > warm_at)
        .or(points.last())
        .map_or(1, |p| p.rss.max(1));
    let peak = points.iter().map(|p| p.hwm).max().unwrap_or(0);
    let mut out = outcome(&points, rss0, base, peak, messages);
    if let Some(end) = points.last() {
        let mib = |kib: u64| kib as f64 / 1024.0;
        out.json.push(serde_json::json!({
            "suite": "gossip",
            "case": "summary",
            "messages": end.messages,
            "delivered": end.delivered,
            "memory_budget_mib": cfg.memory_budget as f64 / 1048576.0,
            "rss_mib_start": mib(rss0),
            "rss_mib_warmed": mib(base),
            "rss_mib_end": mib(end.rss),
            "rss_end_over_warmed": end.rss as f64 / base as f64,
            "hwm_mib_end": mib(end.hwm),
            "hwm_over_warmed": peak as f64 / base as f64,
            "state_bytes_end": end.snap.state_bytes,
            "state_over_rss_end": end.snap.state_bytes as f64 / (end.rss.max(1) * 1024) as f64,
            "wedged_checkpoints": points.iter().filter(|p| p.wedged).count(),
            "checkpoints": points.len(),
            "wall_s": end.wall_s,
        }));
    }
    Ok(out)
}

fn outcome(points: &[Point], rss0: u64, base: u64, peak: u64, messages: u64) -> Outcome {
    let mut table = Table::new(
        format!(
            "gossip soak: one node, default Config, {messages} msgs (virtual time; stub signatures); \
             RSS at start {} MiB, warmed baseline {} MiB, peak (VmHWM) {} MiB = {:.2}x baseline",
            rss0 >> 10,
            base >> 10,
            peak >> 10,
            peak as f64 / base as f64
        ),
        &[
            "msgs",
            "virtual s",
            "wall s",
            "RSS MiB",
            "HWM MiB",
            "RSS/base",
            "state MiB",
            "state/RSS",
            "topic MiB",
            "store MiB",
            "stored",
            "seen",
            "missing",
            "keys",
            "verifying",
            "timers",
            "in flight",
            "delivered",
            "evicted",
            "under floor",
            "wedged",
        ],
    );
    let mut json = Vec::new();
    for p in points {
        let t = p.snap.topics.first().cloned().unwrap_or_default();
        let ev = t.evictions;
        let evicted = ev.store.evicted_ttl
            + ev.store.evicted_bytes
            + ev.seen.evicted_ttl
            + ev.seen.evicted_bytes;
        let ratio = p.rss as f64 / base as f64;
        table.row([
            p.messages.to_string(),
            format!("{:.0}", p.sim_s),
            format!("{:.1}", p.wall_s),
            format!("{:.1}", p.rss as f64 / 1024.0),
            format!("{:.1}", p.hwm as f64 / 1024.0),
            format!("{ratio:.2}"),
            format!("{:.1}", p.snap.state_bytes as f64 / 1048576.0),
            format!(
                "{:.2}",
                p.snap.state_bytes as f64 / (p.rss.max(1) * 1024) as f64
            ),
            format!("{:.1}", t.state_bytes as f64 / 1048576.0),
            format!("{:.1}", ev.store.bytes as f64 / 1048576.0),
            t.stored.to_string(),
            t.seen.to_string(),
            t.missing.to_string(),
            p.snap.keys.to_string(),
            p.snap.verifying.to_string(),
            p.snap.timers.to_string(),
            p.snap.in_flight.to_string(),
            p.delivered.to_string(),
            evicted.to_string(),
            ev.store.evicted_under_floor.to_string(),
            if p.wedged { "yes" } else { "no" }.to_string(),
        ]);
        json.push(serde_json::json!({
            "suite": "gossip",
            "case": "soak",
            "messages": p.messages,
            "sim_s": p.sim_s,
            "wall_s": p.wall_s,
            "rss_kib": p.rss,
            "hwm_kib": p.hwm,
            "rss_over_baseline": ratio,
            "baseline_kib": base,
            "state_bytes": p.snap.state_bytes,
            "topic_state_bytes": t.state_bytes,
            "wedged": p.wedged,
            "store_bytes": ev.store.bytes,
            "seen_bytes": ev.seen.bytes,
            "stored": t.stored,
            "seen": t.seen,
            "missing": t.missing,
            "keys": p.snap.keys,
            "verifying": p.snap.verifying,
            "key_waiting": p.snap.key_waiting,
            "timers": p.snap.timers,
            "in_flight": p.snap.in_flight,
            "delivered": p.delivered,
            "store_evicted_ttl": ev.store.evicted_ttl,
            "store_evicted_bytes": ev.store.evicted_bytes,
            "store_evicted_under_floor": ev.store.evicted_under_floor,
            "seen_evicted_ttl": ev.seen.evicted_ttl,
            "seen_evicted_bytes": ev.seen.evicted_bytes,
            "store_ttl_ms": ev.store.ttl_ms,
            "seen_ttl_ms": ev.seen.ttl_ms,
            "keys_evicted": p.snap.verify.keys_evicted,
            "verify_full": p.snap.verify.verify_full,
            "key_wait_full": p.snap.verify.key_wait_full,
            "missing_full": t.stats.missing_full,
            "expired_sends": p.snap.expired_sends,
        }));
    }
    Outcome {
        tables: vec![table],
        json,
    }
}
