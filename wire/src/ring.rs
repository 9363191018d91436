//! `ring` (being built).
