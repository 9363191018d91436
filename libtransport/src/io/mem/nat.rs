//! A simulated NAT: endpoint-independent mapping with a binding timeout.
//!
//! Hosts behind a NAT send from a private address; the NAT rewrites the
//! source to `public_ip:port`, creating a binding for the inside address or
//! refreshing it. A binding that sees no *outbound* datagram for
//! `binding_timeout` expires: inbound datagrams to it are dropped (and
//! counted) until the inside host sends again. This is the middlebox that
//! makes idle QUIC connections rot when keepalives are slower than it.
//!
//! When the inside host sends after expiry the NAT either reuses the old
//! port or, with `rebind_on_expiry`, allocates a fresh one — a NAT
//! rebinding, which the peer sees as the same connection arriving from a new
//! address. [`Nat::rebind`] forces one (a NAT reboot).
//!
//! Filtering is either endpoint-independent (any remote may reach a live
//! binding) or address-and-port-dependent (only remotes the inside host has
//! sent to). All tables are bounded: bindings by `max_bindings`, and the
//! remotes remembered per binding by a fixed cap; overflow is counted.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Remotes remembered per binding for address-dependent filtering; the
/// oldest is forgotten past this.
const MAX_REMOTES_PER_BINDING: usize = 64;

/// Which inbound datagrams a live binding lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatFiltering {
    /// Any remote may reach a live binding ("full cone").
    #[default]
    EndpointIndependent,
    /// Only remotes (address and port) the inside host has sent to.
    AddressAndPortDependent,
}

/// Configuration of a simulated NAT.
#[derive(Debug, Clone, PartialEq)]
pub struct NatConfig {
    /// The public address every binding shares.
    pub public_ip: IpAddr,
    /// A binding without outbound traffic for this long expires.
    pub binding_timeout: Duration,
    /// Allocate a new public port when an expired binding is revived.
    pub rebind_on_expiry: bool,
    /// Inbound filtering of live bindings.
    pub filtering: NatFiltering,
    /// Bound on simultaneous bindings; new flows past it are dropped.
    pub max_bindings: usize,
}

impl NatConfig {
    /// A full-cone NAT on `public_ip` with the given binding timeout.
    pub fn new(public_ip: IpAddr, binding_timeout: Duration) -> Self {
        Self {
            public_ip,
            binding_timeout,
            rebind_on_expiry: false,
            filtering: NatFiltering::EndpointIndependent,
            max_bindings: 4096,
        }
    }
}

/// Counters of one NAT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatStats {
    /// Bindings created (first datagram of an inside address).
    pub bindings_created: u64,
    /// Bindings that had expired and were revived by outbound traffic.
    pub bindings_revived: u64,
    /// Revivals or forced rebinds that changed the public port.
    pub rebinds: u64,
    /// Inbound datagrams dropped because their binding had expired.
    pub dropped_expired: u64,
    /// Inbound datagrams dropped by address-dependent filtering.
    pub dropped_filtered: u64,
    /// Inbound datagrams to a port with no binding at all.
    pub dropped_unbound: u64,
    /// Outbound datagrams dropped because the binding table was full.
    pub dropped_table_full: u64,
}

#[derive(Debug, Clone)]
struct Binding {
    port: u16,
    last_outbound: Instant,
    remotes: VecDeque<SocketAddr>,
}

/// Why the NAT dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatDrop {
    Expired,
    Filtered,
    Unbound,
    TableFull,
}

/// A NAT's state. Sans-IO: every call takes `now`.
#[derive(Debug, Clone)]
pub struct Nat {
    cfg: NatConfig,
    by_inside: HashMap<SocketAddr, Binding>,
    by_port: HashMap<u16, SocketAddr>,
    next_port: u16,
    stats: NatStats,
}

