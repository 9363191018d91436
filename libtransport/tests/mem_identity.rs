//! Identity on the mem backend with virtual time (capabilities T2, T3):
//! a PeerId that does not match the key is refused with a typed error;
//! forged and replayed proofs are refused; a peer that never proves is
//! dropped at the proof timeout; and no application stream is delivered
//! from an unproven connection.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod mem_support;

use std::time::Duration;

use libtransport::identity::{EXPORTER_LEN, Role};
use libtransport::{Bytes, CloseReason, Config, Error, Identity, Kind, KindConfig};
use mem_support::*;

/// T3: dialling a PeerId the peer cannot prove fails with a typed error.
#[tokio::test(start_paused = true)]
async fn dialling_the_wrong_peer_id_is_refused_with_a_typed_error() {
    let net = network(1);
    let server = fresh_endpoint(&net, "10.0.0.1:443");
    let client = fresh_endpoint(&net, "10.0.0.2:5000");
    let wrong = Identity::generate().unwrap().peer_id();
    let err = client
        .connect(server.local_addr(), wrong)
        .await
        .unwrap_err();
    match err {
        Error::PeerMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, server.peer_id());
        }
        other => panic!("expected PeerMismatch, got {other:?}"),
    }
    assert!(client.connection(&wrong).is_none());
    assert!(
        client.connection(&server.peer_id()).is_none(),
        "a refused dial must not go live"
    );
    assert_eq!(client.diagnostics().counters.identity_mismatch, 1);
}

/// A raw client completes TLS, sends an application stream before any proof,
/// then a proof built by `make_proof`; the server must refuse it.
async fn raw_client_is_refused(
    make_proof: impl FnOnce(&RawClient) -> Vec<u8>,
) -> libtransport::Endpoint {
    let net = network(2);
    let server = fresh_endpoint(&net, "10.0.0.1:443");
    let mut dms = server.register(Kind::DM, KindConfig::default()).unwrap();
    let mut raw = RawClient::dial(
        net.bind(addr("10.0.0.66:6666")).unwrap(),
        server.local_addr(),
    );
    raw.drive(Duration::from_secs(5), |r| r.connected).await;
    assert!(raw.connected, "TLS itself must succeed: {:?}", raw.lost);
    // An application message before the proof (kind header, version, length, payload).
    let mut early = vec![Kind::DM.0, 1];
    early.extend_from_slice(&5u32.to_be_bytes());
    early.extend_from_slice(b"sneak");
    let proof = make_proof(&raw);
    // The proof stream is the first uni stream libtransport reads; open it
    // first so the early message is the second stream.
    raw.send_uni(&proof);
    raw.send_uni(&early);
    raw.drive(Duration::from_secs(10), |r| r.lost.is_some())
        .await;
    assert!(
        raw.lost.is_some(),
        "the server must close a connection with a bad proof"
    );
    assert!(
        dms.try_recv().is_none(),
        "no application message from an unproven peer"
    );
    assert_eq!(server.diagnostics().live_connections, 0);
    server
}

/// T3: a proof signed by a key other than the proven identity's is refused.
#[tokio::test(start_paused = true)]
async fn a_proof_signed_by_another_key_is_refused() {
    let victim = Identity::generate().unwrap();
    let attacker = Identity::generate().unwrap();
    let server = raw_client_is_refused(|raw| {
        let ex = raw.exporter(Role::Client.context());
        // Victim's public key, attacker's signature over the right message.
        let mut p = victim.prove(Role::Client, &ex, 7).unwrap();
        let forged_sig = attacker.prove(Role::Client, &ex, 7).unwrap();
        let sig_at = 1 + 8 + libtransport::identity::PUBLIC_KEY_LEN;
        p[sig_at..].copy_from_slice(&forged_sig[sig_at..]);
        p
    })
    .await;
    assert_eq!(server.diagnostics().counters.identity_invalid, 1);
}

/// T3: a proof replayed from another TLS session (other exporter) is refused.
#[tokio::test(start_paused = true)]
async fn a_proof_replayed_from_another_session_is_refused() {
    let victim = Identity::generate().unwrap();
    let server = raw_client_is_refused(|_raw| {
        // A genuine proof by the victim, but bound to some other session.
        victim
            .prove(Role::Client, &[0x42; EXPORTER_LEN], 7)
            .unwrap()
    })
    .await;
    assert_eq!(server.diagnostics().counters.identity_invalid, 1);
}

/// T3: a server-role proof reflected back by the client is refused.
#[tokio::test(start_paused = true)]
async fn a_server_role_proof_reflected_by_a_client_is_refused() {
    let victim = Identity::generate().unwrap();
    let server = raw_client_is_refused(|raw| {
        let ex = raw.exporter(Role::Server.context());
        victim.prove(Role::Server, &ex, 7).unwrap()
    })
    .await;
    assert_eq!(server.diagnostics().counters.identity_invalid, 1);
}

/// T3 (control for the three above): the same raw path with a genuine proof is accepted.
#[tokio::test(start_paused = true)]
async fn a_genuine_raw_proof_is_accepted_as_control() {
    // The control case for the tests above: the same raw client with a
    // correct proof is accepted, so the refusals are about the proof.
    let net = network(3);
    let server = fresh_endpoint(&net, "10.0.0.1:443");
    let me = Identity::generate().unwrap();
    let mut raw = RawClient::dial(
        net.bind(addr("10.0.0.66:6666")).unwrap(),
        server.local_addr(),
    );
    raw.drive(Duration::from_secs(5), |r| r.connected).await;
    let ex = raw.exporter(Role::Client.context());
    raw.send_uni(&me.prove(Role::Client, &ex, 7).unwrap());
    let s = server.clone();
    let peer = me.peer_id();
    raw.drive(Duration::from_secs(2), move |_| {
        s.connection(&peer).is_some()
    })
    .await;
    assert!(
        server.connection(&me.peer_id()).is_some(),
        "a valid proof makes the peer live"
    );
    assert!(raw.lost.is_none());
}

/// T3: a peer that never proves is dropped at the proof timeout, with no
/// application stream delivered.
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_proves_is_dropped_at_the_timeout() {
    let net = network(4);
    let timeout = Duration::from_secs(3);
    let server_cfg = Config::default().identity_timeout(timeout);
    let server = endpoint(
        &net,
        addr("10.0.0.1:443"),
        Identity::generate().unwrap(),
        server_cfg,
    );
    let mut dms = server.register(Kind::DM, KindConfig::default()).unwrap();
    let silent = endpoint(
        &net,
        addr("10.0.0.2:5000"),
        Identity::generate().unwrap(),
        Config::default(),
    );
    silent.withhold_proof_for_tests();
    let start = tokio::time::Instant::now();
    // The silent side verified the server's proof, so from its end the
    // connection is up; it even tries to send.
    let conn = silent
        .connect(server.local_addr(), server.peer_id())
        .await
        .unwrap();
    let _ = conn.send(Kind::DM, Bytes::from_static(b"sneaky")).await;
    let reason = tokio::time::timeout(Duration::from_secs(30), conn.on_closed())
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(reason, CloseReason::IdentityTimeout);
    // Refused by the server's proof timeout, to the virtual millisecond range.
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "refused after {took:?}"
    );
    let d = server.diagnostics();
    assert_eq!(d.counters.identity_timeout, 1);
    assert_eq!(d.live_connections, 0);
    assert!(
        dms.try_recv().is_none(),
        "no stream may be accepted before the proof"
    );
    assert!(
        server.try_next_event().is_none(),
        "an unproven peer never becomes Connected"
    );
}
