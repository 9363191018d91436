//! Shared harness for the hostile-client tests: a real `verifyd` process
//! (optionally under a descriptor limit or in a pids cgroup), a well-behaved
//! client whose latency is measured before and during an attack, admin
//! queries under a deadline, and the daemon's RSS.
//!
//! Every attack test follows one shape: start the daemon, measure the good
//! client idle, mount the attack, measure the good client again *while the
//! attack holds*, ask the admin socket for its status with a 1 s deadline,
//! read the daemon's RSS, then check the bars (see [`Bars::check`]).
#![allow(
    dead_code,
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used
)] // test harness: owns the clock, unwraps

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use verifyd::fixtures::Corpus;
use verifyd::proto::{self, ItemRef, Response};
use verifyd::session::{Established, HelloParams};
use verifyd::{BackendKind, Verdict};
use wire::generated::hello::Role;

/// How long the admin socket may take to answer during an attack.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(1);

/// The good client's p99 during an attack may be at most this many times
/// its idle p99.
pub const P99_FACTOR: f64 = 5.0;

/// Idle p99 values below this are raised to it before applying
/// [`P99_FACTOR`]: on a shared 2-core VM a single scheduler hiccup is
/// ~1 ms, so "5× 150 µs" would measure the VM, not the daemon.
pub const P99_FLOOR: Duration = Duration::from_millis(1);

/// A limit the daemon process is started under.
#[derive(Debug, Clone, Copy)]
pub enum ProcessLimit {
    /// None.
    None,
    /// `RLIMIT_NOFILE` (soft and hard) set to this.
    NoFile(u64),
    /// A pids cgroup with `pids.max` set to this (threads count as tasks).
    Tasks(u64),
}

/// A `verifyd` process for one test.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub admin: PathBuf,
    cgroup: Option<PathBuf>,
}

