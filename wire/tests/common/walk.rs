//! Touches every field of a verified frame, so tests and fuzz targets prove
//! that whatever the verifier accepts can be read without a panic. Returns a
//! checksum of the contents so the reads are not optimised away.

use wire::frame::{
    self, AdminSchema, ClientSchema, ErrorSchema, HelloSchema, RelaySchema, VerifySchema,
};
use wire::generated::{admin, client, relay, verify};

#[derive(Default)]
struct Acc(u64);

impl Acc {
    fn n(&mut self, v: impl Into<u64>) {
        self.0 = self.0.rotate_left(5).wrapping_add(v.into());
    }
    fn bytes(&mut self, v: Option<flatbuffers::Vector<'_, u8>>) {
        if let Some(v) = v {
            self.n(v.len() as u64);
            for &b in v.bytes() {
                self.n(b);
            }
        }
    }
    fn arr<const N: usize>(&mut self, a: flatbuffers::Array<'_, u8, N>) {
        for b in a.iter() {
            self.n(b);
        }
    }
    fn text(&mut self, s: Option<&str>) {
        if let Some(s) = s {
            self.n(s.len() as u64);
        }
    }
}

pub fn hello(p: &[u8]) -> Option<u64> {
    let h = frame::decode::<HelloSchema>(p).ok()?;
    let mut a = Acc::default();
    a.text(Some(h.protocol()));
    a.n(h.min_version());
    a.n(h.max_version());
    a.n(h.role().0);
    a.n(h.pid());
    a.n(h.instance());
    a.n(h.capabilities().bits());
    a.n(h.max_frame_size());
    a.n(h.ring_capacity());
    a.text(h.software());
    Some(a.0)
}

pub fn error(p: &[u8]) -> Option<u64> {
    let e = frame::decode::<ErrorSchema>(p).ok()?;
    let mut a = Acc::default();
    a.n(e.code().0);
    a.n(e.request_id());
    a.n(e.fatal());
    a.text(e.message());
    Some(a.0)
}

pub fn verify(p: &[u8]) -> Option<u64> {
    let f = frame::decode::<VerifySchema>(p).ok()?;
    let mut a = Acc::default();
    a.n(f.msg_type().0);
    match f.msg_type() {
        verify::VerifyMessage::RegisterKey => {
            let m = f.msg_as_register_key()?;
            a.n(m.request_id());
            a.n(m.algorithm().0);
            a.bytes(Some(m.public_key()));
        }
        verify::VerifyMessage::KeyRegistered => {
            let m = f.msg_as_key_registered()?;
            a.n(m.request_id());
            a.n(m.key_id());
        }
        verify::VerifyMessage::VerifyBatch => {
            let m = f.msg_as_verify_batch()?;
            a.n(m.request_id());
            a.n(m.algorithm().0);
            a.bytes(m.context());
            for item in m.items() {
                a.n(item.key_id());
                a.bytes(item.public_key());
                a.bytes(item.message());
                a.bytes(item.signature());
            }
        }
        verify::VerifyMessage::VerifyResult => {
            let m = f.msg_as_verify_result()?;
            a.n(m.request_id());
            for v in m.verdicts() {
                a.n(v.0);
            }
        }
        verify::VerifyMessage::Busy => {
            let m = f.msg_as_busy()?;
            a.n(m.request_id());
            a.n(m.retry_after_us());
            a.n(m.queued_items());
        }
        _ => {}
    }
    Some(a.0)
}

fn inbound(a: &mut Acc, m: relay::Inbound<'_>) {
    a.arr(m.peer().bytes());
    a.n(m.generation());
    a.n(m.kind().0);
    if let Some(id) = m.ack_id() {
        a.arr(id.bytes());
    }
    a.bytes(Some(m.payload()));
    a.n(m.seq());
    a.n(m.redelivered());
}

fn outbound(a: &mut Acc, m: relay::Outbound<'_>) {
    a.arr(m.peer().bytes());
    a.n(m.kind().0);
    a.n(m.generation());
    if let Some(id) = m.send_id() {
        a.arr(id.bytes());
    }
    a.n(m.budget_ms());
    a.bytes(Some(m.payload()));
}

