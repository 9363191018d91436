//! Peer health: cooling (being built).
