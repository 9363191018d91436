//! Measures what the frame codec costs per ML-DSA-65 verify item (5,517
//! bytes: 1,952-byte key + 3,309-byte signature + 256-byte message). Not a
//! pass/fail test: it is `#[ignore]`d and prints medians. Run it optimised:
//!
//! ```sh
//! cargo test --release -p wire --test codec_cost -- --ignored --nocapture
//! ```
//!
//! Numbers go to `docs/perf/wire.md`. The cross-process throughput bars are
//! measured by `stagebench ipc`, not here.

// This file owns its clock (a measurement driver) and may unwrap.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use wire::frame::{self, DEFAULT_MAX_FRAME, FrameReader, FrameWriter, VerifySchema};
use wire::generated::verify;

struct Item {
    pk: Vec<u8>,
    msg: Vec<u8>,
    sig: Vec<u8>,
}

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| Item {
            pk: common::pattern(common::PK_LEN, i as u8),
            msg: common::pattern(common::MSG_LEN, i as u8 ^ 0x55),
            sig: common::pattern(common::SIG_LEN, i as u8 ^ 0xaa),
        })
        .collect()
}

fn encode<'a>(fbb: &'a mut FlatBufferBuilder<'static>, batch: &[Item]) -> &'a [u8] {
    fbb.reset();
    let mut offs = Vec::with_capacity(batch.len());
    for it in batch {
        let public_key = Some(fbb.create_vector(&it.pk));
        let message = Some(fbb.create_vector(&it.msg));
        let signature = Some(fbb.create_vector(&it.sig));
        offs.push(verify::VerifyItem::create(
            fbb,
            &verify::VerifyItemArgs {
                key_id: 0,
                public_key,
                message,
                signature,
            },
        ));
    }
    let items = fbb.create_vector(&offs);
    let m = verify::VerifyBatch::create(
        fbb,
        &verify::VerifyBatchArgs {
            request_id: 1,
            items: Some(items),
            ..Default::default()
        },
    );
    let root = verify::VerifyFrame::create(
        fbb,
        &verify::VerifyFrameArgs {
            msg_type: verify::VerifyMessage::VerifyBatch,
            msg: Some(m.as_union_value()),
        },
    );
    frame::finish::<VerifySchema>(fbb, root);
    fbb.finished_data()
}

/// Reads the fields a verifier needs; returns a checksum.
fn consume(payload: &[u8]) -> usize {
    let f = frame::decode::<VerifySchema>(payload).unwrap();
    let b = f.msg_as_verify_batch().unwrap();
    b.items()
        .iter()
        .map(|it| {
            it.public_key().map_or(0, |k| k.len())
                + it.message().map_or(0, |m| m.len())
                + it.signature().map_or(0, |s| s.len())
        })
        .sum()
}

/// Median nanoseconds per item over `reps` timings of `f` on `n` items.
fn median_ns_per_item(reps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[reps / 2].as_nanos() as f64 / n as f64
}

#[test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
fn codec_cost_per_verify_item() {
    println!(
        "| batch | encode ns/item | verify+read ns/item | in-memory frame read+verify ns/item |"
    );
    println!("|---:|---:|---:|---:|");
    for n in [1usize, 16, 256] {
        let batch = items(n);
        let mut fbb = FlatBufferBuilder::with_capacity(n * 5600 + 1024);
        let reps = (20_000 / n).max(50);
        let enc = median_ns_per_item(reps, n, || {
            black_box(encode(&mut fbb, &batch).len());
        });
        let payload = encode(&mut fbb, &batch).to_vec();
        let dec = median_ns_per_item(reps, n, || {
            black_box(consume(&payload));
        });
        let mut stream = Vec::new();
        let mut w = FrameWriter::new(&mut stream, DEFAULT_MAX_FRAME);
        for _ in 0..16 {
            w.write_frame(&payload).unwrap();
        }
        let read = median_ns_per_item(reps / 4 + 1, n * 16, || {
            let mut r = FrameReader::new(&stream[..], DEFAULT_MAX_FRAME);
            while let Some(p) = r.read_frame().unwrap() {
                black_box(consume(p));
            }
        });
        println!("| {n} | {enc:.0} | {dec:.0} | {read:.0} |");
    }
}

#[test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
fn unix_socket_items_per_second() {
    println!("| batch | frames | items/s over a socket pair (encode + write + read + verify) |");
    println!("|---:|---:|---:|");
    for n in [1usize, 16, 256] {
        let frames = (200_000 / n).clamp(400, 20_000);
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                let (a, b) = UnixStream::pair().unwrap();
                let batch = items(n);
                let start = Instant::now();
                let writer = std::thread::spawn(move || {
                    let mut fbb = FlatBufferBuilder::with_capacity(n * 5600 + 1024);
                    let mut w = FrameWriter::new(
                        std::io::BufWriter::with_capacity(1 << 16, &a),
                        DEFAULT_MAX_FRAME,
                    );
                    for _ in 0..frames {
                        w.write_frame(encode(&mut fbb, &batch)).unwrap();
                    }
                    w.flush().unwrap();
                });
                let mut r = FrameReader::new(&b, DEFAULT_MAX_FRAME);
                let mut got = 0usize;
                while let Some(p) = r.read_frame().unwrap() {
                    black_box(consume(p));
                    got += 1;
                }
                writer.join().unwrap();
                assert_eq!(got, frames);
                (frames * n) as f64 / start.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        println!("| {n} | {frames} | {:.0} |", runs[2]);
    }
}
