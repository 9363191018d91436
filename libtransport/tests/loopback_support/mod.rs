//! Helpers shared by the `loopback_*` tests: endpoints on real loopback UDP
//! sockets.
#![allow(dead_code)] // each test crate uses a subset
// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use libtransport::{Config, Endpoint, Identity};

/// An endpoint with `id` and `cfg` on an ephemeral loopback port.
pub fn ep_with(id: Identity, cfg: Config) -> Endpoint {
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), id, cfg).unwrap()
}

/// An endpoint with a fresh identity and the default config.
pub fn ep() -> Endpoint {
    ep_with(Identity::generate().unwrap(), Config::default())
}
