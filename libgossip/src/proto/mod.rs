//! Sans-IO protocol core: inputs carry `now`, outputs are data.
//!
//! [`Node`] is the entry point. Per topic it runs HyParView membership
//! (`membership.rs`) and PlumTree broadcast (`topic.rs`); signatures are
//! checked outside the core through [`VerifyRequest`] / [`Verdict`]
//! (`verify.rs`); diagnostics are published as whole snapshots (`diag.rs`).

mod config;
mod diag;
mod dm;
mod hashing;
pub mod health;
mod membership;
mod memory;
mod message;
mod node;
mod output;
mod peers;
mod recent;
mod send;
mod sendq;
pub mod store;
pub mod supervisor;
mod topic;
mod types;
mod verify;

pub use config::Config;
pub use diag::{DiagHandle, PeerDiag, Snapshot, TopicDiag};
pub use dm::{
    AEAD_TAG_LEN, AttemptId, AttemptOutcome, AttemptRecord, CryptoError, DmConfig, DmCrypto,
    DmDelivery, DmEngine, DmError, DmId, DmOutput, DmPath, DmReceipt, DmStats, KEM_CIPHERTEXT_LEN,
    KEM_PUBLIC_KEY_LEN, KemKeyError, MlKemAead, SEAL_OVERHEAD, dm_signed_bytes,
    kem_key_signed_bytes,
};
pub use hashing::MapHasher;
pub use memory::{KEY_ENTRY_BYTES, MemoryPlan};
pub use message::{Body, DigestEntry, Gossip, IHaveEntry, Kind, Message};
pub use node::{Node, ProtoError, Received, Signer};
pub use output::{
    Delivery, Event, Output, SendOutcome, Transmit, Verdict, VerifyRequest, kind_label,
};
pub use recent::RecentStats;
pub use sendq::{SendQueueParams, SendQueueStats};
pub use topic::TopicStats;
pub use types::{MessageId, PeerId, TopicId, message_id, payload_hash, signed_bytes};
pub use verify::VerifyStats;
