//! Unix-socket helpers and the hello over real sockets: stale-socket
//! handling, 0660 binding, SO_PEERCRED checks, a hello + request/response
//! between two processes, and the tokio variants (P1).

// Tests may unwrap (STYLE.md); helpers outside #[test] fns need the allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;

use wire::WireError;
use wire::frame::{self, FrameReader, FrameWriter, VerifySchema};
use wire::generated::error::ErrorCode;
use wire::generated::hello::{Capability, Role};
use wire::generated::verify;
use wire::hello::{self, HelloConfig};
use wire::uds::{self, PeerPolicy, StaleSocket};

const CHILD_ENV: &str = "TERN_WIRE_TEST_CHILD_SOCKET";

fn verifyd_hello() -> HelloConfig {
    HelloConfig::new("tern.verify", Role::Verifyd)
        .versions(1, 2)
        .capabilities(Capability::ShmRing)
        .max_frame(8 << 20)
        .allow_peer_roles(&[Role::Client, Role::Gossipd])
}

fn client_hello() -> HelloConfig {
    HelloConfig::new("tern.verify", Role::Client)
        .versions(1, 3)
        .instance(7)
}

#[test]
fn bind_sets_mode_0660_and_replaces_only_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/tern/verifyd.sock");
    let listener = uds::bind(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o750);

    // A live listener is never taken over.
    assert!(matches!(
        uds::bind(&path),
        Err(WireError::SocketInUse { .. })
    ));
    assert!(matches!(
        uds::remove_stale(&path),
        Err(WireError::SocketInUse { .. })
    ));
    // Once its owner is gone the socket file is stale and gets replaced.
    drop(listener);
    assert!(path.exists());
    assert_eq!(uds::remove_stale(&path).unwrap(), StaleSocket::Removed);
    assert_eq!(uds::remove_stale(&path).unwrap(), StaleSocket::Absent);
    let _again = UnixListener::bind(&path).unwrap();
    drop(_again);
    let listener = uds::bind(&path).unwrap();
    UnixStream::connect(&path).unwrap();
    drop(listener);

    // A regular file at the path is left alone.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        uds::bind(&file),
        Err(WireError::SocketInUse { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn rejected_peer_gets_a_permission_denied_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = uds::bind(&path).unwrap();
    let client = std::thread::spawn({
        let path = path.clone();
        move || {
            // The client runs its hello as usual and learns why it was refused,
            // whether its hello write raced the close or not.
            let s = UnixStream::connect(&path).unwrap();
            let mut r = FrameReader::new(&s, frame::DEFAULT_MAX_FRAME);
            let mut w = FrameWriter::new(&s, frame::DEFAULT_MAX_FRAME);
            hello::exchange(&mut r, &mut w, &client_hello()).unwrap_err()
        }
    });
    let me = nix::unistd::geteuid().as_raw();
    let other = PeerPolicy::uids(&[me.wrapping_add(4242)]);
    match uds::accept_checked(&listener, &other) {
        Err(WireError::PeerRejected { uid, pid }) => {
            assert_eq!(uid, me);
            assert_eq!(pid, std::process::id() as i32);
        }
        other => panic!("{other:?}"),
    }
    match client.join().unwrap() {
        WireError::Remote(r) => {
            assert_eq!(r.code, ErrorCode::PermissionDenied);
            assert!(r.fatal);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hello_mismatch_is_typed_on_both_sides() {
    let (a, b) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut r = FrameReader::new(&a, frame::DEFAULT_MAX_FRAME);
        let mut w = FrameWriter::new(&a, frame::DEFAULT_MAX_FRAME);
        hello::exchange(&mut r, &mut w, &verifyd_hello())
    });
    let mut r = FrameReader::new(&b, frame::DEFAULT_MAX_FRAME);
    let mut w = FrameWriter::new(&b, frame::DEFAULT_MAX_FRAME);
    let too_new = HelloConfig::new("tern.verify", Role::Client).versions(5, 6);
    let mine = hello::exchange(&mut r, &mut w, &too_new);
    assert!(matches!(
        mine,
        Err(WireError::VersionMismatch {
            ours: (5, 6),
            theirs: (1, 2)
        })
    ));
    assert!(matches!(
        server.join().unwrap(),
        Err(WireError::VersionMismatch {
            ours: (1, 2),
            theirs: (5, 6)
        })
    ));
    // Each side then told the other why.
    match frame::decode::<VerifySchema>(r.read_frame().unwrap().unwrap()) {
        Err(WireError::Remote(e)) => assert_eq!(e.code, ErrorCode::VersionMismatch),
        other => panic!("{other:?}"),
    }
}

/// Client half of `hello_and_batch_between_two_processes`, run in a child
/// process (`--ignored` so a normal run does not execute it on its own).
#[test]
#[ignore = "child process entry point of hello_and_batch_between_two_processes"]
fn child_verify_client() {
    let path = std::env::var_os(CHILD_ENV).expect("run by the parent test");
    let s = UnixStream::connect(Path::new(&path)).unwrap();
    let mut r = FrameReader::new(&s, frame::DEFAULT_MAX_FRAME);
    let mut w = FrameWriter::new(&s, frame::DEFAULT_MAX_FRAME);
    let session = hello::exchange(&mut r, &mut w, &client_hello()).unwrap();
    assert_eq!(session.version, 2);
    assert_eq!(session.max_frame, 8 << 20);
    assert_eq!(session.peer_role, Role::Verifyd);
    w.write_frame(&common::verify_batch(16)).unwrap();
    let f = frame::decode::<VerifySchema>(r.read_frame().unwrap().unwrap()).unwrap();
    let res = f.msg_as_verify_result().unwrap();
    assert_eq!(res.request_id(), 2);
    assert_eq!(res.verdicts().len(), 16);
    assert!(res.verdicts().iter().all(|v| v == verify::Verdict::Valid));
}

#[test]
fn hello_and_batch_between_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds::socket_path(Some(&dir.path().join("verifyd.sock")), "UNUSED", "verifyd");
    let listener = uds::bind(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_verify_client", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &path)
        .spawn()
        .unwrap();

    let (stream, cred) = uds::accept_checked(&listener, &PeerPolicy::same_user()).unwrap();
    assert_eq!(cred.pid, child.id() as i32);
    let mut r = FrameReader::new(&stream, frame::DEFAULT_MAX_FRAME);
    let mut w = FrameWriter::new(&stream, frame::DEFAULT_MAX_FRAME);
    let session = hello::exchange(&mut r, &mut w, &verifyd_hello()).unwrap();
    assert_eq!(session.peer_pid, child.id());
    assert_eq!(session.peer_instance, 7);
    assert_eq!(session.capabilities, Capability::empty());
    assert_eq!(r.max_frame(), 8 << 20);

    let f = frame::decode::<VerifySchema>(r.read_frame().unwrap().unwrap()).unwrap();
    let batch = f.msg_as_verify_batch().unwrap();
    let n = batch.items().len();
    assert_eq!(n, 16);
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let verdicts = fbb.create_vector(&vec![verify::Verdict::Valid; n]);
    let m = verify::VerifyResult::create(
        &mut fbb,
        &verify::VerifyResultArgs {
            request_id: batch.request_id(),
            verdicts: Some(verdicts),
        },
    );
    let root = verify::VerifyFrame::create(
        &mut fbb,
        &verify::VerifyFrameArgs {
            msg_type: verify::VerifyMessage::VerifyResult,
            msg: Some(m.as_union_value()),
        },
    );
    frame::finish::<VerifySchema>(&mut fbb, root);
    w.write_frame(fbb.finished_data()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child client failed: {status}");
    assert!(r.read_frame().unwrap().is_none(), "child closed cleanly");
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_bind_accept_hello_and_frames() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;
    use wire::frame::FrameCodec;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relayd.sock");
    let listener = uds::bind_tokio(&path).unwrap();
    let client = tokio::spawn({
        let path = path.clone();
        async move {
            let s = tokio::net::UnixStream::connect(&path).await.unwrap();
            let mut f = Framed::new(s, FrameCodec::new(frame::DEFAULT_MAX_FRAME));
            let cfg = HelloConfig::new("tern.relay", Role::Gossipd).max_frame(1 << 20);
            let session = hello::exchange_async(&mut f, &cfg).await.unwrap();
            assert_eq!(f.codec().max_frame(), 1 << 20);
            f.send(&common::relay_inbound_batch()[..]).await.unwrap();
            session
        }
    });
    let (s, cred) = uds::accept_checked_tokio(&listener, &PeerPolicy::same_user())
        .await
        .unwrap();
    assert_eq!(cred.pid, std::process::id() as i32);
    let mut f = Framed::new(s, FrameCodec::new(frame::DEFAULT_MAX_FRAME));
    let cfg = HelloConfig::new("tern.relay", Role::Relayd);
    let session = hello::exchange_async(&mut f, &cfg).await.unwrap();
    assert_eq!(session.max_frame, 1 << 20);
    assert_eq!(session.peer_role, Role::Gossipd);
    let payload = f.next().await.unwrap().unwrap();
    assert_eq!(&payload[..], &common::relay_inbound_batch()[..]);
    assert!(common::walk::relay(&payload).is_some());
    assert_eq!(client.await.unwrap().peer_role, Role::Relayd);
    assert!(f.next().await.is_none());
}

#[test]
fn peer_closing_before_its_hello_is_typed() {
    let (a, b) = UnixStream::pair().unwrap();
    let silent = std::thread::spawn(move || {
        // Read our hello, then hang up without answering.
        let mut r = FrameReader::new(&a, frame::DEFAULT_MAX_FRAME);
        assert!(r.read_frame().unwrap().is_some());
    });
    let mut r = FrameReader::new(&b, frame::DEFAULT_MAX_FRAME);
    let mut w = FrameWriter::new(&b, frame::DEFAULT_MAX_FRAME);
    assert!(matches!(
        hello::exchange(&mut r, &mut w, &client_hello()),
        Err(WireError::PeerClosed)
    ));
    silent.join().unwrap();
}

/// Sends `hello`'s frame and then, as a separate message, one byte with
/// `fd` attached (SCM_RIGHTS) — what a ring setup does right after the hello.
fn send_hello_then_fd(sock: &UnixStream, cfg: &HelloConfig, fd: std::os::fd::RawFd) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    FrameWriter::new(sock, frame::DEFAULT_MAX_FRAME)
        .write_frame(cfg.encode(&mut fbb))
        .unwrap();
    let fds = [fd];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"R")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, 1);
}

