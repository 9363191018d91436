//! Admin socket (`tern.admin` frames: status, diagnostics as JSON) and the
//! Prometheus endpoint on loopback.
//!
//! Both are served concurrently on the I/O runtime: every connection is a
//! task, so an operator's `status` is answered while any number of other
//! clients are connected. Each admin request is bounded by
//! [`server_core::Limits::request_deadline`] (1 s by default) end to end:
//! its frame must arrive within it (the frame deadline), the answer is
//! built without waiting on anything but the scheduler and key-cache locks
//! (held for microseconds), and an answer the client does not read within
//! it closes the connection. The admin listener has its own connection cap
//! (64), so a flood of verify connections cannot take its slots. The
//! metrics endpoint is `tern-metrics`' (`GET /metrics` parsed with
//! `httparse`, at most 8 scrapes at once, each within 5 s); a scrape reads
//! values sampled once a second and takes none of the daemon's locks.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use server_core::{Accepted, Listener};
use wire::generated::admin as fa;
use wire::generated::hello::Role;

use super::Shared;
use crate::metrics::{Exported, SAMPLE_EVERY};
use crate::session::{Established, HelloParams};
use tern_metrics::Exposition;
use wire::WireError;

/// Protocol name of the admin socket.
pub const ADMIN_PROTOCOL: &str = server_core::admin::PROTOCOL;
const ADMIN_MAX_FRAME: usize = 64 << 10;

pub(crate) async fn serve_admin(shared: Arc<Shared>, listener: Listener) {
    let s = shared.clone();
    let stop = async move { s.until(Shared::stopped).await };
    listener
        .serve_until(stop, |conn| {
            tokio::spawn(admin_conn(shared.clone(), conn));
        })
        .await;
}

async fn admin_conn(shared: Arc<Shared>, conn: Accepted) {
    let config = admin_hello(Role::Verifyd, shared.instance).config();
    let mut fbb = FlatBufferBuilder::new();
    let s = shared.clone();
    server_core::admin::serve_connection(
        conn,
        &config,
        &shared.cfg.admin_limits,
        shared.reads.clone(),
        shared.responses.clone(),
        std::future::pending(),
        |frame| answer(&s, &mut fbb, frame),
    )
    .await;
}

/// The answer to one admin frame (a status, diagnostics or a typed error).
fn answer(shared: &Shared, fbb: &mut FlatBufferBuilder<'static>, buf: &[u8]) -> Vec<u8> {
    let snap = shared.snapshot();
    let daemon = server_core::admin::Daemon {
        name: "verifyd",
        version: env!("CARGO_PKG_VERSION"),
        instance: shared.instance,
        uptime_ms: snap.uptime_s as u64 * 1000,
        healthy: !snap.draining,
    };
    server_core::admin::answer_json(fbb, buf, daemon, || {
        serde_json::to_string(&snap).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// Our side of an admin hello: small frames, never a ring.
fn admin_hello(role: Role, instance: u64) -> HelloParams {
    HelloParams {
        protocol: ADMIN_PROTOCOL,
        role,
        instance,
        max_frame: ADMIN_MAX_FRAME,
        ring_capacity: 0,
    }
}

/// Asks a daemon's admin socket for diagnostics and returns the JSON.
pub fn query_diagnostics(path: &std::path::Path) -> Result<String, WireError> {
    let s = UnixStream::connect(path)?;
    let mut conn = Established::handshake(s, &admin_hello(Role::Nodectl, 0))?;
    let mut fbb = FlatBufferBuilder::new();
    let req = fa::DiagnosticsRequest::create(
        &mut fbb,
        &fa::DiagnosticsRequestArgs {
            request_id: 1,
            section: None,
        },
    );
    let root = fa::AdminFrame::create(
        &mut fbb,
        &fa::AdminFrameArgs {
            msg_type: fa::AdminMessage::DiagnosticsRequest,
            msg: Some(req.as_union_value()),
        },
    );
    fa::finish_admin_frame_buffer(&mut fbb, root);
    conn.send(fbb.finished_data())?;
    let buf = conn.recv()?.ok_or(WireError::PeerClosed)?;
    let frame = wire::frame::decode::<wire::frame::AdminSchema>(&buf)?;
    frame
        .msg_as_diagnostics_response()
        .map(|d| d.json().to_owned())
        .ok_or_else(|| WireError::UnexpectedMessage {
            expected: "DiagnosticsResponse",
            got: format!("{:?}", frame.msg_type()),
        })
}

/// The Prometheus endpoint (`--metrics-listen`, on `tern-metrics`):
/// `GET /metrics` on `listener` (bound by [`tern_metrics::bind_loopback`])
/// until the daemon stops, the sampled values refreshed from a snapshot
/// every [`SAMPLE_EVERY`].
pub(crate) async fn serve_metrics(shared: Arc<Shared>, listener: std::net::TcpListener) {
    let mut exp = Exposition::new("verifyd", env!("CARGO_PKG_VERSION"));
    let exported = Exported::register(exp.registry(), &shared.metrics);
    let refresh = || exported.sample(&shared.snapshot());
    let stop = shared.until(Shared::stopped);
    tern_metrics::serve_sampled(listener, exp, SAMPLE_EVERY, refresh, stop).await;
}
