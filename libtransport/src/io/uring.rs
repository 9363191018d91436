//! io_uring backend (being built).
