//! `loom-tests` (being built; see docs/ARCHITECTURE.md).
