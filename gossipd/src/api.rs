//! The application API socket (`tern.client`, `wire/schema/client.fbs`,
//! `docs/protocols/client.md`) on server-core. Capabilities: P1 (pubsub
//! for applications), D1–D3 (DMs with receipts naming the path), P3 (DMs
//! are acknowledged by the application before relayd forgets them).
//!
//! Each connection is one task reading requests in order; a `SendDm`
//! runs on a task of its own (its receipt may take the whole budget) so
//! later requests are not held behind it. Answers and stream items go out
//! through the connection's `FrameSender` (bounded backlog, never
//! blocking). Stream items — deliveries and incoming DMs — are dropped
//! and counted when the client's backlog is over [`STREAM_BACKLOG`]
//! frames: a slow application loses its own deliveries (reported in the
//! next `Delivery.dropped_before`), never stalls gossip. A dropped
//! incoming DM is not lost: it stays unacknowledged and relayd keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use libgossip::proto::{DmPath, PeerId, TopicId};
use libgossip::runtime::Gossip;
use server_core::framed::Opened;
use server_core::{Accepted, Budget, FrameSender, Limits, Listener};
use wire::frame::{ClientMsg, ClientSchema};
use wire::generated::client as fc;
use wire::generated::hello::Role;
use wire::hello::HelloConfig;

use crate::RelayLink;

/// The protocol name in the hello.
pub const PROTOCOL: &str = "tern.client";

/// Frames a client may have queued toward it before stream items are
/// dropped for it (answers are still queued, up to server-core's backlog).
pub const STREAM_BACKLOG: usize = 256;

/// Longest topic name, bytes.
pub const MAX_TOPIC: usize = 255;

/// Counters of the API socket.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Frames that were no valid request (answered `InvalidRequest`).
    pub invalid: AtomicU64,
    /// Deliveries dropped because the client's backlog was full.
    pub deliveries_dropped: AtomicU64,
    /// Incoming DMs not offered because the client's backlog was full
    /// (still held: relayd re-sends them to the next gossipd).
    pub dms_dropped: AtomicU64,
    /// DMs the applications acknowledged.
    pub dms_acked: AtomicU64,
}

/// What every connection shares.
#[derive(Debug)]
pub struct Api {
    /// The gossip runtime.
    pub gossip: Gossip,
    /// The relay link (DM acknowledgements, transport state).
    pub link: Arc<RelayLink>,
    /// This node's id.
    pub me: PeerId,
    /// Topics joined by any connection (rejoined after a relayd restart).
    pub topics: Arc<std::sync::Mutex<std::collections::BTreeSet<[u8; 32]>>>,
    /// Deliveries queued per subscription in the runtime.
    pub subscriber_queue: usize,
    /// Counters.
    pub stats: ApiStats,
    /// Read buffers of all connections.
    pub reads: Arc<Budget>,
    /// Queued answers of all connections.
    pub responses: Arc<Budget>,
    /// The socket's limits.
    pub limits: Limits,
    /// Node start, for `uptime_ms`.
    pub started: std::time::Instant,
    /// DMs held until an application acknowledges them.
    pub inbox: Arc<crate::inbox::Inbox>,
}

/// Moves every DM `sub` delivers into the inbox until the runtime stops.
/// The daemon subscribes before the link opens, so no DM reaches the
/// runtime before there is a subscriber (it drops DMs nobody subscribed
/// to).
pub async fn collect_dms(api: Arc<Api>, mut sub: libgossip::runtime::DmSubscription) {
    while let Some(d) = sub.recv().await {
        let redelivered = api.link.dm_redelivered(&d.id.0);
        api.inbox.push(d, redelivered);
    }
}

/// Accepts application connections until `stop` resolves.
pub async fn serve(
    api: Arc<Api>,
    listener: Listener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    listener
        .serve_until(stop, |conn| {
            tokio::spawn(connection(api.clone(), conn));
        })
        .await;
}

