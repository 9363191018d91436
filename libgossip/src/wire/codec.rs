//! `encoded_len` / `emit` / `parse` for every frame (layout in `super`'s docs).

use super::cursor::{Reader, Writer};
use super::dm::{DmEnvelope, DmSeal, KemKey};
use super::error::{EmitError, Field, WireError};
use super::{Frame, Limits, VERSION};
use crate::proto::{Body, DigestEntry, Gossip, IHaveEntry, Message, MessageId, PeerId, TopicId};
use bytes::Bytes;

/// Message tags (the byte after the version).
pub(super) mod tag {
    pub(crate) const EAGER: u8 = 0x01;
    pub(crate) const IHAVE: u8 = 0x02;
    pub(crate) const IWANT: u8 = 0x03;
    pub(crate) const GRAFT: u8 = 0x04;
    pub(crate) const PRUNE: u8 = 0x05;
    // 0x06 was the digest without ages (`n:u16 id*n`): retired and never
    // reused, so an old peer's digest is refused as an unknown tag rather
    // than misread.
    pub(crate) const DIGEST: u8 = 0x07;
    pub(crate) const JOIN: u8 = 0x10;
    pub(crate) const FORWARD_JOIN: u8 = 0x11;
    pub(crate) const NEIGHBOR: u8 = 0x12;
    pub(crate) const NEIGHBOR_REPLY: u8 = 0x13;
    pub(crate) const DISCONNECT: u8 = 0x14;
    pub(crate) const SHUFFLE: u8 = 0x15;
    pub(crate) const SHUFFLE_REPLY: u8 = 0x16;
    pub(crate) const KEY_REQUEST: u8 = 0x20;
    pub(crate) const KEY_RESPONSE: u8 = 0x21;
    pub(crate) const DM: u8 = 0x40;
    pub(crate) const KEM_KEY: u8 = 0x41;
}

const ID: usize = 32;
const IHAVE_ENTRY: usize = ID + 2;
/// Id and `age_ms:u32`.
const DIGEST_ENTRY: usize = ID + 4;
/// Version and tag.
const HEAD: usize = 2;
/// Version, tag and topic.
const TOPIC_HEAD: usize = HEAD + ID;
const FLAG_BIT0: u8 = 0x01;

fn tag_of(body: &Body) -> u8 {
    match body {
        Body::Eager(_) => tag::EAGER,
        Body::IHave(_) => tag::IHAVE,
        Body::IWant(_) => tag::IWANT,
        Body::Graft { .. } => tag::GRAFT,
        Body::Prune => tag::PRUNE,
        Body::Digest(_) => tag::DIGEST,
        Body::Join => tag::JOIN,
        Body::ForwardJoin { .. } => tag::FORWARD_JOIN,
        Body::Neighbor { .. } => tag::NEIGHBOR,
        Body::NeighborReply { .. } => tag::NEIGHBOR_REPLY,
        Body::Disconnect => tag::DISCONNECT,
        Body::Shuffle { .. } => tag::SHUFFLE,
        Body::ShuffleReply { .. } => tag::SHUFFLE_REPLY,
        Body::KeyRequest { .. } => tag::KEY_REQUEST,
        Body::KeyResponse { .. } => tag::KEY_RESPONSE,
    }
}

impl Message {
    /// Exact encoded size of this message in bytes (what [`Message::emit`]
    /// writes). Never panics; computed without encoding.
    pub fn encoded_len(&self) -> usize {
        TOPIC_HEAD
            + match &self.body {
                Body::Eager(g) => ID + 8 + 2 + 4 + g.payload.len() + 2 + g.signature.len(),
                Body::IHave(v) => 2 + v.len() * IHAVE_ENTRY,
                Body::Digest(v) => 2 + v.len() * DIGEST_ENTRY,
                Body::IWant(v) | Body::Graft { ids: v } => 2 + v.len() * ID,
                Body::Prune | Body::Join | Body::Disconnect => 0,
                Body::ForwardJoin { .. } => ID + 1,
                Body::Neighbor { .. } | Body::NeighborReply { .. } => 1,
                Body::Shuffle { peers, .. } => ID + 1 + 2 + peers.len() * ID,
                Body::ShuffleReply { peers } => 2 + peers.len() * ID,
                Body::KeyRequest { .. } => ID,
                Body::KeyResponse { key, .. } => ID + 2 + key.len(),
            }
    }

