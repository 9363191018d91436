//! The `ipc` suite: moving ML-DSA-65 verify items between two threads over a
//! Unix socket (flatbuffers frames) and over the shared-memory ring.
//!
//! An item is what gossipd hands verifyd per signature: a 1,952-byte public
//! key, a 3,309-byte signature and a 256-byte message — 5,517 bytes.
//!
//! * **uds**: each batch of 1, 16 or 256 items is encoded as a `VerifyBatch`
//!   frame (`wire::generated::verify`, keys inline), written with
//!   `wire::frame::FrameWriter` on a `UnixStream`, read with `FrameReader`
//!   and decoded with `wire::frame::decode` (flatbuffers verifier) on the
//!   other side, which touches every item. Encoding is timed: it is part of
//!   the cost of sending.
//! * **shm**: one ring record per item, the raw 5,517 bytes (key ‖ signature
//!   ‖ message); the ring is set up for real (memfd + eventfds passed with
//!   `SCM_RIGHTS` over a socket pair, both sides mapping it). A batch is
//!   written with deferred publication and published with one store
//!   ([`wire::ring::Producer::flush`]); batch 1 publishes every record.
//!   The consumer copies each record out and checks its length.
//!
//! Cases: *stream* — one side sends `n` items as fast as it can, the other
//! consumes them; timed from the first send to the receiver's
//! acknowledgement of the last. *rtt* — send one batch, the receiver answers
//! with one verdict byte per item (a `VerifyResult` frame, or a ring record
//! on a second ring), time until the answer is decoded; p50/p99 per round.
//!
//! Both sides are threads of this process, pinned to CPUs 0 and 1 (the
//! `no-pin` argument leaves placement to the scheduler); the ring's spin-then-park is on with its default
//! [`SpinConfig`], so the rtt numbers are with spinning enabled. Suite
//! arguments override it: `ceiling-us=N`, `floor-us=N`, `peer-wake-us=N`,
//! `park-only` (e.g. `stagebench ipc park-only`), and `uds-sndbuf=N` sets
//! the Unix sockets' send buffer (default: the kernel's, 208 KiB). Larger
//! buffers measured *slower* here (4 MiB: about a third of the batch-256
//! rate): more bytes in flight fall out of the caches before they are read.
//!
//! `idle-sessions=N` measures something else and only that: the resident
//! memory of `N` idle verifyd-sized ring sessions (the private `idle` module).

mod idle;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flatbuffers::FlatBufferBuilder;
use serde_json::json;
use wire::frame::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter, VerifySchema, decode, finish};
use wire::generated::verify::{
    Algorithm, Verdict, VerifyBatch, VerifyBatchArgs, VerifyFrame, VerifyFrameArgs, VerifyItem,
    VerifyItemArgs, VerifyMessage, VerifyResult, VerifyResultArgs,
};
use wire::ring::shm::{self, ShmConsumer, ShmProducer};
use wire::ring::{Geometry, SpinConfig};

use crate::stats::{median, micros, quantile};
use crate::{Outcome, SuiteOpts, Table};

/// ML-DSA-65 public key bytes.
pub const KEY_LEN: usize = 1952;
/// ML-DSA-65 signature bytes.
pub const SIG_LEN: usize = 3309;
/// Message bytes per item.
pub const MSG_LEN: usize = 256;
/// Bytes per item.
pub const ITEM_LEN: usize = KEY_LEN + SIG_LEN + MSG_LEN;
/// The batch sizes measured.
pub const BATCHES: [usize; 3] = [1, 16, 256];

/// Ring data area for the benchmarks: 1 MiB holds ~190 items, small enough
/// to stay in the last-level cache.
pub fn ring_geometry() -> Geometry {
    // 1 MiB is a power of two and 8 KiB is well under half of it.
    Geometry::new(1 << 20, 8192).unwrap_or_else(|_| unreachable!("constant geometry is valid"))
}

/// One item's three parts, filled with deterministic bytes.
#[derive(Debug, Clone)]
pub struct Item {
    /// Public key.
    pub key: Vec<u8>,
    /// Signature.
    pub sig: Vec<u8>,
    /// Message.
    pub msg: Vec<u8>,
}

impl Item {
    /// The `i`-th test item.
    pub fn new(i: usize) -> Self {
        let fill =
            |len: usize, salt: usize| (0..len).map(|j| (j * 31 + i * 7 + salt) as u8).collect();
        Self {
            key: fill(KEY_LEN, 1),
            sig: fill(SIG_LEN, 2),
            msg: fill(MSG_LEN, 3),
        }
    }

