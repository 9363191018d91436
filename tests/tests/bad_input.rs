//! Hostile local clients on every Unix socket of every daemon of a running
//! node (relayd's relay and admin sockets, gossipd's application and admin
//! sockets, verifyd's verify and admin sockets): random bytes, a 4 GiB
//! length prefix, half a frame then silence, a valid hello then garbage,
//! 1,000 idle connections, and a client of another uid. After every case
//! on every socket the node is checked as a well-behaved user sees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tern_tests::{Daemon, Mesh};
use test_support::daemon::{PATIENCE, admin_request};
use wire::frame::{FrameReader, FrameWriter, MIN_MAX_FRAME};
use wire::generated::hello::Role;
use wire::hello::HelloConfig;

/// One socket and the hello its protocol expects.
struct Target {
    daemon: Daemon,
    sock: &'static str,
    protocol: &'static str,
    role: Role,
}

const TARGETS: [Target; 6] = [
    Target {
        daemon: Daemon::Relayd,
        sock: "relayd.sock",
        protocol: "tern.relay",
        role: Role::Gossipd,
    },
    Target {
        daemon: Daemon::Relayd,
        sock: "relayd-admin.sock",
        protocol: "tern.admin",
        role: Role::Nodectl,
    },
    Target {
        daemon: Daemon::Gossipd,
        sock: "gossipd.sock",
        protocol: "tern.client",
        role: Role::Client,
    },
    Target {
        daemon: Daemon::Gossipd,
        sock: "gossipd-admin.sock",
        protocol: "tern.admin",
        role: Role::Nodectl,
    },
    Target {
        daemon: Daemon::Verifyd,
        sock: "verifyd.sock",
        protocol: "tern.verify",
        role: Role::Client,
    },
    Target {
        daemon: Daemon::Verifyd,
        sock: "verifyd-admin.sock",
        protocol: "tern.admin",
        role: Role::Nodectl,
    },
];

/// The longest a daemon may take to close a connection it must close
/// (every hello and partial-frame deadline is shorter).
const CLOSE_WITHIN: Duration = Duration::from_secs(30);

/// How a daemon ended an exchange [`read_reply`] watched.
enum Ending {
    /// It closed the connection (EOF).
    Closed,
    /// It reset the connection.
    Reset,
    /// It sent a whole frame of this many bytes (the session may go on).
    Frame(usize),
}

/// Reads what the daemon sends until it closes or resets the connection,
/// or — with `frame_is_enough` — until one whole frame is in: the bytes
/// read and how it ended. Panics if none of that happens within
/// [`CLOSE_WITHIN`].
fn read_reply(mut s: UnixStream, what: &str, frame_is_enough: bool) -> (usize, Ending) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + CLOSE_WITHIN;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if frame_is_enough && got.len() >= 4 {
            let len = u32::from_le_bytes([got[0], got[1], got[2], got[3]]) as usize;
            if got.len() >= 4 + len {
                return (got.len(), Ending::Frame(len));
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return (got.len(), Ending::Closed),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got.len(), Ending::Reset);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{what}: read failed: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the daemon neither answered nor closed the connection"
        );
    }
}

/// Reads until the daemon closes the connection; the bytes it sent first
/// (a typed error frame, or nothing).
fn until_closed(s: UnixStream, what: &str) -> usize {
    read_reply(s, what, false).0
}

/// Reads until the daemon closes the connection or has sent one whole
/// frame (a typed error answer; the session may go on): what it did.
fn answered_or_closed(s: UnixStream, what: &str) -> String {
    match read_reply(s, what, true) {
        (_, Ending::Frame(len)) => format!("a {len} B answer frame"),
        (n, Ending::Closed) => format!("{n} B then closed"),
        (n, Ending::Reset) => format!("{n} B then reset"),
    }
}

