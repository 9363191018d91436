//! Counters of one listener: every refusal and every limit reached.
//!
//! [`ListenerStats`] is shared by the accept loop, the connection slots and
//! the frame reader and sender of every connection accepted on that
//! listener; [`ListenerStats::snapshot`] copies it into a plain
//! serialisable [`ListenerSnapshot`] for a daemon's `status` / metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one listener (all monotonic except `open`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) peak_open: AtomicU64,
    pub(crate) refused_cap: AtomicU64,
    pub(crate) refused_fds: AtomicU64,
    pub(crate) refused_peer: AtomicU64,
    pub(crate) evicted_idle: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) accept_backoffs: AtomicU64,
    pub(crate) hello_timeouts: AtomicU64,
    pub(crate) hello_failures: AtomicU64,
    pub(crate) frame_timeouts: AtomicU64,
    pub(crate) frame_too_large: AtomicU64,
    pub(crate) buffer_timeouts: AtomicU64,
    pub(crate) backlog_overflows: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
}

/// A copy of [`ListenerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ListenerSnapshot {
    /// Connections accepted and admitted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Connections refused (error frame, closed) because the listener was
    /// at its connection cap and no connection was idle.
    pub refused_cap: u64,
    /// Connections refused because the daemon's descriptor budget was spent
    /// and no connection was idle.
    pub refused_fds: u64,
    /// Connections refused by the peer-credential policy.
    pub refused_peer: u64,
    /// Idle connections closed to make room for a new one.
    pub evicted_idle: u64,
    /// `accept` calls that failed (EMFILE, ENFILE, ENOMEM, …).
    pub accept_errors: u64,
    /// Times the accept loop paused after such a failure.
    pub accept_backoffs: u64,
    /// Connections closed because the hello did not complete in time.
    pub hello_timeouts: u64,
    /// Hellos that failed (mismatch, garbage, peer gone).
    pub hello_failures: u64,
    /// Connections closed because a started frame did not complete in time.
    pub frame_timeouts: u64,
    /// Connections closed for a length prefix over the negotiated maximum
    /// (or zero).
    pub frame_too_large: u64,
    /// Connections closed because read-buffer memory stayed unavailable
    /// past the frame deadline.
    pub buffer_timeouts: u64,
    /// Connections closed because unread responses exceeded their budget.
    pub backlog_overflows: u64,
    /// Connections closed because the peer did not read responses in time.
    pub write_timeouts: u64,
    /// Requests that missed their per-request deadline (answered with an
    /// error or closed).
    pub request_timeouts: u64,
}

impl ListenerStats {
    /// Copies the counters.
    #[must_use]
    pub fn snapshot(&self) -> ListenerSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerSnapshot {
            accepted: l(&self.accepted),
            open: l(&self.open),
            peak_open: l(&self.peak_open),
            refused_cap: l(&self.refused_cap),
            refused_fds: l(&self.refused_fds),
            refused_peer: l(&self.refused_peer),
            evicted_idle: l(&self.evicted_idle),
            accept_errors: l(&self.accept_errors),
            accept_backoffs: l(&self.accept_backoffs),
            hello_timeouts: l(&self.hello_timeouts),
            hello_failures: l(&self.hello_failures),
            frame_timeouts: l(&self.frame_timeouts),
            frame_too_large: l(&self.frame_too_large),
            buffer_timeouts: l(&self.buffer_timeouts),
            backlog_overflows: l(&self.backlog_overflows),
            write_timeouts: l(&self.write_timeouts),
            request_timeouts: l(&self.request_timeouts),
        }
    }

    /// Counts a request that missed its deadline (the daemon decides what
    /// a request is; the core only counts).
    pub fn count_request_timeout(&self) {
        bump(&self.request_timeouts);
    }
}

impl ListenerSnapshot {
    /// `(name, help, value)` rows for a Prometheus exposition; the caller
    /// adds its prefix and a `listener` label.
    #[must_use]
    pub fn rows(&self) -> [(&'static str, &'static str, u64); 17] {
        [
            (
                "connections_accepted_total",
                "Connections accepted.",
                self.accepted,
            ),
            ("connections_open", "Connections open now.", self.open),
            (
                "connections_peak",
                "Most connections open at once.",
                self.peak_open,
            ),
            (
                "connections_refused_cap_total",
                "Connections refused at the connection cap.",
                self.refused_cap,
            ),
            (
                "connections_refused_fds_total",
                "Connections refused: descriptor budget spent.",
                self.refused_fds,
            ),
            (
                "connections_refused_peer_total",
                "Connections refused by the peer policy.",
                self.refused_peer,
            ),
            (
                "connections_evicted_idle_total",
                "Idle connections closed to make room.",
                self.evicted_idle,
            ),
            (
                "accept_errors_total",
                "Failed accept calls.",
                self.accept_errors,
            ),
            (
                "accept_backoffs_total",
                "Accept pauses after a failure.",
                self.accept_backoffs,
            ),
            (
                "hello_timeouts_total",
                "Connections closed: hello not done in time.",
                self.hello_timeouts,
            ),
            (
                "hello_failures_total",
                "Hellos that failed.",
                self.hello_failures,
            ),
            (
                "frame_timeouts_total",
                "Connections closed: a frame not completed in time.",
                self.frame_timeouts,
            ),
            (
                "frame_too_large_total",
                "Connections closed: frame length over the maximum or zero.",
                self.frame_too_large,
            ),
            (
                "buffer_timeouts_total",
                "Connections closed: no read-buffer memory in time.",
                self.buffer_timeouts,
            ),
            (
                "backlog_overflows_total",
                "Connections closed: unread responses over budget.",
                self.backlog_overflows,
            ),
            (
                "write_timeouts_total",
                "Connections closed: responses not read in time.",
                self.write_timeouts,
            ),
            (
                "request_timeouts_total",
                "Requests past their deadline.",
                self.request_timeouts,
            ),
        ]
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}
