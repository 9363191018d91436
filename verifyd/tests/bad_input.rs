//! Hostile and malformed input over a real Unix socket.
//!
//! Proves V5: malformed frames, wrong key or signature length, garbage key
//! bytes, empty message, a message at the maximum frame size, a frame over
//! it and a batch over the item limit each get a typed per-item or
//! per-request answer; the daemon does not panic and another client keeps
//! being served throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;

use flatbuffers::FlatBufferBuilder;
use std::io::Write as _;
use verifyd::client::{Pool, PoolConfig};
use verifyd::proto::{self, ItemRef, MAX_BATCH_ITEMS, Response};

use verifyd::session::{Established, HelloParams};
use verifyd::{PUBLIC_KEY_LEN, SIGNATURE_LEN, Verdict};
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;

const MAX_FRAME: usize = 1 << 20;

struct Raw {
    e: Established,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        let p = HelloParams {
            protocol: proto::PROTOCOL,
            role: Role::Client,
            instance: 9,
            max_frame: MAX_FRAME,
            ring_capacity: 0,
        };
        Raw {
            e: Established::handshake(s, &p).unwrap(),
        }
    }
    fn send(&mut self, frame: &[u8]) {
        self.e.send(frame).unwrap();
    }
    /// Bytes straight onto the socket, bypassing the codec's own checks.
    fn send_raw(&mut self, len: u32, body: &[u8]) -> std::io::Result<()> {
        let s = self.e.writer.get_mut();
        s.write_all(&len.to_le_bytes())?;
        s.write_all(body)
    }
    fn recv(&mut self) -> Response {
        let buf = self.e.recv().unwrap().expect("a frame");
        proto::decode_response(&buf).unwrap()
    }
    fn register(&mut self, key: &[u8]) -> Response {
        let mut fbb = FlatBufferBuilder::new();
        let f = proto::encode_register_key(&mut fbb, 1, key).to_vec();
        self.send(&f);
        self.recv()
    }
    fn verify(&mut self, rid: u64, items: &[ItemRef<'_>]) -> Response {
        let mut fbb = FlatBufferBuilder::new();
        let f = proto::encode_verify_batch(&mut fbb, rid, &[], items).to_vec();
        self.send(&f);
        self.recv()
    }
}

fn error_code(r: &Response) -> Option<(u64, u16, bool)> {
    match r {
        Response::Error {
            request_id,
            code,
            fatal,
            ..
        } => Some((*request_id, *code, *fatal)),
        _ => None,
    }
}

