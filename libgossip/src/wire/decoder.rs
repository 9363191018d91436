//! [`Decoder`]: parse plus topic filtering, with every rejection counted.

use super::error::{ErrorClass, WireError};
use super::{Frame, Limits};
use crate::proto::TopicId;
use bytes::Bytes;

/// Counters of one [`Decoder`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Frames accepted.
    pub accepted: u64,
    /// Bytes of accepted frames.
    pub accepted_bytes: u64,
    /// Frames rejected, by [`ErrorClass`] (index: position in
    /// [`ErrorClass::ALL`]).
    pub rejected: [u64; ErrorClass::ALL.len()],
}

impl WireStats {
    /// Frames rejected for `class`.
    pub fn rejected(&self, class: ErrorClass) -> u64 {
        self.rejected[class as usize]
    }

    /// Frames rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// (label, count) per class, for tables and JSON.
    pub fn rejected_by_class(&self) -> Vec<(&'static str, u64)> {
        ErrorClass::ALL
            .iter()
            .map(|c| (c.label(), self.rejected(*c)))
            .collect()
    }
}

/// Decodes frames from peers: [`Frame::parse`], then rejects topic frames
/// for topics the caller has not joined ([`WireError::UnknownTopic`]), and
/// counts every outcome. Same panic contract as [`Frame::parse`].
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    limits: Limits,
    stats: WireStats,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            stats: WireStats::default(),
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counters so far.
    pub fn stats(&self) -> WireStats {
        self.stats
    }

    /// Decodes one frame; `joined` says whether a topic is one of ours.
    pub fn decode(
        &mut self,
        frame: &Bytes,
        joined: impl Fn(&TopicId) -> bool,
    ) -> Result<Frame, WireError> {
        let r = Frame::parse(frame, &self.limits).and_then(|f| match &f {
            Frame::Topic(m) if !joined(&m.topic) => Err(WireError::UnknownTopic(m.topic)),
            _ => Ok(f),
        });
        match &r {
            Ok(_) => {
                self.stats.accepted += 1;
                self.stats.accepted_bytes += frame.len() as u64;
            }
            Err(e) => self.stats.rejected[e.class() as usize] += 1,
        }
        r
    }
}
