//! The admin socket every daemon serves (`tern.admin`: status and
//! diagnostics as JSON), so each daemon supplies only its JSON.
//!
//! [`serve_connection`] runs one admitted admin connection: the hello under
//! the hello deadline, each request frame under the frame deadline (a
//! request that times out is counted as a request timeout), answers sent
//! with a [`FrameSender`] that closes a client not reading within the write
//! deadline. The connection is held busy while a request is answered, and
//! ends when the daemon evicts it or `stop` resolves. [`answer_json`] turns
//! one request frame into a `StatusResponse`, a `DiagnosticsResponse` or a
//! typed error frame.

use std::future::Future;
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use wire::generated::admin as fa;
use wire::generated::error::ErrorCode;
use wire::hello::HelloConfig;

use crate::budget::Budget;
use crate::framed::{FrameReader, FrameSender, ReadError};
use crate::limits::Limits;
use crate::listen::Accepted;

/// Protocol name of the admin socket.
pub const PROTOCOL: &str = "tern.admin";

/// Serves one admin connection until the client closes, a deadline passes,
/// the registry evicts it or `stop` resolves; `answer` builds the reply to
/// each request frame (see [`answer_json`]).
pub async fn serve_connection(
    conn: Accepted,
    hello: &HelloConfig,
    limits: &Limits,
    reads: Arc<Budget>,
    responses: Arc<Budget>,
    stop: impl Future<Output = ()>,
    mut answer: impl FnMut(&[u8]) -> Vec<u8>,
) {
    let Accepted {
        mut stream,
        slot,
        at,
        ..
    } = conn;
    let stats = slot.stats().clone();
    let session = match crate::framed::hello(&mut stream, hello, limits, at, &stats).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "admin hello failed");
            return;
        }
    };
    let max = session.max_frame as usize;
    let stream = Arc::new(stream);
    let tx = FrameSender::new(stream.clone(), max, responses, limits, stats.clone());
    let mut reader = FrameReader::new(max, reads, limits, stats.clone());
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            r = reader.next(&stream, &slot) => r,
            () = slot.evicted() => break,
            () = &mut stop => break,
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                if matches!(e, ReadError::Deadline(_)) {
                    stats.count_request_timeout();
                }
                tracing::debug!(error = %e, "admin connection ended");
                break;
            }
        };
        let _busy = slot.busy();
        let reply = answer(&frame.bytes);
        if let Err(e) = tx.send(&reply) {
            tracing::debug!(error = %e, "admin answer not sent");
            break;
        }
    }
}

/// Who is answering, for [`answer_json`].
#[derive(Debug, Clone, Copy)]
pub struct Daemon<'a> {
    /// Daemon name (`relayd`, `verifyd`, ...).
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Its hello instance number.
    pub instance: u64,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Whether it reports itself healthy (false while draining).
    pub healthy: bool,
}

/// The reply to one admin request frame: a `StatusResponse` (with `json()`
/// as its summary), a `DiagnosticsResponse` (with `json()`), or an error
/// frame (`Malformed` for a frame that is not an admin frame, `Unsupported`
/// for any other request). `json` is only called for those two requests.
pub fn answer_json(
    fbb: &mut FlatBufferBuilder<'_>,
    frame: &[u8],
    daemon: Daemon<'_>,
    json: impl FnOnce() -> String,
) -> Vec<u8> {
    let Ok(frame) = wire::frame::decode::<wire::frame::AdminSchema>(frame) else {
        let text = "not an admin frame";
        return wire::frame::encode_error(fbb, ErrorCode::Malformed, 0, false, text).to_vec();
    };
    fbb.reset();
    let (kind, msg) = if let Some(r) = frame.msg_as_status_request() {
        let summary = json();
        let daemon_name = Some(fbb.create_string(daemon.name));
        let version = Some(fbb.create_string(daemon.version));
        let summary = Some(fbb.create_string(&summary));
        let m = fa::StatusResponse::create(
            fbb,
            &fa::StatusResponseArgs {
                request_id: r.request_id(),
                daemon: daemon_name,
                version,
                pid: std::process::id(),
                instance: daemon.instance,
                uptime_ms: daemon.uptime_ms,
                healthy: daemon.healthy,
                summary,
            },
        );
        (fa::AdminMessage::StatusResponse, m.as_union_value())
    } else if let Some(r) = frame.msg_as_diagnostics_request() {
        let text = json();
        let json = Some(fbb.create_string(&text));
        let m = fa::DiagnosticsResponse::create(
            fbb,
            &fa::DiagnosticsResponseArgs {
                request_id: r.request_id(),
                json,
            },
        );
        (fa::AdminMessage::DiagnosticsResponse, m.as_union_value())
    } else {
        let text = format!("{} answers status and diagnostics", daemon.name);
        return wire::frame::encode_error(fbb, ErrorCode::Unsupported, 0, false, &text).to_vec();
    };
    let root = fa::AdminFrame::create(
        fbb,
        &fa::AdminFrameArgs {
            msg_type: kind,
            msg: Some(msg),
        },
    );
    fa::finish_admin_frame_buffer(fbb, root);
    fbb.finished_data().to_vec()
}
