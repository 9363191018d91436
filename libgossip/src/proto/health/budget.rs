//! Peer health: budget (being built).
