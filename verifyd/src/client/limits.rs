//! How large a `VerifyBatch` gets on the wire, bounded from above, and the
//! limits one session puts on a request.
//!
//! The pool packs items into requests *before* encoding them, so it needs a
//! size it can add up item by item that is never below what
//! [`crate::proto::encode_verify_batch`] really produces: an estimate that
//! is too low would make a request the session refuses (a frame over the
//! hello's maximum closes the connection; a record over the ring's limit
//! fails the write). The bound follows the flatbuffers layout:
//!
//! * each byte vector is a 4-byte length, the bytes, a NUL and at most 3
//!   bytes of padding: `len + 8`;
//! * each `VerifyItem` table is a 4-byte vtable offset, an 8-byte key id
//!   (with up to 7 bytes of alignment), three 4-byte offsets, and its vtable
//!   (4 + 2 × 4 bytes) if the builder could not share one; its slot in the
//!   items vector is 4 more bytes;
//! * the request adds the root offset and file identifier, the
//!   `VerifyFrame` and `VerifyBatch` tables and vtables, the items vector's
//!   length, alignment padding, and the context as one more byte vector.
//!
//! Both overheads below are rounded well up from those sums (about 71 bytes
//! per item and 100 per request); `tests::estimate_bounds_real_encoding`
//! checks the bound against real encodings of random sizes, and that it
//! wastes little.

use crate::proto::MAX_BATCH_ITEMS;

/// Bytes one item adds to a request beyond its key, message and signature
/// bytes (an upper bound; see the module docs).
pub const ITEM_OVERHEAD: usize = 96;

/// Bytes a request takes beyond its items and its context bytes (an upper
/// bound; see the module docs).
pub const REQUEST_OVERHEAD: usize = 256;

/// Largest request the pool encodes, whatever a session accepts (a hello
/// may allow up to 4 GiB): flatbuffers offsets are 32-bit signed, and its
/// builder panics on buffers near 2 GiB, so requests stay well below.
pub const MAX_ENCODABLE: usize = 1 << 30;

/// Upper bound of the bytes one item adds to an encoded request:
/// `inline_key` is the length of the key when it travels inside the item
/// (`None` when the item names a registered key id).
#[must_use]
pub const fn item_bound(msg_len: usize, sig_len: usize, inline_key: Option<usize>) -> usize {
    let key = match inline_key {
        Some(k) => k,
        None => 0,
    };
    msg_len
        .saturating_add(sig_len)
        .saturating_add(key)
        .saturating_add(ITEM_OVERHEAD)
}

/// Upper bound of the bytes of an encoded request with no items and a
/// context of `context_len` bytes.
#[must_use]
pub const fn request_bound(context_len: usize) -> usize {
    REQUEST_OVERHEAD.saturating_add(context_len)
}

/// A lower bound of the bytes a one-item request takes: its payload alone.
/// An item over a limit by this measure cannot fit, encoded or not.
#[must_use]
pub(crate) const fn item_floor(msg_len: usize, sig_len: usize, inline_key: Option<usize>) -> usize {
    let key = match inline_key {
        Some(k) => k,
        None => 0,
    };
    msg_len.saturating_add(sig_len).saturating_add(key)
}

/// What one session accepts in a single request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest encoded request in bytes: the hello's negotiated maximum
    /// frame, and on a shared-memory ring also the ring's largest record.
    pub max_bytes: usize,
    /// Most items in one request: [`MAX_BATCH_ITEMS`] and
    /// [`super::PoolConfig::max_request_items`], whichever is smaller.
    pub max_items: usize,
}

impl RequestLimits {
    /// The limits for a session that accepts requests of up to `max_bytes`
    /// bytes, with the pool's own item cap `max_request_items`.
    /// `max_bytes` is capped at [`MAX_ENCODABLE`].
    #[must_use]
    pub fn new(max_bytes: usize, max_request_items: usize) -> RequestLimits {
        RequestLimits {
            max_bytes: max_bytes.min(MAX_ENCODABLE),
            max_items: max_request_items.clamp(1, MAX_BATCH_ITEMS),
        }
    }

