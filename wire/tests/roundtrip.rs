//! Every message of every schema survives encode → frame → read → verify →
//! decode with its fields intact, over in-memory buffers, a real blocking
//! Unix socket pair and the tokio codec (P1, V5).

// Tests may unwrap (STYLE.md); helpers outside #[test] fns need the allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use wire::WireError;
use wire::frame::{
    self, AdminSchema, DEFAULT_MAX_FRAME, ErrorSchema, FrameReader, FrameWriter, HelloSchema,
    RelaySchema, VerifySchema,
};
use wire::generated::error::ErrorCode;
use wire::generated::hello::{Capability, Role};
use wire::generated::{admin, relay, verify};

fn check_hello(p: &[u8]) {
    let h = frame::decode::<HelloSchema>(p).unwrap();
    assert_eq!(h.protocol(), "tern.verify");
    assert_eq!((h.min_version(), h.max_version()), (1, 3));
    assert_eq!(h.role(), Role::Verifyd);
    assert_eq!(h.pid(), 4242);
    assert_eq!(h.instance(), 0xdead_beef);
    assert_eq!(h.capabilities(), Capability::ShmRing | Capability::Batching);
    assert_eq!(h.max_frame_size(), 1 << 20);
    assert_eq!(h.ring_capacity(), 1 << 22);
    assert_eq!(h.software(), Some("verifyd 0.1.0"));
}

fn check_error(p: &[u8]) {
    let e = frame::decode::<ErrorSchema>(p).unwrap();
    assert_eq!(e.code(), ErrorCode::Busy);
    assert_eq!(e.request_id(), 77);
    assert!(!e.fatal());
    assert_eq!(e.message(), Some("try later"));
    // Read as any other schema, it is the peer's error, typed.
    match frame::decode::<VerifySchema>(p) {
        Err(WireError::Remote(r)) => {
            assert_eq!(
                (r.code, r.request_id, r.fatal),
                (ErrorCode::Busy, 77, false)
            );
            assert_eq!(r.message, "try later");
        }
        other => panic!("{other:?}"),
    }
}

fn check_batch(p: &[u8], n: usize) {
    let f = frame::decode::<VerifySchema>(p).unwrap();
    let b = f.msg_as_verify_batch().unwrap();
    assert_eq!(b.request_id(), 2);
    assert_eq!(b.algorithm(), verify::Algorithm::MlDsa65);
    assert_eq!(b.context().unwrap().bytes(), b"tern-gossip");
    assert_eq!(b.items().len(), n);
    for (i, item) in b.items().iter().enumerate() {
        let seed = i as u8;
        if i % 2 == 0 {
            assert_eq!(item.key_id(), 0);
            assert_eq!(item.public_key().unwrap().bytes(), pattern(PK_LEN, seed));
        } else {
            assert_eq!(item.key_id(), 42);
            assert!(item.public_key().is_none());
        }
        assert_eq!(
            item.message().unwrap().bytes(),
            pattern(MSG_LEN, seed ^ 0x55)
        );
        assert_eq!(
            item.signature().unwrap().bytes(),
            pattern(SIG_LEN, seed ^ 0xaa)
        );
    }
}

fn check_verify(name: &str, p: &[u8]) {
    let f = frame::decode::<VerifySchema>(p).unwrap();
    match name {
        "verify/register_key" => {
            let m = f.msg_as_register_key().unwrap();
            assert_eq!(m.request_id(), 1);
            assert_eq!(m.public_key().bytes(), pattern(PK_LEN, 1));
        }
        "verify/key_registered" => {
            let m = f.msg_as_key_registered().unwrap();
            assert_eq!((m.request_id(), m.key_id()), (1, 42));
        }
        "verify/verify_batch_1" => check_batch(p, 1),
        "verify/verify_batch_4" => check_batch(p, 4),
        "verify/verify_result" => {
            let m = f.msg_as_verify_result().unwrap();
            assert_eq!(m.request_id(), 2);
            assert_eq!(m.verdicts().iter().collect::<Vec<_>>(), VERDICTS);
        }
        "verify/busy" => {
            let m = f.msg_as_busy().unwrap();
            assert_eq!(
                (m.request_id(), m.retry_after_us(), m.queued_items()),
                (3, 500, 4096)
            );
        }
        _ => panic!("no check for {name}"),
    }
}

fn check_inbound(m: relay::Inbound<'_>, i: u8) {
    assert_eq!(m.peer().bytes().iter().collect::<Vec<u8>>(), PEER);
    assert_eq!(m.generation(), 5 + u64::from(i));
    assert_eq!(m.kind(), relay::StreamKind::Dm);
    assert_eq!(m.ack_id().unwrap().bytes().iter().collect::<Vec<u8>>(), REQ);
    assert_eq!(m.payload().bytes(), pattern(100 + usize::from(i), i));
    assert_eq!(m.seq(), 1000 + u64::from(i));
    assert_eq!(m.redelivered(), i == 1);
}