    /// Writes the message at the start of `buf` and returns the bytes
    /// written (= [`Message::encoded_len`]).
    ///
    /// Never panics: a short `buf` gives [`EmitError::BufferTooSmall`] and a
    /// field longer than its length prefix [`EmitError::TooLong`] (lists are
    /// limited to 65,535 entries, signatures and keys to 65,535 bytes, the
    /// payload to 4 GiB − 1). On error `buf` may hold a partial message.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let need = self.encoded_len();
        if buf.len() < need {
            return Err(EmitError::BufferTooSmall {
                need,
                got: buf.len(),
            });
        }
        let mut w = Writer::new(buf);
        w.u8(VERSION)?;
        w.u8(tag_of(&self.body))?;
        w.put(&self.topic.0)?;
        match &self.body {
            Body::Eager(g) => {
                w.put(&g.origin.0)?;
                w.u64(g.seqno)?;
                w.u16(g.hops)?;
                w.len_prefix::<4>(Field::Payload, g.payload.len())?;
                w.put(&g.payload)?;
                w.len_prefix::<2>(Field::Signature, g.signature.len())?;
                w.put(&g.signature)?;
            }
            Body::IHave(v) => {
                w.len_prefix::<2>(Field::List, v.len())?;
                for e in v {
                    w.put(&e.id.0)?;
                    w.u16(e.hops)?;
                }
            }
            Body::Digest(v) => {
                w.len_prefix::<2>(Field::List, v.len())?;
                for e in v {
                    w.put(&e.id.0)?;
                    w.u32(e.age_ms)?;
                }
            }
            Body::IWant(v) | Body::Graft { ids: v } => {
                w.len_prefix::<2>(Field::List, v.len())?;
                for id in v {
                    w.put(&id.0)?;
                }
            }
            Body::Prune | Body::Join | Body::Disconnect => {}
            Body::ForwardJoin { peer, ttl } => {
                w.put(&peer.0)?;
                w.u8(*ttl)?;
            }
            Body::Neighbor { high_priority: b } | Body::NeighborReply { accepted: b } => {
                w.u8(u8::from(*b))?;
            }
            Body::Shuffle { origin, ttl, peers } => {
                w.put(&origin.0)?;
                w.u8(*ttl)?;
                put_peers(&mut w, peers)?;
            }
            Body::ShuffleReply { peers } => put_peers(&mut w, peers)?,
            Body::KeyRequest { origin } => w.put(&origin.0)?,
            Body::KeyResponse { origin, key } => {
                w.put(&origin.0)?;
                w.len_prefix::<2>(Field::Key, key.len())?;
                w.put(key)?;
            }
        }
        Ok(w.written())
    }

    /// The encoded message in a buffer of exactly [`Message::encoded_len`]
    /// bytes.
    pub fn to_bytes(&self) -> Result<Bytes, EmitError> {
        let mut v = vec![0u8; self.encoded_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(Bytes::from(v))
    }
}

fn put_peers(w: &mut Writer<'_>, peers: &[PeerId]) -> Result<(), EmitError> {
    w.len_prefix::<2>(Field::List, peers.len())?;
    for p in peers {
        w.put(&p.0)?;
    }
    Ok(())
}

/// Emits a record of exactly `need` bytes through `body`, after the
/// buffer check every emitter makes first.
fn emit_checked(
    buf: &mut [u8],
    need: usize,
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), EmitError>,
) -> Result<usize, EmitError> {
    if buf.len() < need {
        return Err(EmitError::BufferTooSmall {
            need,
            got: buf.len(),
        });
    }
    let mut w = Writer::new(buf);
    body(&mut w)?;
    Ok(w.written())
}

/// An emitter's output in a buffer of exactly `len` bytes.
fn encode(
    len: usize,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, EmitError>,
) -> Result<Bytes, EmitError> {
    let mut v = vec![0u8; len];
    let n = emit(&mut v)?;
    v.truncate(n);
    Ok(Bytes::from(v))
}

/// A length-prefixed byte field.
fn put_field<const N: usize>(w: &mut Writer<'_>, field: Field, b: &[u8]) -> Result<(), EmitError> {
    w.len_prefix::<N>(field, b.len())?;
    w.put(b)
}