impl Daemon {
    /// Starts `verifyd` with `--threads 1`, the aws-lc backend (no
    /// calibration: the tests measure serving, not backends) and `extra`
    /// arguments, under `limit`.
    pub fn start(dir: &Path, extra: &[&str], limit: ProcessLimit) -> Daemon {
        let socket = dir.join("v.sock");
        let admin = dir.join("v.sock.admin");
        let cgroup = match limit {
            ProcessLimit::Tasks(n) => Some(make_pids_cgroup(n)),
            _ => None,
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_verifyd"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--admin-socket")
            .arg(&admin)
            .args(["--threads", "1", "--backend", "aws-lc"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let ProcessLimit::NoFile(n) = limit {
            // SAFETY: setrlimit is async-signal-safe and touches no memory of
            // the parent; it runs in the child between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = nix::libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(cg) = &cgroup {
            let procs = cg.join("cgroup.procs");
            // SAFETY: only open/write/close on a path computed before the
            // fork; no allocation in the child.
            let procs =
                std::ffi::CString::new(procs.into_os_string().into_encoded_bytes()).unwrap();
            unsafe {
                cmd.pre_exec(move || {
                    let fd = nix::libc::open(procs.as_ptr(), nix::libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0" moves the writing process itself.
                    let r = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                    nix::libc::close(fd);
                    if r != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn verifyd");
        let d = Daemon {
            child,
            socket,
            admin,
            cgroup,
        };
        let t = Instant::now();
        while !d.admin.exists() || UnixStream::connect(&d.socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "verifyd did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process's resident set, in bytes.
    pub fn rss(&self) -> u64 {
        rss_bytes(self.child.id())
    }

    /// Threads of the process.
    pub fn threads(&self) -> u64 {
        status_field(self.child.id(), "Threads:")
    }

    /// Open descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Diagnostics JSON from the admin socket and how long it took, or
    /// `None` if no answer came within `deadline`.
    pub fn admin_status(&self, deadline: Duration) -> Option<(Duration, serde_json::Value)> {
        let path = self.admin.clone();
        let (tx, rx) = mpsc::channel();
        let t = Instant::now();
        std::thread::spawn(move || {
            let r = verifyd::server::admin::query_diagnostics(&path);
            let _ = tx.send(r);
        });
        match rx.recv_timeout(deadline) {
            Ok(Ok(json)) => Some((
                t.elapsed(),
                serde_json::from_str(&json).expect("status is JSON"),
            )),
            Ok(Err(e)) => {
                eprintln!("admin query failed: {e}");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// Makes a pids cgroup (v1 hierarchy at `/sys/fs/cgroup/pids`, else the v2
/// root with the `pids` controller) limited to `max` tasks. Panics with the
/// reason when neither can be made: the task-limit attack must not pass by
/// not running.
fn make_pids_cgroup(max: u64) -> PathBuf {
    let name = format!("tern-verifyd-test-{}-{}", std::process::id(), max);
    let candidates = [
        PathBuf::from("/sys/fs/cgroup/pids"),
        PathBuf::from("/sys/fs/cgroup/unified"),
        PathBuf::from("/sys/fs/cgroup"),
    ];
    let mut tried = Vec::new();
    for root in candidates {
        let dir = root.join(&name);
        match std::fs::create_dir(&dir)
            .and_then(|()| std::fs::write(dir.join("pids.max"), max.to_string()))
        {
            Ok(()) => return dir,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                tried.push(format!("{}: {e}", root.display()));
            }
        }
    }
    panic!("no pids cgroup could be made (needs root and a pids controller): {tried:?}");
}

fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RSS of `pid` in bytes (0 once it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    status_field(pid, "VmRSS:") * 1024
}

/// Latency summary of the good client.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub n: usize,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.0} µs, p99 {:.0} µs over {}",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.n
        )
    }
}

/// The `q` quantile of `v` (sorted in place).
pub fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// A well-behaved client: one connection on frames, keys registered, one
/// small request at a time, every verdict checked against the ground truth.
pub struct GoodClient {
    conn: Established,
    fbb: FlatBufferBuilder<'static>,
    corpus: Corpus,
    ids: Vec<u64>,
    next: u64,
}

impl GoodClient {
    /// Connects to `socket` (retrying for up to 5 s: an attack may hold the
    /// daemon's connection cap when it starts) and registers the corpus keys.
    pub fn connect(socket: &Path) -> GoodClient {
        let corpus = Corpus::build(BackendKind::AwsLc, 2, 8, 64, 16, 4, 7).unwrap();
        let t = Instant::now();
        let mut conn = loop {
            match UnixStream::connect(socket)
                .map_err(wire::WireError::from)
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    Established::handshake(s, &client_hello(0))
                }) {
                Ok(c) => break c,
                Err(e) if t.elapsed() < Duration::from_secs(5) => {
                    eprintln!("good client: connect failed ({e}), retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("good client cannot connect: {e}"),
            }
        };
        let mut fbb = FlatBufferBuilder::new();
        let mut ids = Vec::new();
        for (i, k) in corpus.keys.iter().enumerate() {
            conn.send(proto::encode_register_key(&mut fbb, i as u64 + 1, k))
                .unwrap();
            let buf = conn.recv().unwrap().expect("daemon closed the good client");
            match proto::decode_response(&buf).unwrap() {
                Response::KeyRegistered { key_id, .. } => ids.push(key_id),
                other => panic!("register: unexpected {other:?}"),
            }
        }
        GoodClient {
            conn,
            fbb,
            corpus,
            ids,
            next: 1000,
        }
    }

    /// One verify request of one item; returns its round-trip time. Panics
    /// on a wrong verdict or a closed connection. `Busy` is retried after
    /// its hint (the time counts).
    pub fn one(&mut self) -> Duration {
        let s = &self.corpus.samples[(self.next as usize) % self.corpus.samples.len()];
        let item = ItemRef {
            key_id: self.ids[s.key],
            inline_key: None,
            msg: &s.msg,
            sig: &s.sig,
        };
        let t = Instant::now();
        loop {
            self.next += 1;
            let frame = proto::encode_verify_batch(&mut self.fbb, self.next, &[], &[item]);
            self.conn.send(frame).expect("good client send");
            let buf = self
                .conn
                .recv()
                .expect("good client recv")
                .expect("daemon closed the good client");
            match proto::decode_response(&buf).unwrap() {
                Response::VerifyResult {
                    request_id,
                    verdicts,
                } => {
                    assert_eq!(request_id, self.next);
                    assert_eq!(
                        verdicts,
                        vec![s.expected],
                        "wrong verdict for the good client"
                    );
                    return t.elapsed();
                }
                Response::Busy { retry_after_us, .. } => {
                    std::thread::sleep(Duration::from_micros(retry_after_us.into()));
                }
                other => panic!("good client: unexpected {other:?}"),
            }
        }
    }

    /// `n` sequential requests.
    pub fn measure(&mut self, n: usize) -> Latency {
        // A few warm-up requests (page faults, the first batch timer).
        for _ in 0..5 {
            self.one();
        }
        let mut v: Vec<Duration> = (0..n).map(|_| self.one()).collect();
        Latency {
            p50: quantile(&mut v, 0.5),
            p99: quantile(&mut v, 0.99),
            n,
        }
    }
}

/// A client hello for the verify protocol; `ring_capacity` 0 stays on frames.
pub fn client_hello(ring_capacity: u32) -> HelloParams {
    HelloParams {
        protocol: proto::PROTOCOL,
        role: Role::Client,
        instance: u64::from(std::process::id()),
        max_frame: 1 << 24,
        ring_capacity,
    }
}

/// Opens up to `n` connections to `path` that send nothing. Returns the
/// ones the daemon accepted (a refused connect is not an error: the daemon
/// may enforce a cap or run out of descriptors; the test checks the daemon,
/// not the attacker).
pub fn idle_connections(path: &Path, n: usize) -> Vec<UnixStream> {
    (0..n)
        .filter_map(|_| UnixStream::connect(path).ok())
        .collect()
}

/// Opens up to `n` connections that complete the hello for `protocol` and
/// then idle.
pub fn idle_after_hello(path: &Path, n: usize, protocol: &'static str) -> Vec<Established> {
    let p = HelloParams {
        protocol,
        ..client_hello(0)
    };
    (0..n)
        .filter_map(|_| {
            let s = UnixStream::connect(path).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            Established::handshake(s, &p).ok()
        })
        .collect()
}

/// A client that sends a valid hello one byte every `every`, forever (until
/// the daemon cuts it or `stop` is dropped). Returns when the daemon cut it,
/// or after `give_up`; the result says which and after how long.
pub fn trickle_hello(
    path: &Path,
    every: Duration,
    give_up: Duration,
) -> std::thread::JoinHandle<TrickleEnd> {
    // The bytes of a real hello frame: record what the client side writes.
    let (a, b) = UnixStream::pair().unwrap();
    let rec = std::thread::spawn(move || {
        let _ = Established::handshake(a, &client_hello(0));
    });
    let mut bytes = vec![0u8; 4096];
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = std::io::Read::read(&mut &b, &mut bytes).unwrap();
    bytes.truncate(n);
    drop(b);
    let _ = rec.join();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let t = Instant::now();
        let Ok(mut s) = UnixStream::connect(&path) else {
            return TrickleEnd::Refused;
        };
        for byte in bytes.iter().cycle() {
            if t.elapsed() > give_up {
                return TrickleEnd::StillOpen(t.elapsed());
            }
            if s.write_all(&[*byte]).is_err() {
                return TrickleEnd::Cut(t.elapsed());
            }
            std::thread::sleep(every);
        }
        unreachable!("cycle never ends")
    })
}

/// How a trickling client ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrickleEnd {
    /// The daemon refused the connection.
    Refused,
    /// The daemon closed it after this long.
    Cut(Duration),
    /// Still open when the client gave up.
    StillOpen(Duration),
}

/// What every attack test checks once the attack holds.
#[derive(Debug)]
pub struct Bars {
    pub idle: Latency,
    pub attacked: Latency,
    pub admin: Option<Duration>,
    pub rss_idle: u64,
    pub rss_attacked: u64,
    /// RSS the daemon may reach: its baseline plus the memory budgets it
    /// was configured with.
    pub rss_budget: u64,
}

impl Bars {
    /// The bars for one attack: the RSS budget is the idle RSS plus what
    /// `status` reports as the daemon's configured budgets.
    pub fn new(
        idle: Latency,
        attacked: Latency,
        admin: Option<Duration>,
        rss_idle: u64,
        rss_attacked: u64,
        status: &serde_json::Value,
    ) -> Bars {
        Bars {
            idle,
            attacked,
            admin,
            rss_idle,
            rss_attacked,
            rss_budget: rss_idle + configured_budgets(status),
        }
    }

    /// Panics with the measured figures unless the daemon kept serving the
    /// good client within [`P99_FACTOR`] of its idle p99, answered the admin
    /// query within [`ADMIN_DEADLINE`], and stayed under its memory budget.
    pub fn check(&self, what: &str) {
        eprintln!(
            "{what}: idle {}; attacked {}; admin {:?}; rss idle {:.1} MiB, attacked {:.1} MiB, budget {:.1} MiB",
            self.idle,
            self.attacked,
            self.admin,
            mib(self.rss_idle),
            mib(self.rss_attacked),
            mib(self.rss_budget)
        );
        let bar = self.idle.p99.max(P99_FLOOR).mul_f64(P99_FACTOR);
        assert!(
            self.attacked.p99 <= bar,
            "{what}: good client's p99 {:?} is over {P99_FACTOR}× its idle p99 ({:?}, floor {P99_FLOOR:?})",
            self.attacked.p99,
            self.idle.p99
        );
        let admin = self.admin.unwrap_or_else(|| {
            panic!("{what}: the admin socket did not answer within {ADMIN_DEADLINE:?}")
        });
        assert!(
            admin <= ADMIN_DEADLINE,
            "{what}: admin answered after {admin:?}"
        );
        assert!(
            self.rss_attacked <= self.rss_budget,
            "{what}: RSS {:.1} MiB over the budget {:.1} MiB",
            mib(self.rss_attacked),
            mib(self.rss_budget)
        );
    }
}

/// Bytes as MiB.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Ground truth helper: the verdicts of a corpus.
pub fn truth(c: &Corpus) -> Vec<Verdict> {
    c.samples.iter().map(|s| s.expected).collect()
}

/// Raises this test process's soft descriptor limit to its hard limit: the
/// attacks hold a couple of thousand sockets.
pub fn raise_own_nofile() {
    let mut lim = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 4096,
        "need 4096 descriptors for the attacks, hard limit is {}",
        lim.rlim_cur
    );
}

/// CPU time (user + system) the process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ')'.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// The listener section `name` of a status JSON (`server.listeners.NAME`).
pub fn listener<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let l = &status["server"]["listeners"][name];
    assert!(
        l.is_object(),
        "status has no server.listeners.{name}: {status:#}"
    );
    l
}

/// A counter of a status JSON as u64 (panics, printing the JSON, if absent).
pub fn counter(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {field} in {v:#}"))
}

/// Sum of the `limit`s of every memory budget the daemon reports
/// (`server.budgets`) and the key cache's byte bound (`keys.byte_limit`),
/// in bytes.
pub fn configured_budgets(status: &serde_json::Value) -> u64 {
    let b = &status["server"]["budgets"];
    let limits: Vec<u64> = match b {
        serde_json::Value::Object(m) => m.values().filter_map(|v| v["limit"].as_u64()).collect(),
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v["limit"].as_u64()).collect(),
        _ => panic!("status has no server.budgets: {status:#}"),
    };
    assert!(!limits.is_empty(), "no budgets in {b:#}");
    let keys = status["keys"]["byte_limit"]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no keys.byte_limit: {status:#}"));
    limits.iter().sum::<u64>() + keys
}

/// Keeps `n` connections to `path` open that never send a byte: whenever
/// the daemon cuts one (hello deadline, shedding), it is opened again, so
/// the attack holds for as long as the guard lives.
pub struct IdleFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<IdleFloodStats>>,
}

/// What an [`IdleFlood`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdleFloodStats {
    /// Connections opened in total.
    pub opened: u64,
    /// Connections the daemon closed.
    pub cut: u64,
    /// Connects that failed.
    pub refused: u64,
}

impl IdleFlood {
    /// Starts holding `n` idle connections to `path`; returns once the first
    /// `n` connects have been tried.
    pub fn start(path: &Path, n: usize) -> IdleFlood {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = path.to_path_buf();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut stats = IdleFloodStats::default();
            let open = |stats: &mut IdleFloodStats| match UnixStream::connect(&path) {
                Ok(s) => {
                    let _ = s.set_nonblocking(true);
                    stats.opened += 1;
                    Some(s)
                }
                Err(_) => {
                    stats.refused += 1;
                    None
                }
            };
            let mut conns: Vec<Option<UnixStream>> = (0..n).map(|_| open(&mut stats)).collect();
            let _ = ready_tx.send(());
            let mut buf = [0u8; 256];
            while !st.load(Ordering::Relaxed) {
                for c in &mut conns {
                    let gone = match c {
                        // EOF or an error frame followed by EOF: the daemon cut it.
                        Some(s) => match std::io::Read::read(s, &mut buf) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        },
                        None => true,
                    };
                    if gone {
                        if c.is_some() {
                            stats.cut += 1;
                        }
                        *c = open(&mut stats);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stats
        });
        let _ = ready_rx.recv();
        IdleFlood {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the flood and returns its counts.
    pub fn stop(mut self) -> IdleFloodStats {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
