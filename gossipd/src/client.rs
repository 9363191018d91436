//! A small blocking client of gossipd's application API (`tern.client`,
//! `docs/protocols/client.md`). One connection; requests are answered in
//! the order they were sent except `SendDm` (answered when its receipt is
//! in), and stream items may arrive between answers, so [`Client`] keeps
//! the stream items it read while waiting for an answer and hands them
//! out with [`Client::next_delivery`] / [`Client::next_dm`].
//!
//! Applications must remove DMs they saw before by `dm_id` (a DM offered
//! again after a gossipd crash carries `redelivered = true`).
//!
//! Retries: [`Client::publish_with_id`] and [`Client::send_dm_with_id`]
//! take the request's `ClientId`; calling again with the same id and
//! content (on this or a new connection, while the first is in flight or
//! after it) returns the first outcome with `replayed = true` and sends
//! nothing again. [`Client::publish`] and [`Client::send_dm`] pick a
//! random id.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use wire::frame::{ClientMsg, ClientSchema, FrameReader, FrameWriter};
use wire::generated::client as fc;
use wire::generated::hello::Role;
use wire::hello::HelloConfig;

pub use wire::generated::client::{AttemptOutcome, DmPath, Status};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket or the framing failed (gossipd gone, timeout, garbage).
    #[error("client connection: {0}")]
    Wire(#[from] wire::WireError),
    /// The socket failed.
    #[error("client socket: {0}")]
    Io(#[from] std::io::Error),
    /// gossipd answered with a status other than `Ok`.
    #[error("gossipd answered {status:?}: {message}")]
    Refused {
        /// The status.
        status: Status,
        /// Its human detail.
        message: String,
    },
    /// gossipd answered something this client did not ask for.
    #[error("unexpected answer: {0}")]
    Unexpected(&'static str),
}

/// One pubsub delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The subscription (its `Subscribe` request id).
    pub subscription: u64,
    /// Topic name.
    pub topic: String,
    /// The publishing node.
    pub origin: [u8; 32],
    /// The message id.
    pub id: [u8; 32],
    /// The origin's sequence number of the message.
    pub seqno: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// Deliveries this subscription lost since the previous one.
    pub dropped_before: u64,
}

/// A stream gossipd ended (`Unsubscribe`, `Leave`, shutdown); nothing of
/// it comes after this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// The subscription.
    pub subscription: u64,
    /// Why (`Ok` when asked for).
    pub status: Status,
    /// Human detail.
    pub message: String,
}

/// A publish's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message id.
    pub id: [u8; 32],
    /// The sequence number this node gave it.
    pub seqno: u64,
    /// An earlier request with the same client id published it; nothing
    /// was sent again.
    pub replayed: bool,
}

/// One incoming DM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingDm {
    /// The DM's id (dedupe and acknowledge by it).
    pub id: [u8; 16],
    /// The sender.
    pub from: [u8; 32],
    /// How it arrived.
    pub path: DmPath,
    /// The payload.
    pub payload: Vec<u8>,
    /// Offered before (to an earlier gossipd or stream).
    pub redelivered: bool,
}

/// One attempt of a DM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The path it used.
    pub path: DmPath,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// From its start to its outcome, µs.
    pub elapsed_us: u32,
}

/// A DM's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The DM's id.
    pub id: [u8; 16],
    /// The path that delivered it.
    pub path: DmPath,
    /// Attempts made, the successful one last.
    pub attempts: Vec<Attempt>,
    /// An earlier request with the same client id sent it; this is its
    /// receipt and nothing was sent again.
    pub replayed: bool,
}

/// A connection to gossipd's application socket.
pub struct Client {
    sock: UnixStream,
    max_frame: u32,
    next_id: u64,
    fbb: FlatBufferBuilder<'static>,
    deliveries: VecDeque<Delivery>,
    dms: VecDeque<IncomingDm>,
    ended: VecDeque<StreamEnd>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

/// An answer, owned.
enum Answer {
    Response(Status, String),
    Published(Status, String, Option<Published>),
    Receipt(Status, String, Option<Receipt>),
    Peers(Status, String, Vec<[u8; 32]>),
    Node(Status, String, Option<[u8; 32]>, bool),
}

impl Client {
    /// Connects and runs the hello; every later read waits at most
    /// `timeout`.
    ///
    /// # Errors
    /// Connecting or the hello failed.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(timeout))?;
        let mut r = FrameReader::new(&sock, wire::frame::MIN_MAX_FRAME);
        let mut w = FrameWriter::new(&sock, wire::frame::MIN_MAX_FRAME);
        let session = wire::hello::exchange(
            &mut r,
            &mut w,
            &HelloConfig::new(crate::api::PROTOCOL, Role::Client),
        )?;
        Ok(Client {
            sock,
            max_frame: session.max_frame,
            next_id: 1,
            fbb: FlatBufferBuilder::new(),
            deliveries: VecDeque::new(),
            dms: VecDeque::new(),
            ended: VecDeque::new(),
        })
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, t: fc::ClientMessage, build: BuildFn<'_>) -> Result<u64, ClientError> {
        let id = self.id();
        self.fbb.reset();
        let msg = build(&mut self.fbb, id);
        let root = fc::ClientFrame::create(
            &mut self.fbb,
            &fc::ClientFrameArgs {
                msg_type: t,
                msg: Some(msg),
            },
        );
        wire::frame::finish::<ClientSchema>(&mut self.fbb, root);
        FrameWriter::new(&self.sock, self.max_frame).write_frame(self.fbb.finished_data())?;
        Ok(id)
    }

