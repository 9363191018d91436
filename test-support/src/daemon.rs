//! Spawned daemons in tests: finding (and building) the workspace's daemon
//! binaries, a child that is killed when the test ends, and a blocking
//! admin-socket client (`status` / `diagnostics` JSON).
//!
//! Binaries of *other* crates have no `CARGO_BIN_EXE_*`: [`workspace_bin`]
//! finds them next to the running test (`target/<profile>/`) and first runs
//! `cargo build -p <crate> --bin <name>` once per test process, so a
//! targeted `cargo nextest run -p gossipd` never runs a stale or missing
//! relayd (with `--workspace` they are already built and the build is a
//! no-op).
// Test helpers: a broken test environment is a panic with its reason, and
// the waits own the clock.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use wire::frame::{self, FrameReader, FrameWriter};
use wire::generated::admin as fa;
use wire::generated::hello::Role;
use wire::hello::{self, HelloConfig};

/// Every wait in the daemon tests ends here at the latest (a failure, never
/// a speed measurement).
pub const PATIENCE: Duration = Duration::from_secs(60);

static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The path of binary `name` of workspace crate `krate`, built first (once
/// per process) with the profile the running test was built with.
///
/// # Panics
/// When the build fails or the binary is not where cargo puts it.
pub fn workspace_bin(krate: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in target/<profile>/deps")
        .to_owned();
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", krate, "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("running cargo build");
        assert!(
            status.success(),
            "cargo build -p {krate} --bin {name} failed"
        );
        built.push(name.to_owned());
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// A spawned process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// Sends SIGTERM (with kill(1): no signal-sending dependency) and waits
    /// for the exit.
    ///
    /// # Panics
    /// When kill(1) or the wait fails.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(st.success());
        self.0.wait().expect("wait")
    }
}

/// One admin request to the daemon `daemon` at `path`: `status` (its
/// summary) when `status`, else `diagnostics`; the JSON it answered.
///
/// # Errors
/// Connecting or the exchange failed (the daemon is not up yet).
///
/// # Panics
/// When the answer is not the JSON document asked for.
pub fn admin_request(
    path: &Path,
    daemon: &str,
    status: bool,
) -> Result<serde_json::Value, wire::WireError> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(PATIENCE))?;
    let mut r = FrameReader::new(&s, frame::MIN_MAX_FRAME);
    let mut w = FrameWriter::new(&s, frame::MIN_MAX_FRAME);
    hello::exchange(
        &mut r,
        &mut w,
        &HelloConfig::new("tern.admin", Role::Nodectl),
    )?;
    let mut fbb = FlatBufferBuilder::new();
    let (kind, msg) = if status {
        let m = fa::StatusRequest::create(&mut fbb, &fa::StatusRequestArgs { request_id: 7 });
        (fa::AdminMessage::StatusRequest, m.as_union_value())
    } else {
        let m = fa::DiagnosticsRequest::create(
            &mut fbb,
            &fa::DiagnosticsRequestArgs {
                request_id: 7,
                section: None,
            },
        );
        (fa::AdminMessage::DiagnosticsRequest, m.as_union_value())
    };
    let root = fa::AdminFrame::create(
        &mut fbb,
        &fa::AdminFrameArgs {
            msg_type: kind,
            msg: Some(msg),
        },
    );
    fa::finish_admin_frame_buffer(&mut fbb, root);
    w.write_frame(fbb.finished_data())?;
    let buf = r.read_frame()?.ok_or(wire::WireError::PeerClosed)?.to_vec();
    let f = frame::decode::<frame::AdminSchema>(&buf)?;
    let text = if status {
        let st = f.msg_as_status_response().expect("a status response");
        assert_eq!(st.daemon(), daemon);
        st.summary().expect("a status summary").to_owned()
    } else {
        f.msg_as_diagnostics_response()
            .expect("a diagnostics response")
            .json()
            .to_owned()
    };
    Ok(serde_json::from_str(&text).expect("admin JSON"))
}

/// Polls `diagnostics` of `daemon` at `path` until `ok` holds for it
/// (within [`PATIENCE`]); the document that satisfied it.
///
/// # Panics
/// When it never does.
pub fn wait_for(
    path: &Path,
    daemon: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let d = admin_request(path, daemon, false);
        if let Ok(d) = &d
            && ok(d)
        {
            return d.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never: {what}; last diagnostics {d:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
