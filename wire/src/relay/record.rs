//! Owned relay records and their encoding: what relayd keeps for a
//! retained DM and pushes into the inbound ring, and the `Consumed` frame
//! gossipd answers with.

use flatbuffers::FlatBufferBuilder;

use crate::frame::{self, RelaySchema};
use crate::generated::relay::{self as fb, StreamKind};

/// Largest number of sequence numbers one `Consumed` frame carries; more
/// go in several frames. 4,096 × 8 bytes keeps a frame near 32 KiB.
pub const MAX_CONSUMED_PER_FRAME: usize = 4096;

/// One inbound record, owned (what relayd retains and re-sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// The sending peer.
    pub peer: [u8; 32],
    /// The connection generation it arrived on.
    pub generation: u64,
    /// Its stream kind.
    pub kind: StreamKind,
    /// The sender's receive-ACK id, if it asked for one.
    pub ack_id: Option<[u8; 16]>,
    /// relayd's delivery sequence number; 0 = not retained.
    pub seq: u64,
    /// Sent before to a gossipd that did not confirm it.
    pub redelivered: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

impl InboundRecord {
    /// Bytes this record occupies while retained (payload plus a fixed
    /// allowance for the fields and bookkeeping).
    #[must_use]
    pub fn retained_size(&self) -> usize {
        self.payload.len() + 128
    }

    /// Copies a decoded `Inbound` table into an owned record.
    #[must_use]
    pub fn from_table(m: &fb::Inbound<'_>) -> Self {
        Self {
            peer: copy(m.peer().bytes().iter()),
            generation: m.generation(),
            kind: m.kind(),
            ack_id: m.ack_id().map(|id| copy(id.bytes().iter())),
            seq: m.seq(),
            redelivered: m.redelivered(),
            payload: m.payload().bytes().to_vec(),
        }
    }

    /// Encodes this record as a `RelayFrame` (a ring record or socket
    /// frame payload) into `fbb`, reset first.
    pub fn encode<'b>(&self, fbb: &'b mut FlatBufferBuilder<'_>) -> &'b [u8] {
        fbb.reset();
        let payload = fbb.create_vector(&self.payload);
        let ack = self.ack_id.map(|id| fb::RequestId::new(&id));
        let m = fb::Inbound::create(
            fbb,
            &fb::InboundArgs {
                peer: Some(&fb::PeerId::new(&self.peer)),
                generation: self.generation,
                kind: self.kind,
                ack_id: ack.as_ref(),
                payload: Some(payload),
                seq: self.seq,
                redelivered: self.redelivered,
            },
        );
        finish(fbb, fb::RelayMessage::Inbound, m.as_union_value())
    }
}

/// One send gossipd asks relayd for (an `Outbound` record), borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundSend<'a> {
    /// The destination peer.
    pub peer: [u8; 32],
    /// Its stream kind.
    pub kind: StreamKind,
    /// Only on this connection generation; 0 = any.
    pub generation: u64,
    /// Present to ask for a receive-ACK (relayd answers a `SendResult`).
    pub send_id: Option<[u8; 16]>,
    /// Budget of the whole send in ms; 0 = relayd's default.
    pub budget_ms: u32,
    /// The payload.
    pub payload: &'a [u8],
}

impl OutboundSend<'_> {
    /// Encodes this send as a `RelayFrame` (an outbound ring record) into
    /// `fbb`, reset first.
    pub fn encode<'b>(&self, fbb: &'b mut FlatBufferBuilder<'_>) -> &'b [u8] {
        fbb.reset();
        let payload = fbb.create_vector(self.payload);
        let id = self.send_id.map(|id| fb::RequestId::new(&id));
        let m = fb::Outbound::create(
            fbb,
            &fb::OutboundArgs {
                peer: Some(&fb::PeerId::new(&self.peer)),
                kind: self.kind,
                generation: self.generation,
                send_id: id.as_ref(),
                budget_ms: self.budget_ms,
                payload: Some(payload),
            },
        );
        finish(fbb, fb::RelayMessage::Outbound, m.as_union_value())
    }
}

/// Copies a generated fixed-size byte array (which has no `copy_to`).
fn copy<const N: usize>(bytes: impl Iterator<Item = u8>) -> [u8; N] {
    let mut a = [0u8; N];
    for (slot, b) in a.iter_mut().zip(bytes) {
        *slot = b;
    }
    a
}

fn finish<'b>(
    fbb: &'b mut FlatBufferBuilder<'_>,
    t: fb::RelayMessage,
    off: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> &'b [u8] {
    let root = fb::RelayFrame::create(
        fbb,
        &fb::RelayFrameArgs {
            msg_type: t,
            msg: Some(off),
        },
    );
    frame::finish::<RelaySchema>(fbb, root);
    fbb.finished_data()
}

/// Encodes a `Consumed` frame carrying the first (at most
/// [`MAX_CONSUMED_PER_FRAME`]) of `seqs` into `fbb`, reset first, and says
/// how many it took; send the rest in further frames.
pub fn encode_consumed<'b>(fbb: &'b mut FlatBufferBuilder<'_>, seqs: &[u64]) -> (&'b [u8], usize) {
    let taken = seqs.len().min(MAX_CONSUMED_PER_FRAME);
    fbb.reset();
    let v = fbb.create_vector(&seqs[..taken]);
    let m = fb::Consumed::create(fbb, &fb::ConsumedArgs { seqs: Some(v) });
    (
        finish(fbb, fb::RelayMessage::Consumed, m.as_union_value()),
        taken,
    )
}