    /// Reads frames until the answer to `id`, keeping stream items.
    fn answer(&mut self, id: u64) -> Result<Answer, ClientError> {
        loop {
            // An answer to an earlier request (a slow SendDm's receipt
            // after a later request) is not the one waited for.
            if let Some((rid, a)) = self.read_one()?
                && rid == id
            {
                return Ok(a);
            }
        }
    }

    /// Reads one frame: a stream item goes to its queue (`None`), an
    /// answer is returned with its request id.
    fn read_one(&mut self) -> Result<Option<(u64, Answer)>, ClientError> {
        {
            let mut r = FrameReader::new(&self.sock, self.max_frame);
            // One frame per reader: a fresh reader must not read ahead.
            let buf = r
                .read_frame_exact()?
                .ok_or(wire::WireError::PeerClosed)?
                .to_vec();
            let (rid, a) = match wire::frame::decode_client(&buf)? {
                ClientMsg::Delivery(d) => {
                    self.deliveries.push_back(Delivery {
                        subscription: d.subscription(),
                        topic: d.topic().to_owned(),
                        origin: d.origin().0,
                        id: d.message_id().0,
                        seqno: d.seqno(),
                        payload: d.payload().bytes().to_vec(),
                        dropped_before: d.dropped_before(),
                    });
                    return Ok(None);
                }
                ClientMsg::IncomingDm(d) => {
                    self.dms.push_back(IncomingDm {
                        id: d.dm_id().0,
                        from: d.from().0,
                        path: d.path(),
                        payload: d.payload().bytes().to_vec(),
                        redelivered: d.redelivered(),
                    });
                    return Ok(None);
                }
                ClientMsg::StreamEnded(m) => {
                    self.ended.push_back(StreamEnd {
                        subscription: m.subscription(),
                        status: m.status(),
                        message: text(m.message()),
                    });
                    return Ok(None);
                }
                ClientMsg::Response(m) => (
                    m.request_id(),
                    Answer::Response(m.status(), text(m.message())),
                ),
                ClientMsg::Published(m) => (
                    m.request_id(),
                    Answer::Published(
                        m.status(),
                        text(m.message()),
                        m.message_id().map(|i| Published {
                            id: i.0,
                            seqno: m.seqno(),
                            replayed: m.replayed(),
                        }),
                    ),
                ),
                ClientMsg::DmReceipt(m) => (
                    m.request_id(),
                    Answer::Receipt(
                        m.status(),
                        text(m.message()),
                        m.dm_id().map(|i| Receipt {
                            id: i.0,
                            path: m.path(),
                            attempts: m
                                .attempts()
                                .map(|v| {
                                    v.iter()
                                        .map(|a| Attempt {
                                            path: a.path(),
                                            outcome: a.outcome(),
                                            elapsed_us: a.elapsed_us(),
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                            replayed: m.replayed(),
                        }),
                    ),
                ),
                ClientMsg::PeersResponse(m) => (
                    m.request_id(),
                    Answer::Peers(
                        m.status(),
                        text(m.message()),
                        m.peers()
                            .map(|v| v.iter().map(|p| p.peer().0).collect())
                            .unwrap_or_default(),
                    ),
                ),
                ClientMsg::NodeStatus(m) => (
                    m.request_id(),
                    Answer::Node(
                        m.status(),
                        text(m.message()),
                        m.node().map(|n| n.0),
                        m.transport_up(),
                    ),
                ),
                _ => return Err(ClientError::Unexpected("a frame gossipd never sends")),
            };
            Ok(Some((rid, a)))
        }
    }

    fn ok(&mut self, t: fc::ClientMessage, build: BuildFn<'_>) -> Result<(), ClientError> {
        let id = self.send(t, build)?;
        match self.answer(id)? {
            Answer::Response(Status::Ok, _) => Ok(()),
            Answer::Response(status, message) => Err(ClientError::Refused { status, message }),
            _ => Err(ClientError::Unexpected("not a Response")),
        }
    }

    /// Joins `topic`.
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn join(&mut self, topic: &str) -> Result<(), ClientError> {
        self.ok(fc::ClientMessage::Join, &mut |fbb, request_id| {
            let topic = Some(fbb.create_string(topic));
            fc::Join::create(fbb, &fc::JoinArgs { request_id, topic }).as_union_value()
        })
    }

    /// Leaves `topic`: this connection's streams of it end (their
    /// [`StreamEnd`]s are queued by the time this returns); the node stays
    /// in the topic while another connection has it joined.
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn leave(&mut self, topic: &str) -> Result<(), ClientError> {
        self.ok(fc::ClientMessage::Leave, &mut |fbb, request_id| {
            let topic = Some(fbb.create_string(topic));
            fc::Leave::create(fbb, &fc::LeaveArgs { request_id, topic }).as_union_value()
        })
    }

    /// Ends stream `subscription` (a topic's or the DM stream); its
    /// [`StreamEnd`] is queued by the time this returns.
    ///
    /// # Errors
    /// The connection failed or gossipd refused (`NoSuchSubscription`).
    pub fn unsubscribe(&mut self, subscription: u64) -> Result<(), ClientError> {
        self.ok(fc::ClientMessage::Unsubscribe, &mut |fbb, request_id| {
            fc::Unsubscribe::create(
                fbb,
                &fc::UnsubscribeArgs {
                    request_id,
                    subscription,
                },
            )
            .as_union_value()
        })
    }

    /// Opens a delivery stream of `topic`; its id (for
    /// [`Delivery::subscription`]).
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn subscribe(&mut self, topic: &str) -> Result<u64, ClientError> {
        let next = self.next_id + 1;
        self.ok(fc::ClientMessage::Subscribe, &mut |fbb, request_id| {
            let topic = Some(fbb.create_string(topic));
            fc::Subscribe::create(fbb, &fc::SubscribeArgs { request_id, topic }).as_union_value()
        })?;
        Ok(next)
    }

    /// Opens the incoming-DM stream; its id (for [`Client::unsubscribe`]).
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn subscribe_dms(&mut self) -> Result<u64, ClientError> {
        let next = self.next_id + 1;
        self.ok(fc::ClientMessage::SubscribeDms, &mut |fbb, request_id| {
            fc::SubscribeDms::create(fbb, &fc::SubscribeDmsArgs { request_id }).as_union_value()
        })?;
        Ok(next)
    }

    /// Publishes `payload` to `topic` under a random client id; the
    /// message id.
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<[u8; 32], ClientError> {
        Ok(self.publish_with_id(topic, payload, rand::random())?.id)
    }

    /// Publishes `payload` to `topic` once per `client_id`: a retry with
    /// the same id and content gets the first outcome (`replayed`), the
    /// same id with other content is refused (`Conflict`).
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn publish_with_id(
        &mut self,
        topic: &str,
        payload: &[u8],
        client_id: [u8; 16],
    ) -> Result<Published, ClientError> {
        let id = self.send(fc::ClientMessage::Publish, &mut |fbb, request_id| {
            let topic = Some(fbb.create_string(topic));
            let payload = Some(fbb.create_vector(payload));
            fc::Publish::create(
                fbb,
                &fc::PublishArgs {
                    request_id,
                    client_id: Some(&fc::ClientId(client_id)),
                    topic,
                    payload,
                },
            )
            .as_union_value()
        })?;
        match self.answer(id)? {
            Answer::Published(Status::Ok, _, Some(p)) => Ok(p),
            Answer::Published(status, message, _) => Err(ClientError::Refused { status, message }),
            _ => Err(ClientError::Unexpected("not Published")),
        }
    }

    /// Sends a DM to `peer` under a random client id; its receipt once
    /// the receiver admitted it.
    ///
    /// # Errors
    /// The connection failed or no path reached the peer.
    pub fn send_dm(&mut self, peer: [u8; 32], payload: &[u8]) -> Result<Receipt, ClientError> {
        self.send_dm_with_id(peer, payload, rand::random())
    }

    /// Sends a DM to `peer` once per `client_id`: a retry with the same id
    /// and content gets the first receipt (`replayed`) and sends nothing
    /// again, as long as that DM was delivered; after a failure it sends
    /// again. The same id with other content is refused (`Conflict`).
    ///
    /// # Errors
    /// The connection failed, gossipd refused, or no path reached the
    /// peer.
    pub fn send_dm_with_id(
        &mut self,
        peer: [u8; 32],
        payload: &[u8],
        client_id: [u8; 16],
    ) -> Result<Receipt, ClientError> {
        let id = self.send(fc::ClientMessage::SendDm, &mut |fbb, request_id| {
            let payload = Some(fbb.create_vector(payload));
            fc::SendDm::create(
                fbb,
                &fc::SendDmArgs {
                    request_id,
                    client_id: Some(&fc::ClientId(client_id)),
                    peer: Some(&fc::PeerId(peer)),
                    payload,
                    budget_ms: 0,
                },
            )
            .as_union_value()
        })?;
        match self.answer(id)? {
            Answer::Receipt(Status::Ok, _, Some(r)) => Ok(r),
            Answer::Receipt(status, message, _) => Err(ClientError::Refused { status, message }),
            _ => Err(ClientError::Unexpected("not a DmReceipt")),
        }
    }

    /// Tells gossipd the application has these DMs (relayd may then
    /// forget them).
    ///
    /// # Errors
    /// The connection failed.
    pub fn ack_dms(&mut self, ids: &[[u8; 16]]) -> Result<(), ClientError> {
        self.ok(fc::ClientMessage::AckDms, &mut |fbb, request_id| {
            let list: Vec<fc::DmId> = ids.iter().map(|i| fc::DmId(*i)).collect();
            let ids = Some(fbb.create_vector(&list));
            fc::AckDms::create(fbb, &fc::AckDmsArgs { request_id, ids }).as_union_value()
        })
    }

    /// The peers of `topic`'s overlay.
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn peers(&mut self, topic: &str) -> Result<Vec<[u8; 32]>, ClientError> {
        let id = self.send(fc::ClientMessage::GetPeers, &mut |fbb, request_id| {
            let topic = Some(fbb.create_string(topic));
            fc::GetPeers::create(fbb, &fc::GetPeersArgs { request_id, topic }).as_union_value()
        })?;
        match self.answer(id)? {
            Answer::Peers(Status::Ok, _, p) => Ok(p),
            Answer::Peers(status, message, _) => Err(ClientError::Refused { status, message }),
            _ => Err(ClientError::Unexpected("not PeersResponse")),
        }
    }

    /// This node's id, and whether gossipd has relayd attached.
    ///
    /// # Errors
    /// The connection failed or gossipd refused.
    pub fn status(&mut self) -> Result<([u8; 32], bool), ClientError> {
        let id = self.send(fc::ClientMessage::GetStatus, &mut |fbb, request_id| {
            fc::GetStatus::create(fbb, &fc::GetStatusArgs { request_id }).as_union_value()
        })?;
        match self.answer(id)? {
            Answer::Node(Status::Ok, _, Some(node), up) => Ok((node, up)),
            Answer::Node(status, message, _, _) => Err(ClientError::Refused { status, message }),
            _ => Err(ClientError::Unexpected("not NodeStatus")),
        }
    }

    /// The next delivery (waiting up to the read timeout).
    ///
    /// # Errors
    /// The connection failed or the timeout passed.
    pub fn next_delivery(&mut self) -> Result<Delivery, ClientError> {
        self.next_of(|c| &mut c.deliveries)
    }

    /// The next incoming DM (waiting up to the read timeout).
    ///
    /// # Errors
    /// The connection failed or the timeout passed.
    pub fn next_dm(&mut self) -> Result<IncomingDm, ClientError> {
        self.next_of(|c| &mut c.dms)
    }

    /// The next ended stream (waiting up to the read timeout).
    ///
    /// # Errors
    /// The connection failed or the timeout passed.
    pub fn next_stream_end(&mut self) -> Result<StreamEnd, ClientError> {
        self.next_of(|c| &mut c.ended)
    }

    /// The front of a stream-item queue, reading frames until there is one.
    fn next_of<T>(&mut self, queue: fn(&mut Client) -> &mut VecDeque<T>) -> Result<T, ClientError> {
        loop {
            if let Some(item) = queue(self).pop_front() {
                return Ok(item);
            }
            self.pump()?;
        }
    }

    /// Deliveries read and not yet taken, without reading more.
    pub fn queued_deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.iter()
    }

    /// Reads one frame into the stream queues (an answer nobody waits for
    /// is dropped).
    fn pump(&mut self) -> Result<(), ClientError> {
        self.read_one().map(|_| ())
    }
}

/// Builds one request table given its request id.
type BuildFn<'a> = &'a mut dyn FnMut(
    &mut FlatBufferBuilder<'static>,
    u64,
) -> flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>;

fn text(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}
