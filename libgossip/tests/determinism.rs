//! The simulator is deterministic: the same scenario and seed give the same
//! report, byte for byte, twice in one process and across two processes
//! (where std's `HashMap` hashing keys differ). A difference means some
//! output depends on hash-map iteration order or another hidden input, and
//! every simulator figure quoted in docs/perf.md would be irreproducible.
//! (It did: with std's random hash keys the per-topic tables' layout, and
//! so `state_bytes`, changed from run to run; the simulator now seeds them
//! through `Config::hash_seed`.)
//! Capability G18 (deterministic simulator harness).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod common;

use std::process::Command;
use std::time::Duration;

/// Set in the child: print the reports and stop.
const CHILD_ENV: &str = "TERN_DETERMINISM_CHILD";
const BEGIN: &str = "=====BEGIN REPORTS=====";
const END: &str = "=====END REPORTS=====";

/// Scenarios small enough for a unit-test budget yet covering every sender
/// on a busy store (`s100-all`: its eviction churn is where random hash
/// keys showed, in `state_bytes`), loss, churn, a partition and a slow peer
/// (timeouts, cooling, expiry and re-joins are where iteration order could
/// leak into outputs).
const SCENARIOS: [(&str, u64); 5] = [
    ("s100-all", 1),
    ("s100-lossy", 2),
    ("s100-churn", 3),
    ("s100-partition", 1),
    ("s100-slow", 1),
];

/// Every report, serialized (`Debug`), with the wall-clock time zeroed: the
/// only field that legitimately differs between runs.
fn reports() -> String {
    let mut out = String::new();
    for (name, seed) in SCENARIOS {
        let mut r = common::run(&common::scenario(name), seed);
        r.wall = Duration::ZERO;
        out.push_str(&format!("{r:#?}\n"));
    }
    out
}

/// First differing line, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    match a
        .lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
    {
        Some((i, (x, y))) => format!("line {i}: {x:?} vs {y:?}"),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

#[test]
fn same_seed_gives_identical_report_bytes_in_one_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let a = reports();
    let b = reports();
    assert!(a.len() > 1000, "the report says something");
    assert!(a == b, "two runs differ: {}", first_difference(&a, &b));
}

#[test]
fn same_seed_gives_identical_report_bytes_across_processes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // Child: print this process's reports between markers.
        println!("{BEGIN}\n{}{END}", reports());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "same_seed_gives_identical_report_bytes_across_processes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let start = stdout.find(BEGIN).expect("child printed its reports") + BEGIN.len() + 1;
    let end = stdout.find(END).expect("child finished its reports");
    let child = &stdout[start..end];
    let parent = reports();
    assert!(parent.len() > 1000, "the report says something");
    assert!(
        child == parent,
        "parent and child differ: {}",
        first_difference(&parent, child)
    );
}
