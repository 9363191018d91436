//! Endpoint configuration with documented defaults.
//!
//! Defaults are chosen for real networks, not loopback: a keepalive well
//! below common NAT binding timeouts (30 s is the short end seen on consumer
//! routers), an idle timeout that outlives a few lost keepalives, and flow
//! control windows that keep a 100 ms RTT path busy at ~300 Mbit/s per stream
//! and ~1.3 Gbit/s per connection (window = bandwidth × RTT).

use std::time::Duration;

use quinn_proto::{IdleTimeout, TransportConfig, VarInt};

pub use crate::proto::probe::ProbeConfig;
pub use crate::proto::repair::{AddressBookConfig, RepairConfig};

/// Endpoint configuration. Build with [`Config::default`] and the setters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Keepalive PING interval on idle connections. Default 12 s: two
    /// keepalives fit inside a 30 s NAT binding timeout, so one may be lost.
    pub keepalive_interval: Duration,
    /// Idle timeout after which a silent connection is closed. Default 45 s.
    pub idle_timeout: Duration,
    /// Per-stream receive window. Default 4 MiB.
    pub stream_receive_window: u32,
    /// Per-connection receive window. Default 16 MiB.
    pub receive_window: u32,
    /// Per-connection send buffer limit. Default 16 MiB.
    pub send_window: u64,
    /// Concurrent bidirectional streams the peer may open. Default 256.
    pub max_concurrent_bidi_streams: u32,
    /// Concurrent unidirectional streams the peer may open. Default 64 (one
    /// long-lived stream per message kind plus the identity proof).
    pub max_concurrent_uni_streams: u32,
    /// Time a connection gets after the TLS handshake to prove its identity.
    /// Default 5 s.
    pub identity_timeout: Duration,
    /// Time a dial may take in total (handshake + proof). Default 10 s.
    pub dial_timeout: Duration,
    /// Incoming connections beyond this are refused (and counted). Default 4096.
    pub max_connections: usize,
    /// Initial UDP payload size; MTU discovery raises it. Default 1200.
    pub initial_mtu: u16,
    /// Use GSO when the backend supports it. Default true.
    pub gso: bool,
    /// Lifecycle event queue length (oldest dropped and counted). Default 4096.
    pub event_queue: usize,
    /// Bytes a message kind may have queued for sending on one connection
    /// before `send` waits. Default 4 MiB.
    pub send_queue_bytes: usize,
    /// Longest [`crate::Endpoint::close`] / [`crate::Endpoint::wait_idle`]
    /// wait for the peers to acknowledge queued data. It ends early as soon
    /// as everything is acknowledged; it only runs out against a peer that
    /// is gone or does not read. Default 5 s.
    pub drain_timeout: Duration,
    /// Repair dials for sends that find no live connection: concurrent
    /// dials (16), queued peers (1,024), time per repair including lookup
    /// (10 s), backoff after failures (500 ms doubling to 30 s). See
    /// [`RepairConfig`].
    pub repair: RepairConfig,
    /// The address book repair dials use: peers remembered (16,384, least
    /// recently used evicted and counted) and addresses per peer (8).
    pub address_book: AddressBookConfig,
    /// Scavenger probes ([`crate::Endpoint::probe`]): one per 20 ms
    /// sustained across the endpoint, bursts of 8, 10 s deadline each,
    /// 16,384 peers tracked. See [`ProbeConfig`].
    pub probe: ProbeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(12),
            idle_timeout: Duration::from_secs(45),
            stream_receive_window: 4 << 20,
            receive_window: 16 << 20,
            send_window: 16 << 20,
            max_concurrent_bidi_streams: 256,
            max_concurrent_uni_streams: 64,
            identity_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(10),
            max_connections: 4096,
            initial_mtu: 1200,
            gso: true,
            event_queue: 4096,
            send_queue_bytes: 4 << 20,
            drain_timeout: Duration::from_secs(5),
            repair: RepairConfig::default(),
            address_book: AddressBookConfig::default(),
            probe: ProbeConfig::default(),
        }
    }
}

impl Config {
    /// Sets the keepalive interval.
    #[must_use]
    pub fn keepalive_interval(mut self, d: Duration) -> Self {
        self.keepalive_interval = d;
        self
    }
    /// Sets the idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Sets the identity proof timeout.
    #[must_use]
    pub fn identity_timeout(mut self, d: Duration) -> Self {
        self.identity_timeout = d;
        self
    }
    /// Sets the drain bound of `close` and `wait_idle`.
    #[must_use]
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }
    /// Sets the initial MTU.
    #[must_use]
    pub fn initial_mtu(mut self, mtu: u16) -> Self {
        self.initial_mtu = mtu;
        self
    }
    /// Enables or disables GSO.
    #[must_use]
    pub fn gso(mut self, on: bool) -> Self {
        self.gso = on;
        self
    }

    /// The keepalive actually used: the configured interval, bounded to
    /// `[1 s, idle_timeout / 3]` so at least two keepalives can be lost before
    /// the idle timeout fires, whatever the two settings say.
    #[must_use]
    pub fn effective_keepalive(&self) -> Duration {
        let ceiling = (self.idle_timeout / 3).max(Duration::from_secs(1));
        self.keepalive_interval
            .clamp(Duration::from_secs(1), ceiling)
    }

    /// The `quinn-proto` transport parameters this config implies. Exposed so
    /// comparisons with `quinn` can configure it identically.
    #[must_use]
    pub fn transport_config(&self) -> TransportConfig {
        let mut t = TransportConfig::default();
        t.keep_alive_interval(Some(self.effective_keepalive()))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .initial_mtu(self.initial_mtu.max(1200))
            .enable_segmentation_offload(self.gso)
            .datagram_receive_buffer_size(None);
        t
    }

    #[cfg(feature = "runtime")]
    pub(crate) fn transport(&self) -> std::sync::Arc<TransportConfig> {
        std::sync::Arc::new(self.transport_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T7: the default keepalive fits twice into a 30 s NAT binding timeout
    /// and three times into the idle timeout; a misconfigured interval is
    /// pulled back under the idle timeout.
    #[test]
    fn keepalive_is_bounded() {
        let d = Config::default();
        assert!(d.effective_keepalive() * 2 <= Duration::from_secs(30));
        assert!(d.effective_keepalive() * 3 <= d.idle_timeout);
        let bad = Config::default()
            .keepalive_interval(Duration::from_secs(600))
            .idle_timeout(Duration::from_secs(30));
        assert_eq!(bad.effective_keepalive(), Duration::from_secs(10));
        let tiny = Config::default().keepalive_interval(Duration::from_millis(1));
        assert_eq!(tiny.effective_keepalive(), Duration::from_secs(1));
    }
}