/// Receives one message; returns its bytes and the descriptors attached.
fn recv_with_fds(sock: &UnixStream) -> (Vec<u8>, Vec<std::os::fd::OwnedFd>) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let r = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in r.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in our
            // table and nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = r.bytes;
    (buf[..n].to_vec(), fds)
}

/// The hello reads exactly the peer's hello, so descriptors the peer passes
/// right after it (ring setup) reach the caller. The control case shows a
/// buffered read of the same stream would have swallowed them (P1, P2).
#[test]
fn descriptors_sent_right_after_the_hello_survive_it() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    for exact in [true, false] {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let peer_cfg = HelloConfig::new("tern.verify", Role::Verifyd);
        // Both messages are queued before we read anything: the worst case.
        send_hello_then_fd(&theirs, &peer_cfg, pipe_r.as_raw_fd());
        drop(pipe_r);
        let mut r = FrameReader::new(&ours, frame::DEFAULT_MAX_FRAME);
        let mut w = FrameWriter::new(&ours, frame::DEFAULT_MAX_FRAME);
        if exact {
            hello::exchange(&mut r, &mut w, &client_hello()).unwrap();
            assert_eq!(r.buffered(), 0);
            let (bytes, fds) = recv_with_fds(&ours);
            assert_eq!(bytes, b"R");
            assert_eq!(fds.len(), 1);
            // The descriptor is the pipe's read end: data flows through it.
            std::fs::File::from(pipe_w).write_all(b"ok").unwrap();
            let mut got = [0u8; 2];
            std::fs::File::from(fds.into_iter().next().unwrap())
                .read_exact(&mut got)
                .unwrap();
            assert_eq!(&got, b"ok");
        } else {
            // Control: a buffered read takes the byte, and the kernel drops
            // the descriptor that came with it.
            assert!(r.read_frame().unwrap().is_some());
            assert_eq!(r.buffered(), 1);
            drop(theirs);
            let (bytes, fds) = recv_with_fds(&ours);
            assert!(bytes.is_empty() && fds.is_empty());
        }
    }
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_stream_hello_leaves_descriptors_in_the_socket() {
    use std::os::fd::AsRawFd;

    let (ours, theirs) = UnixStream::pair().unwrap();
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    send_hello_then_fd(
        &theirs,
        &HelloConfig::new("tern.verify", Role::Verifyd),
        pipe_r.as_raw_fd(),
    );
    ours.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::UnixStream::from_std(ours).unwrap();
    let session = hello::exchange_stream_async(&mut stream, &client_hello())
        .await
        .unwrap();
    assert_eq!(session.peer_role, Role::Verifyd);
    let ours = stream.into_std().unwrap();
    ours.set_nonblocking(false).unwrap();
    let (bytes, fds) = recv_with_fds(&ours);
    assert_eq!((bytes.as_slice(), fds.len()), (&b"R"[..], 1));
}
