//! The frames gossipd sends on the application socket, built from the
//! runtime's types (`wire/schema/client.fbs`).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use libgossip::proto::{AttemptOutcome, DmPath, DmReceipt, PeerId};
use wire::frame::ClientSchema;
use wire::generated::client as fc;

/// Why a request was not done: its status and a human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: fc::Status,
    pub text: String,
}

impl Refusal {
    pub(crate) fn new(status: fc::Status, text: impl Into<String>) -> Self {
        Self {
            status,
            text: text.into(),
        }
    }
}

/// What a `Publish` came to: the message id and its sequence number.
pub(crate) type PublishOutcome = Result<([u8; 32], u64), Refusal>;

/// What a `SendDm` came to: the runtime's receipt.
pub(crate) type DmOutcome = Result<DmReceipt, Refusal>;

pub(crate) fn path(p: DmPath) -> fc::DmPath {
    match p {
        DmPath::Loopback => fc::DmPath::Loopback,
        DmPath::Direct => fc::DmPath::Direct,
        DmPath::Relayed => fc::DmPath::Relayed,
    }
}

fn outcome(o: AttemptOutcome) -> fc::AttemptOutcome {
    use AttemptOutcome as A;
    match o {
        A::Accepted => fc::AttemptOutcome::Accepted,
        A::Backpressured => fc::AttemptOutcome::Backpressured,
        A::ConsumerGone => fc::AttemptOutcome::ConsumerGone,
        A::TimedOut => fc::AttemptOutcome::TimedOut,
        A::NotConnected | A::NoKemKey | A::NoRoute => fc::AttemptOutcome::Unreachable,
    }
}

/// Wraps the message `msg` of type `t` in a `ClientFrame`; the frame bytes.
pub(crate) fn finish(
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

fn text<'a>(fbb: &mut FlatBufferBuilder<'a>, text: &str) -> Option<WIPOffset<&'a str>> {
    (!text.is_empty()).then(|| fbb.create_string(text))
}

pub(crate) fn response(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    status: fc::Status,
    detail: &str,
) -> Vec<u8> {
    fbb.reset();
    let message = text(fbb, detail);
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

pub(crate) fn stream_ended(
    fbb: &mut FlatBufferBuilder<'_>,
    subscription: u64,
    status: fc::Status,
    detail: &str,
) -> Vec<u8> {
    fbb.reset();
    let message = text(fbb, detail);
    let m = fc::StreamEnded::create(
        fbb,
        &fc::StreamEndedArgs {
            subscription,
            status,
            message,
        },
    );
    finish(fbb, fc::ClientMessage::StreamEnded, m.as_union_value())
}

pub(crate) fn published(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    r: &PublishOutcome,
    replayed: bool,
) -> Vec<u8> {
    fbb.reset();
    let (status, message, id, seqno) = match r {
        Ok((id, seqno)) => (fc::Status::Ok, None, Some(fc::MessageId(*id)), *seqno),
        Err(e) => (e.status, text(fbb, &e.text), None, 0),
    };
    let m = fc::Published::create(
        fbb,
        &fc::PublishedArgs {
            request_id,
            status,
            message,
            message_id: id.as_ref(),
            seqno,
            replayed,
        },
    );
    finish(fbb, fc::ClientMessage::Published, m.as_union_value())
}

pub(crate) fn receipt(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    r: &DmOutcome,
    replayed: bool,
) -> Vec<u8> {
    fbb.reset();
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let message = text(fbb, &e.text);
            let m = fc::DmReceipt::create(
                fbb,
                &fc::DmReceiptArgs {
                    request_id,
                    status: e.status,
                    message,
                    replayed,
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
                    elapsed_us: u32::try_from(a.elapsed.as_micros()).unwrap_or(u32::MAX),
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
            replayed,
        },
    );
    finish(fbb, fc::ClientMessage::DmReceipt, m.as_union_value())
}

pub(crate) fn peers(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    status: fc::Status,
    detail: &str,
    topic: Option<&str>,
    list: &[PeerId],
) -> Vec<u8> {
    fbb.reset();
    let message = text(fbb, detail);
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

/// What `NodeStatus` reports.
pub(crate) struct Status<'a> {
    pub node: PeerId,
    pub topics: &'a [String],
    pub connected_peers: usize,
    pub transport_up: bool,
    pub uptime: std::time::Duration,
}

pub(crate) fn status(fbb: &mut FlatBufferBuilder<'_>, request_id: u64, s: &Status<'_>) -> Vec<u8> {
    fbb.reset();
    let version = fbb.create_string(env!("CARGO_PKG_VERSION"));
    let names: Vec<_> = s.topics.iter().map(|t| fbb.create_string(t)).collect();
    let topics = fbb.create_vector(&names);
    let m = fc::NodeStatus::create(
        fbb,
        &fc::NodeStatusArgs {
            request_id,
            status: fc::Status::Ok,
            message: None,
            node: Some(&fc::PeerId(s.node.0)),
            version: Some(version),
            topics: Some(topics),
            connected_peers: u32::try_from(s.connected_peers).unwrap_or(u32::MAX),
            transport_up: s.transport_up,
            uptime_ms: u64::try_from(s.uptime.as_millis()).unwrap_or(u64::MAX),
        },
    );
    finish(fbb, fc::ClientMessage::NodeStatus, m.as_union_value())
}
