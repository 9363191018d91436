//! Range checks: every value that a daemon would misbehave with is refused
//! here, with the valid range in the message.

use std::net::SocketAddr;

use crate::sections::NodeConfig;

/// One refused value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key`.
    pub key: String,
    /// The value as configured.
    pub value: String,
    /// What is allowed instead.
    pub expected: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} = {} is out of range: {}",
            self.key, self.value, self.expected
        )
    }
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The smallest ring worth having: a record limit of about 32 KiB.
pub const MIN_RING: u64 = 64 * KIB;
/// The smallest relayd ↔ gossipd ring: one record of its data area (half
/// of it) must hold the largest DM the gossip wire allows (a 1 MiB + 8 KiB
/// body with its signature and envelope, in a relay record), or relayd
/// could answer `Backpressured` to it forever. `gossipd`'s tests check
/// this bound against the real encoders.
pub const MIN_RELAY_RING: u64 = 4 * MIB;
/// The largest ring `wire` maps.
pub const MAX_RING: u64 = GIB;
/// Most verifyd worker threads.
pub const MAX_THREADS: u64 = 1024;
/// Most cached verifyd keys (each ~2 KiB decoded: 32 GiB at the limit).
pub const MAX_KEYS: u64 = 1 << 24;
/// Longest node name (it becomes a directory name).
pub const MAX_NAME: usize = 64;

