//! `libgossip` (being built; see docs/ARCHITECTURE.md).
