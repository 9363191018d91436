//! `libtransport` (being built; see docs/ARCHITECTURE.md).
