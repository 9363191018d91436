//! gossipd's counters and levels in one table ([`VALUES`]), read two ways:
//! the admin socket's `diagnostics` sections ([`sections`]) and the
//! Prometheus endpoint (`gossipd.metrics_listen`, loopback only, on
//! `tern-metrics`; [`serve`]). One table, so a value shown in one place
//! cannot be missing from the other.
//!
//! The counts themselves live where they are made — plain atomics in the
//! link, the API, the inbox and the verifyd pool, the intake's counters
//! under its lock — and stay there: the endpoint samples them once a
//! second ([`SAMPLE_EVERY`]) into Prometheus counters
//! ([`tern_metrics::advance_counter`]) and gauges, as relayd does, so a
//! scrape takes no lock of the daemon's.
//!
//! Names: a value `name` of section `link` is `link.name` in
//! `diagnostics` and `gossipd_link_name` scraped (`_total` appended to
//! counters by the encoder); the few values outside a section
//! (`gossipd_topics`, `gossipd_relayd_attached`, `gossipd_connected_peers`)
//! are gauges at the top of both. Everything is a count of things: no
//! unit suffix, and no lifetime averages (rates are PromQL's `rate()`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tern_metrics::prometheus_client::metrics::counter::Counter;
use tern_metrics::prometheus_client::metrics::gauge::Gauge;
use tern_metrics::prometheus_client::registry::Registry;
use tern_metrics::{Exposition, advance_counter};
use verifyd::client::PoolStats;
use wire::relay::IntakeStats;

use crate::api::Api;
use crate::link::LinkStats;

/// How often the endpoint refreshes the scraped values.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Whether a value only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A lifetime count (a Prometheus counter, `_total`).
    Counter,
    /// A level now (a Prometheus gauge).
    Gauge,
}

/// One value the daemon reports.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The `diagnostics` section (`""`: top level).
    pub section: &'static str,
    /// The name within the section.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The Prometheus help text.
    pub help: &'static str,
    read: fn(&Reading<'_>) -> u64,
}

impl Entry {
    /// The metric name under the `gossipd_` prefix, without `_total`:
    /// `<section>_<name>`, or `<name>` at the top level.
    #[must_use]
    pub fn metric(&self) -> String {
        if self.section.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}_{}", self.section, self.name)
        }
    }
}

/// What one reading of [`VALUES`] looks at, gathered once (the intake's
/// counters are copied under its lock once per reading).
struct Reading<'a> {
    api: &'a Api,
    link: &'a LinkStats,
    intake: IntakeStats,
    pool: &'a PoolStats,
}

impl<'a> Reading<'a> {
    fn of(api: &'a Api) -> Self {
        Self {
            api,
            link: api.link.stats(),
            intake: api.link.intake_stats(),
            pool: api.link.pool().stats(),
        }
    }
}

