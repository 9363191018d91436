//! The Prometheus endpoint (`relayd.metrics_listen`, loopback only, on
//! `tern-metrics`): every counter of [`super::stats::Counters`], and
//! gauges and per-kind counters sampled from the pump and the retainer
//! once a second (they live under the daemon's lock, which a scrape should
//! not take).

use std::sync::Arc;
use std::time::Duration;

use relayd::Stream;
use tern_metrics::prometheus_client::metrics::counter::Counter;
use tern_metrics::prometheus_client::metrics::family::Family;
use tern_metrics::prometheus_client::metrics::gauge::Gauge;
use tern_metrics::{Exposition, advance_counter};

use super::Shared;

/// How often the sampled values are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// `{kind="pubsub"}` and the like.
type KindLabel = [(&'static str, &'static str); 1];

/// The sampled metrics.
#[derive(Debug, Default)]
struct Sampled {
    pump_depth: Family<KindLabel, Gauge>,
    pump_dropped: Family<KindLabel, Counter>,
    pump_refused: Family<KindLabel, Counter>,
    retained_records: Gauge,
    retained_bytes: Gauge,
    gossipd_attached: Gauge,
    transport_dropped: Family<KindLabel, Counter>,
}

/// Builds the exposition and serves it on `listener` until the daemon
/// stops, refreshing the sampled values every [`SAMPLE_EVERY`].
pub(crate) async fn serve(shared: Arc<Shared>, listener: std::net::TcpListener) {
    let mut exp = Exposition::new("relayd", env!("CARGO_PKG_VERSION"));
    let sampled = Sampled::default();
    let reg = exp.registry();
    shared.counters.register(reg);
    macro_rules! register {
        ($($field:ident: $help:literal),* $(,)?) => {
            $(reg.register(stringify!($field), $help, sampled.$field.clone());)*
        };
    }
    register! {
        pump_depth: "Messages queued in the recv pump, by kind",
        pump_dropped: "Messages dropped on pump overflow (lossy kinds), by kind",
        pump_refused: "Messages the pump refused (urgent kinds; pushed back), by kind",
        retained_records: "Accepted DMs held until gossipd confirms them",
        retained_bytes: "Bytes of accepted DMs held",
        gossipd_attached: "1 while a gossipd session is attached",
        transport_dropped: "Messages the transport's own per-kind queue dropped before the pump took them (lossy kinds), by kind",
    }
    let refresh = || sample(&shared, &sampled);
    tern_metrics::serve_sampled(listener, exp, SAMPLE_EVERY, refresh, shared.stopped()).await;
}

fn sample(shared: &Shared, m: &Sampled) {
    let st = shared.lock();
    for k in Stream::ALL {
        let s = st.pump.stats(k);
        let label = [("kind", k.name())];
        m.pump_depth
            .get_or_create(&label)
            .set(i64::try_from(s.depth).unwrap_or(i64::MAX));
        advance_counter(&m.pump_dropped.get_or_create(&label), s.dropped);
        advance_counter(&m.pump_refused.get_or_create(&label), s.refused);
    }
    let r = st.retainer.stats();
    m.retained_records
        .set(i64::try_from(r.held).unwrap_or(i64::MAX));
    m.retained_bytes
        .set(i64::try_from(r.held_bytes).unwrap_or(i64::MAX));
    m.gossipd_attached.set(i64::from(st.session.is_some()));
    drop(st);
    // The endpoint's queues sit before the pump: a flood the pump never
    // saw is dropped (and counted) there.
    for k in shared.endpoint.diagnostics().kinds {
        if let Ok(s) = Stream::from_transport(libtransport::Kind(k.kind)) {
            let label = [("kind", s.name())];
            advance_counter(&m.transport_dropped.get_or_create(&label), k.drops);
        }
    }
}
