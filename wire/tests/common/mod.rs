//! Sample messages for the integration tests: one builder per message of
//! every schema, with distinctive field values the round-trip test checks.
//! The fuzz seed corpus is written from these same samples.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod walk;

use flatbuffers::FlatBufferBuilder;
use wire::frame::{self, AdminSchema, RelaySchema, VerifySchema};
use wire::generated::hello::{Capability, Role};
use wire::generated::{admin, error, relay, verify};
use wire::hello::HelloConfig;

/// ML-DSA-65 sizes: one verify item is 1,952 + 3,309 + 256 = 5,517 bytes.
pub const PK_LEN: usize = 1952;
pub const SIG_LEN: usize = 3309;
pub const MSG_LEN: usize = 256;

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

pub const PEER: [u8; 32] = [7; 32];
pub const REQ: [u8; 16] = [9; 16];

pub fn hello() -> Vec<u8> {
    let cfg = HelloConfig::new("tern.verify", Role::Verifyd)
        .versions(1, 3)
        .capabilities(Capability::ShmRing | Capability::Batching)
        .max_frame(1 << 20)
        .ring_capacity(1 << 22)
        .instance(0xdead_beef)
        .software("verifyd 0.1.0");
    // Fixed so the committed fuzz seeds do not depend on the test's pid.
    let cfg = HelloConfig { pid: 4242, ..cfg };
    let mut fbb = FlatBufferBuilder::new();
    cfg.encode(&mut fbb).to_vec()
}

pub fn error_frame() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    frame::encode_error(&mut fbb, error::ErrorCode::Busy, 77, false, "try later").to_vec()
}

/// Wraps the message at `off` in a finished verify frame.
pub fn verify_frame(
    fbb: &mut FlatBufferBuilder<'_>,
    t: verify::VerifyMessage,
    off: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let root = verify::VerifyFrame::create(
        fbb,
        &verify::VerifyFrameArgs {
            msg_type: t,
            msg: Some(off),
        },
    );
    frame::finish::<VerifySchema>(fbb, root);
    fbb.finished_data().to_vec()
}

pub fn register_key() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let pk = fbb.create_vector(&pattern(PK_LEN, 1));
    let m = verify::RegisterKey::create(
        &mut fbb,
        &verify::RegisterKeyArgs {
            request_id: 1,
            algorithm: verify::Algorithm::MlDsa65,
            public_key: Some(pk),
        },
    );
    verify_frame(
        &mut fbb,
        verify::VerifyMessage::RegisterKey,
        m.as_union_value(),
    )
}

pub fn key_registered() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = verify::KeyRegistered::create(
        &mut fbb,
        &verify::KeyRegisteredArgs {
            request_id: 1,
            key_id: 42,
        },
    );
    verify_frame(
        &mut fbb,
        verify::VerifyMessage::KeyRegistered,
        m.as_union_value(),
    )
}

/// A batch of `n` items: even items carry the key inline, odd ones by id.
pub fn verify_batch(n: usize) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(n * 5600 + 1024);
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let seed = i as u8;
        let public_key = (i % 2 == 0).then(|| fbb.create_vector(&pattern(PK_LEN, seed)));
        let message = fbb.create_vector(&pattern(MSG_LEN, seed ^ 0x55));
        let signature = fbb.create_vector(&pattern(SIG_LEN, seed ^ 0xaa));
        items.push(verify::VerifyItem::create(
            &mut fbb,
            &verify::VerifyItemArgs {
                key_id: if i % 2 == 0 { 0 } else { 42 },
                public_key,
                message: Some(message),
                signature: Some(signature),
            },
        ));
    }
    let items = fbb.create_vector(&items);
    let context = fbb.create_vector(b"tern-gossip");
    let m = verify::VerifyBatch::create(
        &mut fbb,
        &verify::VerifyBatchArgs {
            request_id: 2,
            algorithm: verify::Algorithm::MlDsa65,
            context: Some(context),
            items: Some(items),
        },
    );
    verify_frame(
        &mut fbb,
        verify::VerifyMessage::VerifyBatch,
        m.as_union_value(),
    )
}

pub const VERDICTS: [verify::Verdict; 4] = [
    verify::Verdict::Valid,
    verify::Verdict::Invalid,
    verify::Verdict::Malformed,
    verify::Verdict::UnknownKey,
];

pub fn verify_result() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let v = fbb.create_vector(&VERDICTS);
    let m = verify::VerifyResult::create(
        &mut fbb,
        &verify::VerifyResultArgs {
            request_id: 2,
            verdicts: Some(v),
        },
    );
    verify_frame(
        &mut fbb,
        verify::VerifyMessage::VerifyResult,
        m.as_union_value(),
    )
}

