//! `hello` (being built).