/// Deterministic noise (xorshift), so a failure replays.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A connection that has done the target's hello, or the typed refusal.
/// relayd's relay socket refuses every hello with `Busy` while its gossipd
/// is attached (one session at a time): that refusal is the answer to
/// "a valid hello, then garbage" there (relayd's own tests send garbage
/// on an attached session, `relayd/tests/daemon.rs`).
fn hello(path: &Path, t: &Target) -> Result<UnixStream, String> {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut r = FrameReader::new(&s, MIN_MAX_FRAME);
    let mut w = FrameWriter::new(&s, MIN_MAX_FRAME);
    match wire::hello::exchange(&mut r, &mut w, &HelloConfig::new(t.protocol, t.role)) {
        Ok(_) => Ok(s),
        Err(e) if t.sock == "relayd.sock" && e.to_string().contains("Busy") => Err(e.to_string()),
        Err(e) => panic!("{}: hello refused: {e}", t.sock),
    }
}

/// Runs `case` on a connection after the hello; what happened.
fn after_hello(path: &Path, t: &Target, case: impl FnOnce(UnixStream) -> String) -> String {
    match hello(path, t) {
        Ok(s) => case(s),
        Err(e) => format!("hello refused ({e})"),
    }
}

/// Writes `bytes`; a daemon that already closed is fine.
fn write(s: &mut UnixStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// The node as a well-behaved user sees it: every daemon runs and answers
/// `status` on its admin socket; gossipd is still attached to relayd in
/// the same session (a hostile relay hello did not supersede it) and
/// still uses verifyd; an application publishes and gets a DM to itself.
fn served(mesh: &Mesh, attaches: u64, after: &str) {
    for d in [Daemon::Relayd, Daemon::Gossipd, Daemon::Verifyd] {
        let pid = mesh.pid(0, d).unwrap();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            !state.is_empty() && !state.starts_with('Z'),
            "{} exited after {after}",
            d.name()
        );
        let sock = mesh.node(0).sock(&format!("{}-admin.sock", d.name()));
        admin_request(&sock, d.name(), true)
            .unwrap_or_else(|e| panic!("{} admin unanswered after {after}: {e}", d.name()));
    }
    let g = mesh.node(0).diag("gossipd");
    assert_eq!(g["relayd_attached"], true, "after {after}");
    assert_eq!(
        g["link"]["attaches"], attaches,
        "gossipd re-attached after {after}"
    );
    assert_eq!(g["verifyd"]["connected"], 1, "after {after}");
    let mut app = mesh.app(0);
    app.join("bad-input").unwrap();
    app.publish("bad-input", after.as_bytes()).unwrap();
    app.subscribe_dms().unwrap();
    let r = app.send_dm(mesh.id(0), after.as_bytes()).unwrap();
    let dm = app.next_dm().unwrap();
    assert_eq!(dm.id, r.id, "after {after}");
    app.ack_dms(&[dm.id]).unwrap();
}