async fn connection(api: Arc<Api>, conn: Accepted) {
    let hello = HelloConfig::new(PROTOCOL, Role::Gossipd);
    let opened = server_core::framed::open(
        conn,
        &hello,
        &api.limits,
        api.reads.clone(),
        api.responses.clone(),
    )
    .await;
    let Opened {
        stream,
        slot,
        mut reader,
        tx,
        ..
    } = match opened {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(error = %e, "client hello failed");
            return;
        }
    };
    let mut streams = Vec::new();
    let mut dm_stream = false;
    let mut fbb = FlatBufferBuilder::new();
    while let Ok(Some(frame)) = reader.next(&stream, &slot).await {
        api.stats.requests.fetch_add(1, Ordering::Relaxed);
        let Ok(msg) = wire::frame::decode_client(&frame.bytes) else {
            api.stats.invalid.fetch_add(1, Ordering::Relaxed);
            let out = response(
                &mut fbb,
                0,
                fc::Status::InvalidRequest,
                "not a client frame",
            );
            let _ = tx.send(&out);
            continue;
        };
        match msg {
            ClientMsg::Join(m) => {
                let (st, text) = match topic(m.topic()) {
                    Ok(t) => match api.gossip.join(t, &api.link.connected()).await {
                        Ok(()) => {
                            crate::lock(&api.topics).insert(t.0);
                            (fc::Status::Ok, "")
                        }
                        Err(_) => (fc::Status::ShuttingDown, "gossip runtime stopped"),
                    },
                    Err(e) => e,
                };
                let _ = tx.send(&response(&mut fbb, m.request_id(), st, text));
            }
            ClientMsg::Leave(m) => {
                // The runtime keeps the overlay for now; the topic is no
                // longer rejoined and this connection's streams of it end.
                let (st, text) = match topic(m.topic()) {
                    Ok(t) => {
                        crate::lock(&api.topics).remove(&t.0);
                        streams.retain(|(tt, h): &(TopicId, tokio::task::JoinHandle<()>)| {
                            if *tt == t {
                                h.abort();
                                false
                            } else {
                                true
                            }
                        });
                        (fc::Status::Ok, "")
                    }
                    Err(e) => e,
                };
                let _ = tx.send(&response(&mut fbb, m.request_id(), st, text));
            }
            ClientMsg::Publish(m) => {
                let out = match topic(m.topic()) {
                    Err((st, text)) => published(&mut fbb, m.request_id(), st, text, None),
                    Ok(t) if !crate::lock(&api.topics).contains(&t.0) => published(
                        &mut fbb,
                        m.request_id(),
                        fc::Status::NotJoined,
                        "join the topic first",
                        None,
                    ),
                    Ok(t) => {
                        let payload = Bytes::copy_from_slice(m.payload().bytes());
                        match api.gossip.publish(t, payload).await {
                            Ok(id) => {
                                published(&mut fbb, m.request_id(), fc::Status::Ok, "", Some(id.0))
                            }
                            Err(e) => published(
                                &mut fbb,
                                m.request_id(),
                                fc::Status::InvalidRequest,
                                &e.to_string(),
                                None,
                            ),
                        }
                    }
                };
                let _ = tx.send(&out);
            }
            ClientMsg::Subscribe(m) => {
                let rid = m.request_id();
                let (st, text) = match topic(m.topic()) {
                    Err(e) => e,
                    Ok(t) => match api
                        .gossip
                        .subscribe_with_capacity(t, api.subscriber_queue)
                        .await
                    {
                        Ok(sub) => {
                            let h = tokio::spawn(deliveries(
                                api.clone(),
                                tx.clone(),
                                sub,
                                rid,
                                m.topic().to_owned(),
                            ));
                            streams.push((t, h));
                            (fc::Status::Ok, "")
                        }
                        Err(_) => (fc::Status::ShuttingDown, "gossip runtime stopped"),
                    },
                };
                let _ = tx.send(&response(&mut fbb, rid, st, text));
            }
            ClientMsg::SubscribeDms(m) => {
                let rid = m.request_id();
                let (st, text) = if dm_stream {
                    (fc::Status::LimitReached, "one DM stream per connection")
                } else {
                    dm_stream = true;
                    let h = tokio::spawn(incoming_dms(api.clone(), tx.clone(), rid));
                    streams.push((TopicId([0; 32]), h));
                    (fc::Status::Ok, "")
                };
                let _ = tx.send(&response(&mut fbb, rid, st, text));
            }
            ClientMsg::AckDms(m) => {
                for id in m.ids().iter() {
                    if api.inbox.ack(&id.0) {
                        api.stats.dms_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not held by the link for loopback DMs (nothing retained).
                    let _ = api.link.ack_dm(&id.0);
                }
                let _ = tx.send(&response(&mut fbb, m.request_id(), fc::Status::Ok, ""));
            }
            ClientMsg::SendDm(m) => {
                let rid = m.request_id();
                let peer = PeerId(m.peer().0);
                let body = Bytes::copy_from_slice(m.payload().bytes());
                let (api, tx) = (api.clone(), tx.clone());
                tokio::spawn(async move {
                    let r = api.gossip.send_dm(peer, body).await;
                    let mut fbb = FlatBufferBuilder::new();
                    let _ = tx.send(&receipt(&mut fbb, rid, r));
                });
            }
            ClientMsg::GetPeers(m) => {
                let out = match m.topic().map(topic) {
                    Some(Err((st, text))) => peers(&mut fbb, m.request_id(), st, text, None, &[]),
                    Some(Ok(t)) => {
                        let list = api.gossip.peers(t).await.unwrap_or_default();
                        peers(
                            &mut fbb,
                            m.request_id(),
                            fc::Status::Ok,
                            "",
                            m.topic(),
                            &list,
                        )
                    }
                    None => peers(
                        &mut fbb,
                        m.request_id(),
                        fc::Status::Unsupported,
                        "name a topic",
                        None,
                        &[],
                    ),
                };
                let _ = tx.send(&out);
            }
            ClientMsg::GetStatus(m) => {
                let out = status(&mut fbb, &api, m.request_id());
                let _ = tx.send(&out);
            }
            ClientMsg::Unsubscribe(m) => {
                let _ = tx.send(&response(
                    &mut fbb,
                    m.request_id(),
                    fc::Status::Unsupported,
                    "close the connection to end its streams",
                ));
            }
            _ => {
                api.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(&response(
                    &mut fbb,
                    0,
                    fc::Status::InvalidRequest,
                    "not a request",
                ));
            }
        }
    }
    for (_, h) in streams {
        h.abort();
    }
}