impl DmEnvelope {
    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        HEAD + ID + ID + 16 + 1 + 1 + 4 + self.body.len() + 2 + self.signature.len()
    }

    /// Writes the envelope at the start of `buf`; same contract as
    /// [`Message::emit`] (body up to 4 GiB − 1, signature up to 65,535 bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        emit_checked(buf, self.encoded_len(), |w| {
            w.u8(VERSION)?;
            w.u8(tag::DM)?;
            w.put(&self.from.0)?;
            w.put(&self.to.0)?;
            w.put(&self.id)?;
            w.u8(self.ttl)?;
            w.u8(self.seal.code())?;
            put_field::<4>(w, Field::DmBody, &self.body)?;
            put_field::<2>(w, Field::Signature, &self.signature)
        })
    }

    /// The encoded envelope in a buffer of exactly its length.
    pub fn to_bytes(&self) -> Result<Bytes, EmitError> {
        encode(self.encoded_len(), |b| self.emit(b))
    }
}

impl KemKey {
    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        HEAD + 8 + 2 + self.identity_key.len() + 2 + self.kem_key.len() + 2 + self.signature.len()
    }

    /// Writes the record at the start of `buf`; same contract as
    /// [`Message::emit`] (each field up to 65,535 bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        emit_checked(buf, self.encoded_len(), |w| {
            w.u8(VERSION)?;
            w.u8(tag::KEM_KEY)?;
            w.u64(self.serial)?;
            put_field::<2>(w, Field::Key, &self.identity_key)?;
            put_field::<2>(w, Field::Key, &self.kem_key)?;
            put_field::<2>(w, Field::Signature, &self.signature)
        })
    }

    /// The encoded record in a buffer of exactly its length.
    pub fn to_bytes(&self) -> Result<Bytes, EmitError> {
        encode(self.encoded_len(), |b| self.emit(b))
    }

    /// Parses one whole record; same contract as [`Frame::parse`] (never
    /// panics, keys and signature are zero-copy slices checked against
    /// `limits.max_key` / `limits.max_signature`, no trailing bytes). It
    /// checks the form only: the owner hash and the signature are checked
    /// by the DM engine before the key is used.
    pub fn parse(rec: &Bytes, limits: &Limits) -> Result<KemKey, WireError> {
        let mut r = Reader::new(rec);
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let t = r.u8()?;
        if t != tag::KEM_KEY {
            return Err(WireError::UnknownTag(t));
        }
        let serial = r.u64()?;
        let len = r.u16()?;
        let identity_key = r.bytes(Field::Key, u64::from(len), limits.max_key)?;
        let len = r.u16()?;
        let kem_key = r.bytes(Field::Key, u64::from(len), limits.max_key)?;
        let len = r.u16()?;
        let signature = r.bytes(Field::Signature, u64::from(len), limits.max_signature)?;
        r.finish()?;
        Ok(KemKey {
            serial,
            identity_key,
            kem_key,
            signature,
        })
    }
}

impl Frame {
    /// Exact encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Topic(m) => m.encoded_len(),
            Frame::Dm(d) => d.encoded_len(),
        }
    }

    /// Writes the frame at the start of `buf` (see [`Message::emit`]).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        match self {
            Frame::Topic(m) => m.emit(buf),
            Frame::Dm(d) => d.emit(buf),
        }
    }

    /// The encoded frame in a buffer of exactly its length.
    pub fn to_bytes(&self) -> Result<Bytes, EmitError> {
        match self {
            Frame::Topic(m) => m.to_bytes(),
            Frame::Dm(d) => d.to_bytes(),
        }
    }

    /// Parses one whole frame. Byte fields (payload, signature, key, DM
    /// body) are zero-copy slices of `frame`; lists are allocated only after
    /// their count was checked against `limits` and against the bytes left,
    /// so no declared length ever sizes an allocation beyond the frame's
    /// own length.
    ///
    /// Never panics, for any input: every malformed frame gives a
    /// [`WireError`]. Topic filtering is not done here (see
    /// [`super::Decoder`]).
    pub fn parse(frame: &Bytes, limits: &Limits) -> Result<Frame, WireError> {
        if frame.len() > limits.max_frame {
            return Err(WireError::Oversize {
                field: Field::Frame,
                len: frame.len() as u64,
                max: limits.max_frame as u64,
            });
        }
        let mut r = Reader::new(frame);
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let t = r.u8()?;
        let out = if t == tag::DM {
            Frame::Dm(parse_dm(&mut r, limits)?)
        } else {
            if !is_topic_tag(t) {
                return Err(WireError::UnknownTag(t));
            }
            let topic = TopicId(r.array()?);
            let body = parse_body(t, &mut r, limits)?;
            Frame::Topic(Message { topic, body })
        };
        r.finish()?;
        Ok(out)
    }
}

