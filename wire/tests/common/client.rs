//! Samples of every client-protocol (application API) message, and the
//! check that a decoded sample carries exactly the values it was built with.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use wire::frame::{self, ClientSchema};
use wire::generated::client::*;

use super::{PEER, REQ, pattern};

const MSG: [u8; 32] = [0x4d; 32];

fn finish(
    fbb: &mut FlatBufferBuilder<'_>,
    t: ClientMessage,
    off: WIPOffset<UnionWIPOffset>,
) -> Vec<u8> {
    let root = ClientFrame::create(
        fbb,
        &ClientFrameArgs {
            msg_type: t,
            msg: Some(off),
        },
    );
    frame::finish::<ClientSchema>(fbb, root);
    fbb.finished_data().to_vec()
}

macro_rules! sample {
    ($name:ident, $variant:ident, |$fbb:ident| $body:expr) => {
        pub fn $name() -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let $fbb = &mut fbb;
            let m = $body;
            finish(&mut fbb, ClientMessage::$variant, m.as_union_value())
        }
    };
}

sample!(join, Join, |fbb| {
    let topic = fbb.create_string("chat/general");
    Join::create(
        fbb,
        &JoinArgs {
            request_id: 31,
            topic: Some(topic),
        },
    )
});
sample!(leave, Leave, |fbb| {
    let topic = fbb.create_string("chat/general");
    Leave::create(
        fbb,
        &LeaveArgs {
            request_id: 32,
            topic: Some(topic),
        },
    )
});
sample!(publish, Publish, |fbb| {
    let topic = fbb.create_string("chat/general");
    let payload = fbb.create_vector(&pattern(1024, 3));
    Publish::create(
        fbb,
        &PublishArgs {
            request_id: 33,
            client_id: Some(&ClientId::new(&REQ)),
            topic: Some(topic),
            payload: Some(payload),
        },
    )
});
sample!(subscribe, Subscribe, |fbb| {
    let topic = fbb.create_string("chat/general");
    Subscribe::create(
        fbb,
        &SubscribeArgs {
            request_id: 34,
            topic: Some(topic),
        },
    )
});
sample!(unsubscribe, Unsubscribe, |fbb| Unsubscribe::create(
    fbb,
    &UnsubscribeArgs {
        request_id: 35,
        subscription: 34
    }
));
sample!(send_dm, SendDm, |fbb| {
    let payload = fbb.create_vector(&pattern(300, 4));
    SendDm::create(
        fbb,
        &SendDmArgs {
            request_id: 36,
            client_id: Some(&ClientId::new(&REQ)),
            peer: Some(&PeerId::new(&PEER)),
            payload: Some(payload),
            budget_ms: 2500,
        },
    )
});
sample!(subscribe_dms, SubscribeDms, |fbb| SubscribeDms::create(
    fbb,
    &SubscribeDmsArgs { request_id: 37 }
));
sample!(ack_dms, AckDms, |fbb| {
    let ids = fbb.create_vector(&[DmId::new(&REQ), DmId::new(&[1; 16])]);
    AckDms::create(
        fbb,
        &AckDmsArgs {
            request_id: 38,
            ids: Some(ids),
        },
    )
});
sample!(get_peers, GetPeers, |fbb| {
    let topic = fbb.create_string("chat/general");
    GetPeers::create(
        fbb,
        &GetPeersArgs {
            request_id: 39,
            topic: Some(topic),
        },
    )
});
sample!(get_status, GetStatus, |fbb| GetStatus::create(
    fbb,
    &GetStatusArgs { request_id: 40 }
));
sample!(response, Response, |fbb| {
    let message = fbb.create_string("topic not joined");
    Response::create(
        fbb,
        &ResponseArgs {
            request_id: 35,
            status: Status::NotJoined,
            message: Some(message),
        },
    )
});
sample!(published, Published, |fbb| Published::create(
    fbb,
    &PublishedArgs {
        request_id: 33,
        status: Status::Ok,
        message: None,
        message_id: Some(&MessageId::new(&MSG)),
        seqno: 77,
        replayed: true,
    }
));
sample!(dm_receipt, DmReceipt, |fbb| {
    let attempts = [
        (DmPath::Direct, AttemptOutcome::TimedOut, 1_500_000),
        (DmPath::Relayed, AttemptOutcome::Accepted, 42_000),
    ]
    .map(|(path, outcome, elapsed_us)| {
        DmAttempt::create(
            fbb,
            &DmAttemptArgs {
                path,
                outcome,
                elapsed_us,
            },
        )
    });
    let attempts = fbb.create_vector(&attempts);
    DmReceipt::create(
        fbb,
        &DmReceiptArgs {
            request_id: 36,
            status: Status::Ok,
            message: None,
            dm_id: Some(&DmId::new(&REQ)),
            path: DmPath::Relayed,
            attempts: Some(attempts),
            replayed: false,
        },
    )
});
sample!(delivery, Delivery, |fbb| {
    let topic = fbb.create_string("chat/general");
    let payload = fbb.create_vector(&pattern(1024, 5));
    Delivery::create(
        fbb,
        &DeliveryArgs {
            subscription: 34,
            topic: Some(topic),
            origin: Some(&PeerId::new(&PEER)),
            message_id: Some(&MessageId::new(&MSG)),
            seqno: 78,
            payload: Some(payload),
            dropped_before: 12,
        },
    )
});
sample!(incoming_dm, IncomingDm, |fbb| {
    let payload = fbb.create_vector(&pattern(300, 6));
    IncomingDm::create(
        fbb,
        &IncomingDmArgs {
            subscription: 37,
            dm_id: Some(&DmId::new(&REQ)),
            from: Some(&PeerId::new(&PEER)),
            path: DmPath::Gossip,
            payload: Some(payload),
            redelivered: true,
        },
    )
});
sample!(peers_response, PeersResponse, |fbb| {
    let addr = fbb.create_string("10.0.0.2:4433");
    let p = PeerInfo::create(
        fbb,
        &PeerInfoArgs {
            peer: Some(&PeerId::new(&PEER)),
            eager: true,
            addr: Some(addr),
            rtt_us: 830,
        },
    );
    let peers = fbb.create_vector(&[p]);
    let topic = fbb.create_string("chat/general");
    PeersResponse::create(
        fbb,
        &PeersResponseArgs {
            request_id: 39,
            status: Status::Ok,
            message: None,
            topic: Some(topic),
            peers: Some(peers),
        },
    )
});
sample!(node_status, NodeStatus, |fbb| {
    let version = fbb.create_string("gossipd 0.1.0");
    let t = fbb.create_string("chat/general");
    let topics = fbb.create_vector(&[t]);
    NodeStatus::create(
        fbb,
        &NodeStatusArgs {
            request_id: 40,
            status: Status::Ok,
            message: None,
            node: Some(&PeerId::new(&PEER)),
            version: Some(version),
            topics: Some(topics),
            connected_peers: 5,
            transport_up: true,
            uptime_ms: 90_000,
        },
    )
});
sample!(stream_ended, StreamEnded, |fbb| {
    let message = fbb.create_string("left the topic");
    StreamEnded::create(
        fbb,
        &StreamEndedArgs {
            subscription: 34,
            status: Status::NotJoined,
            message: Some(message),
        },
    )
});