/// A topic name as the runtime's id, or why it is refused.
fn topic(name: &str) -> Result<TopicId, (fc::Status, &'static str)> {
    if name.is_empty() || name.len() > MAX_TOPIC {
        return Err((fc::Status::InvalidTopic, "topic names are 1..=255 bytes"));
    }
    Ok(TopicId::from_name(name))
}

/// Feeds one subscription's deliveries to the client.
async fn deliveries(
    api: Arc<Api>,
    tx: Arc<FrameSender>,
    mut sub: libgossip::runtime::Subscription,
    subscription: u64,
    topic: String,
) {
    let mut fbb = FlatBufferBuilder::new();
    let mut dropped: u64 = 0;
    while let Some(d) = sub.recv().await {
        if tx.is_closed() {
            return;
        }
        if tx.backlog() >= STREAM_BACKLOG {
            dropped += 1;
            api.stats.deliveries_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        fbb.reset();
        let t = fbb.create_string(&topic);
        let payload = fbb.create_vector(&d.payload);
        let m = fc::Delivery::create(
            &mut fbb,
            &fc::DeliveryArgs {
                subscription,
                topic: Some(t),
                origin: Some(&fc::PeerId(d.origin.0)),
                message_id: Some(&fc::MessageId(d.id.0)),
                seqno: d.seqno,
                payload: Some(payload),
                dropped_before: dropped,
            },
        );
        dropped = 0;
        let _ = tx.send(&finish(
            &mut fbb,
            fc::ClientMessage::Delivery,
            m.as_union_value(),
        ));
    }
}

/// Feeds the inbox to the client: every held DM first, then new ones
/// (one DM stream per connection).
async fn incoming_dms(api: Arc<Api>, tx: Arc<FrameSender>, subscription: u64) {
    let mut fbb = FlatBufferBuilder::new();
    let mut cursor = 0;
    loop {
        // Registered before reading, so a push in between still wakes us.
        let changed = api.inbox.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        for h in api.inbox.after(cursor) {
            cursor = h.seq;
            if tx.is_closed() {
                return;
            }
            if tx.backlog() >= STREAM_BACKLOG {
                // Still held: offered again on the next stream.
                api.stats.dms_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let d = &h.dm;
            fbb.reset();
            let payload = fbb.create_vector(&d.payload);
            let m = fc::IncomingDm::create(
                &mut fbb,
                &fc::IncomingDmArgs {
                    subscription,
                    dm_id: Some(&fc::DmId(d.id.0)),
                    from: Some(&fc::PeerId(d.from.0)),
                    path: path(d.path),
                    payload: Some(payload),
                    redelivered: h.redelivered,
                },
            );
            let _ = tx.send(&finish(
                &mut fbb,
                fc::ClientMessage::IncomingDm,
                m.as_union_value(),
            ));
        }
        if tx.is_closed() {
            return;
        }
        changed.await;
    }
}

fn path(p: DmPath) -> fc::DmPath {
    match p {
        DmPath::Loopback => fc::DmPath::Loopback,
        DmPath::Direct => fc::DmPath::Direct,
        DmPath::Relayed => fc::DmPath::Relayed,
    }
}

fn outcome(o: libgossip::proto::AttemptOutcome) -> fc::AttemptOutcome {
    use libgossip::proto::AttemptOutcome as A;
    match o {
        A::Accepted => fc::AttemptOutcome::Accepted,
        A::Backpressured => fc::AttemptOutcome::Backpressured,
        A::ConsumerGone => fc::AttemptOutcome::ConsumerGone,
        A::TimedOut => fc::AttemptOutcome::TimedOut,
        A::NotConnected | A::NoKemKey | A::NoRoute => fc::AttemptOutcome::Unreachable,
    }
}

fn finish(
    fbb: &mut FlatBufferBuilder<'_>,
    t: fc::ClientMessage,
    msg: WIPOffset<UnionWIPOffset>,
) -> Vec<u8> {
    let root = fc::ClientFrame::create(
        fbb,
        &fc::ClientFrameArgs {
            msg_type: t,
            msg: Some(msg),
        },
    );
    wire::frame::finish::<ClientSchema>(fbb, root);
    fbb.finished_data().to_vec()
}

fn response(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    status: fc::Status,
    text: &str,
) -> Vec<u8> {
    fbb.reset();
    let message = (!text.is_empty()).then(|| fbb.create_string(text));
    let m = fc::Response::create(
        fbb,
        &fc::ResponseArgs {
            request_id,
            status,
            message,
        },
    );
    finish(fbb, fc::ClientMessage::Response, m.as_union_value())
}

fn published(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    status: fc::Status,
    text: &str,
    id: Option<[u8; 32]>,
) -> Vec<u8> {
    fbb.reset();
    let message = (!text.is_empty()).then(|| fbb.create_string(text));
    let id = id.map(fc::MessageId);
    let m = fc::Published::create(
        fbb,
        &fc::PublishedArgs {
            request_id,
            status,
            message,
            message_id: id.as_ref(),
            seqno: 0,
            replayed: false,
        },
    );
    finish(fbb, fc::ClientMessage::Published, m.as_union_value())
}

fn receipt(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    r: Result<libgossip::proto::DmReceipt, libgossip::runtime::RuntimeError>,
) -> Vec<u8> {
    fbb.reset();
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let message = Some(fbb.create_string(&e.to_string()));
            let m = fc::DmReceipt::create(
                fbb,
                &fc::DmReceiptArgs {
                    request_id,
                    status: fc::Status::Busy,
                    message,
                    ..Default::default()
                },
            );
            return finish(fbb, fc::ClientMessage::DmReceipt, m.as_union_value());
        }
    };
    let attempts: Vec<_> = r
        .attempts
        .iter()
        .map(|a| {
            fc::DmAttempt::create(
                fbb,
                &fc::DmAttemptArgs {
                    path: path(a.path),
                    outcome: outcome(a.outcome),
                    elapsed_us: 0,
                },
            )
        })
        .collect();
    let attempts = fbb.create_vector(&attempts);
    let (status, p) = match r.path {
        Some(p) => (fc::Status::Ok, path(p)),
        None => (fc::Status::Unreachable, fc::DmPath::Direct),
    };
    let m = fc::DmReceipt::create(
        fbb,
        &fc::DmReceiptArgs {
            request_id,
            status,
            message: None,
            dm_id: Some(&fc::DmId(r.id.0)),
            path: p,
            attempts: Some(attempts),
            replayed: false,
        },
    );
    finish(fbb, fc::ClientMessage::DmReceipt, m.as_union_value())
}

