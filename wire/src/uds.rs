//! `uds` (being built).
