//! The daemon's counters and the JSON the admin socket answers with.
//!
//! Every drop and refusal in the daemon is counted here, in the pump's
//! per-kind stats, in the retainer's stats, or in server-core's listener
//! stats — and all of them are in `diagnostics`.

use relayd::Stream;
use serde_json::{Value, json};
use tern_metrics::prometheus_client::metrics::counter::Counter;
use tern_metrics::prometheus_client::registry::Registry;

use super::Shared;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Lifetime counters: Prometheus counters (one relaxed atomic each),
        /// shown in `diagnostics` and, when enabled, scraped.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $($(#[doc = $doc])* pub(crate) $name: Counter,)*
        }

        impl Counters {
            fn json(&self) -> Value {
                let mut m = serde_json::Map::new();
                $(m.insert(stringify!($name).to_owned(), json!(self.$name.get()));)*
                Value::Object(m)
            }

            /// Registers every counter (as `relayd_<name>_total`, its doc
            /// as the help text).
            pub(crate) fn register(&self, registry: &mut Registry) {
                $(registry.register(
                    stringify!($name),
                    concat!($($doc),*).trim(),
                    self.$name.clone(),
                );)*
            }
        }
    };
}

counters! {
    /// gossipd sessions established.
    sessions,
    /// Connections refused because a gossipd was attached (typed `Busy`).
    sessions_refused_busy,
    /// Sessions whose hello or data-channel setup failed.
    sessions_failed,
    /// Messages from peers of a kind this build does not forward (dropped).
    inbound_unknown_kind,
    /// Pump records pushed into the inbound ring.
    inbound_forwarded,
    /// Records larger than the ring's record limit (dropped).
    inbound_too_large,
    /// Non-retained records lost when a session ended mid-push.
    inbound_lost_on_detach,
    /// Lossy records (pubsub, bulk, probes) waiting for ring space that an
    /// urgent record displaced (dropped).
    inbound_lossy_displaced,
    /// Times the drainer found the inbound ring full.
    ring_full,
    /// Retained DMs re-sent to a newly attached gossipd.
    resent,
    /// Receive-ACKed DMs answered `Accepted`.
    dm_accepted,
    /// Receive-ACKed DMs answered `Backpressured` (ring or retention full).
    dm_backpressured,
    /// Receive-ACKed DMs answered `ConsumerGone` (no gossipd).
    dm_consumer_gone,
    /// Receive-ACKed DMs already held (answered `Accepted`: the held copy
    /// is the one delivered).
    dm_duplicate,
    /// DMs pushed into the ring whose responder had already expired (the
    /// sender saw `Backpressured` and retries; gossipd dedupes by id).
    dm_expired,
    /// Outbound records taken from gossipd's ring.
    outbound_received,
    /// Outbound sends completed (plain: queued; ACKed: answered).
    outbound_sent,
    /// Outbound sends that failed.
    outbound_failed,
    /// Outbound records that did not decode or named an unknown kind.
    outbound_bad,
    /// `SendResult` frames that could not be sent to gossipd.
    send_results_lost,
    /// `PeerEvent` frames sent to gossipd.
    peer_events,
    /// Peer events not sent: no gossipd attached, or its control socket
    /// closed or over its backlog.
    peer_events_unsent,
    /// Control frames from gossipd that were not `Consumed`.
    control_unexpected,
}

/// Bumps one counter.
pub(crate) fn bump(c: &Counter) {
    c.inc();
}

/// The `status`/`diagnostics` document.
pub(crate) fn snapshot(shared: &Shared) -> Value {
    let (pump, retain, session, pump_len, pump_bytes) = {
        let st = shared.lock();
        let kinds: serde_json::Map<String, Value> = Stream::ALL
            .into_iter()
            .map(|k| {
                let s = st.pump.stats(k);
                (
                    k.name().to_owned(),
                    serde_json::to_value(s).unwrap_or(Value::Null),
                )
            })
            .collect();
        let r = st.retainer.stats();
        let retain = json!({
            "admitted": r.admitted, "cancelled": r.cancelled,
            "refused_records": r.refused_records, "refused_bytes": r.refused_bytes,
            "duplicates": r.duplicates, "consumed": r.consumed,
            "unknown_consumed": r.unknown_consumed, "redelivered": r.redelivered,
            "attaches": r.attaches, "held": r.held, "held_bytes": r.held_bytes,
            "high_water": r.high_water,
        });
        let session = st.session.as_ref().map(|a| {
            let ring = a.inbound.stats();
            json!({
                "id": a.id, "peer_pid": a.peer_pid,
                "inbound_ring": { "pushed": ring.pushed, "full_rejections": ring.full_rejections },
                "control_backlog": a.control.backlog(),
            })
        });
        (
            Value::Object(kinds),
            retain,
            session,
            st.pump.len(),
            st.pump.bytes(),
        )
    };
    let listener = |m: &std::sync::Mutex<Option<std::sync::Arc<server_core::ListenerStats>>>| {
        m.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|s| serde_json::to_value(s.snapshot()).unwrap_or(Value::Null))
    };
    let endpoint = serde_json::to_value(shared.endpoint.diagnostics()).unwrap_or(Value::Null);
    json!({
        "daemon": "relayd",
        "version": env!("CARGO_PKG_VERSION"),
        "node": shared.cfg.node,
        "pid": std::process::id(),
        "instance": shared.instance,
        "uptime_s": shared.started.elapsed().as_secs(),
        "peer_id": shared.endpoint.peer_id().to_string(),
        "listen": shared.endpoint.local_addr().to_string(),
        "gossipd_attached": session.is_some(),
        // Held from a finished hello through the ring setup to the end.
        "session_taken": shared.session_taken.load(std::sync::atomic::Ordering::Acquire),
        "session": session,
        "counters": shared.counters.json(),
        "pump": { "queued": pump_len, "queued_bytes": pump_bytes, "kinds": pump },
        "retention": retain,
        "relay_socket": listener(&shared.relay_stats),
        "admin_socket": listener(&shared.admin_stats),
        "budgets": {
            "reads": serde_json::to_value(shared.reads.stats()).unwrap_or(Value::Null),
            "responses": serde_json::to_value(shared.responses.stats()).unwrap_or(Value::Null),
        },
        "endpoint": endpoint,
    })
}