struct Checker<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    fn refuse(&mut self, key: &str, value: impl std::fmt::Display, expected: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            value: value.to_string(),
            expected: expected.into(),
        });
    }

    fn range(&mut self, key: &str, v: u64, lo: u64, hi: u64) {
        if !(lo..=hi).contains(&v) {
            self.refuse(key, v, format!("valid range is {lo}..={hi}"));
        }
    }

    fn ring(&mut self, key: &str, v: u64, zero_ok: bool, min: u64) {
        let ok = (zero_ok && v == 0) || (v.is_power_of_two() && (min..=MAX_RING).contains(&v));
        if !ok {
            let zero = if zero_ok { "0 (no ring) or " } else { "" };
            self.refuse(
                key,
                v,
                format!("valid values are {zero}a power of two in {min}..={MAX_RING} bytes"),
            );
        }
    }

    fn loopback(&mut self, key: &str, addr: Option<SocketAddr>) {
        if let Some(a) = addr.filter(|a| !a.ip().is_loopback()) {
            self.refuse(
                key,
                a,
                "metrics are served on loopback only (127.0.0.0/8 or ::1)",
            );
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_level(s: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    !s.is_empty()
        && s.split(',').all(|part| {
            let level =
                part.rsplit_once('=').map_or(
                    part,
                    |(target, level)| {
                        if target.is_empty() { "" } else { level }
                    },
                );
            LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
        })
}

/// A `relayd.peers` entry, `<peer id hex>@<ip:port>`, as the id's 32
/// bytes and the address.
#[must_use]
pub fn parse_peer(s: &str) -> Option<([u8; 32], std::net::SocketAddr)> {
    let (id, addr) = s.split_once('@')?;
    if id.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((out, addr.parse().ok()?))
}

/// Every problem in `cfg`; empty when it is usable.
#[must_use]
pub fn check(cfg: &NodeConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut c = Checker {
        problems: &mut problems,
    };
    let n = &cfg.node;
    if !valid_name(&n.name) {
        c.refuse(
            "node.name",
            format!("{:?}", n.name),
            format!("1..={MAX_NAME} characters of A-Z a-z 0-9 - _ . not starting with '.'"),
        );
    }
    if !valid_level(&n.log_level) {
        c.refuse(
            "node.log_level",
            format!("{:?}", n.log_level),
            "a level (off, error, warn, info, debug, trace) or a comma-separated target=level list",
        );
    }
    let r = &cfg.relayd;
    // One UDP socket per endpoint as built: a second address would be
    // silently unserved, so it is refused. "[::]:PORT" is one dual-stack
    // socket for IPv4 and IPv6.
    match r.listen.len() {
        0 => c.refuse("relayd.listen", "[]", "exactly one UDP address"),
        1 => {}
        _ => c.refuse(
            "relayd.listen",
            format!("{:?}", r.listen),
            "exactly one UDP address (the endpoint binds one socket; \"[::]:PORT\" serves IPv4 and IPv6)",
        ),
    }
    c.loopback("relayd.metrics_listen", r.metrics_listen);
    c.ring(
        "relayd.ring_capacity",
        r.ring_capacity,
        false,
        MIN_RELAY_RING,
    );
    c.range("relayd.pump_bytes", r.pump_bytes, MIB, 4 * GIB);
    c.range("relayd.retain_records", r.retain_records, 1, 1 << 20);
    c.range("relayd.retain_bytes", r.retain_bytes, MIB, 4 * GIB);
    for p in &r.peers {
        if parse_peer(p).is_none() {
            c.refuse(
                "relayd.peers",
                format!("{p:?}"),
                "<64 hex digits of the peer id>@<ip:port>",
            );
        }
    }
    let g = &cfg.gossipd;
    c.loopback("gossipd.metrics_listen", g.metrics_listen);
    c.range("gossipd.max_clients", g.max_clients, 1, 4096);
    c.range("gossipd.subscriber_queue", g.subscriber_queue, 1, 1 << 20);
    let v = &cfg.verifyd;
    c.loopback("verifyd.metrics_listen", v.metrics_listen);
    if let Some(t) = v.threads {
        c.range("verifyd.threads", t, 1, MAX_THREADS);
    }
    const BACKENDS: [&str; 4] = ["aws-lc", "rustcrypto", "libcrux", "pqcrypto"];
    if !BACKENDS.contains(&v.backend.as_str()) {
        c.refuse(
            "verifyd.backend",
            format!("{:?}", v.backend),
            "one of aws-lc, rustcrypto, libcrux, pqcrypto",
        );
    }
    c.range("verifyd.key_capacity", v.key_capacity, 1, MAX_KEYS);
    c.range("verifyd.max_in_flight", v.max_in_flight, 1, 1 << 24);
    c.ring("verifyd.ring_capacity", v.ring_capacity, true, MIN_RING);
    c.range("verifyd.drain_deadline_s", v.drain_deadline_s, 0, 3600);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `relayd.peers` entries: 64 hex digits, `@`, a socket address; the
    /// rest is refused by `check`. Capability: C2.
    #[test]
    fn peer_entries() {
        let id = "ab".repeat(32);
        let (bytes, addr) = parse_peer(&format!("{id}@127.0.0.1:4433")).expect("a valid entry");
        assert_eq!(bytes, [0xab; 32]);
        assert_eq!(addr.port(), 4433);
        for bad in [
            id.clone(),
            format!("{id}@nowhere"),
            format!("{}@127.0.0.1:1", &id[2..]),
            format!("{}zz@127.0.0.1:1", &id[2..]),
            "é".repeat(32) + "@127.0.0.1:1",
        ] {
            assert!(parse_peer(&bad).is_none(), "{bad}");
        }
        let mut cfg = NodeConfig::default();
        cfg.relayd.peers = vec!["nope".into()];
        assert!(check(&cfg).iter().any(|p| p.key == "relayd.peers"));
    }

    /// Names and filter directives. Capability: C2.
    #[test]
    fn names_and_levels() {
        for ok in ["a", "node-1", "alice_2.test", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", &"x".repeat(65), "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
        for ok in ["info", "WARN", "info,relayd=debug", "wire=trace,warn"] {
            assert!(valid_level(ok), "{ok}");
        }
        for bad in ["", "loud", "info,", "=debug", "relayd=verbose"] {
            assert!(!valid_level(bad), "{bad}");
        }
    }
}
