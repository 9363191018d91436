//! Hostile local clients that never finish (or never start) the hello, and
//! clients that finish it and then idle, against a real `verifyd` process.
//!
//! Proves the slow-client protection of the server core for verifyd (V3:
//! bounded in-flight and explicit back-pressure hold even under hostile
//! connections; P1: the hello is versioned and has a deadline): while each
//! attack holds, a well-behaved client is served with p99 within 5× its idle
//! value, the admin socket answers within 1 s, and RSS stays under the
//! daemon's configured budgets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test: unwraps, owns the clock

mod attack_support;

use std::time::Duration;

use attack_support::{
    ADMIN_DEADLINE, Bars, Daemon, GoodClient, IdleFlood, ProcessLimit, TrickleEnd, counter,
    idle_after_hello, listener, raise_own_nofile, trickle_hello,
};

/// The daemon's hello deadline (the server core's default).
const HELLO_DEADLINE: Duration = Duration::from_secs(2);

/// A client that trickles its hello one byte every 300 ms is cut at the
/// hello deadline; twenty of them stall neither the good client nor the
/// admin socket, and `status` counts the timeouts.
#[test]
fn trickling_hellos_are_cut_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::None);
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    let rss_idle = d.rss();

    let trick: Vec<_> = (0..20)
        .map(|_| {
            trickle_hello(
                &d.socket,
                Duration::from_millis(300),
                Duration::from_secs(15),
            )
        })
        .collect();
    // Admin tricklers too: the admin socket must not be the weak one.
    let admin_trick: Vec<_> = (0..20)
        .map(|_| {
            trickle_hello(
                &d.admin,
                Duration::from_millis(300),
                Duration::from_secs(15),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();

    for (what, set) in [("verify", trick), ("admin", admin_trick)] {
        for t in set {
            match t.join().unwrap() {
                // No later than the deadline (plus scheduling slack); the
                // admin listener, capped at a few dozen connections, may
                // also shed a trickler earlier to make room for another.
                TrickleEnd::Cut(after) => assert!(
                    (what == "admin" || after >= HELLO_DEADLINE.mul_f64(0.9))
                        && after <= HELLO_DEADLINE + Duration::from_millis(1500),
                    "{what}: trickler cut after {after:?}, the hello deadline is {HELLO_DEADLINE:?}"
                ),
                other => panic!("{what}: trickling hello not cut at the deadline: {other:?}"),
            }
        }
    }
    assert!(d.alive(), "verifyd died");
    let (_, status) = d
        .admin_status(ADMIN_DEADLINE)
        .expect("admin answers after the attack");
    assert!(
        counter(listener(&status, "verify"), "hello_timeouts") >= 20,
        "{status:#}"
    );
    let admin_l = listener(&status, "admin");
    assert!(
        counter(admin_l, "hello_timeouts") + counter(admin_l, "evicted_idle") >= 20,
        "{status:#}"
    );
    Bars::new(
        idle,
        attacked,
        admin.map(|(t, _)| t),
        rss_idle,
        rss_attacked,
        &status,
    )
    .check("trickling hellos");
}

/// 1,000 connections on each socket that never send a byte, re-opened as
/// soon as the daemon cuts them: the good client (connecting *after* the
/// flood started) and the admin socket are served throughout.
#[test]
fn a_thousand_idle_connections_before_the_hello() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::None);
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    drop(good);
    let rss_idle = d.rss();

    let verify_flood = IdleFlood::start(&d.socket, 1000);
    let admin_flood = IdleFlood::start(&d.admin, 1000);
    let mut good = GoodClient::connect(&d.socket);
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();
    // Hold the flood past the hello deadline so the cuts are observed.
    std::thread::sleep(HELLO_DEADLINE + Duration::from_millis(700));
    let late = good.measure(100);
    let late_admin = d.admin_status(ADMIN_DEADLINE);
    let v = verify_flood.stop();
    let a = admin_flood.stop();
    eprintln!("verify flood {v:?}, admin flood {a:?}, late {late}, late admin {late_admin:?}",);

    assert!(d.alive(), "verifyd died");
    assert!(
        v.cut >= 900 && a.cut >= 900,
        "idle pre-hello connections were not cut: {v:?} {a:?}"
    );
    let (_, status) = late_admin.expect("admin answers while the flood holds");
    assert!(
        counter(listener(&status, "verify"), "hello_timeouts") >= 900,
        "{status:#}"
    );
    Bars::new(
        idle,
        attacked,
        admin.map(|(t, _)| t),
        rss_idle,
        rss_attacked,
        &status,
    )
    .check("1,000 idle connections before the hello");
}

/// 1,000 connections on each socket that finish the hello and then idle
/// (idle time between frames is allowed): the daemon holds them on tasks,
/// not threads, and the good client and admin socket are served.
#[test]
fn a_thousand_idle_connections_after_the_hello() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::None);
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    let rss_idle = d.rss();
    let threads_idle = d.threads();

    let verify_idle = idle_after_hello(&d.socket, 1000, verifyd::proto::PROTOCOL);
    let admin_idle = idle_after_hello(&d.admin, 1000, verifyd::server::admin::ADMIN_PROTOCOL);
    assert!(
        verify_idle.len() >= 990,
        "only {} verify hellos completed",
        verify_idle.len()
    );
    assert!(
        admin_idle.len() >= 990,
        "only {} admin hellos completed",
        admin_idle.len()
    );
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();
    let threads_attacked = d.threads();

    assert!(d.alive(), "verifyd died");
    assert!(
        threads_attacked <= threads_idle + 4,
        "threads grew from {threads_idle} to {threads_attacked} with 2,000 idle connections"
    );
    let status = admin
        .as_ref()
        .map(|(_, s)| s.clone())
        .expect("admin answers");
    assert!(
        counter(listener(&status, "verify"), "open") >= 990,
        "{status:#}"
    );
    Bars::new(
        idle,
        attacked,
        admin.map(|(t, _)| t),
        rss_idle,
        rss_attacked,
        &status,
    )
    .check("1,000 idle connections after the hello");
    drop((verify_idle, admin_idle));
}