pub fn busy() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = verify::Busy::create(
        &mut fbb,
        &verify::BusyArgs {
            request_id: 3,
            retry_after_us: 500,
            queued_items: 4096,
        },
    );
    verify_frame(&mut fbb, verify::VerifyMessage::Busy, m.as_union_value())
}

fn relay_frame(
    fbb: &mut FlatBufferBuilder<'_>,
    t: relay::RelayMessage,
    off: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let root = relay::RelayFrame::create(
        fbb,
        &relay::RelayFrameArgs {
            msg_type: t,
            msg: Some(off),
        },
    );
    frame::finish::<RelaySchema>(fbb, root);
    fbb.finished_data().to_vec()
}

fn inbound<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    i: u8,
) -> flatbuffers::WIPOffset<relay::Inbound<'a>> {
    let payload = fbb.create_vector(&pattern(100 + usize::from(i), i));
    relay::Inbound::create(
        fbb,
        &relay::InboundArgs {
            peer: Some(&relay::PeerId::new(&PEER)),
            generation: 5 + u64::from(i),
            kind: relay::StreamKind::Dm,
            ack_id: Some(&relay::RequestId::new(&REQ)),
            payload: Some(payload),
            seq: 1000 + u64::from(i),
            redelivered: i == 1,
        },
    )
}

fn outbound<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    i: u8,
) -> flatbuffers::WIPOffset<relay::Outbound<'a>> {
    let payload = fbb.create_vector(&pattern(50 + usize::from(i), i));
    relay::Outbound::create(
        fbb,
        &relay::OutboundArgs {
            peer: Some(&relay::PeerId::new(&PEER)),
            kind: relay::StreamKind::Pubsub,
            generation: 0,
            send_id: Some(&relay::RequestId::new(&REQ)),
            budget_ms: 1500,
            payload: Some(payload),
        },
    )
}

pub fn relay_inbound() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = inbound(&mut fbb, 0);
    relay_frame(&mut fbb, relay::RelayMessage::Inbound, m.as_union_value())
}

pub fn relay_inbound_batch() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let items: Vec<_> = (0..3).map(|i| inbound(&mut fbb, i)).collect();
    let items = fbb.create_vector(&items);
    let m = relay::InboundBatch::create(&mut fbb, &relay::InboundBatchArgs { items: Some(items) });
    relay_frame(
        &mut fbb,
        relay::RelayMessage::InboundBatch,
        m.as_union_value(),
    )
}

pub fn relay_admission() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = relay::Admission::create(
        &mut fbb,
        &relay::AdmissionArgs {
            ack_id: Some(&relay::RequestId::new(&REQ)),
            outcome: relay::AdmissionOutcome::Backpressured,
        },
    );
    relay_frame(&mut fbb, relay::RelayMessage::Admission, m.as_union_value())
}

pub fn relay_outbound() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = outbound(&mut fbb, 0);
    relay_frame(&mut fbb, relay::RelayMessage::Outbound, m.as_union_value())
}

pub fn relay_outbound_batch() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let items: Vec<_> = (0..3).map(|i| outbound(&mut fbb, i)).collect();
    let items = fbb.create_vector(&items);
    let m =
        relay::OutboundBatch::create(&mut fbb, &relay::OutboundBatchArgs { items: Some(items) });
    relay_frame(
        &mut fbb,
        relay::RelayMessage::OutboundBatch,
        m.as_union_value(),
    )
}

pub fn relay_send_result() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = relay::SendResult::create(
        &mut fbb,
        &relay::SendResultArgs {
            send_id: Some(&relay::RequestId::new(&REQ)),
            status: relay::SendStatus::Acked,
            outcome: relay::AdmissionOutcome::Duplicate,
            generation: 11,
        },
    );
    relay_frame(
        &mut fbb,
        relay::RelayMessage::SendResult,
        m.as_union_value(),
    )
}

pub fn relay_peer_event() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let addr = fbb.create_string("127.0.0.1:4433");
    let m = relay::PeerEvent::create(
        &mut fbb,
        &relay::PeerEventArgs {
            peer: Some(&relay::PeerId::new(&PEER)),
            kind: relay::PeerEventKind::Closed,
            generation: 12,
            reason: relay::CloseReason::Idle,
            remote_addr: Some(addr),
        },
    );
    relay_frame(&mut fbb, relay::RelayMessage::PeerEvent, m.as_union_value())
}