fn c(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn n(x: usize) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

macro_rules! values {
    ($([$($section:ident)?] $name:ident: $kind:ident = |$r:ident| $read:expr, $help:literal;)*) => {
        &[$(Entry {
            section: concat!($(stringify!($section))?),
            name: stringify!($name),
            kind: Kind::$kind,
            help: $help,
            read: |$r| $read,
        },)*]
    };
}

/// Every value of `diagnostics`' `link`, `intake`, `verifyd` and `api`
/// sections and the top-level levels, with its Prometheus type and help.
pub const VALUES: &[Entry] = values! {
    [] topics: Gauge = |r| n(crate::lock(&r.api.topics).len()),
        "Topics joined by the applications";
    [] relayd_attached: Gauge = |r| u64::from(r.link.attached.load(Ordering::Relaxed)),
        "1 while a relayd session is attached";
    [] connected_peers: Gauge = |r| n(r.api.link.connected_peers()),
        "Peers relayd reports connected";
    [link] attaches: Counter = |r| c(&r.link.attaches),
        "relayd sessions attached (1 at the first, +1 per reattach)";
    [link] attach_failures: Counter = |r| c(&r.link.attach_failures),
        "Failed attach attempts (relayd down, busy, bad setup)";
    [link] inbound: Counter = |r| c(&r.link.inbound),
        "Inbound records handed to the runtime";
    [link] inbound_malformed: Counter = |r| c(&r.link.inbound_malformed),
        "Inbound records that did not decode (dropped)";
    [link] inbound_duplicates: Counter = |r| c(&r.link.inbound_duplicates),
        "Inbound DM records dropped as duplicates by the intake";
    [link] inbound_intake_full: Counter = |r| c(&r.link.inbound_intake_full),
        "Inbound DM records dropped because the intake was full (relayd re-sends them)";
    [link] sent: Counter = |r| c(&r.link.sent),
        "Frames pushed into the outbound ring";
    [link] send_no_session: Counter = |r| c(&r.link.send_no_session),
        "Sends that found no relayd session";
    [link] send_ring_full: Counter = |r| c(&r.link.send_ring_full),
        "Sends whose outbound ring stayed full for their whole budget";
    [link] acks_refused: Counter = |r| c(&r.link.acks_refused),
        "Receive-ACKed sends refused because too many were open";
    [link] results_unmatched: Counter = |r| c(&r.link.results_unmatched),
        "Send results from relayd that matched no open send";
    [link] consumed_sent: Counter = |r| c(&r.link.consumed_sent),
        "Consumed seqs sent to relayd";
    [link] verify_pool: Counter = |r| c(&r.link.verify_pool),
        "Verify batches answered by the verifyd pool";
    [link] verify_local: Counter = |r| c(&r.link.verify_local),
        "Verify batches checked in-process (no verifyd reachable)";
    [link] events_dropped: Counter = |r| c(&r.link.events_dropped),
        "Link events the runtime no longer took (closing)";
    [link] dm_ids_full: Counter = |r| c(&r.link.dm_ids_full),
        "Held DMs whose id could not be remembered (relayd re-sends them)";
    [link] keys_written: Counter = |r| r.api.link.keys().map_or(0, |k| c(&k.written)),
        "Peers' key records written";
    [link] keys_not_written: Counter = |r| r.api.link.keys().map_or(0, |k| c(&k.not_written)),
        "Peers' key records not written (store full or write failed)";
    [intake] delivered: Counter = |r| r.intake.delivered,
        "Receive-ACKed DM records delivered by the intake";
    [intake] duplicates: Counter = |r| r.intake.duplicates,
        "Receive-ACKed DM records the intake removed as duplicates";
    [intake] full: Counter = |r| r.intake.full,
        "Offers the intake refused because too many awaited the application";
    [intake] app_acks: Counter = |r| r.intake.app_acks,
        "Application acknowledgements the intake took";
    [intake] unknown_acks: Counter = |r| r.intake.unknown_acks,
        "Application acknowledgements of ids not pending (ignored)";
    [intake] stale_seqs: Counter = |r| r.intake.stale_seqs,
        "Pending seqs dropped because their relayd instance is gone";
    [intake] pending: Gauge = |r| n(r.intake.pending),
        "DMs awaiting the application's acknowledgement";
    [verifyd] connected: Gauge = |r| n(r.api.link.pool().connected()),
        "verifyd instances the pool is connected to";
    [verifyd] resubmitted: Counter = |r| c(&r.pool.resubmitted),
        "Verify requests re-sent after a verifyd instance went away";
    [verifyd] busy: Counter = |r| c(&r.pool.busy),
        "Busy answers from verifyd";
    [verifyd] conns_lost: Counter = |r| c(&r.pool.conns_lost),
        "verifyd connections lost";
    [api] requests: Counter = |r| c(&r.api.stats.requests),
        "Application requests answered";
    [api] invalid: Counter = |r| c(&r.api.stats.invalid),
        "Application frames that were no valid request";
    [api] deliveries_dropped: Counter = |r| c(&r.api.stats.deliveries_dropped),
        "Deliveries dropped because an application's backlog was full";
    [api] dms_dropped: Counter = |r| c(&r.api.stats.dms_dropped),
        "Incoming DMs not offered because an application's backlog was full (still held)";
    [api] dms_acked: Counter = |r| c(&r.api.stats.dms_acked),
        "DMs the applications acknowledged";
    [api] inbox_held: Gauge = |r| n(r.api.inbox.len()),
        "DMs held until an application acknowledges them";
    [api] inbox_full: Counter = |r| c(&r.api.inbox.full),
        "DMs not held because the inbox was full";
    [api] client_ids_held: Gauge = |r| n(r.api.client_ids_held()),
        "Client ids remembered for idempotent retries";
    [api] client_ids_replayed: Counter = |r| c(&r.api.stats.client_ids_replayed),
        "Publish/SendDm answered with an earlier request's outcome";
    [api] client_ids_waited: Counter = |r| c(&r.api.stats.client_ids_waited),
        "Retries that waited for their first attempt in flight";
    [api] client_ids_conflicts: Counter = |r| c(&r.api.stats.client_ids_conflicts),
        "Publish/SendDm refused: client id reused for other content";
    [api] client_ids_full: Counter = |r| c(&r.api.stats.client_ids_full),
        "Publish/SendDm refused Busy: every client-id slot in flight";
    [api] client_ids_evicted: Counter = |r| c(&r.api.stats.client_ids_evicted),
        "Finished client-id outcomes dropped early to make room";
    [api] client_ids_expired: Counter = |r| c(&r.api.stats.client_ids_expired),
        "Finished client-id outcomes dropped at their ttl";
    [api] limits_refused: Counter = |r| c(&r.api.stats.limits_refused),
        "Join/Subscribe/SubscribeDms refused LimitReached";
    [api] dms_in_flight_refused: Counter = |r| c(&r.api.stats.dms_in_flight_refused),
        "SendDm refused Busy: connection's DMs in flight at the cap";
    [api] streams_ended: Counter = |r| c(&r.api.stats.streams_ended),
        "Streams ended with StreamEnded";
};

/// `diagnostics`' `link`, `intake`, `verifyd` and `api` objects, read now.
#[must_use]
pub fn sections(api: &Api) -> Map<String, Json> {
    let r = Reading::of(api);
    let mut out = Map::new();
    for e in VALUES.iter().filter(|e| !e.section.is_empty()) {
        if let Json::Object(s) = out
            .entry(e.section)
            .or_insert_with(|| Json::Object(Map::new()))
        {
            s.insert(e.name.to_owned(), Json::from((e.read)(&r)));
        }
    }
    out
}

/// A registered metric and how to refresh it.
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
}

