//! Helpers for `pool_limits.rs`: items with large messages that cost one
//! signature and one message allocation however many items there are, the
//! largest message a request limit allows (derived from real encodings),
//! and a minimal `block_on` for awaiting tickets without a runtime.
#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)] // test helpers: own the clock, unwrap

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use verifyd::client::{Bytes, Item};
use verifyd::fixtures::Signer;
use verifyd::proto::{self, ItemRef};
use verifyd::{BackendKind, SIGNATURE_LEN, Verdict};

/// Bytes of a one-item request (key by id, empty context) whose message is
/// `msg_len` bytes, as the real encoder makes it.
pub fn one_item_request_len(fbb: &mut FlatBufferBuilder<'static>, msg_len: usize) -> usize {
    let msg = vec![0u8; msg_len];
    let sig = [0u8; SIGNATURE_LEN];
    let item = [ItemRef {
        key_id: 1,
        inline_key: None,
        msg: &msg,
        sig: &sig,
    }];
    proto::encode_verify_batch(fbb, u64::MAX, &[], &item).len()
}

/// The longest message whose one-item request is at most `limit` bytes:
/// the largest message a session with that limit can verify at all.
pub fn largest_message(limit: usize) -> usize {
    let mut fbb = FlatBufferBuilder::new();
    let mut len = limit.saturating_sub(SIGNATURE_LEN + 4096);
    loop {
        let f = one_item_request_len(&mut fbb, len);
        if f > limit {
            len -= (f - limit).max(1);
            continue;
        }
        if one_item_request_len(&mut fbb, len + 1) > limit {
            return len;
        }
        len += (limit - f).max(1);
    }
}

/// `n` items over messages of `msg_len` bytes under one key, with the
/// verdict each must get. Every third item (from the second) has one bit
/// of its message flipped and every seventh (from the fifth) one bit of
/// its signature, so both are `Invalid`; item `n - 1` has a signature one
/// byte short (`Malformed`). All items share three message and three
/// signature buffers, so 256 items of 16 MiB cost 32 MiB, not 4 GiB.
pub fn big_items(msg_len: usize, n: usize, seed: u8) -> (Vec<Item>, Vec<Verdict>) {
    let signer = Signer::from_seed(BackendKind::AwsLc, [seed; 32]).unwrap();
    let msg: Vec<u8> = (0..msg_len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let sig = signer.sign(&msg).unwrap();
    let mut bad_msg = msg.clone();
    if let Some(b) = bad_msg.get_mut(msg_len / 2) {
        *b ^= 0x10;
    }
    let mut bad_sig = sig.clone();
    bad_sig[SIGNATURE_LEN / 3] ^= 0x04;
    let short_sig = Bytes::from(sig[..SIGNATURE_LEN - 1].to_vec());
    let key = Bytes::from(signer.public_key().to_vec());
    let (msg, bad_msg) = (Bytes::from(msg), Bytes::from(bad_msg));
    let (sig, bad_sig) = (Bytes::from(sig), Bytes::from(bad_sig));
    let mut items = Vec::with_capacity(n);
    let mut truth = Vec::with_capacity(n);
    for i in 0..n {
        let (m, s, v) = if i + 1 == n && n > 2 {
            (msg.clone(), short_sig.clone(), Verdict::Malformed)
        } else if i % 3 == 1 && msg_len > 0 {
            (bad_msg.clone(), sig.clone(), Verdict::Invalid)
        } else if i % 7 == 4 {
            (msg.clone(), bad_sig.clone(), Verdict::Invalid)
        } else {
            (msg.clone(), sig.clone(), Verdict::Valid)
        };
        items.push(Item {
            key: key.clone(),
            msg: m,
            sig: s,
        });
        truth.push(v);
    }
    (items, truth)
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` on this thread, parking between polls until its waker is
/// called, and panics if it is not ready within `limit`. Each park lasts
/// until the deadline unless woken, so a future that never calls its waker
/// fails here instead of being rescued by a periodic re-poll. Returns the
/// output and the number of polls.
pub fn block_on<F: Future>(f: F, limit: Duration) -> (F::Output, usize) {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    let t = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return (v, polls);
        }
        // A spurious unpark only costs one more poll; running out the
        // deadline means nobody woke us, and re-polling then would hide it.
        std::thread::park_timeout(limit.saturating_sub(t.elapsed()));
        assert!(
            t.elapsed() < limit,
            "future not woken within {limit:?} (polled {polls} times)"
        );
    }
}

/// The median of `xs` (sorted in place).
pub fn median(xs: &mut [Duration]) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}
