//! The admin socket (`tern.admin`: status and diagnostics as JSON), served
//! concurrently on server-core: each connection a task, each request under
//! the admin limits' request deadline, its own connection cap — so an
//! operator's `status` is answered however busy the relay socket is.

use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use server_core::Listener;
use server_core::admin::{Daemon, answer_json, serve_connection};
use wire::generated::hello::Role;
use wire::hello::HelloConfig;

use super::Shared;

const ADMIN_MAX_FRAME: u32 = 64 << 10;

/// Accepts on the admin socket until the daemon stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: Listener) {
    let s = shared.clone();
    let stop = async move { s.stopped().await };
    listener
        .serve_until(stop, |conn| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let hello = HelloConfig::new(server_core::admin::PROTOCOL, Role::Relayd)
                    .max_frame(ADMIN_MAX_FRAME)
                    .instance(shared.instance);
                let mut fbb = FlatBufferBuilder::new();
                let s = shared.clone();
                let answer = |frame: &[u8]| {
                    let daemon = Daemon {
                        name: "relayd",
                        version: env!("CARGO_PKG_VERSION"),
                        instance: s.instance,
                        uptime_ms: u64::try_from(s.started.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                        healthy: !*s.stop.borrow(),
                    };
                    answer_json(&mut fbb, frame, daemon, || {
                        super::stats::snapshot(&s).to_string()
                    })
                };
                serve_connection(
                    conn,
                    &hello,
                    &shared.cfg.admin_limits,
                    shared.reads.clone(),
                    shared.responses.clone(),
                    shared.stopped(),
                    answer,
                )
                .await;
            });
        })
        .await;
}
