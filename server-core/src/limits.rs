//! The limits every listener enforces, with their defaults, and the
//! descriptor cap derived from the process's `RLIMIT_NOFILE`.
//!
//! The deadlines are protection bounds, not latency estimates: a local
//! client finishes a hello in well under a millisecond and writes a 16 MiB
//! frame in a few milliseconds, so the defaults leave two to three orders of
//! magnitude of headroom for a starved but honest peer while bounding how
//! long a hostile one can hold a connection, its buffer and its slot.

use std::time::Duration;

/// Per-listener limits. Defaults in [`Limits::default`]; chainable setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on this listener (beyond: the longest-idle
    /// one gives way, or the newcomer is refused with an error frame).
    pub max_connections: usize,
    /// From accept to a completed hello.
    pub hello_deadline: Duration,
    /// From the first byte of a frame (its length prefix) to its last.
    /// Idle time *between* frames is not limited.
    pub frame_deadline: Duration,
    /// How long queued responses may sit unread with no progress before
    /// the connection is closed.
    pub write_deadline: Duration,
    /// Response bytes one connection may have queued unread.
    pub max_backlog: usize,
    /// Whole-request deadline where the daemon applies one (admin requests:
    /// read, answer and write).
    pub request_deadline: Duration,
    /// First pause after a failed `accept` (doubles up to `accept_backoff_max`).
    pub accept_backoff_min: Duration,
    /// Longest pause after repeated `accept` failures.
    pub accept_backoff_max: Duration,
}

impl Default for Limits {
    /// 4,096 connections, hello 2 s, frame 5 s, write 2 s, 1 MiB of unread
    /// responses, 1 s per request, accept back-off 5 ms doubling to 500 ms.
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            hello_deadline: Duration::from_secs(2),
            frame_deadline: Duration::from_secs(5),
            write_deadline: Duration::from_secs(2),
            max_backlog: 1 << 20,
            request_deadline: Duration::from_secs(1),
            accept_backoff_min: Duration::from_millis(5),
            accept_backoff_max: Duration::from_millis(500),
        }
    }
}

impl Limits {
    /// Sets [`Self::max_connections`] (at least 1).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
    /// Sets [`Self::hello_deadline`].
    #[must_use]
    pub fn hello_deadline(mut self, d: Duration) -> Self {
        self.hello_deadline = d;
        self
    }
    /// Sets [`Self::frame_deadline`].
    #[must_use]
    pub fn frame_deadline(mut self, d: Duration) -> Self {
        self.frame_deadline = d;
        self
    }
    /// Sets [`Self::write_deadline`].
    #[must_use]
    pub fn write_deadline(mut self, d: Duration) -> Self {
        self.write_deadline = d;
        self
    }
    /// Sets [`Self::max_backlog`].
    #[must_use]
    pub fn max_backlog(mut self, n: usize) -> Self {
        self.max_backlog = n;
        self
    }
    /// Sets [`Self::request_deadline`].
    #[must_use]
    pub fn request_deadline(mut self, d: Duration) -> Self {
        self.request_deadline = d;
        self
    }

    /// The admin socket's limits in every daemon: 64 connections (its own
    /// cap, so a flood elsewhere cannot take its slots), and hello, frame,
    /// write and request deadlines of `request` each, so one request is
    /// bounded end to end.
    #[must_use]
    pub fn admin(request: Duration) -> Self {
        Limits::default()
            .max_connections(64)
            .hello_deadline(request)
            .frame_deadline(request)
            .write_deadline(request)
            .request_deadline(request)
    }
}

/// Descriptors kept out of the connection budget for everything else a
/// daemon opens: stdio, listeners, the runtime's epoll and eventfds, files,
/// and the one `accept` needs to take a connection it is about to refuse.
pub const FD_RESERVE: usize = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as most servers do;
/// the soft default of 1,024 is for `select`) and returns the soft limit in
/// force afterwards. A failure to raise leaves the limit as it was.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        // Unknown: assume the traditional default.
        Err(_) => 1024,
    }
}

/// The descriptor budget for connections given a soft limit of `nofile`:
/// all but [`FD_RESERVE`] (and at least 8, so a daemon started under an
/// absurd limit still serves someone).
#[must_use]
pub fn fd_cap(nofile: u64) -> usize {
    usize::try_from(nofile)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_RESERVE)
        .max(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_cap_keeps_a_reserve_and_a_floor() {
        assert_eq!(fd_cap(256), 256 - FD_RESERVE);
        assert_eq!(fd_cap(10), 8);
        assert!(raise_nofile_limit() >= 8);
    }
}
