//! Admin socket (`tern.admin` frames: status, diagnostics as JSON) and the
//! Prometheus text endpoint on loopback.
//!
//! Both are served by one thread each and handle one request at a time:
//! they are for operators and scrapers, not the data path.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use flatbuffers::FlatBufferBuilder;
use wire::generated::admin as fa;
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;

use super::Shared;
use crate::session::{Established, HelloParams};
use wire::WireError;

/// Protocol name of the admin socket.
pub const ADMIN_PROTOCOL: &str = "tern.admin";
const ADMIN_MAX_FRAME: usize = 64 << 10;

pub(crate) fn serve_admin(shared: &Arc<Shared>, listener: &UnixListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(s) = stream else { continue };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        if let Err(e) = admin_conn(shared, s) {
            tracing::debug!(error = %e, "admin connection ended");
        }
    }
}

fn admin_conn(shared: &Shared, s: UnixStream) -> Result<(), WireError> {
    let mut conn = Established::handshake(s, &admin_hello(Role::Verifyd, shared.instance))?;
    let mut fbb = FlatBufferBuilder::new();
    loop {
        let Some(buf) = conn.recv()? else {
            return Ok(());
        };
        let Ok(frame) = wire::frame::decode::<wire::frame::AdminSchema>(&buf) else {
            send_error(
                &mut conn,
                &mut fbb,
                ErrorCode::Malformed,
                "not an admin frame",
            )?;
            continue;
        };
        fbb.reset();
        let snap = shared.snapshot();
        let json =
            serde_json::to_string(&snap).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        let (kind, msg) = if let Some(r) = frame.msg_as_status_request() {
            let daemon = Some(fbb.create_string("verifyd"));
            let version = Some(fbb.create_string(env!("CARGO_PKG_VERSION")));
            let summary = Some(fbb.create_string(&json));
            let m = fa::StatusResponse::create(
                &mut fbb,
                &fa::StatusResponseArgs {
                    request_id: r.request_id(),
                    daemon,
                    version,
                    pid: std::process::id(),
                    instance: shared.instance,
                    uptime_ms: snap.uptime_s as u64 * 1000,
                    healthy: !snap.draining,
                    summary,
                },
            );
            (fa::AdminMessage::StatusResponse, m.as_union_value())
        } else if let Some(r) = frame.msg_as_diagnostics_request() {
            let json = Some(fbb.create_string(&json));
            let m = fa::DiagnosticsResponse::create(
                &mut fbb,
                &fa::DiagnosticsResponseArgs {
                    request_id: r.request_id(),
                    json,
                },
            );
            (fa::AdminMessage::DiagnosticsResponse, m.as_union_value())
        } else {
            let text = "verifyd answers status and diagnostics";
            send_error(&mut conn, &mut fbb, ErrorCode::Unsupported, text)?;
            continue;
        };
        let root = fa::AdminFrame::create(
            &mut fbb,
            &fa::AdminFrameArgs {
                msg_type: kind,
                msg: Some(msg),
            },
        );
        fa::finish_admin_frame_buffer(&mut fbb, root);
        conn.send(fbb.finished_data())?;
    }
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

/// Answers a request the admin socket cannot serve; the connection goes on.
fn send_error(
    conn: &mut Established,
    fbb: &mut FlatBufferBuilder<'static>,
    code: ErrorCode,
    text: &str,
) -> Result<(), WireError> {
    conn.send(&crate::proto::encode_error(fbb, 0, code, false, text))
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

pub(crate) fn serve_metrics(shared: &Arc<Shared>, listener: &std::net::TcpListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut s) = stream else { continue };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        // Read (and ignore) the request head; any path gets the metrics.
        let mut head = [0u8; 2048];
        let _ = s.read(&mut head);
        let body = shared.snapshot().prometheus();
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
