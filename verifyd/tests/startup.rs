//! Start-up as an operator meets it: out-of-range flags are refused before
//! anything is created, with the flag and its valid range in the message
//! (exit status 2); a start that fails half-way removes the socket it had
//! already bound; a normal start logs one `verifyd listening` line at the
//! default level, without colour codes when stderr is not a terminal, and
//! removes its sockets when drained. Capabilities: V1 (daemon shape), O1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)
#![allow(clippy::disallowed_methods)] // a process test owns its wall clock

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn verifyd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verifyd"));
    c.env_remove("RUST_LOG")
        .env_remove("TERN_VERIFYD_THREADS")
        .env_remove("TERN_VERIFYD_IO_THREADS")
        .env_remove("TERN_VERIFYD_MAX_IN_FLIGHT")
        .stdin(Stdio::null());
    c
}

#[test]
fn out_of_range_flags_exit_2_naming_the_range_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run").join("v.sock");
    let cases: &[(&[&str], &str)] = &[
        (&["--threads", "0"], "valid range is 1..=1024"),
        (&["--threads", "100000"], "valid range is 1..=1024"),
        (&["--key-capacity", "0"], "valid range is 1..="),
        (
            &["--ring-capacity", "10"],
            "a power of two in 65536..=1073741824",
        ),
        (&["--ring-capacity", "100000"], "a power of two in 65536..="),
        (&["--io-threads", "0"], "valid range is 1..=64"),
        (&["--max-in-flight", "0"], "valid range is 1..="),
        (&["--max-connections", "0"], "valid range is 1..="),
        (&["--calibrate-budget-ms", "0"], "1..=10000"),
        (&["--threads", "two"], "not a whole number"),
    ];
    for (args, want) in cases {
        let out = verifyd()
            .arg("--socket")
            .arg(&sock)
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?} not named: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(!sock.exists(), "{args:?} created the socket");
        assert!(
            !sock.parent().unwrap().exists(),
            "{args:?} created the socket dir"
        );
    }
}

#[test]
fn failed_start_removes_the_socket_it_had_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v.sock");
    // The admin socket's directory is a regular file: binding it fails
    // after the verify socket is already bound.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let out = verifyd()
        .arg("--socket")
        .arg(&sock)
        .arg("--admin-socket")
        .arg(blocker.join("admin.sock"))
        .arg("--no-calibrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("binding sockets"), "{err}");
    assert!(!sock.exists(), "the verify socket was left behind");
}

#[test]
fn start_logs_one_plain_listening_line_and_drain_removes_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v.sock");
    let mut child = verifyd()
        .arg("--socket")
        .arg(&sock)
        .args(["--no-calibrate", "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "verifyd never bound its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The listening line is logged right after the bind; give it a moment,
    // then drain.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "drain exit: {status:?}\n{err}");
    assert_eq!(
        err.matches("verifyd listening").count(),
        1,
        "one start-up line at the default level:\n{err}"
    );
    assert!(err.contains("threads=1"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes on a pipe:\n{err}");
    assert!(!sock.exists(), "socket left after drain");
    assert!(
        !dir.path().join("v.sock.admin").exists(),
        "admin socket left after drain"
    );
}
