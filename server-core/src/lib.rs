//! `server-core`: how every Tern daemon serves its Unix sockets, so that no
//! local client — slow, idle, greedy or hostile — can stall, starve or stop
//! a daemon.
//!
//! One core for verifyd, relayd and gossipd, instead of three accept loops
//! each with its own holes. verifyd serves on it (the attack tests that
//! prove the limits are `verifyd/tests/serve_core.rs`); relayd and gossipd
//! follow. It is async on tokio: an
//! idle connection costs a task and a socket, never a thread.
//!
//! * [`registry`] — the daemon-wide table of connections: a cap per
//!   listener, a descriptor budget from `RLIMIT_NOFILE`, and *who gives
//!   way* when a new connection does not fit (the longest-idle one).
//! * [`listen`] — the accept loop: peer credentials, caps, refusal frames,
//!   back-off on `EMFILE` and friends.
//! * [`framed`] — the hello under a deadline, a frame reader with a
//!   partial-frame deadline and a budgeted buffer, and a sender that never
//!   blocks (workers answer from any thread).
//! * [`budget`] — bounded pools of bytes (read buffers, queued responses,
//!   shared-memory rings, anything a daemon holds for a peer) handed out as
//!   RAII reservations.
//! * [`limits`] — the limits and their defaults.
//! * [`admin`] — the admin socket's connection loop and its JSON
//!   `status`/`diagnostics` answers, the same in every daemon.
//! * [`daemon`] — a daemon binary's config handling, exit codes, logs,
//!   instance number and socket files, the same in every daemon.
//! * [`stats`] — every refusal and every limit reached, per listener, for
//!   the daemon's `status` and metrics.
//!
//! A daemon's serving loop, in outline:
//!
//! ```no_run
//! # async fn demo(std_listener: std::os::unix::net::UnixListener) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use server_core::{Budget, Limits, Listener, Registry, limits};
//! let registry = Registry::new(limits::fd_cap(limits::raise_nofile_limit()));
//! let reads = Budget::new("read_buffers", 64 << 20);
//! let policy = wire::uds::PeerPolicy::same_user().allow_uid(0);
//! let mut listener = Listener::new(std_listener, &registry, "verify", Limits::default(), policy)?;
//! loop {
//!     let conn = listener.accept().await;
//!     let reads = reads.clone();
//!     let limits = listener.limits().clone();
//!     tokio::spawn(async move {
//!         let mut stream = conn.stream;
//!         let hello = wire::hello::HelloConfig::new("tern.example", wire::generated::hello::Role::Verifyd);
//!         let stats = conn.slot.stats().clone();
//!         let Ok(session) = server_core::framed::hello(&mut stream, &hello, &limits, conn.at, &stats).await else {
//!             return;
//!         };
//!         let mut reader = server_core::FrameReader::new(session.max_frame as usize, reads, &limits, stats);
//!         while let Ok(Some(frame)) = reader.next(&stream, &conn.slot).await {
//!             let _ = frame.bytes; // handle it
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! Design: this page, the module docs, and ADR 0023
//! (`docs/adr/0023-server-core.md`) with the attack tests' figures.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod budget;
pub mod daemon;
pub mod framed;
pub mod limits;
pub mod listen;
pub mod registry;
pub mod stats;

pub use budget::{Budget, BudgetStats, Reservation};
pub use framed::{Frame, FrameReader, FrameSender, HelloError, ReadError, SendError};
pub use limits::Limits;
pub use listen::{Accepted, Listener};
pub use registry::{Busy, ListenerId, Refusal, Registry, Slot};
pub use stats::{ListenerSnapshot, ListenerStats};
