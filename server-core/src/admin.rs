//! The admin socket every daemon serves (`tern.admin`: status and
//! diagnostics as JSON), so each daemon supplies only its JSON.
//!
//! [`serve_connection`] runs one admitted admin connection: the hello under
//! the hello deadline, each request frame under the frame deadline (a
//! request that times out is counted as a request timeout), answers sent
//! with a [`FrameSender`](crate::FrameSender) that closes a client not reading within the write
//! deadline. The connection is held busy while a request is answered, and
//! ends when the daemon evicts it or `stop` resolves. [`answer_json`] turns
//! one request frame into a `StatusResponse`, a `DiagnosticsResponse` or a
//! typed error frame. [`serve_json`] is the whole socket for a daemon that
//! answers with [`answer_json`]: its accept loop, one task per connection.

use std::future::Future;
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use wire::generated::admin as fa;
use wire::generated::error::ErrorCode;
use wire::hello::HelloConfig;

use crate::budget::Budget;
use crate::framed::{Opened, ReadError};
use crate::limits::Limits;
use crate::listen::{Accepted, Listener};

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
    let Opened {
        stream,
        slot,
        stats,
        mut reader,
        tx,
        ..
    } = match crate::framed::open(conn, hello, limits, reads, responses).await {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(error = %e, "admin hello failed");
            return;
        }
    };
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

/// What a daemon's admin socket asks of the daemon, for [`serve_json`].
pub trait AdminState: Send + Sync + 'static {
    /// Who is answering, at the moment of the request.
    fn daemon(&self) -> Daemon<'_>;
    /// The diagnostics document (also the status summary).
    fn diagnostics_json(&self) -> String;
    /// Resolves when the daemon stops; ends the accept loop and every
    /// connection.
    fn stopped(&self) -> impl Future<Output = ()> + Send + '_;
}

/// The admin socket's settings for [`serve_json`].
#[derive(Debug, Clone)]
pub struct AdminSocket {
    /// The hello the daemon offers (protocol [`PROTOCOL`]).
    pub hello: HelloConfig,
    /// Admin limits (deadlines, frame size, connection cap).
    pub limits: Limits,
    /// Budget for request frames being read.
    pub reads: Arc<Budget>,
    /// Budget for answers being written.
    pub responses: Arc<Budget>,
}

/// Accepts on `listener` until `state` stops, serving each connection in
/// its own task with [`serve_connection`] and [`answer_json`].
pub async fn serve_json<S: AdminState>(listener: Listener, socket: AdminSocket, state: Arc<S>) {
    let s = state.clone();
    let socket = Arc::new(socket);
    listener
        .serve_until(async move { s.stopped().await }, |conn| {
            let (state, socket) = (state.clone(), socket.clone());
            tokio::spawn(async move {
                let mut fbb = FlatBufferBuilder::new();
                let answer = |frame: &[u8]| {
                    answer_json(&mut fbb, frame, state.daemon(), || state.diagnostics_json())
                };
                serve_connection(
                    conn,
                    &socket.hello,
                    &socket.limits,
                    socket.reads.clone(),
                    socket.responses.clone(),
                    state.stopped(),
                    answer,
                )
                .await;
            });
        })
        .await;
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
