//! The node under test: relayd, verifyd and gossipd, the release binaries
//! next to the `stagebench` executable, spawned on one temp dir laid out as
//! `test-support`'s `node::Node` lays out a node (`node.toml`, sockets in
//! `run/<name>/`, the identity key in `state/`), UDP on an ephemeral
//! loopback port.
//!
//! Every daemon is a `Daemon`, SIGKILLed and reaped when dropped, and
//! `NodeUnderTest` drops its daemons before its temp dir, so a suite that
//! ends or fails leaves no process and no directory behind; each also has
//! SIGKILL as its parent-death signal, so an interrupted `stagebench`
//! (whose destructors do not run) takes its daemons with it. Each daemon's
//! stderr goes to a log file in the temp dir; a daemon that exits or does
//! not come up within `PATIENCE` is an error quoting the end of its log.
//!
//! Also here: admin-socket `diagnostics` with a bounded wait (relayd's
//! `status` summary is the same document) and the per-process resident
//! memory (`VmRSS`, `VmHWM` from `/proc/<pid>/status`) and CPU time
//! (`utime + stime` from `/proc/<pid>/stat`: every thread's, exited ones
//! included).

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use libtransport::PeerId;
use serde_json::Value;

/// Longest wait for a daemon to come up (or an admin answer).
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);
/// The node's name (its sockets are in `run/<NAME>/`).
const NAME: &str = "bench";
/// The three daemons, in start order.
pub(crate) const DAEMONS: [&str; 3] = ["relayd", "verifyd", "gossipd"];
/// The command that builds them.
pub(crate) const BUILD: &str = "cargo build --release -p relayd -p gossipd -p verifyd";

/// A spawned daemon, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call (prctl).
        unsafe {
            // Killed with stagebench even when no destructor runs (SIGINT,
            // SIGKILL): the kernel sends SIGKILL when the spawning thread (the
            // main thread) exits.
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Self { name, child, log })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the daemon has exited, with the end of its log.
    fn alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "{} exited ({st}); its log ends:\n{}",
                self.name,
                self.tail()
            );
        }
        Ok(())
    }

    /// The last lines of its stderr.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls the admin socket `sock` until its diagnostics satisfy `ok`;
    /// the document that did.
    fn wait(&mut self, sock: &Path, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.alive()?;
            let last = match diagnostics(sock) {
                Ok(d) if ok(&d) => return Ok(d),
                Ok(d) => d.to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{}: never {what} within {PATIENCE:?}; last answer {last}; its log ends:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// relayd, verifyd and gossipd of one node.
#[derive(Debug)]
pub(crate) struct NodeUnderTest {
    // Dropped in this order: the daemons, then their directory.
    gossipd: Daemon,
    verifyd: Daemon,
    relayd: Daemon,
    dir: tempfile::TempDir,
    /// relayd's transport identity (also gossipd's: one key file).
    pub(crate) peer_id: PeerId,
    /// relayd's UDP address.
    pub(crate) listen: SocketAddr,
}

/// Where the daemon binaries are: next to this executable.
fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the stagebench executable's path")?;
    let dir = exe
        .parent()
        .context("the stagebench executable's directory")?;
    Ok(dir.join(name))
}

/// The three binaries, or an error naming the missing ones and [`BUILD`].
pub(crate) fn binaries() -> Result<[PathBuf; 3]> {
    let paths = DAEMONS.map(binary);
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        let p = p?;
        if p.is_file() {
            found.push(p);
        } else {
            missing.push(p.display().to_string());
        }
    }
    if !missing.is_empty() {
        bail!(
            "stagebench node runs the release daemons next to stagebench; missing: {}. \
             Build them with `{BUILD}`",
            missing.join(", ")
        );
    }
    found
        .try_into()
        .map_err(|_| anyhow::anyhow!("three binaries"))
}

