//! One application connection: its requests in order, its streams, its
//! joins.
//!
//! A stream ends (`Unsubscribe`, `Leave`) by stopping its task and waiting
//! for it before `StreamEnded` goes out, so nothing of that stream follows
//! the `StreamEnded`; the answer to the request comes after it. A stream
//! whose source ends (the runtime stopping) sends its own `StreamEnded`
//! (`ShuttingDown`). When the connection closes its streams stop and its
//! joins are given back ([`super::topics`]); `SendDm`s in flight go on, so
//! their outcomes are there for a retry on a new connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use libgossip::proto::{DmError, PeerId, TopicId};
use libgossip::runtime::RuntimeError;
use server_core::framed::Opened;
use server_core::{Accepted, FrameSender};
use wire::frame::ClientMsg;
use wire::generated::client as fc;
use wire::generated::hello::Role;
use wire::hello::HelloConfig;

use super::client_ids::{self, Kind, Once};
use super::encode::{self, DmOutcome, PublishOutcome, Refusal};
use super::{Api, MAX_DMS_IN_FLIGHT, MAX_STREAMS, MAX_TOPIC, MAX_TOPICS, PROTOCOL, STREAM_BACKLOG};

/// What the `ClientId` table keeps per id.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Published(PublishOutcome),
    Dm(DmOutcome),
}

/// One open stream: a topic's deliveries, or the DM stream (`topic:
/// None`). Its task returns whether it sent its own `StreamEnded`.
struct Stream {
    topic: Option<TopicId>,
    task: tokio::task::JoinHandle<bool>,
}

/// A connection's state.
struct Conn {
    api: Arc<Api>,
    tx: Arc<FrameSender>,
    fbb: FlatBufferBuilder<'static>,
    joined: HashSet<TopicId>,
    /// By subscription id (the opening request's id).
    streams: HashMap<u64, Stream>,
    dm_stream: Option<u64>,
    /// `SendDm` tasks not finished.
    dms_in_flight: Arc<AtomicUsize>,
}

pub(super) async fn run(api: Arc<Api>, conn: Accepted) {
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
    let mut c = Conn {
        api,
        tx,
        fbb: FlatBufferBuilder::new(),
        joined: HashSet::new(),
        streams: HashMap::new(),
        dm_stream: None,
        dms_in_flight: Arc::new(AtomicUsize::new(0)),
    };
    while let Ok(Some(frame)) = reader.next(&stream, &slot).await {
        c.api.stats.requests.fetch_add(1, Ordering::Relaxed);
        match wire::frame::decode_client(&frame.bytes) {
            Ok(msg) => c.request(msg).await,
            Err(_) => c.invalid("not a client frame"),
        }
    }
    c.close().await;
}

/// A topic name as the runtime's id, or why it is refused.
fn topic(name: &str) -> Result<TopicId, Refusal> {
    if name.is_empty() || name.len() > MAX_TOPIC {
        return Err(Refusal::new(
            fc::Status::InvalidTopic,
            "topic names are 1..=255 bytes",
        ));
    }
    Ok(TopicId::from_name(name))
}

fn stopped() -> Refusal {
    Refusal::new(fc::Status::ShuttingDown, "gossip runtime stopped")
}

fn runtime_refusal(e: &RuntimeError) -> Refusal {
    let status = match e {
        RuntimeError::Stopped => fc::Status::ShuttingDown,
        RuntimeError::Proto(_) => fc::Status::NotJoined,
        RuntimeError::Dm(DmError::PayloadTooLarge { .. }) => fc::Status::TooLarge,
        RuntimeError::Dm(DmError::PendingFull) => fc::Status::Busy,
        _ => fc::Status::Internal,
    };
    Refusal::new(status, e.to_string())
}

impl Outcome {
    fn published(self) -> Option<PublishOutcome> {
        match self {
            Outcome::Published(p) => Some(p),
            Outcome::Dm(_) => None,
        }
    }

    fn dm(self) -> Option<DmOutcome> {
        match self {
            Outcome::Dm(d) => Some(d),
            Outcome::Published(_) => None,
        }
    }
}

