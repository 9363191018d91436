//! The daemon (being built).
