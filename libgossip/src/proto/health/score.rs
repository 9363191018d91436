//! Peer health: score (being built).