fn check_outbound(m: relay::Outbound<'_>, i: u8) {
    assert_eq!(m.peer().bytes().iter().collect::<Vec<u8>>(), PEER);
    assert_eq!(m.kind(), relay::StreamKind::Pubsub);
    assert_eq!(m.generation(), 0);
    assert_eq!(
        m.send_id().unwrap().bytes().iter().collect::<Vec<u8>>(),
        REQ
    );
    assert_eq!(m.budget_ms(), 1500);
    assert_eq!(m.payload().bytes(), pattern(50 + usize::from(i), i));
}

fn check_relay(name: &str, p: &[u8]) {
    let f = frame::decode::<RelaySchema>(p).unwrap();
    match name {
        "relay/inbound" => check_inbound(f.msg_as_inbound().unwrap(), 0),
        "relay/inbound_batch" => {
            let items = f.msg_as_inbound_batch().unwrap().items();
            assert_eq!(items.len(), 3);
            for (i, m) in items.iter().enumerate() {
                check_inbound(m, i as u8);
            }
        }
        "relay/admission" => {
            let m = f.msg_as_admission().unwrap();
            assert_eq!(m.ack_id().bytes().iter().collect::<Vec<u8>>(), REQ);
            assert_eq!(m.outcome(), relay::AdmissionOutcome::Backpressured);
        }
        "relay/outbound" => check_outbound(f.msg_as_outbound().unwrap(), 0),
        "relay/outbound_batch" => {
            let items = f.msg_as_outbound_batch().unwrap().items();
            assert_eq!(items.len(), 3);
            for (i, m) in items.iter().enumerate() {
                check_outbound(m, i as u8);
            }
        }
        "relay/send_result" => {
            let m = f.msg_as_send_result().unwrap();
            assert_eq!(m.send_id().bytes().iter().collect::<Vec<u8>>(), REQ);
            assert_eq!(m.status(), relay::SendStatus::Acked);
            assert_eq!(m.outcome(), relay::AdmissionOutcome::Duplicate);
            assert_eq!(m.generation(), 11);
        }
        "relay/peer_event" => {
            let m = f.msg_as_peer_event().unwrap();
            assert_eq!(m.peer().bytes().iter().collect::<Vec<u8>>(), PEER);
            assert_eq!(m.kind(), relay::PeerEventKind::Closed);
            assert_eq!(m.generation(), 12);
            assert_eq!(m.reason(), relay::CloseReason::Idle);
            assert_eq!(m.remote_addr(), Some("127.0.0.1:4433"));
        }
        "relay/consumed" => {
            let m = f.msg_as_consumed().unwrap();
            assert_eq!(m.seqs().iter().collect::<Vec<u64>>(), [1000, 1002, 7]);
        }
        _ => panic!("no check for {name}"),
    }
}