/// Registers every entry of [`VALUES`] on `registry`.
fn register(registry: &mut Registry) -> Vec<(Handle, &'static Entry)> {
    VALUES
        .iter()
        .map(|e| {
            let h = match e.kind {
                Kind::Counter => {
                    let m = Counter::default();
                    registry.register(e.metric(), e.help, m.clone());
                    Handle::Counter(m)
                }
                Kind::Gauge => {
                    let m = Gauge::default();
                    registry.register(e.metric(), e.help, m.clone());
                    Handle::Gauge(m)
                }
            };
            (h, e)
        })
        .collect()
}

fn sample(api: &Api, handles: &[(Handle, &'static Entry)]) {
    let r = Reading::of(api);
    for (h, e) in handles {
        let v = (e.read)(&r);
        match h {
            Handle::Counter(m) => advance_counter(m, v),
            Handle::Gauge(m) => {
                m.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
    }
}

/// Serves [`VALUES`] (and `gossipd_build_info`) on `listener` until
/// `stop` resolves, refreshing them every [`SAMPLE_EVERY`].
pub async fn serve(api: Arc<Api>, listener: std::net::TcpListener, stop: impl Future<Output = ()>) {
    let mut exp = Exposition::new("gossipd", env!("CARGO_PKG_VERSION"));
    let handles = register(exp.registry());
    let refresh = || sample(&api, &handles);
    tern_metrics::serve_sampled(listener, exp, SAMPLE_EVERY, refresh, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique and follow the exposition's rules (lower-case
    /// letters, digits and `_`; the encoder adds the prefix and `_total`).
    #[test]
    fn metric_names_are_unique_and_plain() {
        let mut seen = std::collections::HashSet::new();
        for e in VALUES {
            let m = e.metric();
            assert!(seen.insert(m.clone()), "{m} twice");
            assert!(
                m.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{m}"
            );
            assert!(!m.ends_with("_total"), "{m}");
            assert!(!e.help.is_empty(), "{m} has no help");
        }
    }
}