/// Runs `work` once per client id (see `client_ids.rs`); the outcome
/// `pick` takes from it, and whether it is replayed. `pick` finds the
/// other kind's outcome only by a hash collision: the id is in use for
/// other content.
async fn once<T>(
    api: &Api,
    client_id: [u8; 16],
    content: client_ids::Content,
    work: impl Future<Output = (Outcome, bool)>,
    pick: fn(Outcome) -> Option<Result<T, Refusal>>,
) -> (Result<T, Refusal>, bool) {
    let conflict = || {
        Err(Refusal::new(
            fc::Status::Conflict,
            "client_id reused for different content",
        ))
    };
    match api
        .client_ids
        .once(client_id, content, &api.stats, work)
        .await
    {
        Once::Fresh(o) => (pick(o).unwrap_or_else(conflict), false),
        Once::Replayed(o) => (pick(o).unwrap_or_else(conflict), true),
        Once::Conflict => (conflict(), false),
        Once::Full => (
            Err(Refusal::new(
                fc::Status::Busy,
                "too many publishes and DMs in flight",
            )),
            false,
        ),
    }
}

/// Counts a `SendDm` task in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    fn send(&self, frame: &[u8]) {
        // A closed connection ends the read loop; nothing to do here.
        let _ = self.tx.send(frame);
    }

    fn respond(&mut self, request_id: u64, r: Result<(), Refusal>) {
        let (status, text) = match &r {
            Ok(()) => (fc::Status::Ok, ""),
            Err(e) => (e.status, e.text.as_str()),
        };
        let out = encode::response(&mut self.fbb, request_id, status, text);
        self.send(&out);
    }

    fn invalid(&mut self, text: &str) {
        self.api.stats.invalid.fetch_add(1, Ordering::Relaxed);
        let out = encode::response(&mut self.fbb, 0, fc::Status::InvalidRequest, text);
        self.send(&out);
    }

    fn limit(&self, text: &str) -> Refusal {
        self.api
            .stats
            .limits_refused
            .fetch_add(1, Ordering::Relaxed);
        Refusal::new(fc::Status::LimitReached, text)
    }

    async fn request(&mut self, msg: ClientMsg<'_>) {
        match msg {
            ClientMsg::Join(m) => {
                let r = self.join(m.topic()).await;
                self.respond(m.request_id(), r);
            }
            ClientMsg::Leave(m) => {
                let r = self.leave(m.topic()).await;
                self.respond(m.request_id(), r);
            }
            ClientMsg::Publish(m) => {
                let r = self
                    .publish(m.client_id().0, m.topic(), m.payload().bytes())
                    .await;
                let out = encode::published(&mut self.fbb, m.request_id(), &r.0, r.1);
                self.send(&out);
            }
            ClientMsg::Subscribe(m) => {
                let r = self.subscribe(m.request_id(), m.topic()).await;
                self.respond(m.request_id(), r);
            }
            ClientMsg::Unsubscribe(m) => {
                let r = if self
                    .end(m.subscription(), fc::Status::Ok, "unsubscribed")
                    .await
                {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        fc::Status::NoSuchSubscription,
                        "no such subscription on this connection",
                    ))
                };
                self.respond(m.request_id(), r);
            }
            ClientMsg::SubscribeDms(m) => {
                let r = self.subscribe_dms(m.request_id());
                self.respond(m.request_id(), r);
            }
            ClientMsg::AckDms(m) => {
                for id in m.ids().iter() {
                    if self.api.inbox.ack(&id.0) {
                        self.api.stats.dms_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not held by the link for loopback DMs (nothing retained).
                    let _ = self.api.link.ack_dm(&id.0);
                }
                self.respond(m.request_id(), Ok(()));
            }
            ClientMsg::SendDm(m) => {
                self.send_dm(
                    m.request_id(),
                    m.client_id().0,
                    PeerId(m.peer().0),
                    m.payload().bytes(),
                );
            }
            ClientMsg::GetPeers(m) => {
                let out = match m.topic().map(topic) {
                    Some(Err(e)) => {
                        encode::peers(&mut self.fbb, m.request_id(), e.status, &e.text, None, &[])
                    }
                    Some(Ok(t)) => {
                        let list = self.api.gossip.peers(t).await.unwrap_or_default();
                        let rid = m.request_id();
                        encode::peers(&mut self.fbb, rid, fc::Status::Ok, "", m.topic(), &list)
                    }
                    None => encode::peers(
                        &mut self.fbb,
                        m.request_id(),
                        fc::Status::Unsupported,
                        "name a topic",
                        None,
                        &[],
                    ),
                };
                self.send(&out);
            }
            ClientMsg::GetStatus(m) => {
                let topics = self.api.topic_names().await;
                let s = encode::Status {
                    node: self.api.me,
                    topics: &topics,
                    connected_peers: self.api.link.connected_peers(),
                    transport_up: self.api.link.stats().attached.load(Ordering::Relaxed),
                    uptime: self.api.started.elapsed(),
                };
                let out = encode::status(&mut self.fbb, m.request_id(), &s);
                self.send(&out);
            }
            _ => self.invalid("not a request"),
        }
    }

    async fn join(&mut self, name: &str) -> Result<(), Refusal> {
        let t = topic(name)?;
        let new = !self.joined.contains(&t);
        if new && self.joined.len() >= MAX_TOPICS {
            return Err(self.limit("too many topics joined on this connection"));
        }
        self.api
            .join_topic(t, name, new)
            .await
            .map_err(|_| stopped())?;
        self.joined.insert(t);
        Ok(())
    }

    /// Ends this connection's streams of the topic and gives its join
    /// back; leaving a topic the connection did not join is `Ok`.
    async fn leave(&mut self, name: &str) -> Result<(), Refusal> {
        let t = topic(name)?;
        if !self.joined.remove(&t) {
            return Ok(());
        }
        let mut subs: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.topic == Some(t))
            .map(|(id, _)| *id)
            .collect();
        subs.sort_unstable();
        for sub in subs {
            self.end(sub, fc::Status::Ok, "left the topic").await;
        }
        self.api.leave_topic(t).await;
        Ok(())
    }

    /// Publishes once per client id (see [`client_ids`]); the outcome and
    /// whether it is replayed.
    async fn publish(
        &mut self,
        client_id: [u8; 16],
        name: &str,
        payload: &[u8],
    ) -> (PublishOutcome, bool) {
        let t = match topic(name) {
            Ok(t) => t,
            Err(e) => return (Err(e), false),
        };
        // Looked up before the join check: a retry on a new connection
        // gets the first outcome even before it joins again.
        let joined = self.joined.contains(&t);
        let content = client_ids::content(Kind::Publish, &t.0, payload);
        let payload = Bytes::copy_from_slice(payload);
        let api = &self.api;
        let work = async move {
            if !joined {
                let e = Refusal::new(fc::Status::NotJoined, "join the topic first");
                return (Outcome::Published(Err(e)), false);
            }
            match api.gossip.publish_with_seqno(t, payload).await {
                Ok((id, seqno)) => (Outcome::Published(Ok((id.0, seqno))), true),
                Err(e) => (Outcome::Published(Err(runtime_refusal(&e))), false),
            }
        };
        once(api, client_id, content, work, Outcome::published).await
    }

    async fn subscribe(&mut self, request_id: u64, name: &str) -> Result<(), Refusal> {
        let t = topic(name)?;
        self.check_new_stream(request_id)?;
        if !self.joined.contains(&t) {
            return Err(Refusal::new(fc::Status::NotJoined, "join the topic first"));
        }
        let sub = self
            .api
            .gossip
            .subscribe_with_capacity(t, self.api.subscriber_queue)
            .await
            .map_err(|_| stopped())?;
        let task = tokio::spawn(deliveries(
            self.api.clone(),
            self.tx.clone(),
            sub,
            request_id,
            name.to_owned(),
        ));
        self.streams.insert(
            request_id,
            Stream {
                topic: Some(t),
                task,
            },
        );
        Ok(())
    }

    fn subscribe_dms(&mut self, request_id: u64) -> Result<(), Refusal> {
        if self.dm_stream.is_some() {
            return Err(self.limit("one DM stream per connection"));
        }
        self.check_new_stream(request_id)?;
        let task = tokio::spawn(incoming_dms(self.api.clone(), self.tx.clone(), request_id));
        self.dm_stream = Some(request_id);
        self.streams
            .insert(request_id, Stream { topic: None, task });
        Ok(())
    }

    /// Whether a stream with id `request_id` may open.
    fn check_new_stream(&self, request_id: u64) -> Result<(), Refusal> {
        if self.streams.contains_key(&request_id) {
            return Err(Refusal::new(
                fc::Status::InvalidRequest,
                "request_id names an open subscription",
            ));
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(self.limit("too many streams on this connection"));
        }
        Ok(())
    }

    /// Ends stream `sub` with `StreamEnded` (`status`, `text`) once its
    /// task has stopped; false when there is no such stream.
    async fn end(&mut self, sub: u64, status: fc::Status, text: &str) -> bool {
        let Some(s) = self.streams.remove(&sub) else {
            return false;
        };
        if self.dm_stream == Some(sub) {
            self.dm_stream = None;
        }
        s.task.abort();
        // Cancelled (or finished): nothing of it can be sent after this.
        if !matches!(s.task.await, Ok(true)) {
            self.api.stats.streams_ended.fetch_add(1, Ordering::Relaxed);
            let out = encode::stream_ended(&mut self.fbb, sub, status, text);
            self.send(&out);
        }
        true
    }

    /// Sends a DM once per client id on a task of its own.
    fn send_dm(&mut self, request_id: u64, client_id: [u8; 16], peer: PeerId, payload: &[u8]) {
        if self.dms_in_flight.load(Ordering::Relaxed) >= MAX_DMS_IN_FLIGHT {
            self.api
                .stats
                .dms_in_flight_refused
                .fetch_add(1, Ordering::Relaxed);
            let e = Refusal::new(
                fc::Status::Busy,
                "too many DMs in flight on this connection",
            );
            let out = encode::receipt(&mut self.fbb, request_id, &Err(e), false);
            return self.send(&out);
        }
        self.dms_in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(self.dms_in_flight.clone());
        let content = client_ids::content(Kind::Dm, &peer.0, payload);
        let body = Bytes::copy_from_slice(payload);
        let (api, tx) = (self.api.clone(), self.tx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let work = async {
                match api.gossip.send_dm(peer, body).await {
                    // Kept when some path delivered it; a failure frees
                    // the id, so a retry sends again.
                    Ok(r) => {
                        let keep = r.path.is_some();
                        (Outcome::Dm(Ok(r)), keep)
                    }
                    Err(e) => (Outcome::Dm(Err(runtime_refusal(&e))), false),
                }
            };
            let (r, replayed) = once(&api, client_id, content, work, Outcome::dm).await;
            let mut fbb = FlatBufferBuilder::new();
            let _ = tx.send(&encode::receipt(&mut fbb, request_id, &r, replayed));
        });
    }

    /// The connection closed: its streams stop, its joins are given back.
    async fn close(mut self) {
        for (_, s) in self.streams.drain() {
            s.task.abort();
        }
        for t in std::mem::take(&mut self.joined) {
            self.api.leave_topic(t).await;
        }
    }
}

