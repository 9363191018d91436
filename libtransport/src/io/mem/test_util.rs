//! Helpers shared by the unit tests of the mem network's parts.

use std::net::SocketAddr;
use std::time::Instant;

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
pub(super) fn t0() -> Instant {
    Instant::now()
}