impl NodeUnderTest {
    /// Writes the node's config and starts relayd, verifyd (its default
    /// worker count, one per core; aws-lc, as the in-process verifier) and
    /// gossipd; returns once relayd listens and gossipd is attached to
    /// relayd and connected to verifyd.
    pub(crate) fn start() -> Result<Self> {
        let [relayd_bin, verifyd_bin, gossipd_bin] = binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("stagebench-node-")
            .tempdir()
            .context("temp dir")?;
        let run = dir.path().join("run");
        let sock = |name: &str| run.join(NAME).join(name);
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{NAME}\"\nruntime_dir = \"{run}\"\nidentity_key = \"{key}\"\n\n\
                 [relayd]\nlisten = [\"127.0.0.1:0\"]\n\n\
                 [gossipd]\nverifyd_sockets = [\"{verifyd}\"]\n",
                run = run.display(),
                key = dir.path().join("state/identity.key").display(),
                verifyd = sock("verifyd.sock").display(),
            ),
        )
        .context("writing node.toml")?;
        let log = |name: &str| dir.path().join(format!("{name}.log"));
        let with_config = |bin: &Path| {
            let mut c = Command::new(bin);
            c.arg("--config").arg(&config);
            c
        };

        let mut relayd = Daemon::spawn("relayd", &mut with_config(&relayd_bin), log("relayd"))?;
        let status = relayd.wait(&sock("relayd-admin.sock"), "answered", |j| {
            j["listen"].is_string() && j["peer_id"].is_string()
        })?;
        let peer_id = PeerId::from_hex(status["peer_id"].as_str().unwrap_or_default())
            .context("relayd's peer_id")?;
        let listen: SocketAddr = status["listen"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .context("relayd's listen address")?;

        let mut verifyd = Daemon::spawn(
            "verifyd",
            Command::new(&verifyd_bin)
                .arg("--socket")
                .arg(sock("verifyd.sock"))
                .arg("--admin-socket")
                .arg(sock("verifyd-admin.sock"))
                .arg("--no-calibrate"),
            log("verifyd"),
        )?;
        verifyd.wait(&sock("verifyd-admin.sock"), "answered", |_| true)?;

        let mut gossipd = Daemon::spawn("gossipd", &mut with_config(&gossipd_bin), log("gossipd"))?;
        gossipd.wait(
            &sock("gossipd-admin.sock"),
            "attached to relayd and connected to verifyd",
            |j| j["relayd_attached"] == true && j["verifyd"]["connected"] == 1,
        )?;
        Ok(Self {
            gossipd,
            verifyd,
            relayd,
            dir,
            peer_id,
            listen,
        })
    }

    /// The socket `name` in the node's runtime directory.
    pub(crate) fn sock(&self, name: &str) -> PathBuf {
        self.dir.path().join("run").join(NAME).join(name)
    }

    /// The daemons, in [`DAEMONS`] order.
    fn daemons(&self) -> [&Daemon; 3] {
        [&self.relayd, &self.verifyd, &self.gossipd]
    }

    /// An error if any daemon has exited.
    pub(crate) fn alive(&mut self) -> Result<()> {
        self.relayd.alive()?;
        self.verifyd.alive()?;
        self.gossipd.alive()
    }

    /// gossipd's diagnostics now.
    pub(crate) fn gossipd_diagnostics(&self) -> Result<Value> {
        diagnostics(&self.sock("gossipd-admin.sock")).context("gossipd diagnostics")
    }

    /// Each daemon's resident memory now.
    pub(crate) fn memory(&self) -> Result<[Memory; 3]> {
        let [r, v, g] = self.daemons().map(|d| Memory::of(d.pid()));
        Ok([r?, v?, g?])
    }

    /// Each daemon's CPU time so far, and this process's, ns.
    pub(crate) fn cpu_ns(&self) -> Result<Vec<u64>> {
        let [r, v, g] = self.daemons().map(|d| d.pid());
        [r, v, g, std::process::id()]
            .into_iter()
            .map(cpu_ns)
            .collect()
    }
}

/// One process's resident memory, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    /// `VmRSS`.
    pub(crate) rss_kib: u64,
    /// `VmHWM` (the peak so far).
    pub(crate) hwm_kib: u64,
}

impl Memory {
    /// Reads `/proc/<pid>/status`.
    pub(crate) fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} in {path}"))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// CPU time process `pid` has used so far (user + system, all its
/// threads), ns.
pub(crate) fn cpu_ns(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised command name start at field 3
    // (state); utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| {
            v.parse::<u64>()
                .with_context(|| format!("a CPU time in {path}"))
        })
        .sum::<Result<u64>>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .context("sysconf(CLK_TCK)")?;
    Ok(ticks * (1_000_000_000 / hz))
}

/// MiB of the three daemons' `VmRSS` together.
pub(crate) fn rss_mib(m: &[Memory; 3]) -> f64 {
    m.iter().map(|m| m.rss_kib).sum::<u64>() as f64 / 1024.0
}

/// One `diagnostics` request to the admin socket at `path` (verifyd's
/// admin client, which speaks to every daemon's admin socket), on a thread
/// of its own so that the wait is bounded by [`PATIENCE`]: the JSON the
/// daemon answered.
pub(crate) fn diagnostics(path: &Path) -> Result<Value> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_owned();
    std::thread::Builder::new()
        .name("admin-query".into())
        .spawn(move || {
            let _ = tx.send(verifyd::server::admin::query_diagnostics(&p));
        })
        .context("starting the admin query")?;
    let json = rx
        .recv_timeout(PATIENCE)
        .map_err(|_| anyhow::anyhow!("no admin answer within {PATIENCE:?}"))?
        .with_context(|| format!("admin request to {}", path.display()))?;
    serde_json::from_str(&json).context("diagnostics JSON")
}
