//! The admin socket (`tern.admin`: status and diagnostics as JSON), served
//! concurrently on server-core: each connection a task, each request under
//! the admin limits' request deadline, its own connection cap — so an
//! operator's `status` is answered however busy the relay socket is.

use std::future::Future;
use std::sync::Arc;

use server_core::Listener;
use server_core::admin::{AdminSocket, AdminState, Daemon, serve_json};
use wire::generated::hello::Role;
use wire::hello::HelloConfig;

use super::Shared;

const ADMIN_MAX_FRAME: u32 = 64 << 10;

impl AdminState for Shared {
    fn daemon(&self) -> Daemon<'_> {
        Daemon {
            name: "relayd",
            version: env!("CARGO_PKG_VERSION"),
            instance: self.instance,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            healthy: !*self.stop.borrow(),
        }
    }

    fn diagnostics_json(&self) -> String {
        super::stats::snapshot(self).to_string()
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + '_ {
        Shared::stopped(self)
    }
}

/// Accepts on the admin socket until the daemon stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: Listener) {
    let socket = AdminSocket {
        hello: HelloConfig::new(server_core::admin::PROTOCOL, Role::Relayd)
            .max_frame(ADMIN_MAX_FRAME)
            .instance(shared.instance),
        limits: shared.cfg.admin_limits.clone(),
        reads: shared.reads.clone(),
        responses: shared.responses.clone(),
    };
    serve_json(listener, socket, shared).await;
}