pub fn relay(p: &[u8]) -> Option<u64> {
    let f = frame::decode::<RelaySchema>(p).ok()?;
    let mut a = Acc::default();
    a.n(f.msg_type().0);
    match f.msg_type() {
        relay::RelayMessage::Inbound => inbound(&mut a, f.msg_as_inbound()?),
        relay::RelayMessage::InboundBatch => {
            for m in f.msg_as_inbound_batch()?.items() {
                inbound(&mut a, m);
            }
        }
        relay::RelayMessage::Admission => {
            let m = f.msg_as_admission()?;
            a.arr(m.ack_id().bytes());
            a.n(m.outcome().0);
        }
        relay::RelayMessage::Outbound => outbound(&mut a, f.msg_as_outbound()?),
        relay::RelayMessage::OutboundBatch => {
            for m in f.msg_as_outbound_batch()?.items() {
                outbound(&mut a, m);
            }
        }
        relay::RelayMessage::SendResult => {
            let m = f.msg_as_send_result()?;
            a.arr(m.send_id().bytes());
            a.n(m.status().0);
            a.n(m.outcome().0);
            a.n(m.generation());
        }
        relay::RelayMessage::PeerEvent => {
            let m = f.msg_as_peer_event()?;
            a.arr(m.peer().bytes());
            a.n(m.kind().0);
            a.n(m.generation());
            a.n(m.reason().0);
            a.text(m.remote_addr());
        }
        relay::RelayMessage::Consumed => {
            for s in f.msg_as_consumed()?.seqs() {
                a.n(s);
            }
        }
        _ => {}
    }
    Some(a.0)
}

pub fn admin(p: &[u8]) -> Option<u64> {
    let f = frame::decode::<AdminSchema>(p).ok()?;
    let mut a = Acc::default();
    a.n(f.msg_type().0);
    match f.msg_type() {
        admin::AdminMessage::StatusRequest => a.n(f.msg_as_status_request()?.request_id()),
        admin::AdminMessage::StatusResponse => {
            let m = f.msg_as_status_response()?;
            a.n(m.request_id());
            a.text(Some(m.daemon()));
            a.text(m.version());
            a.n(m.pid());
            a.n(m.instance());
            a.n(m.uptime_ms());
            a.n(m.healthy());
            a.text(m.summary());
        }
        admin::AdminMessage::DiagnosticsRequest => {
            let m = f.msg_as_diagnostics_request()?;
            a.n(m.request_id());
            a.text(m.section());
        }
        admin::AdminMessage::DiagnosticsResponse => {
            let m = f.msg_as_diagnostics_response()?;
            a.n(m.request_id());
            a.text(Some(m.json()));
        }
        admin::AdminMessage::CommandRequest => {
            let m = f.msg_as_command_request()?;
            a.n(m.request_id());
            a.text(Some(m.command()));
            a.text(m.args_json());
        }
        admin::AdminMessage::CommandResponse => {
            let m = f.msg_as_command_response()?;
            a.n(m.request_id());
            a.n(m.status().0);
            a.text(m.json());
        }
        _ => {}
    }
    Some(a.0)
}

