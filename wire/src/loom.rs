//! `loom` (being built).