/// Every case on every socket: the daemon answers with a typed error frame
/// or closes the connection (a 4 GiB prefix or a half frame must close it) (within [`CLOSE_WITHIN`]), never panics or
/// exits, and after each case the node still serves a well-behaved user
/// (see [`served`]). Capabilities: R1 (daemons survive hostile input),
/// P2 (the relay session is not superseded by a stranger's hello).
#[test]
fn every_daemon_socket_survives_hostile_clients() {
    raise_fd_limit();
    let mesh = Mesh::start(1);
    let attaches = mesh.node(0).diag("gossipd")["link"]["attaches"]
        .as_u64()
        .unwrap();
    served(&mesh, attaches, "start");
    let mut summary = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let path = mesh.node(0).sock(t.sock);
        let name = t.sock;

        // Random bytes before any hello.
        let mut s = UnixStream::connect(&path).unwrap();
        write(&mut s, &noise(i as u64 + 1, 4096));
        let random = until_closed(s, &format!("{name}: random bytes"));
        served(&mesh, attaches, &format!("{name}: random bytes"));

        // A 4 GiB length prefix (the largest a u32 says), before and after
        // the hello: nothing may be allocated for it.
        let mut s = UnixStream::connect(&path).unwrap();
        write(&mut s, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        let huge_pre = until_closed(s, &format!("{name}: 4 GiB prefix"));
        let huge_post = after_hello(&path, t, |mut s| {
            write(&mut s, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
            let n = until_closed(s, &format!("{name}: 4 GiB prefix after hello"));
            format!("{n} B then closed")
        });
        served(&mesh, attaches, &format!("{name}: 4 GiB prefix"));

        // Half a frame, then silence: the partial-frame deadline closes it.
        let mut s = UnixStream::connect(&path).unwrap();
        let mut half = 200u32.to_le_bytes().to_vec();
        half.extend_from_slice(&noise(7, 100));
        write(&mut s, &half);
        let t0 = Instant::now();
        until_closed(s, &format!("{name}: half a frame"));
        let half_closed = t0.elapsed();
        served(&mesh, attaches, &format!("{name}: half a frame"));

        // A valid hello, then garbage frames.
        let junk = noise(i as u64 + 100, 64);
        let mut frame = u32::try_from(junk.len()).unwrap().to_le_bytes().to_vec();
        frame.extend_from_slice(&junk);
        let garbage = after_hello(&path, t, |mut s| {
            for _ in 0..3 {
                write(&mut s, &frame);
            }
            answered_or_closed(s, &format!("{name}: garbage after hello"))
        });
        served(&mesh, attaches, &format!("{name}: garbage after hello"));

        // 1,000 idle connections at once, held while the node is checked.
        let idle: Vec<UnixStream> = (0..1000)
            .filter_map(|_| UnixStream::connect(&path).ok())
            .collect();
        served(&mesh, attaches, &format!("{name}: 1,000 idle connections"));
        drop(idle);

        summary.push(format!(
            "{} {name}: random → {random} B then closed; 4 GiB prefix → {huge_pre} B then closed / \
             after the hello {huge_post}; half frame closed after {half_closed:?}; \
             garbage after hello → {garbage}",
            t.daemon.name()
        ));
    }
    other_uid(&mesh, attaches);
    for l in summary {
        eprintln!("{l}");
    }
}

/// A client of another uid (`nobody`, 65534) on each socket, when the test
/// runs as root (in CI it does, and must): the runtime directory is opened
/// to it so the daemon's own peer-credential check is what refuses it. It
/// gets no hello answer: the daemon closes the connection.
fn other_uid(mesh: &Mesh, attaches: u64) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix_is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root; the other-uid case must run there"
        );
        eprintln!("not root: the other-uid case is not run");
        return;
    }
    let dir = mesh.node(0).sock("x");
    let dir = dir.parent().unwrap();
    let opened = [dir, dir.parent().unwrap(), mesh.node(0).dir()];
    let before: Vec<_> = opened
        .iter()
        .map(|d| std::fs::metadata(d).unwrap().permissions())
        .collect();
    for d in &opened {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    for t in &TARGETS {
        let path = mesh.node(0).sock(t.sock);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        // python3 is what .ci/run already needs; it connects, sends a
        // hello-sized blob and reports what the daemon did.
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_UNIX)\n\
            s.settimeout(30)\n\
            try:\n  s.connect(sys.argv[1])\n\
            except OSError as e:\n  print('connect-refused', e.errno); sys.exit(0)\n\
            try:\n  s.sendall(b'\\x10\\x00\\x00\\x00' + b'\\x00'*16)\n\
            except OSError:\n  pass\n\
            got=b''\n\
            try:\n  while True:\n    b=s.recv(4096)\n    if not b: break\n    got+=b\n\
            except TimeoutError:\n  print('still-open', len(got)); sys.exit(0)\n\
            except OSError as e:\n  print('reset', len(got)); sys.exit(0)\n\
            print('closed', len(got))\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3");
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success()
                && (said.starts_with("closed")
                    || said.starts_with("reset")
                    || said.starts_with("connect-refused")),
            "{}: uid 65534 got {said:?} {}",
            t.sock,
            String::from_utf8_lossy(&out.stderr)
        );
        // Refused by the daemon (not by the file system) once the path is
        // open: it answered at most a small error frame, never a hello.
        assert!(!said.starts_with("connect-refused"), "{}: {said}", t.sock);
        eprintln!("{}: uid 65534 → {said}", t.sock);
        served(mesh, attaches, &format!("{}: another uid", t.sock));
    }
    for (d, p) in opened.iter().zip(before) {
        std::fs::set_permissions(d, p).unwrap();
    }
}

/// Room for 1,000 idle connections next to the test's own descriptors.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 {
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(4096), hard).unwrap();
    }
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