/// Feeds one subscription's deliveries to the client; true when it ended
/// itself with `StreamEnded` (the runtime stopped).
async fn deliveries(
    api: Arc<Api>,
    tx: Arc<FrameSender>,
    mut sub: libgossip::runtime::Subscription,
    subscription: u64,
    topic: String,
) -> bool {
    let mut fbb = FlatBufferBuilder::new();
    let mut dropped: u64 = 0;
    while let Some(d) = sub.recv().await {
        if tx.is_closed() {
            return false;
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
        let _ = tx.send(&encode::finish(
            &mut fbb,
            fc::ClientMessage::Delivery,
            m.as_union_value(),
        ));
    }
    api.stats.streams_ended.fetch_add(1, Ordering::Relaxed);
    let out = encode::stream_ended(
        &mut fbb,
        subscription,
        fc::Status::ShuttingDown,
        "gossip runtime stopped",
    );
    let _ = tx.send(&out);
    true
}

/// Feeds the inbox to the client: every held DM first, then new ones
/// (one DM stream per connection). Ends only with the connection (false).
async fn incoming_dms(api: Arc<Api>, tx: Arc<FrameSender>, subscription: u64) -> bool {
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
                return false;
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
                    path: encode::path(d.path),
                    payload: Some(payload),
                    redelivered: h.redelivered,
                },
            );
            let _ = tx.send(&encode::finish(
                &mut fbb,
                fc::ClientMessage::IncomingDm,
                m.as_union_value(),
            ));
        }
        if tx.is_closed() {
            return false;
        }
        changed.await;
    }
}
