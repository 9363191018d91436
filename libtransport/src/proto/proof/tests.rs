//! The proof exchange driven by hand: both sides of one session with
//! their exporters, no QUIC, no tokio, no clock (T3: the identity proof).

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One session's two exporters (the TLS exporter for the client's and for
/// the server's role context), distinct per session.
fn session(seed: u8) -> ([u8; EXPORTER_LEN], [u8; EXPORTER_LEN]) {
    ([seed; EXPORTER_LEN], [seed ^ 0xff; EXPORTER_LEN])
}

fn ids() -> (Identity, Identity) {
    (Identity::generate().unwrap(), Identity::generate().unwrap())
}

/// Starts `x` at `now` and returns its proof.
fn start(x: &mut ProofExchange, id: &Identity, own: [u8; EXPORTER_LEN], now: Instant) -> Vec<u8> {
    x.start(id, &own, 7, TIMEOUT, now).unwrap()
}

/// Feeds `bytes` in chunks no larger than the read limit, then the end.
fn deliver(x: &mut ProofExchange, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() && !x.failed() {
        let n = rest.len().min(x.read_limit()).min(1000);
        x.handle_bytes(&rest[..n]);
        rest = &rest[n..];
    }
    x.handle_finished();
}

#[test]
fn both_proofs_accepted_and_name_the_peer() {
    let (a, b) = ids();
    let (ex_c, ex_s) = session(1);
    let now = Instant::now();
    let mut client = ProofExchange::new(Role::Client, Some(b.peer_id()));
    let mut server = ProofExchange::new(Role::Server, None);
    let pc = start(&mut client, &a, ex_c, now);
    let ps = start(&mut server, &b, ex_s, now);
    assert_eq!((pc.len(), ps.len()), (PROOF_LEN, PROOF_LEN));
    assert_eq!(
        client.poll_verified(|| Some(ex_s)),
        None,
        "nothing read yet"
    );
    deliver(&mut server, &pc);
    deliver(&mut client, &ps);
    let v = server.poll_verified(|| Some(ex_c)).unwrap().unwrap();
    assert_eq!((v.peer, v.epoch), (a.peer_id(), 7));
    let v = client.poll_verified(|| Some(ex_s)).unwrap().unwrap();
    assert_eq!(v.peer, b.peer_id());
    assert_eq!(client.verified().map(|v| v.peer), Some(b.peer_id()));
    assert_eq!(client.poll_verified(|| Some(ex_s)), None, "reported once");
    assert_eq!(
        client.poll_timeout(),
        None,
        "a decided exchange has no timer"
    );
}

#[test]
fn a_forged_signature_is_rejected() {
    let (a, b) = ids();
    let (ex_c, _) = session(2);
    let now = Instant::now();
    let mut server = ProofExchange::new(Role::Server, None);
    start(&mut server, &b, session(2).1, now);
    let mut p = ProofExchange::new(Role::Client, None);
    let mut proof = start(&mut p, &a, ex_c, now);
    let last = proof.len() - 1;
    proof[last] ^= 1;
    deliver(&mut server, &proof);
    assert_eq!(
        server.poll_verified(|| Some(ex_c)),
        Some(Err(ProofError::Invalid(IdentityError::BadSignature)))
    );
    assert!(server.verified().is_none());
}

#[test]
fn a_proof_replayed_from_another_session_is_rejected() {
    let (a, b) = ids();
    let now = Instant::now();
    let (old_c, _) = session(3);
    let mut old = ProofExchange::new(Role::Client, None);
    let recorded = start(&mut old, &a, old_c, now);
    // A new session has new exporters; the recorded proof signs the old one.
    let (new_c, new_s) = session(4);
    let mut server = ProofExchange::new(Role::Server, None);
    start(&mut server, &b, new_s, now);
    deliver(&mut server, &recorded);
    assert_eq!(
        server.poll_verified(|| Some(new_c)),
        Some(Err(ProofError::Invalid(IdentityError::BadSignature)))
    );
}

#[test]
fn a_proof_reflected_back_in_the_other_role_is_rejected() {
    let (a, _) = ids();
    let (ex_c, _) = session(5);
    let now = Instant::now();
    let mut client = ProofExchange::new(Role::Client, None);
    let own = start(&mut client, &a, ex_c, now);
    // The attacker echoes the client's own proof as the server's: the
    // signed message names the role, so it does not verify as a server's
    // even over the same exporter bytes.
    deliver(&mut client, &own);
    assert!(matches!(
        client.poll_verified(|| Some(ex_c)),
        Some(Err(ProofError::Invalid(_)))
    ));
}

