//! Where things live in a ring's memory, and the checked decoding of what the
//! peer wrote there.
//!
//! ```text
//! offset    0  header line: magic, version, capacity, max record   (creator writes once)
//! offset  128  producer line: tail, producer_closed       (producer writes)
//! offset  256  consumer line: head, consumer_closed       (consumer writes)
//! offset  384  consumer-waiting line                      (see below)
//! offset  512  producer-waiting line                      (see below)
//! offset 1024  data: `capacity` bytes, a power of two
//! ```
//!
//! `head` and `tail` are monotonically increasing byte counts (never reduced
//! modulo the capacity), so "empty" is `head == tail`, "used" is
//! `tail - head`, and there is no ambiguous full/empty state. The control
//! lines are 128 bytes apart because x86's adjacent-line prefetcher pulls
//! pairs of 64-byte lines; the index lines are each written by one side
//! only. A `*_waiting` park word is written only by the side about to sleep
//! and read by the other side after every publish (see [`super::core`]); on
//! its own line it stays in both caches, unmodified, while nobody sleeps, so
//! that read costs no cache-line transfer.
//!
//! A record is an 8-byte header word followed by its payload, padded to a
//! multiple of 8 so every header is word-aligned:
//!
//! ```text
//! [len: u32 | tag: u32][payload: len bytes][pad to 8]
//! ```
//!
//! A record never straddles the end of the data area. When the next record
//! does not fit before the end, the producer writes a *skip marker* (tag
//! [`TAG_SKIP`]) that tells the consumer to continue at offset 0, and writes
//! the record there. That costs at most one record's worth of space per lap
//! and keeps every record contiguous, so it can be copied out in one piece.
//! Because of the marker a record may be at most half the capacity minus its
//! header ([`Geometry::max_record_for`]): then a record always fits once the
//! ring has drained, whatever the wrap position.

use super::error::Corrupt;
use crate::loom::atomic::{AtomicU32, AtomicU64};

/// "TERNRING" — the first word of a ring mapping.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TERNRING");
/// Layout version; bump on any incompatible change.
pub const VERSION: u32 = 1;
/// Offset of the data area from the start of the mapping.
pub const DATA_OFFSET: usize = 1024;
/// Size of a record header.
pub const HEADER_LEN: usize = 8;
/// Tag of a record header.
pub const TAG_RECORD: u32 = 0x5245_4331; // "REC1"
/// Tag of a skip marker: continue at offset 0.
pub const TAG_SKIP: u32 = 0x534b_4950; // "SKIP"
/// Smallest data area accepted.
pub const MIN_CAPACITY: usize = 64;
/// Largest data area accepted (1 GiB): bounds what a peer can make us map.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Size and record limit of a ring, validated.
///
/// Both come from the hello exchange (the max frame size bounds the record
/// size) and are repeated in the mapping's header, which the attaching side
/// checks against what it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    capacity: usize,
    max_record: usize,
}

impl Geometry {
    /// A geometry with a data area of `capacity` bytes (a power of two in
    /// [`MIN_CAPACITY`]..=[`MAX_CAPACITY`]) and records of at most
    /// `max_record` bytes (at most [`Self::max_record_for`]`(capacity)`).
    pub fn new(capacity: usize, max_record: usize) -> Result<Self, Corrupt> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Corrupt::Geometry {
                capacity: capacity as u64,
                max_record: max_record as u64,
            });
        }
        if max_record == 0 || max_record > Self::max_record_for(capacity) {
            return Err(Corrupt::Geometry {
                capacity: capacity as u64,
                max_record: max_record as u64,
            });
        }
        Ok(Self {
            capacity,
            max_record,
        })
    }

    /// The geometry both sides derive from a hello session
    /// ([`crate::hello::Session`]): the data area is the agreed
    /// `ring_capacity` rounded down to a power of two, and a record may be as
    /// large as a frame (`max_frame`) but no larger than the area allows.
    /// Both sides compute the same value from the same session, and the
    /// ring's setup message checks that they did.
    pub fn negotiated(ring_capacity: u32, max_frame: u32) -> Result<Self, Corrupt> {
        let cap = ring_capacity as usize;
        if cap < MIN_CAPACITY {
            return Err(Corrupt::Geometry {
                capacity: cap as u64,
                max_record: max_frame as u64,
            });
        }
        let capacity = (1usize << (usize::BITS - 1 - cap.leading_zeros())).min(MAX_CAPACITY);
        Self::new(
            capacity,
            (max_frame as usize).min(Self::max_record_for(capacity)),
        )
    }

    /// The largest record a data area of `capacity` bytes can always accept
    /// (see the module docs on skip markers).
    pub const fn max_record_for(capacity: usize) -> usize {
        capacity / 2 - HEADER_LEN
    }

    /// Bytes in the data area.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest record payload.
    pub const fn max_record(&self) -> usize {
        self.max_record
    }

    /// Total mapping size: control block plus data.
    pub const fn mapping_len(&self) -> usize {
        DATA_OFFSET + self.capacity
    }
}

