//! Protocol messages as Rust enums, so receivers `match` instead of probing
//! each `msg_as_*` accessor.
//!
//! [`decode_verify`], [`decode_relay`], [`decode_admin`] and
//! [`decode_client`] verify a payload
//! like [`super::decode`] and then resolve the root's union: a member this
//! build does not know (a newer peer's message, or a hostile tag) becomes
//! [`WireError::UnexpectedMessage`], as does a tag whose table is absent.
//! The variants borrow the payload; nothing is copied.

use super::schema::{AdminSchema, ClientSchema, RelaySchema, VerifySchema, decode};
use crate::error::WireError;
use crate::generated::{admin, client, relay, verify};

/// One message of the verify protocol.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum VerifyMsg<'a> {
    /// Client → verifyd: store a key.
    RegisterKey(verify::RegisterKey<'a>),
    /// verifyd → client: the key's id.
    KeyRegistered(verify::KeyRegistered<'a>),
    /// Client → verifyd: signatures to check.
    VerifyBatch(verify::VerifyBatch<'a>),
    /// verifyd → client: one verdict per item.
    VerifyResult(verify::VerifyResult<'a>),
    /// verifyd → client: request refused for load.
    Busy(verify::Busy<'a>),
}

/// One message of the relay protocol.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RelayMsg<'a> {
    /// relayd → gossipd: a payload from a peer.
    Inbound(relay::Inbound<'a>),
    /// relayd → gossipd: several payloads.
    InboundBatch(relay::InboundBatch<'a>),
    /// gossipd → relayd: receive-ACK admission outcome.
    Admission(relay::Admission<'a>),
    /// gossipd → relayd: a payload to send.
    Outbound(relay::Outbound<'a>),
    /// gossipd → relayd: several payloads to send.
    OutboundBatch(relay::OutboundBatch<'a>),
    /// relayd → gossipd: how an acknowledged send ended.
    SendResult(relay::SendResult<'a>),
    /// relayd → gossipd: connection lifecycle.
    PeerEvent(relay::PeerEvent<'a>),
    /// gossipd → relayd: retained records the application has.
    Consumed(relay::Consumed<'a>),
}

/// One message of the admin protocol.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AdminMsg<'a> {
    /// nodectl → daemon.
    StatusRequest(admin::StatusRequest<'a>),
    /// daemon → nodectl.
    StatusResponse(admin::StatusResponse<'a>),
    /// nodectl → daemon.
    DiagnosticsRequest(admin::DiagnosticsRequest<'a>),
    /// daemon → nodectl.
    DiagnosticsResponse(admin::DiagnosticsResponse<'a>),
    /// nodectl → daemon.
    CommandRequest(admin::CommandRequest<'a>),
    /// daemon → nodectl.
    CommandResponse(admin::CommandResponse<'a>),
}

/// One message of the client (application API) protocol.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ClientMsg<'a> {
    /// app → gossipd: join a topic.
    Join(client::Join<'a>),
    /// app → gossipd: leave a topic.
    Leave(client::Leave<'a>),
    /// app → gossipd: publish to a topic.
    Publish(client::Publish<'a>),
    /// app → gossipd: open a topic's delivery stream.
    Subscribe(client::Subscribe<'a>),
    /// app → gossipd: close a stream.
    Unsubscribe(client::Unsubscribe<'a>),
    /// app → gossipd: send a direct message.
    SendDm(client::SendDm<'a>),
    /// app → gossipd: open the incoming-DM stream.
    SubscribeDms(client::SubscribeDms<'a>),
    /// app → gossipd: the app has these DMs.
    AckDms(client::AckDms<'a>),
    /// app → gossipd: peers of a topic or of the node.
    GetPeers(client::GetPeers<'a>),
    /// app → gossipd: node status.
    GetStatus(client::GetStatus<'a>),
    /// gossipd → app: a status-only answer.
    Response(client::Response<'a>),
    /// gossipd → app: answer to Publish.
    Published(client::Published<'a>),
    /// gossipd → app: answer to SendDm.
    DmReceipt(client::DmReceipt<'a>),
    /// gossipd → app: a message on a subscription.
    Delivery(client::Delivery<'a>),
    /// gossipd → app: a DM on the DM stream.
    IncomingDm(client::IncomingDm<'a>),
    /// gossipd → app: answer to GetPeers.
    PeersResponse(client::PeersResponse<'a>),
    /// gossipd → app: answer to GetStatus.
    NodeStatus(client::NodeStatus<'a>),
    /// gossipd → app: a stream ended.
    StreamEnded(client::StreamEnded<'a>),
}

fn unexpected(expected: &'static str, tag: u8, name: Option<&'static str>) -> WireError {
    WireError::UnexpectedMessage {
        expected,
        got: match name {
            Some(_) if tag == 0 => "no message (NONE)".to_owned(),
            Some(n) => format!("{n} without its table"),
            None => format!("unknown union member {tag}"),
        },
    }
}

/// Verifies a verify-protocol payload and resolves its message.
pub fn decode_verify(payload: &[u8]) -> Result<VerifyMsg<'_>, WireError> {
    use verify::VerifyMessage as T;
    const EXPECTED: &str = "a tern.verify message";
    let f = decode::<VerifySchema>(payload)?;
    let t = f.msg_type();
    let msg = match t {
        T::RegisterKey => f.msg_as_register_key().map(VerifyMsg::RegisterKey),
        T::KeyRegistered => f.msg_as_key_registered().map(VerifyMsg::KeyRegistered),
        T::VerifyBatch => f.msg_as_verify_batch().map(VerifyMsg::VerifyBatch),
        T::VerifyResult => f.msg_as_verify_result().map(VerifyMsg::VerifyResult),
        T::Busy => f.msg_as_busy().map(VerifyMsg::Busy),
        _ => None,
    };
    msg.ok_or_else(|| unexpected(EXPECTED, t.0, t.variant_name()))
}

/// Verifies a relay-protocol payload (socket frame or ring record) and
/// resolves its message.
pub fn decode_relay(payload: &[u8]) -> Result<RelayMsg<'_>, WireError> {
    use relay::RelayMessage as T;
    const EXPECTED: &str = "a tern.relay message";
    let f = decode::<RelaySchema>(payload)?;
    let t = f.msg_type();
    let msg = match t {
        T::Inbound => f.msg_as_inbound().map(RelayMsg::Inbound),
        T::InboundBatch => f.msg_as_inbound_batch().map(RelayMsg::InboundBatch),
        T::Admission => f.msg_as_admission().map(RelayMsg::Admission),
        T::Outbound => f.msg_as_outbound().map(RelayMsg::Outbound),
        T::OutboundBatch => f.msg_as_outbound_batch().map(RelayMsg::OutboundBatch),
        T::SendResult => f.msg_as_send_result().map(RelayMsg::SendResult),
        T::PeerEvent => f.msg_as_peer_event().map(RelayMsg::PeerEvent),
        T::Consumed => f.msg_as_consumed().map(RelayMsg::Consumed),
        _ => None,
    };
    msg.ok_or_else(|| unexpected(EXPECTED, t.0, t.variant_name()))
}

/// Verifies an admin-protocol payload and resolves its message.
pub fn decode_admin(payload: &[u8]) -> Result<AdminMsg<'_>, WireError> {
    use admin::AdminMessage as T;
    const EXPECTED: &str = "a tern.admin message";
    let f = decode::<AdminSchema>(payload)?;
    let t = f.msg_type();
    let msg = match t {
        T::StatusRequest => f.msg_as_status_request().map(AdminMsg::StatusRequest),
        T::StatusResponse => f.msg_as_status_response().map(AdminMsg::StatusResponse),
        T::DiagnosticsRequest => f
            .msg_as_diagnostics_request()
            .map(AdminMsg::DiagnosticsRequest),
        T::DiagnosticsResponse => f
            .msg_as_diagnostics_response()
            .map(AdminMsg::DiagnosticsResponse),
        T::CommandRequest => f.msg_as_command_request().map(AdminMsg::CommandRequest),
        T::CommandResponse => f.msg_as_command_response().map(AdminMsg::CommandResponse),
        _ => None,
    };
    msg.ok_or_else(|| unexpected(EXPECTED, t.0, t.variant_name()))
}

/// Verifies a client-protocol payload and resolves its message.
pub fn decode_client(payload: &[u8]) -> Result<ClientMsg<'_>, WireError> {
    use client::ClientMessage as T;
    const EXPECTED: &str = "a tern.client message";
    let f = decode::<ClientSchema>(payload)?;
    let t = f.msg_type();
    let msg = match t {
        T::Join => f.msg_as_join().map(ClientMsg::Join),
        T::Leave => f.msg_as_leave().map(ClientMsg::Leave),
        T::Publish => f.msg_as_publish().map(ClientMsg::Publish),
        T::Subscribe => f.msg_as_subscribe().map(ClientMsg::Subscribe),
        T::Unsubscribe => f.msg_as_unsubscribe().map(ClientMsg::Unsubscribe),
        T::SendDm => f.msg_as_send_dm().map(ClientMsg::SendDm),
        T::SubscribeDms => f.msg_as_subscribe_dms().map(ClientMsg::SubscribeDms),
        T::AckDms => f.msg_as_ack_dms().map(ClientMsg::AckDms),
        T::GetPeers => f.msg_as_get_peers().map(ClientMsg::GetPeers),
        T::GetStatus => f.msg_as_get_status().map(ClientMsg::GetStatus),
        T::Response => f.msg_as_response().map(ClientMsg::Response),
        T::Published => f.msg_as_published().map(ClientMsg::Published),
        T::DmReceipt => f.msg_as_dm_receipt().map(ClientMsg::DmReceipt),
        T::Delivery => f.msg_as_delivery().map(ClientMsg::Delivery),
        T::IncomingDm => f.msg_as_incoming_dm().map(ClientMsg::IncomingDm),
        T::PeersResponse => f.msg_as_peers_response().map(ClientMsg::PeersResponse),
        T::NodeStatus => f.msg_as_node_status().map(ClientMsg::NodeStatus),
        T::StreamEnded => f.msg_as_stream_ended().map(ClientMsg::StreamEnded),
        _ => None,
    };
    msg.ok_or_else(|| unexpected(EXPECTED, t.0, t.variant_name()))
}