impl Nat {
    /// A NAT with no bindings yet.
    pub fn new(cfg: NatConfig) -> Self {
        Self {
            cfg,
            by_inside: HashMap::new(),
            by_port: HashMap::new(),
            next_port: 40_000,
            stats: NatStats::default(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    /// Its counters.
    pub fn stats(&self) -> NatStats {
        self.stats
    }

    /// The public address currently mapped to `inside`, expired or not.
    pub fn public_addr(&self, inside: SocketAddr) -> Option<SocketAddr> {
        self.by_inside
            .get(&inside)
            .map(|b| SocketAddr::new(self.cfg.public_ip, b.port))
    }

    /// The inside address a public `port` maps to, ignoring expiry (routing).
    pub(crate) fn inside_for(&self, port: u16) -> Option<SocketAddr> {
        self.by_port.get(&port).copied()
    }

    fn expired(&self, b: &Binding, now: Instant) -> bool {
        now.saturating_duration_since(b.last_outbound) > self.cfg.binding_timeout
    }

    fn alloc_port(&mut self) -> u16 {
        // Bounded by `max_bindings` < 65536 - 1024, so this finds a free port.
        loop {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { 1024 } else { p + 1 };
            if !self.by_port.contains_key(&p) {
                return p;
            }
        }
    }

    /// Translates an outbound datagram from `inside` to `remote`: creates,
    /// refreshes or revives the binding and returns the public source.
    pub(crate) fn outbound(
        &mut self,
        now: Instant,
        inside: SocketAddr,
        remote: SocketAddr,
    ) -> Result<SocketAddr, NatDrop> {
        let Some(b) = self.by_inside.get(&inside) else {
            if self.by_inside.len() >= self.cfg.max_bindings.min(60_000) {
                self.stats.dropped_table_full += 1;
                return Err(NatDrop::TableFull);
            }
            let port = self.alloc_port();
            self.by_port.insert(port, inside);
            self.by_inside.insert(
                inside,
                Binding {
                    port,
                    last_outbound: now,
                    remotes: VecDeque::from([remote]),
                },
            );
            self.stats.bindings_created += 1;
            return Ok(SocketAddr::new(self.cfg.public_ip, port));
        };
        if self.expired(b, now) {
            self.stats.bindings_revived += 1;
            if self.cfg.rebind_on_expiry {
                self.rebind(inside);
            }
            if let Some(b) = self.by_inside.get_mut(&inside) {
                // A revived binding starts with a clean filter, as a new one would.
                b.remotes.clear();
            }
        }
        // The binding exists: it was found above and `rebind` keeps it.
        let Some(b) = self.by_inside.get_mut(&inside) else {
            return Err(NatDrop::Unbound);
        };
        b.last_outbound = now;
        if !b.remotes.contains(&remote) {
            if b.remotes.len() >= MAX_REMOTES_PER_BINDING {
                b.remotes.pop_front();
            }
            b.remotes.push_back(remote);
        }
        Ok(SocketAddr::new(self.cfg.public_ip, b.port))
    }

    /// Translates an inbound datagram from `remote` to public `port`: the
    /// inside destination, or why it is dropped.
    pub(crate) fn inbound(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        port: u16,
    ) -> Result<SocketAddr, NatDrop> {
        let Some(&inside) = self.by_port.get(&port) else {
            self.stats.dropped_unbound += 1;
            return Err(NatDrop::Unbound);
        };
        let Some(b) = self.by_inside.get(&inside) else {
            self.stats.dropped_unbound += 1;
            return Err(NatDrop::Unbound);
        };
        if self.expired(b, now) {
            self.stats.dropped_expired += 1;
            return Err(NatDrop::Expired);
        }
        if self.cfg.filtering == NatFiltering::AddressAndPortDependent
            && !b.remotes.contains(&remote)
        {
            self.stats.dropped_filtered += 1;
            return Err(NatDrop::Filtered);
        }
        Ok(inside)
    }

    /// Moves `inside`'s binding to a fresh public port (a NAT reboot or
    /// rebinding); datagrams to the old port are then unbound.
    pub fn rebind(&mut self, inside: SocketAddr) {
        let Some(old) = self.by_inside.get(&inside).map(|b| b.port) else {
            return;
        };
        let port = self.alloc_port();
        self.by_port.remove(&old);
        self.by_port.insert(port, inside);
        if let Some(b) = self.by_inside.get_mut(&inside) {
            b.port = port;
        }
        self.stats.rebinds += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::mem::test_util::{addr, t0};

    fn nat(timeout_s: u64) -> Nat {
        Nat::new(NatConfig::new(
            "198.51.100.1".parse().unwrap(),
            Duration::from_secs(timeout_s),
        ))
    }

    #[test]
    fn binding_expires_without_outbound_and_revives_on_send() {
        let now = t0();
        let mut n = nat(30);
        let inside = addr("10.0.0.2:5000");
        let remote = addr("203.0.113.9:443");
        let public = n.outbound(now, inside, remote).unwrap();
        assert_eq!(public.ip(), n.config().public_ip);
        // Inbound traffic does not refresh the binding.
        let t = now + Duration::from_secs(20);
        assert_eq!(n.inbound(t, remote, public.port()), Ok(inside));
        let t = now + Duration::from_secs(31);
        assert_eq!(n.inbound(t, remote, public.port()), Err(NatDrop::Expired));
        assert_eq!(n.stats().dropped_expired, 1);
        // The inside sends again: same port (no rebinding configured), open again.
        assert_eq!(n.outbound(t, inside, remote), Ok(public));
        assert_eq!(n.inbound(t, remote, public.port()), Ok(inside));
        assert_eq!(n.stats().bindings_revived, 1);
        assert_eq!(n.stats().rebinds, 0);
    }

    #[test]
    fn outbound_refreshes_binding() {
        let now = t0();
        let mut n = nat(30);
        let inside = addr("10.0.0.2:5000");
        let remote = addr("203.0.113.9:443");
        let public = n.outbound(now, inside, remote).unwrap();
        for k in 1..=100u64 {
            let t = now + Duration::from_secs(15 * k);
            n.outbound(t, inside, remote).unwrap();
            assert_eq!(
                n.inbound(t + Duration::from_secs(29), remote, public.port()),
                Ok(inside)
            );
        }
    }

    #[test]
    fn rebinding_on_expiry_changes_port() {
        let now = t0();
        let mut n = Nat::new(NatConfig {
            rebind_on_expiry: true,
            ..NatConfig::new("198.51.100.1".parse().unwrap(), Duration::from_secs(30))
        });
        let inside = addr("10.0.0.2:5000");
        let remote = addr("203.0.113.9:443");
        let first = n.outbound(now, inside, remote).unwrap();
        let t = now + Duration::from_secs(60);
        let second = n.outbound(t, inside, remote).unwrap();
        assert_ne!(first, second);
        assert_eq!(n.inbound(t, remote, first.port()), Err(NatDrop::Unbound));
        assert_eq!(n.inbound(t, remote, second.port()), Ok(inside));
        assert_eq!(n.stats().rebinds, 1);
    }

    #[test]
    fn address_dependent_filtering() {
        let now = t0();
        let mut n = Nat::new(NatConfig {
            filtering: NatFiltering::AddressAndPortDependent,
            ..NatConfig::new("198.51.100.1".parse().unwrap(), Duration::from_secs(30))
        });
        let inside = addr("10.0.0.2:5000");
        let public = n.outbound(now, inside, addr("203.0.113.9:443")).unwrap();
        assert_eq!(
            n.inbound(now, addr("203.0.113.9:443"), public.port()),
            Ok(inside)
        );
        assert_eq!(
            n.inbound(now, addr("203.0.113.10:443"), public.port()),
            Err(NatDrop::Filtered)
        );
        assert_eq!(n.stats().dropped_filtered, 1);
    }

    #[test]
    fn binding_table_is_bounded() {
        let now = t0();
        let mut n = Nat::new(NatConfig {
            max_bindings: 2,
            ..NatConfig::new("198.51.100.1".parse().unwrap(), Duration::from_secs(30))
        });
        let remote = addr("203.0.113.9:443");
        n.outbound(now, addr("10.0.0.2:1"), remote).unwrap();
        n.outbound(now, addr("10.0.0.2:2"), remote).unwrap();
        assert_eq!(
            n.outbound(now, addr("10.0.0.2:3"), remote),
            Err(NatDrop::TableFull)
        );
        assert_eq!(n.stats().dropped_table_full, 1);
    }
}