    /// How many of `sizes` (each an [`item_bound`], in order) go into the
    /// first request: as many as fit both limits by the bound, and always at
    /// least one, so an item over the bound on its own is still tried alone
    /// (its real encoding may fit; the caller checks that).
    pub(crate) fn prefix_len(&self, sizes: impl IntoIterator<Item = usize>) -> usize {
        let mut total = request_bound(0);
        let mut n = 0;
        for b in sizes.into_iter().take(self.max_items) {
            total = total.saturating_add(b);
            if n > 0 && total > self.max_bytes {
                break;
            }
            n += 1;
        }
        n.max(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use flatbuffers::FlatBufferBuilder;

    use super::*;
    use crate::proto::{ItemRef, encode_verify_batch};

    /// xorshift: deterministic sizes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The estimate is never below the real encoding, for random item
    /// counts, message, signature and inline-key lengths (including empty
    /// ones and odd lengths that exercise every padding case), key ids of
    /// 0 (not written) and large, and contexts of 0–255 bytes.
    #[test]
    fn estimate_bounds_real_encoding() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let pool = vec![0xa5u8; 70_000];
        let mut fbb = FlatBufferBuilder::new();
        let mut max_slack = 0usize;
        for round in 0..400 {
            let n = match round % 4 {
                0 => 1,
                1 => 1 + rng.below(8),
                2 => 1 + rng.below(300),
                _ => 0,
            };
            let mut shapes = Vec::with_capacity(n);
            for _ in 0..n {
                let msg = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(16),
                    2 => rng.below(2_000),
                    _ => rng.below(pool.len()),
                };
                let sig = if rng.below(3) == 0 {
                    crate::SIGNATURE_LEN
                } else {
                    rng.below(4_000)
                };
                let key = match rng.below(3) {
                    0 => Some(crate::PUBLIC_KEY_LEN),
                    1 => Some(rng.below(3_000)),
                    _ => None,
                };
                let id = if rng.below(2) == 0 { 0 } else { rng.next() };
                shapes.push((msg, sig, key, id));
            }
            let ctx = &pool[..rng.below(256)];
            let items: Vec<ItemRef<'_>> = shapes
                .iter()
                .map(|&(m, s, k, id)| ItemRef {
                    key_id: id,
                    inline_key: k.map(|k| &pool[..k]),
                    msg: &pool[..m],
                    sig: &pool[..s],
                })
                .collect();
            let real = encode_verify_batch(&mut fbb, rng.next(), ctx, &items).len();
            let payload: usize = shapes
                .iter()
                .map(|&(m, s, k, _)| item_floor(m, s, k))
                .sum::<usize>()
                + ctx.len();
            let bound: usize = shapes
                .iter()
                .map(|&(m, s, k, _)| item_bound(m, s, k))
                .sum::<usize>()
                + request_bound(ctx.len());
            assert!(
                bound >= real,
                "round {round}: bound {bound} < real {real} for {n} items, context {}",
                ctx.len()
            );
            assert!(
                real >= payload,
                "round {round}: payload {payload} > real {real}"
            );
            max_slack = max_slack.max(bound - real);
        }
        assert!(max_slack > 0, "the bound is never exact on these shapes");
    }

    /// The prefix respects both limits, keeps at least one item, and an
    /// item over the byte limit alone is still taken (alone).
    #[test]
    fn prefix_respects_both_limits() {
        let l = RequestLimits::new(10_000, 3);
        assert_eq!(l.prefix_len([100, 100, 100, 100]), 3);
        assert_eq!(l.prefix_len([4_000, 4_000, 4_000]), 2);
        assert_eq!(l.prefix_len([20_000, 100]), 1);
        assert_eq!(l.prefix_len([100, 20_000]), 1);
        let l = RequestLimits::new(usize::MAX, usize::MAX);
        assert_eq!(l.max_items, MAX_BATCH_ITEMS);
        assert_eq!(l.prefix_len(vec![1; MAX_BATCH_ITEMS + 5]), MAX_BATCH_ITEMS);
        assert_eq!(RequestLimits::new(1, 0).max_items, 1);
        assert_eq!(
            RequestLimits::new(u32::MAX as usize, 1).max_bytes,
            MAX_ENCODABLE
        );
    }
}