fn is_topic_tag(t: u8) -> bool {
    matches!(
        t,
        tag::EAGER
            | tag::IHAVE
            | tag::IWANT
            | tag::GRAFT
            | tag::PRUNE
            | tag::DIGEST
            | tag::JOIN
            | tag::FORWARD_JOIN
            | tag::NEIGHBOR
            | tag::NEIGHBOR_REPLY
            | tag::DISCONNECT
            | tag::SHUFFLE
            | tag::SHUFFLE_REPLY
            | tag::KEY_REQUEST
            | tag::KEY_RESPONSE
    )
}

fn flag(r: &mut Reader<'_>) -> Result<bool, WireError> {
    let f = r.u8()?;
    if f & !FLAG_BIT0 != 0 {
        return Err(WireError::ReservedBits(f));
    }
    Ok(f & FLAG_BIT0 != 0)
}

/// A counted list of `size`-byte entries, each read by `entry`; allocated
/// only after the count was checked against the limit and the bytes left.
fn list<T>(
    r: &mut Reader<'_>,
    limits: &Limits,
    size: usize,
    mut entry: impl FnMut(&mut Reader<'_>) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let n = r.count(limits.max_list, size)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(entry(r)?);
    }
    Ok(v)
}

fn ids(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<MessageId>, WireError> {
    list(r, limits, ID, |r| Ok(MessageId(r.array()?)))
}

fn peers(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<PeerId>, WireError> {
    list(r, limits, ID, |r| Ok(PeerId(r.array()?)))
}

fn parse_body(t: u8, r: &mut Reader<'_>, limits: &Limits) -> Result<Body, WireError> {
    Ok(match t {
        tag::EAGER => {
            let origin = PeerId(r.array()?);
            let seqno = r.u64()?;
            let hops = r.u16()?;
            let len = r.u32()?;
            let payload = r.bytes(Field::Payload, u64::from(len), limits.max_payload)?;
            let len = r.u16()?;
            let signature = r.bytes(Field::Signature, u64::from(len), limits.max_signature)?;
            Body::Eager(Gossip {
                origin,
                seqno,
                payload,
                signature,
                hops,
            })
        }
        tag::IHAVE => Body::IHave(list(r, limits, IHAVE_ENTRY, |r| {
            let id = MessageId(r.array()?);
            Ok(IHaveEntry { id, hops: r.u16()? })
        })?),
        tag::IWANT => Body::IWant(ids(r, limits)?),
        tag::GRAFT => Body::Graft {
            ids: ids(r, limits)?,
        },
        tag::PRUNE => Body::Prune,
        tag::DIGEST => Body::Digest(list(r, limits, DIGEST_ENTRY, |r| {
            let id = MessageId(r.array()?);
            Ok(DigestEntry {
                id,
                age_ms: r.u32()?,
            })
        })?),
        tag::JOIN => Body::Join,
        tag::FORWARD_JOIN => Body::ForwardJoin {
            peer: PeerId(r.array()?),
            ttl: r.u8()?,
        },
        tag::NEIGHBOR => Body::Neighbor {
            high_priority: flag(r)?,
        },
        tag::NEIGHBOR_REPLY => Body::NeighborReply { accepted: flag(r)? },
        tag::DISCONNECT => Body::Disconnect,
        tag::SHUFFLE => Body::Shuffle {
            origin: PeerId(r.array()?),
            ttl: r.u8()?,
            peers: peers(r, limits)?,
        },
        tag::SHUFFLE_REPLY => Body::ShuffleReply {
            peers: peers(r, limits)?,
        },
        tag::KEY_REQUEST => Body::KeyRequest {
            origin: PeerId(r.array()?),
        },
        tag::KEY_RESPONSE => {
            let origin = PeerId(r.array()?);
            let len = r.u16()?;
            let key = r.bytes(Field::Key, u64::from(len), limits.max_key)?;
            Body::KeyResponse { origin, key }
        }
        other => return Err(WireError::UnknownTag(other)),
    })
}

fn parse_dm(r: &mut Reader<'_>, limits: &Limits) -> Result<DmEnvelope, WireError> {
    let from = PeerId(r.array()?);
    let to = PeerId(r.array()?);
    let id = r.array()?;
    let ttl = r.u8()?;
    let code = r.u8()?;
    let seal = DmSeal::from_code(code).ok_or(WireError::UnknownSeal(code))?;
    let len = r.u32()?;
    let body = r.bytes(Field::DmBody, u64::from(len), limits.max_dm_body)?;
    let len = r.u16()?;
    let signature = r.bytes(Field::Signature, u64::from(len), limits.max_signature)?;
    Ok(DmEnvelope {
        from,
        to,
        id,
        ttl,
        seal,
        body,
        signature,
    })
}