fn check_admin(name: &str, p: &[u8]) {
    let f = frame::decode::<AdminSchema>(p).unwrap();
    match name {
        "admin/status_request" => assert_eq!(f.msg_as_status_request().unwrap().request_id(), 21),
        "admin/status_response" => {
            let m = f.msg_as_status_response().unwrap();
            assert_eq!(m.request_id(), 21);
            assert_eq!(m.daemon(), "verifyd");
            assert_eq!(m.version(), Some("0.1.0"));
            assert_eq!((m.pid(), m.instance(), m.uptime_ms()), (1234, 99, 60_000));
            assert!(!m.healthy());
            assert_eq!(m.summary(), Some("4 workers, 0 queued"));
        }
        "admin/diag_request" => {
            let m = f.msg_as_diagnostics_request().unwrap();
            assert_eq!((m.request_id(), m.section()), (22, Some("recv_pump")));
        }
        "admin/diag_response" => {
            let m = f.msg_as_diagnostics_response().unwrap();
            assert_eq!((m.request_id(), m.json()), (22, DIAG_JSON));
        }
        "admin/command_request" => {
            let m = f.msg_as_command_request().unwrap();
            assert_eq!(m.request_id(), 23);
            assert_eq!(m.command(), "verify-scale");
            assert_eq!(m.args_json(), Some(r#"{"workers":4}"#));
        }
        "admin/command_response" => {
            let m = f.msg_as_command_response().unwrap();
            assert_eq!(m.request_id(), 23);
            assert_eq!(m.status(), admin::CommandStatus::Unsupported);
            assert_eq!(m.json(), Some(r#"{"error":"no such command"}"#));
        }
        _ => panic!("no check for {name}"),
    }
}

/// The enum view names the same message the sample was built as.
fn check_enum(name: &str, p: &[u8]) {
    use frame::{AdminMsg as A, RelayMsg as R, VerifyMsg as V};
    let got = match name.split('/').next().unwrap() {
        "verify" => match frame::decode_verify(p).unwrap() {
            V::RegisterKey(_) => "register_key",
            V::KeyRegistered(_) => "key_registered",
            V::VerifyBatch(b) => {
                ["verify_batch_1", "verify_batch_4"][usize::from(b.items().len() == 4)]
            }
            V::VerifyResult(_) => "verify_result",
            V::Busy(_) => "busy",
            _ => "new variant",
        },
        "relay" => match frame::decode_relay(p).unwrap() {
            R::Inbound(_) => "inbound",
            R::InboundBatch(_) => "inbound_batch",
            R::Admission(_) => "admission",
            R::Outbound(_) => "outbound",
            R::OutboundBatch(_) => "outbound_batch",
            R::SendResult(_) => "send_result",
            R::PeerEvent(_) => "peer_event",
            R::Consumed(_) => "consumed",
            _ => "new variant",
        },
        "admin" => match frame::decode_admin(p).unwrap() {
            A::StatusRequest(_) => "status_request",
            A::StatusResponse(_) => "status_response",
            A::DiagnosticsRequest(_) => "diag_request",
            A::DiagnosticsResponse(_) => "diag_response",
            A::CommandRequest(_) => "command_request",
            A::CommandResponse(_) => "command_response",
            _ => "new variant",
        },
        _ => return,
    };
    assert_eq!(name.split_once('/').unwrap().1, got);
}

fn check(name: &str, p: &[u8]) {
    check_enum(name, p);
    match name.split('/').next().unwrap() {
        "hello" => check_hello(p),
        "error" => check_error(p),
        "verify" => check_verify(name, p),
        "relay" => check_relay(name, p),
        "admin" => check_admin(name, p),
        "client" => common::client::check(name, p),
        other => panic!("unknown schema {other}"),
    }
}

#[test]
fn every_message_round_trips_through_frames() {
    let samples = all_samples();
    let mut stream = Vec::new();
    let mut w = FrameWriter::new(&mut stream, DEFAULT_MAX_FRAME);
    for (_, bytes) in &samples {
        w.write_frame(bytes).unwrap();
    }
    // Read back with a reader that gets one byte per read() call, the worst
    // case for reassembly.
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }
    for reader_bytes in [
        &mut &stream[..] as &mut dyn std::io::Read,
        &mut Trickle(&stream),
    ] {
        let mut r = FrameReader::new(reader_bytes, DEFAULT_MAX_FRAME);
        for (name, bytes) in &samples {
            let p = r.read_frame().unwrap().unwrap();
            assert_eq!(p, &bytes[..], "{name}");
            check(name, p);
        }
        assert!(r.read_frame().unwrap().is_none(), "clean end of stream");
    }
}

/// A verify batch of 256 ML-DSA-65-sized items (≈1.4 MB) crosses a real
/// socket pair between two threads intact.
#[test]
fn large_batch_over_a_real_socket_pair() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let batch = verify_batch(256);
    let expect = batch.clone();
    let writer = std::thread::spawn(move || {
        let mut w = FrameWriter::new(&a, DEFAULT_MAX_FRAME);
        for _ in 0..3 {
            w.write_frame(&batch).unwrap();
        }
    });
    let mut r = FrameReader::new(&b, DEFAULT_MAX_FRAME);
    for _ in 0..3 {
        let p = r.read_frame().unwrap().unwrap();
        assert_eq!(p, &expect[..]);
        check_batch(p, 256);
    }
    writer.join().unwrap();
    assert!(r.read_frame().unwrap().is_none());
    assert!(r.buffer_capacity() <= expect.len() + 4);
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn every_message_round_trips_through_the_tokio_codec() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;
    use wire::frame::FrameCodec;

    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let samples = all_samples();
    let to_send: Vec<Vec<u8>> = samples.iter().map(|(_, b)| b.clone()).collect();
    let sender = tokio::spawn(async move {
        let mut tx = Framed::new(a, FrameCodec::new(DEFAULT_MAX_FRAME));
        for bytes in &to_send {
            tx.send(&bytes[..]).await.unwrap();
        }
    });
    let mut rx = Framed::new(b, FrameCodec::new(DEFAULT_MAX_FRAME));
    for (name, bytes) in &samples {
        let p = rx.next().await.unwrap().unwrap();
        assert_eq!(&p[..], &bytes[..], "{name}");
        check(name, &p);
    }
    sender.await.unwrap();
    assert!(rx.next().await.is_none());
}
