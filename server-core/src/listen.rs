//! Accepting connections: credentials, caps, and an accept loop that backs
//! off instead of spinning.
//!
//! [`Listener::accept`] returns only admitted connections. Everything else
//! is handled inside and counted in the listener's [`ListenerStats`]:
//!
//! * a peer the [`PeerPolicy`] rejects gets a fatal `PermissionDenied`
//!   error frame and is closed;
//! * a connection that does not fit ([`crate::registry`]: the longest-idle
//!   one gives way, or nobody is idle) gets a fatal `Busy` error frame
//!   naming the limit, and is closed;
//! * `accept` itself failing — `EMFILE`/`ENFILE` when descriptors run out,
//!   `ENOBUFS`/`ENOMEM` — makes the loop close the longest-idle connection
//!   (to get a descriptor back) and pause, 5 ms doubling to 500 ms while
//!   the failures last, so a full descriptor table costs a few wake-ups a
//!   second rather than a spinning core and a flood of logs (one warning
//!   when the failures start, one when they stop).
//!
//! Refusal frames are written without blocking (they are far smaller than a
//! socket buffer); the connection is closed either way.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;
use wire::generated::error::ErrorCode;
use wire::uds::{PeerCred, PeerPolicy};

use crate::limits::Limits;
use crate::registry::{ListenerId, Registry, Slot};
use crate::stats::{ListenerStats, bump};

/// An admitted connection.
#[derive(Debug)]
pub struct Accepted {
    /// The socket (non-blocking, registered with the runtime).
    pub stream: UnixStream,
    /// Its place in the registry; drop it with the connection.
    pub slot: Slot,
    /// The peer's credentials at connect time.
    pub peer: PeerCred,
    /// When it was accepted (the hello deadline runs from here).
    pub at: Instant,
}

/// A listening Unix socket served under a [`Registry`]. See the module docs.
#[derive(Debug)]
pub struct Listener {
    inner: tokio::net::UnixListener,
    registry: Arc<Registry>,
    id: ListenerId,
    stats: Arc<ListenerStats>,
    limits: Limits,
    policy: PeerPolicy,
    name: &'static str,
    backoff: Duration,
}

/// Encodes a fatal error frame, length prefix included.
pub(crate) fn error_frame(code: ErrorCode, text: &str) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(256);
    let payload = wire::frame::encode_error(&mut fbb, code, 0, true, text);
    let mut out = Vec::with_capacity(payload.len() + wire::frame::PREFIX_LEN);
    // An error frame with a short text is always far below the 4 KiB minimum.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Best effort, never blocks: the peer is being closed anyway.
fn refuse(stream: &UnixStream, code: ErrorCode, text: &str) {
    let _ = stream.try_write(&error_frame(code, text));
}

fn is_resource_error(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

impl Listener {
    /// Serves `std` (a bound listener, e.g. from `wire::uds::bind`) under
    /// `registry` as listener `name` with `limits`, accepting peers that
    /// `policy` allows. Must be called inside a tokio runtime.
    pub fn new(
        std: std::os::unix::net::UnixListener,
        registry: &Arc<Registry>,
        name: &'static str,
        limits: Limits,
        policy: PeerPolicy,
    ) -> io::Result<Listener> {
        std.set_nonblocking(true)?;
        let inner = tokio::net::UnixListener::from_std(std)?;
        let (id, stats) = registry.add_listener(name, limits.max_connections);
        Ok(Listener {
            inner,
            registry: registry.clone(),
            id,
            stats,
            backoff: limits.accept_backoff_min,
            limits,
            policy,
            name,
        })
    }

    /// This listener's counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// The limits given at creation.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The next admitted connection. Never fails: refusals and `accept`
    /// errors are handled (and counted) inside. Cancel-safe.
    pub async fn accept(&mut self) -> Accepted {
        loop {
            let (stream, _) = match self.inner.accept().await {
                Ok(s) => s,
                Err(e) => {
                    self.after_error(&e).await;
                    continue;
                }
            };
            if self.backoff > self.limits.accept_backoff_min {
                tracing::info!(listener = self.name, "accept recovered");
                self.backoff = self.limits.accept_backoff_min;
            }
            let peer = match wire::uds::peer_credentials(&stream) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(listener = self.name, error = %e, "no peer credentials");
                    bump(&self.stats.refused_peer);
                    continue;
                }
            };
            if let Err(e) = self.policy.check(&peer) {
                tracing::warn!(
                    listener = self.name,
                    uid = peer.uid,
                    pid = peer.pid,
                    "peer rejected"
                );
                bump(&self.stats.refused_peer);
                refuse(&stream, ErrorCode::PermissionDenied, &e.to_string());
                continue;
            }
            let at = Instant::now();
            match self.registry.admit(self.id, at.into_std()) {
                Ok(slot) => {
                    return Accepted {
                        stream,
                        slot,
                        peer,
                        at,
                    };
                }
                Err(refusal) => {
                    tracing::debug!(listener = self.name, pid = peer.pid, %refusal, "connection refused");
                    refuse(&stream, ErrorCode::Busy, &refusal.to_string());
                }
            }
        }
    }

    async fn after_error(&mut self, e: &io::Error) {
        use nix::libc::{ECONNABORTED, EINTR, EPROTO};
        // The peer gave up before we took it, or a signal: just go on.
        if matches!(e.raw_os_error(), Some(ECONNABORTED | EINTR | EPROTO)) {
            return;
        }
        bump(&self.stats.accept_errors);
        bump(&self.stats.accept_backoffs);
        if self.backoff == self.limits.accept_backoff_min {
            tracing::warn!(listener = self.name, error = %e, "accept failing; backing off");
        }
        if is_resource_error(e) {
            // Closing an idle connection returns a descriptor (or memory).
            self.registry.shed_one();
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.limits.accept_backoff_max);
    }

    /// Accepts until `stop` resolves, handing each connection to `serve`
    /// (which typically spawns a task for it).
    pub async fn serve_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        mut serve: impl FnMut(Accepted),
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                a = self.accept() => serve(a),
            }
        }
    }
}