#[test]
fn bad_input_gets_typed_answers_and_others_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |mut c| {
        c.max_frame = MAX_FRAME;
        c
    });
    let corpus = common::corpus(40);
    let (good_items, truth) = common::items(&corpus);

    // A well-behaved client keeps verifying in the background.
    let good_path = path.clone();
    let bg = std::thread::spawn(move || {
        let pool = Pool::connect(vec![good_path], PoolConfig::default()).unwrap();
        for _ in 0..20 {
            assert_eq!(pool.verify(good_items.clone()).unwrap(), truth);
        }
    });

    let key = &corpus.keys[0];
    let signer =
        verifyd::fixtures::Signer::from_seed(verifyd::BackendKind::AwsLc, [1; 32]).unwrap();
    let mut raw = Raw::connect(&path);

    // Malformed frames: garbage, truncated, the wrong schema. Connection stays.
    for junk in [&b"\x00\x01\x02"[..], &[0xFF; 64], b"xxxxTVFYgarbage"] {
        raw.send(junk);
        let (rid, code, fatal) = error_code(&raw.recv()).expect("error frame");
        assert_eq!((rid, code, fatal), (0, ErrorCode::Malformed.0, false));
    }
    // A result frame is not a request.
    let mut fbb = FlatBufferBuilder::new();
    raw.send(&proto::encode_verify_result(&mut fbb, 3, &[Verdict::Valid]));
    assert_eq!(
        error_code(&raw.recv()).unwrap().1,
        ErrorCode::UnexpectedMessage.0
    );

    // Wrong key length at registration: typed per-request error.
    let r = raw.register(&key[..100]);
    assert_eq!(error_code(&r).unwrap().1, ErrorCode::Malformed.0);
    // Garbage key bytes of the right length register (every bit pattern is a
    // valid encoding) and simply never verify.
    let Response::KeyRegistered {
        key_id: garbage_id, ..
    } = raw.register(&[0xA5; PUBLIC_KEY_LEN])
    else {
        panic!()
    };
    let Response::KeyRegistered { key_id, .. } = raw.register(signer.public_key()) else {
        panic!()
    };

    let empty_sig = signer.sign(b"").unwrap();
    let msg_sig = signer.sign(b"m").unwrap();
    let items = [
        // Empty message, valid signature.
        ItemRef {
            key_id,
            inline_key: None,
            msg: b"",
            sig: &empty_sig,
        },
        // Empty message, signature of another message.
        ItemRef {
            key_id,
            inline_key: None,
            msg: b"",
            sig: &msg_sig,
        },
        // Wrong signature lengths.
        ItemRef {
            key_id,
            inline_key: None,
            msg: b"m",
            sig: &msg_sig[..SIGNATURE_LEN - 1],
        },
        ItemRef {
            key_id,
            inline_key: None,
            msg: b"m",
            sig: b"",
        },
        // Garbage key.
        ItemRef {
            key_id: garbage_id,
            inline_key: None,
            msg: b"m",
            sig: &msg_sig,
        },
        // Unknown id, and no key at all.
        ItemRef {
            key_id: 12345,
            inline_key: None,
            msg: b"m",
            sig: &msg_sig,
        },
        ItemRef {
            key_id: 0,
            inline_key: None,
            msg: b"m",
            sig: &msg_sig,
        },
        // Inline key of the wrong length; inline good key.
        ItemRef {
            key_id: 0,
            inline_key: Some(&key[..10]),
            msg: b"m",
            sig: &msg_sig,
        },
        ItemRef {
            key_id: 0,
            inline_key: Some(signer.public_key()),
            msg: b"m",
            sig: &msg_sig,
        },
    ];
    use Verdict::*;
    assert_eq!(
        raw.verify(10, &items),
        Response::VerifyResult {
            request_id: 10,
            verdicts: vec![
                Valid, Invalid, Malformed, Malformed, Invalid, UnknownKey, Malformed, Malformed,
                Valid
            ]
        }
    );
    // Empty batch.
    assert_eq!(
        raw.verify(11, &[]),
        Response::VerifyResult {
            request_id: 11,
            verdicts: vec![]
        }
    );

    // A batch over the item limit: refused as a whole, naming the request.
    let many = vec![
        ItemRef {
            key_id,
            inline_key: None,
            msg: b"",
            sig: b""
        };
        MAX_BATCH_ITEMS + 1
    ];
    assert_eq!(
        error_code(&raw.verify(12, &many)).unwrap(),
        (12, ErrorCode::Malformed.0, false)
    );

    // A message that makes the frame exactly the maximum size is served.
    let mut len = MAX_FRAME - 8 * 1024;
    let big_frame = loop {
        let msg = vec![7u8; len];
        let item = [ItemRef {
            key_id,
            inline_key: None,
            msg: &msg,
            sig: &msg_sig,
        }];
        let f = proto::encode_verify_batch(&mut fbb, 13, &[], &item).to_vec();
        if f.len() == MAX_FRAME {
            break f;
        }
        len = len + MAX_FRAME - f.len();
    };
    raw.send(&big_frame);
    assert_eq!(
        raw.recv(),
        Response::VerifyResult {
            request_id: 13,
            verdicts: vec![Invalid]
        }
    );

    // One byte over: a fatal typed error, then the daemon closes this connection.
    let mut over = big_frame.clone();
    over.push(0);
    // The daemon may close before we finish writing; that is fine.
    let _ = raw.send_raw(over.len() as u32, &over);
    assert_eq!(
        error_code(&raw.recv()).unwrap(),
        (0, ErrorCode::FrameTooLarge.0, true)
    );
    assert!(!matches!(raw.e.recv(), Ok(Some(_))), "connection closed");

    // A zero-length frame cannot be a flatbuffer, and its prefix leaves the
    // stream unsynchronised: a fatal typed error too.
    let mut zero = Raw::connect(&path);
    zero.send_raw(0, &[]).unwrap();
    assert_eq!(
        error_code(&zero.recv()).unwrap(),
        (0, ErrorCode::Malformed.0, true)
    );

    bg.join().unwrap();
    // The daemon is still serving new clients.
    let mut again = Raw::connect(&path);
    assert!(matches!(
        again.register(signer.public_key()),
        Response::KeyRegistered { .. }
    ));
    let snap = h.snapshot();
    assert!(snap.request_errors >= 6, "{}", snap.request_errors);
    assert_eq!(snap.connections_dropped, 2);
    h.stop();
}

#[test]
fn wrong_protocol_hello_is_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let s = UnixStream::connect(&path).unwrap();
    let p = HelloParams {
        protocol: "tern.relay",
        role: Role::Client,
        instance: 1,
        max_frame: 4096,
        ring_capacity: 0,
    };
    let e = Established::handshake(s, &p).unwrap_err();
    assert!(matches!(e, wire::WireError::ProtocolMismatch { .. }), "{e}");
    h.stop();
}