pub fn relay_consumed() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let seqs = fbb.create_vector(&[1000u64, 1002, 7]);
    let m = relay::Consumed::create(&mut fbb, &relay::ConsumedArgs { seqs: Some(seqs) });
    relay_frame(&mut fbb, relay::RelayMessage::Consumed, m.as_union_value())
}

fn admin_frame(
    fbb: &mut FlatBufferBuilder<'_>,
    t: admin::AdminMessage,
    off: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let root = admin::AdminFrame::create(
        fbb,
        &admin::AdminFrameArgs {
            msg_type: t,
            msg: Some(off),
        },
    );
    frame::finish::<AdminSchema>(fbb, root);
    fbb.finished_data().to_vec()
}

pub fn admin_status_request() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let m = admin::StatusRequest::create(&mut fbb, &admin::StatusRequestArgs { request_id: 21 });
    admin_frame(
        &mut fbb,
        admin::AdminMessage::StatusRequest,
        m.as_union_value(),
    )
}

pub fn admin_status_response() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let daemon = fbb.create_string("verifyd");
    let version = fbb.create_string("0.1.0");
    let summary = fbb.create_string("4 workers, 0 queued");
    let m = admin::StatusResponse::create(
        &mut fbb,
        &admin::StatusResponseArgs {
            request_id: 21,
            daemon: Some(daemon),
            version: Some(version),
            pid: 1234,
            instance: 99,
            uptime_ms: 60_000,
            healthy: false,
            summary: Some(summary),
        },
    );
    admin_frame(
        &mut fbb,
        admin::AdminMessage::StatusResponse,
        m.as_union_value(),
    )
}

pub fn admin_diag_request() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let section = fbb.create_string("recv_pump");
    let m = admin::DiagnosticsRequest::create(
        &mut fbb,
        &admin::DiagnosticsRequestArgs {
            request_id: 22,
            section: Some(section),
        },
    );
    admin_frame(
        &mut fbb,
        admin::AdminMessage::DiagnosticsRequest,
        m.as_union_value(),
    )
}

pub const DIAG_JSON: &str = r#"{"recv_pump":{"dropped":3}}"#;

pub fn admin_diag_response() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let json = fbb.create_string(DIAG_JSON);
    let m = admin::DiagnosticsResponse::create(
        &mut fbb,
        &admin::DiagnosticsResponseArgs {
            request_id: 22,
            json: Some(json),
        },
    );
    admin_frame(
        &mut fbb,
        admin::AdminMessage::DiagnosticsResponse,
        m.as_union_value(),
    )
}

pub fn admin_command_request() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let command = fbb.create_string("verify-scale");
    let args = fbb.create_string(r#"{"workers":4}"#);
    let m = admin::CommandRequest::create(
        &mut fbb,
        &admin::CommandRequestArgs {
            request_id: 23,
            command: Some(command),
            args_json: Some(args),
        },
    );
    admin_frame(
        &mut fbb,
        admin::AdminMessage::CommandRequest,
        m.as_union_value(),
    )
}

pub fn admin_command_response() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let json = fbb.create_string(r#"{"error":"no such command"}"#);
    let m = admin::CommandResponse::create(
        &mut fbb,
        &admin::CommandResponseArgs {
            request_id: 23,
            status: admin::CommandStatus::Unsupported,
            json: Some(json),
        },
    );
    admin_frame(
        &mut fbb,
        admin::AdminMessage::CommandResponse,
        m.as_union_value(),
    )
}

/// Every sample, named `<schema>/<message>` (the schema part names the fuzz
/// target whose corpus gets it).
pub fn all_samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("hello/hello", hello()),
        ("error/error", error_frame()),
        ("verify/register_key", register_key()),
        ("verify/key_registered", key_registered()),
        ("verify/verify_batch_1", verify_batch(1)),
        ("verify/verify_batch_4", verify_batch(4)),
        ("verify/verify_result", verify_result()),
        ("verify/busy", busy()),
        ("relay/inbound", relay_inbound()),
        ("relay/inbound_batch", relay_inbound_batch()),
        ("relay/admission", relay_admission()),
        ("relay/outbound", relay_outbound()),
        ("relay/outbound_batch", relay_outbound_batch()),
        ("relay/send_result", relay_send_result()),
        ("relay/peer_event", relay_peer_event()),
        ("relay/consumed", relay_consumed()),
        ("admin/status_request", admin_status_request()),
        ("admin/status_response", admin_status_response()),
        ("admin/diag_request", admin_diag_request()),
        ("admin/diag_response", admin_diag_response()),
        ("admin/command_request", admin_command_request()),
        ("admin/command_response", admin_command_response()),
    ]
    .into_iter()
    .chain(client::samples())
    .collect()
}
