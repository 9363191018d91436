//! `frame` (being built).