#[test]
fn a_missing_proof_times_out_at_the_deadline() {
    let (_, b) = ids();
    let now = Instant::now();
    let mut server = ProofExchange::new(Role::Server, None);
    assert_eq!(
        server.poll_timeout(),
        None,
        "no deadline before the handshake"
    );
    start(&mut server, &b, session(6).1, now);
    assert_eq!(server.poll_timeout(), Some(now + TIMEOUT));
    server.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
    assert_eq!(
        server.poll_verified(|| None),
        None,
        "undecided before the deadline"
    );
    server.handle_timeout(now + TIMEOUT);
    assert_eq!(
        server.poll_verified(|| None),
        Some(Err(ProofError::TimedOut))
    );
    assert_eq!(server.poll_verified(|| None), None);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn a_truncated_proof_is_malformed() {
    let (a, b) = ids();
    let (ex_c, ex_s) = session(7);
    let now = Instant::now();
    let mut p = ProofExchange::new(Role::Client, None);
    let proof = start(&mut p, &a, ex_c, now);
    let mut server = ProofExchange::new(Role::Server, None);
    start(&mut server, &b, ex_s, now);
    deliver(&mut server, &proof[..PROOF_LEN / 2]);
    assert_eq!(
        server.poll_verified(|| Some(ex_c)),
        Some(Err(ProofError::Invalid(IdentityError::MalformedProof)))
    );
}

#[test]
fn an_oversize_stream_fails_without_buffering_it() {
    let (_, b) = ids();
    let now = Instant::now();
    let mut server = ProofExchange::new(Role::Server, None);
    start(&mut server, &b, session(8).1, now);
    assert_eq!(server.read_limit(), PROOF_LEN + 1);
    server.handle_bytes(&vec![0u8; PROOF_LEN]);
    assert_eq!(server.read_limit(), 1);
    server.handle_bytes(&[0]);
    assert!(server.failed());
    // Whatever the peer sends next is not buffered.
    server.handle_bytes(&vec![0u8; 1 << 20]);
    assert_eq!(server.inbound.capacity(), 0);
    server.handle_finished();
    assert_eq!(
        server.poll_verified(|| panic!("a failed exchange verifies nothing")),
        Some(Err(ProofError::Oversize))
    );
}

#[test]
fn a_valid_proof_of_another_peer_is_a_mismatch() {
    let (a, b) = ids();
    let wanted = Identity::generate().unwrap().peer_id();
    let (ex_c, ex_s) = session(9);
    let now = Instant::now();
    let mut client = ProofExchange::new(Role::Client, Some(wanted));
    start(&mut client, &a, ex_c, now);
    let mut s = ProofExchange::new(Role::Server, None);
    let proof = start(&mut s, &b, ex_s, now);
    deliver(&mut client, &proof);
    assert_eq!(
        client.poll_verified(|| Some(ex_s)),
        Some(Err(ProofError::Mismatch {
            actual: b.peer_id()
        }))
    );
}

#[test]
fn a_reset_stream_and_a_missing_exporter_fail() {
    let (a, b) = ids();
    let (ex_c, ex_s) = session(10);
    let now = Instant::now();
    let mut server = ProofExchange::new(Role::Server, None);
    start(&mut server, &b, ex_s, now);
    server.handle_reset();
    assert_eq!(
        server.poll_verified(|| Some(ex_c)),
        Some(Err(ProofError::Reset))
    );

    let mut p = ProofExchange::new(Role::Client, None);
    let proof = start(&mut p, &a, ex_c, now);
    let mut server = ProofExchange::new(Role::Server, None);
    start(&mut server, &b, ex_s, now);
    deliver(&mut server, &proof);
    assert_eq!(
        server.poll_verified(|| None),
        Some(Err(ProofError::Invalid(IdentityError::Exporter)))
    );
}

#[test]
fn a_proof_finished_before_the_handshake_waits_for_start() {
    let (a, b) = ids();
    let (ex_c, ex_s) = session(11);
    let now = Instant::now();
    let mut p = ProofExchange::new(Role::Client, None);
    let proof = start(&mut p, &a, ex_c, now);
    let mut server = ProofExchange::new(Role::Server, None);
    deliver(&mut server, &proof);
    assert_eq!(server.poll_verified(|| Some(ex_c)), None);
    start(&mut server, &b, ex_s, now);
    let v = server.poll_verified(|| Some(ex_c)).unwrap().unwrap();
    assert_eq!(v.peer, a.peer_id());
}