fn peers(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    status: fc::Status,
    text: &str,
    topic: Option<&str>,
    list: &[PeerId],
) -> Vec<u8> {
    fbb.reset();
    let message = (!text.is_empty()).then(|| fbb.create_string(text));
    let topic = topic.map(|t| fbb.create_string(t));
    let infos: Vec<_> = list
        .iter()
        .map(|p| {
            fc::PeerInfo::create(
                fbb,
                &fc::PeerInfoArgs {
                    peer: Some(&fc::PeerId(p.0)),
                    ..Default::default()
                },
            )
        })
        .collect();
    let infos = fbb.create_vector(&infos);
    let m = fc::PeersResponse::create(
        fbb,
        &fc::PeersResponseArgs {
            request_id,
            status,
            message,
            topic,
            peers: Some(infos),
        },
    );
    finish(fbb, fc::ClientMessage::PeersResponse, m.as_union_value())
}

fn status(fbb: &mut FlatBufferBuilder<'_>, api: &Api, request_id: u64) -> Vec<u8> {
    fbb.reset();
    let version = fbb.create_string(env!("CARGO_PKG_VERSION"));
    let m = fc::NodeStatus::create(
        fbb,
        &fc::NodeStatusArgs {
            request_id,
            status: fc::Status::Ok,
            message: None,
            node: Some(&fc::PeerId(api.me.0)),
            version: Some(version),
            // Topic names are not kept (only their ids): left empty.
            topics: None,
            connected_peers: u32::try_from(api.link.connected_peers()).unwrap_or(u32::MAX),
            transport_up: api.link.stats().attached.load(Ordering::Relaxed),
            uptime_ms: u64::try_from(api.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
    );
    finish(fbb, fc::ClientMessage::NodeStatus, m.as_union_value())
}
