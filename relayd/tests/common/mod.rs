//! Shared parts of the relayd binary tests: a spawned daemon in its own
//! temp dir (killed when the test ends), a blocking admin client, a fake
//! gossipd on the real relay socket, and a libtransport peer on real UDP.
#![allow(dead_code)]

use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use wire::frame::{self, FrameReader, FrameWriter, RelayMsg};
use wire::generated::hello::Role;
use wire::hello;
use wire::relay::{self, GossipdRings, InboundRecord};
use wire::ring::{Geometry, PopError, SpinConfig};

/// Every wait in these tests ends here at the latest (a failure, never a
/// speed measurement).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Ring bytes the fake gossipd offers (relayd offers its configured 4 MiB;
/// the hello settles on the smaller).
pub const RING: u32 = 64 * 1024;

/// A relayd process in its own directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub config: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node config the tests run relayd with: every path in `dir`, UDP on
/// an ephemeral loopback port.
pub fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        "[node]\nname = \"t\"\nruntime_dir = \"{run}\"\nidentity_key = \"{key}\"\n\n[relayd]\nlisten = [\"127.0.0.1:0\"]\n",
        run = dir.join("run").display(),
        key = dir.join("state/identity.key").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary to completion with `args`.
pub fn run_to_end(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relayd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

impl Daemon {
    /// Starts relayd and waits until its admin socket answers.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// [`Daemon::start`] with `--set` overrides.
    pub fn start_with(sets: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayd"));
        for s in sets {
            cmd.args(["--set", s]);
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut d = Daemon { dir, child, config };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("relayd exited at start: {status}");
            }
            if d.admin_path().exists() && status_json(&d.admin_path()).is_ok() {
                return d;
            }
            assert!(Instant::now() < deadline, "relayd never answered status");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn relay_path(&self) -> PathBuf {
        self.dir.path().join("run/t/relayd.sock")
    }

    pub fn admin_path(&self) -> PathBuf {
        self.dir.path().join("run/t/relayd-admin.sock")
    }

    /// The `diagnostics` document.
    pub fn diagnostics(&self) -> serde_json::Value {
        admin_request(&self.admin_path(), false).unwrap()
    }

    /// Polls `diagnostics` until `ok` holds for it.
    pub fn wait_for(
        &self,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let d = self.diagnostics();
            if ok(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "never: {what}; last diagnostics {d:#}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// relayd's UDP address and peer id, from `status`.
    pub fn peer(&self) -> (std::net::SocketAddr, libtransport::PeerId) {
        let s = status_json(&self.admin_path()).unwrap();
        let addr = s["listen"].as_str().unwrap().parse().unwrap();
        let id = libtransport::PeerId::from_hex(s["peer_id"].as_str().unwrap()).unwrap();
        (addr, id)
    }
}

/// `status` summary JSON.
pub fn status_json(path: &Path) -> Result<serde_json::Value, wire::WireError> {
    admin_request(path, true)
}

/// One admin request: `status` (its summary) or `diagnostics`.
pub fn admin_request(path: &Path, status: bool) -> Result<serde_json::Value, wire::WireError> {
    test_support::daemon::admin_request(path, "relayd", status)
}

/// A fake gossipd attached to relayd's relay socket.
pub struct Gossipd {
    pub control: UnixStream,
    pub rings: GossipdRings,
    pub session: hello::Session,
    buf: Vec<u8>,
}

/// Why [`Gossipd::try_attach`] failed.
#[derive(Debug)]
pub enum AttachError {
    /// The hello failed (relayd's `Busy` refusal comes here).
    Hello(wire::WireError),
    /// The data channel failed (e.g. a `Busy` frame in place of the
    /// offer, when another gossipd finished its hello first).
    Channel(relay::ChannelError),
}

/// Connects and runs the hello as gossipd; `Err` carries relayd's refusal.
pub fn hello_as_gossipd(path: &Path) -> Result<(UnixStream, hello::Session), wire::WireError> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(PATIENCE))?;
    let mut r = FrameReader::new(&s, frame::MIN_MAX_FRAME);
    let mut w = FrameWriter::new(&s, frame::MIN_MAX_FRAME);
    let cfg = relay::hello_config(Role::Gossipd, RING, u64::from(std::process::id()));
    let session = hello::exchange(&mut r, &mut w, &cfg)?;
    Ok((s, session))
}

impl Gossipd {
    pub fn attach(path: &Path) -> Gossipd {
        Gossipd::try_attach(path).unwrap()
    }

    /// [`Gossipd::attach`], or how it failed.
    pub fn try_attach(path: &Path) -> Result<Gossipd, AttachError> {
        let (control, session) = hello_as_gossipd(path).map_err(AttachError::Hello)?;
        let geo = Geometry::negotiated(session.ring_capacity, session.max_frame).unwrap();
        let rings = relay::channel::attach(&control, geo, SpinConfig::default())
            .map_err(AttachError::Channel)?;
        Ok(Gossipd {
            control,
            rings,
            session,
            buf: Vec::new(),
        })
    }

    /// The next inbound record (within [`PATIENCE`]).
    pub fn next(&mut self) -> InboundRecord {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.rings.inbound.try_pop(&mut self.buf) {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(PopError::PeerGone(g)) => panic!("relayd gone: {g}"),
                Err(e) => panic!("pop: {e}"),
            }
            assert!(Instant::now() < deadline, "no inbound record");
            std::thread::sleep(Duration::from_millis(2));
        }
        let RelayMsg::Inbound(m) = frame::decode_relay(&self.buf).unwrap() else {
            panic!("not an Inbound record");
        };
        InboundRecord::from_table(&m)
    }

    /// Tells relayd the app has these retained records.
    pub fn consumed(&self, seqs: &[u64]) {
        let mut fbb = FlatBufferBuilder::new();
        let (bytes, taken) = relay::encode_consumed(&mut fbb, seqs);
        assert_eq!(taken, seqs.len());
        FrameWriter::new(&self.control, self.session.max_frame)
            .write_frame(bytes)
            .unwrap();
    }

    /// Pushes one Outbound record into the outbound ring.
    pub fn send(
        &mut self,
        peer: &libtransport::PeerId,
        kind: wire::generated::relay::StreamKind,
        send_id: Option<[u8; 16]>,
        payload: &[u8],
    ) {
        let out = relay::OutboundSend {
            peer: peer.0,
            kind,
            generation: 0,
            send_id,
            budget_ms: 10_000,
            payload,
        };
        let mut fbb = FlatBufferBuilder::new();
        self.rings.outbound.push(out.encode(&mut fbb)).unwrap();
    }

    /// Reads one control frame (relayd → gossipd) and hands it to `f`.
    pub fn control_frame<T>(
        &self,
        f: impl FnOnce(Result<RelayMsg<'_>, wire::WireError>) -> T,
    ) -> T {
        let mut r = FrameReader::new(&self.control, self.session.max_frame);
        // Exactly one frame: a fresh reader must not read ahead and lose
        // the next one.
        let p = r
            .read_frame_exact()
            .unwrap()
            .expect("control socket closed");
        f(frame::decode_relay(p))
    }
}

/// Reads until EOF (or an error, e.g. a reset); what arrived.
pub fn read_to_close(mut s: &UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("relayd kept a hostile connection open past {PATIENCE:?}")
            }
            Err(_) => return out,
        }
    }
}

/// A libtransport peer on real UDP loopback, with its own runtime.
pub struct Peer {
    pub rt: tokio::runtime::Runtime,
    pub ep: libtransport::Endpoint,
}

impl Peer {
    pub fn new() -> Peer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ep = rt.block_on(async {
            libtransport::Endpoint::bind(
                "127.0.0.1:0".parse().unwrap(),
                libtransport::Identity::generate().unwrap(),
                libtransport::Config::default(),
            )
            .unwrap()
        });
        Peer { rt, ep }
    }

    /// A receive-ACKed DM to `to`, within `budget`.
    pub fn send_dm(
        &self,
        to: &libtransport::PeerId,
        body: &'static [u8],
        budget: Duration,
    ) -> Result<libtransport::proto::ack::Delivered, libtransport::proto::ack::AckError> {
        self.rt.block_on(self.ep.send_with_receive_ack(
            to,
            libtransport::Kind::DM,
            bytes::Bytes::from_static(body),
            budget,
        ))
    }

    pub fn connect(&self, d: &Daemon) -> libtransport::PeerId {
        let (addr, id) = d.peer();
        self.rt.block_on(self.ep.connect(addr, id)).unwrap();
        id
    }
}