    /// The raw record the ring carries: key ‖ signature ‖ message.
    pub fn raw(&self) -> Vec<u8> {
        [self.key.as_slice(), &self.sig, &self.msg].concat()
    }
}

/// Encodes `items` as one `VerifyBatch` frame into `fbb` (reset first).
pub fn encode_batch<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    items: &[Item],
    id: u64,
) -> &'a [u8] {
    fbb.reset();
    let offsets: Vec<_> = items
        .iter()
        .map(|it| {
            let public_key = Some(fbb.create_vector(&it.key));
            let signature = Some(fbb.create_vector(&it.sig));
            let message = Some(fbb.create_vector(&it.msg));
            VerifyItem::create(
                fbb,
                &VerifyItemArgs {
                    key_id: 0,
                    public_key,
                    message,
                    signature,
                },
            )
        })
        .collect();
    let items = Some(fbb.create_vector(&offsets));
    let batch = VerifyBatch::create(
        fbb,
        &VerifyBatchArgs {
            request_id: id,
            algorithm: Algorithm::MlDsa65,
            context: None,
            items,
        },
    );
    let frame = VerifyFrame::create(
        fbb,
        &VerifyFrameArgs {
            msg_type: VerifyMessage::VerifyBatch,
            msg: Some(batch.as_union_value()),
        },
    );
    finish::<VerifySchema>(fbb, frame);
    fbb.finished_data()
}

/// Verifies a `VerifyBatch` frame and touches every item; returns
/// `(request id, item count)`.
pub fn decode_batch(payload: &[u8]) -> Result<(u64, usize)> {
    let frame = decode::<VerifySchema>(payload)?;
    let batch = frame
        .msg_as_verify_batch()
        .ok_or_else(|| anyhow!("not a VerifyBatch"))?;
    let mut n = 0;
    for item in batch.items() {
        let len = item.public_key().map_or(0, |v| v.len())
            + item.signature().map_or(0, |v| v.len())
            + item.message().map_or(0, |v| v.len());
        if len != ITEM_LEN {
            bail!("item of {len} bytes");
        }
        n += 1;
    }
    Ok((batch.request_id(), n))
}

fn encode_result<'a>(fbb: &'a mut FlatBufferBuilder<'static>, id: u64, n: usize) -> &'a [u8] {
    fbb.reset();
    let verdicts = Some(fbb.create_vector(&vec![Verdict::Valid; n]));
    let result = VerifyResult::create(
        fbb,
        &VerifyResultArgs {
            request_id: id,
            verdicts,
        },
    );
    let frame = VerifyFrame::create(
        fbb,
        &VerifyFrameArgs {
            msg_type: VerifyMessage::VerifyResult,
            msg: Some(result.as_union_value()),
        },
    );
    finish::<VerifySchema>(fbb, frame);
    fbb.finished_data()
}

fn decode_result(payload: &[u8]) -> Result<usize> {
    let frame = decode::<VerifySchema>(payload)?;
    let result = frame
        .msg_as_verify_result()
        .ok_or_else(|| anyhow!("not a VerifyResult"))?;
    Ok(result.verdicts().len())
}

/// A socket pair with `sndbuf` bytes of send buffer (`None`: kernel default).
fn socket_pair(sndbuf: Option<usize>) -> Result<(UnixStream, UnixStream)> {
    use nix::sys::socket::{setsockopt, sockopt};
    let (a, b) = UnixStream::pair()?;
    if let Some(size) = sndbuf {
        for s in [&a, &b] {
            setsockopt(s, sockopt::SndBuf, &size)?;
        }
    }
    Ok((a, b))
}

/// Whether to pin the two ends to CPUs 0 and 1 (default on; the suite's
/// `no-pin` argument turns it off and leaves placement to the scheduler).
static PIN: AtomicBool = AtomicBool::new(true);

/// Turns pinning of the two ends on or off for later measurements.
pub fn set_pinning(on: bool) {
    PIN.store(on, Ordering::Relaxed);
}

/// Pins the calling thread to `cpu` when pinning is on and the CPU exists.
/// The sending end runs on CPU 0, the receiving end on CPU 1, so the two
/// really are on different cores rather than wherever the scheduler puts
/// them (on a busy 2-core machine it often puts both on one).
fn place(cpu: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    if !PIN.load(Ordering::Relaxed) || thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let mut set = CpuSet::new();
    // Best effort: a failure (e.g. a restricted cpuset) leaves placement to
    // the scheduler, which is what `no-pin` measures anyway.
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

fn join<T>(h: thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("benchmark thread panicked"))?
}

