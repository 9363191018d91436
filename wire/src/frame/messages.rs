//! Protocol messages as Rust enums, so receivers `match` instead of probing
//! each `msg_as_*` accessor.
//!
//! [`decode_verify`], [`decode_relay`] and [`decode_admin`] verify a payload
//! like [`super::decode`] and then resolve the root's union: a member this
//! build does not know (a newer peer's message, or a hostile tag) becomes
//! [`WireError::UnexpectedMessage`], as does a tag whose table is absent.
//! The variants borrow the payload; nothing is copied.

use super::schema::{AdminSchema, RelaySchema, VerifySchema, decode};
use crate::error::WireError;
use crate::generated::{admin, relay, verify};

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
