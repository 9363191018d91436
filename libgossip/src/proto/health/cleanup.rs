//! Peer health: cleanup (being built).