/// Streams `n` items (rounded up to whole batches) over a Unix socket in
/// `batch`-item frames; returns the time until the receiver acknowledged
/// the last one.
pub fn uds_stream(batch: usize, n: usize, sndbuf: Option<usize>) -> Result<Duration> {
    let frames = n.div_ceil(batch);
    let items: Vec<Item> = (0..batch).map(Item::new).collect();
    let (a, b) = socket_pair(sndbuf)?;
    place(0);
    let receiver = thread::spawn(move || -> Result<()> {
        place(1);
        let mut ack = b.try_clone()?;
        let mut reader = FrameReader::new(b, DEFAULT_MAX_FRAME);
        let mut got = 0;
        while got < frames * batch {
            let payload = reader.read_frame()?.context("sender hung up")?;
            got += decode_batch(payload)?.1;
        }
        ack.write_all(&[1])?;
        Ok(())
    });
    let mut fbb = FlatBufferBuilder::with_capacity(batch * (ITEM_LEN + 64) + 1024);
    let mut ack = a.try_clone()?;
    let mut writer = FrameWriter::new(a, DEFAULT_MAX_FRAME);
    let start = Instant::now();
    for id in 0..frames {
        writer.write_frame(encode_batch(&mut fbb, &items, id as u64))?;
    }
    let mut done = [0u8];
    ack.read_exact(&mut done)?;
    let elapsed = start.elapsed();
    join(receiver)?;
    Ok(elapsed)
}

/// `rounds` request/response round trips of one `batch`-item frame each
/// over a Unix socket.
pub fn uds_rtt(batch: usize, rounds: usize, sndbuf: Option<usize>) -> Result<Vec<Duration>> {
    let items: Vec<Item> = (0..batch).map(Item::new).collect();
    let (a, b) = socket_pair(sndbuf)?;
    place(0);
    let server = thread::spawn(move || -> Result<()> {
        place(1);
        let mut fbb = FlatBufferBuilder::with_capacity(4096);
        let mut writer = FrameWriter::new(b.try_clone()?, DEFAULT_MAX_FRAME);
        let mut reader = FrameReader::new(b, DEFAULT_MAX_FRAME);
        while let Some(payload) = reader.read_frame()? {
            let (id, n) = decode_batch(payload)?;
            writer.write_frame(encode_result(&mut fbb, id, n))?;
        }
        Ok(())
    });
    let mut fbb = FlatBufferBuilder::with_capacity(batch * (ITEM_LEN + 64) + 1024);
    let mut writer = FrameWriter::new(a.try_clone()?, DEFAULT_MAX_FRAME);
    let mut reader = FrameReader::new(a, DEFAULT_MAX_FRAME);
    let mut samples = Vec::with_capacity(rounds);
    for id in 0..rounds {
        let start = Instant::now();
        writer.write_frame(encode_batch(&mut fbb, &items, id as u64))?;
        let reply = reader.read_frame()?.context("server hung up")?;
        if decode_result(reply)? != batch {
            bail!("short verdict list");
        }
        samples.push(start.elapsed());
    }
    drop(writer);
    drop(reader);
    join(server)?;
    Ok(samples)
}

/// A connected ring: `(producer, consumer)`, set up over a socket pair.
pub fn shm_pair(geo: Geometry, cfg: SpinConfig) -> Result<(ShmProducer, ShmConsumer)> {
    let (a, b) = UnixStream::pair()?;
    let attach = thread::spawn(move || shm::attach_consumer(b, geo, cfg));
    let producer = shm::create_producer(a, geo, cfg)?;
    let consumer = attach.join().map_err(|_| anyhow!("attach panicked"))??;
    Ok((producer, consumer))
}

