//! The client pool (being built).
