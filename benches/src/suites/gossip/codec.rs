//! `stagebench gossip codec`: what libgossip's wire codec costs per frame
//! kind — bytes on the wire, nanoseconds to emit and to parse (checked) —
//! for one representative frame of every kind (the same samples the wire
//! tests and the `gossip_message` fuzz corpus use: an EAGER carries a
//! 3,309-byte ML-DSA-65 signature, a digest 256 ids, a key response a
//! 1,952-byte key).
//!
//! Each figure is the median of 7 repetitions of a timed loop of about
//! 20 ms (`--quick`: 3 of about 5 ms). Emit writes into a buffer allocated
//! once; parse takes the encoded `Bytes` (payload, signature and key
//! fields are borrowed, not copied) and is checked to give the frame back.
//!
//! With `--json`: one object per kind (`kind`, `bytes`, `encode_ns`,
//! `decode_ns`), then a `"case": "summary"` object with the EAGER figures
//! (`eager_64_bytes`, `eager_64_encode_ns`, `eager_64_decode_ns`) and the
//! largest per-frame cost of each kind of work (`max_encode_ns`,
//! `max_decode_ns`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use libgossip::wire::{Frame, Limits};

use crate::stats::median;
use crate::{Outcome, SuiteOpts, Table};

// The samples are shared with libgossip's wire tests (included by path, as
// wire's field walk is), so the bench measures exactly the frames the tests
// and the fuzz corpus check.
#[path = "../../../../libgossip/tests/wire_support/mod.rs"]
#[allow(unreachable_pub, missing_docs)]
mod samples;

/// Per-operation time of `op`, in ns: the median over `reps` loops that
/// each run for about `target`.
fn per_op_ns(reps: usize, target: Duration, mut op: impl FnMut()) -> f64 {
    // Calibrate the loop length on a short run.
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < target / 20 {
        op();
        n += 1;
    }
    let per = t.elapsed().as_secs_f64() / n.max(1) as f64;
    let iters = ((target.as_secs_f64() / per.max(1e-9)) as u64).max(1);
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            t.elapsed().as_secs_f64() * 1e9 / iters as f64
        })
        .collect();
    median(&mut v).unwrap_or(f64::NAN)
}

/// Runs the codec case.
pub fn run(opts: &SuiteOpts) -> anyhow::Result<Outcome> {
    let (reps, target) = if opts.quick {
        (3, Duration::from_millis(5))
    } else {
        (7, Duration::from_millis(20))
    };
    let limits = Limits::default();
    let mut table = Table::new(
        "libgossip wire codec, per frame (median of timed loops)",
        &["kind", "bytes", "encode ns", "decode ns"],
    );
    let mut json = Vec::new();
    let (mut max_enc, mut max_dec) = (0.0f64, 0.0f64);
    let mut eager = None;
    for (name, frame) in samples::samples() {
        let bytes = frame.encoded_len();
        let mut buf = vec![0u8; bytes];
        let written = frame
            .emit(&mut buf)
            .with_context(|| format!("emit {name}"))?;
        ensure!(
            written == bytes,
            "{name}: emit wrote {written} of {bytes} bytes"
        );
        let encoded = Bytes::from(buf.clone());
        let back = Frame::parse(&encoded, &limits).with_context(|| format!("parse {name}"))?;
        ensure!(back == frame, "{name}: parse does not give the frame back");

        let encode_ns = per_op_ns(reps, target, || {
            let _ = black_box(black_box(&frame).emit(black_box(&mut buf)));
        });
        let decode_ns = per_op_ns(reps, target, || {
            let _ = black_box(Frame::parse(black_box(&encoded), &limits));
        });
        max_enc = max_enc.max(encode_ns);
        max_dec = max_dec.max(decode_ns);
        if name == "eager_64" {
            eager = Some((bytes, encode_ns, decode_ns));
        }
        table.row([
            name.to_string(),
            bytes.to_string(),
            format!("{encode_ns:.0}"),
            format!("{decode_ns:.0}"),
        ]);
        json.push(serde_json::json!({
            "suite": "gossip",
            "case": "codec",
            "kind": name,
            "bytes": bytes,
            "encode_ns": encode_ns,
            "decode_ns": decode_ns,
        }));
    }
    let (eb, ee, ed) = eager.context("no eager_64 sample")?;
    json.push(serde_json::json!({
        "suite": "gossip",
        "case": "summary",
        "eager_64_bytes": eb,
        "eager_64_encode_ns": ee,
        "eager_64_decode_ns": ed,
        "max_encode_ns": max_enc,
        "max_decode_ns": max_dec,
        "reps": reps,
    }));
    Ok(Outcome {
        tables: vec![table],
        json,
    })
}