/// Streams `n` items (rounded up to whole batches) through the ring,
/// publishing once per `batch`; returns the time until the consumer
/// acknowledged the last one. Also returns both sides' counters.
pub fn shm_stream(batch: usize, n: usize, cfg: SpinConfig) -> Result<(Duration, String)> {
    let total = n.div_ceil(batch) * batch;
    let record = Item::new(0).raw();
    let (mut producer, mut consumer) = shm_pair(ring_geometry(), cfg)?;
    let (mut ack_tx, mut ack_rx) = UnixStream::pair()?;
    place(0);
    let receiver = thread::spawn(move || -> Result<wire::ring::RingStats> {
        place(1);
        let mut out = Vec::with_capacity(ITEM_LEN);
        for _ in 0..total {
            let len = consumer.pop(&mut out)?;
            if len != ITEM_LEN {
                bail!("record of {len} bytes");
            }
        }
        ack_tx.write_all(&[1])?;
        Ok(consumer.stats())
    });
    let start = Instant::now();
    for _ in 0..total / batch {
        for _ in 0..batch {
            producer
                .push_deferred(record.as_slice())
                .map_err(|e| anyhow!("push: {e}"))?;
        }
        producer.flush();
    }
    let mut done = [0u8];
    ack_rx.read_exact(&mut done)?;
    let elapsed = start.elapsed();
    let cs = join(receiver)?;
    let counters = format!(
        "producer waits {} parks {} spin hits {} wakes {}; consumer waits {} parks {} spin hits {} wakes {}",
        producer.stats().waits,
        producer.stats().parks,
        producer.stats().spin_hits,
        producer.stats().wakes,
        cs.waits,
        cs.parks,
        cs.spin_hits,
        cs.wakes
    );
    Ok((elapsed, counters))
}

/// `rounds` round trips of one `batch`-item batch through a request ring,
/// answered with one verdict byte per item on a reply ring.
pub fn shm_rtt(batch: usize, rounds: usize, cfg: SpinConfig) -> Result<Vec<Duration>> {
    let record = Item::new(0).raw();
    let (mut req_tx, mut req_rx) = shm_pair(ring_geometry(), cfg)?;
    let (mut rep_tx, mut rep_rx) = shm_pair(ring_geometry(), cfg)?;
    place(0);
    let server = thread::spawn(move || -> Result<()> {
        place(1);
        let mut out = Vec::with_capacity(ITEM_LEN);
        let verdicts = vec![Verdict::Valid.0; batch];
        for _ in 0..rounds {
            for _ in 0..batch {
                if req_rx.pop(&mut out)? != ITEM_LEN {
                    bail!("short record");
                }
            }
            rep_tx
                .push(verdicts.as_slice())
                .map_err(|e| anyhow!("reply: {e}"))?;
        }
        Ok(())
    });
    let mut reply = Vec::with_capacity(batch);
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..batch {
            req_tx
                .push_deferred(record.as_slice())
                .map_err(|e| anyhow!("push: {e}"))?;
        }
        req_tx.flush();
        if rep_rx.pop(&mut reply)? != batch {
            bail!("short verdict list");
        }
        samples.push(start.elapsed());
    }
    join(server)?;
    Ok(samples)
}

/// How much each case moves, per repetition.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    stream_items: usize,
    rtt_rounds_b1: usize,
    reps: usize,
}

fn rtt_rounds(sizes: Sizes, batch: usize) -> usize {
    (sizes.rtt_rounds_b1 / batch).max(50)
}

/// Knobs the suite's arguments can turn.
#[derive(Debug, Clone, Copy)]
struct Settings {
    spin: SpinConfig,
    uds_sndbuf: Option<usize>,
    /// Run only the idle-session memory case, with this many sessions.
    idle_sessions: Option<usize>,
}

/// Defaults, overridden by suite arguments: `ceiling-us=N`, `floor-us=N`,
/// `peer-wake-us=N`, `park-only` (ring spinning), `uds-sndbuf=N` (bytes;
/// 0 = kernel default) and `no-pin` (leave thread placement to the
/// scheduler); `idle-sessions=N` runs only the idle-session memory case.
fn settings(args: &[String]) -> Result<Settings> {
    let mut spin = SpinConfig::default();
    let mut uds_sndbuf = None;
    let mut idle_sessions = None;
    for arg in args {
        let us = |v: &str| -> Result<Duration> { Ok(Duration::from_micros(v.parse()?)) };
        match arg.split_once('=') {
            Some(("ceiling-us", v)) => spin = spin.ceiling(us(v)?),
            Some(("floor-us", v)) => spin = spin.floor(us(v)?),
            Some(("peer-wake-us", v)) => spin = spin.peer_wake(us(v)?),
            Some(("uds-sndbuf", v)) => uds_sndbuf = Some(v.parse()?).filter(|&n: &usize| n > 0),
            Some(("idle-sessions", v)) => idle_sessions = Some(v.parse()?),
            None if arg == "park-only" => spin = SpinConfig::park_only(),
            None if arg == "no-pin" => set_pinning(false),
            _ => bail!("unknown ipc argument {arg:?}"),
        }
    }
    Ok(Settings {
        spin,
        uds_sndbuf,
        idle_sessions,
    })
}

