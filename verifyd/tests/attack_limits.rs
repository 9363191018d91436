//! The daemon under process limits an operator (or systemd) sets: a low
//! descriptor limit and a task limit, each with 300 connections, against a
//! real `verifyd` process.
//!
//! Proves that resource exhaustion degrades service instead of ending it
//! (V3): no busy loop on `EMFILE`, no exit on a failed thread spawn; the
//! good client is served within 5× its idle p99, the admin socket answers
//! within 1 s, RSS stays under the configured budgets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test: unwraps, owns the clock

mod attack_support;

use std::time::{Duration, Instant};

use attack_support::{
    ADMIN_DEADLINE, Bars, Daemon, GoodClient, IdleFlood, ProcessLimit, counter, cpu_time,
    idle_after_hello, listener, raise_own_nofile,
};

/// `ulimit -n 256` and 300 connections that finished their hello and idle:
/// the daemon cannot hold them all, sheds or refuses the surplus with a
/// counter, keeps serving the good client and the admin socket, and does
/// not spin (its CPU use over two seconds of the attack stays low).
#[test]
fn under_ulimit_n_256_with_300_connections() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::NoFile(256));
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    drop(good);
    let rss_idle = d.rss();

    let held = idle_after_hello(&d.socket, 300, verifyd::proto::PROTOCOL);
    // And pre-hello connects on top, re-opened as they are cut.
    let flood = IdleFlood::start(&d.socket, 100);
    eprintln!(
        "{} hellos completed under ulimit -n 256; daemon holds {} fds",
        held.len(),
        d.fds()
    );
    let cpu0 = cpu_time(d.child.id());
    let t0 = Instant::now();
    let mut good = GoodClient::connect(&d.socket);
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();
    std::thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
    let cpu = cpu_time(d.child.id()) - cpu0;
    let wall = t0.elapsed();
    let f = flood.stop();
    eprintln!("flood {f:?}; daemon cpu {cpu:?} over {wall:?}");

    assert!(d.alive(), "verifyd died under ulimit -n 256");
    assert!(
        d.fds() <= 256,
        "daemon holds {} fds over its limit",
        d.fds()
    );
    // The good client's 300 requests take some CPU; a spinning accept loop
    // takes a whole core.
    assert!(
        cpu.as_secs_f64() < 0.5 * wall.as_secs_f64(),
        "daemon used {cpu:?} CPU in {wall:?}: accept loop spinning?"
    );
    let status = admin
        .as_ref()
        .map(|(_, s)| s.clone())
        .expect("admin answers");
    let v = listener(&status, "verify");
    let gave_way =
        counter(v, "refused_fds") + counter(v, "evicted_idle") + counter(v, "accept_errors");
    assert!(
        gave_way > 0,
        "300 connections under 256 fds, yet nothing refused or shed: {v:#}"
    );
    Bars::new(
        idle,
        attacked,
        admin.map(|(t, _)| t),
        rss_idle,
        rss_attacked,
        &status,
    )
    .check("ulimit -n 256, 300 connections");
    drop(held);
}

/// A pids cgroup allowing 40 tasks (threads count) and 300 connections:
/// the daemon's thread count does not follow its connections, so it stays
/// up and serves.
#[test]
fn under_a_task_limit_with_300_connections() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::Tasks(40));
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    let rss_idle = d.rss();

    let held = idle_after_hello(&d.socket, 300, verifyd::proto::PROTOCOL);
    let held_admin = idle_after_hello(&d.admin, 50, verifyd::server::admin::ADMIN_PROTOCOL);
    eprintln!(
        "{} verify + {} admin hellos completed under 40 tasks; daemon has {} threads",
        held.len(),
        held_admin.len(),
        d.threads()
    );
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();

    assert!(d.alive(), "verifyd died under a task limit");
    assert!(
        held.len() >= 290,
        "only {} of 300 connections served under the task limit",
        held.len()
    );
    let status = admin
        .as_ref()
        .map(|(_, s)| s.clone())
        .expect("admin answers");
    assert!(
        counter(listener(&status, "verify"), "open") >= 290,
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
    .check("40 tasks, 300 connections");
    drop((held, held_admin));
}
