//! `generated` (being built).
