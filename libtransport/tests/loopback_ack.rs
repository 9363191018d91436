//! Receive-ACKed delivery end to end on real loopback UDP sockets: every
//! outcome the receiver can answer, retries answered by replay, conflicting
//! ids, manual admission with its deadline, and the diagnostics counters.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod loopback_support;

use std::time::{Duration, Instant};

use libtransport::proto::ack::{AckError, Outcome, Request, RequestId, Response};
use libtransport::{Bytes, Connection, Endpoint, Kind, KindConfig};
use loopback_support::*;

const BUDGET: Duration = Duration::from_secs(10);

async fn pair() -> (Endpoint, Endpoint, Connection) {
    let (a, b) = (ep(), ep());
    let conn = a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    (a, b, conn)
}

/// Sends `req` on a raw bidirectional `ACK` stream and reads the answer.
async fn raw_request(conn: &Connection, req: &Request<'_>) -> Response {
    let (mut s, mut r) = conn.open_bi(Kind::ACK).await.unwrap();
    s.write_all(&req.header().to_bytes()).await.unwrap();
    s.write_all(req.payload()).await.unwrap();
    s.finish().unwrap();
    let buf = r.read_to_end(64).await.unwrap();
    Response::parse(&buf).unwrap()
}

fn rejected(r: Result<libtransport::proto::ack::Delivered, AckError>) -> Outcome {
    match r {
        Err(AckError::Rejected { outcome, .. }) => outcome,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// R1, R7: an ACKed send is answered `Accepted` once the payload is in the
/// kind's queue; the message arrives exactly once; sender and receiver
/// counters and the stage histograms show it.
#[tokio::test]
async fn accepted_end_to_end() {
    let (a, b, _conn) = pair().await;
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    let d = a
        .send_with_receive_ack(&b.peer_id(), Kind::DM, Bytes::from_static(b"hello"), BUDGET)
        .await
        .unwrap();
    assert_eq!(d.attempts, 1);
    assert!(!d.replayed);
    let m = dm.recv().await.unwrap();
    assert_eq!(m.data, "hello");
    assert_eq!(m.peer, a.peer_id());
    assert!(dm.try_recv().is_none(), "delivered once");
    let da = a.diagnostics().ack;
    assert_eq!(da.snapshot.sender.registered, 1);
    assert_eq!(da.snapshot.sender.accepted, 1);
    assert_eq!(da.snapshot.stages.response_read.count, 1);
    let db = b.diagnostics().ack;
    assert_eq!(db.snapshot.receiver.admitted, 1);
    assert_eq!(db.snapshot.stages.admission.count, 1);
    assert_eq!(db.snapshot.dedupe_entries, 1);
}

/// R2: a full queue answers `Backpressured` at once (no wait for the slow
/// consumer, far inside the budget); after the consumer drains, the next
/// send is accepted.
#[tokio::test]
async fn full_queue_backpressures_at_once() {
    let (a, b, _conn) = pair().await;
    let cfg = KindConfig {
        capacity: 2,
        ..KindConfig::default()
    };
    let mut dm = b.register(Kind::DM, cfg).unwrap();
    let bp = b.peer_id();
    for i in 0..2u8 {
        a.send_with_receive_ack(&bp, Kind::DM, Bytes::from(vec![i]), BUDGET)
            .await
            .unwrap();
    }
    let t = Instant::now();
    let r = a
        .send_with_receive_ack(&bp, Kind::DM, Bytes::from_static(b"x"), BUDGET)
        .await;
    assert_eq!(rejected(r), Outcome::Backpressured);
    // Wide liveness bound: an answer, not a budget expiry.
    assert!(t.elapsed() < BUDGET / 2, "took {:?}", t.elapsed());
    assert_eq!(dm.recv().await.unwrap().data, Bytes::from(vec![0u8]));
    assert_eq!(dm.recv().await.unwrap().data, Bytes::from(vec![1u8]));
    a.send_with_receive_ack(&bp, Kind::DM, Bytes::from_static(b"y"), BUDGET)
        .await
        .unwrap();
    assert_eq!(dm.recv().await.unwrap().data, "y");
    assert!(
        dm.try_recv().is_none(),
        "the refused payload was not delivered"
    );
    let d = b.diagnostics().ack.snapshot;
    assert_eq!(d.receiver.backpressured, 1);
    assert_eq!(d.receiver.admitted, 3);
    assert_eq!(
        a.diagnostics().ack.snapshot.sender.rejected_backpressured,
        1
    );
}

/// R2: a kind nobody registered answers `ConsumerGone`.
#[tokio::test]
async fn unregistered_kind_is_consumer_gone() {
    let (a, b, _conn) = pair().await;
    let r = a
        .send_with_receive_ack(&b.peer_id(), Kind(0x40), Bytes::from_static(b"?"), BUDGET)
        .await;
    assert_eq!(rejected(r), Outcome::ConsumerGone);
    assert_eq!(b.diagnostics().ack.snapshot.receiver.consumer_gone, 1);
}

/// R3: a second copy of an admitted request id (a retry) is answered
/// `Accepted` with the replayed flag and not delivered again; the same id
/// with another payload is `Conflict` and the first payload stands.
#[tokio::test]
async fn retry_is_replayed_and_conflict_refused() {
    let (_a, b, conn) = pair().await;
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    let id = RequestId([7; 16]);
    let req = Request::new(Kind::DM, id, b"first", false).unwrap();
    let r1 = raw_request(&conn, &req).await;
    assert_eq!(
        (r1.id, r1.outcome, r1.replayed),
        (id, Outcome::Accepted, false)
    );
    let r2 = raw_request(&conn, &req.as_retry()).await;
    assert_eq!(
        (r2.id, r2.outcome, r2.replayed),
        (id, Outcome::Accepted, true)
    );
    let other = Request::new(Kind::DM, id, b"second", true).unwrap();
    let r3 = raw_request(&conn, &other).await;
    assert_eq!((r3.id, r3.outcome), (id, Outcome::Conflict));
    assert_eq!(dm.recv().await.unwrap().data, "first");
    // Give a wrongly admitted copy time to show up before checking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(dm.try_recv().is_none(), "admitted exactly once");
    let d = b.diagnostics().ack.snapshot.receiver;
    assert_eq!((d.admitted, d.replayed, d.conflicts), (1, 1, 1));
}

/// R3: a malformed request (payload hash does not match) is refused with a
/// stream reset and counted; the connection carries on.
#[tokio::test]
async fn malformed_request_reset_and_counted() {
    let (a, b, conn) = pair().await;
    let _dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    let req = Request::new(Kind::DM, RequestId([1; 16]), b"abc", false).unwrap();
    let (mut s, mut r) = conn.open_bi(Kind::ACK).await.unwrap();
    s.write_all(&req.header().to_bytes()).await.unwrap();
    s.write_all(b"xyz").await.unwrap();
    s.finish().unwrap();
    assert!(r.read_to_end(64).await.is_err(), "malformed request reset");
    assert_eq!(b.diagnostics().ack.snapshot.receiver.malformed, 1);
    a.send_with_receive_ack(&b.peer_id(), Kind::DM, Bytes::from_static(b"ok"), BUDGET)
        .await
        .unwrap();
}

/// R4: manual admission resolved in time answers `Accepted`.
#[tokio::test]
async fn manual_admission_accepted() {
    let (a, b, _conn) = pair().await;
    let mut m = b.register_manual(Kind(0x41), 8, 1024).unwrap();
    let bp = b.peer_id();
    let sender = tokio::spawn(async move {
        a.send_with_receive_ack(&bp, Kind(0x41), Bytes::from_static(b"ring"), BUDGET)
            .await
    });
    let req = m.recv().await.unwrap();
    assert_eq!(req.data, "ring");
    assert!(req.responder.deadline() > Instant::now());
    req.responder.accept().unwrap();
    let d = sender.await.unwrap().unwrap();
    assert_eq!(d.attempts, 1);
    assert_eq!(b.diagnostics().ack.snapshot.receiver.admitted, 1);
}

/// R4: a manual responder that misses its deadline makes the sender get
/// `Backpressured`, and the late accept is refused (`Expired`).
#[tokio::test]
async fn manual_admission_expired() {
    let (a, b, _conn) = pair().await;
    let mut m = b.register_manual(Kind(0x41), 8, 1024).unwrap();
    let bp = b.peer_id();
    let sender = tokio::spawn(async move {
        a.send_with_receive_ack(&bp, Kind(0x41), Bytes::from_static(b"late"), BUDGET)
            .await
    });
    let req = m.recv().await.unwrap();
    let r = sender.await.unwrap();
    assert_eq!(rejected(r), Outcome::Backpressured);
    assert_eq!(
        req.responder.accept(),
        Err(libtransport::proto::ack::ResolveError::Expired)
    );
    let d = b.diagnostics().ack.snapshot.receiver;
    assert_eq!((d.admitted, d.admission_expired), (0, 1));
}