/// Every client sample, named `client/<message>`.
pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("client/join", join()),
        ("client/leave", leave()),
        ("client/publish", publish()),
        ("client/subscribe", subscribe()),
        ("client/unsubscribe", unsubscribe()),
        ("client/send_dm", send_dm()),
        ("client/subscribe_dms", subscribe_dms()),
        ("client/ack_dms", ack_dms()),
        ("client/get_peers", get_peers()),
        ("client/get_status", get_status()),
        ("client/response", response()),
        ("client/published", published()),
        ("client/dm_receipt", dm_receipt()),
        ("client/delivery", delivery()),
        ("client/incoming_dm", incoming_dm()),
        ("client/peers_response", peers_response()),
        ("client/node_status", node_status()),
        ("client/stream_ended", stream_ended()),
    ]
}

fn arr<const N: usize>(a: flatbuffers::Array<'_, u8, N>) -> Vec<u8> {
    a.iter().collect()
}

/// Checks a decoded client sample field by field, through the enum view.
pub fn check(name: &str, p: &[u8]) {
    use wire::frame::ClientMsg as C;
    let topic = Some("chat/general");
    let msg = frame::decode_client(p).unwrap();
    let got = match msg {
        C::Join(m) => {
            assert_eq!((m.request_id(), Some(m.topic())), (31, topic));
            "join"
        }
        C::Leave(m) => {
            assert_eq!((m.request_id(), Some(m.topic())), (32, topic));
            "leave"
        }
        C::Publish(m) => {
            assert_eq!((m.request_id(), Some(m.topic())), (33, topic));
            assert_eq!(arr(m.client_id().bytes()), REQ);
            assert_eq!(m.payload().bytes(), pattern(1024, 3));
            "publish"
        }
        C::Subscribe(m) => {
            assert_eq!((m.request_id(), Some(m.topic())), (34, topic));
            "subscribe"
        }
        C::Unsubscribe(m) => {
            assert_eq!((m.request_id(), m.subscription()), (35, 34));
            "unsubscribe"
        }
        C::SendDm(m) => {
            assert_eq!((m.request_id(), m.budget_ms()), (36, 2500));
            assert_eq!(arr(m.client_id().bytes()), REQ);
            assert_eq!(arr(m.peer().bytes()), PEER);
            assert_eq!(m.payload().bytes(), pattern(300, 4));
            "send_dm"
        }
        C::SubscribeDms(m) => {
            assert_eq!(m.request_id(), 37);
            "subscribe_dms"
        }
        C::AckDms(m) => {
            assert_eq!(m.request_id(), 38);
            let ids: Vec<Vec<u8>> = m.ids().iter().map(|i| arr(i.bytes())).collect();
            assert_eq!(ids, [REQ.to_vec(), vec![1; 16]]);
            "ack_dms"
        }
        C::GetPeers(m) => {
            assert_eq!((m.request_id(), m.topic()), (39, topic));
            "get_peers"
        }
        C::GetStatus(m) => {
            assert_eq!(m.request_id(), 40);
            "get_status"
        }
        C::Response(m) => {
            assert_eq!((m.request_id(), m.status()), (35, Status::NotJoined));
            assert_eq!(m.message(), Some("topic not joined"));
            "response"
        }
        C::Published(m) => {
            assert_eq!(
                (m.request_id(), m.status(), m.seqno()),
                (33, Status::Ok, 77)
            );
            assert_eq!(arr(m.message_id().unwrap().bytes()), MSG);
            assert!(m.replayed());
            assert_eq!(m.message(), None);
            "published"
        }
        C::DmReceipt(m) => {
            assert_eq!(
                (m.request_id(), m.status(), m.path()),
                (36, Status::Ok, DmPath::Relayed)
            );
            assert_eq!(arr(m.dm_id().unwrap().bytes()), REQ);
            let attempts: Vec<_> = m
                .attempts()
                .unwrap()
                .iter()
                .map(|a| (a.path(), a.outcome(), a.elapsed_us()))
                .collect();
            assert_eq!(
                attempts,
                [
                    (DmPath::Direct, AttemptOutcome::TimedOut, 1_500_000),
                    (DmPath::Relayed, AttemptOutcome::Accepted, 42_000)
                ]
            );
            assert!(!m.replayed());
            "dm_receipt"
        }
        C::Delivery(m) => {
            assert_eq!((m.subscription(), Some(m.topic())), (34, topic));
            assert_eq!(arr(m.origin().bytes()), PEER);
            assert_eq!(arr(m.message_id().bytes()), MSG);
            assert_eq!((m.seqno(), m.dropped_before()), (78, 12));
            assert_eq!(m.payload().bytes(), pattern(1024, 5));
            "delivery"
        }
        C::IncomingDm(m) => {
            assert_eq!((m.subscription(), m.path()), (37, DmPath::Gossip));
            assert_eq!(arr(m.dm_id().bytes()), REQ);
            assert_eq!(arr(m.from().bytes()), PEER);
            assert_eq!(m.payload().bytes(), pattern(300, 6));
            assert!(m.redelivered());
            "incoming_dm"
        }
        C::PeersResponse(m) => {
            assert_eq!(
                (m.request_id(), m.status(), m.topic()),
                (39, Status::Ok, topic)
            );
            let peers = m.peers().unwrap();
            assert_eq!(peers.len(), 1);
            let p = peers.get(0);
            assert_eq!(arr(p.peer().bytes()), PEER);
            assert_eq!(
                (p.eager(), p.addr(), p.rtt_us()),
                (true, Some("10.0.0.2:4433"), 830)
            );
            "peers_response"
        }
        C::NodeStatus(m) => {
            assert_eq!((m.request_id(), m.status()), (40, Status::Ok));
            assert_eq!(arr(m.node().unwrap().bytes()), PEER);
            assert_eq!(m.version(), Some("gossipd 0.1.0"));
            assert_eq!(
                m.topics().unwrap().iter().collect::<Vec<_>>(),
                ["chat/general"]
            );
            assert_eq!(
                (m.connected_peers(), m.transport_up(), m.uptime_ms()),
                (5, true, 90_000)
            );
            "node_status"
        }
        C::StreamEnded(m) => {
            assert_eq!((m.subscription(), m.status()), (34, Status::NotJoined));
            assert_eq!(m.message(), Some("left the topic"));
            "stream_ended"
        }
        _ => "new variant",
    };
    assert_eq!(name.split_once('/').unwrap().1, got);
}