/// Runs the suite.
pub fn run(opts: &SuiteOpts) -> Result<Outcome> {
    let sizes = if opts.quick {
        Sizes {
            stream_items: 20_000,
            rtt_rounds_b1: 2_000,
            reps: 3,
        }
    } else {
        Sizes {
            stream_items: 200_000,
            rtt_rounds_b1: 20_000,
            reps: 5,
        }
    };
    let set = settings(&opts.args)?;
    if let Some(n) = set.idle_sessions {
        let (table, summary) = idle::run(n)?;
        return Ok(Outcome {
            tables: vec![table],
            json: vec![summary],
        });
    }
    let cfg = set.spin;
    let mut stream = Table::new(
        format!(
            "ipc stream: {ITEM_LEN}-byte items, {} items per run, median of {} runs",
            sizes.stream_items, sizes.reps
        ),
        &[
            "path",
            "batch",
            "items/s",
            "MB/s",
            "min items/s",
            "max items/s",
        ],
    );
    let mut rtt = Table::new(
        "ipc round trip: one batch out, one verdict per item back (ring spinning enabled)",
        &[
            "path",
            "batch",
            "rounds",
            "p50 µs",
            "p99 µs",
            "items/s at p50",
        ],
    );
    let mut summary = serde_json::Map::new();
    summary.insert("suite".into(), json!("ipc"));
    summary.insert("item_bytes".into(), json!(ITEM_LEN));
    summary.insert("pinned".into(), json!(PIN.load(Ordering::Relaxed)));
    let mut notes = Vec::new();

    for path in ["uds", "shm"] {
        for batch in BATCHES {
            let mut rates = Vec::with_capacity(sizes.reps);
            for _ in 0..sizes.reps {
                let total = sizes.stream_items.div_ceil(batch) * batch;
                let elapsed = if path == "uds" {
                    uds_stream(batch, total, set.uds_sndbuf)?
                } else {
                    let (elapsed, counters) = shm_stream(batch, total, cfg)?;
                    notes.push(format!("shm batch {batch}: {counters}"));
                    elapsed
                };
                rates.push(total as f64 / elapsed.as_secs_f64());
            }
            let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rates.iter().copied().fold(0.0, f64::max);
            let med = median(&mut rates).unwrap_or(0.0);
            stream.row([
                path.to_owned(),
                batch.to_string(),
                format!("{med:.0}"),
                format!("{:.0}", med * ITEM_LEN as f64 / 1e6),
                format!("{lo:.0}"),
                format!("{hi:.0}"),
            ]);
            summary.insert(
                format!("{path}_batch{batch}_items_per_s"),
                json!(med.round()),
            );
            if path == "shm" && batch == 1 {
                summary.insert("shm_stream_items_per_s".into(), json!(med.round()));
            }
        }
    }
    for path in ["uds", "shm"] {
        for batch in BATCHES {
            let rounds = rtt_rounds(sizes, batch);
            let mut samples = if path == "uds" {
                uds_rtt(batch, rounds, set.uds_sndbuf)?
            } else {
                shm_rtt(batch, rounds, cfg)?
            };
            let p50 = quantile(&mut samples, 0.5).unwrap_or_default();
            let p99 = quantile(&mut samples, 0.99).unwrap_or_default();
            rtt.row([
                path.to_owned(),
                batch.to_string(),
                rounds.to_string(),
                format!("{:.1}", micros(p50)),
                format!("{:.1}", micros(p99)),
                format!("{:.0}", batch as f64 / p50.as_secs_f64().max(1e-9)),
            ]);
            summary.insert(
                format!("{path}_rtt_batch{batch}_p50_us"),
                json!(micros(p50)),
            );
            summary.insert(
                format!("{path}_rtt_batch{batch}_p99_us"),
                json!(micros(p99)),
            );
        }
    }
    let mut counters = Table::new("ring counters per shm stream run", &["run"]);
    for n in notes {
        counters.row([n]);
    }
    Ok(Outcome {
        tables: vec![stream, rtt, counters],
        json: vec![serde_json::Value::Object(summary)],
    })
}