pub fn client(p: &[u8]) -> Option<u64> {
    use client::ClientMessage as M;
    let f = frame::decode::<ClientSchema>(p).ok()?;
    let mut a = Acc::default();
    a.n(f.msg_type().0);
    match f.msg_type() {
        M::Join => {
            let m = f.msg_as_join()?;
            a.n(m.request_id());
            a.text(Some(m.topic()));
        }
        M::Leave => {
            let m = f.msg_as_leave()?;
            a.n(m.request_id());
            a.text(Some(m.topic()));
        }
        M::Publish => {
            let m = f.msg_as_publish()?;
            a.n(m.request_id());
            a.arr(m.client_id().bytes());
            a.text(Some(m.topic()));
            a.bytes(Some(m.payload()));
        }
        M::Subscribe => {
            let m = f.msg_as_subscribe()?;
            a.n(m.request_id());
            a.text(Some(m.topic()));
        }
        M::Unsubscribe => {
            let m = f.msg_as_unsubscribe()?;
            a.n(m.request_id());
            a.n(m.subscription());
        }
        M::SendDm => {
            let m = f.msg_as_send_dm()?;
            a.n(m.request_id());
            a.arr(m.client_id().bytes());
            a.arr(m.peer().bytes());
            a.bytes(Some(m.payload()));
            a.n(m.budget_ms());
        }
        M::SubscribeDms => a.n(f.msg_as_subscribe_dms()?.request_id()),
        M::AckDms => {
            let m = f.msg_as_ack_dms()?;
            a.n(m.request_id());
            for id in m.ids() {
                a.arr(id.bytes());
            }
        }
        M::GetPeers => {
            let m = f.msg_as_get_peers()?;
            a.n(m.request_id());
            a.text(m.topic());
        }
        M::GetStatus => a.n(f.msg_as_get_status()?.request_id()),
        M::Response => {
            let m = f.msg_as_response()?;
            a.n(m.request_id());
            a.n(m.status().0);
            a.text(m.message());
        }
        M::Published => {
            let m = f.msg_as_published()?;
            a.n(m.request_id());
            a.n(m.status().0);
            a.text(m.message());
            if let Some(id) = m.message_id() {
                a.arr(id.bytes());
            }
            a.n(m.seqno());
            a.n(m.replayed());
        }
        M::DmReceipt => {
            let m = f.msg_as_dm_receipt()?;
            a.n(m.request_id());
            a.n(m.status().0);
            a.text(m.message());
            if let Some(id) = m.dm_id() {
                a.arr(id.bytes());
            }
            a.n(m.path().0);
            for t in m.attempts().into_iter().flatten() {
                a.n(t.path().0);
                a.n(t.outcome().0);
                a.n(t.elapsed_us());
            }
            a.n(m.replayed());
        }
        M::Delivery => {
            let m = f.msg_as_delivery()?;
            a.n(m.subscription());
            a.text(Some(m.topic()));
            a.arr(m.origin().bytes());
            a.arr(m.message_id().bytes());
            a.n(m.seqno());
            a.bytes(Some(m.payload()));
            a.n(m.dropped_before());
        }
        M::IncomingDm => {
            let m = f.msg_as_incoming_dm()?;
            a.n(m.subscription());
            a.arr(m.dm_id().bytes());
            a.arr(m.from().bytes());
            a.n(m.path().0);
            a.bytes(Some(m.payload()));
            a.n(m.redelivered());
        }
        M::PeersResponse => {
            let m = f.msg_as_peers_response()?;
            a.n(m.request_id());
            a.n(m.status().0);
            a.text(m.message());
            a.text(m.topic());
            for p in m.peers().into_iter().flatten() {
                a.arr(p.peer().bytes());
                a.n(p.eager());
                a.text(p.addr());
                a.n(p.rtt_us());
            }
        }
        M::NodeStatus => {
            let m = f.msg_as_node_status()?;
            a.n(m.request_id());
            a.n(m.status().0);
            a.text(m.message());
            if let Some(id) = m.node() {
                a.arr(id.bytes());
            }
            a.text(m.version());
            for t in m.topics().into_iter().flatten() {
                a.text(Some(t));
            }
            a.n(m.connected_peers());
            a.n(m.transport_up());
            a.n(m.uptime_ms());
        }
        M::StreamEnded => {
            let m = f.msg_as_stream_ended()?;
            a.n(m.subscription());
            a.n(m.status().0);
            a.text(m.message());
        }
        _ => {}
    }
    Some(a.0)
}

/// Decodes `p` as every schema and walks whatever verifies.
pub fn all(p: &[u8]) -> u64 {
    [hello(p), error(p), verify(p), relay(p), admin(p), client(p)]
        .into_iter()
        .map(|x| x.unwrap_or(0))
        .fold(0, u64::wrapping_add)
}