/// Space a record of `len` payload bytes takes, header and padding included.
pub const fn slot_len(len: usize) -> usize {
    HEADER_LEN + len.next_multiple_of(HEADER_LEN)
}

/// Encodes a header word.
pub const fn header(tag: u32, len: u32) -> u64 {
    ((tag as u64) << 32) | len as u64
}

/// What a header word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A record of this many payload bytes follows.
    Record(usize),
    /// Skip to offset 0.
    Skip,
}

/// Decodes a header word written by the (untrusted) producer.
pub fn decode_header(word: u64, max_record: usize) -> Result<Header, Corrupt> {
    let tag = (word >> 32) as u32;
    let len = (word & 0xffff_ffff) as usize;
    match tag {
        TAG_RECORD if len <= max_record => Ok(Header::Record(len)),
        TAG_RECORD => Err(Corrupt::RecordTooLong {
            len: len as u64,
            max: max_record as u64,
        }),
        TAG_SKIP => Ok(Header::Skip),
        _ => Err(Corrupt::BadTag { word }),
    }
}

/// The producer's control line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct ProducerLine {
    /// Bytes published so far.
    pub tail: AtomicU64,
    /// Non-zero once the producer has gone away cleanly.
    pub closed: AtomicU32,
}

/// The consumer's control line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct ConsumerLine {
    /// Bytes consumed so far.
    pub head: AtomicU64,
    /// Non-zero once the consumer has gone away cleanly.
    pub closed: AtomicU32,
}

/// A side's park word on its own line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct WaitLine {
    /// Odd while the side sleeps or is about to (a park number), even while
    /// it is awake. Written only by that side.
    pub flag: AtomicU32,
}

/// The shared indices and flags, laid out as in the module docs starting at
/// offset 128 of the mapping.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Control {
    /// Written by the producer.
    pub producer: ProducerLine,
    /// Written by the consumer.
    pub consumer: ConsumerLine,
    /// The consumer's park word (it parks for data).
    pub consumer_waiting: WaitLine,
    /// The producer's park word (it parks for space).
    pub producer_waiting: WaitLine,
}

/// Offset of [`Control`] in the mapping.
pub const CONTROL_OFFSET: usize = 128;

// The data area must not share a line with the control block.
const _: () = assert!(CONTROL_OFFSET + std::mem::size_of::<Control>() <= DATA_OFFSET);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_bounds() {
        assert!(Geometry::new(4096, 2040).is_ok());
        assert!(Geometry::new(4096, 2041).is_err());
        assert!(Geometry::new(4095, 16).is_err());
        assert!(Geometry::new(32, 8).is_err());
        assert!(Geometry::new(4096, 0).is_err());
        assert!(Geometry::new(1 << 31, 16).is_err());
    }

    #[test]
    fn negotiated_from_hello_values() {
        let g = Geometry::negotiated(3 << 20, 16 << 20).unwrap();
        assert_eq!(g.capacity(), 2 << 20);
        assert_eq!(g.max_record(), (1 << 20) - 8);
        let g = Geometry::negotiated(1 << 20, 8192).unwrap();
        assert_eq!((g.capacity(), g.max_record()), (1 << 20, 8192));
        assert!(Geometry::negotiated(0, 8192).is_err());
        assert!(Geometry::negotiated(1 << 20, 0).is_err());
    }

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        assert_eq!(
            decode_header(header(TAG_RECORD, 7), 100),
            Ok(Header::Record(7))
        );
        assert_eq!(decode_header(header(TAG_SKIP, 0), 100), Ok(Header::Skip));
        assert!(decode_header(header(TAG_RECORD, 101), 100).is_err());
        assert!(decode_header(0, 100).is_err());
        assert!(decode_header(u64::MAX, 100).is_err());
    }

    #[test]
    fn slots_are_word_aligned() {
        assert_eq!(slot_len(0), 8);
        assert_eq!(slot_len(1), 16);
        assert_eq!(slot_len(8), 16);
        assert_eq!(slot_len(5517), 8 + 5520);
    }
}
