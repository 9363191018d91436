//! `verifyd` (being built; see docs/ARCHITECTURE.md).
