//! Daemon metrics (being built).
